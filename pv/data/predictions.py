"""The predictions table `pv analyze` writes and `pv survey build` reads: its columns and buckets, defined once.

One row per image: `PREDICTION_COLUMNS`, then `prob_<class>` per class. A bucket compares the true
label set with the predicted set {classes with probability >= threshold} (see `bucket`).
"""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pv.atomic import write_text
from pv.errors import PVError

PREDICTION_COLUMNS = ("id", "path", "labels", "predicted", "top_class", "top_prob", "bucket")
BUCKETS = ("correct", "incorrect", "partial", "empty")
PROB_PREFIX = "prob_"


class PredictionsError(PVError, ValueError):
    """A predictions table that is missing or malformed."""


class PredictionsNotFoundError(PVError, FileNotFoundError):
    """No predictions table where one was expected."""


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


def make_rows(paths: Sequence[str], probs, labels, class_names: Sequence[str], threshold: float) -> list[dict]:
    """One dict per image: keys `PREDICTION_COLUMNS`, then `prob_<class>` per class.

    probs and labels: (N, C) tensors or nested lists (probabilities, multi-hot labels).
    """
    probs = probs.tolist() if hasattr(probs, "tolist") else probs
    labels = labels.tolist() if hasattr(labels, "tolist") else labels
    rows = []
    for path, image_probs, image_labels in zip(paths, probs, labels):
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
        rows.append(row | {f"{PROB_PREFIX}{name}": p for name, p in zip(class_names, image_probs)})
    return rows


def write_predictions(out: str | Path, rows: list[dict]) -> tuple[Path, Path]:
    """Write OUT/predictions.csv and OUT/predictions.json (each atomically); returns both paths."""
    out = Path(out)
    if not rows:
        raise PredictionsError(f"no predictions to write to {out}")
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    csv_path = out / "predictions.csv"
    write_text(csv_path, buffer.getvalue())
    json_path = write_text(out / "predictions.json", json.dumps(rows, indent=1))
    return csv_path, json_path


@dataclass(frozen=True)
class Prediction:
    """One row of predictions.csv."""

    id: str
    path: str
    labels: tuple[str, ...]
    predicted: tuple[str, ...]
    top_class: str
    top_prob: float
    bucket: str


def split_names(text: str) -> tuple[str, ...]:
    """"cat;dog" -> ("cat", "dog"); "" -> ()."""
    return tuple(name.strip() for name in text.split(";") if name.strip())


def read_predictions(path: str | Path) -> tuple[list[Prediction], list[str]]:
    """predictions.csv -> (rows, class names from its `prob_<class>` columns).

    `path` may be the analysis folder or the CSV itself. Bad content raises PredictionsError (a
    ValueError) naming the file, the line and the field.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "predictions.csv"
    if not path.is_file():
        raise PredictionsNotFoundError(f"Predictions table not found: {path} (run `pv analyze` first)")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        missing = [c for c in PREDICTION_COLUMNS if c not in columns]
        if missing:
            raise PredictionsError(
                f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(PREDICTION_COLUMNS)}, {PROB_PREFIX}<class>..."
            )
        classes = [c[len(PROB_PREFIX):] for c in columns if c.startswith(PROB_PREFIX)]
        rows = [parse_row(record, f"{path}:{line}") for line, record in enumerate(reader, start=2)]
    if not rows:
        raise PredictionsError(f"{path}: no rows")
    return rows, classes


def parse_row(record: dict[str, str], where: str) -> Prediction:
    """One CSV record -> Prediction; PredictionsError naming `where` and the field."""
    if record.get("bucket") not in BUCKETS:
        raise PredictionsError(f"{where}: field 'bucket' is {record.get('bucket')!r}, expected one of {', '.join(BUCKETS)}")
    for field in ("id", "top_class"):
        if not (record.get(field) or "").strip():
            raise PredictionsError(f"{where}: field {field!r} is empty")
    try:
        top_prob = float(record["top_prob"])
    except (TypeError, ValueError):
        raise PredictionsError(f"{where}: field 'top_prob' is {record.get('top_prob')!r}, not a number") from None
    return Prediction(
        id=record["id"].strip(),
        path=(record.get("path") or "").strip(),
        labels=split_names(record.get("labels") or ""),
        predicted=split_names(record.get("predicted") or ""),
        top_class=record["top_class"].strip(),
        top_prob=top_prob,
        bucket=record["bucket"],
    )
