"""Loading models: a classifier from a pv checkpoint or any torchvision architecture, and pv decoders.

Every checkpoint is read by `load_checkpoint` (`torch.load(weights_only=True)`), so opening a file
never runs code from it.
"""
from __future__ import annotations

import torch
from torch import nn

from pv.models.checkpoint import load_checkpoint, safe_globals
from pv.models.classifier import Classifier, pooled_linear_head, torchvision_categories
from pv.models.decoder import load_decoder
from pv.models.weights import Normalize, build_torchvision_model, none_if_null

__all__ = ["TorchvisionClassifier", "load_checkpoint", "load_classifier", "load_decoder", "safe_globals"]


class TorchvisionClassifier(nn.Module):
    """Any torchvision classifier as images in [0, 1] -> logits; its layers are named as in torchvision
    ("features", "features.12", ...), reachable as `net.<name>` or just `<name>`.

    Its ImageNet head is single-label: `activation` is "softmax" and `input_size` 224.
    """

    activation = "softmax"
    input_size = 224

    def __init__(self, arch: str, weights: str | None = None):
        super().__init__()
        self.normalize = Normalize()
        self.net = build_torchvision_model(arch, weights)
        with torch.no_grad():
            self.num_classes = int(self.net.eval()(torch.zeros(1, 3, 64, 64)).shape[1])
        self.class_names = list(torchvision_categories(arch, weights)) if weights else [str(i) for i in range(self.num_classes)]
        self.weights_name, self.checkpoint_path = weights, None
        self.config = {"arch": arch, "weights": weights, "num_classes": self.num_classes, "activation": self.activation, "input_size": self.input_size}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(images))  # (B, 3, H, W) -> (B, num_classes)


def load_classifier(checkpoint: str | None = None, arch: str | None = None, weights: str | None = None) -> nn.Module:
    """A pv Classifier from `checkpoint`, else torchvision `arch` with `weights` (None: random init), in eval mode.

    Torchvision models whose head is one linear layer on pooled features (`pooled_linear_head`:
    ResNets, RegNets, ...) become a pv `Classifier` (fast all-class Grad-CAM); the others are
    wrapped as they are (`TorchvisionClassifier`).
    """
    weights = none_if_null(weights)
    if checkpoint is not None:
        if arch is not None:
            raise ValueError("Give either a classifier checkpoint or a torchvision arch, not both")
        return Classifier.from_checkpoint(checkpoint).eval()
    if arch is None:
        raise ValueError("Give a classifier: --classifier CKPT, or --arch NAME [--weights ENUM|none]")
    with torch.device("meta"):  # structural probe: no memory, no download, no draw from the random generator
        probe = build_torchvision_model(arch, None)
    if pooled_linear_head(probe) is not None:
        return Classifier(arch, num_classes=None, weights=weights).eval()
    return TorchvisionClassifier(arch, weights).eval()
