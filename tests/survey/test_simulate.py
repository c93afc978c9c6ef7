"""Machine observers: the fixed answer rule, the masking augmentation, and a simulated study that
`pv survey analyze` reads unchanged (four arms, one participant per observer and arm)."""
from __future__ import annotations

import json
import sqlite3
import warnings

import pytest
import torch

from pv.survey.questions import CANT_TELL_ID
from pv.survey.simulate import ARMS, THRESHOLD, answer, random_masks

CLASSES = ["sun", "tile", "pyramid", "ring"]
QUESTION = {"options": [{"id": "o1", "class": "tile"}, {"id": "o2", "class": "sun"}, {"id": "o3", "class": "ring"},
                        {"id": CANT_TELL_ID, "class": None}]}  # fmt: skip


def test_observer_picks_the_most_probable_offered_class():
    probs = torch.tensor([0.7, 0.9, 0.99, 0.1])  # pyramid is likelier but not offered
    assert answer(probs, QUESTION, CLASSES) == "o1"


def test_observer_cannot_tell_below_the_fixed_threshold():
    assert THRESHOLD == 0.5
    assert answer(torch.tensor([0.49, 0.3, 0.9, 0.2]), QUESTION, CLASSES) == CANT_TELL_ID
    assert answer(torch.tensor([0.5, 0.3, 0.9, 0.2]), QUESTION, CLASSES) == "o2"


def test_random_masks_are_smooth_maps_with_peak_one():
    masks = random_masks(16, 64, torch.Generator().manual_seed(0))
    assert masks.shape == (16, 1, 64, 64)
    assert masks.min() >= 0 and torch.allclose(masks.amax(dim=(1, 2, 3)), torch.ones(16))
    again = random_masks(16, 64, torch.Generator().manual_seed(0))
    assert torch.equal(masks, again)


@pytest.mark.slow
def test_simulated_study_is_analysed_unchanged(tmp_path):
    """World -> random narrow-ResNet M + decoder -> predictions -> `pv survey build` -> simulate -> analyze."""
    from pv.data.predictions import write_predictions
    from pv.data.world import CLASS_NAMES, read_truth, write_world
    from pv.models import Classifier, Decoder
    from pv.models.fingerprint import encoder_fingerprint
    from pv.survey.analyze import analyze
    from pv.survey.build import build_study
    from pv.survey.simulate import simulate

    world = tmp_path / "world"
    write_world(world, seed=0, counts={"train": 2, "val": 2, "test_unbiased": 4, "test_per_cause": 2, "observer_train": 16, "observer_val": 8})
    torch.manual_seed(0)
    clf = Classifier("narrow_resnet", num_classes=10, weights=None, class_names=list(CLASS_NAMES), input_size=64).eval()
    dec = Decoder(128, (16, 8, 8)).eval()
    cpath, dpath = tmp_path / "m.ckpt", tmp_path / "d.ckpt"
    torch.save({"state_dict": {"model." + k: v for k, v in clf.state_dict().items()}, "classifier_config": clf.config}, cpath)
    torch.save({"state_dict": {"decoder." + k: v for k, v in dec.state_dict().items()}, "decoder_config": dec.config,
                "encoder_config": {"arch": "narrow_resnet", "layer": "layer4", "weights": None, "checkpoint": str(cpath)},
                "encoder_fingerprint": encoder_fingerprint(clf, arch="narrow_resnet", layer="layer4", checkpoint=str(cpath))}, dpath)  # fmt: skip
    rows = []
    test = [t for t in read_truth(world).values() if t["split"] == "test"]
    for i, truth in enumerate(test[:6]):
        wrong = i % 2 == 1  # a hand-made table: half right, half wrong
        top = truth["implicated"] or next(c for c in CLASS_NAMES if c not in truth["labels"]) if wrong else truth["labels"][0]
        rows.append({"id": truth["id"], "path": str(world / "VOCdevkit/VOC2007/JPEGImages" / f"{truth['id']}.jpg"),
                     "labels": ";".join(truth["labels"]), "predicted": top, "top_class": top, "top_prob": 0.9,
                     "bucket": "incorrect" if wrong else ("correct" if truth["labels"] == [top] else "partial"),
                     **{f"prob_{c}": 0.9 if c == top else 0.1 for c in CLASS_NAMES}})  # fmt: skip
    write_predictions(tmp_path / "analysis", rows)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        build_study(tmp_path / "analysis", cpath, dpath, tmp_path / "study", n_correct=2, n_incorrect=3, panel_size=64, progress=False)
    summary = simulate(tmp_path / "study", world, tmp_path / "sim", n_observers=2, epochs=1, log=lambda line: None)
    assert set(summary["accuracy"]) == set(ARMS) and summary["threshold"] == THRESHOLD
    with sqlite3.connect(tmp_path / "sim" / "responses.sqlite") as conn:
        arms = [r[0] for r in conn.execute("SELECT arm FROM participants ORDER BY seq")]
        assert arms == list(ARMS) * 2
        assert conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0] == 2 * 4 * 5
        assert conn.execute("SELECT COUNT(*) FROM participants WHERE completed_at IS NULL").fetchone()[0] == 0
    report = analyze(tmp_path / "sim" / "responses.sqlite", tmp_path / "sim", tmp_path / "report")
    table = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert set(table["arms"]) == set(ARMS) and table["test_order"] == ["gradcam", "pv"]
    assert report.is_file() and (tmp_path / "sim" / "observers" / "observer_1.safetensors").is_file()
    causes = {line.split(",")[5] for line in (tmp_path / "sim" / "answers.csv").read_text().splitlines()[1:]}
    assert causes <= {"none", "shortcut", "lookalike", "texture_swap"}


def test_observers_only_trains_without_a_study_and_retrains_when_settings_change(tmp_path):
    """`--observers-only` needs just the world; a cache made with other epochs is retrained, not silently reused."""
    from pv.data.world import write_world
    from pv.survey.simulate import main

    world = tmp_path / "world"
    write_world(world, seed=0, counts={"train": 2, "val": 2, "test_unbiased": 2, "test_per_cause": 1, "observer_train": 8, "observer_val": 4})
    out = tmp_path / "sim"
    assert main(["--world", str(world), "--out", str(out), "--observers", "1", "--epochs", "1", "--observers-only"]) == 0
    weights = out / "observers" / "observer_0.safetensors"
    first = weights.stat().st_mtime_ns
    assert json.loads((out / "observers" / "settings.json").read_text())["epochs"] == 1
    assert main(["--world", str(world), "--out", str(out), "--observers", "1", "--epochs", "1", "--observers-only"]) == 0
    assert weights.stat().st_mtime_ns == first  # same settings: reused
    assert main(["--world", str(world), "--out", str(out), "--observers", "1", "--epochs", "2", "--observers-only"]) == 0
    assert weights.stat().st_mtime_ns != first and json.loads((out / "observers" / "settings.json").read_text())["epochs"] == 2


def test_simulate_without_study_names_the_flag(tmp_path):
    from pv.survey.errors import StudyError
    from pv.survey.simulate import main

    with pytest.raises(StudyError, match="--study"):
        main(["--world", str(tmp_path), "--out", str(tmp_path / "sim")])
