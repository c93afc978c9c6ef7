"""`pv survey build`: selection, rendering of both arms and the manifest."""
from __future__ import annotations

import json
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from survey_testdata import TABLE, save_checkpoints, write_predictions

from pv.cli import main as pv_main
from pv.data import ImageTransform, load_image
from pv.errors import EncoderMismatchError
from pv.explain import class_activation_maps, heatmap_overlay, normalize_maps, perception_visualization, upsample_maps
from pv.models import Classifier, load_decoder
from pv.survey import texts
from pv.survey.build import build_study
from pv.survey.manifest import load_manifest
from pv.survey.questions import CANT_TELL_ID

SIZE = 64
GAP = 2  # max(2, 64 // 28)


def read_png(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1).float() / 255


def test_manifest_questions_options_and_images(study):
    manifest = load_manifest(study)
    questions = manifest["questions"]
    assert Counter(q["subset"] for q in questions) == {"correct": 2, "incorrect": 2}
    table = {t[0]: t for t in TABLE}
    for q in questions:
        image_id, labels, predicted, top, bucket = table[q["image_id"]]
        assert q["subset"] == bucket and q["top_class"] == top
        classes = [o["class"] for o in q["options"] if o["id"] != CANT_TELL_ID]
        assert len(set(classes)) == 4 and classes.count(top) == 1
        assert q["options"][-1]["id"] == CANT_TELL_ID
        assert next(o["class"] for o in q["options"] if o["id"] == q["answer"]) == top
        assert len(set(classes) & (set(labels) - {top})) == min(3, len(set(labels) - {top}))
        sizes = {arm: Image.open(study / q["images"][arm]).size for arm in manifest["arm_order"]}
        assert sizes == {"pv": (2 * SIZE + GAP, SIZE), "gradcam": (2 * SIZE + GAP, SIZE)}
    assert set(manifest["arms"]) == {"pv", "gradcam"}
    assert "Perception Visualization" in " ".join(manifest["arms"]["pv"]["introduction"])
    assert "shown only where the model looked" in " ".join(manifest["arms"]["gradcam"]["introduction"])
    assert manifest["presentation"]["gradcam"] == "masked" and manifest["question_order"] == "random"
    preview = (study / "preview.html").read_text()
    assert all(q["id"] in preview for q in questions)


def expected_explanations(q, classifier, decoder, size=SIZE, normalization="minmax"):
    """The top class's Grad-CAM (closed form at layer4, upsampled, min-max scaled: the authors' survey images) masking the
    reconstruction (PV), the photo (masked Grad-CAM) or coloured over the photo (overlay)."""
    image = ImageTransform(size)(load_image(q["image_path"]))[None]  # (1, 3, S, S), the whole photo resized
    top = classifier.class_names.index(q["top_class"])
    with torch.no_grad():
        features = classifier.forward_features(image)
        cam = class_activation_maps(features, classifier.head.weight)[:, top:top + 1]
        saliency = normalize_maps(upsample_maps(cam, (size, size)), normalization)
        return image, {
            "pv": perception_visualization(decoder(features), saliency)[0],
            "gradcam": perception_visualization(image, saliency)[0],  # (1 - m) + m x: the same masking as PV
            "overlay": heatmap_overlay(image, saliency)[0],
        }


def test_both_arms_mask_on_white_the_reconstruction_or_the_photo(study, checkpoints):
    manifest = load_manifest(study)
    assert (manifest["presentation"]["normalization"], manifest["presentation"]["upsampling"]) == ("minmax", "bilinear")
    classifier = Classifier.from_checkpoint(checkpoints[0]).eval()
    decoder, _ = load_decoder(checkpoints[1])
    for q in manifest["questions"]:
        image, expected = expected_explanations(q, classifier, decoder)
        for arm in ("pv", "gradcam"):
            figure = read_png(study / q["images"][arm])
            assert torch.allclose(figure[:, :, :SIZE], image[0], atol=1 / 255 + 1e-6), f"{q['id']} {arm}: left panel is not the input"
            assert torch.all(figure[:, :, SIZE:SIZE + GAP] == 1), "white gap between the panels"
            assert torch.allclose(figure[:, :, SIZE + GAP:], expected[arm], atol=1 / 255 + 1e-6), f"{q['id']} {arm}: wrong explanation"
        pv, gradcam = (read_png(study / q["images"][arm])[:, :, SIZE + GAP:] for arm in ("pv", "gradcam"))
        assert (pv - gradcam).abs().mean() > 0.05


