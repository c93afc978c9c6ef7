"""`pv explain` and `pv featvis`: figures, raw maps and an index.html gallery."""
from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from pv.data.images import UnreadableImageError, load_image
from pv.data.transforms import ImageTransform
from pv.explain.featvis import feature_visualization, objective_value
from pv.explain.figures import Entry, Row, grid_figure, save_png, write_index
from pv.explain.loading import add_model_arguments, image_paths, load_batches, model_from_arguments, parse_list, resolve_device, safe_stem
from pv.explain.overlay import heatmap_overlay
from pv.explain.pv import PerceptionVisualizer
from pv.explain.saliency import Saliency
from pv.models.decoder import load_decoder

TITLES = {
    "gradcam": "Grad-CAM",
    "gradcam++": "Grad-CAM++",
    "ig": "Integrated Gradients",
    "lime": "LIME",
    "guided_backprop": "Guided Backprop",
    "guided_gradcam": "Guided Grad-CAM",
    "pv": "PV",
    "cpv": "class PV",
}


def saliency_names() -> list[str]:
    from pv.explain import SALIENCY

    return list(SALIENCY)


def build_saliency(name: str, model: nn.Module, args: argparse.Namespace) -> Saliency:
    """SALIENCY[name] with the options the command line sets for it."""
    from pv.explain import SALIENCY

    options: dict = {"blur_sigma": args.blur, "tv_weight": args.tv}
    if name in ("gradcam", "gradcam++", "guided_gradcam") and args.layer:
        options["layer"] = args.layer
    if name == "ig":
        options.update(n_steps=args.ig_steps, baseline=args.ig_baseline, internal_batch_size=args.internal_batch_size)
    if name == "lime":
        options.update(n_samples=args.lime_samples, n_segments=args.lime_segments, seed=args.seed, batch_size=args.internal_batch_size)
    return SALIENCY[name](model, **options)


def probabilities(logits: torch.Tensor, kind: str) -> torch.Tensor:
    return logits.sigmoid() if kind == "sigmoid" else logits.softmax(dim=1)


def overlay_maps(images: torch.Tensor, maps: torch.Tensor, colormap: str, alpha: float) -> torch.Tensor:
    """Images (B, 3, H, W) and maps (B, k, 1, H, W) -> heatmaps over the images (B, k, 3, H, W)."""
    b, k = maps.shape[:2]
    blend = heatmap_overlay(images.repeat_interleave(k, 0), maps.flatten(0, 1), colormap, alpha)
    return blend.view(b, k, 3, *images.shape[-2:])


def explain_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pv explain",
        description="Perception Visualization and classic saliency maps for a folder of images. Writes per image a "
        "figure (input | Grad-CAM | reconstruction | PV, one row per top-k class, plus the baselines), the maps (.pt) "
        "and an index.html gallery.",
    )
    add_model_arguments(parser)
    parser.add_argument("--decoder", metavar="CKPT", help="pv decoder checkpoint (from pv fit); needed by the pv and cpv methods")
    parser.add_argument("--images", required=True, metavar="DIR", help="folder of images (searched recursively)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--methods", default="pv,gradcam", help=f"comma-separated: pv, cpv (class-discriminative PV), {', '.join(saliency_names())}")
    parser.add_argument("--pv-saliency", default="gradcam", choices=saliency_names(), help="the saliency PV masks with (the paper: gradcam)")
    parser.add_argument("--topk", type=int, default=3, help="explain the k most probable classes of each image")
    parser.add_argument("--probabilities", choices=("softmax", "sigmoid"), default="softmax", help="sigmoid for multi-label classifiers")
    add_saliency_arguments(parser)
    parser.add_argument("--colormap", default="jet")
    parser.add_argument("--alpha", type=float, default=0.5, help="heatmap opacity over the image")
    return parser


def add_saliency_arguments(parser: argparse.ArgumentParser) -> None:
    """Image loading and saliency options shared by `pv explain` and `pv evaluate-explanations`."""
    parser.add_argument("--image-size", type=int, default=224, help="images are resized (short side) and centre-cropped to this")
    parser.add_argument("--batch-size", type=int, default=8)
    group = parser.add_argument_group("saliency options")
    group.add_argument("--layer", help="layer for the CAM methods (default: the last conv block, e.g. layer4)")
    group.add_argument("--internal-batch-size", type=int, default=64, help="model batch for IG steps, LIME perturbations, deletion steps")
    group.add_argument("--ig-steps", type=int, default=32)
    group.add_argument("--ig-baseline", choices=("black", "blurred"), default="black")
    group.add_argument("--lime-samples", type=int, default=256)
    group.add_argument("--lime-segments", type=int, default=50)
    group.add_argument("--blur", type=float, default=0.0, help="Gaussian blur of the maps (sigma, pixels)")
    group.add_argument("--tv", type=float, default=0.0, help="total-variation denoising weight for the maps")
    group.add_argument("--seed", type=int, default=0)


