"""`pv analyze`: run the classifier M over a labelled split and sort its images the way the survey needs.

Writes to OUT/: predictions.csv and predictions.json (`pv.data.predictions`), summary.json and confusion.png.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from pv.commands.common import (
    CommandParser, UsageError, add_job_arguments, add_precision_argument, input_size_of, non_negative_int, positive_int, prepare_output_dir,
    probabilities, user_errors,
)  # fmt: skip
from pv.data.predictions import PROB_PREFIX
from pv.errors import PVError


class AnalysisError(PVError, ValueError):
    """A split none of whose images could be read."""


class DataConfigError(PVError, ValueError):
    """A data config that is missing, malformed or names something other than a data module."""


class DataConfigNotFoundError(PVError, FileNotFoundError):
    """The data config file does not exist."""


def parser() -> CommandParser:
    p = CommandParser(
        prog="pv analyze",
        description="Run a pv classifier checkpoint over a VOC split; write one row per image (labels, probabilities, "
        "predicted set, top class, bucket correct/partial/incorrect/empty), summary.json and confusion.png.",
    )
    p.add_argument("--checkpoint", help="classifier checkpoint saved by pv.ClassifierModule")
    p.add_argument("--arch", help="or a classifier from a model zoo (pv explain --help), e.g. tf_efficientnet_lite0; its classes must be the data's")
    p.add_argument("--weights", default="none", help="weights for --arch: torchvision's enum, packaged, pretrained, a .safetensors / .pth file, or none")
    p.add_argument("--data", required=True, help="data-module YAML (class_path: a LightningDataModule, e.g. configs/data/voc.yaml) or a fit config with data:")
    p.add_argument("--root", help="override the data root (the folder holding VOCdevkit/)")
    p.add_argument("--split", default=None, help="image set: train, val, trainval, ..., or heldout (the part of train_split that the data "
                   "config's val_fraction holds out). Default: heldout when the config sets val_fraction (the paper's configs: the "
                   "30%% of trainval neither M nor its decoder trained on), else val")
    p.add_argument("--threshold", type=float, default=0.5, help="probability at which a class is predicted, in (0, 1)")
    p.add_argument("--batch-size", type=positive_int, help="override the data config's batch size")
    p.add_argument("--image-size", type=positive_int, help="image size; default: the size the classifier was trained at (from its checkpoint)")
    p.add_argument("--num-workers", type=non_negative_int, help="override the data config's loader workers")
    p.add_argument("--out", default="runs/analysis", help="output folder")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1 ...")
    add_precision_argument(p, default="32", why=(
        ". Default 32 here: the buckets feed the user study, and bf16 moves probabilities by up to ~1e-2, enough to move "
        "an image across --threshold"))
    add_job_arguments(p, workers=False)
    return p


def read_data_spec(config: Path) -> dict:
    """The `class_path` / `init_args` mapping of a data YAML, or of a fit config's `data:` (inline or a file)."""
    from omegaconf import OmegaConf

    if not config.is_file():
        raise DataConfigNotFoundError(f"Data config not found: {config} (--data)")
    try:
        spec = OmegaConf.to_container(OmegaConf.load(config), resolve=True)
    except Exception as err:  # omegaconf / yaml parse errors have many types
        raise DataConfigError(f"{config}: not a readable YAML config ({str(err).splitlines()[0]})") from None
    if isinstance(spec, dict) and "data" in spec and "class_path" not in spec:
        spec = spec["data"]
        if isinstance(spec, str):  # `data: ../data/voc.yaml` as LightningCLI allows, relative to the config
            return read_data_spec(config.parent / spec)
    if not isinstance(spec, dict) or "class_path" not in spec:
        raise DataConfigError(f"{config} has no data-module `class_path` (expected e.g. class_path: pv.data.VOCDataModule)")
    return spec


