"""A folder of images as batches for the explanation commands (unreadable files skipped, each named)."""
from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from pv.data.images import UnreadableImageError, list_images, load_image
from pv.data.transforms import ImageTransform
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
