"""Reading checkpoint files without running code from them.

Every checkpoint pv opens goes through `load_checkpoint`, which calls `torch.load(weights_only=True)`:
the unpickler rebuilds tensors, containers and numbers only, so a file whose pickle names any other
callable (`os.system`, a class with a malicious `__reduce__`) is refused before anything runs.
`pv.models.loading` re-exports it; this module sits at the bottom of `pv.models` so that
`Classifier` and `load_decoder` can use it without an import cycle.
"""
from __future__ import annotations

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
    a Lightning checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        reason = "is a folder, not a file" if path.is_dir() else "does not exist"
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



def _first_line(err: BaseException) -> str:
    """The informative part of torch's multi-paragraph load errors, on one line."""
    text = str(err)
    found = re.search(r"WeightsUnpickler error: *([^\n]+)", text)
    if found and found.group(1).strip():
        return found.group(1).strip()[:200]
    skip = ("Weights only load failed", "Please file", "WeightsUnpickler error")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith(skip)]
    return (lines or [type(err).__name__])[0][:200]
