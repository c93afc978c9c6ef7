"""The PV formula, the PerceptionVisualizer pipeline, class-discriminative PV and the overlays."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from pv.explain import (
    GradCAM, PerceptionVisualizer, class_discriminative_pv, colorize, heatmap_overlay, mask_image, perception_visualization,
)
from pv.models import Decoder
from pv.models.fingerprint import encoder_fingerprint

ENCODER = {"arch": "resnet18", "layer": "layer4", "weights": None, "checkpoint": None}


def test_pv_formula_exactly():
    generator = torch.Generator().manual_seed(0)
    y, m = torch.rand(2, 3, 8, 8, generator=generator), torch.rand(2, 1, 8, 8, generator=generator)
    p = perception_visualization(y, m)
    assert torch.equal(p, (1 - m) + m * y)
    assert torch.equal(perception_visualization(y, m[:, 0]), p)  # (B, H, W) saliency too
    assert torch.equal(perception_visualization(y, torch.ones_like(m)), y)  # m = 1: the reconstruction
    assert torch.equal(perception_visualization(y, torch.zeros_like(m)), torch.ones_like(y))  # m = 0: white
    with pytest.raises(ValueError, match="does not match"):
        perception_visualization(y, m[:, :, :4])


def test_overlays():
    images, maps = torch.rand(2, 3, 8, 8), torch.rand(2, 1, 8, 8)
    over = heatmap_overlay(images, maps, colormap="viridis", alpha=0.3)
    assert over.shape == (2, 3, 8, 8) and torch.allclose(heatmap_overlay(images, maps, alpha=0.0), images)
    assert torch.equal(mask_image(images, maps), maps * images)


def test_colorize_follows_the_colormap_continuously():
    import matplotlib

    values = torch.tensor([0.0, 0.3, 0.5, 1.0]).view(1, 1, 2, 2)
    expected = torch.tensor(matplotlib.colormaps["jet"](values.flatten().numpy())[:, :3], dtype=torch.float32)
    colours = colorize(values)  # (1, 3, 2, 2)
    torch.testing.assert_close(colours.flatten(2)[0].T, expected, atol=0.01, rtol=0)
    # a tiny change of the map gives a tiny change of colour (no jump between colormap entries)
    base = torch.full((1, 1, 1, 1), 127.5 / 255 - 5e-6)  # just below a rounding boundary of a 256-entry table
    assert (colorize(base + 1e-5) - colorize(base)).abs().max() < 1e-3


class Recorder(nn.Module):
    """A stand-in decoder that remembers its input and paints a constant image."""

    in_channels = 512

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        self.latent = latent
        return torch.full((len(latent), 3, latent.shape[2] * 32, latent.shape[3] * 32), 0.25)


def test_visualizer_pipeline(resnet_classifier, small_decoder):
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    visualizer = PerceptionVisualizer(resnet_classifier, small_decoder, {**ENCODER, "fingerprint": encoder_fingerprint(resnet_classifier, **ENCODER)})
    assert visualizer.latent_name == "trunk.layer4"
    targets = torch.tensor([[0, 1], [3, 2]])
    out = visualizer(images, targets, class_discriminative=True)
    assert out["reconstruction"].shape == (2, 3, 64, 64)
    assert out["saliency"].shape == (2, 2, 1, 64, 64) and out["pv"].shape == (2, 2, 3, 64, 64)
    assert out["class_pv"].shape == (2, 2, 3, 64, 64)
    # PV = (1 - m) + m y with the Grad-CAM map of each class
    expected_maps = GradCAM(resnet_classifier)(images.repeat_interleave(2, 0), targets.flatten()).view(2, 2, 1, 64, 64)
    torch.testing.assert_close(out["saliency"], expected_maps)
    torch.testing.assert_close(out["pv"], (1 - expected_maps) + expected_maps * out["reconstruction"][:, None])
    torch.testing.assert_close(out["reconstruction"], small_decoder(resnet_classifier.forward_features(images)))


def test_class_pv_decodes_the_weighted_latent():
    latent = torch.rand(2, 512, 2, 2) + 0.1
    cam = torch.tensor([[[[0.0, 2.0], [1.0, 0.0]]], [[[4.0, 0.0], [0.0, 0.0]]]])  # (B, 1, 2, 2)
    decoder = Recorder()
    out = class_discriminative_pv(latent, decoder, cam, (64, 64))
    mask = torch.tensor([[[[0.0, 1.0], [0.5, 0.0]]], [[[1.0, 0.0], [0.0, 0.0]]]])  # per image min-max
    torch.testing.assert_close(decoder.latent, latent * mask)
    torch.testing.assert_close(out["mask"], mask)
    assert out["pv"].shape == (2, 3, 64, 64)
    assert out["pv"][1, :, -1, -1].eq(1).all()  # no saliency: white
    # an input-resolution map is averaged into the latent's cells
    out = class_discriminative_pv(latent, decoder, torch.nn.functional.interpolate(cam, scale_factor=32.0), (64, 64))
    torch.testing.assert_close(out["mask"], mask)


def test_decoder_that_does_not_match_the_layer(resnet_classifier):
    with pytest.raises(ValueError, match=r"decodes 256-channel latents \(resnet18 layer4\).*'trunk.layer4' gives 512"):
        PerceptionVisualizer(resnet_classifier, Decoder(256, (8, 8)), ENCODER)
    with pytest.raises(ValueError, match="'layer7' not found"):
        PerceptionVisualizer(resnet_classifier, Recorder(), {**ENCODER, "layer": "layer7"})
    with pytest.warns(UserWarning, match=r"no encoder fingerprint.*trained on resnet50, the classifier is resnet18"):
        PerceptionVisualizer(resnet_classifier, Recorder(), {**ENCODER, "arch": "resnet50"})


def save_decoder_trained_on(path, encoder, decoder) -> str:
    """A decoder checkpoint as `pv fit` writes it, recording the encoder it inverts."""
    torch.save({
        "state_dict": {"decoder." + k: v for k, v in decoder.state_dict().items()}, "decoder_config": decoder.config,
        "encoder_config": encoder.config, "encoder_fingerprint": encoder.fingerprint(),
    }, path)  # fmt: skip
    return str(path)


def test_decoder_of_another_random_resnet_is_refused(tmp_path, small_decoder):
    """Issue 10.1: a decoder trained on one random-weights ResNet-18 does not explain another seed's."""
    from pv.errors import EncoderMismatchError
    from pv.models import FrozenEncoder, load_classifier, load_decoder

    torch.manual_seed(0)
    path = save_decoder_trained_on(tmp_path / "dec.ckpt", FrozenEncoder("resnet18", "layer4", weights=None), small_decoder)
    decoder, encoder_config = load_decoder(path)
    torch.manual_seed(0)
    same = load_classifier(arch="resnet18", weights=None)
    torch.manual_seed(1)
    other = load_classifier(arch="resnet18", weights=None)
    PerceptionVisualizer(same, decoder, encoder_config, decoder_name=f"decoder {path}")  # its own encoder: accepted
    with pytest.raises(EncoderMismatchError, match=r"decoder .*dec.ckpt was trained to invert resnet18 layer4 \(random init.*but M is resnet18"):
        PerceptionVisualizer(other, decoder, encoder_config, decoder_name=f"decoder {path}", classifier_name="M")
    with pytest.warns(UserWarning, match="allow-encoder-mismatch"):
        PerceptionVisualizer(other, decoder, encoder_config, allow_encoder_mismatch=True)


