"""The PV image itself: the reconstruction where the model looks, white elsewhere (a leaf module)."""
from __future__ import annotations

import torch


def perception_visualization(reconstruction: torch.Tensor, saliency: torch.Tensor) -> torch.Tensor:
    """p = (1 - m) + m * y.

    reconstruction y: (B, 3, H, W) in [0, 1]; saliency m: (B, 1, H, W) (or (B, H, W)) in [0, 1].
    Returns (B, 3, H, W) in [0, 1].
    """
    if saliency.dim() == 3:
        saliency = saliency.unsqueeze(1)  # (B, H, W) -> (B, 1, H, W)
    if saliency.shape[-2:] != reconstruction.shape[-2:] or saliency.shape[0] != reconstruction.shape[0]:
        raise ValueError(f"saliency {tuple(saliency.shape)} does not match reconstruction {tuple(reconstruction.shape)}")
    saliency = saliency.to(reconstruction.dtype)
    return (1 - saliency) + saliency * reconstruction  # (B, 3, H, W)
