"""Loading what the explanation commands need: a classifier (pv checkpoint or any torchvision model),
a decoder, and folders of images (unreadable files skipped with a warning naming each)."""
from __future__ import annotations

import argparse
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from pv.data.images import UnreadableImageError, list_images, load_image
from pv.data.transforms import ImageTransform
from pv.models.classifier import Classifier, torchvision_categories
from pv.models.weights import Normalize, build_torchvision_model


class TorchvisionClassifier(nn.Module):
    """Any torchvision classifier as images in [0, 1] -> logits; its layers are named as in torchvision
    ("features", "features.12", ...), reachable as `net.<name>` or just `<name>`."""

    def __init__(self, arch: str, weights: str | None = None):
        super().__init__()
        self.normalize = Normalize()
        self.net = build_torchvision_model(arch, weights)
        with torch.no_grad():
            self.num_classes = int(self.net.eval()(torch.zeros(1, 3, 64, 64)).shape[1])
        self.class_names = list(torchvision_categories(arch, weights)) if weights else [str(i) for i in range(self.num_classes)]
        self.config = {"arch": arch, "weights": weights, "num_classes": self.num_classes}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(images))  # (B, 3, H, W) -> (B, num_classes)


def load_classifier(checkpoint: str | None = None, arch: str | None = None, weights: str | None = None) -> nn.Module:
    """A pv Classifier from `checkpoint`, else torchvision `arch` with `weights` (None: random init).

    Torchvision models whose head is one linear layer on pooled features (ResNets, RegNets, ...)
    become a pv `Classifier` (fast all-class Grad-CAM); the others are wrapped as they are.
    """
    if checkpoint is not None:
        return Classifier.from_checkpoint(checkpoint).eval()
    if arch is None:
        raise ValueError("Give a classifier: --classifier CKPT, or --arch NAME [--weights ENUM|none]")
    net = build_torchvision_model(arch, None)  # cheap structural probe, no download
    if isinstance(getattr(net, "fc", None), nn.Linear) and isinstance(getattr(net, "avgpool", None), nn.AdaptiveAvgPool2d):
        return Classifier(arch, num_classes=None, weights=weights).eval()
    return TorchvisionClassifier(arch, weights).eval()


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("classifier (one of)")
    group.add_argument("--classifier", "--model", dest="classifier", metavar="CKPT", help="pv classifier checkpoint (from pv fit)")
    group.add_argument("--arch", help="any torchvision classifier instead, e.g. resnet50, vgg16, mobilenet_v3_large")
    group.add_argument("--weights", default="none", help="torchvision weights for --arch, e.g. IMAGENET1K_V2, DEFAULT, or none (random)")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1 ...")


def model_from_arguments(args: argparse.Namespace) -> nn.Module:
    if args.classifier and args.arch:
        raise ValueError("Give either --classifier or --arch, not both")
    weights = None if str(args.weights).lower() in ("none", "null", "") else args.weights
    return load_classifier(args.classifier, args.arch, weights)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine (use --device cpu or auto)")
    return device


def parse_list(text: str, allowed: list[str] | tuple[str, ...], field: str) -> list[str]:
    """"a,b, c" -> ["a", "b", "c"], each checked against `allowed` (ValueError naming the field)."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in items if item not in allowed]
    if unknown or not items:
        raise ValueError(f"{field}: unknown {', '.join(map(repr, unknown)) or 'empty list'}; choose from {', '.join(allowed)}")
    return list(dict.fromkeys(items))


def image_paths(folder: str | Path) -> list[Path]:
    """The images under `folder`; FileNotFoundError / ValueError for a missing or empty folder."""
    paths = list_images(folder)
    if not paths:
        raise ValueError(f"No images found in {folder} (looked for .jpg, .png, ... recursively)")
    return paths


def load_batches(paths: list[Path], image_size: int, batch_size: int) -> Iterator[tuple[list[Path], torch.Tensor]]:
    """Yield (paths, images (B, 3, S, S) in [0, 1]); unreadable files are skipped with a warning naming each."""
    transform = ImageTransform(image_size)
    batch_paths, batch_images = [], []
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


def safe_stem(path: Path, root: Path) -> str:
    """A unique, file-system-safe name for an image: its path under root, '/' -> '__'."""
    relative = path.relative_to(root) if path.is_relative_to(root) else Path(path.name)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "__".join(relative.with_suffix("").parts))
