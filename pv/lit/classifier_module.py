"""Fine-tuning the classifier M that PV explains: multi-label BCE, mAP / AP / F1 from torchmetrics."""
from __future__ import annotations

import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import OptimizerCallable
from torch import nn
from torchmetrics.classification import MultilabelAveragePrecision, MultilabelF1Score, MultilabelStatScores

from pv.lit.training_data import TRAINING_DATA_KEY, training_data_of
from pv.models import Classifier


def default_optimizer(parameters) -> torch.optim.Optimizer:
    return torch.optim.Adam(parameters, lr=1e-4)


def check_threshold(threshold: float, name: str = "threshold") -> float:
    """The decision threshold on sigmoid probabilities must lie strictly inside (0, 1)."""
    if not 0 < threshold < 1:
        raise ValueError(f"{name} must be in (0, 1), got {threshold}")
    return float(threshold)


class MultilabelMetrics(nn.Module):
    """Epoch metrics for multi-label probabilities (B, C) against multi-hot targets (B, C).

    `compute()` gives per-class AP and F1 (at `threshold`) from torchmetrics, and their macro means over
    the classes that have at least one positive image (as VOC's evaluation does: a class absent from
    a split has no defined AP, and torchmetrics would count it as 0).
    """

    def __init__(self, num_classes: int, threshold: float = 0.5):
        super().__init__()
        self.ap = MultilabelAveragePrecision(num_classes, average=None)
        self.f1 = MultilabelF1Score(num_classes, threshold=threshold, average=None)
        self.stats = MultilabelStatScores(num_classes, threshold=threshold, average=None)

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        # probs (B, C) in [0, 1] (not logits: torchmetrics only applies sigmoid to values outside [0, 1])
        target = target.long()
        self.ap.update(probs, target)
        self.f1.update(probs, target)
        self.stats.update(probs, target)

    def compute(self) -> dict[str, torch.Tensor]:
        """{"map", "f1": scalars; "ap", "f1_class", "support": (C,)}; NaN maps when no class has a positive."""
        ap, f1 = self.ap.compute(), self.f1.compute()  # (C,), (C,)
        support = self.stats.compute()[:, 4]  # (C,) positives per class; columns are tp, fp, tn, fn, support
        present = support > 0
        nan = torch.tensor(float("nan"), device=ap.device)
        return {
            "map": ap[present].mean() if present.any() else nan,
            "f1": f1[present].mean() if present.any() else nan,
            "ap": ap,
            "f1_class": f1,
            "support": support,
        }

    def reset(self) -> None:
        self.ap.reset()
        self.f1.reset()
        self.stats.reset()


class ClassifierModule(pl.LightningModule):
    """Fine-tunes `model` (a `pv.models.Classifier`) for multi-label classification with BCE.

    The backbone (`model.trunk`) can stay frozen, BatchNorm included, for the first
    `freeze_backbone_epochs` epochs while the new head settles. Checkpoints carry
    `classifier_config`, so `Classifier.from_checkpoint` and `FrozenEncoder(checkpoint=...)` read them, and the
    training images (`pv_training_data`, read by `pv.models.checkpoint.training_data`).
    """

    def __init__(
        self,
        model: Classifier,
        threshold: float = 0.5,
        freeze_backbone_epochs: int = 0,
        optimizer: OptimizerCallable = default_optimizer,
    ):
        super().__init__()
        if freeze_backbone_epochs < 0:
            raise ValueError(f"freeze_backbone_epochs must be >= 0, got {freeze_backbone_epochs}")
        self.save_hyperparameters(ignore=["model", "optimizer"])
        self.model = model
        self.threshold = check_threshold(threshold)
        self.freeze_backbone_epochs = freeze_backbone_epochs
        self.optimizer = optimizer
        self.loss = nn.BCEWithLogitsLoss()
        self.metrics = nn.ModuleDict({stage: MultilabelMetrics(model.num_classes, self.threshold) for stage in ("val", "test")})
        self.backbone_frozen = False
        self._seen_size: int | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)  # (B, 3, H, W) -> logits (B, C)

    def set_backbone_frozen(self, frozen: bool) -> None:
        """Freeze (no grad, BatchNorm statistics fixed) or release `model.trunk`."""
        self.backbone_frozen = frozen
        self.model.trunk.requires_grad_(not frozen)
        if frozen:
            self.model.trunk.eval()
        elif self.training:
            self.model.trunk.train()

    def train(self, mode: bool = True) -> "ClassifierModule":
        """A frozen trunk stays in eval mode whoever calls `.train()` (a callback, user code, older Lightning)."""
        super().train(mode)
        if self.backbone_frozen:
            self.model.trunk.eval()
        return self

    def on_train_epoch_start(self) -> None:
        self.set_backbone_frozen(self.current_epoch < self.freeze_backbone_epochs)

    def _common_step(self, batch: dict, stage: str) -> torch.Tensor:
        images, target = batch["image"], batch["label"]  # (B, 3, H, W), (B, C) multi-hot
        if target.shape[1] != self.model.num_classes:
            raise ValueError(f"Labels have {target.shape[1]} classes but the classifier has {self.model.num_classes}")
        self._seen_size = int(images.shape[-1])
        logits = self(images).float()  # (B, C)
        loss = self.loss(logits, target.float())
        self.log(f"{stage}/loss", loss, prog_bar=stage == "train", on_step=stage == "train", on_epoch=True, batch_size=len(images), sync_dist=stage != "train")
        if stage in self.metrics:
            self.metrics[stage].update(torch.sigmoid(logits), target)
        return loss

    def _log_epoch_metrics(self, stage: str) -> None:
        values = self.metrics[stage].compute()
        self.metrics[stage].reset()
        self.log(f"{stage}/map", values["map"], prog_bar=True)
        logs = {f"{stage}/f1": values["f1"]}
        for name, ap, f1, support in zip(self.model.class_names, values["ap"], values["f1_class"], values["support"]):
            if support > 0:  # AP is undefined for a class with no positive image in this split
                logs |= {f"{stage}/ap/{name}": ap, f"{stage}/f1/{name}": f1}
        self.log_dict(logs)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._common_step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._common_step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._common_step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def predict_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return torch.sigmoid(self(batch["image"]))  # (B, C) probabilities

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # All parameters: while the trunk is frozen its gradients are None and optimizers skip it.
        return self.optimizer(self.model.parameters())

    def input_size(self) -> int | None:
        """Pixels the classifier is trained at: the data module's `image_size`, else the last batch's width."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        return getattr(datamodule, "image_size", None) or self._seen_size

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """`classifier_config`: arch, num_classes, class_names, activation ("sigmoid": multi-label BCE), input_size."""
        config = dict(self.model.config, activation="sigmoid")
        size = self.input_size()
        if size is not None:
            config["input_size"] = int(size)
        checkpoint["classifier_config"] = config
        record = training_data_of(self)
        if record is not None:
            checkpoint[TRAINING_DATA_KEY] = record
