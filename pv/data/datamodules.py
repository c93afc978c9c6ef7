"""LightningDataModules: VOC, any image folder, and the embedded quickstart photos."""
from __future__ import annotations


import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from pv.data.datasets import QUICKSTART_IMAGES, QuickstartDataset, image_folder, voc_dataset
from pv.data.transforms import ImageTransform


class ImageDataModule(pl.LightningDataModule):
    """Shared loader settings; subclasses say how to build the train and val datasets."""

    def __init__(self, image_size: int = 224, batch_size: int = 32, num_workers: int = 0, flip: bool = True, random_crop: bool = True, resize_scale: float = 1.0, seed: int = 0):
        super().__init__()
        self.image_size = image_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.train_transform = ImageTransform(image_size, train=True, random_crop=random_crop, flip=flip, resize_scale=resize_scale)
        self.eval_transform = ImageTransform(image_size, train=False, resize_scale=resize_scale)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    def build(self, stage: str) -> tuple[Dataset, Dataset]:
        raise NotImplementedError

    def setup(self, stage: str = "fit") -> None:
        if self.train_set is None:
            self.train_set, self.val_set = self.build(stage)

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, pin_memory=torch.cuda.is_available(), generator=generator)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        return self.val_dataloader()


class VOCDataModule(ImageDataModule):
    """PASCAL VOC (torchvision layout under `root`), with 20-class multi-hot labels."""

    def __init__(self, root: str = "data", year: str = "2012", train_split: str = "train", val_split: str = "val", download: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.root, self.year, self.download = root, year, download
        self.train_split, self.val_split = train_split, val_split

    def prepare_data(self) -> None:
        if self.download:
            voc_dataset(self.root, self.eval_transform, self.year, self.train_split, download=True)

    def build(self, stage: str) -> tuple[Dataset, Dataset]:
        train = voc_dataset(self.root, self.train_transform, self.year, self.train_split)
        val = voc_dataset(self.root, self.eval_transform, self.year, self.val_split)
        return train, val


class ImageFolderDataModule(ImageDataModule):
    """Every image below `root` (recursive); a seeded `val_fraction` of files is held out for validation."""

    def __init__(self, root: str = "images", val_root: str | None = None, val_fraction: float = 0.05, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        self.root, self.val_root, self.val_fraction = root, val_root, val_fraction

    def build(self, stage: str) -> tuple[Dataset, Dataset]:
        if self.val_root is not None:
            return image_folder(self.root, self.train_transform), image_folder(self.val_root, self.eval_transform)
        train_all = image_folder(self.root, self.train_transform)
        val_all = image_folder(self.root, self.eval_transform)
        n_val = max(1, int(round(len(train_all) * self.val_fraction))) if len(train_all) > 1 else 0
        order = torch.randperm(len(train_all), generator=torch.Generator().manual_seed(self.seed)).tolist()
        if n_val == 0:
            return train_all, val_all
        return Subset(train_all, order[n_val:]), Subset(val_all, order[:n_val])


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
