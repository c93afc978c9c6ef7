"""The frozen encoder E: a classifier truncated after one layer; it never trains."""
from __future__ import annotations

import torch
from torch import nn

from pv.models.classifier import Classifier, trunk_of, truncate
from pv.models.fingerprint import encoder_fingerprint
from pv.models.loading import load_classifier
from pv.models.weights import none_if_null
from pv.models.zoo import model_spec


class FrozenEncoder(nn.Module):
    """Images in [0, 1] (B, 3, H, W) -> latent z (B, C, h, w), e.g. ResNet-50 layer4: (B, 2048, H/32, W/32),
    EfficientNet-Lite0 bn2 (its last conv stage): (B, 1280, H/32, W/32).

    Built from a zoo's weights (`pv.models.zoo`: torchvision `weights="IMAGENET1K_V2"`, timm
    `arch="tf_efficientnet_lite0", weights="packaged"`, None = random init) or from a
    `pv.ClassifierModule` checkpoint; `layer=None` is the arch's default layer (`model_spec(arch).default_layer`).
    A ViT's layers are its blocks, their patch tokens reshaped to (B, C, h, w). Parameters never require grad and BatchNorm stays in eval
    mode even when a parent module calls `.train()`. Gradients still flow to the input (DSIM loss).
    When `layer` is the classifier's last feature layer and its head is linear on pooled features,
    `head` maps pooled latents to logits (else `head` is None). `fingerprint()` identifies it.
    """

    def __init__(self, arch: str = "resnet50", layer: str | None = None, weights: str | None = None, checkpoint: str | None = None):
        super().__init__()
        weights, checkpoint, layer = none_if_null(weights), none_if_null(checkpoint), none_if_null(layer)
        if checkpoint is not None:
            classifier = load_classifier(checkpoint=checkpoint)
            if classifier.config["arch"] != arch:
                raise ValueError(f"Checkpoint {checkpoint} holds a {classifier.config['arch']} classifier, but arch is {arch!r}")
        else:
            classifier = load_classifier(arch=arch, weights=weights)
        layer = layer or model_spec(arch).default_layer
        self.normalize = classifier.normalize
        self.body = truncate(trunk_of(classifier), layer)
        self.head = classifier.head if isinstance(classifier, Classifier) and layer == classifier.feature_layer else None
        self.class_names = classifier.class_names
        self.activation = classifier.activation
        self.config = {
            "arch": arch, "layer": layer, "weights": weights, "checkpoint": checkpoint,
            "mean": classifier.config.get("mean"), "std": classifier.config.get("std"),  # the normalisation, recorded in decoder checkpoints
        }  # fmt: skip
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        self.train(False)
        with torch.no_grad():
            self.out_channels = self.body(torch.zeros(1, 3, 64, 64)).shape[1]

    def as_classifier(self) -> Classifier | None:
        """The classifier this encoder was cut from, sharing its modules, when `head` exists (else None)."""
        if self.head is None:
            return None
        return Classifier.from_parts(
            self.body, self.head, self.normalize, arch=self.config["arch"], class_names=self.class_names, activation=self.activation
        )

    def fingerprint(self) -> dict:
        """{"arch", "layer", "weights", "checkpoint", "params_sha256"}: what a decoder trained on this
        encoder records, so it is never used with another classifier's latent."""
        config = self.config
        return encoder_fingerprint(self, arch=config["arch"], layer=config["layer"], weights=config["weights"], checkpoint=config["checkpoint"])

    def train(self, mode: bool = True) -> "FrozenEncoder":
        """Always eval: BatchNorm running statistics must never move."""
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(self.normalize(images))  # (B, 3, H, W) -> (B, C, h, w)
