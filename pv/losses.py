"""The PV training loss: a1 * MSE + a2 * SSIM-loss + a3 * DSIM (the authors' terms)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from pytorch_msssim import ssim
from torch import nn


class LossTerms(NamedTuple):
    total: torch.Tensor
    mse: torch.Tensor
    ssim: torch.Tensor
    dsim: torch.Tensor


def normalise_weights(weights: Sequence[float]) -> tuple[float, float, float]:
    """Check loss weights (mse, ssim, dsim) are >= 0 and not all zero; scale them to sum 1."""
    weights = tuple(float(w) for w in weights)
    if len(weights) != 3:
        raise ValueError(f"loss weights must be 3 numbers (mse, ssim, dsim), got {list(weights)}")
    if any(w < 0 or w != w for w in weights):
        raise ValueError(f"loss weights must be >= 0, got {list(weights)}")
    if sum(weights) == 0:
        raise ValueError(f"loss weights must not all be zero, got {list(weights)}")
    return tuple(w / sum(weights) for w in weights)  # type: ignore[return-value]


class PerceptionLoss(nn.Module):
    """L = a1 * MSE(y, x) + a2 * SSIM-loss(y, x) + a3 * DSIM(y, x), weights normalised to sum 1.

    - MSE: mean over all elements of (y - x)^2, images in [0, 1].
    - SSIM-loss (`ssim_reduction="sum"`, the authors' `rgb_ssim_loss`): -sum over the RGB channels of
      the per-channel SSIM (11x11 Gaussian window, sigma 1.5, data range 1), averaged over the batch;
      in [-3, 3], -3 for a perfect reconstruction. `"mean"` is pv's earlier term 1 - mean_c SSIM_c, in
      [0, 2]: its gradient is 3x smaller, so the same weights give SSIM a third of the authors' pull.
    - DSIM: mean over latent elements of (E(y) - E(x))^2; the gradient flows through the frozen
      encoder E into the decoder. E is passed to `forward`: it belongs to the model, not to the loss.
    """

    def __init__(self, weights: Sequence[float] = (0.2, 0.4, 0.4), ssim_reduction: Literal["sum", "mean"] = "sum"):
        super().__init__()
        if ssim_reduction not in ("sum", "mean"):
            raise ValueError(f"ssim_reduction must be 'sum' (the authors') or 'mean', got {ssim_reduction!r}")
        self.weights = normalise_weights(weights)
        self.ssim_reduction = ssim_reduction

    def ssim_loss(self, reconstruction: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        # The mean over channels of the batch-mean per-channel SSIM is pytorch_msssim's mean over (B, C): one call
        # (half the time of one call per channel on CPU), the same value.
        with torch.autocast(reconstruction.device.type, enabled=False):  # float32 even under bf16 autocast: SSIM's variances cancel
            mean = ssim(reconstruction.float(), image.float(), data_range=1.0)  # mean over batch and channels
        return -mean * image.shape[1] if self.ssim_reduction == "sum" else 1 - mean

    def forward(
        self, reconstruction: torch.Tensor, image: torch.Tensor, encoder: nn.Module | None = None, latent: torch.Tensor | None = None,
        encoder_input: torch.Tensor | None = None,
    ) -> LossTerms:
        """`encoder_input`: the reconstruction as E sees it for DSIM (e.g. upsampled to E's input size); default `reconstruction`."""
        a_mse, a_ssim, a_dsim = self.weights
        mse = F.mse_loss(reconstruction.float(), image.float())
        ssim_loss = self.ssim_loss(reconstruction, image)
        if a_dsim > 0:
            if encoder is None:
                raise ValueError("PerceptionLoss with a DSIM weight > 0 needs the encoder: loss(reconstruction, image, encoder)")
            if latent is None:
                with torch.no_grad():
                    latent = encoder(image)  # (B, C, h, w)
            dsim = F.mse_loss(encoder(reconstruction if encoder_input is None else encoder_input).float(), latent.float())
        else:
            dsim = reconstruction.new_zeros((), dtype=torch.float32)
        total = a_mse * mse + a_ssim * ssim_loss + a_dsim * dsim
        return LossTerms(total, mse.detach(), ssim_loss.detach(), dsim.detach())
