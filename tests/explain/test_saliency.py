"""The uniform interface: every method, several batch sizes, a different target per image."""
from __future__ import annotations

import copy

import pytest
import torch

from pv.explain import SALIENCY, total_variation
from pv.models.loading import TorchvisionClassifier

FAST_OPTIONS = {"ig": {"n_steps": 4, "internal_batch_size": 16}, "lime": {"n_samples": 12, "n_segments": 8, "batch_size": 16}}


def images_for(batch: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", sorted(SALIENCY))
@pytest.mark.parametrize("batch", [1, 3])
def test_maps_are_normalised_at_input_size(name, batch, tiny_net):
    method = SALIENCY[name](tiny_net, **FAST_OPTIONS.get(name, {}), normalization="minmax")
    images = images_for(batch, size=32 if batch == 1 else 36)
    targets = torch.arange(batch) % 5  # a different class per image
    maps = method(images, targets)
    assert maps.shape == (batch, 1, *images.shape[-2:]) and maps.dtype == torch.float32
    assert maps.min() >= 0 and maps.max() <= 1
    assert torch.isfinite(maps).all()
    flat = maps.flatten(1)
    assert torch.allclose(flat.amax(1), torch.ones(batch)) and torch.allclose(flat.amin(1), torch.zeros(batch))
    # the default, "max": the positive part divided by its maximum (all 0 when nothing is positive)
    raw = method.attribute(images, targets)
    reduced = method.reduce(raw).float()
    by_max = SALIENCY[name](tiny_net, **FAST_OPTIONS.get(name, {}))(images, targets).flatten(1)
    positive = reduced.flatten(1).amax(1) > 0
    assert by_max.min() >= 0 and torch.allclose(by_max.amax(1), positive.float())
    assert raw.shape[0] == batch and raw.dim() == 4
    if batch > 1:  # targets differ per image: image 0 alone gives the same map as in the batch
        # Checked in float64. In float32 the kernels (chosen by batch size and CPU) round differently, by
        # ~1e-7; normalising by one pixel of a gradient map, or where Grad-CAM cancels to near zero,
        # scales that up, so a float32 check tests rounding. In float64 any difference is mixing.
        double = SALIENCY[name](copy.deepcopy(tiny_net).double(), **FAST_OPTIONS.get(name, {}))
        images = images.double()
        torch.testing.assert_close(double(images[:1], targets[:1]), double(images, targets)[:1], atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", sorted(SALIENCY))
def test_methods_work_under_a_callers_no_grad(name, tiny_net):
    """Lightning's predict loop runs steps under torch.no_grad: gradient methods must still get gradients."""
    method = SALIENCY[name](tiny_net, **FAST_OPTIONS.get(name, {}))
    images, targets = images_for(2), torch.tensor([1, 3])
    expected = method(images, targets)
    with torch.no_grad():
        torch.testing.assert_close(method(images, targets), expected)


@pytest.mark.parametrize("name", sorted(SALIENCY))
def test_target_out_of_range(name, tiny_net):
    method = SALIENCY[name](tiny_net, **FAST_OPTIONS.get(name, {}))
    with pytest.raises(ValueError, match="target index 5 .*out of range.*5 classes"):
        method(images_for(2), torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="one class index per image"):
        method(images_for(2), torch.tensor([0, 1, 2]))


def test_int_target_means_every_image(tiny_net):
    method = SALIENCY["gradcam"](tiny_net)
    torch.testing.assert_close(method(images_for(2), 3), method(images_for(2), torch.tensor([3, 3])))


def test_pv_classifier_and_any_torchvision_classifier(resnet_classifier):
    images, targets = images_for(2, 64), torch.tensor([1, 2])
    for model in (resnet_classifier, TorchvisionClassifier("mobilenet_v3_small", weights=None).eval()):
        for name in ("gradcam", "ig"):
            maps = SALIENCY[name](model, **FAST_OPTIONS.get(name, {}))(images, targets)
            assert maps.shape == (2, 1, 64, 64) and 0 <= maps.min() and maps.max() <= 1


def test_denoising_options_smooth_the_maps(tiny_net):
    images, targets = images_for(2), torch.tensor([0, 1])
    plain = SALIENCY["guided_backprop"](tiny_net)(images, targets)
    for options in ({"blur_sigma": 1.5}, {"tv_weight": 0.2}):
        smooth = SALIENCY["guided_backprop"](tiny_net, **options)(images, targets)
        assert smooth.shape == plain.shape and smooth.min() >= 0 and smooth.max() <= 1
        assert (total_variation(smooth) < 0.7 * total_variation(plain)).all()
    with pytest.raises(ValueError, match="blur_sigma"):
        SALIENCY["gradcam"](tiny_net, blur_sigma=-1)


def test_every_method_describes_itself():
    """Issue 9.3: a title and the options its constructor accepts, read from the signatures."""
    from pv.explain import Saliency

    titles = [method.__dict__.get("title") for method in SALIENCY.values()]
    assert all(isinstance(title, str) and title for title in titles) and len(set(titles)) == len(titles)
    for method in SALIENCY.values():
        options = method.options()
        assert {"blur_sigma", "tv_weight", "normalization"} <= set(options)  # inherited through **options
        assert all(parameter.kind is parameter.KEYWORD_ONLY for parameter in options.values())
    assert "layer" in SALIENCY["gradcam++"].options() and "layer" in SALIENCY["guided_gradcam"].options()
    assert "layer" not in SALIENCY["ig"].options() and "n_steps" in SALIENCY["ig"].options()
    assert set(Saliency.options()) == {"blur_sigma", "tv_weight", "normalization"}


def test_build_saliency_passes_each_method_the_options_it_accepts(tiny_net):
    from pv.explain import CAM, build_saliency

    given = {"layer": "features.0", "n_steps": 3, "blur_sigma": 0.5, "normalization": "minmax", "n_samples": 9}
    assert build_saliency("gradcam", tiny_net, **given).layer_name == "features.0"
    ig = build_saliency("ig", tiny_net, **given)
    assert ig.n_steps == 3 and ig.blur_sigma == 0.5 and ig.normalization == "minmax"

    class ChannelMax(CAM):  # a new CAM: its `layer` comes from CAM's signature, no table to update
        title = "channel max"

        def channel_weights(self, activations, gradients):
            return torch.ones_like(gradients.mean(dim=(2, 3), keepdim=True))

    SALIENCY["channel_max"] = ChannelMax
    try:
        method = build_saliency("channel_max", tiny_net, **given)
        assert method.layer_name == "features.0" and method.normalization == "minmax"
    finally:
        del SALIENCY["channel_max"]
    with pytest.raises(ValueError, match="Unknown saliency method 'nope'.*gradcam"):
        build_saliency("nope", tiny_net)


def test_a_method_registered_at_runtime_runs_through_pv_explain(monkeypatch, resnet_classifier, checkpoints, image_folder, tmp_path):
    """Issue 9.3: adding a method is one class and one SALIENCY entry; `pv explain` picks it up end to end."""
    from pv.cli import main as pv_main
    from pv.explain import LayerSaliency

    class Brightness(LayerSaliency):
        """Toy method: the image's brightness where the chosen layer is active (any layer, any target)."""

        title = "Toy brightness"

        def __init__(self, model, *, gain: float = 1.0, **options):
            super().__init__(model, **options)
            self.gain = gain

        def attribute(self, images, targets):
            self.targets(images, targets)
            return self.gain * images.mean(dim=1, keepdim=True)  # (B, 1, H, W)

    monkeypatch.setitem(SALIENCY, "toy", Brightness)
    out = tmp_path / "out"
    code = pv_main([
        "explain", "--classifier", str(checkpoints["classifier"]), "--images", str(image_folder), "--out", str(out),
        "--methods", "toy,gradcam", "--image-size", "64", "--topk", "1", "--layer", "layer3",
    ])  # fmt: skip
    assert code == 0
    assert len(list((out / "figures").rglob("*.png"))) == 3
    saved = torch.load(next((out / "maps").rglob("*.pt")), weights_only=True)
    assert "toy" in saved["maps"] and saved["maps"]["toy"].shape[-2:] == (64, 64)
    assert "Toy brightness" in (out / "index.html").read_text()
