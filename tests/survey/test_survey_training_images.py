"""Issue 20: the study shows images neither model trained on, and its map scaling is an option the manifest states."""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image
from survey_testdata import save_checkpoints, write_predictions

from pv.cli import main as pv_main
from pv.data import VOCDataModule
from pv.models import Classifier, load_decoder
from pv.models.checkpoint import TRAINING_DATA_KEY, training_record
from pv.survey.build import build_study
from pv.survey.manifest import load_manifest
from pv.survey.training_images import TrainingImageError

from test_survey_build import GAP, SIZE, expected_explanations, read_png

SPECS = [  # (labels, predicted, top_class, bucket), one per shared VOC photo
    (["train"], ["train"], "train", "correct"), (["chair", "sofa"], ["chair", "sofa"], "chair", "correct"),
    (["car"], ["bus"], "bus", "incorrect"), (["aeroplane", "person"], ["bird"], "bird", "incorrect"),
]  # fmt: skip


@pytest.fixture(scope="module")
def voc_split(voc_root, tmp_path_factory) -> tuple[dict, list[Path]]:
    """The decoder's training record from a seeded half of the shared devkit's trainval (8 photos), and the other half."""
    data = VOCDataModule(root=str(voc_root), train_split="trainval", val_fraction=0.5, split_seed=0, image_size=32)
    return data.training_data(), [Path(p) for p in data.held_out().paths]


@pytest.fixture(scope="module")
def recorded_checkpoints(tmp_path_factory, voc_split) -> tuple[Path, Path]:
    """The tiny classifier and decoder, the decoder's checkpoint recording the devkit's training half (as pv fit writes it)."""
    classifier, decoder = save_checkpoints(tmp_path_factory.mktemp("recorded"))
    saved = torch.load(decoder, weights_only=False)
    saved[TRAINING_DATA_KEY] = voc_split[0]
    torch.save(saved, decoder)
    return classifier, decoder


