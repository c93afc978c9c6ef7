"""Reading checkpoint files without running code from them.

Every checkpoint pv opens goes through `load_checkpoint`, which calls `torch.load(weights_only=True)`:
the unpickler rebuilds tensors, containers and numbers only, so a file whose pickle names any other
callable (`os.system`, a class with a malicious `__reduce__`) is refused before anything runs.
`pv.models.loading` re-exports it; this module sits at the bottom of `pv.models` so that
`Classifier` and `load_decoder` can use it without an import cycle.
"""
from __future__ import annotations

import hashlib
import pickle
import re
import zipfile
from pathlib import Path

import torch

from pv.errors import CheckpointError


def safe_globals() -> list:
    """Non-tensor types pv's own checkpoints may hold besides containers and numbers: NumPy arrays and
    dtypes (random-number-generator states saved for exact resume). Nothing here can run code."""
    import numpy as np

    dtype_classes = [type(np.dtype(name)) for name in ("uint32", "int64", "float32", "float64", "bool")]
    return [np._core.multiarray._reconstruct, np._core.multiarray.scalar, np.ndarray, np.dtype, *dtype_classes]


def load_checkpoint(path: str | Path, map_location="cpu", *, require_state_dict: bool = True) -> dict:
    """`torch.load(path, weights_only=True)` -> the checkpoint dict.

    Raises `CheckpointError` (one line naming the file and why) when the file is missing, is not a
    torch file, is truncated, holds objects that could run code, or (with `require_state_dict`) is not
    a Lightning checkpoint. A folder written by `pv export`, or its Hub id ("user/name"), is read by
    `pv.models.hub.as_checkpoint` (safetensors and JSON: no pickle) as the dict of the checkpoint it came from.
    """
    from pv.models.hub import as_checkpoint, is_shared

    if is_shared(path):
        return as_checkpoint(path, map_location)
    path = Path(path)
    if not path.is_file():
        reason = "is a folder, not a file (nor a folder written by pv export: no config.json)" if path.is_dir() else "does not exist"
        raise CheckpointError(f"Checkpoint {path} {reason}")
    try:
        with torch.serialization.safe_globals(safe_globals()):
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+)", str(err))
        if found is None:
            raise CheckpointError(f"Cannot read checkpoint {path}: not a torch checkpoint, or a damaged one ({_first_line(err)})") from None
        raise CheckpointError(
            f"Refused to load checkpoint {path}: it names {found.group(1)}, which loading with weights_only=True does not "
            f"allow (it could run code); only tensors, numbers, strings and containers are read"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as err:
        raise CheckpointError(f"Cannot read checkpoint {path}: not a torch checkpoint, or a truncated one ({_first_line(err)})") from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path} is not a pv checkpoint: it holds a {type(checkpoint).__name__}, not a dict")
    if require_state_dict and "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no 'state_dict'); give a checkpoint written by pv fit")
    return checkpoint



TRAINING_DATA_KEY = "pv_training_data"  # what a decoder or classifier checkpoint was trained on


def files_sha256(files: list[str]) -> str:
    """sha256 (hex) of the training file list: the UTF-8 of the names joined by newlines, in training order."""
    return hashlib.sha256("\n".join(files).encode("utf-8")).hexdigest()


def training_record(dataset: str, root: str | Path, split: str, seed: int | None, files: list[str]) -> dict:
    """The `pv_training_data` entry: {"dataset", "root", "split", "seed", "n_images", "files_sha256", "files"}.

    `files`: image paths relative to `root` (POSIX), or VOC ids, in the order the data module lists them.
    """
    files = [str(name) for name in files]
    return {"dataset": dataset, "root": str(Path(root).resolve()) if root else "", "split": split, "seed": seed,
            "n_images": len(files), "files_sha256": files_sha256(files), "files": files}  # fmt: skip


def training_data(path: str | Path) -> dict | None:
    """The `pv_training_data` record of a pv checkpoint (see `training_record`), None for a checkpoint without one.

    Raises `CheckpointError` when the record's file list does not match its digest or count.
    """
    record = load_checkpoint(path, require_state_dict=False).get(TRAINING_DATA_KEY)
    if record is None:
        return None
    files = list(record.get("files") or [])
    if record.get("files_sha256") != files_sha256(files) or record.get("n_images") != len(files):
        raise CheckpointError(f"{path}: its {TRAINING_DATA_KEY} file list does not match its files_sha256 / n_images (edited or damaged)")
    return dict(record)


def _first_line(err: BaseException) -> str:
    """The informative part of torch's multi-paragraph load errors, on one line."""
    text = str(err)
    found = re.search(r"WeightsUnpickler error: *([^\n]+)", text)
    if found and found.group(1).strip():
        return found.group(1).strip()[:200]
    skip = ("Weights only load failed", "Please file", "WeightsUnpickler error")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith(skip)]
    return (lines or [type(err).__name__])[0][:200]
