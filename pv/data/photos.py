"""Labelled photos for pretrained ImageNet classifiers: a folder with a fixed split, or Imagenette.

- `PhotoFolderDataModule(root)`: every image below `root`, sorted by path; every `holdout_every`-th file
  (index 0, 10, 20, ... for 10) is held out for validation, the rest trains. Labels: `labels="order"`
  (file i is class i, as in one-photo-per-class folders like ../shared/data/imagenet_samples), `"folder"`
  (class = the parent folder's index among the sorted folder names) or `"none"`.
- `dataset="imagenette"`: `torchvision.datasets.Imagenette` (10 ImageNet classes; its own train / val
  splits; `download: true` fetches it), labels as ImageNet indices (`IMAGENETTE_CLASSES`).

Training images get a random-resized crop (`scale`, aspect 3/4..4/3) and a horizontal flip; validation
images the usual ImageNet evaluation view: shorter side to `image_size / crop_pct` (bicubic), centre crop.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import v2

from pv.data.datamodules import ImageDataModule
from pv.data.datasets import ImageFileDataset
from pv.data.images import list_images, to_tensor
from pv.errors import ConfigError, DataNotFoundError

# ImageNet class indices of Imagenette's 10 classes, in torchvision's order (tench, English springer, cassette
# player, chain saw, church, French horn, garbage truck, gas pump, golf ball, parachute).
IMAGENETTE_CLASSES = (0, 217, 482, 491, 497, 566, 569, 571, 574, 701)
LABELS = ("order", "folder", "none")


def holdout_split(count: int, every: int) -> tuple[list[int], list[int]]:
    """(train, held_out) indices of range(count): every `every`-th index (0, every, 2 every, ...) is held out."""
    if every < 2:
        raise ConfigError(f"data.init_args.holdout_every must be >= 2, got {every}")
    return [i for i in range(count) if i % every], list(range(0, count, every))


class PhotoTransform:
    """PIL image -> (3, S, S) float tensor in [0, 1]: random-resized crop + flip (train) or resize + centre crop."""

    def __init__(self, image_size: int = 224, train: bool = False, scale: tuple[float, float] = (0.35, 1.0), crop_pct: float = 0.875, flip: bool = True):
        if not 0 < scale[0] <= scale[1] <= 1 or not 0 < crop_pct <= 1:
            raise ConfigError(f"scale must be 0 < min <= max <= 1 and crop_pct in (0, 1], got {list(scale)} and {crop_pct}")
        self.image_size = image_size
        bicubic = v2.InterpolationMode.BICUBIC
        if train:
            steps: list = [v2.RandomResizedCrop(image_size, scale=tuple(scale), interpolation=bicubic, antialias=True)]
            steps += [v2.RandomHorizontalFlip()] if flip else []
        else:
            steps = [v2.Resize(int(image_size / crop_pct), interpolation=bicubic, antialias=True), v2.CenterCrop(image_size)]
        self.pipeline = v2.Compose(steps)

    def __call__(self, image: Image.Image, name: str = "image") -> torch.Tensor:
        return self.pipeline(to_tensor(image)).clamp_(0, 1)  # (3, S, S); bicubic overshoots [0, 1]


def folder_labels(paths: list[Path], root: Path, labels: str) -> torch.Tensor | None:
    """Class indices (N,) for `paths` by `labels` ("order", "folder"), None for "none"."""
    if labels == "order":
        return torch.arange(len(paths))
    if labels == "folder":
        folders = sorted({p.parent for p in paths})
        index = {folder: i for i, folder in enumerate(folders)}
        return torch.tensor([index[p.parent] for p in paths])
    return None


class Imagenette(Dataset):
    """torchvision's Imagenette as {"image", "path", "label"} with ImageNet class indices."""

    def __init__(self, root: str, split: str, transform: PhotoTransform, download: bool = False):
        from torchvision.datasets import Imagenette as TorchvisionImagenette

        try:
            self.data = TorchvisionImagenette(root, split=split, size="320px", download=download)
        except RuntimeError as err:  # torchvision: "The directory ... does not exist or is empty ..."
            raise DataNotFoundError(f"Imagenette not found under {root} ({err}); set data.init_args.download: true to fetch it") from None
        self.paths = [path for path, _ in self.data._samples]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict:
        image, label = self.data[index]
        return {"image": self.transform(image.convert("RGB")), "path": str(self.paths[index]), "label": torch.tensor(IMAGENETTE_CLASSES[label])}


