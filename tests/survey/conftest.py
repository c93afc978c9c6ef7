"""Fixtures for the study app: tiny checkpoints, a predictions table and a built study (64 px, 4 questions)."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pv.models import Classifier, Decoder
from survey_testdata import CLASSES, TABLE, write_predictions


@pytest.fixture(scope="session")
def tiny_images(tmp_path_factory) -> dict[str, Path]:
    """One generated 80x72 PNG per TABLE row (seeded noise + a coloured square)."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = {}
    for k, (image_id, *_rest) in enumerate(TABLE):
        array = rng.integers(0, 255, size=(72, 80, 3), dtype=np.uint8)
        array[10 + k:40 + k, 20:50] = (40 * k % 255, 200, 255 - 30 * k)
        paths[image_id] = folder / f"{image_id}.png"
        Image.fromarray(array).save(paths[image_id])
    return paths


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> tuple[Path, Path]:
    """A random ResNet-18 VOC classifier and a decoder for its layer4 latent (64 px -> 2x2 -> 64 px)."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("checkpoints")
    clf = Classifier("resnet18", num_classes=20, weights=None, class_names=CLASSES).eval()
    dec = Decoder(512, (16, 16, 8, 8, 8)).eval()
    classifier_path, decoder_path = folder / "classifier.ckpt", folder / "decoder.ckpt"
    torch.save({"state_dict": {"model." + k: v for k, v in clf.state_dict().items()}, "classifier_config": clf.config}, classifier_path)
    torch.save({"state_dict": {"decoder." + k: v for k, v in dec.state_dict().items()}, "decoder_config": dec.config,
                "encoder_config": {"arch": "resnet18", "layer": "layer4", "weights": None, "checkpoint": None}}, decoder_path)  # fmt: skip
    return classifier_path, decoder_path


@pytest.fixture(scope="session")
def analysis_dir(tmp_path_factory, tiny_images) -> Path:
    folder = tmp_path_factory.mktemp("analysis")
    write_predictions(folder / "predictions.csv", TABLE, tiny_images)
    return folder


@pytest.fixture(scope="session")
def study(tmp_path_factory, analysis_dir, checkpoints) -> Path:
    """A study built by the real builder: 2 correct + 2 incorrect questions at 64 px. Treat as read-only."""
    from survey.build import build_study

    out = tmp_path_factory.mktemp("studies") / "tiny"
    with warnings.catch_warnings():  # a random classifier disagrees with the hand-made table
        warnings.simplefilter("ignore", UserWarning)
        build_study(analysis_dir, *checkpoints, out, n_correct=2, n_incorrect=2, seed=3, image_size=64, progress=False)
    return out
