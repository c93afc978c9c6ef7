"""LightningDataModules: VOC, any image folder, and the embedded quickstart photos."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from pv.data.datasets import QUICKSTART_IMAGES, VOC_CLASSES, ImageFileDataset, QuickstartDataset, image_folder, voc_dataset
from pv.data.sampling import EpochShuffle, SeededSamples
from pv.data.transforms import ImageTransform
from pv.errors import ConfigError
from pv.models.checkpoint import training_record


def seeded_split(length: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A seeded random split of range(length) into (kept, held_out) with round(length * fraction) held out."""
    held = int(round(length * fraction))
    order = torch.randperm(length, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[held:]), sorted(order[:held])


def dataset_paths(dataset: Dataset) -> list[str]:
    """The image paths of an `ImageFileDataset` or a `Subset` of one, in index order."""
    if isinstance(dataset, Subset):
        paths = dataset_paths(dataset.dataset)
        return [paths[i] for i in dataset.indices]
    return [str(p) for p in dataset.paths]


def describe_training_data(datamodule) -> dict | None:
    """The `pv_training_data` record of what `datamodule` trains on (`pv.models.checkpoint.training_record`), or None
    for a data module that cannot say (not one of pv's). A wrapper with a `source` (CachedDataModule) describes its source."""
    for candidate in (datamodule, getattr(datamodule, "source", None)):
        describe = getattr(candidate, "training_data", None)
        if callable(describe):
            return describe()
    return None


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

    def training_data(self) -> dict | None:
        """What the train split holds, as checkpoints record it (`pv.models.checkpoint.training_record`); None here."""
        return None

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

    def held_out(self, transform: ImageTransform | None = None) -> ImageFileDataset:
        """The images of `train_split` that `val_fraction` holds out (neither trained on), un-augmented, with labels."""
        if self.val_fraction is None:
            raise ConfigError("data.init_args.val_fraction is not set, so train_split has no held-out part: choose a VOC split by name")
        every = voc_dataset(self.root, transform or self.eval_transform, self.year, self.train_split, split_option="data.init_args.train_split",
                            classes=self.class_names)  # fmt: skip
        _, held = seeded_split(len(every), self.val_fraction, self.split_seed)
        return ImageFileDataset([every.paths[i] for i in held], every.transform, every.labels[held], source=f"the held-out part of VOC {self.train_split}")

    def training_data(self) -> dict:
        """VOC ids of the train split (the kept part of `train_split` when `val_fraction` is set)."""
        self.setup("fit")
        split = self.train_split
        if self.val_fraction is not None:
            split = f"{self.train_split} without its held-out {self.val_fraction:g} (split_seed {self.split_seed})"
        ids = [Path(path).stem for path in dataset_paths(self.train_set)]
        return training_record(f"VOC{self.year}", self.root, split, self.split_seed if self.val_fraction is not None else None, ids)


