"""`pv analyze`: run the classifier M over a labelled split and sort its images the way the survey needs.

Writes to OUT/: predictions.csv and predictions.json (`pv.data.predictions`), summary.json and confusion.png.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from pv.commands.common import CommandParser, UsageError, input_size_of, prepare_output_dir, positive_int, non_negative_int, resolve_device, user_errors
from pv.errors import PVError


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
    p.add_argument("--checkpoint", required=True, help="classifier checkpoint saved by pv.ClassifierModule")
    p.add_argument("--data", required=True, help="data-module YAML (class_path: a LightningDataModule, e.g. configs/data/voc.yaml) or a fit config with data:")
    p.add_argument("--root", help="override the data root (the folder holding VOCdevkit/)")
    p.add_argument("--split", default="val", help="image set: train, val, trainval, ...")
    p.add_argument("--threshold", type=float, default=0.5, help="probability at which a class is predicted, in (0, 1)")
    p.add_argument("--batch-size", type=positive_int, help="override the data config's batch size")
    p.add_argument("--image-size", type=positive_int, help="image size; default: the size the classifier was trained at (from its checkpoint)")
    p.add_argument("--num-workers", type=non_negative_int, help="override the data config's loader workers")
    p.add_argument("--out", default="runs/analysis", help="output folder")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1 ...")
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
    from torch.utils.data import DataLoader

    from pv.analysis import plot_confusion, predict, resolve_class_names, split_dataset, summarize, write_outputs
    from pv.data.predictions import make_rows
    from pv.models import Classifier

    args = parser().parse_args(argv)
    if not 0 < args.threshold < 1:
        raise UsageError(f"--threshold must be in (0, 1), got {args.threshold}")
    device = resolve_device(args.device)
    overrides = {"root": args.root, "batch_size": args.batch_size, "image_size": args.image_size, "num_workers": args.num_workers}
    datamodule = load_datamodule(args.data, overrides)
    with user_errors():
        dataset = split_dataset(datamodule, args.split)
    out = prepare_output_dir(args.out)
    with user_errors():
        model = Classifier.from_checkpoint(args.checkpoint)
    image_size = input_size_of(model, args.image_size)
    if image_size != getattr(datamodule, "image_size", image_size):  # the size the classifier was trained at
        datamodule = load_datamodule(args.data, overrides | {"image_size": image_size})
        dataset = split_dataset(datamodule, args.split)
    with user_errors():
        class_names = resolve_class_names(model, dataset[0]["label"].numel(), args.checkpoint, datamodule.class_names)
    loader = DataLoader(dataset, batch_size=datamodule.batch_size, shuffle=False, num_workers=datamodule.num_workers)

    paths, probs, labels = predict(model, loader, device)  # (N, C), (N, C)
    rows = make_rows(paths, probs, labels, class_names, args.threshold)
    summary = {"checkpoint": str(Path(args.checkpoint).resolve()), "data": str(args.data), "split": args.split,
               "threshold": args.threshold, "image_size": image_size, "activation": getattr(model, "activation", "sigmoid")}  # fmt: skip
    summary |= summarize(rows, probs, labels, class_names, args.threshold)
    write_outputs(out, rows, summary)
    plot_confusion(out / "confusion.png", labels, probs, class_names, args.threshold)
    print(summary_table(summary))
    print(f"\nwrote {out}/predictions.csv, predictions.json, summary.json, confusion.png")
    return 0


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
