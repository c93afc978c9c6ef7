"""Integrated Gradients completeness; LIME determinism, batching and its surrogate fit."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from pv.explain import IntegratedGradients, Lime, superpixels
from pv.explain.lime import weighted_ridge


@pytest.mark.parametrize("baseline", ["black", "blurred"])
def test_ig_completeness(baseline, tiny_net):
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    ig = IntegratedGradients(tiny_net, baseline=baseline, baseline_sigma=4.0, n_steps=64, internal_batch_size=48)
    with torch.no_grad():
        differences = tiny_net(images) - tiny_net(ig.baseline(images))  # (B, K)
    targets = differences.abs().argmax(1)  # the class that changes most: a meaningful check, not 0 ~= 0
    difference = differences[torch.arange(3), targets]
    assert difference.abs().min() > 1e-3
    attributions = ig.attribute(images, targets)  # (B, 3, H, W)
    total = attributions.flatten(1).sum(1)
    assert ((total - difference).abs() <= 0.02 * difference.abs()).all(), (total, difference)


def test_ig_internal_batching_does_not_change_results(tiny_net):
    images, targets = torch.rand(4, 3, 32, 32), torch.tensor([1, 1, 3, 0])
    small = IntegratedGradients(tiny_net, n_steps=8, internal_batch_size=4).attribute(images, targets)
    large = IntegratedGradients(tiny_net, n_steps=8, internal_batch_size=256).attribute(images, targets)
    torch.testing.assert_close(small, large, rtol=1e-4, atol=1e-6)


def test_ig_baselines():
    images = torch.rand(2, 3, 16, 16)
    assert (IntegratedGradients(nn.Identity(), baseline="black").baseline(images) == 0).all()
    blurred = IntegratedGradients(nn.Identity(), baseline="blurred", baseline_sigma=3).baseline(images)
    assert blurred.shape == images.shape and blurred.std() < images.std()
    with pytest.raises(ValueError, match="baseline"):
        IntegratedGradients(nn.Identity(), baseline="white")


def blocks_image() -> torch.Tensor:
    """Four flat colour quadrants (easy superpixels), (1, 3, 32, 32)."""
    image = torch.zeros(1, 3, 32, 32)
    image[:, 0, :16, :16] = 1  # red top-left
    image[:, 1, :16, 16:] = 1  # green top-right
    image[:, 2, 16:, :16] = 1  # blue bottom-left
    image[:, :, 16:, 16:] = 0.5  # grey bottom-right
    return image


class RedDetector(nn.Module):
    """Class 0's logit grows with the red in the top-left quadrant; class 1's logit is 0."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        red = images[:, 0, :16, :16].mean((1, 2)) * 6 - 3
        return torch.stack([red, torch.zeros_like(red)], dim=1)


def test_lime_is_deterministic_under_a_seed(tiny_net):
    images, targets = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3)), torch.tensor([1, 3])
    first = Lime(tiny_net, n_samples=24, n_segments=10, seed=7).attribute(images, targets)
    again = Lime(tiny_net, n_samples=24, n_segments=10, seed=7).attribute(images, targets)
    other = Lime(tiny_net, n_samples=24, n_segments=10, seed=8).attribute(images, targets)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    # batching of perturbations does not change the answer
    chunked = Lime(tiny_net, n_samples=24, n_segments=10, seed=7, batch_size=5).attribute(images, targets)
    torch.testing.assert_close(chunked, first, rtol=1e-4, atol=1e-6)


def test_lime_finds_the_evidence():
    image = blocks_image()
    segments = superpixels(image, "slic", 4)
    assert len(segments.unique()) >= 4
    lime = Lime(RedDetector(), n_samples=64, n_segments=4, hide="black", activation="logit")
    raw = lime.attribute(image.expand(2, -1, -1, -1), torch.tensor([0, 1]))
    red = raw[0, 0, :16, :16].mean()
    assert red > 0.5 and raw[0, 0, 16:, :].abs().max() < 0.1 * red  # only the red quadrant matters for class 0
    assert raw[1].abs().max() < 1e-6  # class 1 ignores the image
    maps = lime(image, 0)
    assert maps[0, 0, :16, :16].min() == 1.0


def test_weighted_ridge_matches_sklearn():
    sklearn = pytest.importorskip("sklearn.linear_model")
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(0, 2, (2, 40, 6), generator=generator).float()
    y, w = torch.rand(2, 40, generator=generator), torch.rand(2, 40, generator=generator)
    ours = weighted_ridge(x, y, w, alpha=0.5)
    for b in range(2):
        model = sklearn.Ridge(alpha=0.5).fit(x[b].numpy(), y[b].numpy(), sample_weight=w[b].numpy())
        torch.testing.assert_close(ours[b], torch.from_numpy(model.coef_).float(), rtol=1e-4, atol=1e-5)


# --- issue 13.4 / 10.12: LIME and IG without per-sample loops, in inference mode, scored by the model's activation ---


class CountingNet(nn.Module):
    """Wraps a 5-class model; counts forward calls and records whether each ran in inference mode."""

    num_classes = 5

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net, self.calls, self.inference = net, 0, []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.inference.append(torch.is_inference_mode_enabled())
        return self.net(images)


class RedBoth(nn.Module):
    """Two classes whose logits both grow with the red in the top-left quadrant, class 1 twice as fast:
    sigmoid(logit_0) grows with red, softmax_0 = sigmoid(logit_0 - logit_1) falls with it."""

    activation = "sigmoid"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        red = images[:, 0, :16, :16].mean((1, 2))
        return torch.stack([red * 6 - 3, red * 12 - 6], dim=1)


