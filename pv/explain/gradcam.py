"""Grad-CAM (Selvaraju et al. 2017) and Grad-CAM++ (Chattopadhay et al. 2018).

Both weight the layer's activation channels A_k and keep the positive part of the sum:
    map_c = ReLU(sum_k w_k^c A_k)
and differ only in `channel_weights`. For a pv `Classifier` (linear head on average-pooled
features) Grad-CAM has a closed form, so `GradCAM.all_classes` explains every class from one
forward pass with no backward pass (`pv.explain.cam.class_activation_maps`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pv.explain.cam import class_activation_maps
from pv.explain.saliency import LayerRecorder, LayerSaliency, TargetsLike, as_targets
from pv.models.classifier import Classifier


def at_least_fp32(tensor: torch.Tensor) -> torch.Tensor:
    """bf16 / fp16 (autocast) -> fp32; fp32 and fp64 unchanged."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


class CAM(LayerSaliency):
    """Base class of the CAM family: raw attribution = ReLU(sum_k w_k A_k) at the layer's resolution (B, 1, h, w)."""

    title = "CAM"

    def channel_weights(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        """A, dy/dA (B, C, h, w) -> channel weights (B, C, 1, 1)."""
        raise NotImplementedError

    def attribute(self, images: torch.Tensor, targets: TargetsLike) -> torch.Tensor:
        activations, gradients = self.activations_and_gradients(images, targets)  # (B, C, h, w) each
        activations, gradients = at_least_fp32(activations), at_least_fp32(gradients)  # bf16 autocast: weigh in fp32
        weights = self.channel_weights(activations, gradients)  # (B, C, 1, 1)
        return F.relu((weights * activations).sum(dim=1, keepdim=True))  # (B, 1, h, w)

    def reduce(self, attribution: torch.Tensor) -> torch.Tensor:
        return attribution  # already one non-negative map


class GradCAM(CAM):
    """w_k = mean over positions of d logit_c / dA_k.

    `fast=None` uses the closed form when the model is a pv `Classifier` explained at its last
    feature layer (identical maps, no backward); `fast=True` insists on it, `fast=False` never uses it.
    """

    title = "Grad-CAM"

    def __init__(self, model: nn.Module, *, layer: str | None = None, fast: bool | None = None, **options):
        super().__init__(model, layer=layer, **options)
        self.fast = self.fast_path_available() if fast is None else fast
        if self.fast and not self.fast_path_available():
            raise ValueError(
                f"fast=True needs a pv Classifier explained at its last feature layer; "
                f"got {type(model).__name__} at {self.layer_name!r}"
            )

    def fast_path_available(self) -> bool:
        model = self.model
        return (
            isinstance(model, Classifier)
            and isinstance(model.head, nn.Linear)
            and self.layer is getattr(model.trunk, model.feature_layer)
        )

    def channel_weights(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        return gradients.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)

    @torch.no_grad()
    def all_classes(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw Grad-CAM of every class from one forward pass: (maps (B, K, h, w), logits (B, K)).

        With logits = W mean_hw(A) + b, dy_c/dA_k = W[c, k] / (h w) at every position, so the maps
        equal the gradient path's exactly (same scale, not only up to normalisation).
        """
        if not self.fast_path_available():
            raise ValueError(f"all_classes needs a pv Classifier explained at its last feature layer, not {self.layer_name!r}")
        return self.maps_from_features(self.model.forward_features(images))  # features (B, C, h, w)

    @torch.no_grad()
    def maps_from_features(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`all_classes` from the last feature map (B, C, h, w) already computed (e.g. PV's latent)."""
        with torch.autocast(features.device.type, enabled=False):  # maps in fp32 even from bf16 features
            maps = class_activation_maps(at_least_fp32(features), self.model.head.weight)  # (B, K, h, w)
        return maps / (features.shape[2] * features.shape[3]), self.model.forward_head(features)

    def attribute(self, images: torch.Tensor, targets: TargetsLike) -> torch.Tensor:
        if not self.fast:
            return super().attribute(images, targets)
        targets = as_targets(targets, len(images), self.model.num_classes, images.device)
        maps, _ = self.all_classes(images)  # (B, K, h, w)
        index = targets.view(-1, 1, 1, 1).expand(-1, 1, *maps.shape[2:])
        return maps.gather(1, index)  # (B, 1, h, w)

    def attribute_multi(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if not self.fast:
            return super().attribute_multi(images, targets)
        b, k = targets.shape
        targets = as_targets(targets.reshape(-1), b * k, self.model.num_classes, images.device).view(b, k)
        maps, _ = self.all_classes(images)  # (B, K_all, h, w): one forward for every class
        index = targets[..., None, None].expand(-1, -1, *maps.shape[2:])
        return maps.gather(1, index).unsqueeze(2)  # (B, K, 1, h, w)


class GradCAMPlusPlus(CAM):
    """w_k = sum_ij alpha_kij ReLU(g_kij), alpha = g^2 / (2 g^2 + sum_ab A_kab g^3) (exponential-score form)."""

    title = "Grad-CAM++"

    def channel_weights(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        g2, g3 = gradients.pow(2), gradients.pow(3)  # (B, C, h, w)
        denominator = 2 * g2 + activations.sum(dim=(2, 3), keepdim=True) * g3
        alpha = g2 / torch.where(denominator != 0, denominator, torch.ones_like(denominator))
        return (alpha * F.relu(gradients)).sum(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)


class MeanActivation(LayerSaliency):
    """Not class-specific: the layer's activation averaged over channels, ReLU'd (B, 1, h, w). What PV
    shows for an encoder without a classification head; `targets` are ignored."""

    title = "mean activation"
    class_agnostic = True

    @torch.no_grad()
    def attribute(self, images: torch.Tensor, targets: TargetsLike) -> torch.Tensor:
        with LayerRecorder(self.layer, stop=True) as recorder:
            activations = recorder.run(self.model, images)  # (B, C, h, w)
        return F.relu(activations.float().mean(dim=1, keepdim=True))  # (B, 1, h, w)

    def reduce(self, attribution: torch.Tensor) -> torch.Tensor:
        return attribution
