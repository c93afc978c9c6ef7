"""The uniform interface: every method, several batch sizes, a different target per image."""
from __future__ import annotations

import copy

import pytest
import torch

from pv.explain import SALIENCY, total_variation
from pv.explain.loading import TorchvisionClassifier

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