def load_datamodule(config: str | Path, overrides: dict):
    """Instantiate the data module a YAML names, typed as LightningCLI types `data`: only a LightningDataModule
    subclass is accepted (any other `class_path`, e.g. `os.system`, is refused before anything is called)."""
    from jsonargparse import ArgumentParser
    from pytorch_lightning import LightningDataModule

    config = Path(config)
    spec = dict(read_data_spec(config))
    spec["init_args"] = dict(spec.get("init_args") or {}) | {key: value for key, value in overrides.items() if value is not None}
    typed = ArgumentParser(exit_on_error=False)
    typed.add_argument("--data", type=LightningDataModule)
    try:
        return typed.instantiate(typed.parse_object({"data": spec})).data
    except (argparse.ArgumentError, TypeError, ValueError) as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip() and not line.startswith("Parser key")]
        raise DataConfigError(f"{config}: {' '.join(lines) or err}") from None


def main(argv: list[str] | None = None) -> int:
    from pv.analysis import default_split, plot_confusion, resolve_class_names, split_dataset, summarize, write_outputs
    from pv.commands.common import MODEL, devices_from_arguments, job_device, output_name, params_sha256, resolve_precisions
    from pv.data.predictions import make_rows
    from pv.data.results import ImageItem, ResultStore
    from pv.lit.predict import is_main_process, run_images
    from pv.models import Classifier, load_classifier
    from pv.models.precision import autocast

    args = parser().parse_args(argv)
    if not 0 < args.threshold < 1:
        raise UsageError(f"--threshold must be in (0, 1), got {args.threshold}")
    where = devices_from_arguments(args)
    overrides = {"root": args.root, "batch_size": args.batch_size, "image_size": args.image_size, "num_workers": args.num_workers}
    datamodule = load_datamodule(args.data, overrides)
    args.split = args.split or default_split(datamodule)
    with user_errors():
        dataset = split_dataset(datamodule, args.split)
    out = prepare_output_dir(args.out)
    if bool(args.checkpoint) == bool(args.arch):
        raise UsageError("Give a classifier: --checkpoint CKPT, or --arch NAME [--weights ...] (not both)")
    with user_errors():
        model = Classifier.from_checkpoint(args.checkpoint) if args.checkpoint else load_classifier(arch=args.arch, weights=args.weights)
    name = args.checkpoint or f"{args.arch} ({args.weights} weights)"  # how messages and the manifest name the classifier
    image_size = input_size_of(model, args.image_size)
    if image_size != getattr(datamodule, "image_size", image_size):  # the size the classifier was trained at
        datamodule = load_datamodule(args.data, overrides | {"image_size": image_size})
        dataset = split_dataset(datamodule, args.split)
    num_labels = dataset.labels.shape[1]
    with user_errors():
        class_names = resolve_class_names(model, num_labels, name, datamodule.class_names)
    activation = getattr(model, "activation", "sigmoid")
    precision = resolve_precisions(args.precision, job_device(where), announce=is_main_process())[MODEL]
    where.precision = precision
    store = ResultStore(out, "analyze")
    fingerprint = {"classifier": {"name": str(name), "params_sha256": params_sha256(model)},
                   "settings": {"image_size": image_size, "activation": activation, "classes": class_names, "precision": precision}}  # fmt: skip
    store.check_manifest(fingerprint, write=is_main_process())
    root = Path(datamodule.root)
    items = [ImageItem(i, Path(p), output_name(Path(p), root), {"label": dataset.labels[i]}) for i, p in enumerate(dataset.paths)]

    def step(images, batch_items: list[dict]) -> list[dict]:
        """Probabilities (float64 from the logits, the classifier's own activation) per image."""
        with torch.no_grad(), autocast(precision, images.device):
            logits = model(images)  # (B, C), bf16 under --precision bf16
        probs = probabilities(logits.double(), activation)  # (B, C)
        return [{"probabilities": p} for p in probs]

    def finish(item: dict, payload: dict) -> dict:
        """Rounded to 6 decimals: what the files show is exactly what is thresholded."""
        return {"probabilities": [round(float(p), 6) for p in payload["probabilities"]], "label": [int(v > 0.5) for v in item["label"].tolist()], "files": {}}

    job = run_images(store, items, dataset.transform, step, finish, {"classifier": model}, where,
                     batch_size=datamodule.batch_size, num_workers=datamodule.num_workers, description="pv analyze")  # fmt: skip
    if not job.main:
        return 0
    records, done = store.merge_readable(items)
    if not done:
        raise AnalysisError(f"None of the {len(items)} images of split {args.split!r} could be read")
    store.write_index(records, ["key", "path", "sha256", "status", "error"])
    probs = torch.tensor([r["probabilities"] for r in done], dtype=torch.float64)  # (N, C)
    labels = torch.tensor([r["label"] for r in done], dtype=torch.float32)  # (N, C)
    rows = make_rows([r["path"] for r in done], probs, labels, class_names, args.threshold)
    summary = {"checkpoint": str(Path(args.checkpoint).resolve()) if args.checkpoint else None, "arch": args.arch, "weights": args.arch and args.weights,
               "data": str(args.data), "split": args.split,
               "threshold": args.threshold, "image_size": image_size, "activation": activation}  # fmt: skip
    summary |= summarize(rows, probs, labels, class_names, args.threshold)
    write_outputs(out, rows, summary)
    plot_confusion(out / "confusion.png", labels, probs, class_names, args.threshold)
    print(summary_table(summary))
    if args.logger == "wandb":
        from pv.lit.wandb_table import log_table

        folder = log_table(out, project=args.wandb_project, name="pv-analyze", columns=analyze_columns(class_names),
                           rows=analyze_rows(rows, dataset.transform), summary=flat_summary(summary), config=fingerprint)  # fmt: skip
        print(f"Logged {len(rows)} row(s) and the summary metrics to W&B ({folder})")
    print(f"\nwrote {out}/predictions.csv, predictions.json, summary.json, confusion.png, index.csv/.json")
    return 0


