"""`pv analyze`: buckets, rows, bad input, and the command on the shared VOC devkit."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch

from pv import ClassifierModule
from pv.analysis import confusion_counts
from pv.commands.analyze import load_datamodule, main
from pv.data import VOC_CLASSES, VOCDataModule
from pv.data.predictions import BUCKETS, PREDICTION_COLUMNS as ROW_COLUMNS, Prediction, bucket, make_rows, read_predictions, write_predictions
from pv.errors import PVError

from .conftest import REPO, save_untrained_checkpoint, tiny_classifier

VOC_DATA = str(REPO / "configs" / "data" / "voc.yaml")
TINY = ["--image-size", "32", "--batch-size", "4", "--num-workers", "0", "--device", "cpu"]


@pytest.mark.parametrize(
    "labels, predicted, expected",
    [
        ({3}, {3}, "correct"),
        ({3, 7}, {7, 3}, "correct"),
        ({3}, {5}, "incorrect"),
        ({3, 7}, {1, 2, 4}, "incorrect"),
        ({3, 7}, {3}, "partial"),  # a label missed
        ({3}, {3, 5}, "partial"),  # an extra class
        ({3, 7}, {7, 9}, "partial"),
        ({3}, set(), "empty"),
        ({3, 7}, set(), "empty"),
    ],
)
def test_bucket_rules(labels, predicted, expected):
    assert bucket(labels, predicted) == expected


def test_bucket_needs_a_label():
    with pytest.raises(ValueError, match="at least one true label"):
        bucket(set(), {1})


def test_rows_on_hand_made_probabilities():
    names = ["cat", "dog", "car"]
    probs = torch.tensor([[0.9, 0.2, 0.5], [0.1, 0.3, 0.2], [0.4, 0.45, 0.3]], dtype=torch.float64)
    labels = torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 0, 0]])
    rows = make_rows(["/x/a.jpg", "/x/b.jpg", "/y/c.png"], probs, labels, names, threshold=0.5)
    assert list(rows[0]) == [*ROW_COLUMNS, "prob_cat", "prob_dog", "prob_car"]
    assert [row["id"] for row in rows] == ["a", "b", "c"]
    assert rows[0] | {"path": None} == {
        "id": "a", "path": None, "labels": "cat;car", "predicted": "cat;car",  # 0.5 >= threshold counts
        "top_class": "cat", "top_prob": 0.9, "bucket": "correct", "prob_cat": 0.9, "prob_dog": 0.2, "prob_car": 0.5,
    }  # fmt: skip
    assert (rows[1]["predicted"], rows[1]["top_class"], rows[1]["bucket"]) == ("", "dog", "empty")
    assert (rows[2]["labels"], rows[2]["top_class"], rows[2]["bucket"]) == ("cat", "dog", "empty")
    rows = make_rows(["/y/c.png"], probs[2:], labels[2:], names, threshold=0.42)
    assert (rows[0]["predicted"], rows[0]["bucket"]) == ("dog", "incorrect")


def test_confusion_counts_true_class_against_top_class():
    labels = torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 0, 0]])
    probs = torch.tensor([[0.9, 0.1, 0.2], [0.8, 0.1, 0.0], [0.1, 0.2, 0.7]])
    # image 0 (cat, car) -> top cat; image 1 (dog) -> top cat; image 2 (cat) -> top car
    assert confusion_counts(labels, probs).tolist() == [[1, 0, 1], [1, 0, 0], [1, 0, 0]]


@pytest.mark.parametrize("threshold", ["0", "1", "1.2", "-0.1"])
def test_threshold_outside_unit_interval_is_one_line_error(threshold, capsys):
    from pv.cli import main as pv_main

    with pytest.raises(ValueError, match="--threshold must be in"):
        main(["--checkpoint", "missing.ckpt", "--data", VOC_DATA, "--threshold", threshold])
    assert pv_main(["analyze", "--checkpoint", "missing.ckpt", "--data", VOC_DATA, "--threshold", threshold]) == 2
    assert capsys.readouterr().err.startswith("pv analyze: error: --threshold must be in (0, 1)")


def test_missing_files_and_bad_configs(tmp_path, voc_root):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        main(["--checkpoint", "x.ckpt", "--data", str(tmp_path / "nope.yaml")])
    config = tmp_path / "bad.yaml"
    config.write_text("root: data\n")
    with pytest.raises(ValueError, match="bad.yaml has no data-module `class_path`"):
        main(["--checkpoint", "x.ckpt", "--data", str(config)])
    with pytest.raises(PVError, match="missing.ckpt"):
        main(["--checkpoint", str(tmp_path / "missing.ckpt"), "--data", VOC_DATA, "--root", str(voc_root), "--split", "trainval"])
    with pytest.raises(FileNotFoundError, match="ImageSets/Main/val.txt"):
        main(["--checkpoint", "x.ckpt", "--data", VOC_DATA, "--root", str(voc_root), "--split", "val"])


def test_data_config_must_name_a_data_module(tmp_path, capsys):
    """Issue 12.2: `class_path: os.system` was imported and called; only LightningDataModule subclasses are accepted."""
    from pv.cli import main as pv_main

    marker = tmp_path / "ran"
    for class_path, init_args in (("os.system", {"command": f"touch {marker}"}), ("pv.models.Decoder", {"in_channels": 8})):
        config = tmp_path / "evil.yaml"
        config.write_text(f"class_path: {class_path}\ninit_args: {init_args!r}\n".replace("'", '"'))
        assert pv_main(["analyze", "--checkpoint", "x.ckpt", "--data", str(config), "--out", str(tmp_path / "out")]) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and "Traceback" not in error
        assert error.startswith(f"pv analyze: error: {config}: Import path {class_path} does not correspond to a subclass of LightningDataModule")
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_predictions_schema_round_trip(tmp_path):
    """Issue 9.4: one definition of the table: what `pv analyze` writes is what the survey reads."""
    names = ["cat", "dog", "car"]
    probs = torch.tensor([[0.9, 0.2, 0.5], [0.1, 0.3, 0.2], [0.4, 0.55, 0.3], [0.1, 0.8, 0.1]], dtype=torch.float64)
    labels = torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 0, 0], [1, 1, 0]])
    rows = make_rows(["/x/a.jpg", "/x/b.jpg", "/y/c.png", "/y/d.png"], probs, labels, names, threshold=0.5)
    assert {row["bucket"] for row in rows} == set(BUCKETS)
    write_predictions(tmp_path, rows)
    read, classes = read_predictions(tmp_path)
    assert classes == names
    assert read[0] == Prediction("a", str(Path("/x/a.jpg").resolve()), ("cat", "car"), ("cat", "car"), "cat", 0.9, "correct")
    assert [r.bucket for r in read] == ["correct", "empty", "incorrect", "partial"]
    assert json.loads((tmp_path / "predictions.json").read_text())[3]["predicted"] == "dog"


def test_data_config_as_fit_config_follows_its_data_file():
    datamodule = load_datamodule(REPO / "configs" / "classifier" / "voc_resnet50.yaml", {"root": "/elsewhere", "batch_size": 3})
    assert isinstance(datamodule, VOCDataModule)
    assert (datamodule.root, datamodule.batch_size, datamodule.image_size, datamodule.val_split) == ("/elsewhere", 3, 224, "val")


def test_checkpoint_with_another_class_count_is_rejected(tmp_path, voc_root):
    path = save_untrained_checkpoint(ClassifierModule(tiny_classifier(num_classes=10)), tmp_path / "ten.ckpt")
    with pytest.raises(ValueError, match="ten.ckpt holds a 10-class classifier, but the data has 20 classes"):
        main(["--checkpoint", str(path), "--data", VOC_DATA, "--root", str(voc_root), "--split", "trainval", *TINY])


def read_outputs(out: Path) -> tuple[list[dict], list[dict], dict]:
    with open(out / "predictions.csv", newline="") as file:
        csv_rows = list(csv.DictReader(file))
    return csv_rows, json.loads((out / "predictions.json").read_text()), json.loads((out / "summary.json").read_text())


def test_analyze_the_shared_voc_devkit(fit_run, voc_root, tmp_path, capsys):
    """End to end: `pv fit` the debug config, then `pv analyze` its checkpoint: one row per image."""
    from pv.cli import main as pv_main

    checkpoint = fit_run / "checkpoints" / "last.ckpt"
    out = tmp_path / "analysis"
    threshold = 0.45
    assert pv_main(["analyze", "--checkpoint", str(checkpoint), "--data", VOC_DATA, "--root", str(voc_root),
                    "--split", "trainval", "--threshold", str(threshold), "--out", str(out), *TINY]) == 0  # fmt: skip
    csv_rows, json_rows, summary = read_outputs(out)
    ids = (voc_root / "VOCdevkit" / "VOC2012" / "ImageSets" / "Main" / "trainval.txt").read_text().split()
    assert [row["id"] for row in csv_rows] == [row["id"] for row in json_rows] == ids
    columns = [*ROW_COLUMNS, *(f"prob_{name}" for name in VOC_CLASSES)]
    assert list(csv_rows[0]) == list(json_rows[0]) == columns
    row = next(row for row in json_rows if row["id"] == "000003")
    assert row["labels"] == "chair;sofa" and Path(row["path"]).is_absolute() and Path(row["path"]).is_file()
    for row in json_rows:
        probs = [row[f"prob_{name}"] for name in VOC_CLASSES]
        assert row["predicted"] == ";".join(name for name, p in zip(VOC_CLASSES, probs) if p >= threshold)
        assert row["top_prob"] == max(probs) and row["top_class"] == VOC_CLASSES[probs.index(max(probs))]
        true = {VOC_CLASSES.index(n) for n in row["labels"].split(";")}
        said = {VOC_CLASSES.index(n) for n in row["predicted"].split(";") if n}
        assert row["bucket"] == bucket(true, said)
    assert [float(row["top_prob"]) for row in csv_rows] == [row["top_prob"] for row in json_rows]
    assert sum(summary["buckets"].values()) == summary["num_images"] == len(ids)
    assert summary["buckets"] == {b: sum(r["bucket"] == b for r in json_rows) for b in ("correct", "partial", "incorrect", "empty")}
    assert (summary["split"], summary["threshold"]) == ("trainval", threshold) and 0 < summary["map"] <= 1
    assert summary["per_class"]["chair"]["images"] == 2 and summary["per_class"]["cat"]["ap"] is None
    assert (out / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "8 images, split trainval" in printed and "empty" in printed and "tvmonitor" in printed


def copy_devkit(voc_root: Path, destination: Path) -> Path:
    shutil.copytree(voc_root / "VOCdevkit", destination / "VOCdevkit")
    return destination / "VOCdevkit" / "VOC2012" / "Annotations"


def test_xml_without_objects_is_skipped_and_unknown_class_named(trained_checkpoint, voc_root, tmp_path):
    annotations = copy_devkit(voc_root, tmp_path)
    xml = annotations / "000004.xml"
    text = xml.read_text()
    xml.write_text(text[: text.index("<object>")] + "</annotation>\n")  # no objects
    out = tmp_path / "out"
    args = ["--checkpoint", str(trained_checkpoint), "--data", VOC_DATA, "--root", str(tmp_path), "--split", "trainval", *TINY]
    with pytest.warns(UserWarning, match="000004.xml: no objects"):
        assert main([*args, "--out", str(out)]) == 0
    rows = json.loads((out / "predictions.json").read_text())
    assert len(rows) == 7 and "000004" not in {row["id"] for row in rows}

    xml.write_text(text.replace("<name>car</name>", "<name>unicorn</name>"))
    with pytest.raises(ValueError, match=r"unicorn.*000004\.xml"):
        main([*args, "--out", str(tmp_path / "out2")])


def test_help_describes_the_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: pv analyze")
    assert all(option in text for option in ("--checkpoint", "--data", "--split", "--threshold", "--out"))


def test_unreadable_image_is_named_and_gives_no_repeated_row(trained_checkpoint, voc_root, tmp_path):
    copy_devkit(voc_root, tmp_path)
    broken = tmp_path / "VOCdevkit" / "VOC2012" / "JPEGImages" / "000004.jpg"
    broken.write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    args = ["--checkpoint", str(trained_checkpoint), "--data", VOC_DATA, "--root", str(tmp_path), "--split", "trainval"]
    with pytest.warns(UserWarning, match="000004.jpg"):
        assert main([*args, *TINY, "--out", str(out)]) == 0
    rows = json.loads((out / "predictions.json").read_text())
    ids = [row["id"] for row in rows]
    assert len(ids) == len(set(ids)) == 7 and "000004" not in ids
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_images"] == sum(summary["buckets"].values()) == 7


def test_precision_flag_says_what_it_ran_and_probabilities_stay_close(trained_checkpoint, voc_root, tmp_path, capsys):
    """Issue 13.1: `--precision` on pv analyze; bf16 logits give fp32 probabilities close to fp32's, and each run
    prints the precision it used."""
    args = ["--checkpoint", str(trained_checkpoint), "--data", VOC_DATA, "--root", str(voc_root), "--split", "trainval", *TINY]
    probabilities = {}
    for precision in ("32", "bf16"):
        assert main([*args, "--precision", precision, "--out", str(tmp_path / precision)]) == 0
        assert f"precision {precision} (asked for) on cpu" in capsys.readouterr().out
        _, json_rows, summary = read_outputs(tmp_path / precision)
        probabilities[precision] = torch.tensor([[row[f"prob_{name}"] for name in VOC_CLASSES] for row in json_rows])
    assert probabilities["32"].shape == probabilities["bf16"].shape == (8, len(VOC_CLASSES))
    assert (probabilities["32"] - probabilities["bf16"]).abs().max() < 0.05


def test_analyze_defaults_to_fp32_so_buckets_do_not_depend_on_the_cpu():
    """The buckets feed the study: `auto` would run bf16 on AMX / AVX-512 BF16 CPUs and move probabilities."""
    from pv.commands.analyze import parser

    assert parser().get_default("precision") == "32"