def test_training_figure_uses_the_pipeline(small_decoder):
    """Issue 9.2: the callback's PV rows are the pipeline's output (Grad-CAM of the encoder's classifier)."""
    from pv.explain.gradcam import MeanActivation
    from pv.lit.callbacks import pv_rows
    from pv.models import FrozenEncoder

    torch.manual_seed(0)
    encoder = FrozenEncoder("resnet18", "layer4", weights=None)
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    rows = pv_rows(PerceptionVisualizer.from_encoder(encoder, small_decoder), images)  # inputs, reconstructions, saliency, PVs
    classifier = encoder.as_classifier()  # shares the encoder's modules
    assert classifier.trunk is encoder.body and classifier.head is encoder.head
    top = classifier(images).argmax(1)
    expected = PerceptionVisualizer(classifier, small_decoder)(images, top)
    torch.testing.assert_close(rows[2], expected["saliency"][:, 0].expand(-1, 3, -1, -1))
    torch.testing.assert_close(rows[3], expected["pv"][:, 0])
    # an encoder cut before the head: the latent's mean activation, still through the pipeline
    headless = FrozenEncoder("resnet18", "layer3", weights=None)
    result = PerceptionVisualizer.from_encoder(headless, Decoder(256, (8, 8, 8, 8)))(images)
    assert isinstance(PerceptionVisualizer.from_encoder(headless, Decoder(256, (8, 8, 8, 8))).saliency, MeanActivation)
    assert result["pv"].shape == (2, 1, 3, 64, 64) and result["saliency"].amax((2, 3, 4)).eq(1).all()


def test_pipeline_normalises_by_the_maximum_unless_told_otherwise(resnet_classifier, small_decoder):
    """Issue 10.13: the pipeline's maps are divided by their maximum (the authors'), min-max on request."""
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    targets = torch.tensor([0, 1])
    raw = GradCAM(resnet_classifier).attribute(images, targets)  # (B, 1, h, w), >= 0
    upsampled = torch.nn.functional.interpolate(raw, size=(64, 64), mode="bilinear", align_corners=False)
    by_max = PerceptionVisualizer(resnet_classifier, small_decoder)(images, targets)["saliency"][:, 0]
    torch.testing.assert_close(by_max, upsampled / upsampled.amax((2, 3), keepdim=True))
    minmax = PerceptionVisualizer(resnet_classifier, small_decoder, normalization="minmax")(images, targets)["saliency"][:, 0]
    low = upsampled.amin((2, 3), keepdim=True)
    torch.testing.assert_close(minmax, (upsampled - low) / (upsampled.amax((2, 3), keepdim=True) - low))
