"""Classifier fixtures: tiny random-init ResNet-18s, synthetic labelled batches, and checkpoints."""
from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from pv import ClassifierModule
from pv.data import VOC_CLASSES
from pv.models import Classifier

REPO = Path(__file__).resolve().parents[2]
SIZE = 32


def tiny_classifier(num_classes: int = 20) -> Classifier:
    names = list(VOC_CLASSES) if num_classes == 20 else [f"class{i}" for i in range(num_classes)]
    return Classifier("resnet18", num_classes=num_classes, weights=None, class_names=names)


class LabelledNoise(Dataset):
    """Seeded random images (3, SIZE, SIZE) in [0, 1] with random multi-hot labels (at least one positive)."""

    def __init__(self, count: int = 8, num_classes: int = 20, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.images = torch.rand(count, 3, SIZE, SIZE, generator=generator)
        self.labels = (torch.rand(count, num_classes, generator=generator) < 0.15).float()
        self.labels[torch.arange(count), torch.arange(count) % num_classes] = 1

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        return {"image": self.images[index], "path": f"noise_{index}.png", "label": self.labels[index]}


def noise_loader(count: int = 8, batch_size: int = 4, seed: int = 0) -> DataLoader:
    return DataLoader(LabelledNoise(count, seed=seed), batch_size=batch_size)


def tiny_trainer(root: Path, **kwargs) -> pl.Trainer:
    options = dict(default_root_dir=root, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)  # fmt: skip
    return pl.Trainer(**(options | kwargs))


def save_untrained_checkpoint(module: ClassifierModule, path: Path) -> Path:
    """A checkpoint in the module's own format (state_dict + on_save_checkpoint), without a Trainer."""
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    return path


@pytest.fixture(scope="package", autouse=True)
def one_thread():
    """One intra-op thread: on a small shared CPU, two threads spin-wait and run ~10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory) -> Path:
    """A ResNet-18 ClassifierModule trained one step by a Lightning Trainer on noise, saved by the Trainer."""
    root = tmp_path_factory.mktemp("trained")
    pl.seed_everything(0)
    module = ClassifierModule(tiny_classifier())
    trainer = tiny_trainer(root, max_epochs=1, limit_train_batches=1, limit_val_batches=1)
    trainer.fit(module, noise_loader(), noise_loader(seed=1))
    path = root / "classifier.ckpt"
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="session")
def fit_run(tmp_path_factory, voc_root: Path) -> Path:
    """`pv fit --config configs/debug/classifier.yaml` in-process on the shared VOC devkit; its run folder."""
    from pv.cli import main

    root = tmp_path_factory.mktemp("fit")
    config = REPO / "configs" / "debug" / "classifier.yaml"
    status = main(["fit", "--config", str(config), "--trainer.default_root_dir", str(root), "--data.init_args.root", str(voc_root)])
    assert status == 0
    return root
