"""pv: Perception Visualization with PyTorch Lightning.

image -> FrozenEncoder -> latent -> Decoder -> reconstruction; classifier -> saliency;
(reconstruction, saliency) -> perception_visualization.

`pv.ClassifierModule` and `pv.DecoderModule` are imported on first use (PEP 562), so `import pv.models`
or `import pv.explain` does not load Lightning.
"""
from __future__ import annotations

import importlib

_LAZY = {"ClassifierModule": "pv.lit", "DecoderModule": "pv.lit"}

__all__ = ["ClassifierModule", "DecoderModule"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pv' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
