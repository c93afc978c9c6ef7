"""What a run trains on, recorded in its checkpoints under `pv_training_data` (read by `pv.models.checkpoint.training_data`)."""
from __future__ import annotations

import pytorch_lightning as pl

from pv.data.datamodules import describe_training_data
from pv.models.checkpoint import TRAINING_DATA_KEY

__all__ = ["TRAINING_DATA_KEY", "training_data_of"]


def training_data_of(module: pl.LightningModule) -> dict | None:
    """The record of the trainer's data module (computed once per data module), or None without one pv can describe."""
    trainer = module._trainer
    datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
    if datamodule is None:
        return None
    record = getattr(datamodule, "_pv_training_data", None)
    if record is None:
        record = describe_training_data(datamodule)
        datamodule._pv_training_data = record
    return record
