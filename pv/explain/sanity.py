"""Sanity check by cascading randomisation (Adebayo et al. 2018, "Sanity Checks for Saliency Maps").

The classifier's layers are re-initialised from the top down (head, then layer4, layer3, ... conv1),
cumulatively; after each step PV and Grad-CAM are recomputed for the ORIGINAL model's top class and
compared with the original explanations by SSIM. An explanation that stays the same while the model it
explains is destroyed explains nothing. The decoder stays the one trained on the original latent (PV's
reconstruction changes because the latent does). Both explanations are compared as participants see
them: PV = (1 - m) + m y, Grad-CAM = (1 - m) + m x (the photo masked by the map).
"""
from __future__ import annotations

import copy
import warnings

import torch
from pytorch_msssim import ssim
from torch import nn

from pv.explain.pv import PerceptionVisualizer, perception_visualization


def cascade(classifier: nn.Module) -> list[str]:
    """Names to randomise, top first: "head", then the trunk's children that have parameters, last to first."""
    trunk = [name for name, child in classifier.trunk.named_children() if any(True for _ in child.parameters())]
    return ["head", *reversed(trunk)]


def randomize_(module: nn.Module, generator_seed: int) -> None:
    """Re-initialise every parameter (and BatchNorm statistics) of `module` in place, seeded."""
    torch.manual_seed(generator_seed)
    for child in module.modules():
        if hasattr(child, "reset_parameters"):
            child.reset_parameters()
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            child.reset_running_stats()


def explanations(classifier: nn.Module, decoder: nn.Module, encoder_config: dict, images: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """{"pv", "gradcam"}: (B, 3, H, W) pictures for `targets` (B,)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a randomised classifier no longer matches the decoder's fingerprint: that is the point
        visualizer = PerceptionVisualizer(classifier, decoder, encoder_config, allow_encoder_mismatch=True)
    result = visualizer(images, targets)
    mask = result["saliency"][:, 0]  # (B, 1, H, W)
    return {"pv": result["pv"][:, 0], "gradcam": perception_visualization(images, mask)}


def cascading_randomization(classifier: nn.Module, decoder: nn.Module, encoder_config: dict, images: torch.Tensor, seed: int = 0) -> dict:
    """SSIM (per image) of each explanation to the original after each cumulative randomisation step.

    Returns {"steps": ["original", "head", "layer4", ...], "pv": (S, B), "gradcam": (S, B), "pictures": {step: {...}}}
    with SSIM 1 for the original step.
    """
    classifier = copy.deepcopy(classifier).eval()
    with torch.no_grad():
        targets = classifier(images).argmax(dim=1)  # (B,) the original model's top classes, kept throughout
    original = explanations(classifier, decoder, encoder_config, images, targets)
    steps, scores, pictures = ["original"], {"pv": [torch.ones(len(images))], "gradcam": [torch.ones(len(images))]}, {"original": original}
    for index, name in enumerate(cascade(classifier)):
        module = classifier.head if name == "head" else getattr(classifier.trunk, name)
        randomize_(module, seed + index)
        classifier.eval()
        now = explanations(classifier, decoder, encoder_config, images, targets)
        for method in scores:
            scores[method].append(ssim(now[method].float(), original[method].float(), data_range=1.0, size_average=False).detach())
        steps.append(name)
        pictures[name] = now
    return {"steps": steps, "pv": torch.stack(scores["pv"]), "gradcam": torch.stack(scores["gradcam"]), "pictures": pictures}


def plot_cascade(result: dict, path, title: str = "Cascading randomisation") -> None:
    """Mean SSIM to the original explanation (+- standard error) after each step, PV and Grad-CAM."""
    from matplotlib.figure import Figure

    from pv.explain.figures import save_figure

    figure = Figure(figsize=(7, 4), layout="constrained")
    axis = figure.subplots()
    x = range(len(result["steps"]))
    for method, label, colour in (("pv", "Perception Visualization", "#1f5fbf"), ("gradcam", "Grad-CAM (masked photo)", "#d9822b")):
        values = result[method]  # (S, B)
        mean = values.mean(dim=1)
        se = values.std(dim=1) / max(values.shape[1], 1) ** 0.5 if values.shape[1] > 1 else torch.zeros_like(mean)
        axis.errorbar(list(x), mean.tolist(), yerr=se.tolist(), marker="o", capsize=3, label=label, color=colour)
    axis.set_xticks(list(x), [f"+{s}" if i > 1 else s for i, s in enumerate(result["steps"])], rotation=30)
    axis.set_ylim(-0.05, 1.05)
    axis.set_xlabel("layers re-initialised, from the top down (cumulative)")
    axis.set_ylabel("SSIM to the original explanation")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    save_figure(figure, path, dpi=110)
