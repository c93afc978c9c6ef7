"""`pv explain`: PV and saliency maps for a folder of images; per image a figure and the maps (.pt), and index.html."""
from __future__ import annotations

import io
from pathlib import Path

import torch
from tqdm.auto import tqdm

from pv.atomic import write_bytes
from pv.commands.common import (
    CommandParser, UsageError, activation_of, add_classifier_arguments, add_encoder_mismatch_argument, add_image_arguments,
    add_saliency_arguments, check_latent_size, classifier_from_arguments, classifier_name, display_name, input_size_of,
    make_saliency, make_visualizer, output_name, parse_list, prepare_output_dir, probabilities, resolve_device,
    saliency_names, saliency_options, saliency_title, training_data_label, unit_float, positive_int,
)  # fmt: skip
from pv.data.batches import image_paths, load_batches
from pv.explain.figures import ColorBar, Entry, Row, grid_figure, write_index
from pv.explain.overlay import heatmap_overlay
from pv.errors import PVError

PV_METHODS = ("pv", "cpv")


def parser() -> CommandParser:
    p = CommandParser(
        prog="pv explain",
        description="Perception Visualization and classic saliency maps for a folder of images. Writes per image a "
        "figure (input | saliency | reconstruction | PV per decoder, one row per top-k class, plus the baselines), "
        "the maps (.pt) and an index.html gallery. Output names keep each image's path under --images and its extension.",
    )
    add_classifier_arguments(p)
    p.add_argument(
        "--decoder", metavar="CKPT", action="append",
        help="pv decoder checkpoint (from pv fit), needed by pv and cpv; repeat it to show several decoders side by side, "
        "each titled with the data it was trained on",
    )  # fmt: skip
    add_encoder_mismatch_argument(p)
    p.add_argument("--images", required=True, metavar="DIR", help="folder of images (searched recursively)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--methods", default="pv,gradcam", help=f"comma-separated: pv, cpv (class-discriminative PV), {', '.join(saliency_names())}")
    p.add_argument("--pv-saliency", default="gradcam", choices=saliency_names(), help="the saliency PV masks with (the paper: gradcam)")
    p.add_argument("--topk", type=positive_int, default=3, help="explain the k most probable classes of each image")
    add_image_arguments(p)
    add_saliency_arguments(p)
    p.add_argument("--colormap", default="jet", help="matplotlib colormap of the heat maps")
    p.add_argument("--alpha", type=unit_float, default=0.5, help="heatmap opacity over the image")
    return p


def overlay_maps(images: torch.Tensor, maps: torch.Tensor, colormap: str, alpha: float) -> torch.Tensor:
    """Images (B, 3, H, W) and maps (B, k, 1, H, W) -> heatmaps over the images (B, k, 3, H, W)."""
    b, k = maps.shape[:2]
    blend = heatmap_overlay(images.repeat_interleave(k, 0), maps.flatten(0, 1), colormap, alpha)
    return blend.view(b, k, 3, *images.shape[-2:])


def decoder_labels(paths: list[str]) -> list[str]:
    """Each decoder's training data (from its checkpoint), made unique with the file name where two agree."""
    labels = [training_data_label(path) for path in paths]
    labels = [
        label if labels.count(label) == 1 else str(path) if label == Path(path).name else f"{label} ({Path(path).name})"
        for label, path in zip(labels, paths)
    ]
    return [f"{label} #{i + 1}" if labels.count(label) > 1 else label for i, label in enumerate(labels)]


