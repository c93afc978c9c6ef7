"""Map post-processing: Gaussian blur and total-variation denoising."""
from __future__ import annotations

import pytest
import torch

from pv.explain import gaussian_blur, total_variation, tv_denoise


def test_gaussian_blur():
    x = torch.rand(2, 3, 20, 24, generator=torch.Generator().manual_seed(0))
    assert torch.equal(gaussian_blur(x, 0), x)
    blurred = gaussian_blur(x, 2.0)
    assert blurred.shape == x.shape and (total_variation(blurred) < 0.5 * total_variation(x)).all()
    torch.testing.assert_close(gaussian_blur(torch.full((1, 1, 5, 5), 0.3), 10.0), torch.full((1, 1, 5, 5), 0.3))  # sigma >> size
    impulse = torch.zeros(1, 1, 31, 31)
    impulse[0, 0, 15, 15] = 1
    torch.testing.assert_close(gaussian_blur(impulse, 1.5).sum(), torch.tensor(1.0))


def test_tv_denoise_matches_scikit_image():
    restoration = pytest.importorskip("skimage.restoration")
    f = torch.rand(2, 1, 24, 24, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ours = tv_denoise(f, weight=0.2, n_iter=400)
    for b in range(2):
        reference = restoration.denoise_tv_chambolle(f[b, 0].numpy(), weight=0.2, eps=1e-8, max_num_iter=2000)
        assert (ours[b, 0] - torch.from_numpy(reference)).abs().max() < 1e-2
    assert (total_variation(ours) < 0.2 * total_variation(f)).all()
    torch.testing.assert_close(ours.mean((2, 3)), f.mean((2, 3)))  # ROF keeps the mean
