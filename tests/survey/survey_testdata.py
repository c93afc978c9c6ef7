"""Shared test data for the survey tests: a hand-made predictions table in the `pv analyze` layout."""
from __future__ import annotations

import csv
from pathlib import Path

import torch

from pv.data import VOC_CLASSES
from pv.models import Classifier, Decoder, encoder_fingerprint

CLASSES = list(VOC_CLASSES)
COMPLETION_CODE = "C0DE42"  # the Prolific study's completion code
COLUMNS = ["id", "path", "labels", "predicted", "top_class", "top_prob", "bucket"]

# (id, labels, predicted, top_class, bucket): 3 correct, 3 incorrect, 1 partial, 1 empty.
TABLE = [
    ("img0", ["cat"], ["cat"], "cat", "correct"),
    ("img1", ["dog", "person", "sofa", "chair", "bottle"], ["dog", "person", "sofa", "chair", "bottle"], "person", "correct"),
    ("img2", ["car", "bus"], ["car", "bus"], "bus", "correct"),
    ("img3", ["horse"], ["cow"], "cow", "incorrect"),
    ("img4", ["boat", "bird"], ["aeroplane", "train"], "aeroplane", "incorrect"),
    ("img5", ["tvmonitor", "chair", "sofa", "person", "pottedplant"], ["bicycle"], "bicycle", "incorrect"),
    ("img6", ["sheep", "cow"], ["sheep"], "sheep", "partial"),
    ("img7", ["train"], [], "bus", "empty"),
]


def write_predictions(path: Path, rows: list[tuple], images: dict[str, Path] | None = None, classes: list[str] = CLASSES) -> Path:
    """A predictions.csv in the `pv analyze` layout (probabilities are made up but consistent with the top class)."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS + [f"prob_{c}" for c in classes])
        for image_id, labels, predicted, top, bucket in rows:
            probs = [0.9 if c == top else 0.6 if c in predicted else 0.1 for c in classes]
            image = str(images[image_id]) if images else f"/nowhere/{image_id}.jpg"
            writer.writerow([image_id, image, ";".join(labels), ";".join(predicted), top, 0.9, bucket, *probs])
    return path


def save_checkpoints(folder: Path, seed: int = 0, input_size: int = 64) -> tuple[Path, Path]:
    """A random ResNet-18 VOC classifier (trained at `input_size`) and a decoder for its layer4 latent, with the
    encoder fingerprint a trained decoder records (64 px -> 2x2 -> 64 px)."""
    torch.manual_seed(seed)
    clf = Classifier("resnet18", num_classes=20, weights=None, class_names=CLASSES, input_size=input_size).eval()
    dec = Decoder(512, (16, 16, 8, 8, 8)).eval()
    classifier_path, decoder_path = folder / "classifier.ckpt", folder / "decoder.ckpt"
    torch.save({"state_dict": {"model." + k: v for k, v in clf.state_dict().items()}, "classifier_config": clf.config}, classifier_path)
    torch.save({"state_dict": {"decoder." + k: v for k, v in dec.state_dict().items()}, "decoder_config": dec.config,
                "encoder_config": {"arch": "resnet18", "layer": "layer4", "weights": None, "checkpoint": str(classifier_path)},
                "encoder_fingerprint": encoder_fingerprint(clf, arch="resnet18", layer="layer4", checkpoint=str(classifier_path))}, decoder_path)  # fmt: skip
    return classifier_path, decoder_path
