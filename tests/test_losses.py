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


def channel_ssims(reconstruction, image):
    return [ssim(reconstruction[:, c : c + 1], image[:, c : c + 1], data_range=1.0) for c in range(3)]


def test_weights_are_normalised():
    assert normalise_weights((2, 4, 4)) == pytest.approx((0.2, 0.4, 0.4))
    assert normalise_weights((0, 0, 3)) == (0.0, 0.0, 1.0)


@pytest.mark.parametrize("bad,message", [((0, 0, 0), "not all be zero"), ((1, -1, 1), ">= 0"), ((1, 1), "3 numbers")])
def test_bad_weights_are_rejected(bad, message):
    with pytest.raises(ValueError, match=message):
        PerceptionLoss(bad)


def test_terms_match_direct_computation(encoder):
    """MSE and DSIM are per-element means; SSIM-loss is the authors' -sum over RGB channels of SSIM."""
    torch.manual_seed(1)
    image, reconstruction = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    terms = PerceptionLoss((1, 2, 2))(reconstruction, image, encoder)
    mse = ((reconstruction - image) ** 2).sum() / image.numel()
    ssim_loss = -sum(channel_ssims(reconstruction, image))
    latent, latent_hat = encoder(image), encoder(reconstruction)
    dsim = ((latent_hat - latent) ** 2).sum() / latent.numel()
    assert terms.mse == pytest.approx(mse.item(), rel=1e-5)
    assert terms.ssim == pytest.approx(ssim_loss.item(), rel=1e-5)
    assert terms.dsim == pytest.approx(dsim.item(), rel=1e-4)
    assert terms.total.item() == pytest.approx((0.2 * mse + 0.4 * ssim_loss + 0.4 * dsim).item(), rel=1e-4)


def test_mean_reduction_keeps_the_earlier_term():
    torch.manual_seed(2)
    image, reconstruction = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    terms = PerceptionLoss((0, 1, 0), ssim_reduction="mean")(reconstruction, image)
    assert terms.total.item() == pytest.approx(1 - sum(channel_ssims(reconstruction, image)).item() / 3, rel=1e-5, abs=1e-6)
    authors = PerceptionLoss((0, 1, 0))(reconstruction, image)
    assert authors.total.item() == pytest.approx(-sum(channel_ssims(reconstruction, image)).item(), rel=1e-5, abs=1e-6)  # float32 sums
    with pytest.raises(ValueError, match="ssim_reduction"):
        PerceptionLoss(ssim_reduction="max")


def test_perfect_reconstruction_reaches_the_minimum(encoder):
    image = torch.rand(2, 3, 64, 64)
    terms = PerceptionLoss()(image.clone(), image, encoder)
    assert terms.mse.item() == pytest.approx(0, abs=1e-7) and terms.dsim.item() == pytest.approx(0, abs=1e-7)
    assert terms.ssim.item() == pytest.approx(-3, abs=1e-5)  # -sum of three SSIMs of 1


def test_dsim_needs_the_encoder():
    with pytest.raises(ValueError, match="needs the encoder"):
        PerceptionLoss((0, 0, 1))(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))


def test_given_latent_is_reused_and_gradient_reaches_reconstruction(encoder):
    image = torch.rand(1, 3, 64, 64)
    reconstruction = torch.rand(1, 3, 64, 64, requires_grad=True)
    latent = encoder(image)
    terms = PerceptionLoss((0, 0, 1))(reconstruction, image, encoder, latent)
    terms.total.backward()
    assert terms.dsim == pytest.approx(F.mse_loss(encoder(reconstruction), latent).item(), rel=1e-5)
    assert reconstruction.grad.abs().sum() > 0
    assert not any(p.grad is not None for p in encoder.parameters())


def test_ssim_term_is_float32_under_bf16_autocast():
    """Under bf16 autocast (pv fit's bf16-mixed) the SSIM term must keep float32 accuracy: its variances cancel in bf16."""
    import torch

    from pv.losses import PerceptionLoss

    torch.manual_seed(0)
    image = torch.rand(2, 3, 32, 32)
    reconstruction = (image + 0.05 * torch.randn_like(image)).clamp(0, 1)
    loss = PerceptionLoss((0.2, 0.4, 0.4))
    exact = loss.ssim_loss(reconstruction, image)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = loss.ssim_loss(reconstruction, image)
    assert mixed.dtype == torch.float32
    assert abs(mixed.item() - exact.item()) < 1e-4
