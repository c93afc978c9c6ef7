"""Perception Visualization: the one pipeline saliency -> normalise -> upsample -> combine.

`pv explain`, `pv evaluate-explanations`, `pv survey build`, the training callback and the benchmark
all call `PerceptionVisualizer`, so PV is composed in one place.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from pv.explain.cam import NORMALIZATIONS
from pv.explain.class_pv import class_discriminative_pv
from pv.explain.combine import perception_visualization
from pv.explain.gradcam import GradCAM, MeanActivation
from pv.explain.saliency import LayerRecorder, Saliency, as_targets, default_layer, resolve_layer
from pv.models.encoder import FrozenEncoder
from pv.models.fingerprint import check_encoder_match, fingerprint_of_classifier

__all__ = ["PerceptionVisualizer", "check_decoder", "perception_visualization"]


class PerceptionVisualizer:
    """Classifier M + decoder D -> reconstruction y = D(latent), saliency m, and PV (1 - m) + m y.

    The latent is M's own activation at `latent_layer` (default: the decoder checkpoint's
    `encoder_config["layer"]`, else the last feature layer); D must decode that shape, and (when the
    checkpoint records one) M's encoder must be the one D learned to invert (`EncoderMismatchError`
    naming both, a warning with `allow_encoder_mismatch`). `saliency` defaults to Grad-CAM at the
    latent layer (the paper's choice); maps are scaled by `normalization`: "max" (the authors' Grad-CAM
    function) or "minmax" (their survey images, `pv survey build`'s default).
    """

    def __init__(
        self,
        classifier: nn.Module,
        decoder: nn.Module,
        encoder_config: dict | None = None,
        saliency: Saliency | None = None,
        latent_layer: str | None = None,
        decoder_name: str = "the decoder",
        classifier_name: str = "the classifier",
        allow_encoder_mismatch: bool = False,
        normalization: str = "max",
    ):
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {', '.join(NORMALIZATIONS)}, got {normalization!r}")
        encoder_config = encoder_config or {}
        layer = latent_layer or encoder_config.get("layer") or default_layer(classifier)
        self.classifier, self.decoder, self.normalization = classifier, decoder, normalization
        self.latent_name, self.latent_module = resolve_layer(classifier, layer)
        check_decoder(classifier, self.latent_module, self.latent_name, decoder, encoder_config, decoder_name)
        check_encoder(classifier, encoder_config, decoder_name, classifier_name, allow_encoder_mismatch)
        self.saliency = saliency if saliency is not None else GradCAM(classifier, layer=self.latent_name, normalization=normalization)

    @classmethod
    def from_encoder(cls, encoder: FrozenEncoder, decoder: nn.Module, normalization: str = "max") -> "PerceptionVisualizer":
        """PV for a decoder during training: Grad-CAM of the encoder's own classifier when the encoder
        keeps its head (`FrozenEncoder.as_classifier`), else the latent's mean activation."""
        classifier = encoder.as_classifier()
        if classifier is not None:
            return cls(classifier, decoder, latent_layer=f"trunk.{classifier.feature_layer}", normalization=normalization)
        return cls(encoder, decoder, latent_layer="body", saliency=MeanActivation(encoder, layer="body"), normalization=normalization)

    @torch.no_grad()
    def latent(self, images: torch.Tensor) -> torch.Tensor:
        """M's activation at the latent layer: (B, 3, H, W) -> (B, C, h, w) (M stops there)."""
        with LayerRecorder(self.latent_module, stop=True) as recorder:
            return recorder.run(self.classifier, images)

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, latent: torch.Tensor | None = None) -> torch.Tensor:
        """y = D(latent), resized to the images' size: (B, 3, H, W) in [0, 1]."""
        latent = self.latent(images) if latent is None else latent
        reconstruction = self.decoder(latent).float()  # (B, 3, 2^n h, 2^n w)
        if reconstruction.shape[-2:] != images.shape[-2:]:
            reconstruction = F.interpolate(reconstruction, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return reconstruction.clamp(0, 1)

    @torch.no_grad()
    def top_classes(self, images: torch.Tensor, k: int = 1) -> torch.Tensor:
        """The k highest-scoring classes of each image (B, k); zeros for a class-agnostic saliency."""
        if getattr(self.saliency, "class_agnostic", False):
            return torch.zeros(len(images), k, dtype=torch.long, device=images.device)
        logits = self.classifier(images)  # (B, K)
        return logits.topk(min(k, logits.shape[1]), dim=1).indices

    def _fast_path(self, images: torch.Tensor, targets: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """Latent, targets (B, K) and raw maps (B, K, 1, h, w) from one forward pass, when the saliency is
        closed-form Grad-CAM at the latent layer; None otherwise."""
        saliency = self.saliency
        if not (isinstance(saliency, GradCAM) and saliency.fast and saliency.layer is self.latent_module):
            return None
        with torch.no_grad():
            features = self.classifier.forward_features(images)  # (B, C, h, w): the latent itself
            maps, logits = saliency.maps_from_features(features)  # (B, K_all, h, w), (B, K_all)
        if targets is None:
            targets = logits.argmax(dim=1, keepdim=True)  # (B, 1)
        targets = as_targets(targets.reshape(-1), targets.numel(), maps.shape[1], images.device).view(len(images), -1)  # (B, K)
        index = targets[..., None, None].expand(-1, -1, *maps.shape[2:])
        return features, targets, maps.gather(1, index).unsqueeze(2)

    def __call__(self, images: torch.Tensor, targets: torch.Tensor | None = None, class_discriminative: bool = False) -> dict[str, torch.Tensor]:
        """targets (B,) or (B, K) (None: each image's top class) -> {"targets" (B, K), "reconstruction"
        (B, 3, H, W), "saliency" (B, K, 1, H, W), "raw" (B, K, ...), "pv" (B, K, 3, H, W)} and, with
        class_discriminative, "class_reconstruction" and "class_pv" (B, K, 3, H, W)."""
        size = images.shape[-2:]
        fast = self._fast_path(images, targets)
        if fast is not None:
            latent, targets, raw = fast
        else:
            targets = self.top_classes(images, 1) if targets is None else targets.view(len(images), -1).to(images.device)  # (B, K)
            latent = self.latent(images)  # (B, C, h, w)
            raw = self.saliency.attribute_multi(images, targets)  # (B, K, c, h', w')
        b, k = targets.shape
        reconstruction = self.reconstruct(images, latent)  # (B, 3, H, W)
        maps = self.saliency.to_maps(raw.flatten(0, 1), size, self.normalization)  # (B*K, 1, H, W)
        reconstruction = reconstruction.float()  # PV is composed in fp32 whatever the models ran in
        pv = perception_visualization(reconstruction.repeat_interleave(k, dim=0), maps)  # (B*K, 3, H, W)
        out = {
            "targets": targets,
            "reconstruction": reconstruction,
            "saliency": maps.view(b, k, 1, *size),
            "raw": raw,
            "pv": pv.view(b, k, 3, *size),
        }
        if class_discriminative:
            low = raw.flatten(0, 1) if raw.shape[2] == 1 else maps  # the layer's own map when it has one channel
            with torch.no_grad():
                cls = class_discriminative_pv(latent.repeat_interleave(k, dim=0), self.decoder, low.float(), size, self.normalization)
            out["class_reconstruction"] = cls["reconstruction"].float().view(b, k, 3, *size)
            out["class_pv"] = cls["pv"].float().view(b, k, 3, *size)
        return out


def check_decoder(classifier: nn.Module, layer: nn.Module, layer_name: str, decoder: nn.Module, encoder_config: dict, decoder_name: str) -> None:
    """ValueError when D cannot decode M's latent at `layer` (channel count)."""
    parameter = next(classifier.parameters(), None)
    probe = torch.zeros(1, 3, 64, 64, device=parameter.device if parameter is not None else "cpu")
    with torch.no_grad(), LayerRecorder(layer, stop=True) as recorder:
        channels = recorder.run(classifier, probe).shape[1]
    expected = getattr(decoder, "in_channels", None)
    trained_on = f"{encoder_config.get('arch', '?')} {encoder_config.get('layer', '?')}" if encoder_config else "an unknown encoder"
    if expected is not None and expected != channels:
        raise ValueError(
            f"{decoder_name} decodes {expected}-channel latents ({trained_on}), but the classifier's layer "
            f"{layer_name!r} gives {channels} channels: train a decoder on this classifier's layer"
        )


def check_encoder(classifier: nn.Module, encoder_config: dict, decoder_name: str, classifier_name: str, allow_mismatch: bool) -> None:
    """Refuse a classifier whose encoder is not the one the decoder was trained to invert (the fingerprint
    in its checkpoint); a decoder saved before fingerprints existed gets a warning."""
    if not encoder_config:
        return
    trained = encoder_config.get("fingerprint")
    if trained is None:
        config = getattr(classifier, "config", {}) or {}
        arch = f" (trained on {encoder_config.get('arch', '?')}, the classifier is {config.get('arch', '?')})" if config.get("arch") != encoder_config.get("arch") else ""
        warnings.warn(
            f"{decoder_name} records no encoder fingerprint (saved by an older pv){arch}: cannot check that it was "
            f"trained on {classifier_name}; reconstructions may be meaningless if it was not",
            stacklevel=3,
        )
        return
    current = fingerprint_of_classifier(classifier, trained.get("layer") or encoder_config.get("layer"))
    check_encoder_match(trained, current, decoder_name=decoder_name, classifier_name=classifier_name, allow_mismatch=allow_mismatch)
