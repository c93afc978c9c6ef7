"""Quantitative evaluation: deletion / insertion AUC (Petsiuk et al. 2018, RISE) for saliency methods,
and reconstruction quality of the decoder (SSIM, PSNR, latent error, agreement of M's top class).

`pv evaluate-explanations` (pv/commands/evaluate.py) runs both over an image folder and writes
CSV + Markdown tables, a curves figure and index.html.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import torch
from torch import nn
from torchmetrics.functional.image import structural_similarity_index_measure

from pv.atomic import write_text
from pv.explain.figures import save_figure
from pv.explain.postprocess import gaussian_blur
from pv.models.classifier import probabilities

MODES = ("deletion", "insertion")


@torch.no_grad()
def deletion_insertion_curves(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    *,
    mode: str = "deletion",
    n_steps: int = 32,
    substrate: torch.Tensor | None = None,
    batch_size: int = 64,
    activation: str = "softmax",
) -> torch.Tensor:
    """The target class's probability as pixels are removed (deletion) or added (insertion), most salient first.

    images (B, 3, H, W), maps (B, 1, H, W), targets (B,) -> curves (B, n_steps + 1), step t having changed
    round(t / n_steps * H * W) pixels. Deletion replaces pixels by `substrate` (default black), insertion
    starts from `substrate` (default the image blurred with sigma = 5% of its size) and puts pixels back.
    All images' steps go through the model `batch_size` at a time.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    b, _, h, w = images.shape
    if maps.shape != (b, 1, h, w):
        raise ValueError(f"maps must be (B, 1, H, W) = {(b, 1, h, w)}, got {tuple(maps.shape)}")
    if substrate is None:
        substrate = torch.zeros_like(images) if mode == "deletion" else gaussian_blur(images, 0.05 * max(h, w))
    order = maps.flatten(1).argsort(dim=1, descending=True, stable=True)  # (B, HW) most salient first
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(h * w, device=images.device).expand(b, -1))  # (B, HW)
    counts = torch.linspace(0, h * w, n_steps + 1, device=images.device).round()  # (T,) pixels changed per step
    t = n_steps + 1
    curves = images.new_empty(b * t)
    for chunk in torch.arange(b * t, device=images.device).split(batch_size):
        i, step = chunk // t, chunk % t
        changed = (rank[i] < counts[step, None]).view(-1, 1, h, w)  # (n, 1, H, W)
        first, second = (substrate[i], images[i]) if mode == "deletion" else (images[i], substrate[i])
        x = torch.where(changed, first, second)  # deletion: changed pixels -> substrate; insertion: -> image
        scores = probabilities(model(x).float(), activation)  # (n, K)
        curves[chunk] = scores.gather(1, targets[i, None]).squeeze(1)
    return curves.view(b, t)


def auc(curves: torch.Tensor) -> torch.Tensor:
    """Area under curves (B, T) sampled uniformly on [0, 1]: (B,)."""
    return torch.trapezoid(curves, dx=1.0 / (curves.shape[1] - 1), dim=1)


@torch.no_grad()
def decoder_metrics(visualizer, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per image (B,): SSIM and PSNR of y = D(E(x)) against x, the latent error ||E(y) - E(x)|| (absolute and
    relative to ||E(x)||) and whether M's top class on y equals that on x. `visualizer`: a PerceptionVisualizer."""
    latent = visualizer.latent(images)  # (B, C, h, w)
    reconstruction = visualizer.reconstruct(images, latent)  # (B, 3, H, W)
    ssim = structural_similarity_index_measure(reconstruction.float(), images.float(), data_range=1.0, reduction="none")
    mse = (reconstruction - images).pow(2).flatten(1).mean(1)
    psnr = 10 * torch.log10(1.0 / mse.clamp_min(1e-10))
    error = (visualizer.latent(reconstruction) - latent).flatten(1).norm(dim=1)
    model = visualizer.classifier
    agreement = (model(reconstruction).argmax(1) == model(images).argmax(1)).float()
    return {
        "ssim": ssim,
        "psnr": psnr,
        "latent_error": error,
        "latent_relative_error": error / latent.flatten(1).norm(dim=1).clamp_min(1e-12),
        "top1_agreement": agreement,
    }


def write_table(rows: list[dict], csv_path: Path) -> str:
    """Write rows as CSV (atomically) and return them as a Markdown table."""
    columns = list(rows[0])
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(csv_path, buffer.getvalue())
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def curves_figure(curves: dict[str, dict[str, torch.Tensor]], path: Path, activation: str = "softmax") -> Path:
    """Mean deletion and insertion curves of each method, side by side; the y axis names the scores' activation."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 3.5))
    axes = figure.subplots(1, 2)
    for ax, mode in zip(axes, MODES):
        for method, by_mode in curves.items():
            mean = by_mode[mode].mean(0)
            x = torch.linspace(0, 1, len(mean))
            ax.plot(x.numpy(), mean.numpy(), label=f"{method} (AUC {auc(by_mode[mode]).mean():.3f})")
        ax.set_title(mode)
        ax.set_xlabel("fraction of pixels " + ("removed" if mode == "deletion" else "inserted"))
        ax.set_ylabel(f"{activation} score of the class")
        ax.legend(fontsize=7)
    figure.tight_layout()
    return save_figure(figure, path)
