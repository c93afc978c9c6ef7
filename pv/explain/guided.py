"""Guided Backpropagation (Springenberg et al. 2015, through captum) and Guided Grad-CAM (its product with Grad-CAM)."""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from pv.explain.cam import upsample_maps
from pv.explain.gradcam import GradCAM
from pv.explain.saliency import Saliency, TargetsLike


GUIDED_ACTIVATIONS = (nn.ReLU, nn.ReLU6)  # piecewise linear: guiding their backward pass is defined


@contextlib.contextmanager
def guided_relu6(model: nn.Module) -> Iterator[None]:
    """Guide every `nn.ReLU6` of `model` while inside (captum guides `nn.ReLU` only): the gradient reaching
    its output loses its negative part, so the gradient into it is relu(g) * 1[0 < x < 6] = relu(g * 1[0 < x < 6]),
    captum's rule for ReLU. A tensor hook on the output also holds for ReLU6(inplace=True)."""

    def hook(module, inputs, output):
        if output.requires_grad:
            output.register_hook(F.relu)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.ReLU6)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class GuidedBackprop(Saliency):
    """Gradient of the target logit w.r.t. the image, with every `nn.ReLU` and `nn.ReLU6` module passing
    only positive gradients (captum's hooks). Functional ReLUs and smooth activations (SiLU, GELU) are
    not guided: a model with none of those modules (a ViT, an EfficientNet-B0) gets its plain input
    gradient, and a warning says so. Raw: (B, 3, H, W)."""

    title = "Guided Backprop"

    def __init__(self, model: nn.Module, **options):
        super().__init__(model, **options)
        if not any(isinstance(m, GUIDED_ACTIVATIONS) for m in model.modules()):
            kinds = sorted({type(m).__name__ for m in model.modules() if isinstance(m, (nn.SiLU, nn.GELU, nn.Hardswish, nn.Mish))})
            warnings.warn(
                f"Guided Backprop guides nn.ReLU / nn.ReLU6 modules only; {type(model).__name__} has none"
                f"{' (its activations: ' + ', '.join(kinds) + ')' if kinds else ''}: its map is the plain input gradient",
                stacklevel=2,
            )
        from captum.attr import GuidedBackprop as CaptumGuidedBackprop

        self.captum = CaptumGuidedBackprop(model)

    def attribute(self, images: torch.Tensor, targets: TargetsLike) -> torch.Tensor:
        targets = self.targets(images, targets)
        with warnings.catch_warnings():  # captum announces its ReLU hooks and input grads on every call
            warnings.simplefilter("ignore", UserWarning)
            with guided_relu6(self.model):
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
