"""The saliency methods by name, and the one way commands build them.

Adding a method: one file with a `Saliency` subclass (a `title`, keyword-only options), and one line
here. `build_saliency` gives each method the options its constructor accepts (`Saliency.options()`),
so a method with a `layer` option receives `--layer`, and no command keeps a per-name table.
"""
from __future__ import annotations

from torch import nn

from pv.explain.gradcam import GradCAM, GradCAMPlusPlus
from pv.explain.guided import GuidedBackprop, GuidedGradCAM
from pv.explain.ig import IntegratedGradients
from pv.explain.lime import Lime
from pv.explain.saliency import Saliency

SALIENCY: dict[str, type[Saliency]] = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "ig": IntegratedGradients,
    "lime": Lime,
    "guided_backprop": GuidedBackprop,
    "guided_gradcam": GuidedGradCAM,
}


def build_saliency(name: str, model: nn.Module, **given) -> Saliency:
    """`SALIENCY[name](model, ...)` with those of `given` that the method accepts; the rest are ignored
    (e.g. `n_steps` for Grad-CAM). ValueError for an unknown name, listing the known ones."""
    if name not in SALIENCY:
        raise ValueError(f"Unknown saliency method {name!r}; choose one of: {', '.join(SALIENCY)}")
    method = SALIENCY[name]
    accepted = method.options()
    return method(model, **{key: value for key, value in given.items() if key in accepted})
