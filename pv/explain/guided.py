"""Guided Backpropagation (Springenberg et al. 2015, through captum) and Guided Grad-CAM (its product with Grad-CAM)."""
from __future__ import annotations

import warnings

import torch
from torch import nn

from pv.explain.cam import upsample_maps
from pv.explain.gradcam import GradCAM
from pv.explain.saliency import Saliency, TargetsLike


class GuidedBackprop(Saliency):
    """Gradient of the target logit w.r.t. the image, with ReLUs passing only positive gradients
    (captum hooks every `nn.ReLU` module; functional ReLUs are not guided). Raw: (B, 3, H, W)."""

    title = "Guided Backprop"

    def __init__(self, model: nn.Module, **options):
        super().__init__(model, **options)
        from captum.attr import GuidedBackprop as CaptumGuidedBackprop

        self.captum = CaptumGuidedBackprop(model)

    def attribute(self, images: torch.Tensor, targets: TargetsLike) -> torch.Tensor:
        targets = self.targets(images, targets)
        with warnings.catch_warnings():  # captum announces its ReLU hooks and input grads on every call
            warnings.simplefilter("ignore", UserWarning)
            gradients = self.captum.attribute(images.detach().clone(), target=targets).detach()  # (B, 3, H, W)
        return gradients.to(torch.promote_types(gradients.dtype, torch.float32))  # fp32 under bf16 autocast


class GuidedGradCAM(Saliency):
    """Guided Backprop times Grad-CAM upsampled to the input (Selvaraju et al. 2017). Raw: (B, 3, H, W).

    Grad-CAM is scaled per image to a maximum of 1 before the product, so the raw attribution is in
    guided-backprop units: the product of two raw maps is ~1e-8 for a small net, within reach of
    absolute epsilons and of half-precision underflow (fp16's smallest subnormal is 6e-8). The
    normalised map is the same either way. `layer` and `fast` go to Grad-CAM.
    """

    title = "Guided Grad-CAM"

    def __init__(self, model: nn.Module, *, layer: str | None = None, fast: bool | None = None, **options):
        super().__init__(model, **options)
        self.gradcam = GradCAM(model, layer=layer, fast=fast)
        self.guided = GuidedBackprop(model)

    def attribute(self, images: torch.Tensor, targets: TargetsLike) -> torch.Tensor:
        targets = self.targets(images, targets)
        cam = self.gradcam.attribute(images, targets)  # (B, 1, h, w), >= 0
        cam = cam / cam.flatten(1).amax(1).clamp_min(torch.finfo(cam.dtype).tiny).view(-1, 1, 1, 1)  # max 1 (or all 0)
        cam = upsample_maps(cam, images.shape[-2:])  # (B, 1, H, W)
        return self.guided.attribute(images, targets) * cam  # (B, 3, H, W)
