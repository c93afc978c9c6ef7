"""Classifier analysis over a labelled split: predictions, bucket counts, mAP / F1 and the confusion figure.

The command is `pv analyze` (pv/commands/analyze.py). The predictions table's columns and buckets are
defined once in `pv.data.predictions`; this module writes OUT/predictions.csv and predictions.json (one
row per image), summary.json (bucket counts, mAP, per-class AP/F1) and confusion.png.
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from pv.atomic import write_text
from pv.data import VOC_CLASSES, VOCDataModule, voc_dataset
from pv.data.predictions import BUCKETS, PREDICTION_COLUMNS, bucket, make_rows, write_predictions
from pv.errors import PVError
from pv.explain.figures import save_figure
from pv.lit.classifier_module import MultilabelMetrics
from pv.models import Classifier
from pv.models.classifier import probabilities

ROW_COLUMNS = PREDICTION_COLUMNS  # the old name


class AnalysisError(PVError, ValueError):
    """Data and classifier that do not fit together (class count, class names, data module kind)."""
__all__ = ["BUCKETS", "ROW_COLUMNS", "bucket", "confusion_counts", "make_rows", "plot_confusion", "predict", "summarize", "write_outputs"]


HELD_OUT = "heldout"  # the part of train_split that val_fraction holds out (neither M nor its decoder trained on it)


def default_split(datamodule) -> str:
    """`heldout` for a data module that holds out part of its train split (the paper's configs), else `val`."""
    return HELD_OUT if getattr(datamodule, "val_fraction", None) is not None else "val"


def split_dataset(datamodule: VOCDataModule, split: str, split_option: str = "--split") -> Dataset:
    """The un-augmented images and multi-hot labels of one split (train, val, trainval, ..., or `heldout`)."""
    if not isinstance(datamodule, VOCDataModule):
        raise AnalysisError(f"pv analyze needs labelled VOC data (pv.data.VOCDataModule), got {type(datamodule).__name__}")
    if split == HELD_OUT:
        if datamodule.val_fraction is None:
            raise AnalysisError(f"{split_option} {HELD_OUT} needs a data config with val_fraction (e.g. configs/data/voc_split.yaml); "
                                "name a VOC split instead (val, train, ...)")  # fmt: skip
        return datamodule.held_out()
    return voc_dataset(datamodule.root, datamodule.eval_transform, datamodule.year, split, split_option=split_option,
                       classes=getattr(datamodule, "class_names", VOC_CLASSES))  # fmt: skip


def resolve_class_names(model: Classifier, num_labels: int, checkpoint: str | Path, data_classes: list[str] | tuple[str, ...] = VOC_CLASSES) -> list[str]:
    """The model's class names, checked against the data's label count and class order (VOC's by default)."""
    if model.num_classes != num_labels:
        raise AnalysisError(f"{checkpoint} holds a {model.num_classes}-class classifier, but the data has {num_labels} classes")
    if model.class_names == [str(i) for i in range(model.num_classes)]:
        return list(data_classes)  # saved without names: the data's order
    if list(model.class_names) != list(data_classes):
        raise AnalysisError(f"{checkpoint} was trained on classes {model.class_names}, not the data's classes {list(data_classes)}")
    return list(model.class_names)


@torch.inference_mode()
def predict(model: Classifier, loader: DataLoader, device: torch.device) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Image paths, probabilities (N, C) and multi-hot labels (N, C), on the CPU, one entry per readable image.

    Probabilities (the classifier's own activation, sigmoid for pv's multi-label classifiers) are float64
    rounded to 6 decimals: what the files show is exactly what is thresholded.
    The dataset stands in the next image for an unreadable one (after a warning naming it); that repeat is dropped.
    """
    model.eval().to(device)
    paths, probs, labels = [], [], []
    for batch in tqdm(loader, desc="pv analyze", unit="batch"):
        logits = model(batch["image"].to(device))  # (B, C)
        probs.append(probabilities(logits.double(), getattr(model, "activation", "sigmoid")).cpu())
        labels.append(batch["label"].cpu())
        paths += list(batch["path"])
    first = {}  # path -> index of its first occurrence, in order
    for index, path in enumerate(paths):
        first.setdefault(path, index)
    keep = torch.tensor(list(first.values()), dtype=torch.long)  # (N,)
    probs_all = torch.round(torch.cat(probs) * 1e6) / 1e6  # (N + repeats, C)
    return list(first), probs_all[keep], torch.cat(labels)[keep]


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
    save_figure(figure, path, dpi=110)


def write_outputs(out: Path, rows: list[dict], summary: dict) -> None:
    """predictions.csv and predictions.json (`pv.data.predictions`), and summary.json; each written atomically."""
    write_predictions(out, rows)
    write_text(Path(out) / "summary.json", json.dumps(summary, indent=2))