@pytest.mark.slow
def test_overlay_presentation_is_an_option_recorded_in_the_manifest(tmp_path, analysis_dir, checkpoints):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        build_study(analysis_dir, *checkpoints, tmp_path / "s", n_correct=1, n_incorrect=1, panel_size=SIZE, progress=False,
                    gradcam_presentation="overlay")  # fmt: skip
    manifest = load_manifest(tmp_path / "s")
    assert manifest["presentation"]["gradcam"] == "overlay"
    assert "heatmap" in " ".join(manifest["arms"]["gradcam"]["introduction"])
    classifier = Classifier.from_checkpoint(checkpoints[0]).eval()
    decoder, _ = load_decoder(checkpoints[1])
    for q in manifest["questions"]:
        _, expected = expected_explanations(q, classifier, decoder)
        figure = read_png(tmp_path / "s" / q["images"]["gradcam"])
        assert torch.allclose(figure[:, :, SIZE + GAP:], expected["overlay"], atol=1 / 255 + 1e-6)


def test_wording_is_neutral_about_the_models_mistakes(study):
    manifest = load_manifest(study)
    words = " ".join([*(p for arm in manifest["arms"].values() for p in arm["introduction"]), manifest["question_text"]]).lower()
    words += " ".join(texts.GRADCAM_EXPLANATIONS.values()).lower()
    for priming in ("wrong", "mistake", "error", "not in the photo", "something else", "sometimes it is right", "incorrect"):
        assert priming not in words, priming
    page = (Path(texts.__file__).parent / "templates" / "question.html").read_text().lower()
    assert "even if the photo shows something else" not in page


@pytest.mark.slow
def test_a_decoder_of_another_classifier_is_refused_unless_allowed(tmp_path, analysis_dir, checkpoints, capsys):
    other_classifier, _ = save_checkpoints(tmp_path, seed=1)  # same arch, other parameters
    args = ["survey", "build", "--analysis", str(analysis_dir), "--classifier", str(other_classifier), "--decoder", str(checkpoints[1]),
            "--out", str(tmp_path / "s"), "--correct", "1", "--incorrect", "1", "--panel-size", "32"]  # fmt: skip
    assert pv_main(args) == 2
    err = capsys.readouterr().err
    assert str(checkpoints[1]) in err and str(other_classifier) in err and "--allow-encoder-mismatch" in err
    with pytest.raises(EncoderMismatchError):
        build_study(analysis_dir, other_classifier, checkpoints[1], tmp_path / "s", n_correct=1, n_incorrect=1, panel_size=32, progress=False)
    with pytest.warns(UserWarning, match="allowed by --allow-encoder-mismatch"):
        assert pv_main([*args, "--allow-encoder-mismatch"]) == 0
    assert (tmp_path / "s" / "manifest.json").is_file()


def test_the_classifier_sees_its_own_input_size_and_panels_have_their_own(tmp_path, analysis_dir, checkpoints):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        build_study(analysis_dir, *checkpoints, tmp_path / "s", n_correct=1, n_incorrect=1, panel_size=48, progress=False)
    manifest = load_manifest(tmp_path / "s")
    assert manifest["presentation"]["input_size"] == 64  # from the classifier checkpoint, not 224
    assert manifest["presentation"]["panel_size"] == 48
    assert Image.open(tmp_path / "s" / manifest["questions"][0]["images"]["pv"]).size == (2 * 48 + 2, 48)
    assert manifest["source"]["activation"] == "sigmoid"
    assert manifest["presentation"]["precision"] == "32"


@pytest.mark.slow
def test_bf16_precision_renders_close_to_fp32(tmp_path, analysis_dir, checkpoints, study):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        build_study(analysis_dir, *checkpoints, tmp_path / "s", n_correct=2, n_incorrect=2, seed=3, panel_size=SIZE, progress=False,
                    precision="bf16")  # fmt: skip
    manifest = load_manifest(tmp_path / "s")
    assert manifest["presentation"]["precision"] == "bf16"
    for q in manifest["questions"]:
        bf16, fp32 = read_png(tmp_path / "s" / q["images"]["pv"]), read_png(study / q["images"]["pv"])
        assert (bf16 - fp32).abs().mean() < 0.05  # the same picture up to bf16 rounding