def analyze_columns(class_names: list[str]) -> list[str]:
    return ["image", "input", "true classes", "predicted classes", "bucket", "top class", "probabilities"]


def analyze_rows(rows: list[dict], transform):
    """One W&B row per image: the input as the classifier saw it (uint8 HWC), classes, bucket, probabilities."""
    from pv.data.images import load_image
    from pv.explain.figures import to_uint8

    for row in rows:
        image = transform(load_image(row["path"]), row["path"])
        probs = ";".join(f"{key.removeprefix(PROB_PREFIX)} {value:.4f}" for key, value in row.items() if key.startswith(PROB_PREFIX))
        yield [row["id"], to_uint8(image), row["labels"], row["predicted"], row["bucket"], row["top_class"], probs]


def flat_summary(summary: dict) -> dict:
    """mAP, F1 and bucket counts as flat W&B summary keys."""
    flat = {"map": summary["map"], "f1": summary["f1"], "images": summary["num_images"]}
    return flat | {f"bucket/{name}": count for name, count in summary["buckets"].items()}


def summary_table(summary: dict) -> str:
    """Bucket counts and per-class numbers as plain text."""
    n = max(summary["num_images"], 1)
    fmt = lambda value: "  -  " if value is None else f"{value:.3f}"  # noqa: E731
    lines = [
        f"{summary['num_images']} images, split {summary['split']}, threshold {summary['threshold']}, "
        f"mAP {fmt(summary['map'])}, macro F1 {fmt(summary['f1'])}",
        "",
        f"{'bucket':<12}{'images':>8}{'share':>9}",
    ]
    lines += [f"{name:<12}{count:>8}{100 * count / n:>8.1f}%" for name, count in summary["buckets"].items()]
    lines += ["", f"{'class':<14}{'images':>8}{'predicted':>11}{'AP':>8}{'F1':>8}"]
    lines += [
        f"{name:<14}{c['images']:>8}{c['predicted']:>11}{fmt(c['ap']):>8}{fmt(c['f1']):>8}"
        for name, c in summary["per_class"].items()
    ]
    return "\n".join(lines)
