"""Loading models: a classifier from a pv checkpoint or from a model zoo (torchvision, timm, the packaged
EfficientNet-Lites: `pv.models.zoo`), and pv decoders.

Every checkpoint is read by `load_checkpoint` (`torch.load(weights_only=True)`), so opening a file
never runs code from it.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pv.models.checkpoint import load_checkpoint, safe_globals
from pv.models.classifier import Classifier, default_class_names, torchvision_categories
from pv.models.decoder import load_decoder
from pv.models.weights import Normalize, none_if_null
from pv.models.zoo import build_network, model_spec

__all__ = ["TorchvisionClassifier", "WrappedClassifier", "load_checkpoint", "load_classifier", "load_decoder", "safe_globals", "save_classifier"]


class WrappedClassifier(nn.Module):
    """Any torchvision or timm classifier as images in [0, 1] -> logits, as it is; its layers are named as
    in its zoo ("features", "features.12", "stages.3", ...), reachable as `net.<name>` or just `<name>`.

    Its ImageNet head is single-label: `activation` is "softmax"; `input_size`, normalisation and
    preprocessing are the arch's (`pv.models.zoo.model_spec`).
    """

    activation = "softmax"
    input_size = 224  # torchvision's; each instance has its arch's

    def __init__(self, arch: str, weights: str | None = None):
        super().__init__()
        self.net, spec = build_network(arch, weights)
        self.normalize = Normalize(spec.mean, spec.std)
        if spec.family == "timm":
            self.num_classes = int(self.net.num_classes)
        else:
            with torch.no_grad():
                self.num_classes = int(self.net.eval()(torch.zeros(1, 3, 64, 64)).shape[1])
        if not weights:
            self.class_names = [str(i) for i in range(self.num_classes)]
        else:
            self.class_names = list(torchvision_categories(arch, weights)) if spec.family == "torchvision" else default_class_names(self.num_classes)
        self.input_size, self.default_layer, self.preprocessing = spec.input_size, f"net.{spec.default_layer}", spec.preprocessing()
        self.weights_name, self.checkpoint_path = weights, None
        self.config = {
            "arch": arch, "weights": weights, "num_classes": self.num_classes, "activation": self.activation,
            "input_size": self.input_size, "mean": list(spec.mean), "std": list(spec.std),
        }  # fmt: skip

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(images))  # (B, 3, H, W) -> (B, num_classes)


TorchvisionClassifier = WrappedClassifier  # its name before timm models came


def load_classifier(checkpoint: str | None = None, arch: str | None = None, weights: str | None = None) -> nn.Module:
    """A pv Classifier from `checkpoint`, else `arch` from its zoo with `weights` (None: random init), in eval mode.

    `arch` is a torchvision or timm name, e.g. `load_classifier(arch="tf_efficientnet_lite0",
    weights="packaged")` (`pv.models.zoo`). Models whose head is one linear layer on pooled features
    (ResNets, RegNets, timm EfficientNets, ...) become a pv `Classifier` (closed-form all-class Grad-CAM),
    ViTs a `TokenClassifier` (token grids as layers), the others are wrapped as they are (`WrappedClassifier`).
    Every one takes images in [0, 1] and has `normalize`, `class_names`, `activation`, `input_size`,
    `preprocessing` and `config` (with mean and std).
    """
    weights = none_if_null(weights)
    if checkpoint is not None:
        if arch is not None:
            raise ValueError("Give either a classifier checkpoint or an arch, not both")
        return Classifier.from_checkpoint(checkpoint).eval()
    if arch is None:
        raise ValueError("Give a classifier: --classifier CKPT, or --arch NAME [--weights ENUM|packaged|pretrained|FILE|none]")
    spec = model_spec(arch, weights)
    if spec.pooled_linear:
        return Classifier(arch, num_classes=None, weights=weights).eval()
    if spec.tokens:
        from pv.models.tokens import TokenClassifier

        vit, _ = build_network(arch, weights)
        return TokenClassifier(vit, spec, weights=weights, class_names=default_class_names(vit.num_classes) if weights else None).eval()
    return WrappedClassifier(arch, weights).eval()


def save_classifier(model: Classifier, path: str | Path, source: dict | None = None) -> Path:
    """Write `model` (a pv `Classifier`, e.g. a zoo model from `load_classifier(arch=...)`) as a checkpoint that
    `Classifier.from_checkpoint` and `--classifier` read like one written by `pv fit`: its normalisation,
    class names and input size are in `classifier_config`; `source` (e.g. {"arch", "weights"}) is recorded
    as `pv_zoo_source`. Written to a temporary file and renamed."""
    from pv.atomic import atomic_path

    if not isinstance(model, Classifier):
        raise ValueError(f"only a pv Classifier (a head linear on pooled features) can be saved as a classifier checkpoint, not a {type(model).__name__}")
    checkpoint = {"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "classifier_config": dict(model.config)}
    if source:
        checkpoint["pv_zoo_source"] = dict(source)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        torch.save(checkpoint, temporary)
    return path
