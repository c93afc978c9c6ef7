"""Integrated Gradients completeness; LIME determinism, batching and its surrogate fit."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from pv.explain import IntegratedGradients, Lime, superpixels
from pv.explain.lime import weighted_ridge


@pytest.mark.parametrize("baseline", ["black", "blurred"])
def test_ig_completeness(baseline, tiny_net):
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    ig = IntegratedGradients(tiny_net, baseline=baseline, baseline_sigma=4.0, n_steps=64, internal_batch_size=48)
    with torch.no_grad():
        differences = tiny_net(images) - tiny_net(ig.baseline(images))  # (B, K)
    targets = differences.abs().argmax(1)  # the class that changes most: a meaningful check, not 0 ~= 0
    difference = differences[torch.arange(3), targets]
    assert difference.abs().min() > 1e-3
    attributions = ig.attribute(images, targets)  # (B, 3, H, W)
    total = attributions.flatten(1).sum(1)
    assert ((total - difference).abs() <= 0.02 * difference.abs()).all(), (total, difference)


def test_ig_internal_batching_does_not_change_results(tiny_net):
    images, targets = torch.rand(4, 3, 32, 32), torch.tensor([1, 1, 3, 0])
    small = IntegratedGradients(tiny_net, n_steps=8, internal_batch_size=4).attribute(images, targets)
    large = IntegratedGradients(tiny_net, n_steps=8, internal_batch_size=256).attribute(images, targets)
    torch.testing.assert_close(small, large, rtol=1e-4, atol=1e-6)


def test_ig_baselines():
    images = torch.rand(2, 3, 16, 16)
    assert (IntegratedGradients(nn.Identity(), baseline="black").baseline(images) == 0).all()
    blurred = IntegratedGradients(nn.Identity(), baseline="blurred", baseline_sigma=3).baseline(images)
    assert blurred.shape == images.shape and blurred.std() < images.std()
    with pytest.raises(ValueError, match="baseline"):
        IntegratedGradients(nn.Identity(), baseline="white")


def blocks_image() -> torch.Tensor:
    """Four flat colour quadrants (easy superpixels), (1, 3, 32, 32)."""
    image = torch.zeros(1, 3, 32, 32)
    image[:, 0, :16, :16] = 1  # red top-left
    image[:, 1, :16, 16:] = 1  # green top-right
    image[:, 2, 16:, :16] = 1  # blue bottom-left
    image[:, :, 16:, 16:] = 0.5  # grey bottom-right
    return image


class RedDetector(nn.Module):
    """Class 0's logit grows with the red in the top-left quadrant; class 1's logit is 0."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        red = images[:, 0, :16, :16].mean((1, 2)) * 6 - 3
        return torch.stack([red, torch.zeros_like(red)], dim=1)


def test_lime_is_deterministic_under_a_seed(tiny_net):
    images, targets = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3)), torch.tensor([1, 3])
    first = Lime(tiny_net, n_samples=24, n_segments=10, seed=7).attribute(images, targets)
    again = Lime(tiny_net, n_samples=24, n_segments=10, seed=7).attribute(images, targets)
    other = Lime(tiny_net, n_samples=24, n_segments=10, seed=8).attribute(images, targets)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    # batching of perturbations does not change the answer
    chunked = Lime(tiny_net, n_samples=24, n_segments=10, seed=7, batch_size=5).attribute(images, targets)
    torch.testing.assert_close(chunked, first, rtol=1e-4, atol=1e-6)


def test_lime_finds_the_evidence():
    image = blocks_image()
    segments = superpixels(image, "slic", 4)
    assert len(segments.unique()) >= 4
    lime = Lime(RedDetector(), n_samples=64, n_segments=4, hide="black", activation="logit")
    raw = lime.attribute(image.expand(2, -1, -1, -1), torch.tensor([0, 1]))
    red = raw[0, 0, :16, :16].mean()
    assert red > 0.5 and raw[0, 0, 16:, :].abs().max() < 0.1 * red  # only the red quadrant matters for class 0
    assert raw[1].abs().max() < 1e-6  # class 1 ignores the image
    maps = lime(image, 0)
    assert maps[0, 0, :16, :16].min() == 1.0


def test_weighted_ridge_matches_sklearn():
    sklearn = pytest.importorskip("sklearn.linear_model")
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(0, 2, (2, 40, 6), generator=generator).float()
    y, w = torch.rand(2, 40, generator=generator), torch.rand(2, 40, generator=generator)
    ours = weighted_ridge(x, y, w, alpha=0.5)
    for b in range(2):
        model = sklearn.Ridge(alpha=0.5).fit(x[b].numpy(), y[b].numpy(), sample_weight=w[b].numpy())
        torch.testing.assert_close(ours[b], torch.from_numpy(model.coef_).float(), rtol=1e-4, atol=1e-5)