class PhotoFolderDataModule(ImageDataModule):
    """Photos for ImageNet classifiers and their decoders (see the module docstring for the split and labels).

    `image_size` is the classifier's input (224 for EfficientNet-Lite0); `scale` the random-resized crop's
    area range; `crop_pct` the evaluation crop (timm's 0.875: shorter side 256 for 224).
    """

    def __init__(self, root: str = "../shared/data/imagenet_samples", dataset: Literal["folder", "imagenette"] = "folder", holdout_every: int = 10,
                 labels: Literal["order", "folder", "none"] = "order", scale: tuple[float, float] = (0.35, 1.0), crop_pct: float = 0.875,
                 download: bool = False, **kwargs):  # fmt: skip
        kwargs.setdefault("image_size", 224)
        super().__init__(**kwargs)
        if dataset not in ("folder", "imagenette"):
            raise ConfigError(f"data.init_args.dataset must be 'folder' or 'imagenette', got {dataset!r}")
        if labels not in LABELS:
            raise ConfigError(f"data.init_args.labels must be one of {', '.join(LABELS)}, got {labels!r}")
        holdout_split(0, holdout_every)  # checks the value
        self.root, self.dataset, self.holdout_every, self.labels, self.download = root, dataset, holdout_every, labels, download
        self.scale, self.crop_pct = tuple(scale), crop_pct
        self.train_transform = PhotoTransform(self.image_size, train=True, scale=self.scale, crop_pct=crop_pct)
        self.eval_transform = PhotoTransform(self.image_size, train=False, crop_pct=crop_pct)

    def prepare_data(self) -> None:
        if self.dataset == "imagenette" and self.download:
            for split in ("train", "val"):
                Imagenette(self.root, split, self.eval_transform, download=True)

    def files(self) -> tuple[list[Path], torch.Tensor | None]:
        """Every image below `root`, sorted, and its labels."""
        paths = sorted(list_images(self.root))
        return paths, folder_labels(paths, Path(self.root), self.labels)

    def split(self, which: Literal["train", "val"], transform: PhotoTransform | None = None) -> Dataset:
        """One split with `transform` (default: the split's own): for a folder, the fixed every-Nth hold-out."""
        transform = transform or (self.train_transform if which == "train" else self.eval_transform)
        if self.dataset == "imagenette":
            return Imagenette(self.root, which, transform)
        paths, labels = self.files()
        train, held = holdout_split(len(paths), self.holdout_every)
        index = train if which == "train" else held
        picked = None if labels is None else labels[index]
        return ImageFileDataset([paths[i] for i in index], transform, picked, source=f"{which} split of {self.root} (every {self.holdout_every}th file held out)")

    def build(self, stage: str) -> tuple[Dataset, Dataset]:
        return self.split("train"), self.split("val")

    def training_data(self) -> dict:
        """The training files relative to `root`, as checkpoints record them (`pv.models.checkpoint.training_record`)."""
        from pv.models.checkpoint import training_record

        self.setup("fit")
        root = Path(self.root)
        files = [Path(p).relative_to(root).as_posix() if Path(p).is_relative_to(root) else str(p) for p in self.train_set.paths]
        split = "imagenette train" if self.dataset == "imagenette" else f"all files but every {self.holdout_every}th (sorted by path, from the first)"
        return training_record(self.dataset if self.dataset == "imagenette" else "image_folder", root, split, None, files)


__all__ = ["IMAGENETTE_CLASSES", "PhotoFolderDataModule", "PhotoTransform", "holdout_split"]
