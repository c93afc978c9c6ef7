"""The classifier M: a trunk (torchvision or timm, `pv.models.zoo`), global average pooling and a linear head.

Because logits are a linear map of the pooled last feature map, Grad-CAM for this head has a
closed form (CAM) that `pv.explain` uses to explain every class from one forward pass.
`pooled_linear_head` / `model_spec(arch).pooled_linear` say which models have that head; `probabilities`
is the one place logits become probabilities.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from pv.errors import CheckpointError
from pv.models.checkpoint import load_checkpoint
from pv.models.hub import HubMixin, state_dict_error
from pv.models.weights import Normalize
from pv.models.zoo import TV_HEAD_NAMES as HEAD_NAMES
from pv.models.zoo import build_network, imagenet_class_names, layer_names, model_spec, pooled_linear_head

__all__ = ["Classifier", "layer_names", "pooled_linear_head", "probabilities", "trunk_of", "truncate"]
ACTIVATIONS = ("sigmoid", "softmax", "logit")


def probabilities(logits: torch.Tensor, activation: str) -> torch.Tensor:
    """Logits (B, K) -> scores (B, K): "sigmoid" (multi-label, pv's classifiers), "softmax"
    (one class per image, ImageNet models) or "logit" (the logits themselves)."""
    if activation == "sigmoid":
        return logits.sigmoid()
    if activation == "softmax":
        return logits.softmax(dim=1)
    if activation == "logit":
        return logits
    raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")


def trunk_of(model: nn.Module) -> nn.Module:
    """The module whose children are the layers users name ("layer4", "features.12"): a pv Classifier's
    `trunk`, a wrapped torchvision model's `net`, a FrozenEncoder's `body`, else the model itself."""
    for attribute in ("trunk", "net", "body"):
        child = getattr(model, attribute, None)
        if isinstance(child, nn.Module):
            return child
    return model


def truncate(model: nn.Module, layer: str) -> nn.Module:
    """The children of `model` up to and including `layer`, sharing their parameters (a token model,
    `pv.models.tokens.TokenClassifier`, gives its own `truncated(layer)`: tokens up to that block as a grid)."""
    if callable(getattr(model, "truncated", None)):
        return model.truncated(layer)
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


class Classifier(nn.Module, HubMixin, hub_kind="classifier"):
    """Images in [0, 1] (B, 3, H, W) -> logits (B, num_classes).

    `arch` is a torchvision or timm name (`pv.models.zoo`) whose head is linear on pooled features;
    `num_classes=None` keeps the pretrained linear head (e.g. ImageNet's 1000 classes).
    `activation` says how logits become probabilities (`probabilities`): default "softmax" for a
    kept ImageNet head, "sigmoid" for a new multi-label head; `input_size` is the image side in
    pixels the classifier was trained at (default: the arch's, 224 for torchvision), so commands can
    use it as their default. `mean` / `std` (default: the arch's and weights') normalise the images.
    """

    def __init__(
        self,
        arch: str = "resnet50",
        num_classes: int | None = 20,
        weights: str | None = "IMAGENET1K_V2",
        class_names: list[str] | None = None,
        activation: str | None = None,
        input_size: int | None = None,
        mean: list[float] | None = None,
        std: list[float] | None = None,
    ):
        super().__init__()
        net, spec = build_network(arch, weights)
        children = list(net.named_children())
        names = [name for name, _ in children]
        cut = names.index(spec.trunk_end) if spec.trunk_end else next((i for i, n in enumerate(names) if n in HEAD_NAMES), len(children))
        self.normalize = Normalize(tuple(mean or spec.mean), tuple(std or spec.std))
        self.trunk = nn.Sequential(OrderedDict(children[:cut]))
        with torch.no_grad():
            channels = self.trunk.eval()(torch.zeros(1, 3, 64, 64)).shape[1]
        self.trunk.train()  # the probe must not leave BatchNorm in eval mode: Lightning keeps module modes
        if num_classes is None:
            head = pooled_linear_head(net) if spec.family == "torchvision" else (net.get_classifier() if spec.pooled_linear else None)
            if head is None:
                raise ValueError(f"num_classes is required for {arch}: its pretrained head is not one linear layer on pooled features")
            self.head = head
            if class_names is None and weights is not None:
                class_names = list(torchvision_categories(arch, weights)) if spec.family == "torchvision" else default_class_names(head.out_features)
        else:
            self.head = nn.Linear(channels, num_classes)
        self.num_classes = self.head.out_features
        if class_names is not None and len(class_names) != self.num_classes:
            raise ValueError(f"{len(class_names)} class names given for {self.num_classes} classes")
        self.class_names = list(class_names) if class_names else [str(i) for i in range(self.num_classes)]
        self.activation = activation or ("softmax" if num_classes is None else "sigmoid")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        input_size = spec.input_size if input_size is None else int(input_size)
        if input_size < 1:
            raise ValueError(f"input_size must be a positive number of pixels, got {input_size}")
        self.input_size = input_size
        self.weights_name, self.checkpoint_path = weights, None  # where the parameters came from (for messages)
        self.feature_layer = children[cut - 1][0]
        self.preprocessing = spec.preprocessing()  # how images are read for it (pv.data.transforms)
        self.config = {
            "arch": arch, "num_classes": self.num_classes, "class_names": self.class_names,
            "activation": self.activation, "input_size": self.input_size,
            "mean": [float(v) for v in self.normalize.mean.flatten()], "std": [float(v) for v in self.normalize.std.flatten()],
        }  # fmt: skip

    @classmethod
    def from_parts(
        cls, trunk: nn.Sequential, head: nn.Linear, normalize: nn.Module, *, arch: str, class_names: list[str] | None = None, activation: str = "softmax"
    ) -> "Classifier":
        """A Classifier over modules that already exist (shared, not copied), e.g. a FrozenEncoder's body
        and head, so explanation methods can read it like any pv classifier."""
        model = cls.__new__(cls)
        nn.Module.__init__(model)
        model.normalize, model.trunk, model.head = normalize, trunk, head
        model.num_classes = head.out_features
        model.class_names = list(class_names) if class_names else [str(i) for i in range(model.num_classes)]
        spec = model_spec(arch)
        model.activation, model.input_size = activation, spec.input_size
        model.weights_name, model.checkpoint_path = None, None
        model.feature_layer = list(trunk.named_children())[-1][0]
        model.preprocessing = spec.preprocessing()
        model.config = {
            "arch": arch, "num_classes": model.num_classes, "class_names": model.class_names, "activation": model.activation, "input_size": spec.input_size,
            "mean": [float(v) for v in normalize.mean.flatten()], "std": [float(v) for v in normalize.std.flatten()],
        }  # fmt: skip
        return model

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.trunk(self.normalize(images))  # (B, 3, H, W) -> (B, C, H/32, W/32)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features.mean(dim=(2, 3)))  # (B, C, h, w) -> (B, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(images))

    @classmethod
    def from_checkpoint(cls, path: str | Path, map_location="cpu") -> "Classifier":
        """Rebuild a classifier saved by `pv.ClassifierModule` (a Lightning checkpoint, read with
        `weights_only=True`); checkpoints without `activation` / `input_size` get the defaults."""
        checkpoint = load_checkpoint(path, map_location)
        config = checkpoint.get("classifier_config")
        if not isinstance(config, dict):
            raise CheckpointError(f"{path} is not a pv classifier checkpoint (no 'classifier_config'; was it a decoder?)")
        try:
            model = cls(weights=None, **config)
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{path}: its classifier_config cannot build a classifier: {err}") from None
        state = {k[len("model."):]: v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise CheckpointError(f"{path} does not match a {config['arch']} classifier: {state_dict_error(err)}") from None
        model.checkpoint_path = str(path)
        return model


def default_class_names(count: int) -> list[str]:
    """ImageNet's class names for a 1000-class head, else the indices as text."""
    return imagenet_class_names() if count == 1000 else [str(i) for i in range(count)]


def torchvision_categories(arch: str, weights: str) -> list[str]:
    import torchvision

    enum_cls = torchvision.models.get_model_weights(arch)
    weights_enum = enum_cls.DEFAULT if weights == "DEFAULT" else enum_cls[weights]
    return weights_enum.meta["categories"]

