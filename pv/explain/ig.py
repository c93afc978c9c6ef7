"""Integrated Gradients (Sundararajan et al. 2017) through captum, from a black or a blurred baseline."""
from __future__ import annotations

import torch
from torch import nn

from pv.explain.postprocess import gaussian_blur
from pv.explain.saliency import Saliency, TargetsLike

BASELINES = ("black", "blurred")


class IntegratedGradients(Saliency):
    """attr_i = (x_i - x'_i) * integral_0^1 d logit_c(x' + a (x - x')) / dx_i da, per pixel and channel.

    Completeness: attr.sum() ~= logit_c(x) - logit_c(x'). `baseline` is "black" (zeros) or
    "blurred" (the image blurred with `baseline_sigma` pixels). The `n_steps` interpolated images of
    the whole batch go through the model `internal_batch_size` at a time.
    """

    title = "Integrated Gradients"

    def __init__(
        self,
        model: nn.Module,
        *,
        baseline: str = "black",
        baseline_sigma: float = 8.0,
        n_steps: int = 32,
        internal_batch_size: int = 64,
        method: str = "gausslegendre",
        **options,
    ):
        super().__init__(model, **options)
        if baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {', '.join(BASELINES)}, got {baseline!r}")
        if n_steps < 1 or internal_batch_size < 1:
            raise ValueError(f"n_steps and internal_batch_size must be >= 1, got {n_steps} and {internal_batch_size}")
        from captum.attr import IntegratedGradients as CaptumIG

        self.captum = CaptumIG(model)
        self.baseline_kind, self.baseline_sigma = baseline, baseline_sigma
        self.n_steps, self.internal_batch_size, self.method = n_steps, internal_batch_size, method

    def baseline(self, images: torch.Tensor) -> torch.Tensor:
        """The reference images x' (B, 3, H, W)."""
        if self.baseline_kind == "black":
            return torch.zeros_like(images)
        return gaussian_blur(images, self.baseline_sigma)

    def attribute(self, images: torch.Tensor, targets: TargetsLike) -> torch.Tensor:
        """Attributions (B, 3, H, W), same units as the logit."""
        targets = self.targets(images, targets)
        # captum needs >= 2 steps per image in each internal batch; split the images to respect that
        chunk = max(1, self.internal_batch_size // 2)
        parts = []
        for start in range(0, len(images), chunk):
            x, t = images[start : start + chunk], targets[start : start + chunk]
            parts.append(
                self.captum.attribute(
                    x, baselines=self.baseline(x), target=t, n_steps=self.n_steps,
                    method=self.method, internal_batch_size=max(self.internal_batch_size, 2 * len(x)),
                ).detach()
            )
        return torch.cat(parts)  # (B, 3, H, W)