def test_build_is_seeded_and_refuses_to_overwrite(tmp_path, study, analysis_dir, checkpoints):
    def build(**kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return build_study(analysis_dir, *checkpoints, tmp_path / "again", seed=3, panel_size=SIZE, progress=False, **kwargs)

    build(n_correct=2, n_incorrect=2)  # the same arguments as the `study` fixture
    first, again = (json.loads((folder / "manifest.json").read_text()) for folder in (study, tmp_path / "again"))
    assert again["questions"] == first["questions"]
    assert all((study / q["images"]["pv"]).read_bytes() == (tmp_path / "again" / q["images"]["pv"]).read_bytes() for q in first["questions"])
    with pytest.raises(ValueError, match="already exists; pass --overwrite"):
        build(n_correct=2, n_incorrect=2)
    build(n_correct=3, n_incorrect=1, overwrite=True)
    rebuilt = json.loads((tmp_path / "again" / "manifest.json").read_text())
    assert Counter(q["subset"] for q in rebuilt["questions"]) == {"correct": 3, "incorrect": 1}
    assert len(list((tmp_path / "again" / "images" / "pv").iterdir())) == 4  # the old images are gone


def test_build_errors_name_the_file(tmp_path, checkpoints, tiny_images):
    missing = dict(tiny_images, img0=tmp_path / "gone.png")
    write_predictions(tmp_path / "predictions.csv", TABLE, missing)
    with pytest.raises(FileNotFoundError, match="gone.png"):
        build_study(tmp_path, *checkpoints, tmp_path / "s", n_correct=3, n_incorrect=3, panel_size=SIZE, progress=False)
    too_few = "has 3 correctly and 3 wrongly classified images, but 4 correct and 1 incorrect questions were requested"
    with pytest.raises(ValueError, match=too_few) as error:
        build_study(tmp_path, *checkpoints, tmp_path / "s", n_correct=4, n_incorrect=1, panel_size=SIZE, progress=False)
    assert all(advice in str(error.value) for advice in ("--correct/--incorrect", "larger split", "--threshold"))
    with pytest.raises(ValueError, match="not a pv decoder checkpoint"):
        build_study(tmp_path, checkpoints[0], checkpoints[0], tmp_path / "s", n_correct=1, n_incorrect=1, progress=False)


def test_cli_builds_a_study_from_real_photos(tmp_path, voc_root, checkpoints, capsys):
    photos = sorted((voc_root / "VOCdevkit" / "VOC2012" / "JPEGImages").glob("*.jpg"))
    rows = [(p.stem, *spec) for p, spec in zip(photos, [
        (["train"], ["train"], "train", "correct"), (["chair", "sofa"], ["chair", "sofa"], "chair", "correct"),
        (["car"], ["bus"], "bus", "incorrect"), (["aeroplane", "person"], ["bird"], "bird", "incorrect"),
    ])]  # fmt: skip
    write_predictions(tmp_path / "predictions.csv", rows, {p.stem: p for p in photos})
    args = ["survey", "build", "--analysis", str(tmp_path), "--classifier", str(checkpoints[0]), "--decoder", str(checkpoints[1]),
            "--out", str(tmp_path / "study"), "--correct", "2", "--incorrect", "2", "--panel-size", "96", "--seed", "1"]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert pv_main(args) == 0
    manifest = load_manifest(tmp_path / "study")
    assert sorted(q["image_id"] for q in manifest["questions"]) == sorted(r[0] for r in rows)
    assert Image.open(tmp_path / "study" / manifest["questions"][0]["images"]["pv"]).size == (2 * 96 + 3, 96)
    assert "pv survey check" in capsys.readouterr().out
    assert pv_main(["survey", "build", "--analysis", str(tmp_path / "none"), "--classifier", "c", "--decoder", "d", "--out", "o"]) == 2
    assert "Predictions table not found" in capsys.readouterr().err


@pytest.mark.parametrize("command", [[], ["build"], ["check"], ["serve"], ["export"], ["analyze"], ["lookup"]])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        pv_main(["survey", *command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: pv survey" in capsys.readouterr().out