def explain_main(argv: list[str] | None = None) -> int:
    args = explain_parser().parse_args(argv)
    methods = parse_list(args.methods, ["pv", "cpv", *saliency_names()], "--methods")
    if args.topk < 1 or args.batch_size < 1:
        raise ValueError(f"--topk and --batch-size must be >= 1, got {args.topk} and {args.batch_size}")
    if not 0 <= args.alpha <= 1:
        raise ValueError(f"--alpha must be in [0, 1], got {args.alpha}")
    device = resolve_device(args.device)
    paths = image_paths(args.images)
    model = model_from_arguments(args).to(device).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)  # attributions need input gradients only

    visualizer = None
    if "pv" in methods or "cpv" in methods:
        if not args.decoder:
            raise ValueError("--methods pv/cpv need --decoder CKPT (a decoder trained with pv fit)")
        decoder, encoder_config = load_decoder(args.decoder)
        visualizer = PerceptionVisualizer(
            model, decoder.to(device), encoder_config, build_saliency(args.pv_saliency, model, args), decoder_name=f"Decoder {args.decoder}"
        )
    baselines = [m for m in methods if m not in ("pv", "cpv") and not (visualizer is not None and m == args.pv_saliency)]
    saliencies = {name: build_saliency(name, model, args) for name in baselines}

    columns = ["input"]
    if visualizer is not None:
        columns += [TITLES[args.pv_saliency], "reconstruction", "PV"] + (["class PV"] if "cpv" in methods else [])
    columns += [TITLES[name] for name in baselines]

    out = Path(args.out)
    root = Path(args.images)
    entries: list[Entry] = []
    class_names = list(getattr(model, "class_names", [])) or None
    bar = tqdm(total=len(paths), desc="pv explain", unit="img")
    for batch_paths, images in load_batches(paths, args.image_size, args.batch_size):
        images = images.to(device)
        with torch.no_grad():
            probs = probabilities(model(images), args.probabilities)  # (B, K)
        top_p, top_c = probs.topk(min(args.topk, probs.shape[1]), dim=1)  # (B, k)
        panels: dict[str, torch.Tensor] = {}  # column -> (B, k, 3, H, W)
        maps: dict[str, torch.Tensor] = {}
        raws: dict[str, torch.Tensor] = {}
        b, k = top_c.shape
        overlay = lambda m: overlay_maps(images, m, args.colormap, args.alpha)  # noqa: E731
        if visualizer is not None:
            result = visualizer(images, top_c, class_discriminative="cpv" in methods)
            panels[TITLES[args.pv_saliency]] = overlay(result["saliency"])
            panels["reconstruction"] = result["reconstruction"][:, None].expand(-1, k, -1, -1, -1)
            panels["PV"] = result["pv"]
            maps[args.pv_saliency], raws[args.pv_saliency] = result["saliency"], result["raw"]
            if "cpv" in methods:
                panels["class PV"] = result["class_pv"]
        for name, method in saliencies.items():
            raw = method.attribute_multi(images, top_c)  # (B, k, c, h, w)
            maps[name] = method.to_maps(raw.flatten(0, 1), images.shape[-2:]).view(b, k, 1, *images.shape[-2:])
            raws[name] = raw
            panels[TITLES[name]] = overlay(maps[name])

        for i, path in enumerate(batch_paths):
            stem = safe_stem(path, root)
            names = [class_names[c] if class_names else str(c) for c in top_c[i].tolist()]
            rows = [
                Row(f"{names[j]} ({top_p[i, j]:.2f})", [images[i]] + [panels[column][i, j] for column in columns[1:]])
                for j in range(k)
            ]
            figure = grid_figure(rows, columns, out / "figures" / f"{stem}.png", title=path.name)
            maps_path = out / "maps" / f"{stem}.pt"
            maps_path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(
                {
                    "image": str(path),
                    "classes": top_c[i].cpu(),
                    "class_names": names,
                    "probabilities": top_p[i].cpu(),
                    "maps": {name: m[i].cpu() for name, m in maps.items()},  # (k, 1, H, W) in [0, 1]
                    "raw": {name: r[i].cpu() for name, r in raws.items()},  # (k, c, h, w), unnormalised
                    **({"reconstruction": panels["reconstruction"][i, 0].cpu()} if visualizer is not None else {}),
                },
                maps_path,
            )
            caption = "; ".join(f"{n} {p:.2f}" for n, p in zip(names, top_p[i].tolist()))
            entries.append(Entry(figure, path.name, caption, {"maps (.pt)": maps_path}))
        bar.update(len(batch_paths))
    bar.close()
    if not entries:
        raise ValueError(f"None of the {len(paths)} files in {args.images} could be read as an image")
    index = write_index(out, entries, "pv explain", f"{len(entries)} images; columns: {', '.join(columns)}")
    print(f"Wrote {len(entries)} figures and {index}")
    return 0


