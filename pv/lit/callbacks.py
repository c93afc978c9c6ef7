"""Callbacks that turn training into pictures: reconstruction grids each epoch, a PV figure at the end."""
from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only
from torchvision.utils import make_grid, save_image

from pv.explain import class_activation_maps, normalize_maps, perception_visualization, upsample_maps


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


class ReconstructionGrid(pl.Callback):
    """After each validation epoch: a grid (row of inputs, row of reconstructions) as PNG and to the logger."""

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
        grid = make_grid(torch.cat([images, reconstructions]).cpu(), nrow=len(images), padding=2, pad_value=1.0)
        path = output_dir(trainer) / "reconstructions" / f"epoch_{trainer.current_epoch:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(grid, path)
        caption = "top: input, bottom: reconstruction"
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key="val/reconstructions", images=[grid], caption=[caption], step=trainer.global_step)
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("val/reconstructions", grid, trainer.global_step)


class PVFigure(pl.Callback):
    """At the end of training: rows input | reconstruction | saliency | PV for a few validation images.

    Saliency is Grad-CAM of the encoder's own classifier for its top class (closed-form CAM: the
    encoder must end at the classifier's last feature layer); otherwise the latent's mean activation.
    """

    def __init__(self, path: str | None = None, num_images: int = 4):
        self.path = path
        self.num_images = num_images

    @rank_zero_only
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        images = first_val_images(trainer, self.num_images)
        if images is None:
            return
        path = Path(self.path) if self.path else output_dir(trainer) / "pv_figure.png"
        figure = pv_rows(pl_module, images.to(pl_module.device))
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(make_grid(figure, nrow=len(images), padding=2, pad_value=1.0), path)
        print(f"PV figure (rows: input, reconstruction, saliency, PV) written to {path}")


@torch.no_grad()
def pv_rows(module: pl.LightningModule, images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (4B, 3, H, W): inputs, reconstructions, saliency maps (gray), PVs."""
    latent = module.encoder(images)  # (B, C, h, w)
    reconstruction = module.decoder(latent).float()  # (B, 3, H, W)
    head = module.encoder.head
    if head is not None:
        top_class = head(latent.mean(dim=(2, 3))).argmax(dim=1)  # (B,)
        maps = class_activation_maps(latent.float(), head.weight.float())  # (B, K, h, w)
        maps = maps[torch.arange(len(images)), top_class].unsqueeze(1)  # (B, 1, h, w)
    else:
        maps = latent.float().mean(dim=1, keepdim=True)
    saliency = upsample_maps(normalize_maps(maps), tuple(images.shape[-2:]))  # (B, 1, H, W)
    pv = perception_visualization(reconstruction, saliency)
    return torch.cat([images.float(), reconstruction, saliency.expand_as(images), pv]).cpu()
