"""`--logger wandb` for the per-image commands: one `wandb.Table` row per image plus summary metrics.

Offline by default, as for training (`WANDB_MODE=online` to sync live); the run lands in OUT/wandb/.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np


def log_table(
    out: str | Path, *, project: str, name: str, columns: Sequence[str], rows: Iterable[Sequence], summary: dict, config: dict
) -> Path:
    """Log `rows` (uint8 HWC arrays become images; None stays empty) as the table "images", and `summary`;
    returns the run's folder."""
    os.environ.setdefault("WANDB_MODE", "offline")  # no account needed; WANDB_MODE=online to sync
    import wandb

    run = wandb.init(project=project, name=name, dir=str(out), config=config, job_type=name, settings=wandb.Settings(silent=True))
    try:
        table = wandb.Table(columns=list(columns))
        for row in rows:
            table.add_data(*(wandb.Image(v) if isinstance(v, np.ndarray) else v for v in row))
        run.log({"images": table})
        artifact = wandb.Artifact(f"{name}-images", type="pv-results")  # the table with its image files, for download
        artifact.add(table, "images")
        run.log_artifact(artifact)
        run.summary.update({key: value for key, value in summary.items() if isinstance(value, (int, float, str))})
        folder = Path(run.dir).parent
    finally:
        run.finish()
    return folder
