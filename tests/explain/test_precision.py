"""Precision (issue 13): what `auto` picks, and the bf16 accuracy guards (bf16 vs fp32 on the same inputs).

The guards use small random-weights models at small sizes so they run in seconds; they are not timed.
A saliency method whose guard fails in bf16 must be in `FP32_UNDER_AUTO`, so `auto` keeps it in fp32.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import pv.models.precision as precision
from pv.errors import PVError
from pv.explain import IntegratedGradients, Lime, PerceptionVisualizer, build_saliency
from pv.models import Classifier, Decoder, FrozenEncoder
from pv.models.precision import FP32_UNDER_AUTO, autocast, describe_precision, prepare_model, resolve_precision


def correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation per row of (N, ...) tensors."""
    a, b = a.flatten(1).double(), b.flatten(1).double()
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)


def in_both(model: nn.Module, run):
    """run(model) in fp32, and in bf16 autocast on a prepared (channels_last) copy: (fp32 result, bf16 result)."""
    fp32 = run(prepare_model(copy.deepcopy(model), "32", "cpu"))
    bf16_model = prepare_model(copy.deepcopy(model), "bf16", "cpu")
    with autocast("bf16", "cpu"):
        bf16 = run(bf16_model)
    return fp32, bf16


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    torch.manual_seed(0)
    return Classifier("resnet18", num_classes=4, weights=None).eval()


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    """Smooth random images (B, 3, 96, 96): blurred noise, so superpixels and gradients mean something."""
    from pv.explain import gaussian_blur

    return gaussian_blur(torch.rand(4, 3, 96, 96, generator=torch.Generator().manual_seed(0)), 3.0).clamp(0, 1)


def guard_or_fp32(name: str, passed: bool) -> None:
    """The rule: a method meets its bf16 guard, or auto keeps it in fp32."""
    if name in FP32_UNDER_AUTO:
        assert resolve_precision("auto", "cpu", method=name) == "32"
    else:
        assert passed, f"{name} fails its bf16 guard: add it to FP32_UNDER_AUTO or fix it"


# --- what auto picks ---


@pytest.mark.parametrize("flags, expected", [({"avx512_bf16"}, "bf16"), ({"amx_bf16", "avx512f"}, "bf16"), ({"avx2", "avx512f"}, "32"), (set(), "32")])
def test_auto_follows_the_cpu_flags(monkeypatch, flags, expected):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
    assert resolve_precision("auto", "cpu") == expected
    line = describe_precision("auto", "cpu")
    assert f"-> {expected}" in line and "\n" not in line
    if expected == "bf16":
        assert any(flag in line for flag in precision.CPU_BF16_FLAGS)
        for method in FP32_UNDER_AUTO:  # methods that fail their guard stay fp32, and the line says why
            assert resolve_precision("auto", "cpu", method=method) == "32" and method in describe_precision("auto", "cpu", method=method)
        assert resolve_precision("auto", "cpu", method="gradcam") == "bf16"


def test_explicit_precisions_and_bad_names(monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset())
    assert resolve_precision("32", "cpu") == resolve_precision("fp32", "cpu") == "32"
    assert resolve_precision("bf16", "cpu") == resolve_precision("bf16-mixed", "cpu") == "bf16"  # asked for: honoured
    with pytest.raises(PVError, match="--precision must be one of auto, 32, bf16"):
        resolve_precision("fp16", "cpu")


def test_autocast_and_prepare_model():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(2))
    images = torch.rand(2, 3, 8, 8)
    model(images)
    with autocast("32", "cpu"):
        assert model(images).dtype == torch.float32
    with autocast("bf16", "cpu"):
        assert model(images).dtype == torch.bfloat16
    model.train()
    prepared = prepare_model(model, "bf16", "cpu")
    assert not prepared.training and prepared[0].weight.dtype == torch.float32  # weights stay fp32 (autocast does bf16)
    assert prepared[0].weight.is_contiguous(memory_format=torch.channels_last)
    linear = prepare_model(nn.Linear(3, 2), "bf16", "cpu")
    assert linear.weight.is_contiguous()


# --- accuracy guards: bf16 vs fp32 on the same inputs ---


@pytest.mark.parametrize("name, options", [("gradcam", {}), ("gradcam", {"fast": False, "layer": "layer3"}), ("gradcam++", {"layer": "layer3"})])
def test_gradcam_guard(classifier, photos, name, options):
    targets = torch.tensor([0, 1, 2, 3])
    fp32, bf16 = in_both(classifier, lambda model: build_saliency(name, model, **options)(photos, targets))
    assert bf16.dtype == torch.float32
    r = correlation(fp32, bf16)
    guard_or_fp32(name, bool((r >= 0.99).all()))


