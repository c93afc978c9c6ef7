"""The PV training loss: a1 * MSE + a2 * SSIM-loss + a3 * DSIM."""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

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
    """L = a1 * MSE(y, x) + a2 * (1 - SSIM(y, x)) + a3 * DSIM(y, x), weights normalised to sum 1.

    - MSE: mean squared pixel error, images in [0, 1].
    - SSIM-loss: 1 - mean over RGB channels of the per-channel SSIM (pytorch-msssim, 11x11 Gaussian
      window, sigma 1.5, data_range 1). The original Keras code minimised -sum_c SSIM_c; ours is the
      same objective scaled by 1/3 and shifted by 1, so it is >= 0 and 0 for a perfect reconstruction.
    - DSIM: ||E(y) - E(x)||^2 averaged over latent elements; the gradient flows through the frozen
      encoder E into the decoder.
    """

    def __init__(self, encoder: nn.Module, weights: Sequence[float] = (0.2, 0.4, 0.4)):
        super().__init__()
        self.weights = normalise_weights(weights)
        self._encoder = [encoder]  # a reference, not a submodule: the encoder belongs to the model

    @property
    def encoder(self) -> nn.Module:
        return self._encoder[0]

    def forward(self, reconstruction: torch.Tensor, image: torch.Tensor, latent: torch.Tensor | None = None) -> LossTerms:
        a_mse, a_ssim, a_dsim = self.weights
        zero = reconstruction.new_zeros(())
        mse = F.mse_loss(reconstruction, image)
        ssim_loss = 1 - ssim(reconstruction.float(), image.float(), data_range=1.0)
        if a_dsim > 0:
            if latent is None:
                with torch.no_grad():
                    latent = self.encoder(image)
            dsim = F.mse_loss(self.encoder(reconstruction).float(), latent.float())
        else:
            dsim = zero
        total = a_mse * mse + a_ssim * ssim_loss + a_dsim * dsim
        return LossTerms(total, mse.detach(), ssim_loss.detach(), dsim.detach())
