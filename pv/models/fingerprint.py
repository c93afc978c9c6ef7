"""Which encoder a decoder learned to invert: a fingerprint recorded at training time, checked at use.

A decoder only explains the classifier whose latent it was trained on. The fingerprint names the
encoder (arch, layer, torchvision weights or classifier checkpoint) and hashes its parameters up to
the latent layer, so two random initialisations of the same arch, or a fine-tuned copy, differ.
"""
from __future__ import annotations

import hashlib
import warnings

import torch
from torch import nn

from pv.errors import EncoderMismatchError
from pv.models.classifier import trunk_of, truncate


def params_sha256(module: nn.Module) -> str:
    """sha256 over the names, shapes and values of `module.state_dict()` (floats as float32, on CPU)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().to("cpu")
        if tensor.is_floating_point():
            tensor = tensor.float()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.contiguous().view(-1).numpy().tobytes())
    return digest.hexdigest()


def encoder_fingerprint(module: nn.Module, *, arch: str, layer: str, weights: str | None = None, checkpoint: str | None = None) -> dict:
    """{"arch", "layer", "weights", "checkpoint", "params_sha256"} of `module` (a pv Classifier, a wrapped
    torchvision classifier or a FrozenEncoder) truncated after `layer`; names are relative to the trunk,
    so an encoder and the classifier it was cut from give the same hash."""
    layer = layer.removeprefix("trunk.").removeprefix("net.").removeprefix("body.")
    body = truncate(trunk_of(module), layer)
    return {
        "arch": arch,
        "layer": layer,
        "weights": weights,
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "params_sha256": params_sha256(body),
    }


def describe_encoder(fingerprint: dict) -> str:
    """One phrase for messages, e.g. "resnet50 layer4 (weights IMAGENET1K_V2, params 1a2b3c4d)"."""
    if fingerprint.get("checkpoint"):
        source = f"checkpoint {fingerprint['checkpoint']}"
    elif fingerprint.get("weights"):
        source = f"weights {fingerprint['weights']}"
    else:
        source = "random init"
    return f"{fingerprint.get('arch', '?')} {fingerprint.get('layer', '?')} ({source}, params {str(fingerprint.get('params_sha256', '?'))[:8]})"


def check_encoder_match(trained: dict, current: dict, *, decoder_name: str, classifier_name: str, allow_mismatch: bool = False) -> None:
    """`EncoderMismatchError` naming both when the classifier's encoder is not the one the decoder learned
    to invert (a warning instead with `allow_mismatch`)."""
    if trained.get("params_sha256") == current.get("params_sha256"):
        return
    message = (
        f"{decoder_name} was trained to invert {describe_encoder(trained)}, but {classifier_name} is "
        f"{describe_encoder(current)}: its reconstructions would not show what this classifier sees; "
        f"use the classifier the decoder was trained on, train a decoder for this one, or pass --allow-encoder-mismatch"
    )
    if not allow_mismatch:
        raise EncoderMismatchError(message)
    warnings.warn(message.split("; use the")[0] + " (allowed by --allow-encoder-mismatch)", stacklevel=2)


@torch.no_grad()
def fingerprint_of_classifier(classifier: nn.Module, layer: str) -> dict:
    """The fingerprint of a loaded classifier (`load_classifier`) at `layer`."""
    config = getattr(classifier, "config", {}) or {}
    return encoder_fingerprint(
        classifier, arch=config.get("arch", type(classifier).__name__), layer=layer,
        weights=getattr(classifier, "weights_name", None), checkpoint=getattr(classifier, "checkpoint_path", None),
    )
