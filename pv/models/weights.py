"""Building torchvision classifiers, with one clear message when weights cannot be downloaded."""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torchvision
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights are neither cached nor downloadable."""


def hub_checkpoint_dir() -> Path:
    """Where torchvision looks for downloaded weights (`$TORCH_HOME/hub/checkpoints/`)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def none_if_null(value: str | None) -> str | None:
    """None for None, "", "none" or "null": jsonargparse passes a nested `--...=null` as the string "None"."""
    return None if value is None or str(value).strip().lower() in ("", "none", "null") else value


def build_torchvision_model(arch: str, weights: str | None = None, **kwargs) -> nn.Module:
    """`torchvision.models.get_model(arch, weights=...)` with readable errors.

    `weights` is an enum name such as "IMAGENET1K_V2" (or "DEFAULT"); None means random init.
    """
    weights = none_if_null(weights)
    from pv.models.narrow_resnet import NARROW_RESNETS, build_narrow_resnet

    if arch in NARROW_RESNETS:  # pv's own small ResNets (the generated world), built from torchvision's blocks
        return build_narrow_resnet(arch, weights, **kwargs)
    available = torchvision.models.list_models(module=torchvision.models)
    if arch not in available:
        raise ValueError(f"Unknown arch {arch!r}; torchvision classifiers are: {', '.join(sorted(available))}")
    weights_enum = None
    if weights is not None:
        enum_cls = torchvision.models.get_model_weights(arch)
        try:
            weights_enum = enum_cls[weights] if weights != "DEFAULT" else enum_cls.DEFAULT
        except KeyError:
            names = ", ".join(w.name for w in enum_cls)
            raise ValueError(f"Unknown weights {weights!r} for {arch}; choose one of: {names}, DEFAULT or null") from None
    try:
        return torchvision.models.get_model(arch, weights=weights_enum, **kwargs)
    except Exception as err:  # network failures come in many shapes (URLError, socket, SSL ...)
        if weights_enum is None or isinstance(err, (TypeError, ValueError)):
            raise
        filename = os.path.basename(weights_enum.url)
        raise WeightsUnavailableError(
            f"Could not download the {arch} weights {weights_enum.name} ({type(err).__name__}: {err}).\n"
            f"Download {weights_enum.url}\nand put the file {filename} in {hub_checkpoint_dir()}/ "
            f"(or set weights: null for random initialisation)."
        ) from None


class Normalize(nn.Module):
    """ImageNet normalisation as a module, so models take images in [0, 1]."""

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std
