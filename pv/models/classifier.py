"""The classifier M: a torchvision trunk, global average pooling and a linear head.

Because logits are a linear map of the pooled last feature map, Grad-CAM for this head has a
closed form (CAM) that `pv.explain` uses to explain every class from one forward pass.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from pv.models.weights import Normalize, build_torchvision_model

HEAD_NAMES = ("avgpool", "classifier", "fc", "head", "heads")


def layer_names(model: nn.Module, prefix: str = "") -> list[str]:
    """Names `truncate` accepts: children, and children of nested `nn.Sequential`s (e.g. "layer4.2")."""
    names = []
    for name, child in model.named_children():
        names.append(prefix + name)
        if isinstance(child, nn.Sequential):
            names += layer_names(child, prefix + name + ".")
    return names


def truncate(model: nn.Module, layer: str) -> nn.Sequential:
    """The children of `model` up to and including `layer`, sharing their parameters."""
    head, _, rest = layer.partition(".")
    kept: OrderedDict[str, nn.Module] = OrderedDict()
    for name, child in model.named_children():
        if name == head:
            if rest and not isinstance(child, nn.Sequential):
                break
            kept[name] = truncate(child, rest) if rest else child
            return nn.Sequential(kept)
        kept[name] = child
    raise ValueError(f"Layer {layer!r} not found; valid layer names are: {', '.join(layer_names(model))}")


class Classifier(nn.Module):
    """Images in [0, 1] (B, 3, H, W) -> logits (B, num_classes).

    `num_classes=None` keeps the pretrained linear head (e.g. ImageNet's 1000 classes).
    """

    def __init__(
        self,
        arch: str = "resnet50",
        num_classes: int | None = 20,
        weights: str | None = "IMAGENET1K_V2",
        class_names: list[str] | None = None,
    ):
        super().__init__()
        net = build_torchvision_model(arch, weights)
        children = list(net.named_children())
        cut = next((i for i, (name, _) in enumerate(children) if name in HEAD_NAMES), len(children))
        self.normalize = Normalize()
        self.trunk = nn.Sequential(OrderedDict(children[:cut]))
        with torch.no_grad():
            channels = self.trunk.eval()(torch.zeros(1, 3, 64, 64)).shape[1]
        self.trunk.train()  # the probe must not leave BatchNorm in eval mode: Lightning keeps module modes
        if num_classes is None:
            if not isinstance(getattr(net, "fc", None), nn.Linear):
                raise ValueError(f"num_classes is required for {arch}: its pretrained head is not one linear layer")
            self.head = net.fc
            if class_names is None and weights is not None:
                class_names = list(torchvision_categories(arch, weights))
        else:
            self.head = nn.Linear(channels, num_classes)
        self.num_classes = self.head.out_features
        if class_names is not None and len(class_names) != self.num_classes:
            raise ValueError(f"{len(class_names)} class names given for {self.num_classes} classes")
        self.class_names = list(class_names) if class_names else [str(i) for i in range(self.num_classes)]
        self.feature_layer = children[cut - 1][0]
        self.config = {"arch": arch, "num_classes": self.num_classes, "class_names": self.class_names}

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.trunk(self.normalize(images))  # (B, 3, H, W) -> (B, C, H/32, W/32)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features.mean(dim=(2, 3)))  # (B, C, h, w) -> (B, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(images))

    @classmethod
    def from_checkpoint(cls, path: str | Path, map_location="cpu") -> "Classifier":
        """Rebuild a classifier saved by `pv.ClassifierModule` (a Lightning checkpoint)."""
        checkpoint = load_checkpoint(path, map_location)
        config = checkpoint.get("classifier_config")
        if config is None:
            raise ValueError(f"{path} is not a pv classifier checkpoint (no 'classifier_config'; was it a decoder?)")
        model = cls(weights=None, **config)
        state = {k[len("model."):]: v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(f"{path} does not match a {config['arch']} classifier: {str(err).splitlines()[0]}") from None
        return model


def torchvision_categories(arch: str, weights: str) -> list[str]:
    import torchvision

    enum_cls = torchvision.models.get_model_weights(arch)
    weights_enum = enum_cls.DEFAULT if weights == "DEFAULT" else enum_cls[weights]
    return weights_enum.meta["categories"]


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """`torch.load` with a clear error for missing or unreadable files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:
        raise ValueError(f"Cannot read checkpoint {path}: {err}") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{path} is not a Lightning checkpoint (no 'state_dict')")
    return checkpoint
