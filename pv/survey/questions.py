"""Which images become questions, and which answers each question offers (pure functions, seeded).

Reads the classifier analysis table (`pv analyze` -> predictions.csv, schema in `pv.data.predictions`):
one row per image with its true labels, the predicted set, the top class and a bucket.
"""
from __future__ import annotations

import random
import warnings

from pv.data.predictions import BUCKETS, PREDICTION_COLUMNS, Prediction, read_predictions
from pv.survey.errors import StudyError

__all__ = [
    "BUCKETS", "CANT_TELL_ID", "CANT_TELL_LABEL", "FILLERS", "PREDICTION_COLUMNS", "Prediction", "class_options", "display_name", "display_order",
    "question_options", "read_predictions", "select_questions",
]  # fmt: skip
CANT_TELL_ID = "cant_tell"
CANT_TELL_LABEL = "I just can't tell"
CLASS_OPTIONS = 4  # the top prediction + three other classes
FILLERS = ("all", "unpredicted")  # filler classes: any other class (the authors'), or none M predicted for the image
DISPLAY_NAMES = {"diningtable": "dining table", "pottedplant": "potted plant", "tvmonitor": "TV monitor"}


class TooFewImagesError(StudyError):
    """The predictions table has fewer images in a bucket than questions requested."""


def select_questions(rows: list[Prediction], n_correct: int = 16, n_incorrect: int = 14, seed: int = 0) -> list[Prediction]:
    """Sample `n_correct` correctly classified rows (predicted set == label set) and `n_incorrect`
    wrongly classified rows (no label among the predictions), then shuffle them together. Seeded.
    """
    if n_correct < 0 or n_incorrect < 0 or n_correct + n_incorrect == 0:
        raise StudyError(f"question counts must be >= 0 and not both 0, got correct={n_correct}, incorrect={n_incorrect}")
    pools = {bucket: sorted((r for r in rows if r.bucket == bucket), key=lambda r: r.id) for bucket in ("correct", "incorrect")}
    wanted = {"correct": n_correct, "incorrect": n_incorrect}
    if any(len(pools[b]) < wanted[b] for b in pools):
        raise TooFewImagesError(
            f"the predictions table has {len(pools['correct'])} correctly and {len(pools['incorrect'])} wrongly classified images, "
            f"but {n_correct} correct and {n_incorrect} incorrect questions were requested: lower --correct/--incorrect, "
            f"analyze a larger split (pv analyze --split ...), or change the classifier's --threshold in pv analyze"
        )
    for bucket, count in wanted.items():
        if count == 0:
            warnings.warn(f"no {bucket}ly classified questions (--{bucket} 0): the study cannot compare the arms on that subset", stacklevel=2)
    rng = random.Random(seed)
    chosen: list[Prediction] = []
    for bucket, count in wanted.items():
        chosen += rng.sample(pools[bucket], count)
    ids = [r.id for r in chosen]
    if len(set(ids)) != len(ids):
        raise StudyError(f"duplicate image id(s) in the predictions table: {sorted({i for i in ids if ids.count(i) > 1})}")
    rng.shuffle(chosen)
    return chosen


def class_options(row: Prediction, classes: list[str], rng: random.Random, n_options: int = CLASS_OPTIONS, fillers: str = "all") -> list[str]:
    """The `n_options` distinct classes offered for `row`, in a seeded random order.

    The model's top prediction, then other classes from the true labels (a random subset when there
    are too many), then random dataset classes when there are too few: with `fillers="all"` (the
    authors') any other class, M's other predicted classes included; with "unpredicted" none that M
    predicted for the image (unless the label space is too small).
    """
    if fillers not in FILLERS:
        raise StudyError(f"--fillers must be one of {', '.join(FILLERS)}, got {fillers!r}")
    if row.top_class not in classes:
        raise StudyError(f"image {row.id}: top_class {row.top_class!r} is not a dataset class")
    unknown = [name for name in row.labels if name not in classes]
    if unknown:
        raise StudyError(f"image {row.id}: label(s) {unknown} are not dataset classes")
    if len(set(classes)) < n_options:
        raise StudyError(f"{n_options} options per question need at least {n_options} classes, the dataset has {len(set(classes))}")
    others = sorted(set(row.labels) - {row.top_class})
    if len(others) > n_options - 1:
        others = rng.sample(others, n_options - 1)
    taken = {row.top_class, *others}
    excluded = set(row.predicted) if fillers == "unpredicted" else set()
    filler = [c for c in dict.fromkeys(classes) if c not in taken and c not in excluded]
    if len(filler) < n_options - len(taken):  # tiny label spaces: fall back to predicted classes
        filler += [c for c in dict.fromkeys(classes) if c not in taken and c not in filler]
    options = [row.top_class, *others, *rng.sample(filler, n_options - len(taken))]
    rng.shuffle(options)
    return options


def display_name(name: str) -> str:
    """A class name as participants read it: VOC's run-together names spelled out, underscores as spaces."""
    return DISPLAY_NAMES.get(name, name.replace("_", " "))


def question_options(row: Prediction, classes: list[str], rng: random.Random, n_options: int = CLASS_OPTIONS,
                     fillers: str = "all") -> tuple[list[dict], str]:  # fmt: skip
    """Options [{"id", "class", "label"}] (classes o1..oN, then "I just can't tell") and the key's option id."""
    names = class_options(row, classes, rng, n_options, fillers)
    options: list[dict] = [{"id": f"o{i + 1}", "class": name, "label": display_name(name)} for i, name in enumerate(names)]
    options.append({"id": CANT_TELL_ID, "class": None, "label": CANT_TELL_LABEL})
    answer = options[names.index(row.top_class)]["id"]
    return options, answer


def display_order(options: list[dict], rng: random.Random) -> list[str]:
    """Option ids in a random order for one participant; "I just can't tell" stays last."""
    ids = [o["id"] for o in options if o["id"] != CANT_TELL_ID]
    rng.shuffle(ids)
    return ids + [o["id"] for o in options if o["id"] == CANT_TELL_ID]
