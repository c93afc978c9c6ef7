"""Datasets yielding {"image": (3, S, S) float in [0, 1], "path": str[, "label": (20,) multi-hot]}."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from pv.data.images import UnreadableImageError, list_images, load_image, warn_skipped
from pv.data.transforms import ImageTransform
from pv.errors import DataError, DataNotFoundError

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip


class EmptyDatasetError(DataError):
    """A dataset with no usable images."""


class ImageFileDataset(Dataset):
    """Images from a list of files. An unreadable file is skipped (warning naming it) and the next one is used."""

    def __init__(self, paths: list[Path], transform: ImageTransform, labels: torch.Tensor | None = None, source: str = "dataset"):
        if not paths:
            raise EmptyDatasetError(f"No images found in {source}")
        self.paths = list(paths)
        self.labels = labels
        self.transform = transform
        self.bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        for offset in range(len(self.paths)):
            i = (index + offset) % len(self.paths)
            if i in self.bad:
                continue
            try:
                image = load_image(self.paths[i])
            except UnreadableImageError as err:
                self.bad.add(i)
                warn_skipped(self.paths[i], str(err))
                continue
            sample = {"image": self.transform(image, str(self.paths[i])), "path": str(self.paths[i])}
            if self.labels is not None:
                sample["label"] = self.labels[i]
            return sample
        raise EmptyDatasetError("Every image in the dataset is unreadable")


def image_folder(root: str | Path, transform: ImageTransform) -> ImageFileDataset:
    """All images below `root` (recursive)."""
    return ImageFileDataset(list_images(root), transform, source=f"image folder {root}")


def voc_labels(annotation: str | Path, classes: tuple[str, ...] = VOC_CLASSES) -> torch.Tensor:
    """Multi-hot (num_classes,) vector of the object classes named in a VOC XML file."""
    try:
        names = [obj.findtext("name", "").strip() for obj in ET.parse(annotation).getroot().iter("object")]
    except ET.ParseError as err:
        raise DataError(f"Malformed VOC annotation {annotation}: {err}") from None
    unknown = sorted(set(names) - set(classes))
    if unknown:
        raise DataError(f"Unknown class name(s) {unknown} in {annotation}; expected VOC classes {list(classes)}")
    label = torch.zeros(len(classes))
    for name in names:
        label[classes.index(name)] = 1
    return label


def voc_splits(root: str | Path, year: str = "2012") -> list[str]:
    """The split names (`ImageSets/Main/<name>.txt` without per-class lists such as `cat_train`) under `root`."""
    folder = Path(root) / "VOCdevkit" / f"VOC{year}" / "ImageSets" / "Main"
    return sorted(p.stem for p in folder.glob("*.txt") if "_" not in p.stem) if folder.is_dir() else []


def voc_dataset(root: str | Path, transform: ImageTransform, year: str = "2012", image_set: str = "train", download: bool = False,
                split_option: str = "the split name", classes: tuple[str, ...] | list[str] = VOC_CLASSES) -> ImageFileDataset:  # fmt: skip
    """PASCAL VOC in torchvision's layout (`root/VOCdevkit/VOC2012/{JPEGImages,Annotations,ImageSets/Main}`).

    `classes`: the object names of the annotations, in label order (VOC's 20 by default; e.g. the generated world's).

    `split_option` names, in errors, what the user changes to pick another split (a flag or config key).
    """
    from torchvision.datasets import VOCDetection

    base = Path(root) / "VOCdevkit" / f"VOC{year}"
    split_file = base / "ImageSets" / "Main" / f"{image_set}.txt"
    splits = voc_splits(root, year)
    if splits and not split_file.is_file() and not download:
        raise DataNotFoundError(
            f"PASCAL VOC {year} has no split '{image_set}' ({split_file} is missing); the splits there are: "
            f"{', '.join(splits)}. Choose one with {split_option}"
        )
    try:
        voc = VOCDetection(str(root), year=year, image_set=image_set, download=download)
    except (RuntimeError, ValueError, OSError) as err:
        raise DataNotFoundError(
            f"PASCAL VOC {year} '{image_set}' not found: expected {split_file} and {base}/JPEGImages/. "
            f"Set data.init_args.root to the folder holding VOCdevkit/, or download: true ({err})"
        ) from None
    paths, labels = [], []
    for image_path, annotation in zip(voc.images, voc.annotations):
        label = voc_labels(annotation, tuple(classes))
        if label.sum() == 0:
            warn_skipped(annotation, "no objects in the annotation")
            continue
        paths.append(Path(image_path))
        labels.append(label)
    if not paths:
        raise EmptyDatasetError(f"No annotated images in VOC {year} '{image_set}' under {base}")
    return ImageFileDataset(paths, transform, torch.stack(labels), source=f"VOC {year} {image_set} at {base}")


QUICKSTART_IMAGES = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina", "camera")


class QuickstartDataset(Dataset):
    """The real photographs bundled with scikit-image, each repeated `repeats` times (random crops differ)."""

    def __init__(self, names: tuple[str, ...] | list[str], transform: ImageTransform, repeats: int = 1):
        import skimage.data

        self.images = []
        for name in names:
            array = getattr(skimage.data, name)()
            image = Image.fromarray(np.asarray(array)).convert("RGB")
            self.images.append((f"skimage.data.{name}", image))
        if not self.images:
            raise EmptyDatasetError("QuickstartDataset needs at least one image name")
        self.transform = transform
        self.repeats = repeats

    def __len__(self) -> int:
        return len(self.images) * self.repeats

    def __getitem__(self, index: int) -> dict:
        name, image = self.images[index % len(self.images)]
        return {"image": self.transform(image, name), "path": name}
