"""The paper's other presentations of a saliency map: a heatmap over the image, and masking."""
from __future__ import annotations

import matplotlib
import torch


def colorize(saliency: torch.Tensor, colormap: str = "jet") -> torch.Tensor:
    """(B, 1, H, W) in [0, 1] -> RGB (B, 3, H, W) through a matplotlib colormap."""
    lut = torch.tensor(matplotlib.colormaps[colormap](torch.linspace(0, 1, 256).numpy())[:, :3], dtype=torch.float32)
    lut = lut.to(saliency.device)
    position = saliency.squeeze(1).float().clamp(0, 1) * (len(lut) - 1)  # (B, H, W)
    low = position.floor().long().clamp(max=len(lut) - 2)
    fraction = (position - low).unsqueeze(-1)  # linear between entries: nearby values get nearby colours
    return torch.lerp(lut[low], lut[low + 1], fraction).permute(0, 3, 1, 2)  # (B, 3, H, W)


def heatmap_overlay(images: torch.Tensor, saliency: torch.Tensor, colormap: str = "jet", alpha: float = 0.5) -> torch.Tensor:
    """Blend the coloured saliency over images (B, 3, H, W): (1 - alpha) * image + alpha * heatmap."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return (1 - alpha) * images + alpha * colorize(saliency, colormap).to(images.dtype)


def mask_image(images: torch.Tensor, saliency: torch.Tensor, background: float = 0.0) -> torch.Tensor:
    """Keep the image where the model looks: m * x + (1 - m) * background."""
    return saliency * images + (1 - saliency) * background