def featvis_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pv featvis",
        description="Feature visualization: multi-scale gradient ascent on the input to maximise a layer, channels "
        "or class logits, from noise or from an image (dream). Writes PNGs, a grid and index.html.",
    )
    add_model_arguments(parser)
    parser.add_argument("--out", required=True, metavar="DIR")
    parser.add_argument("--layer", help="layer to excite (default: the last conv block); ignored with --class")
    parser.add_argument("--channel", help="comma-separated channel indices of --layer (one image each); default: the whole layer")
    parser.add_argument("--class", dest="classes", help="comma-separated class indices or names: maximise their logits instead")
    parser.add_argument("--image", help="dream mode: start from this image instead of noise")
    parser.add_argument("--size", type=int, default=128, help="output size (pixels; in dream mode the image is cropped to it)")
    parser.add_argument("--octaves", type=int, default=4)
    parser.add_argument("--growth", type=float, default=1.4, help="upscaling factor between octaves")
    parser.add_argument("--steps", type=int, default=20, help="gradient steps per octave")
    parser.add_argument("--lr", type=float, default=0.05, help="step size (on the mean-normalised gradient)")
    parser.add_argument("--blur", type=float, default=0.5, help="Gaussian blur sigma after each step")
    parser.add_argument("--jitter", type=int, default=4, help="random shift (pixels) each step")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def parse_indices(text: str, names: list[str], field: str) -> list[int]:
    indices = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        if item.lstrip("-").isdigit():
            indices.append(int(item))
        elif item in names:
            indices.append(names.index(item))
        else:
            raise ValueError(f"{field}: {item!r} is neither an index nor a class name")
    if not indices:
        raise ValueError(f"{field}: empty list")
    return indices


def featvis_main(argv: list[str] | None = None) -> int:
    args = featvis_parser().parse_args(argv)
    if args.channel and args.classes:
        raise ValueError("Give --channel (of --layer) or --class, not both")
    device = resolve_device(args.device)
    model = model_from_arguments(args).to(device).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    class_names = list(getattr(model, "class_names", []))

    objective: dict = {}
    if args.classes:
        indices = parse_indices(args.classes, class_names, "--class")
        num_classes = getattr(model, "num_classes", None)
        if num_classes is not None and any(not 0 <= i < num_classes for i in indices):
            raise ValueError(f"--class {args.classes}: indices must be in [0, {num_classes})")
        objective["class_index"] = torch.tensor(indices, device=device)
        labels = [f"class {i} ({class_names[i]})" if i < len(class_names) else f"class {i}" for i in indices]
    else:
        objective["layer"] = args.layer
        if args.channel:
            indices = parse_indices(args.channel, [], "--channel")
            objective["channel"] = torch.tensor(indices, device=device)
            labels = [f"{args.layer or 'last layer'} channel {i}" for i in indices]
        else:
            labels = [f"{args.layer or 'last layer'} (mean)"]
    count = len(labels)

    image = None
    if args.image:
        path = Path(args.image)
        if not path.is_file():
            raise FileNotFoundError(f"--image not found: {path}")
        try:
            picture = load_image(path)
        except UnreadableImageError as err:
            raise ValueError(str(err)) from None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = ImageTransform(args.size)(picture, str(path))[None].expand(count, -1, -1, -1).to(device)

    results = feature_visualization(
        model, image=image, batch_size=count, size=args.size, octaves=args.octaves, growth=args.growth, steps=args.steps,
        lr=args.lr, blur_sigma=args.blur, jitter=args.jitter, seed=args.seed, progress=True, **objective,
    )
    scores = objective_value(model, results, **objective).tolist()
    out = Path(args.out)
    entries = []
    for label, picture, score in zip(labels, results, scores):
        name = "featvis_" + "".join(ch if ch.isalnum() else "_" for ch in label).strip("_")
        entries.append(Entry(save_png(picture, out / f"{name}.png"), label, f"objective {score:.4g}"))
    columns = min(count, 6)
    rows = [Row("", list(results[i : i + columns])) for i in range(0, count, columns)]
    rows[-1].panels += [torch.ones_like(results[0])] * (columns - len(rows[-1].panels))
    grid = grid_figure(rows, [""] * columns, out / "featvis_grid.png", title="dream" if image is not None else "feature visualization")
    entries.insert(0, Entry(grid, "all", f"{count} images, {args.octaves} octaves x {args.steps} steps"))
    index = write_index(out, entries, "pv featvis")
    print(f"Wrote {count} images, {grid.name} and {index}")
    return 0
