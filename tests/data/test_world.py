"""The generated world: deterministic, readable by pv's VOC reader, planted causes at their designed rates."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pv.cli import main as pv_main
from pv.data import ImageTransform, voc_dataset
from pv.data.world import (
    CAUSES, CLASS_NAMES, LOOKALIKE_CLASS, SHORTCUT_BACKGROUND, SHORTCUT_CLASS, SHORTCUT_LEAK, SHORTCUT_RATE, SWAPS,
    class_by_name, plan_scene, render_scene, write_world,
)  # fmt: skip

TINY = {"train": 12, "val": 6, "test_unbiased": 4, "test_per_cause": 3, "observer_train": 5, "observer_val": 3}


def test_same_seed_same_image_other_seed_other_image():
    a, scene_a = render_scene(3, "train_none", 7, biased=True)
    b, scene_b = render_scene(3, "train_none", 7, biased=True)
    c, _ = render_scene(4, "train_none", 7, biased=True)
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and scene_a == scene_b
    assert not np.array_equal(a, c)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    write_world(out, seed=1, counts=TINY)
    return out


def test_world_is_read_by_pvs_voc_reader_with_its_labels(world):
    truth = {row["id"]: row for row in json.loads((world / "truth.json").read_text())}
    sizes = {"train": 12, "val": 6, "test": 4 + 3 * 3, "trainval": 18}
    for split, size in sizes.items():
        data = voc_dataset(world, ImageTransform(64), year="2007", image_set=split, classes=CLASS_NAMES)
        assert len(data) == size
        sample = data[0]
        assert sample["image"].shape == (3, 64, 64)
        row = truth[sample["path"].rsplit("/", 1)[1][:-4]]
        assert [CLASS_NAMES[i] for i in sample["label"].nonzero().flatten().tolist()] == row["labels"]
    observer = voc_dataset(world / "observer", ImageTransform(64), year="2007", image_set="train", classes=CLASS_NAMES)
    assert len(observer) == 5
    per_class = (world / "VOCdevkit/VOC2007/ImageSets/Main" / f"{CLASS_NAMES[0]}_test.txt").read_text().split("\n")
    assert len([line for line in per_class if line]) == sizes["test"]
    causes = [row["cause"] for row in truth.values() if row["split"] == "test"]
    assert sorted(set(causes)) == sorted(["none", *CAUSES]) and causes.count("shortcut") == 3


def test_truth_boxes_are_inside_the_image_and_labelled(world):
    for row in json.loads((world / "truth.json").read_text()):
        assert row["labels"] == sorted({b["name"] for b in row["boxes"]}, key=CLASS_NAMES.index)
        for box in row["boxes"] + row["distractors"]:
            assert 1 <= box["xmin"] < box["xmax"] <= 64 and 1 <= box["ymin"] < box["ymax"] <= 64


def test_shortcut_rates_in_training_are_as_designed():
    scenes = [plan_scene(0, "train_none", i, biased=True)[0] for i in range(3000)]
    with_a = [s for s in scenes if SHORTCUT_CLASS in s.labels]
    without_a = [s for s in scenes if SHORTCUT_CLASS not in s.labels]
    rate = np.mean([s.background == SHORTCUT_BACKGROUND for s in with_a])
    leak = np.mean([s.background == SHORTCUT_BACKGROUND for s in without_a])
    assert abs(rate - SHORTCUT_RATE) < 0.03 and abs(leak - SHORTCUT_LEAK) < 0.015
    unbiased = [plan_scene(0, "val_none", i)[0] for i in range(3000)]
    grass_given_a = np.mean([s.background == SHORTCUT_BACKGROUND for s in unbiased if SHORTCUT_CLASS in s.labels])
    assert abs(grass_given_a - 1 / 6) < 0.05  # no correlation: grass as often as any background


@pytest.mark.parametrize("cause", CAUSES)
def test_every_cause_image_carries_its_planted_signal(cause):
    for i in range(50):
        scene, objects = plan_scene(0, f"test_{cause}", i, cause)
        assert scene.cause == cause and len(scene.labels) == 1
        labelled = [o for o in objects if o["labelled"]]
        if cause == "shortcut":
            assert scene.background == SHORTCUT_BACKGROUND and SHORTCUT_CLASS not in scene.labels
        elif cause == "lookalike":
            tile = class_by_name(LOOKALIKE_CLASS)
            (fake,) = [o for o in objects if not o["labelled"]]
            assert (fake["colour"], fake["texture"]) == (tile.colour, tile.texture) and fake["shape"] != tile.shape
            assert LOOKALIKE_CLASS not in scene.labels and scene.background != SHORTCUT_BACKGROUND
        else:
            (obj,) = labelled
            worn = class_by_name(SWAPS[obj["name"]])
            assert obj["shape"] == class_by_name(obj["name"]).shape and (obj["colour"], obj["texture"]) == (worn.colour, worn.texture)
        assert scene.implicated and scene.implicated not in scene.labels


def test_pv_world_command_writes_the_layout(tmp_path, capsys):
    args = ["world", "--out", str(tmp_path), "--seed", "2"] + [x for k, v in TINY.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    assert pv_main(args) == 0
    assert "world seed 2" in capsys.readouterr().out
    design = json.loads((tmp_path / "world.json").read_text())
    assert design["seed"] == 2 and design["class_names"] == list(CLASS_NAMES)
    assert (tmp_path / "truth.csv").read_text().startswith("id,split,labels,background,cause")
    assert pv_main(["world", "--out", str(tmp_path), "--train", "-1"]) == 2
