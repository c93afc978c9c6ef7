"""`pv analyze`: run the classifier M over a dataset split and sort its images the way the survey needs.

Writes to OUT/: predictions.csv and predictions.json (one row per image; columns `ROW_COLUMNS` then
`prob_<class>` per class), summary.json (bucket counts, mAP, per-class AP/F1) and confusion.png.
A bucket compares the true label set with the predicted set {classes with probability >= threshold}.
"""
from __future__ import annotations

import argparse
import csv
import importlib
import json
import math
import warnings
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from pv.data import VOC_CLASSES, VOCDataModule, voc_dataset
from pv.lit.classifier_module import MultilabelMetrics, check_threshold
from pv.models import Classifier

BUCKETS = ("correct", "partial", "incorrect", "empty")
ROW_COLUMNS = ("id", "path", "labels", "predicted", "top_class", "top_prob", "bucket")


def bucket(labels: set[int], predicted: set[int]) -> str:
    """The paper's question categories for one image (labels must not be empty).

    "empty": nothing predicted; "correct": predicted set == label set; "incorrect": no true label was
    predicted; "partial": anything else (some labels hit, but some missed or extra classes predicted).
    """
    if not labels:
        raise ValueError("bucket() needs at least one true label")
    if not predicted:
        return "empty"
    if predicted == labels:
        return "correct"
    if not predicted & labels:
        return "incorrect"
    return "partial"


def load_datamodule(config: str | Path, overrides: dict) -> VOCDataModule:
    """Instantiate the data module of a YAML config: a `class_path`/`init_args` mapping, or a fit config with `data:`."""
    config = Path(config)
    if not config.is_file():
        raise FileNotFoundError(f"Data config not found: {config}")
    spec = OmegaConf.to_container(OmegaConf.load(config), resolve=True)
    if isinstance(spec, dict) and "data" in spec and "class_path" not in spec:
        spec = spec["data"]
        if isinstance(spec, str):  # `data: ../data/voc.yaml` as LightningCLI allows, relative to the config
            return load_datamodule(config.parent / spec, overrides)
    if not isinstance(spec, dict) or "class_path" not in spec:
        raise ValueError(f"{config} has no data-module `class_path` (expected e.g. class_path: pv.data.VOCDataModule)")
    module_name, _, class_name = spec["class_path"].rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError):
        raise ValueError(f"{config}: cannot import class_path {spec['class_path']!r}") from None
    init_args = dict(spec.get("init_args") or {})
    init_args.update({key: value for key, value in overrides.items() if value is not None})
    try:
        return cls(**init_args)
    except TypeError as err:
        raise ValueError(f"{config}: bad init_args for {spec['class_path']}: {err}") from None


def split_dataset(datamodule: VOCDataModule, split: str) -> Dataset:
    """The un-augmented images and multi-hot labels of one split (train, val, trainval, ...)."""
    if not isinstance(datamodule, VOCDataModule):
        raise ValueError(f"pv analyze needs labelled VOC data (pv.data.VOCDataModule), got {type(datamodule).__name__}")
    return voc_dataset(datamodule.root, datamodule.eval_transform, datamodule.year, split)


def resolve_class_names(model: Classifier, num_labels: int, checkpoint: str | Path) -> list[str]:
    """The model's class names, checked against the data's label count and the VOC class order."""
    if model.num_classes != num_labels:
        raise ValueError(f"{checkpoint} holds a {model.num_classes}-class classifier, but the data has {num_labels} classes")
    if model.class_names == [str(i) for i in range(model.num_classes)]:
        return list(VOC_CLASSES)  # saved without names: the data's order is VOC's
    if list(model.class_names) != list(VOC_CLASSES):
        raise ValueError(f"{checkpoint} was trained on classes {model.class_names}, not the VOC classes {list(VOC_CLASSES)}")
    return list(model.class_names)