def analysis_of(folder: Path, photos: list[Path]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [(p.stem, *spec) for p, spec in zip(photos, SPECS)]
    write_predictions(folder / "predictions.csv", rows, {p.stem: p for p in photos})
    return folder


def test_a_question_image_the_decoder_trained_on_is_refused_naming_it(tmp_path, voc_root, voc_split, recorded_checkpoints, capsys):
    record, held = voc_split
    trained = [p for p in sorted((voc_root / "VOCdevkit" / "VOC2012" / "JPEGImages").glob("*.jpg")) if p.stem in record["files"]]
    photos = [held[0], trained[0], held[1], trained[1]]  # questions 2 + 2: two were trained on
    analysis = analysis_of(tmp_path / "analysis", photos)
    args = ["survey", "build", "--analysis", str(analysis), "--classifier", str(recorded_checkpoints[0]), "--decoder", str(recorded_checkpoints[1]),
            "--out", str(tmp_path / "s"), "--correct", "2", "--incorrect", "2", "--panel-size", "32"]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert pv_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--allow-training-images" in err and str(recorded_checkpoints[1]) in err
    assert any(f"question image {p.stem} " in err for p in trained[:2]) and "2 of the 4 question images" in err
    assert not (tmp_path / "s" / "manifest.json").exists()
    with pytest.warns(UserWarning, match="2 question image\\(s\\) were trained on, allowed by --allow-training-images"):
        assert pv_main([*args, "--allow-training-images"]) == 0
    check = load_manifest(tmp_path / "s")["training_images"]
    assert (check["overlap"], check["allowed"], check["images_checked"]) == (2, True, 4)
    assert check["overlapping"] == sorted(p.stem for p in trained[:2])


def test_images_neither_model_trained_on_build_and_the_manifest_records_the_check(tmp_path, voc_split, recorded_checkpoints):
    record, held = voc_split
    analysis = analysis_of(tmp_path / "analysis", held[:2] + held[2:4])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the random classifier disagrees with the table; M has no record
        build_study(analysis, *recorded_checkpoints, tmp_path / "s", n_correct=2, n_incorrect=2, panel_size=32, progress=False)
    check = load_manifest(tmp_path / "s")["training_images"]
    assert (check["overlap"], check["overlapping"], check["allowed"], check["images_checked"]) == (0, [], False, 4)
    decoder = check["checkpoints"]["decoder"]
    assert decoder["recorded"] and decoder["n_images"] == len(record["files"]) and decoder["files_sha256"] == record["files_sha256"]
    assert decoder["overlap"] == 0 and decoder["path"] == str(recorded_checkpoints[1].resolve())
    assert check["checkpoints"]["classifier"] == {"path": str(recorded_checkpoints[0].resolve()), "recorded": False}


def test_the_classifiers_training_images_are_refused_too(tmp_path, tiny_images, analysis_dir):
    """An image-folder record (paths relative to its root), here on M: the same photos, copied elsewhere, still match."""
    classifier, decoder = save_checkpoints(tmp_path)
    moved = tmp_path / "moved" / "images"
    shutil.copytree(Path(tiny_images["img0"]).parent, moved)
    saved = torch.load(classifier, weights_only=False)
    saved[TRAINING_DATA_KEY] = training_record("image_folder", moved, "all files", None, ["img3.png"])
    torch.save(saved, classifier)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with pytest.raises(TrainingImageError, match="question image img3 .* the classifier"):
            build_study(analysis_dir, classifier, decoder, tmp_path / "s", n_correct=3, n_incorrect=3, panel_size=32, progress=False)


def test_world_splits_are_disjoint_so_world_studies_pass_the_check(tmp_path):
    """The generated world's M and decoder train on `train` (configs/data/world.yaml); its studies use `test` and `val`."""
    from pv.commands.analyze import load_datamodule
    from pv.data.world import write_world
    from pv.survey.questions import Prediction
    from pv.survey.training_images import check_training_images

    counts = {"train": 12, "val": 4, "test_unbiased": 3, "test_per_cause": 2, "observer_train": 2, "observer_val": 2}
    write_world(tmp_path / "world", seed=0, counts=counts)
    data = load_datamodule(Path(__file__).resolve().parents[2] / "configs" / "data" / "world.yaml", {"root": str(tmp_path / "world")})
    record = data.training_data()
    images = tmp_path / "world" / "VOCdevkit" / "VOC2007" / "JPEGImages"
    main = images.parent / "ImageSets" / "Main"
    splits = {name: set((main / f"{name}.txt").read_text().split()) for name in ("train", "val", "test")}
    assert set(record["files"]) == splits["train"] and len(splits["test"]) == 3 + 2 * 3  # unbiased + per planted cause
    assert not splits["train"] & splits["test"] and not splits["train"] & splits["val"] and not splits["val"] & splits["test"]
    classifier, _ = save_checkpoints(tmp_path)
    saved = torch.load(classifier, weights_only=False)
    saved[TRAINING_DATA_KEY] = record
    torch.save(saved, classifier)
    rows = lambda split: [Prediction(id=i, path=str(images / f"{i}.jpg"), labels=(), predicted=(), top_class="sun", top_prob=0.9, bucket="correct")
                          for i in sorted(splits[split])]  # noqa: E731
    assert check_training_images(rows("test") + rows("val"), {"classifier": classifier})["overlap"] == 0
    with pytest.raises(TrainingImageError, match="question image train_"):
        check_training_images(rows("train")[:1], {"classifier": classifier})


def test_map_normalisation_is_an_option_recorded_in_the_manifest(tmp_path, analysis_dir, checkpoints, study):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        build_study(analysis_dir, *checkpoints, tmp_path / "s", n_correct=2, n_incorrect=2, seed=3, panel_size=SIZE, progress=False,
                    normalization="max")  # fmt: skip
    manifest = load_manifest(tmp_path / "s")
    assert manifest["presentation"]["normalization"] == "max" and load_manifest(study)["presentation"]["normalization"] == "minmax"
    assert manifest["fillers"] == load_manifest(study)["fillers"] == "all"  # the authors' fillers: any other class
    classifier = Classifier.from_checkpoint(checkpoints[0]).eval()
    decoder, _ = load_decoder(checkpoints[1])
    differ = 0
    for q in manifest["questions"]:
        _, expected = expected_explanations(q, classifier, decoder, normalization="max")
        figure = read_png(tmp_path / "s" / q["images"]["gradcam"])[:, :, SIZE + GAP:]
        assert torch.allclose(figure, expected["gradcam"], atol=1 / 255 + 1e-6)
        differ += int((figure - read_png(study / q["images"]["gradcam"])[:, :, SIZE + GAP:]).abs().max() > 2 / 255)
    assert differ > 0  # min-max (the default) and max give other images
    with pytest.raises(ValueError, match="--normalization"):
        build_study(analysis_dir, *checkpoints, tmp_path / "t", n_correct=1, n_incorrect=1, panel_size=SIZE, progress=False, normalization="sum")
