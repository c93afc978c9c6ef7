"""Perception Visualization: show the reconstruction where the model looks, white elsewhere."""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from pv.explain.saliency import LayerRecorder, Saliency, default_layer, resolve_layer


def perception_visualization(reconstruction: torch.Tensor, saliency: torch.Tensor) -> torch.Tensor:
    """p = (1 - m) + m * y.

    reconstruction y: (B, 3, H, W) in [0, 1]; saliency m: (B, 1, H, W) (or (B, H, W)) in [0, 1].
    Returns (B, 3, H, W) in [0, 1].
    """
    if saliency.dim() == 3:
        saliency = saliency.unsqueeze(1)  # (B, H, W) -> (B, 1, H, W)
    if saliency.shape[-2:] != reconstruction.shape[-2:] or saliency.shape[0] != reconstruction.shape[0]:
        raise ValueError(f"saliency {tuple(saliency.shape)} does not match reconstruction {tuple(reconstruction.shape)}")
    saliency = saliency.to(reconstruction.dtype)
    return (1 - saliency) + saliency * reconstruction  # (B, 3, H, W)


class PerceptionVisualizer:
    """Classifier M + decoder D -> reconstruction y = D(latent), saliency m, and PV (1 - m) + m y.

    The latent is M's own activation at `latent_layer` (default: the decoder checkpoint's
    `encoder_config["layer"]`, else the last feature layer); D must decode that shape, which is
    checked once here. `saliency` defaults to Grad-CAM at the latent layer (the paper's choice).
    """

    def __init__(
        self,
        classifier: nn.Module,
        decoder: nn.Module,
        encoder_config: dict | None = None,
        saliency: Saliency | None = None,
        latent_layer: str | None = None,
        decoder_name: str = "the decoder",
    ):
        from pv.explain.gradcam import GradCAM

        encoder_config = encoder_config or {}
        layer = latent_layer or encoder_config.get("layer") or default_layer(classifier)
        self.classifier, self.decoder = classifier, decoder
        self.latent_name, self.latent_module = resolve_layer(classifier, layer)
        check_decoder(classifier, self.latent_module, self.latent_name, decoder, encoder_config, decoder_name)
        self.saliency = saliency if saliency is not None else GradCAM(classifier, layer=self.latent_name)

    @torch.no_grad()
    def latent(self, images: torch.Tensor) -> torch.Tensor:
        """M's activation at the latent layer: (B, 3, H, W) -> (B, C, h, w) (M stops there)."""
        with LayerRecorder(self.latent_module, stop=True) as recorder:
            return recorder.run(self.classifier, images)

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, latent: torch.Tensor | None = None) -> torch.Tensor:
        """y = D(latent), resized to the images' size: (B, 3, H, W) in [0, 1]."""
        latent = self.latent(images) if latent is None else latent
        reconstruction = self.decoder(latent)  # (B, 3, 2^n h, 2^n w)
        if reconstruction.shape[-2:] != images.shape[-2:]:
            reconstruction = F.interpolate(reconstruction, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return reconstruction.clamp(0, 1)

    def __call__(self, images: torch.Tensor, targets: torch.Tensor, class_discriminative: bool = False) -> dict[str, torch.Tensor]:
        """targets (B,) or (B, K) -> {"reconstruction" (B, 3, H, W), "saliency" (B, K, 1, H, W),
        "raw" (B, K, ...), "pv" (B, K, 3, H, W)} and, with class_discriminative, "class_reconstruction"
        and "class_pv" (B, K, 3, H, W)."""
        from pv.explain.class_pv import class_discriminative_pv

        targets = targets.view(len(images), -1)  # (B, K)
        b, k = targets.shape
        size = images.shape[-2:]
        latent = self.latent(images)  # (B, C, h, w)
        reconstruction = self.reconstruct(images, latent)  # (B, 3, H, W)
        raw = self.saliency.attribute_multi(images, targets)  # (B, K, c, h', w')
        maps = self.saliency.to_maps(raw.flatten(0, 1), size)  # (B*K, 1, H, W)
        pv = perception_visualization(reconstruction.repeat_interleave(k, dim=0), maps)  # (B*K, 3, H, W)
        out = {
            "reconstruction": reconstruction,
            "saliency": maps.view(b, k, 1, *size),
            "raw": raw,
            "pv": pv.view(b, k, 3, *size),
        }
        if class_discriminative:
            low = raw.flatten(0, 1) if raw.shape[2] == 1 else maps  # the layer's own map when it has one channel
            with torch.no_grad():
                cls = class_discriminative_pv(latent.repeat_interleave(k, dim=0), self.decoder, low, size)
            out["class_reconstruction"] = cls["reconstruction"].view(b, k, 3, *size)
            out["class_pv"] = cls["pv"].view(b, k, 3, *size)
        return out


def check_decoder(classifier: nn.Module, layer: nn.Module, layer_name: str, decoder: nn.Module, encoder_config: dict, decoder_name: str) -> None:
    """ValueError when D cannot decode M's latent at `layer`; a warning when it was trained on another model's latent."""
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
    config = getattr(classifier, "config", {}) or {}
    if encoder_config and config.get("arch") and encoder_config.get("arch") and config["arch"] != encoder_config["arch"]:
        warnings.warn(f"{decoder_name} was trained on {trained_on} latents but the classifier is a {config['arch']}: reconstructions may be meaningless", stacklevel=2)