@pytest.mark.parametrize("name", ["guided_backprop", "guided_gradcam"])
def test_pixel_gradient_guard(classifier, photos, name):
    """Pixel-level gradient maps: correlation >= 0.95, IG's map guard."""
    targets = torch.tensor([0, 1, 2, 3])
    fp32, bf16 = in_both(classifier, lambda model: build_saliency(name, model)(photos, targets))
    guard_or_fp32(name, bool((correlation(fp32, bf16) >= 0.95).all()))


def test_integrated_gradients_guard(classifier, photos):
    with torch.no_grad():
        differences = classifier(photos) - classifier(torch.zeros_like(photos))
    targets = differences.abs().argmax(1)
    difference = differences[torch.arange(len(photos)), targets]

    def run(model):
        return IntegratedGradients(model, n_steps=16).attribute(photos, targets)

    fp32, bf16 = in_both(classifier, run)
    completeness = (bf16.flatten(1).sum(1) - difference).abs() / difference.abs()  # against the fp32 model
    r = correlation(fp32.abs().sum(1), bf16.abs().sum(1))
    guard_or_fp32("ig", bool((completeness <= 0.02).all() and (r >= 0.95).all()))


def test_lime_guard(classifier, photos):
    targets = torch.tensor([0, 1, 2, 3])
    from pv.explain.lime import superpixels

    segments = superpixels(photos, "slic", 20)

    def run(model):
        return Lime(model, n_samples=96, n_segments=20).attribute(photos, targets)  # (B, 1, H, W)

    fp32, bf16 = in_both(classifier, run)
    same = 0
    for b in range(len(photos)):
        ids = segments[b].flatten()
        first = torch.zeros(int(ids.max()) + 1, dtype=torch.long).scatter_(0, ids, torch.arange(len(ids)))  # a pixel per superpixel
        per_segment = [x[b, 0].flatten()[first] for x in (fp32, bf16)]  # LIME paints one coefficient per superpixel
        top = [set(coefficients.topk(5).indices.tolist()) for coefficients in per_segment]
        same += top[0] == top[1]
    guard_or_fp32("lime", same > len(photos) // 2)


def test_pv_guard(classifier, photos):
    from pytorch_msssim import ssim

    torch.manual_seed(1)
    decoder = Decoder(512, (16, 8, 8, 8, 8)).eval()

    def run(model):
        # the decoder runs in the same precision as the classifier
        return PerceptionVisualizer(model, prepare_model(copy.deepcopy(decoder), "bf16" if torch.is_autocast_enabled("cpu") else "32", "cpu"))(photos)["pv"][:, 0]

    fp32, bf16 = in_both(classifier, run)
    assert bf16.dtype == torch.float32
    guard_or_fp32("pv", float(ssim(fp32, bf16, data_range=1.0)) >= 0.98)


def test_decoder_training_guard():
    """A decoder trained a few steps in bf16 (autocast, channels_last) reaches a loss within 5% of fp32's."""
    from pv.losses import PerceptionLoss

    images = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(0)
    encoder = FrozenEncoder("resnet18", "layer2", weights=None)  # (B, 128, 4, 4)
    loss = PerceptionLoss(ssim_reduction="mean")  # non-negative, so "within 5%" means something

    def train(bf16: bool) -> float:
        torch.manual_seed(3)
        decoder = Decoder(128, (32, 16, 8)).train()
        enc = copy.deepcopy(encoder)
        x = images
        if bf16:
            decoder, enc = decoder.to(memory_format=torch.channels_last), enc.to(memory_format=torch.channels_last)
            x = images.contiguous(memory_format=torch.channels_last)
        optimizer = torch.optim.Adam(decoder.parameters(), lr=1e-3)
        for _ in range(15):
            optimizer.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                terms = loss(decoder(enc(x)), x, enc)
            terms.total.backward()
            optimizer.step()
        with torch.no_grad():  # evaluated the same way (fp32) for both
            return float(loss(decoder.eval().float()(encoder(images)), images, encoder).total)

    fp32, bf16 = train(False), train(True)
    assert abs(bf16 - fp32) <= 0.05 * fp32, (fp32, bf16)


def test_maps_are_post_processed_in_fp32_inside_a_bf16_autocast(classifier, photos):
    """A caller's autocast (the commands wrap each step in it) must not push the blur and normalisation into bf16."""
    method = build_saliency("gradcam", classifier, blur_sigma=2.0)
    raw = method.attribute(photos, 0)  # (B, 1, h, w)
    expected = method.to_maps(raw, photos.shape[-2:])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        maps = method.to_maps(raw, photos.shape[-2:])
    assert maps.dtype == torch.float32
    torch.testing.assert_close(maps, expected)
