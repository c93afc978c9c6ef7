"""Numeric precision for running models: fp32 or bf16 autocast, and the memory format that suits it.

`resolve_precision("auto", device)` picks bf16 where the hardware computes it natively (a CUDA GPU with
bf16; a CPU with AMX or AVX-512 BF16, whose oneDNN convolutions run bf16 several times faster than fp32)
and fp32 everywhere else; `describe_precision` says what it picked and why. A CPU without those flags
(older Xeons, most laptops before 2022) gets fp32, which is exactly today's numerics.

bf16 is used only inside `autocast`: weights stay fp32, convolutions and matmuls run in bf16, and every
saliency method casts what it accumulates (gradients, maps, LIME scores, IG sums) to fp32 before
summing or normalising. Methods whose accuracy guard (tests/explain/test_precision.py) fails in bf16
are listed in `FP32_UNDER_AUTO`: `auto` keeps them in fp32, an explicit "bf16" still runs them in bf16.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from pv.errors import PVError

PRECISIONS = ("auto", "32", "bf16")
ALIASES = {"fp32": "32", "32-true": "32", "float32": "32", "bf16-mixed": "bf16", "bfloat16": "bf16"}
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")

# Saliency methods that fail their bf16 guard (tests/explain/test_precision.py): `auto` runs them in fp32.
# Integrated Gradients: bf16 keeps its totals (completeness error <= 1.5%) and the map's coarse layout
# (r >= 0.98 after a 2 px blur), but a random-weights ResNet's per-pixel IG maps in bf16 correlate only
# 0.83-0.90 with fp32's (guard: 0.95): plain input gradients amplify bf16 rounding through every ReLU.
# Grad-CAM (r >= 0.998), Guided Backprop / Guided Grad-CAM (r >= 0.987), LIME and PV meet their guards.
FP32_UNDER_AUTO: frozenset[str] = frozenset({"ig"})


class PrecisionError(PVError, ValueError):
    """An unknown precision name."""


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of /proc/cpuinfo (empty where it cannot be read, e.g. macOS, Windows)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def cpu_bf16_flags() -> list[str]:
    """Which of AMX-BF16 / AVX-512 BF16 this CPU has (oneDNN runs bf16 convolutions natively with either)."""
    return [flag for flag in CPU_BF16_FLAGS if flag in cpu_flags()]


def _normalize(name: str) -> str:
    name = ALIASES.get(str(name).lower(), str(name).lower())
    if name not in PRECISIONS:
        raise PrecisionError(f"--precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
    return name


def _auto(device: torch.device, method: str | None) -> tuple[str, str]:
    """(precision, reason) that `auto` picks on `device` for `method` (None: a model without a method)."""
    if device.type == "cuda":
        if not torch.cuda.is_bf16_supported():
            return "32", f"{torch.cuda.get_device_name(device)} has no bf16: fp32"
        fast, where = True, f"{torch.cuda.get_device_name(device)} computes bf16 natively"
    elif device.type == "cpu":
        flags = cpu_bf16_flags()
        fast = bool(flags) and torch.backends.mkldnn.is_available()
        where = f"the CPU has {' and '.join(flags)}" if fast else "the CPU has neither AMX nor AVX-512 BF16 (bf16 would be emulated, slower than fp32)"
        if not fast:
            return "32", f"{where}: fp32"
    else:
        return "32", f"bf16 autocast is not used on {device.type}: fp32"
    if method is not None and method in FP32_UNDER_AUTO:
        return "32", f"{where}, but {method} fails its bf16 accuracy guard: fp32"
    return "bf16", f"{where}: bf16 autocast (accumulation in fp32)"


def resolve_precision(name: str, device: torch.device | str, method: str | None = None) -> str:
    """ "auto" | "32" | "bf16" (also "fp32", "bf16-mixed") -> "32" or "bf16" for `device`.

    `method` (a `pv.explain.SALIENCY` name) lets `auto` keep the methods in `FP32_UNDER_AUTO` in fp32.
    An explicit "bf16" is honoured on any device (slow where it is emulated).
    """
    name = _normalize(name)
    if name != "auto":
        return name
    return _auto(torch.device(device), method)[0]


def describe_precision(name: str, device: torch.device | str, method: str | None = None) -> str:
    """One line: what `resolve_precision(name, device, method)` picked, and why."""
    name, device = _normalize(name), torch.device(device)
    if name != "auto":
        return f"precision {name} (asked for) on {device.type}"
    chosen, reason = _auto(device, method)
    return f"precision auto -> {chosen} on {device.type}: {reason}"


@contextlib.contextmanager
def autocast(precision: str, device: torch.device | str) -> Iterator[None]:
    """bf16 autocast on `device` when `precision` is "bf16"; nothing for "32"."""
    precision, device = _normalize(precision), torch.device(device)
    if precision == "auto":
        precision = resolve_precision("auto", device)
    if precision == "32":
        yield
        return
    with torch.autocast(device.type, dtype=torch.bfloat16):
        yield


def prefers_channels_last(model: nn.Module, precision: str, device: torch.device | str) -> bool:
    """NHWC where it is faster: convolutional models on CPU (oneDNN's native layout, fp32 and bf16) and
    on CUDA under bf16 (tensor cores); models without 2-d convolutions keep their layout."""
    device = torch.device(device)
    if not any(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) for m in model.modules()):
        return False
    return device.type == "cpu" or (device.type == "cuda" and resolve_precision(precision, device) == "bf16")


def prepare_model(model: nn.Module, precision: str, device: torch.device | str) -> nn.Module:
    """The model in eval mode on `device`, in channels_last where that is faster. Weights stay fp32
    (bf16 happens inside `autocast`), so gradients and anything accumulated from them remain fp32."""
    device = torch.device(device)
    model = model.eval().to(device)
    if prefers_channels_last(model, precision, device):
        model = model.to(memory_format=torch.channels_last)
    return model


def matches_model_format(images: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """Images (B, C, H, W) in the model's memory format (channels_last when its first conv weight is)."""
    weight = next((m.weight for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if weight is not None and images.dim() == 4 and weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous():
        return images.contiguous(memory_format=torch.channels_last)
    return images
