"""Callbacks that turn training into pictures: reconstruction grids each epoch, a PV figure at the end.

Every picture is saved as a PNG with row titles and sent to loggers as uint8 height x width x 3
(W&B writes float tensors as black images).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image, ImageDraw, ImageFont
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger
from pytorch_lightning.utilities import rank_zero_info, rank_zero_only
from torchvision.utils import make_grid

from pv.atomic import atomic_path
from pv.explain import PerceptionVisualizer


def output_dir(trainer: pl.Trainer) -> Path:
    """The run's folder: the logger's log_dir when there is one, else default_root_dir."""
    return Path(trainer.log_dir or trainer.default_root_dir)


def first_val_images(trainer: pl.Trainer, count: int) -> torch.Tensor | None:
    """The first `count` validation images (B, 3, H, W) on CPU, or None without validation data."""
    loaders = trainer.val_dataloaders
    if loaders is None:
        return None
    loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
    images = []
    for batch in loader:
        images.append(batch["image"])
        if sum(len(i) for i in images) >= count:
            break
    return torch.cat(images)[:count] if images else None


def to_uint8_hwc(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) uint8, the form every logger writes correctly."""
    return (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def titled_rows(rows: list[torch.Tensor], titles: list[str], padding: int = 2) -> np.ndarray:
    """Rows of images (each (N, 3, H, W) in [0, 1]) -> one (H', W', 3) uint8 picture, each row titled on its left."""
    grid = make_grid(torch.cat([r.float().cpu() for r in rows]), nrow=len(rows[0]), padding=padding, pad_value=1.0)
    picture = Image.fromarray(to_uint8_hwc(grid))
    font = ImageFont.load_default()
    draw = ImageDraw.Draw(picture)
    margin = 8 + max(int(draw.textlength(title, font=font)) for title in titles)
    canvas = Image.new("RGB", (picture.width + margin, picture.height), "white")
    canvas.paste(picture, (margin, 0))
    draw = ImageDraw.Draw(canvas)
    row_height = rows[0].shape[-2] + padding
    for index, title in enumerate(titles):
        draw.text((4, padding + index * row_height + rows[0].shape[-2] // 2 - 5), title, fill="black", font=font)
    return np.asarray(canvas)


def save_png(picture: np.ndarray, path: Path) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(picture).save(tmp, format="PNG")


def log_picture(trainer: pl.Trainer, key: str, picture: np.ndarray, caption: str) -> None:
    """Send a uint8 (H, W, 3) picture to every image-capable logger."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[picture], caption=[caption], step=trainer.global_step)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, picture, trainer.global_step, dataformats="HWC")


class ReconstructionGrid(pl.Callback):
    """After each validation epoch: rows input | reconstruction as a titled PNG and to the logger."""

    def __init__(self, num_images: int = 8, every_n_epochs: int = 1):
        self.num_images = num_images
        self.every_n_epochs = every_n_epochs
        self._images: torch.Tensor | None = None

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.current_epoch % self.every_n_epochs:
            return
        if self._images is None:
            self._images = first_val_images(trainer, self.num_images)
        if self._images is None:
            return
        images = self._images.to(pl_module.device)
        with torch.no_grad():
            reconstructions = pl_module(images).float()
        picture = titled_rows([images, reconstructions], ["input", "reconstruction"])
        save_png(picture, output_dir(trainer) / "reconstructions" / f"epoch_{trainer.current_epoch:04d}.png")
        log_picture(trainer, "val/reconstructions", picture, f"epoch {trainer.current_epoch}: top input, bottom reconstruction")


class PVFigure(pl.Callback):
    """At the end of training: rows input | reconstruction | saliency | PV for a few validation images.

    Saliency is Grad-CAM for the top class of `classifier` (a pv classifier checkpoint) when given,
    else of the encoder's own classifier (the latent's mean activation when the encoder has no head).
    A classifier whose encoder is not the one the decoder inverts is refused (its fingerprint differs)
    unless `allow_encoder_mismatch`.
    """

    ROWS = ("input", "reconstruction", "saliency", "PV")

    def __init__(self, path: str | None = None, num_images: int = 4, classifier: str | None = None, allow_encoder_mismatch: bool = False):
        self.path = path
        self.num_images = num_images
        self.classifier = classifier
        self.allow_encoder_mismatch = allow_encoder_mismatch

    def visualizer(self, pl_module: pl.LightningModule) -> PerceptionVisualizer:
        if self.classifier is None:
            return PerceptionVisualizer.from_encoder(pl_module.encoder, pl_module.decoder)
        from pv.models import Classifier

        classifier = Classifier.from_checkpoint(self.classifier).to(pl_module.device).eval()
        encoder_config = dict(pl_module.encoder.config, fingerprint=pl_module.encoder.fingerprint())
        return PerceptionVisualizer(classifier, pl_module.decoder, encoder_config=encoder_config, decoder_name="the decoder being trained",
                                    classifier_name=self.classifier, allow_encoder_mismatch=self.allow_encoder_mismatch)  # fmt: skip

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.classifier is not None:
            self.visualizer(pl_module)  # refuse a mismatched classifier before training, not after

    @rank_zero_only
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        images = first_val_images(trainer, self.num_images)
        if images is None:
            return
        path = Path(self.path) if self.path else output_dir(trainer) / "pv_figure.png"
        rows = pv_rows(self.visualizer(pl_module), images.to(pl_module.device))
        picture = titled_rows(rows, list(self.ROWS))
        save_png(picture, path)
        log_picture(trainer, "pv_figure", picture, "rows: input, reconstruction, saliency, PV")
        rank_zero_info(f"PV figure (rows: input, reconstruction, saliency, PV) written to {path}")


def pv_rows(visualizer: PerceptionVisualizer, images: torch.Tensor) -> list[torch.Tensor]:
    """(B, 3, H, W) -> [inputs, reconstructions, saliency (gray), PVs], each (B, 3, H, W), for the top class."""
    was_training = visualizer.decoder.training
    visualizer.decoder.eval()
    with torch.enable_grad():
        with torch.no_grad():
            logits = visualizer.classifier(images)
        top = logits.argmax(dim=1) if logits.dim() == 2 else torch.zeros(len(images), dtype=torch.long, device=images.device)
        out = visualizer(images, top)
    visualizer.decoder.train(was_training)
    saliency = out["saliency"][:, 0].float()  # (B, 1, H, W)
    return [images.float(), out["reconstruction"].float(), saliency.expand_as(images), out["pv"][:, 0].float()]
