"""`pv survey analyze` and `export` on a hand-made response table with hand-computed results."""
from __future__ import annotations

import copy
import csv
import json
import math
from contextlib import closing

import pytest
from PIL import Image
from scipy.stats import mannwhitneyu

from pv.cli import main as pv_main
from survey import db
from survey.analyze import analyze, mann_whitney
from survey.manifest import load_manifest, write_manifest

# Per participant in arrival order (arms alternate pv, gradcam): per question subset, how many right,
# or None for a drop-out. Each subset has 2 questions in the test study.
PLAN = [
    {"correct": 2, "incorrect": 1},  # pv      1.0 / 0.5
    {"correct": 1, "incorrect": 0},  # gradcam 0.5 / 0.0
    {"correct": 2, "incorrect": 2},  # pv      1.0 / 1.0
    {"correct": 1, "incorrect": 1},  # gradcam 0.5 / 0.5
    {"correct": 1, "incorrect": 1},  # pv      0.5 / 0.5
    {"correct": 0, "incorrect": 0, "cant_tell": True},  # gradcam 0.0 / 0.0, all "I just can't tell"
    {"stop": 1},  # pv drop-out after one answer
    {"stop": 0},  # gradcam drop-out without answers
]
PV = {"correct": [1.0, 1.0, 0.5], "incorrect": [0.5, 1.0, 0.5]}
GRADCAM = {"correct": [0.5, 0.5, 0.0], "incorrect": [0.0, 0.5, 0.0]}


@pytest.fixture()
def responses(study, tmp_path):
    """A response database filled by PLAN through the same functions the app uses."""
    manifest = load_manifest(study)
    ids = [q["id"] for q in manifest["questions"]]
    path = tmp_path / "responses.sqlite"
    db.init_db(path, manifest)
    with closing(db.connect(path)) as conn:
        for plan in PLAN:
            p = db.create_participant(conn, manifest["arm_order"], lambda seq: {q: [] for q in ids})
            right = {"correct": plan.get("correct", 0), "incorrect": plan.get("incorrect", 0)}
            for n, q in enumerate(manifest["questions"]):
                if n == plan.get("stop", len(ids)):
                    break
                wrong = "cant_tell" if plan.get("cant_tell") else next(o["id"] for o in q["options"] if o["id"] not in (q["answer"], "cant_tell"))
                option = q["answer"] if right[q["subset"]] > 0 else wrong
                right[q["subset"]] -= option == q["answer"]
                assert db.record_answer(conn, p.id, ids, q["id"], option, 0) == "recorded"
    return path


def test_summary_matches_hand_computed_accuracies_and_scipy(responses, study, tmp_path):
    out = tmp_path / "report"
    assert pv_main(["survey", "analyze", "--db", str(responses), "--manifest", str(study), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    for arm, expected in (("pv", PV), ("gradcam", GRADCAM)):
        entry = summary["arms"][arm]
        assert (entry["participants"], entry["completed"], entry["dropouts"]) == (4, 3, 1)
        for subset, values in expected.items():
            mean = sum(values) / 3
            se = math.sqrt(sum((v - mean) ** 2 for v in values) / 2) / math.sqrt(3)
            assert entry["accuracy"][subset] == pytest.approx({"mean": mean, "se": se, "n": 3})
    assert summary["arms"]["gradcam"]["cant_tell"] == pytest.approx(1 / 3)
    assert summary["random_guess"] == 0.25
    for subset in ("correct", "incorrect"):
        direct = mannwhitneyu(PV[subset], GRADCAM[subset], alternative="greater")
        test = summary["tests"][subset]
        assert (test["u"], test["p"]) == (pytest.approx(float(direct.statistic)), pytest.approx(float(direct.pvalue)))
        assert test["u"] == 8.0  # hand count: pairs PV > Grad-CAM plus half the ties
        assert test["z"] == pytest.approx((8 - 4.5) / math.sqrt(4.5))  # ties 2, 3, 1 -> variance 9/12 * (7 - 30/30)
    report = (out / "report.md").read_text()
    assert "| Perception Visualization | 83.3% +- 16.7% (n=3) | 66.7% +- 16.7% (n=3) |" in report
    assert "| Grad-CAM | 33.3% +- 16.7% (n=3) | 16.7% +- 16.7% (n=3) |" in report
    assert "| Random guess | 25.0% | 25.0% |" in report
    for subset in ("correct", "incorrect"):
        assert f"](hist_{subset}.png)" in report
        with Image.open(out / f"hist_{subset}.png") as image:
            assert image.format == "PNG" and image.size[0] > 400
    with (out / "per_participant.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 8


def test_two_sided_and_reversed_alternatives_follow_scipy():
    x, y = [0.2, 0.4, 0.4, 0.9, 1.0], [0.1, 0.3, 0.4]
    for alternative in ("less", "two-sided"):
        direct = mannwhitneyu(x, y, alternative=alternative)
        ours = mann_whitney(x, y, alternative)
        assert (ours.u, ours.p) == (pytest.approx(direct.statistic), pytest.approx(direct.pvalue))
    assert mann_whitney([], y) is None


def test_export_writes_every_answer_and_the_drop_outs(responses, tmp_path, study):
    out = tmp_path / "responses.csv"
    assert pv_main(["survey", "export", "--db", str(responses), "--out", str(out)]) == 0
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    answers = [r for r in rows if r["question"]]
    assert len(answers) == 6 * 4 + 1 and len(rows) == len(answers) + 1
    assert {r["completed"] for r in rows if r["seq"] in ("6", "7")} == {"0"}
    assert all(r["correct"] == str(int(r["option"] == r["answer_key"])) for r in answers)
    key = {q["id"]: q for q in load_manifest(study)["questions"]}
    assert all(r["subset"] == key[r["question"]]["subset"] for r in answers)


def test_analysis_rejects_another_studys_manifest_and_missing_files(responses, study, tmp_path):
    manifest = load_manifest(study)
    other = copy.deepcopy(manifest)
    other["questions"][0]["answer"] = "cant_tell"
    folder = tmp_path / "other"
    folder.mkdir()
    (folder / "images").symlink_to(study / "images")
    write_manifest(other, folder)
    assert pv_main(["survey", "analyze", "--db", str(responses), "--manifest", str(folder), "--out", str(tmp_path / "r")]) == 2
    with pytest.raises(ValueError, match="holds responses to study"):
        analyze(responses, folder, tmp_path / "r")
    with pytest.raises(FileNotFoundError, match="nothing.sqlite"):
        analyze(tmp_path / "nothing.sqlite", study, tmp_path / "r")
