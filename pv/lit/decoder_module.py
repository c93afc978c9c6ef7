"""Training the PV decoder: image -> frozen encoder -> latent -> decoder -> reconstruction."""
from __future__ import annotations

from typing import Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import OptimizerCallable
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from pv.lit.training_data import TRAINING_DATA_KEY, training_data_of
from pv.losses import PerceptionLoss
from pv.models import Decoder, FrozenEncoder


def default_optimizer(parameters) -> torch.optim.Optimizer:
    return torch.optim.Adam(parameters, lr=1e-3)


def image_metrics() -> MetricCollection:
    return MetricCollection({"ssim": StructuralSimilarityIndexMeasure(data_range=1.0), "psnr": PeakSignalNoiseRatio(data_range=1.0)})


class DecoderModule(pl.LightningModule):
    """Trains `decoder` to invert the frozen `encoder` with `loss` (default: the paper's `PerceptionLoss`).

    The loss receives the encoder in each call (for its DSIM term); the encoder is registered once,
    here. Speed: `channels_last` (NHWC convolutions; "auto": when the Trainer runs bf16), `compile`
    (torch.compile encoder and decoder in place, checkpoint keys unchanged); mixed precision is the
    Trainer's `precision: bf16-mixed` (CPU too). Batches may carry a precomputed `latent`
    (see `pv.data.CachedDataModule`). `lr_schedule="onecycle"`: warm-up to the optimizer's lr, then cosine
    annealing, stepped per batch over the whole fit (`OneCycleLR`). `resize_output`: the decoder may output fewer pixels than the
    images (a CPU-sized decoder, e.g. 112 px for 224 px images): MSE and SSIM compare it with the images
    area-resized to its size, DSIM and the val/test metrics see it bilinearly upsampled to the images'
    size, as `PerceptionVisualizer.reconstruct` shows it. Checkpoints record the encoder's config and fingerprint, and
    the training images (`pv_training_data`, read by `pv.models.checkpoint.training_data`).
    """

    def __init__(
        self,
        encoder: FrozenEncoder,
        decoder: Decoder,
        loss: PerceptionLoss | None = None,
        optimizer: OptimizerCallable = default_optimizer,
        channels_last: bool | Literal["auto"] = False,
        compile: bool = False,
        resize_output: bool = False,
        lr_schedule: Literal["constant", "onecycle"] = "constant",
    ):
        super().__init__()
        if lr_schedule not in ("constant", "onecycle"):
            raise ValueError(f"lr_schedule must be 'constant' or 'onecycle', got {lr_schedule!r}")
        if decoder.in_channels != encoder.out_channels:
            layer = encoder.config["layer"]
            raise ValueError(
                f"decoder.in_channels={decoder.in_channels} but the encoder's layer {layer!r} gives {encoder.out_channels} channels: "
                f"set --model.init_args.decoder.init_args.in_channels={encoder.out_channels} (pv fit links it when the config leaves it out)"
            )
        self.encoder = encoder
        self.decoder = decoder
        self.loss = loss if loss is not None else PerceptionLoss()
        self.optimizer = optimizer
        self.channels_last = channels_last
        self.resize_output = resize_output
        self.lr_schedule = lr_schedule
        self.metrics = nn.ModuleDict({stage: image_metrics() for stage in ("val", "test")})  # one set per stage
        if channels_last is True:
            self.to(memory_format=torch.channels_last)
        if compile:
            self.encoder.compile()
            self.decoder.compile()

    def setup(self, stage: str) -> None:
        if self.channels_last == "auto":
            self.channels_last = str(self.trainer.precision).startswith("bf16") or self.device.type == "cuda"
            if self.channels_last:
                self.to(memory_format=torch.channels_last)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        latent = self.encoder(images)  # (B, 3, H, W) -> (B, C, H/32, W/32)
        return self.decoder(latent)  # -> (B, 3, H, W)

    def _common_step(self, batch: dict, stage: str) -> torch.Tensor:
        images = batch["image"]
        if self.channels_last is True:
            images = images.contiguous(memory_format=torch.channels_last)
        latent = batch.get("latent")  # precomputed E(x) when the data module caches latents
        if latent is not None and self.channels_last is True:
            latent = latent.contiguous(memory_format=torch.channels_last)
        if latent is None:
            with torch.no_grad():
                latent = self.encoder(images)  # (B, C, h, w), no gradient needed for the target
        reconstruction = self.decoder(latent)  # (B, 3, H, W)
        if self.resize_output and reconstruction.shape[-2:] != images.shape[-2:]:
            return self._resized_step(reconstruction, images, latent, stage)
        if reconstruction.shape != images.shape:
            raise ValueError(
                f"Reconstruction {tuple(reconstruction.shape)} does not match images {tuple(images.shape)}: the decoder "
                f"upsamples x{self.decoder.upscale}, so images must be {self.decoder.upscale} x the latent size"
            )
        terms = self.loss(reconstruction, images, self.encoder, latent)
        logs = {f"{stage}/loss": terms.total, f"{stage}/mse": terms.mse, f"{stage}/ssim_loss": terms.ssim, f"{stage}/dsim": terms.dsim}
        if stage in self.metrics:
            metrics = self.metrics[stage]
            with torch.autocast(images.device.type, enabled=False):  # fp32 under bf16 autocast: SSIM's variances cancel in bf16
                metrics.update(reconstruction.float(), images.float())
            logs |= {f"{stage}/{name}": metric for name, metric in metrics.items()}
        self.log_dict(logs, prog_bar=stage == "train", on_step=stage == "train", on_epoch=True, batch_size=len(images), sync_dist=stage != "train")
        return terms.total

    def _resized_step(self, reconstruction: torch.Tensor, images: torch.Tensor, latent: torch.Tensor, stage: str) -> torch.Tensor:
        """`_common_step` for a decoder output (B, 3, h, w) smaller than the images (B, 3, H, W) (`resize_output`)."""
        targets = F.interpolate(images, size=reconstruction.shape[-2:], mode="area")  # (B, 3, h, w)
        upsampled = F.interpolate(reconstruction, size=images.shape[-2:], mode="bilinear", align_corners=False)  # (B, 3, H, W)
        terms = self.loss(reconstruction, targets, self.encoder, latent, encoder_input=upsampled)
        logs = {f"{stage}/loss": terms.total, f"{stage}/mse": terms.mse, f"{stage}/ssim_loss": terms.ssim, f"{stage}/dsim": terms.dsim}
        if stage in self.metrics:
            with torch.autocast(images.device.type, enabled=False):
                self.metrics[stage].update(upsampled.float().clamp(0, 1), images.float())
            logs |= {f"{stage}/{name}": metric for name, metric in self.metrics[stage].items()}
        self.log_dict(logs, prog_bar=stage == "train", on_step=stage == "train", on_epoch=True, batch_size=len(images), sync_dist=stage != "train")
        return terms.total

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._common_step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._common_step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._common_step(batch, "test")

    def predict_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self(batch["image"])

    def configure_optimizers(self) -> torch.optim.Optimizer | dict:
        optimizer = self.optimizer(self.decoder.parameters())
        if self.lr_schedule == "constant":
            return optimizer
        # one cycle (Smith 2018): 30% warm-up to the optimizer's lr, then cosine annealing, per step over the whole fit
        peak = [group["lr"] for group in optimizer.param_groups]
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=peak, total_steps=max(1, int(self.trainer.estimated_stepping_batches)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["encoder_config"] = self.encoder.config
        checkpoint["decoder_config"] = self.decoder.config
        fingerprint = getattr(self.encoder, "fingerprint", None)
        if callable(fingerprint):
            checkpoint["encoder_fingerprint"] = fingerprint()
        record = training_data_of(self)
        if record is not None:
            checkpoint[TRAINING_DATA_KEY] = record
