"""LightningDataModules: VOC, any image folder, and the embedded quickstart photos."""
from __future__ import annotations

from typing import Literal

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from pv.data.datasets import QUICKSTART_IMAGES, VOC_CLASSES, QuickstartDataset, image_folder, voc_dataset
from pv.data.sampling import EpochShuffle, SeededSamples
from pv.data.transforms import ImageTransform
from pv.errors import ConfigError


def seeded_split(length: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A seeded random split of range(length) into (kept, held_out) with round(length * fraction) held out."""
    held = int(round(length * fraction))
    order = torch.randperm(length, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[held:]), sorted(order[:held])


class ImageDataModule(pl.LightningDataModule):
    """Shared loader settings; subclasses say how to build the train and val datasets.

    `resize="whole"` (default) resizes whole images to `image_size` squares, as the authors did;
    `"crop"` resizes the short side and crops. Training order and augmentation depend only on
    (`seed`, epoch), so a resumed run sees the batches an uninterrupted one would.
    """

    def __init__(self, image_size: int = 224, batch_size: int = 32, num_workers: int = 0, flip: bool = True, random_crop: bool = True,
                 resize_scale: float = 1.0, resize: Literal["whole", "crop"] = "whole", seed: int = 0):  # fmt: skip
        super().__init__()
        self.image_size = image_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.train_transform = ImageTransform(image_size, train=True, random_crop=random_crop, flip=flip, resize_scale=resize_scale, resize=resize)
        self.eval_transform = ImageTransform(image_size, train=False, resize_scale=resize_scale, resize=resize)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    def build(self, stage: str) -> tuple[Dataset, Dataset]:
        raise NotImplementedError

    def setup(self, stage: str = "fit") -> None:
        if self.train_set is None:
            self.train_set, self.val_set = self.build(stage)

    def current_epoch(self) -> int:
        """The epoch the trainer is about to run (restored when resuming), 0 without a trainer."""
        if self.trainer is None:
            return 0
        return self.trainer.fit_loop.epoch_progress.current.processed

    def _loader(self, dataset: Dataset, sampler=None) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, pin_memory=torch.cuda.is_available())  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        sampler = EpochShuffle(len(self.train_set), self.seed, epoch=self.current_epoch())
        return self._loader(SeededSamples(self.train_set), sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        return self.val_dataloader()


class VOCDataModule(ImageDataModule):
    """PASCAL VOC (torchvision layout under `root`), with 20-class multi-hot labels.

    `val_fraction` (e.g. 0.3, the authors' 70/30 split of trainval) splits `train_split` itself with
    `split_seed`, and `val_split` is not used. `class_names`: the annotations' object names in label
    order (VOC's 20 by default, e.g. the generated world's 10); `pv fit` links them (and their count)
    into a classifier's `class_names` and `num_classes`.
    """

    class_names: tuple[str, ...] = VOC_CLASSES  # the default, read by `pv fit` before instantiation

    def __init__(self, root: str = "data", year: str = "2012", train_split: str = "train", val_split: str = "val", download: bool = False,
                 val_fraction: float | None = None, split_seed: int = 0, class_names: list[str] | None = None, **kwargs):  # fmt: skip
        super().__init__(**kwargs)
        if val_fraction is not None and not 0 < val_fraction < 1:
            raise ConfigError(f"data.init_args.val_fraction must be in (0, 1) or null, got {val_fraction}")
        self.root, self.year, self.download = root, year, download
        self.train_split, self.val_split = train_split, val_split
        self.val_fraction, self.split_seed = val_fraction, split_seed
        self.class_names = list(class_names or VOC_CLASSES)  # the annotations' object names, in label order
        self.num_classes = len(self.class_names)

    def prepare_data(self) -> None:
        if self.download:
            voc_dataset(self.root, self.eval_transform, self.year, self.train_split, download=True, classes=self.class_names)

    def build(self, stage: str) -> tuple[Dataset, Dataset]:
        train = voc_dataset(self.root, self.train_transform, self.year, self.train_split, split_option="data.init_args.train_split", classes=self.class_names)
        if self.val_fraction is not None:
            val = voc_dataset(self.root, self.eval_transform, self.year, self.train_split, split_option="data.init_args.train_split", classes=self.class_names)
            kept, held = seeded_split(len(train), self.val_fraction, self.split_seed)
            return Subset(train, kept), Subset(val, held)
        hold_out = "data.init_args.val_split, or hold out part of train_split with data.init_args.val_fraction (e.g. 0.3)"
        val = voc_dataset(self.root, self.eval_transform, self.year, self.val_split, split_option=hold_out, classes=self.class_names)
        return train, val


class ImageFolderDataModule(ImageDataModule):
    """Every image below `root` (recursive); a seeded `val_fraction` of files is held out for validation.

    `subset_size` keeps a random `subset_size` files (drawn with `subset_seed`) before the split, e.g.
    the paper's 8,000-image ImageNet subset.
    """

    def __init__(self, root: str = "images", val_root: str | None = None, val_fraction: float = 0.05,
                 subset_size: int | None = None, subset_seed: int = 0, **kwargs):  # fmt: skip
        super().__init__(**kwargs)
        if not 0 <= val_fraction < 1:
            raise ConfigError(f"data.init_args.val_fraction must be in [0, 1), got {val_fraction}")
        if subset_size is not None and subset_size < 1:
            raise ConfigError(f"data.init_args.subset_size must be >= 1 or null, got {subset_size}")
        self.root, self.val_root, self.val_fraction = root, val_root, val_fraction
        self.subset_size, self.subset_seed = subset_size, subset_seed

    def subset(self, dataset) -> Dataset:
        if self.subset_size is None or self.subset_size >= len(dataset):
            return dataset
        kept = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(self.subset_seed))[: self.subset_size]
        return Subset(dataset, sorted(kept.tolist()))

    def build(self, stage: str) -> tuple[Dataset, Dataset]:
        if self.val_root is not None:
            return self.subset(image_folder(self.root, self.train_transform)), image_folder(self.val_root, self.eval_transform)
        train_all = self.subset(image_folder(self.root, self.train_transform))
        val_all = self.subset(image_folder(self.root, self.eval_transform))
        if len(train_all) <= 1:
            return train_all, val_all
        kept, held = seeded_split(len(train_all), self.val_fraction, self.seed)
        if not held:  # at least one validation image
            kept, held = kept[1:], kept[:1]
        return Subset(train_all, kept), Subset(val_all, held)


class QuickstartDataModule(ImageDataModule):
    """scikit-image's bundled photographs: train on random crops of most, validate on the rest."""

    def __init__(self, train_images: tuple[str, ...] = QUICKSTART_IMAGES[:-2], val_images: tuple[str, ...] = QUICKSTART_IMAGES[-2:], repeats: int = 8, **kwargs):
        super().__init__(**kwargs)
        self.train_images, self.val_images, self.repeats = train_images, val_images, repeats

    def build(self, stage: str) -> tuple[Dataset, Dataset]:
        train = QuickstartDataset(self.train_images, self.train_transform, repeats=self.repeats)
        val = QuickstartDataset(self.val_images, self.eval_transform)
        return train, val


__all__ = ["ImageDataModule", "VOCDataModule", "ImageFolderDataModule", "QuickstartDataModule"]
