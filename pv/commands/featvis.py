"""`pv featvis`: feature visualization (multi-scale gradient ascent) of a layer, its channels or class logits."""
from __future__ import annotations

import functools
import re
import warnings
from pathlib import Path

import torch

from pv.commands.common import (
    CommandParser, UsageError, add_classifier_arguments, classifier_from_arguments, parse_indices, positive_int,
    non_negative_float, non_negative_int, prepare_output_dir, resolve_device, user_errors, add_precision_argument, resolve_precisions, MODEL,
)  # fmt: skip
from pv.data.images import UnreadableImageError, load_image
from pv.data.transforms import ImageTransform
from pv.errors import PVError
from pv.explain.featvis import feature_visualization, objective_value
from pv.explain.figures import Entry, Row, grid_figure, save_png, write_index
from pv.explain.saliency import default_layer, resolve_layer
from pv.models.precision import autocast, prepare_model

MIN_SIZE = 16  # the smallest octave featvis optimises


def growth(text: str) -> float:
    value = float(text)
    if not value >= 1:
        raise ValueError(text)
    return value


growth.__name__ = "number"


def parser() -> CommandParser:
    p = CommandParser(
        prog="pv featvis",
        description="Feature visualization: multi-scale gradient ascent on the input to maximise a layer, channels "
        "or class logits, from noise or from an image (dream). Writes PNGs, a titled grid and index.html.",
    )
    add_classifier_arguments(p)
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--layer", help="layer to excite; default: the last conv block (e.g. layer4); ignored with --class")
    p.add_argument("--channel", help="comma-separated channel indices of --layer (one image each); default: the whole layer")
    p.add_argument("--class", dest="classes", help="comma-separated class indices or names: maximise their logits instead")
    p.add_argument("--image", help="dream mode: start from this image instead of noise")
    p.add_argument("--size", type=positive_int, default=128, help=f"output size in pixels, at least {MIN_SIZE} (in dream mode the image is cropped to it)")
    p.add_argument("--octaves", type=positive_int, default=4, help="number of scales")
    p.add_argument("--growth", type=growth, default=1.4, help="upscaling factor between octaves (>= 1)")
    p.add_argument("--steps", type=non_negative_int, default=20, help="gradient steps per octave")
    p.add_argument("--lr", type=non_negative_float, default=0.05, help="step size (on the mean-normalised gradient)")
    p.add_argument("--blur", type=non_negative_float, default=0.5, help="Gaussian blur sigma after each step")
    p.add_argument("--jitter", type=non_negative_int, default=4, help="random shift (pixels) each step")
    p.add_argument("--seed", type=int, default=0, help="random seed of the starting noise and the jitter")
    add_precision_argument(p)
    return p


def layer_label(name: str) -> str:
    """"trunk.layer4" -> "layer4": the name as the user gives it."""
    for prefix in ("trunk.", "net."):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def forward_in_precision(model: torch.nn.Module, precision: str, device: torch.device) -> torch.nn.Module:
    """`model` whose forward runs in `autocast(precision)`; the image being optimised, its normalised gradient steps
    and the blur stay fp32 outside it (autocast around the whole ascent would blur and step in bf16). Layer names and
    hooks are unchanged: the instance's own `forward` wraps the class's."""
    if precision == "32":
        return model
    forward = model.forward

    @functools.wraps(forward)
    def autocast_forward(*args, **kwargs):
        with autocast(precision, device):
            return forward(*args, **kwargs)

    model.forward = autocast_forward
    return model


def file_name(label: str) -> str:
    return "featvis_" + re.sub(r"[^A-Za-z0-9]+", "_", label).strip("_")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.channel and args.classes:
        raise UsageError("Give --channel (of --layer) or --class, not both")
    if args.size < MIN_SIZE:
        raise UsageError(f"--size must be at least {MIN_SIZE} px, got {args.size}")
    out = prepare_output_dir(args.out)
    device = resolve_device(args.device)
    precision = resolve_precisions(args.precision, device)[MODEL]
    model = forward_in_precision(prepare_model(classifier_from_arguments(args, device), precision, device), precision, device)
    class_names = list(getattr(model, "class_names", []))

    objective: dict = {}
    if args.classes:
        indices = list(dict.fromkeys(parse_indices(args.classes, class_names, "--class")))
        num_classes = getattr(model, "num_classes", None)
        if num_classes is not None and any(not 0 <= i < num_classes for i in indices):
            raise UsageError(f"--class {args.classes}: indices must be in [0, {num_classes})")
        objective["class_index"] = torch.tensor(indices, device=device)
        labels = [f"class {i} ({class_names[i]})" if i < len(class_names) else f"class {i}" for i in indices]
    else:
        with user_errors("--layer: "):
            layer_name, _ = resolve_layer(model, args.layer or default_layer(model))
        layer = layer_label(layer_name)
        objective["layer"] = layer_name
        if args.channel:
            indices = list(dict.fromkeys(parse_indices(args.channel, [], "--channel")))
            objective["channel"] = torch.tensor(indices, device=device)
            labels = [f"{layer} channel {i}" for i in indices]
        else:
            labels = [f"{layer} (mean)"]
    count = len(labels)

    image = None
    if args.image:
        path = Path(args.image)
        if not path.is_file():
            raise PVError(f"--image {path}: file not found")
        try:
            picture = load_image(path)
        except UnreadableImageError as err:
            raise PVError(f"--image: {err}") from None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = ImageTransform(args.size)(picture, str(path))[None].expand(count, -1, -1, -1).to(device)

    with user_errors():  # e.g. a channel index beyond the layer's channels
        results = feature_visualization(
            model, image=image, batch_size=count, size=args.size, octaves=args.octaves, growth=args.growth, steps=args.steps,
            lr=args.lr, blur_sigma=args.blur, jitter=args.jitter, seed=args.seed, progress=True, **objective,
        ).float()  # fmt: skip
    scores = objective_value(model, results, **objective).float().tolist()
    entries = []
    for label, picture, score in zip(labels, results, scores):
        entries.append(Entry(save_png(picture, out / f"{file_name(label)}.png"), label, f"objective {score:.4g}"))
    per_row = min(count, 6)
    rows = []
    for start in range(0, count, per_row):
        panels = list(results[start : start + per_row])
        titles = [f"{label}\nobjective {score:.3g}" for label, score in zip(labels[start : start + per_row], scores[start : start + per_row])]
        panels += [torch.ones_like(results[0])] * (per_row - len(panels))
        titles += [""] * (per_row - len(titles))
        rows.append(Row("", panels, titles))
    mode = f"dream from {Path(args.image).name}" if image is not None else "feature visualization from noise"
    grid = grid_figure(rows, [""] * per_row, out / "featvis_grid.png", title=f"{mode}: {args.octaves} octaves x {args.steps} steps")
    entries.insert(0, Entry(grid, "all", f"{count} image(s), {args.octaves} octaves x {args.steps} steps"))
    index = write_index(out, entries, "pv featvis")
    print(f"Wrote {count} image(s) ({', '.join(labels)}), {grid.name} and {index}")
    return 0
