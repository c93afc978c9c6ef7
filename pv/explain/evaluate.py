"""Quantitative evaluation: deletion / insertion AUC (Petsiuk et al. 2018, RISE) for saliency methods,
and reconstruction quality of the decoder (SSIM, PSNR, latent error, agreement of M's top class).

`pv evaluate-explanations` runs both over an image folder and writes CSV + Markdown tables,
a curves figure and index.html.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import torch
from torch import nn
from torchmetrics.functional.image import structural_similarity_index_measure
from tqdm.auto import tqdm

from pv.explain.figures import Entry, write_index
from pv.explain.postprocess import gaussian_blur

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
        logits = model(x)
        scores = logits.softmax(1) if activation == "softmax" else logits.sigmoid()
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
    """Write rows as CSV and return them as a Markdown table."""
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(rows[0])
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def curves_figure(curves: dict[str, dict[str, torch.Tensor]], path: Path) -> Path:
    """Mean deletion and insertion curves of each method, side by side."""
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
        ax.set_ylabel("probability of the class")
        ax.legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


def parser() -> argparse.ArgumentParser:
    from pv.explain.cli import add_saliency_arguments, saliency_names
    from pv.explain.loading import add_model_arguments

    p = argparse.ArgumentParser(
        prog="pv evaluate-explanations",
        description="Deletion and insertion AUC (Petsiuk et al.) of saliency methods for the top class, and the decoder's "
        "SSIM, PSNR, latent error and top-class agreement, over an image folder. Writes CSV + Markdown tables, "
        "curves.png and index.html.",
    )
    add_model_arguments(p)
    p.add_argument("--decoder", metavar="CKPT", help="pv decoder checkpoint: adds the reconstruction metrics")
    p.add_argument("--images", required=True, metavar="DIR")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--methods", default="gradcam", help=f"comma-separated: {', '.join(saliency_names())}")
    p.add_argument("--steps", type=int, default=32, help="points on each deletion / insertion curve")
    p.add_argument("--limit", type=int, help="use only the first N images")
    p.add_argument("--probabilities", choices=("softmax", "sigmoid"), default="softmax")
    add_saliency_arguments(p)
    return p


def mean(values: list[torch.Tensor]) -> float:
    return float(torch.cat(values).double().mean())


def main(argv: list[str] | None = None) -> int:
    from pv.explain.cli import build_saliency, saliency_names
    from pv.explain.loading import image_paths, load_batches, model_from_arguments, parse_list, resolve_device
    from pv.explain.pv import PerceptionVisualizer
    from pv.models.decoder import load_decoder

    args = parser().parse_args(argv)
    methods = parse_list(args.methods, saliency_names(), "--methods")
    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    device = resolve_device(args.device)
    paths = image_paths(args.images)[: args.limit]
    model = model_from_arguments(args).to(device).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    saliencies = {name: build_saliency(name, model, args) for name in methods}
    visualizer = None
    if args.decoder:
        decoder, encoder_config = load_decoder(args.decoder)
        visualizer = PerceptionVisualizer(model, decoder.to(device), encoder_config, decoder_name=f"Decoder {args.decoder}")

    curves = {name: {mode: [] for mode in MODES} for name in methods}
    reconstruction: dict[str, list[torch.Tensor]] = {}
    count = 0
    bar = tqdm(total=len(paths), desc="pv evaluate-explanations", unit="img")
    for _, images in load_batches(paths, args.image_size, args.batch_size):
        images = images.to(device)
        with torch.no_grad():
            targets = model(images).argmax(1)  # explain the top class
        for name, method in saliencies.items():
            maps = method(images, targets)  # (B, 1, H, W)
            for mode in MODES:
                curve = deletion_insertion_curves(
                    model, images, maps, targets, mode=mode, n_steps=args.steps,
                    batch_size=args.internal_batch_size, activation=args.probabilities,
                )
                curves[name][mode].append(curve.cpu())
        if visualizer is not None:
            for key, value in decoder_metrics(visualizer, images).items():
                reconstruction.setdefault(key, []).append(value.cpu())
        count += len(images)
        bar.update(len(images))
    bar.close()
    if not count:
        raise ValueError(f"None of the {len(paths)} files in {args.images} could be read as an image")

    out = Path(args.out)
    stacked = {name: {mode: torch.cat(c) for mode, c in by_mode.items()} for name, by_mode in curves.items()}
    rows = [
        {"method": name, "deletion_auc": float(auc(c["deletion"]).mean()), "insertion_auc": float(auc(c["insertion"]).mean()), "images": count}
        for name, c in stacked.items()
    ]
    markdown = ["# Explanation metrics", "", f"{count} images from {args.images}; target: the top class. "
                "Deletion AUC: lower is better; insertion AUC: higher is better.", "", write_table(rows, out / "saliency_metrics.csv")]
    if reconstruction:
        decoder_row = {"decoder": Path(args.decoder).name, **{k: mean(v) for k, v in reconstruction.items()}, "images": count}
        markdown += ["", "## Decoder", "", write_table([decoder_row], out / "decoder_metrics.csv")]
    report = out / "metrics.md"
    report.write_text("\n".join(markdown) + "\n", encoding="utf-8")
    figure = curves_figure(stacked, out / "curves.png")
    links = {"metrics.md": report, "saliency_metrics.csv": out / "saliency_metrics.csv"}
    if reconstruction:
        links["decoder_metrics.csv"] = out / "decoder_metrics.csv"
    caption = "; ".join(f"{r['method']}: deletion {r['deletion_auc']:.3f}, insertion {r['insertion_auc']:.3f}" for r in rows)
    write_index(out, [Entry(figure, "deletion / insertion curves", caption, links)], "pv evaluate-explanations")
    print("\n".join(markdown[4:]))
    print(f"Wrote {report}, the CSV tables, {figure.name} and index.html to {out}")
    return 0
