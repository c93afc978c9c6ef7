"""Post-processing of maps and images: Gaussian blur and total-variation denoising, batched in torch."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gaussian_kernel(sigma: float, device=None, dtype=torch.float32) -> torch.Tensor:
    """Normalised 1-D Gaussian with radius ceil(3 sigma): (2r + 1,)."""
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W) with replicated borders; any sigma, any image size."""
    if sigma <= 0:
        return x
    kernel = gaussian_kernel(sigma, x.device, x.dtype)
    radius, channels = len(kernel) // 2, x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="replicate")  # (B, C, H + 2r, W + 2r)
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)  # along W
    return F.conv2d(x, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)  # along H


def _grad(u: torch.Tensor) -> torch.Tensor:
    """Forward differences (B, C, H, W) -> (B, C, 2, H, W), zero on the last row / column."""
    dy = F.pad(u[..., 1:, :] - u[..., :-1, :], (0, 0, 0, 1))
    dx = F.pad(u[..., :, 1:] - u[..., :, :-1], (0, 1, 0, 0))
    return torch.stack([dy, dx], dim=2)


def _div(p: torch.Tensor) -> torch.Tensor:
    """Discrete divergence, the negative adjoint of `_grad`: (B, C, 2, H, W) -> (B, C, H, W)."""
    py, px = p[:, :, 0], p[:, :, 1]
    dy = torch.cat([py[..., :1, :], py[..., 1:-1, :] - py[..., :-2, :], -py[..., -2:-1, :]], dim=-2)
    dx = torch.cat([px[..., :1], px[..., 1:-1] - px[..., :-2], -px[..., -2:-1]], dim=-1)
    return dy + dx


def total_variation(u: torch.Tensor) -> torch.Tensor:
    """Isotropic total variation of each (B, C, H, W) image: (B,)."""
    return _grad(u).norm(dim=2).flatten(1).sum(1)


def tv_denoise(f: torch.Tensor, weight: float = 0.1, n_iter: int = 100) -> torch.Tensor:
    """ROF denoising, argmin_u 0.5 ||u - f||^2 + weight * TV(u), by Chambolle's dual projection (2004).

    f: (B, C, H, W) (each channel denoised on its own); needs H, W >= 2. Same problem as
    `skimage.restoration.denoise_tv_chambolle(f, weight)`, batched on f's device.
    """
    if weight <= 0:
        return f
    if min(f.shape[-2:]) < 2:
        return f
    tau = 0.25  # step size; Chambolle proves convergence for tau <= 1/8, 1/4 works in practice
    p = torch.zeros(*f.shape[:2], 2, *f.shape[2:], device=f.device, dtype=f.dtype)  # (B, C, 2, H, W)
    for _ in range(n_iter):
        g = _grad(_div(p) - f / weight)
        p = (p + tau * g) / (1 + tau * g.norm(dim=2, keepdim=True))
    return f - weight * _div(p)
