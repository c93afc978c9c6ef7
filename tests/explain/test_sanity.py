"""Cascading randomisation: the order of layers, SSIM 1 before any change, explanations that move after it."""
from __future__ import annotations

import json

import torch

from pv.cli import main as pv_main
from pv.explain.sanity import cascade, cascading_randomization, randomize_
from pv.models import Classifier, Decoder
from pv.models.fingerprint import encoder_fingerprint


def tiny_pair(seed: int = 0):
    torch.manual_seed(seed)
    classifier = Classifier("narrow_resnet", num_classes=4, weights=None, class_names=list("abcd"), input_size=32).eval()
    decoder = Decoder(128, (16, 8, 8)).eval()  # 4x4 latent at 32 px -> 32 px
    config = {"arch": "narrow_resnet", "layer": "layer4", "weights": None, "checkpoint": None}
    return classifier, decoder, config


def test_cascade_goes_from_the_head_down_to_the_first_convolution():
    classifier, _, _ = tiny_pair()
    assert cascade(classifier) == ["head", "layer4", "layer3", "layer2", "layer1", "bn1", "conv1"]


def test_randomize_changes_every_parameter_of_the_module():
    classifier, _, _ = tiny_pair()
    before = {k: v.clone() for k, v in classifier.trunk.layer4.state_dict().items() if v.dtype.is_floating_point}
    with torch.no_grad():
        for p in classifier.trunk.layer4.parameters():
            p.add_(0.37)  # away from any default initialisation
    moved = {k: v.clone() for k, v in classifier.trunk.layer4.state_dict().items() if v.dtype.is_floating_point}
    randomize_(classifier.trunk.layer4, 5)
    after = classifier.trunk.layer4.state_dict()
    changed = [k for k in moved if "weight" in k and not torch.equal(moved[k], after[k])]
    assert len(changed) == len([k for k in before if "weight" in k])


def test_original_step_has_ssim_one_and_full_randomisation_changes_pv():
    classifier, decoder, config = tiny_pair()
    images = torch.rand(3, 3, 32, 32)
    result = cascading_randomization(classifier, decoder, config, images, seed=1)
    assert result["steps"][0] == "original" and result["steps"][-1] == "conv1"
    assert result["pv"].shape == result["gradcam"].shape == (8, 3)
    assert torch.allclose(result["pv"][0], torch.ones(3)) and torch.allclose(result["gradcam"][0], torch.ones(3))
    assert result["pv"][-1].mean() < 0.99  # the latent changed, so the reconstruction did
    assert classifier.head.weight.abs().sum() > 0 and cascading_randomization(classifier, decoder, config, images, seed=1)["pv"].allclose(result["pv"])  # seeded, and the input model untouched


def test_sanity_check_command_writes_json_and_plot(tmp_path, capsys):
    classifier, decoder, _ = tiny_pair()
    classifier_path, decoder_path = tmp_path / "c.ckpt", tmp_path / "d.ckpt"
    torch.save({"state_dict": {"model." + k: v for k, v in classifier.state_dict().items()}, "classifier_config": classifier.config}, classifier_path)
    torch.save({"state_dict": {"decoder." + k: v for k, v in decoder.state_dict().items()}, "decoder_config": decoder.config,
                "encoder_config": {"arch": "narrow_resnet", "layer": "layer4", "weights": None, "checkpoint": str(classifier_path)},
                "encoder_fingerprint": encoder_fingerprint(classifier, arch="narrow_resnet", layer="layer4", checkpoint=str(classifier_path))},
               decoder_path)  # fmt: skip
    folder = tmp_path / "images"
    folder.mkdir()
    from PIL import Image
    import numpy as np

    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    code = pv_main(["sanity-check", "--classifier", str(classifier_path), "--decoder", str(decoder_path), "--images", str(folder),
                    "--out", str(tmp_path / "out")])  # fmt: skip
    assert code == 0
    summary = json.loads((tmp_path / "out" / "sanity.json").read_text())
    assert summary["images"] == 3 and summary["pv_ssim"][0] == 1.0 and 0 <= summary["pv_ssim_randomized"] < 1
    assert (tmp_path / "out" / "sanity.png").stat().st_size > 1000