@torch.inference_mode()
def predict(model: Classifier, loader: DataLoader, device: torch.device) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Image paths, probabilities (N, C) and multi-hot labels (N, C), on the CPU, one entry per readable image.

    Probabilities are float64 rounded to 6 decimals: what the files show is exactly what is thresholded.
    The dataset stands in the next image for an unreadable one (after a warning naming it); that repeat is dropped.
    """
    model.eval().to(device)
    paths, probs, labels = [], [], []
    for batch in tqdm(loader, desc="pv analyze", unit="batch"):
        logits = model(batch["image"].to(device))  # (B, C)
        probs.append(torch.sigmoid(logits.double()).cpu())
        labels.append(batch["label"].cpu())
        paths += list(batch["path"])
    first = {}  # path -> index of its first occurrence, in order
    for index, path in enumerate(paths):
        first.setdefault(path, index)
    keep = torch.tensor(list(first.values()), dtype=torch.long)  # (N,)
    probs_all = torch.round(torch.cat(probs) * 1e6) / 1e6  # (N + repeats, C)
    return list(first), probs_all[keep], torch.cat(labels)[keep]


def make_rows(paths: list[str], probs: torch.Tensor, labels: torch.Tensor, class_names: list[str], threshold: float) -> list[dict]:
    """One dict per image: keys `ROW_COLUMNS`, then `prob_<class>` per class."""
    rows = []
    for path, image_probs, image_labels in zip(paths, probs.tolist(), labels.tolist()):
        true = {i for i, y in enumerate(image_labels) if y > 0.5}
        predicted = {i for i, p in enumerate(image_probs) if p >= threshold}
        top = max(range(len(image_probs)), key=image_probs.__getitem__)
        row = {
            "id": Path(path).stem,
            "path": str(Path(path).resolve()),
            "labels": ";".join(class_names[i] for i in sorted(true)),
            "predicted": ";".join(class_names[i] for i in sorted(predicted)),
            "top_class": class_names[top],
            "top_prob": image_probs[top],
            "bucket": bucket(true, predicted),
        }
        rows.append(row | {f"prob_{name}": p for name, p in zip(class_names, image_probs)})
    return rows


def summarize(rows: list[dict], probs: torch.Tensor, labels: torch.Tensor, class_names: list[str], threshold: float) -> dict:
    """Bucket counts, mAP and macro F1 (over classes present in the split), and per-class numbers."""
    metrics = MultilabelMetrics(len(class_names), threshold)
    metrics.update(probs, labels)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No positive samples")  # absent classes are left out below
        values = metrics.compute()
    predicted = (probs >= threshold).sum(0)  # (C,)

    def number(value: torch.Tensor) -> float | None:
        return None if math.isnan(float(value)) else round(float(value), 6)

    per_class = {
        name: {"images": int(values["support"][i]), "predicted": int(predicted[i]),
               "ap": number(values["ap"][i]) if values["support"][i] > 0 else None,
               "f1": number(values["f1_class"][i]) if values["support"][i] > 0 else None}
        for i, name in enumerate(class_names)
    }  # fmt: skip
    counts = {name: sum(row["bucket"] == name for row in rows) for name in BUCKETS}
    return {"num_images": len(rows), "buckets": counts, "map": number(values["map"]), "f1": number(values["f1"]), "per_class": per_class}


def confusion_counts(labels: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """(C, C) counts: row = a true class of an image, column = the image's top predicted class."""
    num_classes = labels.shape[1]
    top = probs.argmax(dim=1)  # (N,)
    return (labels > 0.5).long().T @ torch.nn.functional.one_hot(top, num_classes)  # (C, N) @ (N, C)


