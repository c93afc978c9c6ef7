"""`pv evaluate-explanations`: deletion / insertion AUC of saliency methods (and of PV's mask) for the top class,
and the decoder's reconstruction metrics, over an image folder."""
from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

from pv.atomic import write_text
from pv.commands.common import (
    CommandParser, UsageError, activation_of, add_classifier_arguments, add_encoder_mismatch_argument, add_image_arguments,
    add_saliency_arguments, check_latent_size, classifier_from_arguments, classifier_name, input_size_of, make_saliency,
    make_visualizer, parse_list, positive_int, prepare_output_dir, probabilities, resolve_device, saliency_names,
    saliency_options,
)  # fmt: skip
from pv.data.batches import image_paths, load_batches
from pv.errors import PVError
from pv.explain.evaluate import MODES, auc, curves_figure, decoder_metrics, deletion_insertion_curves, write_table
from pv.explain.figures import Entry, write_index

PV = "pv"


def parser() -> CommandParser:
    p = CommandParser(
        prog="pv evaluate-explanations",
        description="Deletion and insertion AUC (Petsiuk et al.) of saliency methods for the top class, and the decoder's "
        "SSIM, PSNR, latent error and top-class agreement, over an image folder. `pv` scores the mask PV shows "
        "(--pv-saliency through the decoder's latent layer). Writes CSV + Markdown tables, curves.png and index.html.",
    )
    add_classifier_arguments(p)
    p.add_argument("--decoder", metavar="CKPT", help="pv decoder checkpoint: adds the reconstruction metrics; needed by --methods pv")
    add_encoder_mismatch_argument(p)
    p.add_argument("--images", required=True, metavar="DIR", help="folder of images (searched recursively)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--methods", default="gradcam", help=f"comma-separated: {PV}, {', '.join(saliency_names())}")
    p.add_argument("--pv-saliency", default="gradcam", choices=saliency_names(), help="the saliency PV masks with (the paper: gradcam)")
    p.add_argument("--steps", type=positive_int, default=32, help="points on each deletion / insertion curve")
    p.add_argument("--limit", type=positive_int, help="use only the first N images (default: all)")
    add_image_arguments(p)
    add_saliency_arguments(p)
    return p


def mean(values: list[torch.Tensor]) -> float:
    return float(torch.cat(values).double().mean())


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    methods = parse_list(args.methods, [PV, *saliency_names()], "--methods")
    if PV in methods and not args.decoder:
        raise UsageError("--methods pv needs --decoder CKPT: PV is scored through the mask it shows, which depends on the decoder's latent layer")
    out = prepare_output_dir(args.out)
    paths = image_paths(args.images)[: args.limit]
    device = resolve_device(args.device)
    model = classifier_from_arguments(args, device)
    activation = activation_of(model, args.activation)
    image_size = input_size_of(model, args.image_size)
    options = saliency_options(args, activation)
    saliencies = {name: make_saliency(name, model, options) for name in methods if name != PV}
    visualizer = None
    if args.decoder:
        saliency = make_saliency(args.pv_saliency, model, options) if PV in methods else None
        visualizer = make_visualizer(
            model, args.decoder, device, saliency, classifier=classifier_name(args),
            allow_mismatch=args.allow_encoder_mismatch, normalization=args.normalization,
        )  # fmt: skip
    layers = {s.layer_name for s in saliencies.values() if getattr(s, "layer_name", None)} | ({visualizer.latent_name} if visualizer else set())
    for layer in sorted(layers):
        check_latent_size(model, layer, image_size)

    curves = {name: {mode: [] for mode in MODES} for name in methods}
    reconstruction: dict[str, list[torch.Tensor]] = {}
    count = 0
    bar = tqdm(total=len(paths), desc="pv evaluate-explanations", unit="img")
    for _, images in load_batches(paths, image_size, args.batch_size):
        images = images.to(device)
        with torch.no_grad():
            targets = probabilities(model(images), activation).argmax(1)  # explain the top class
        maps_by_method = {name: method(images, targets) for name, method in saliencies.items()}  # (B, 1, H, W) each
        if PV in methods:
            maps_by_method[PV] = visualizer(images, targets)["saliency"][:, 0]  # (B, 1, H, W): the mask PV shows
        for name in methods:
            for mode in MODES:
                curve = deletion_insertion_curves(
                    model, images, maps_by_method[name], targets, mode=mode, n_steps=args.steps,
                    batch_size=args.internal_batch_size, activation=activation,
                )  # fmt: skip
                curves[name][mode].append(curve.cpu())
        if visualizer is not None:
            for key, value in decoder_metrics(visualizer, images).items():
                reconstruction.setdefault(key, []).append(value.cpu())
        count += len(images)
        bar.update(len(images))
    bar.close()
    if not count:
        raise PVError(f"None of the {len(paths)} files in {args.images} could be read as an image")

    stacked = {name: {mode: torch.cat(c) for mode, c in by_mode.items()} for name, by_mode in curves.items()}
    rows = [
        {"method": name, "deletion_auc": float(auc(c["deletion"]).mean()), "insertion_auc": float(auc(c["insertion"]).mean()), "images": count}
        for name, c in stacked.items()
    ]
    intro = (f"{count} images from {args.images}; target: the top class; scores: {activation}. "
             "Deletion AUC: lower is better; insertion AUC: higher is better.")  # fmt: skip
    if PV in methods:
        intro += f" pv: the mask PV shows ({args.pv_saliency} at the decoder's latent layer)."
    markdown = ["# Explanation metrics", "", intro, "", write_table(rows, out / "saliency_metrics.csv")]
    tables = [("Saliency", rows)]
    links = {"metrics.md": out / "metrics.md", "saliency_metrics.csv": out / "saliency_metrics.csv"}
    if reconstruction:
        decoder_row = {"decoder": Path(args.decoder).name, **{k: mean(v) for k, v in reconstruction.items()}, "images": count}
        markdown += ["", "## Decoder", "", write_table([decoder_row], out / "decoder_metrics.csv")]
        tables.append(("Decoder", [decoder_row]))
        links["decoder_metrics.csv"] = out / "decoder_metrics.csv"
    report = write_text(out / "metrics.md", "\n".join(markdown) + "\n")
    figure = curves_figure(stacked, out / "curves.png", activation)
    caption = "; ".join(f"{r['method']}: deletion {r['deletion_auc']:.3f}, insertion {r['insertion_auc']:.3f}" for r in rows)
    write_index(out, [Entry(figure, "deletion / insertion curves", caption, links)], "pv evaluate-explanations", intro, tables)
    print("\n".join(markdown[4:]))
    print(f"Wrote {report}, the CSV tables, {figure.name} and index.html to {out}")
    return 0
