"""Closed-form class activation maps for heads that are linear on globally average-pooled features.

For logits = W @ mean_hw(A) + b, the Grad-CAM weights dy_c/dA_k are W[c, k] / (h*w), so
Grad-CAM_c = ReLU(sum_k W[c, k] A_k) up to a positive factor that per-map normalisation removes:
all classes come from one forward pass and one einsum, with no backward pass.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def class_activation_maps(features: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """features (B, C, h, w), head weight (K, C) -> ReLU'd maps (B, K, h, w) for all K classes."""
    return F.relu(torch.einsum("bchw,kc->bkhw", features, weight.to(features.dtype)))


NORMALIZATIONS = ("max", "minmax")


def normalize_maps(maps: torch.Tensor, mode: str = "max", eps: float = 1e-8) -> torch.Tensor:
    """Scale each map (B, K, h, w) into [0, 1].

    "max" (the authors' Grad-CAM, the default): negative values -> 0, then divide by the map's maximum,
    so an all-positive map keeps its weakest cell above 0. "minmax": (m - min) / (max - min), which
    turns the weakest cell to 0 whatever its value. A map with nothing above 0 (or constant, for
    "minmax") becomes 0.
    """
    flat = maps.flatten(2)
    if mode == "max":
        flat = flat.clamp_min(0)
        return (flat / flat.amax(dim=2, keepdim=True).clamp_min(eps)).view_as(maps)
    if mode == "minmax":
        low, high = flat.amin(dim=2, keepdim=True), flat.amax(dim=2, keepdim=True)
        return ((flat - low) / (high - low).clamp_min(eps)).view_as(maps)
    raise ValueError(f"normalization must be one of {', '.join(NORMALIZATIONS)}, got {mode!r}")


def upsample_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling (B, K, h, w) -> (B, K, H, W)."""
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