def plot_confusion(path: Path, labels: torch.Tensor, probs: torch.Tensor, class_names: list[str], threshold: float) -> None:
    """Left: true class vs top-1 class (row-normalised colour, counts written). Right: per-class hits,
    misses and false alarms at the threshold."""
    from matplotlib.figure import Figure

    counts = confusion_counts(labels, probs).float()  # (C, C)
    share = counts / counts.sum(dim=1, keepdim=True).clamp(min=1)
    truth, said = labels > 0.5, probs >= threshold  # (N, C)
    hits, misses, false_alarms = (truth & said).sum(0), (truth & ~said).sum(0), (~truth & said).sum(0)
    num_classes = len(class_names)
    ticks = range(num_classes)

    figure = Figure(figsize=(17, 8), layout="constrained")
    left, right = figure.subplots(1, 2, width_ratios=[1.5, 1])
    image = left.imshow(share.numpy(), cmap="Blues", vmin=0, vmax=1)
    for i in ticks:
        for j in ticks:
            if counts[i, j] > 0:
                left.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=7, color="white" if share[i, j] > 0.5 else "black")
    left.set_xticks(ticks, class_names, rotation=90)
    left.set_yticks(ticks, class_names)
    left.set_xlabel("top predicted class")
    left.set_ylabel("true class (an image counts once per true class)")
    left.set_title("True class vs top-1 prediction (colour: share of the row)")
    figure.colorbar(image, ax=left, shrink=0.7)

    y = torch.arange(num_classes).numpy()
    right.barh(y, hits.numpy(), color="tab:green", label="hit (true, predicted)")
    right.barh(y, misses.numpy(), left=hits.numpy(), color="tab:orange", label="miss (true, not predicted)")
    right.barh(y, false_alarms.numpy(), left=(hits + misses).numpy(), color="tab:red", label="false alarm (predicted, not true)")
    right.set_yticks(y, class_names)
    right.invert_yaxis()
    right.set_xlabel("images")
    right.xaxis.get_major_locator().set_params(integer=True)
    right.set_title(f"Per class at threshold {threshold}")
    right.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=3, fontsize=8)
    figure.savefig(path, dpi=110)


def write_outputs(out: Path, rows: list[dict], summary: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "predictions.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / "predictions.json").write_text(json.dumps(rows, indent=1))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))


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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="pv analyze",
        description="Run a pv classifier checkpoint over a VOC split; write one row per image (labels, probabilities, "
        "predicted set, top class, bucket correct/partial/incorrect/empty), summary.json and confusion.png.",
    )
    parser.add_argument("--checkpoint", required=True, help="classifier checkpoint saved by pv.ClassifierModule")
    parser.add_argument("--data", required=True, help="data-module YAML (e.g. configs/data/voc.yaml) or a fit config with data:")
    parser.add_argument("--root", help="override the data root (the folder holding VOCdevkit/)")
    parser.add_argument("--split", default="val", help="image set: train, val, trainval, ... (default: val)")
    parser.add_argument("--threshold", type=float, default=0.5, help="probability at which a class is predicted, in (0, 1) (default: 0.5)")
    parser.add_argument("--batch-size", type=int, help="override the data config's batch size")
    parser.add_argument("--image-size", type=int, help="override the data config's image size")
    parser.add_argument("--num-workers", type=int, help="override the data config's loader workers")
    parser.add_argument("--out", default="runs/analysis", help="output folder (default: runs/analysis)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device (default: cuda if available)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    threshold = check_threshold(args.threshold, "--threshold")
    device = torch.device(args.device)
    overrides = {"root": args.root, "batch_size": args.batch_size, "image_size": args.image_size, "num_workers": args.num_workers}
    datamodule = load_datamodule(args.data, overrides)
    dataset = split_dataset(datamodule, args.split)
    model = Classifier.from_checkpoint(args.checkpoint)
    class_names = resolve_class_names(model, dataset[0]["label"].numel(), args.checkpoint)
    loader = DataLoader(dataset, batch_size=datamodule.batch_size, shuffle=False, num_workers=datamodule.num_workers)

    paths, probs, labels = predict(model, loader, device)  # (N, C), (N, C)
    rows = make_rows(paths, probs, labels, class_names, threshold)
    summary = {"checkpoint": str(Path(args.checkpoint).resolve()), "data": str(args.data), "split": args.split, "threshold": threshold}
    summary |= summarize(rows, probs, labels, class_names, threshold)
    out = Path(args.out)
    write_outputs(out, rows, summary)
    plot_confusion(out / "confusion.png", labels, probs, class_names, threshold)
    print(summary_table(summary))
    print(f"\nwrote {out}/predictions.csv, predictions.json, summary.json, confusion.png")
    return 0
