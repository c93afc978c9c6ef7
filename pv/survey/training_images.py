"""The study shows only images neither model learned from: question images against the checkpoints' training lists.

pv's decoder and classifier checkpoints record their training images (`pv_training_data`, read by
`pv.models.checkpoint.training_data`). A question image matches a record when it is the same file: for VOC
records (image ids) the same id in the same VOC year folder (`.../VOC2012/JPEGImages/<id>.jpg`), wherever the
dataset lies now; for image folders the same path under the record's root, or a path ending in the recorded one.
"""
from __future__ import annotations

import warnings
from pathlib import Path

from pv.models.checkpoint import training_data
from pv.survey.errors import StudyError
from pv.survey.questions import Prediction

ALLOW_FLAG = "--allow-training-images"


class TrainingImageError(StudyError):
    """A question image is one the decoder or the classifier was trained on."""


def _keys(record: dict) -> tuple[set[str], set[str]]:
    """(VOC keys "VOC2012/<id>", path keys) of a record's files."""
    files = record.get("files") or []
    if str(record.get("dataset", "")).startswith("VOC"):
        return {f"{record['dataset']}/{name}" for name in files}, set()
    root = Path(record.get("root") or ".")
    return set(), {str(root / name) for name in files} | set(files)


def _matches(path: str, voc_keys: set[str], path_keys: set[str]) -> bool:
    """Whether the question image at `path` is one of the record's files."""
    image = Path(path)
    if voc_keys and f"{image.parent.parent.name}/{image.stem}" in voc_keys:
        return True
    if not path_keys:
        return False
    resolved = str(image.resolve()) if image.exists() else str(image)
    return path in path_keys or resolved in path_keys or any(resolved.endswith("/" + key) for key in path_keys if not key.startswith("/"))


def check_training_images(rows: list[Prediction], checkpoints: dict[str, str | Path], allow: bool = False) -> dict:
    """Refuse (`TrainingImageError`, naming the first image and checkpoint) question images a checkpoint trained on,
    unless `allow`; return the manifest's record of the check. `checkpoints`: role ("decoder", "classifier") -> path.
    A checkpoint without a training record (saved before pv recorded them, or not by `pv fit`) is a warning."""
    report = {"images_checked": len(rows), "checkpoints": {}, "overlap": 0, "overlapping": [], "allowed": bool(allow)}
    overlapping: dict[str, list[str]] = {}
    for role, path in checkpoints.items():
        record = training_data(path)
        entry = {"path": str(Path(path).resolve()), "recorded": record is not None}
        if record is None:
            warnings.warn(f"{role} {path} records no training images (saved before pv recorded them, or not by pv fit): "
                          "cannot check that the study's images are new to it", stacklevel=3)  # fmt: skip
            report["checkpoints"][role] = entry
            continue
        voc_keys, path_keys = _keys(record)
        hits = [row for row in rows if _matches(row.path, voc_keys, path_keys)]
        entry |= {"dataset": record["dataset"], "split": record["split"], "n_images": record["n_images"],
                  "files_sha256": record["files_sha256"], "overlap": len(hits)}  # fmt: skip
        report["checkpoints"][role] = entry
        for row in hits:
            overlapping.setdefault(row.id, []).append(role)
        if hits and not allow:
            first = hits[0]
            raise TrainingImageError(
                f"question image {first.id} ({first.path}) is one of the {record['n_images']} images the {role} {path} was trained on "
                f"({len(hits)} of the {len(rows)} question images are): build the study from images neither model saw (pv analyze "
                f"defaults to the held-out split for the paper's configs), or pass {ALLOW_FLAG}"
            )
    report["overlap"], report["overlapping"] = len(overlapping), sorted(overlapping)
    if overlapping:
        warnings.warn(f"{len(overlapping)} question image(s) were trained on, allowed by {ALLOW_FLAG}: {', '.join(sorted(overlapping))}", stacklevel=3)
    return report
