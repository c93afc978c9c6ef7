"""Tiny models and checkpoints for the explanation tests (CPU, random init, no downloads)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from pv.models import Classifier, Decoder
from pv.models.fingerprint import encoder_fingerprint


class TinyNet(nn.Module):
    """A small CNN for images (B, 3, 32, 32): two conv blocks, global average pooling, a linear head."""

    def __init__(self, num_classes: int = 5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(images)).flatten(1))  # (B, 3, H, W) -> (B, K)


@pytest.fixture
def tiny_net() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet().eval()


@pytest.fixture(scope="session")
def resnet_classifier() -> Classifier:
    """pv Classifier: resnet18, 4 classes, random weights (latent: layer4, 512 channels)."""
    torch.manual_seed(0)
    return Classifier("resnet18", num_classes=4, weights=None, class_names=["cat", "dog", "car", "tree"]).eval()


@pytest.fixture(scope="session")
def small_decoder() -> Decoder:
    torch.manual_seed(1)
    return Decoder(512, (16, 8, 8, 8, 8)).eval()


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory, resnet_classifier: Classifier, small_decoder: Decoder) -> dict[str, Path]:
    """Checkpoints shaped like `pv fit`'s: the classifier, a matching decoder and a mismatched one."""
    root = tmp_path_factory.mktemp("ckpt")
    paths = {"classifier": root / "cls.ckpt", "decoder": root / "dec.ckpt", "bad_decoder": root / "bad.ckpt"}
    clf = resnet_classifier
    torch.save({"state_dict": {"model." + k: v for k, v in clf.state_dict().items()}, "classifier_config": clf.config}, paths["classifier"])
    encoder = {"arch": "resnet18", "layer": "layer4", "weights": None, "checkpoint": None}
    fingerprint = encoder_fingerprint(clf, **encoder)  # as `pv fit` records it: the decoder inverts this classifier
    for name, decoder in (("decoder", small_decoder), ("bad_decoder", Decoder(256, (8, 8, 8, 8)))):
        torch.save(
            {
                "state_dict": {"decoder." + k: v for k, v in decoder.state_dict().items()}, "decoder_config": decoder.config,
                "encoder_config": encoder, "encoder_fingerprint": fingerprint,
            },
            paths[name],
        )  # fmt: skip
    return paths


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Three small synthetic photos (one in a sub-folder, one grayscale) in a temporary folder."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    for i, name in enumerate(["a.png", "b.jpg", "sub/c.png"]):
        array = (rng.random((40 + 4 * i, 48, 3)) * 255).astype(np.uint8)
        array[10:30, 10:30] = (255, 0, 0)
        image = Image.fromarray(array)
        (image.convert("L") if i == 2 else image).save(folder / name)
    return folder