def test_lime_scores_with_the_classifiers_own_activation():
    image, model = blocks_image(), RedBoth()
    own = Lime(model, n_samples=64, n_segments=4, hide="black").attribute(image, 0)  # the model says sigmoid
    softmax = Lime(model, n_samples=64, n_segments=4, hide="black", activation="softmax").attribute(image, 0)
    assert Lime(model).activation == "sigmoid" and Lime(nn.Identity()).activation == "softmax"
    assert own[0, 0, :16, :16].mean() > 0 > softmax[0, 0, :16, :16].mean()  # red supports class 0 only under sigmoid


def test_lime_segments_once_and_scores_all_classes_in_the_same_forward_passes(tiny_net, monkeypatch):
    import pv.explain.lime as lime_module

    segmentations = []
    real = lime_module.superpixels
    monkeypatch.setattr(lime_module, "superpixels", lambda *a, **k: segmentations.append(1) or real(*a, **k))
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    counted = CountingNet(tiny_net)
    lime = Lime(counted, n_samples=25, n_segments=10, batch_size=16)
    multi = lime.attribute_multi(images, torch.tensor([[1, 3, 0], [2, 2, 4]]))  # (B, K, 1, H, W)
    assert multi.shape == (2, 3, 1, 32, 32) and not multi.is_inference()
    assert len(segmentations) == 1  # one segmentation of the batch, shared by the three classes
    assert counted.calls == 1 + 3 and all(counted.inference)  # originals, then ceil(2 * 24 / 16) batches; no grad
    single = Lime(tiny_net, n_samples=25, n_segments=10, batch_size=16).attribute(images, torch.tensor([3, 2]))
    torch.testing.assert_close(multi[:, 1], single, rtol=1e-4, atol=1e-6)


def test_lime_batch_is_sized_from_memory(tiny_net, monkeypatch):
    import pv.explain.batching as batching

    images, targets = torch.rand(1, 3, 32, 32), torch.tensor([2])
    roomy = Lime(tiny_net, n_samples=20, n_segments=8).attribute(images, targets)
    monkeypatch.setattr(batching, "memory_budget", lambda device: 1)  # room for one perturbation at a time
    counted = CountingNet(tiny_net)
    tight = Lime(counted, n_samples=20, n_segments=8).attribute(images, targets)
    assert counted.calls == 20  # the original, then 19 batches of one
    torch.testing.assert_close(tight, roomy, rtol=1e-4, atol=1e-6)


def test_cpu_batch_keeps_the_largest_activation_within_the_mmap_threshold(tiny_net, monkeypatch):
    import pv.explain.batching as batching

    images, targets = torch.rand(1, 3, 32, 32), torch.tensor([2])
    roomy = Lime(tiny_net, n_samples=20, n_segments=8).attribute(images, targets)
    with batching.ActivationProbe(tiny_net) as probe:
        tiny_net(images[:1])
    monkeypatch.setattr(batching, "CPU_LARGEST_BYTES", 2 * probe.largest)  # two inputs' largest activation
    counted = CountingNet(tiny_net)
    bounded = Lime(counted, n_samples=20, n_segments=8).attribute(images, targets)
    assert counted.calls == 1 + 10  # the original, then 19 perturbations in batches of two
    torch.testing.assert_close(bounded, roomy, rtol=1e-4, atol=1e-6)
    assert batching.batch_size_for(1, torch.device("cpu"), largest_per_input=probe.largest) == 2
    assert batching.batch_size_for(1, torch.device("cpu")) == batching.MAX_BATCH["cpu"]  # no probe, no bound


def test_ig_adds_steps_only_where_completeness_fails(tiny_net):
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        targets = (tiny_net(images) - tiny_net(torch.zeros_like(images))).abs().argmax(1)
    ig = IntegratedGradients(tiny_net, n_steps=1, completeness_tolerance=1e-3, max_steps=256)
    attributions = ig.attribute(images, targets)
    assert (ig.completeness_error <= 1e-3).all()
    assert len(ig.steps.unique()) > 1  # per image: each got the steps it needed, not the batch's worst
    fixed = IntegratedGradients(tiny_net, n_steps=1, completeness_tolerance=None)
    fixed.attribute(images, targets)
    assert (fixed.steps == 1).all() and (fixed.completeness_error > 1e-3).any()
    again = IntegratedGradients(tiny_net, n_steps=int(ig.steps.max()), completeness_tolerance=None).attribute(images, targets)
    exact = ig.steps == ig.steps.max()
    torch.testing.assert_close(attributions[exact], again[exact], rtol=1e-4, atol=1e-6)


def test_ig_batches_image_step_pairs_without_a_per_image_loop(tiny_net):
    counted = CountingNet(tiny_net)
    IntegratedGradients(counted, n_steps=8, internal_batch_size=12, completeness_tolerance=None).attribute(torch.rand(3, 3, 32, 32), 1)
    assert counted.calls == 1 + 2  # endpoints (x and x' together), then 24 (image, step) pairs in batches of 12
    assert not any(counted.inference[1:])  # gradients need autograd


def test_ig_under_bf16_autocast_accumulates_in_fp32(tiny_net):
    images = torch.rand(2, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        attributions = IntegratedGradients(tiny_net, n_steps=8).attribute(images, 0)
    assert attributions.dtype == torch.float32
