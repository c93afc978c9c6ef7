"""Reading images robustly: any mode PIL opens becomes 8-bit RGB; unreadable files are skipped with a warning."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps

from pv.errors import DataError, DataNotFoundError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class UnreadableImageError(DataError):
    """An image file that cannot be decoded (corrupt, truncated, not an image)."""


def to_rgb(image: Image.Image) -> Image.Image:
    """Grayscale, palette, RGBA (composited on white), CMYK and 16-bit/float images -> 8-bit RGB."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert("RGB")


def upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag (a phone photo stored sideways); images without one are unchanged."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # a malformed EXIF block must not make a readable image unreadable
        return image


def load_image(path: str | Path) -> Image.Image:
    """Open `path` as an RGB PIL image, turned as its EXIF orientation says (as viewers show it).

    Raises `UnreadableImageError` naming the file if it cannot be decoded.
    """
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb(upright(image))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise UnreadableImageError(f"Cannot read image {path}: {err}") from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL RGB -> float tensor (3, H, W) in [0, 1]."""
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255)


def list_images(root: str | Path) -> list[Path]:
    """Every image file under `root`, recursively, sorted; a clear error if the folder is missing."""
    root = Path(root)
    if not root.is_dir():
        raise DataNotFoundError(f"Image folder not found: {root}")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def warn_skipped(path: str | Path, reason: str) -> None:
    warnings.warn(f"Skipping {path}: {reason}", stacklevel=2)
