import pytest
import torch
import torch.nn.functional as F
from pytorch_msssim import ssim

from pv.losses import PerceptionLoss, normalise_weights
from pv.models import FrozenEncoder


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return FrozenEncoder("resnet18", "layer4", weights=None)


def test_weights_are_normalised():
    assert normalise_weights((2, 4, 4)) == pytest.approx((0.2, 0.4, 0.4))
    assert normalise_weights((0, 0, 3)) == (0.0, 0.0, 1.0)


@pytest.mark.parametrize("bad,message", [((0, 0, 0), "not all be zero"), ((1, -1, 1), ">= 0"), ((1, 1), "3 numbers")])
def test_bad_weights_are_rejected(bad, message, encoder):
    with pytest.raises(ValueError, match=message):
        PerceptionLoss(encoder, bad)


def test_terms_match_direct_computation(encoder):
    torch.manual_seed(1)
    image, reconstruction = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    terms = PerceptionLoss(encoder, (1, 2, 2))(reconstruction, image)
    mse = ((reconstruction - image) ** 2).mean()
    ssim_loss = 1 - ssim(reconstruction, image, data_range=1.0)
    dsim = ((encoder(reconstruction) - encoder(image)) ** 2).mean()
    assert terms.mse == pytest.approx(mse.item(), rel=1e-5)
    assert terms.ssim == pytest.approx(ssim_loss.item(), rel=1e-5)
    assert terms.dsim == pytest.approx(dsim.item(), rel=1e-4)
    assert terms.total.item() == pytest.approx((0.2 * mse + 0.4 * ssim_loss + 0.4 * dsim).item(), rel=1e-4)


def test_ssim_term_is_mean_of_per_channel_ssim(encoder):
    torch.manual_seed(2)
    image, reconstruction = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    per_channel = [ssim(reconstruction[:, c : c + 1], image[:, c : c + 1], data_range=1.0) for c in range(3)]
    terms = PerceptionLoss(encoder, (0, 1, 0))(reconstruction, image)
    assert terms.total.item() == pytest.approx(1 - sum(per_channel).item() / 3, rel=1e-5)


def test_perfect_reconstruction_has_zero_loss(encoder):
    image = torch.rand(2, 3, 64, 64)
    assert PerceptionLoss(encoder)(image.clone(), image).total.item() == pytest.approx(0, abs=1e-6)


def test_given_latent_is_reused_and_gradient_reaches_reconstruction(encoder):
    image = torch.rand(1, 3, 64, 64)
    reconstruction = torch.rand(1, 3, 64, 64, requires_grad=True)
    latent = encoder(image)
    terms = PerceptionLoss(encoder, (0, 0, 1))(reconstruction, image, latent)
    terms.total.backward()
    assert terms.dsim == pytest.approx(F.mse_loss(encoder(reconstruction), latent).item(), rel=1e-5)
    assert reconstruction.grad.abs().sum() > 0
    assert not any(p.grad is not None for p in encoder.parameters())
