"""Resize / crop / flip for PIL images, giving float tensors in [0, 1]."""
from __future__ import annotations

import warnings

import torch
from PIL import Image
from torchvision.transforms import v2

from pv.data.images import to_tensor


class ImageTransform:
    """Resize the short side to `image_size`, crop a square (random when training), optionally flip."""

    def __init__(self, image_size: int = 224, train: bool = False, random_crop: bool = True, flip: bool = True, resize_scale: float = 1.0):
        self.image_size = image_size
        steps: list = [v2.Resize(int(round(image_size * resize_scale)), antialias=True)]
        steps.append(v2.RandomCrop(image_size) if train and random_crop else v2.CenterCrop(image_size))
        if train and flip:
            steps.append(v2.RandomHorizontalFlip())
        self.pipeline = v2.Compose(steps)

    def __call__(self, image: Image.Image, name: str = "image") -> torch.Tensor:
        if min(image.size) < self.image_size:
            warnings.warn(f"{name} is {image.size[0]}x{image.size[1]}, smaller than {self.image_size} px: upscaled", stacklevel=2)
        return self.pipeline(to_tensor(image))  # (3, image_size, image_size) in [0, 1]
