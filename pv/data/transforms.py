"""Resize / crop / flip for PIL images, giving float tensors in [0, 1]."""
from __future__ import annotations

import warnings
from typing import Literal

import torch
from PIL import Image
from torchvision.transforms import v2

from pv.data.images import to_tensor
from pv.errors import ConfigError

RESIZE_MODES = ("whole", "crop")


class ImageTransform:
    """PIL image -> (3, image_size, image_size) float tensor in [0, 1].

    `resize="whole"` (default, as the authors did) resizes the whole image to a square, so every
    labelled object stays in the picture (the aspect ratio is not kept). `resize="crop"` resizes the
    short side and crops a square (random when training and `random_crop`, else the centre).
    `resize_scale` > 1 resizes to `image_size * resize_scale` first and crops `image_size` from it.
    `interpolation` is the resize's ("bilinear", "bicubic", ...).
    """

    def __init__(self, image_size: int = 224, train: bool = False, random_crop: bool = True, flip: bool = True,
                 resize_scale: float = 1.0, resize: Literal["whole", "crop"] = "whole", interpolation: str = "bilinear"):  # fmt: skip
        if resize not in RESIZE_MODES:
            raise ConfigError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
        if image_size < 1 or resize_scale < 1:
            raise ConfigError(f"image_size must be >= 1 and resize_scale >= 1, got {image_size} and {resize_scale}")
        try:
            mode = v2.InterpolationMode(interpolation.lower())
        except ValueError:
            raise ConfigError(f"interpolation must be one of bilinear, bicubic, nearest, got {interpolation!r}") from None
        self.image_size, self.resize = image_size, resize
        size = int(round(image_size * resize_scale))
        steps: list = [v2.Resize((size, size) if resize == "whole" else size, interpolation=mode, antialias=True)]
        steps.append(v2.RandomCrop(image_size) if train and random_crop else v2.CenterCrop(image_size))
        if train and flip:
            steps.append(v2.RandomHorizontalFlip())
        self.pipeline = v2.Compose(steps)

    def __call__(self, image: Image.Image, name: str = "image") -> torch.Tensor:
        if min(image.size) < self.image_size:
            warnings.warn(f"{name} is {image.size[0]}x{image.size[1]}, smaller than {self.image_size} px: upscaled", stacklevel=2)
        return self.pipeline(to_tensor(image)).clamp_(0, 1)  # (3, image_size, image_size) in [0, 1] (resizing can overshoot by 1e-7)


def classifier_transform(model, image_size: int | None = None) -> ImageTransform:
    """How `model` reads a photo (its `preprocessing`, from `pv.models.zoo.model_spec`): timm models resize the
    short side to size / crop_pct with their interpolation and crop the centre; torchvision models and pv
    checkpoints resize the whole image (pv's default). `image_size` defaults to the model's input size."""
    size = int(image_size or getattr(model, "input_size", None) or 224)
    pre = getattr(model, "preprocessing", None) or {}
    if pre.get("resize") != "crop":
        return ImageTransform(size)
    scale = max(1.0, 1 / float(pre["crop_pct"]))
    return ImageTransform(size, resize="crop", resize_scale=scale, interpolation=pre.get("interpolation", "bilinear"))
