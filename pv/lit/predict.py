"""Model work over many images through `Trainer.predict`: one job spread over devices and machines
(`--devices N --strategy ddp --num_nodes M`), resumable, with per-rank shards merged into one index.

A command gives:
- `step(images, items) -> payloads`: the model work for a batch of readable images (on the module's device),
  one payload (CPU tensors) per item;
- `finish(item, payload) -> dict`: writes that image's files (atomically) and returns its record fields
  (`files`: name -> path under the output folder, plus anything the merged index should hold).
`run_images` skips what the output folder already holds (`pv.data.results.ResultStore`), predicts the rest,
and each rank's `ShardWriter` writes one shard per batch; rank 0 then merges (the command does that).

Precision: the Trainer stays at 32-true (fp32 weights, no global autocast). Each model is prepared on the rank's
device for `Devices.precision` (`pv.models.precision.prepare_model`: channels_last where that is faster), and the
command's `step` wraps each model call in `pv.models.precision.autocast` with that call's precision (a method
that fails its bf16 guard stays fp32 while the others run in bf16). Payloads come back in fp32 (`to_cpu`).
"""
from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter, Callback
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from pv.data.batches import ImageItemsDataset, collate_items
from pv.data.results import ImageItem, ResultStore, run_token
from pv.models.precision import prepare_model

Step = Callable[[torch.Tensor, list[dict]], list[dict]]
Finish = Callable[[dict, dict], dict]


def is_main_process() -> bool:
    """True unless this process is a DDP child or on another node (Lightning sets LOCAL_RANK / NODE_RANK there)."""
    return all(os.environ.get(name, "0") == "0" for name in ("LOCAL_RANK", "NODE_RANK", "GROUP_RANK"))


class ImageJob(pl.LightningModule):
    """Holds the job's models (so Lightning puts them on the rank's device) and runs `step` on each batch."""

    def __init__(self, step: Step, models: dict[str, nn.Module], precision: str = "32"):
        super().__init__()
        self.models = nn.ModuleDict(models)
        self.step, self.precision = step, precision

    def on_predict_start(self) -> None:
        """The models are on the rank's device now: eval mode, channels_last where faster for `precision`."""
        for model in self.models.values():
            prepare_model(model, self.precision, self.device)

    def predict_step(self, batch: dict, batch_idx: int) -> list[dict]:
        readable = [item for item in batch["items"] if item["error"] is None]
        if not readable:
            return []
        payloads = self.step(batch["images"], readable)  # images (B', 3, S, S) -> one payload per readable item
        return [to_cpu(payload) for payload in payloads]


def to_cpu(value):
    """Tensors (also inside dicts / lists) detached, on the CPU and cloned: each holds only its own storage.
    bf16 / fp16 tensors (from autocast) become fp32: everything a command writes is at least fp32."""
    if torch.is_tensor(value):
        value = value.detach().to("cpu", copy=True)
        if value.is_floating_point() and torch.finfo(value.dtype).bits < 32:
            value = value.float()
        return value.clone(memory_format=torch.contiguous_format)
    if isinstance(value, dict):
        return {key: to_cpu(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_cpu(item) for item in value)
    return value


class ShardWriter(BasePredictionWriter):
    """Each rank finishes its images (files written atomically) and writes one shard per batch."""

    def __init__(self, store: ResultStore, finish: Finish):
        super().__init__(write_interval="batch")
        self.store, self.finish, self.token = store, finish, run_token()

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0) -> None:
        payloads = iter(prediction)
        records = []
        for item in batch["items"]:
            base = {"key": item["key"], "path": item["path"], "sha256": item["sha256"]}
            if item["error"] is not None:
                records.append(base | {"status": "unreadable", "error": item["error"], "files": {}})
            else:
                records.append(base | {"status": "ok"} | self.finish(item, next(payloads)))
        self.store.write_shard(trainer.global_rank, batch_idx, records, self.token)

    def on_predict_epoch_end(self, trainer, pl_module) -> None:
        trainer.strategy.barrier("pv-shards-written")  # rank 0 merges only once every rank has written


class ImagesProgress(Callback):
    """One bar on rank 0 for the whole job, in images (all ranks; the others' share is estimated) with images/s."""

    def __init__(self, total: int, description: str):
        self.total, self.description, self.bar = total, description, None

    def on_predict_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self.bar = tqdm(total=self.total, desc=self.description, unit="img", dynamic_ncols=True)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self.bar is not None:
            self.bar.update(min(len(batch["items"]) * trainer.world_size, self.total - self.bar.n))

    def on_predict_end(self, trainer, pl_module) -> None:
        if self.bar is not None:
            self.bar.close()


@dataclass
class Devices:
    """Where the job runs (Lightning Trainer arguments) and the precision its models are prepared for
    ("32" or "bf16": the memory format; the step autocasts, the Trainer itself stays 32-true)."""

    accelerator: str = "auto"
    devices: int | str | list[int] = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32"


@contextlib.contextmanager
def quiet_lightning():
    """Lightning's start-up lines ("GPU available ...") and its few-workers hint are noise for these commands."""
    logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*predict_dataloader.*")
            yield
    finally:
        logger.setLevel(level)


@dataclass
class JobResult:
    """What a job did: whether this process merges (global rank 0), and how many images were done before it."""

    main: bool
    resumed: int
    computed: int


def run_images(
    store: ResultStore,
    items: Sequence[ImageItem],
    transform,
    step: Step,
    finish: Finish,
    models: dict[str, nn.Module],
    where: Devices,
    *,
    batch_size: int,
    num_workers: int = 0,
    description: str = "images",
) -> JobResult:
    """Predict every item the output folder does not already hold; returns who merges and what was skipped."""
    done, todo = store.split_done(items)
    main = is_main_process()
    if done and main:
        tqdm.write(f"{description}: resuming, {len(done)} of {len(items)} image(s) already done in {store.out}")
    if not todo:
        return JobResult(main, len(done), 0)
    loader = DataLoader(
        ImageItemsDataset(todo, transform), batch_size=batch_size, shuffle=False, num_workers=num_workers,
        collate_fn=collate_items, persistent_workers=False,
    )  # fmt: skip
    with quiet_lightning():
        trainer = pl.Trainer(
            accelerator=where.accelerator, devices=where.devices, strategy=where.strategy, num_nodes=where.num_nodes,
            logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
            inference_mode=False, default_root_dir=str(store.out), use_distributed_sampler=True,
            callbacks=[ShardWriter(store, finish), ImagesProgress(len(todo), description)], precision="32-true",
        )  # fmt: skip
        trainer.predict(ImageJob(step, models, where.precision), loader, return_predictions=False)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()  # every rank has written (barrier): rank 0 merges alone
    return JobResult(trainer.is_global_zero, len(done), len(todo))