class ImageFolderDataModule(ImageDataModule):
    """Every image below `root` (recursive); a seeded `val_fraction` of files is held out for validation.

    `subset_size` keeps a random `subset_size` files (drawn with `subset_seed`) before the split, e.g.
    the paper's 8,000-image ImageNet subset. `val_size` instead validates on that many files drawn (with
    the same seed) from outside the subset, so the model trains on all `subset_size` files (the authors'
    8,000) and validates on images it never saw; it needs `subset_size` and `val_fraction: 0`.
    """

    def __init__(self, root: str = "images", val_root: str | None = None, val_fraction: float = 0.05,
                 subset_size: int | None = None, subset_seed: int = 0, val_size: int | None = None, **kwargs):  # fmt: skip
        super().__init__(**kwargs)
        if not 0 <= val_fraction < 1:
            raise ConfigError(f"data.init_args.val_fraction must be in [0, 1), got {val_fraction}")
        if subset_size is not None and subset_size < 1:
            raise ConfigError(f"data.init_args.subset_size must be >= 1 or null, got {subset_size}")
        if val_size is not None and (val_size < 1 or subset_size is None or val_fraction != 0 or val_root is not None):
            raise ConfigError(f"data.init_args.val_size (got {val_size}) must be >= 1 and needs subset_size, val_fraction: 0 and no val_root")
        self.root, self.val_root, self.val_fraction = root, val_root, val_fraction
        self.subset_size, self.subset_seed, self.val_size = subset_size, subset_seed, val_size

    def subset(self, dataset) -> Dataset:
        if self.subset_size is None or self.subset_size >= len(dataset):
            return dataset
        kept = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(self.subset_seed))[: self.subset_size]
        return Subset(dataset, sorted(kept.tolist()))

    def outside_subset(self, dataset) -> Dataset:
        """`val_size` files drawn from those the subset leaves out (the next ones in the subset's seeded order)."""
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(self.subset_seed)).tolist()
        if len(order) < self.subset_size + self.val_size:
            raise ConfigError(f"{self.root} has {len(order)} images: too few for data.init_args.subset_size {self.subset_size} "
                              f"plus val_size {self.val_size} outside it: lower --data.init_args.subset_size or val_size")  # fmt: skip
        return Subset(dataset, sorted(order[self.subset_size:self.subset_size + self.val_size]))

    def build(self, stage: str) -> tuple[Dataset, Dataset]:
        if self.val_root is not None:
            return self.subset(image_folder(self.root, self.train_transform)), image_folder(self.val_root, self.eval_transform)
        if self.val_size is not None:
            return self.subset(image_folder(self.root, self.train_transform)), self.outside_subset(image_folder(self.root, self.eval_transform))
        train_all = self.subset(image_folder(self.root, self.train_transform))
        val_all = self.subset(image_folder(self.root, self.eval_transform))
        if len(train_all) <= 1:
            return train_all, val_all
        kept, held = seeded_split(len(train_all), self.val_fraction, self.seed)
        if not held:  # at least one validation image
            kept, held = kept[1:], kept[:1]
        return Subset(train_all, kept), Subset(val_all, held)

    def training_data(self) -> dict:
        """Paths of the training images relative to `root`."""
        self.setup("fit")
        root = Path(self.root)
        files = [Path(path).relative_to(root).as_posix() if Path(path).is_relative_to(root) else str(path) for path in dataset_paths(self.train_set)]
        split = "all files" if self.subset_size is None else f"a {self.subset_size}-file subset (subset_seed {self.subset_seed})"
        if self.val_root is None and self.val_size is None and self.val_fraction > 0:
            split += f" without a held-out {self.val_fraction:g} (seed {self.seed})"
        seed = self.subset_seed if self.subset_size is not None else self.seed if self.val_root is None else None
        return training_record("image_folder", root, split, seed, files)


class QuickstartDataModule(ImageDataModule):
    """scikit-image's bundled photographs: train on random crops of most, validate on the rest."""

    def __init__(self, train_images: tuple[str, ...] = QUICKSTART_IMAGES[:-2], val_images: tuple[str, ...] = QUICKSTART_IMAGES[-2:], repeats: int = 8, **kwargs):
        super().__init__(**kwargs)
        self.train_images, self.val_images, self.repeats = train_images, val_images, repeats

    def build(self, stage: str) -> tuple[Dataset, Dataset]:
        train = QuickstartDataset(self.train_images, self.train_transform, repeats=self.repeats)
        val = QuickstartDataset(self.val_images, self.eval_transform)
        return train, val

    def training_data(self) -> dict:
        """The scikit-image photographs trained on, by name (each repeated `repeats` times per epoch)."""
        return training_record("skimage.data", "", f"train ({self.repeats} repeats)", None, [f"skimage.data.{name}" for name in self.train_images])


__all__ = ["ImageDataModule", "VOCDataModule", "ImageFolderDataModule", "QuickstartDataModule", "describe_training_data"]
