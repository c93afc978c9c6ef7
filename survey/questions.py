"""Which images become questions, and which answers each question offers (pure functions, seeded).

Reads the classifier analysis table (`pv analyze` -> predictions.csv): one row per image with its true
labels, the predicted set, the top class and a bucket (correct | incorrect | partial | empty).
"""
from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path

REQUIRED_COLUMNS = ("id", "path", "labels", "predicted", "top_class", "top_prob", "bucket")
BUCKETS = ("correct", "incorrect", "partial", "empty")
CANT_TELL_ID = "cant_tell"
CANT_TELL_LABEL = "I just can't tell"
CLASS_OPTIONS = 4  # the top prediction + three other classes
DISPLAY_NAMES = {"diningtable": "dining table", "pottedplant": "potted plant", "tvmonitor": "TV monitor"}


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

    `path` may be the analysis folder or the CSV itself. Bad content raises ValueError naming the
    file, the line and the field.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "predictions.csv"
    if not path.is_file():
        raise FileNotFoundError(f"Predictions table not found: {path} (run `pv analyze` first)")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(REQUIRED_COLUMNS)}, prob_<class>...")
        classes = [c[len("prob_"):] for c in columns if c.startswith("prob_")]
        rows = []
        for line, record in enumerate(reader, start=2):
            rows.append(parse_row(record, f"{path}:{line}"))
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows, classes


def parse_row(record: dict[str, str], where: str) -> Prediction:
    """One CSV record -> Prediction; ValueError naming `where` and the field."""
    if record.get("bucket") not in BUCKETS:
        raise ValueError(f"{where}: field 'bucket' is {record.get('bucket')!r}, expected one of {', '.join(BUCKETS)}")
    if not (record.get("id") or "").strip():
        raise ValueError(f"{where}: field 'id' is empty")
    if not (record.get("top_class") or "").strip():
        raise ValueError(f"{where}: field 'top_class' is empty")
    try:
        top_prob = float(record["top_prob"])
    except (TypeError, ValueError):
        raise ValueError(f"{where}: field 'top_prob' is {record.get('top_prob')!r}, not a number") from None
    return Prediction(
        id=record["id"].strip(),
        path=(record.get("path") or "").strip(),
        labels=split_names(record.get("labels") or ""),
        predicted=split_names(record.get("predicted") or ""),
        top_class=record["top_class"].strip(),
        top_prob=top_prob,
        bucket=record["bucket"],
    )


def select_questions(rows: list[Prediction], n_correct: int = 16, n_incorrect: int = 14, seed: int = 0) -> list[Prediction]:
    """Sample `n_correct` correctly classified rows (predicted set == label set) and `n_incorrect`
    wrongly classified rows (no label among the predictions), then shuffle them together. Seeded.
    """
    if n_correct < 0 or n_incorrect < 0 or n_correct + n_incorrect == 0:
        raise ValueError(f"question counts must be >= 0 and not both 0, got correct={n_correct}, incorrect={n_incorrect}")
    rng = random.Random(seed)
    chosen: list[Prediction] = []
    for bucket, count in (("correct", n_correct), ("incorrect", n_incorrect)):
        pool = sorted((r for r in rows if r.bucket == bucket), key=lambda r: r.id)
        if len(pool) < count:
            raise ValueError(f"only {len(pool)} {bucket}ly classified images in the predictions table; {count} requested")
        chosen += rng.sample(pool, count)
    ids = [r.id for r in chosen]
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate image id(s) in the predictions table: {sorted({i for i in ids if ids.count(i) > 1})}")
    rng.shuffle(chosen)
    return chosen


def class_options(row: Prediction, classes: list[str], rng: random.Random, n_options: int = CLASS_OPTIONS) -> list[str]:
    """The `n_options` distinct classes offered for `row`, in a seeded random order.

    The model's top prediction, then other classes from the true labels (a random subset when there
    are too many), then random dataset classes when there are too few. Classes the model predicted
    besides its top class are never used as filler, so the only predicted class that can appear
    and is not the key is a true label of a correctly classified image (as in the paper).
    """
    if row.top_class not in classes:
        raise ValueError(f"image {row.id}: top_class {row.top_class!r} is not a dataset class")
    unknown = [name for name in row.labels if name not in classes]
    if unknown:
        raise ValueError(f"image {row.id}: label(s) {unknown} are not dataset classes")
    if len(set(classes)) < n_options:
        raise ValueError(f"{n_options} options per question need at least {n_options} classes, the dataset has {len(set(classes))}")
    others = sorted(set(row.labels) - {row.top_class})
    if len(others) > n_options - 1:
        others = rng.sample(others, n_options - 1)
    taken = {row.top_class, *others}
    filler = [c for c in dict.fromkeys(classes) if c not in taken and c not in row.predicted]
    if len(filler) < n_options - len(taken):  # tiny label spaces: fall back to predicted classes
        filler += [c for c in dict.fromkeys(classes) if c not in taken and c not in filler]
    options = [row.top_class, *others, *rng.sample(filler, n_options - len(taken))]
    rng.shuffle(options)
    return options


def display_name(name: str) -> str:
    """A class name as participants read it: VOC's run-together names spelled out, underscores as spaces."""
    return DISPLAY_NAMES.get(name, name.replace("_", " "))


def question_options(row: Prediction, classes: list[str], rng: random.Random, n_options: int = CLASS_OPTIONS) -> tuple[list[dict], str]:
    """Options [{"id", "class", "label"}] (classes o1..oN, then "I just can't tell") and the key's option id."""
    names = class_options(row, classes, rng, n_options)
    options: list[dict] = [{"id": f"o{i + 1}", "class": name, "label": display_name(name)} for i, name in enumerate(names)]
    options.append({"id": CANT_TELL_ID, "class": None, "label": CANT_TELL_LABEL})
    answer = options[names.index(row.top_class)]["id"]
    return options, answer


def display_order(options: list[dict], rng: random.Random) -> list[str]:
    """Option ids in a random order for one participant; "I just can't tell" stays last."""
    ids = [o["id"] for o in options if o["id"] != CANT_TELL_ID]
    rng.shuffle(ids)
    return ids + [o["id"] for o in options if o["id"] == CANT_TELL_ID]
