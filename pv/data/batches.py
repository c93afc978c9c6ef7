"""A folder of images as batches for the explanation commands (unreadable files skipped, each named)."""
from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from pv.data.images import UnreadableImageError, list_images, load_image
from pv.data.transforms import ImageTransform, classifier_transform
from pv.errors import PVError


class NoImagesError(PVError, ValueError):
    """A folder with no image in it, or none that could be read."""


class ImageFolderNotFoundError(PVError, FileNotFoundError):
    """The image folder does not exist."""


def image_paths(folder: str | Path) -> list[Path]:
    """The images under `folder`, recursively and sorted; a one-line error for a missing or empty folder."""
    try:
        paths = list_images(folder)
    except FileNotFoundError as err:
        raise ImageFolderNotFoundError(str(err)) from None
    if not paths:
        raise NoImagesError(f"No images found in {folder} (looked for .jpg, .png, ... recursively)")
    return paths


def load_batches(paths: list[Path], image_size: int, batch_size: int) -> Iterator[tuple[list[Path], torch.Tensor]]:
    """Yield (paths, images (B, 3, S, S) in [0, 1]); unreadable files are skipped with a warning naming each."""
    transform = ImageTransform(image_size)
    batch_paths: list[Path] = []
    batch_images: list[torch.Tensor] = []
    for path in paths:
        try:
            image = load_image(path)
        except UnreadableImageError as err:
            warnings.warn(f"Skipping {path}: {err}", stacklevel=2)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # small images are upscaled; not worth a warning each
            batch_images.append(transform(image, str(path)))
        batch_paths.append(path)
        if len(batch_paths) == batch_size:
            yield batch_paths, torch.stack(batch_images)
            batch_paths, batch_images = [], []
    if batch_paths:
        yield batch_paths, torch.stack(batch_images)


class ImageItemsDataset(torch.utils.data.Dataset):
    """The images of a job (`pv.data.results.ImageItem`), each with its file's sha256; an unreadable file
    gives an item with `error` set and no image (the job records it, nothing stands in for it)."""

    def __init__(self, items: list, transform):
        self.items, self.transform = list(items), transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        from pv.data.results import file_sha256

        item = self.items[index]
        sample = {"index": item.index, "key": item.key, "path": str(item.path), "sha256": file_sha256(item.path), "error": None, "image": None, **item.extra}
        try:
            image = load_image(item.path)
        except UnreadableImageError as err:
            sample["error"] = str(err)
            return sample
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # small images are upscaled; not worth a warning each
            sample["image"] = self.transform(image, str(item.path))
        return sample


def collate_items(samples: list[dict]) -> dict:
    """Samples -> {"items": the samples without images, "images": (B', 3, S, S) of the readable ones, in order}."""
    images = [s["image"] for s in samples if s["image"] is not None]
    items = [{k: v for k, v in s.items() if k != "image"} for s in samples]
    return {"items": items, "images": torch.stack(images) if images else torch.empty(0)}


def image_transform(image_size: int, model=None):
    """The evaluation transform of the explanation commands (no augmentation): the classifier's own
    preprocessing when `model` is given (`pv.data.transforms.classifier_transform`: timm models crop
    as timm does), else the whole image resized."""
    return ImageTransform(image_size) if model is None else classifier_transform(model, image_size)