def check_colormap(name: str) -> None:
    from matplotlib import colormaps

    if name not in colormaps:
        raise UsageError(f"--colormap {name!r} is not a matplotlib colormap (e.g. jet, viridis, inferno)")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    methods = parse_list(args.methods, [*PV_METHODS, *saliency_names()], "--methods")
    decoders = list(args.decoder or [])
    use_pv = any(m in PV_METHODS for m in methods)
    if use_pv and not decoders:
        raise UsageError("--methods pv/cpv need --decoder CKPT (a decoder trained with pv fit)")
    check_colormap(args.colormap)
    out = prepare_output_dir(args.out)
    root = Path(args.images)
    paths = image_paths(root)
    device = resolve_device(args.device)
    model = classifier_from_arguments(args, device)
    activation = activation_of(model, args.activation)
    image_size = input_size_of(model, args.image_size)
    options = saliency_options(args, activation)

    visualizers, labels = [], []
    if use_pv:
        labels = decoder_labels(decoders)
        for path in decoders:
            saliency = make_saliency(args.pv_saliency, model, options)
            visualizers.append(make_visualizer(
                model, path, device, saliency, classifier=classifier_name(args),
                allow_mismatch=args.allow_encoder_mismatch, normalization=args.normalization,
            ))  # fmt: skip
    baselines = [m for m in methods if m not in PV_METHODS and not (visualizers and m == args.pv_saliency)]
    saliencies = {name: make_saliency(name, model, options) for name in baselines}
    layers = {v.latent_name for v in visualizers} | {s.layer_name for s in saliencies.values() if getattr(s, "layer_name", None)}
    for layer in sorted(layers):
        check_latent_size(model, layer, image_size)

    columns = ["input"]
    if visualizers:
        columns.append(saliency_title(args.pv_saliency))
        for label in labels:
            suffix = f"\n({label})" if len(visualizers) > 1 else ""
            columns += [f"reconstruction{suffix}", f"PV{suffix}"] + ([f"class PV{suffix}"] if "cpv" in methods else [])
    columns += [saliency_title(name) for name in baselines]
    colorbar = ColorBar(args.colormap, f"saliency ({args.normalization}-normalised), shown over the image")
    note = f"row labels: class ({activation} score)"
    if visualizers and len(visualizers) == 1:
        note += f"; decoder trained on {labels[0]}"

    class_names = list(getattr(model, "class_names", [])) or None
    entries: list[Entry] = []
    written: set[Path] = set()
    bar = tqdm(total=len(paths), desc="pv explain", unit="img")
    for batch_paths, images in load_batches(paths, image_size, args.batch_size):
        images = images.to(device)
        with torch.no_grad():
            probs = probabilities(model(images), activation)  # (B, K)
        top_p, top_c = probs.topk(min(args.topk, probs.shape[1]), dim=1)  # (B, k)
        b, k = top_c.shape
        panels: dict[str, torch.Tensor] = {}  # column -> (B, k, 3, H, W)
        maps: dict[str, torch.Tensor] = {}  # method -> (B, k, 1, H, W)
        raws: dict[str, torch.Tensor] = {}  # method -> (B, k, c, h, w)
        reconstructions: dict[str, torch.Tensor] = {}  # decoder label -> (B, 3, H, W)
        for index, (visualizer, label) in enumerate(zip(visualizers, labels)):
            result = visualizer(images, top_c, class_discriminative="cpv" in methods)
            suffix = f"\n({label})" if len(visualizers) > 1 else ""
            if index == 0:
                maps[args.pv_saliency], raws[args.pv_saliency] = result["saliency"], result["raw"]
                panels[columns[1]] = overlay_maps(images, result["saliency"], args.colormap, args.alpha)
            reconstructions[label] = result["reconstruction"]
            panels[f"reconstruction{suffix}"] = result["reconstruction"][:, None].expand(-1, k, -1, -1, -1)
            panels[f"PV{suffix}"] = result["pv"]
            if "cpv" in methods:
                panels[f"class PV{suffix}"] = result["class_pv"]
        for name, method in saliencies.items():
            raw = method.attribute_multi(images, top_c)  # (B, k, c, h, w)
            maps[name] = method.to_maps(raw.flatten(0, 1), images.shape[-2:]).view(b, k, 1, *images.shape[-2:])
            raws[name] = raw
            panels[saliency_title(name)] = overlay_maps(images, maps[name], args.colormap, args.alpha)

        for i, path in enumerate(batch_paths):
            name = output_name(path, root)
            title = display_name(str(path.relative_to(root)) if path.is_relative_to(root) else path.name)
            names = [class_names[c] if class_names else str(c) for c in top_c[i].tolist()]
            rows = [
                Row(f"{names[j]} ({activation} {top_p[i, j]:.2f})", [images[i]] + [panels[column][i, j] for column in columns[1:]])
                for j in range(k)
            ]
            figure = grid_figure(rows, columns, out / "figures" / f"{name}.png", title=title, colorbar=colorbar, note=note)
            record = {
                "image": str(path),
                "classes": top_c[i].cpu().clone(),
                "class_names": names,
                "activation": activation,
                "probabilities": top_p[i].cpu().clone(),
                "maps": {method: m[i].cpu().clone() for method, m in maps.items()},  # (k, 1, H, W) in [0, 1]
                "raw": {method: r[i].cpu().clone() for method, r in raws.items()},  # (k, c, h, w), unnormalised
            }  # clone: each file holds its own image's tensors, not the batch's storage
            if reconstructions:
                record["reconstruction"] = next(iter(reconstructions.values()))[i].cpu().clone()  # (3, H, W)
                record["reconstructions"] = {label: r[i].cpu().clone() for label, r in reconstructions.items()}
            buffer = io.BytesIO()
            torch.save(record, buffer)
            maps_path = write_bytes(out / "maps" / f"{name}.pt", buffer.getvalue())
            caption = "; ".join(f"{n} {p:.2f}" for n, p in zip(names, top_p[i].tolist()))
            entries.append(Entry(figure, title, f"{activation} scores: {caption}", {"maps (.pt)": maps_path}))
            written.add(figure)
        bar.update(len(batch_paths))
    bar.close()
    if not entries:
        raise PVError(f"None of the {len(paths)} files in {args.images} could be read as an image")
    intro = f"{len(written)} images; columns: {', '.join(c.replace(chr(10), ' ') for c in columns)}; scores: {activation}"
    index = write_index(out, entries, "pv explain", intro)
    print(f"Wrote {len(written)} figure(s) to {out / 'figures'}, their maps to {out / 'maps'} and {index}")
    return 0

