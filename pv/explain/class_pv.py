"""Class-discriminative PV (beyond the paper): decode the latent weighted by one class's saliency.

The plain PV decodes the whole latent and only masks *where* the model looks. Here the latent
z (B, C, h, w) is first multiplied by the class's saliency at the latent's resolution (e.g. the
7x7 Grad-CAM), so the decoder shows *what* the model perceives for that class:
    y_c = D(z * m_c),   PV_c = (1 - M_c) + M_c * y_c,   M_c = m_c upsampled to the image.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pv.explain.cam import normalize_maps, upsample_maps
from pv.explain.combine import perception_visualization


def class_discriminative_pv(
    latent: torch.Tensor, decoder: nn.Module, saliency: torch.Tensor, size: tuple[int, int], normalization: str = "max"
) -> dict[str, torch.Tensor]:
    """latent (B, C, h, w), one saliency map per latent (B, 1, h', w') of any resolution, image size (H, W) ->
    {"mask" (B, 1, h, w), "reconstruction" (B, 3, H, W), "pv" (B, 3, H, W)}; maps scaled by `normalize_maps`."""
    if saliency.dim() != 4 or saliency.shape[:2] != (latent.shape[0], 1):
        raise ValueError(f"saliency must be (B, 1, h, w) with B={latent.shape[0]}, got {tuple(saliency.shape)}")
    saliency = saliency.to(latent.dtype)
    if saliency.shape[-2:] != latent.shape[-2:]:  # e.g. an input-resolution map: average it into latent cells
        saliency = F.adaptive_avg_pool2d(saliency, latent.shape[-2:])
    mask = normalize_maps(saliency, normalization)  # (B, 1, h, w) in [0, 1]
    reconstruction = decoder(latent * mask)  # (B, 3, 2^n h, 2^n w)
    if reconstruction.shape[-2:] != tuple(size):
        reconstruction = F.interpolate(reconstruction, size=tuple(size), mode="bilinear", align_corners=False)
    image_mask = normalize_maps(upsample_maps(mask, tuple(size)), normalization)  # (B, 1, H, W)
    reconstruction = reconstruction.clamp(0, 1)
    return {"mask": mask, "reconstruction": reconstruction, "pv": perception_visualization(reconstruction, image_mask)}
