"""`pv survey analyze` and `export`: the paper's tests per subset, exclusions, and hand-computed results."""
from __future__ import annotations

import copy
import csv
import json
import math
from contextlib import closing

import pytest
from PIL import Image
from scipy.stats import mannwhitneyu, norm

from pv.cli import main as pv_main
from pv.survey import db
from pv.survey.analyze import analyze
from pv.survey.manifest import load_manifest, write_manifest
from pv.survey.stats import mann_whitney

# Per participant in arrival order (arms alternate pv, gradcam): per subset how many of its 2 questions are
# right, or a drop-out. PV wins on wrongly classified images, Grad-CAM on correctly classified ones (as in the paper).
PLAN = [
    {"correct": 1, "incorrect": 2},  # pv      0.5 / 1.0
    {"correct": 2, "incorrect": 1},  # gradcam 1.0 / 0.5
    {"correct": 1, "incorrect": 2},  # pv      0.5 / 1.0
    {"correct": 2, "incorrect": 0},  # gradcam 1.0 / 0.0
    {"correct": 0, "incorrect": 1},  # pv      0.0 / 0.5
    {"correct": 1, "incorrect": 0, "cant_tell": True},  # gradcam 0.5 / 0.0, wrong answers are "I just can't tell"
    {"stop": 1},  # pv drop-out after one answer
    {"stop": 0},  # gradcam drop-out without answers
]
PV = {"correct": [0.5, 0.5, 0.0], "incorrect": [1.0, 1.0, 0.5]}
GRADCAM = {"correct": [1.0, 1.0, 0.5], "incorrect": [0.5, 0.0, 0.0]}


def fill(path, manifest, plan, checks: dict | None = None, seconds: dict | None = None):
    """Answers through the database functions the app uses; `checks` maps seq -> option for the attention checks,
    `seconds` seq -> the time each answer took (views backdated)."""
    items = [q["id"] for q in manifest["questions"]] + [c["id"] for c in manifest.get("attention_checks", [])]
    with closing(db.connect(path)) as conn:
        for seq, p in enumerate(plan):
            made = db.create_participant(conn, manifest["arm_order"], lambda _: (items, {i: [] for i in items}))
            right = {"correct": p.get("correct", 0), "incorrect": p.get("incorrect", 0)}
            for n, q in enumerate(manifest["questions"]):
                if n == p.get("stop", len(items)):
                    break
                wrong = "cant_tell" if p.get("cant_tell") else next(o["id"] for o in q["options"] if o["id"] not in (q["answer"], "cant_tell"))
                option = q["answer"] if right[q["subset"]] > 0 else wrong
                right[q["subset"]] -= option == q["answer"]
                if seconds and seq in seconds:
                    shown = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?)"
                    conn.execute(f"INSERT INTO views VALUES (?, ?, {shown})", (made.id, q["id"], f"-{seconds[seq]} seconds"))
                assert db.record_answer(conn, made.id, items, q["id"], option, 0) == "recorded"
            if "stop" not in p:
                for c in manifest.get("attention_checks", []):
                    assert db.record_answer(conn, made.id, items, c["id"], (checks or {}).get(seq, c["answer"]), 0) == "recorded"


@pytest.fixture()
def responses(study, tmp_path):
    manifest = load_manifest(study)
    path = tmp_path / "responses.sqlite"
    db.init_db(path, manifest)
    fill(path, manifest, PLAN)
    return path


def test_full_analysis_uses_the_papers_test_per_subset(responses, study, tmp_path):
    out = tmp_path / "report"
    assert pv_main(["survey", "analyze", "--db", str(responses), "--manifest", str(study), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_order"] == ["gradcam", "pv"]
    expected = {"incorrect": ("less", -1), "correct": ("greater", 1)}  # H1: Acc(GC) < Acc(PV) on wrongly, > on correctly classified
    for subset, (alternative, sign) in expected.items():
        test = summary["tests"][subset]
        direct = mannwhitneyu(GRADCAM[subset], PV[subset], alternative=alternative, method="asymptotic", use_continuity=True)
        assert test["alternative"] == alternative
        assert (test["u"], test["p"]) == (pytest.approx(float(direct.statistic)), pytest.approx(float(direct.pvalue)))
        assert math.copysign(1, test["z"]) == sign
        assert test["p"] == pytest.approx(norm.cdf(test["z"]) if alternative == "less" else norm.sf(test["z"]))  # same approximation
        assert test["p"] < 0.1
    assert summary["tests"]["incorrect"]["u"] == 0.5 and summary["tests"]["correct"]["u"] == 8.0  # hand count: pairs GC > PV + ties / 2
    # tie-corrected sd: values counted 2, 2, 2 (incorrect) and 2, 3, 1 (correct) -> tie terms 18 and 30
    assert summary["tests"]["incorrect"]["z"] == pytest.approx((0.5 - 4.5 + 0.5) / math.sqrt(9 / 12 * (7 - 18 / 30)))
    assert summary["tests"]["correct"]["z"] == pytest.approx((8 - 4.5 - 0.5) / math.sqrt(9 / 12 * (7 - 30 / 30)))
    for arm, values in (("pv", PV), ("gradcam", GRADCAM)):
        entry = summary["arms"][arm]
        assert (entry["started"], entry["completed"], entry["dropouts"], entry["excluded"]) == (4, 3, 1, 0)
        for subset, accuracies in values.items():
            mean = sum(accuracies) / 3
            se = math.sqrt(sum((v - mean) ** 2 for v in accuracies) / 2) / math.sqrt(3)
            assert entry["accuracy"][subset] == pytest.approx({"mean": mean, "se": se, "n": 3})
    assert summary["arms"]["gradcam"]["cant_tell"] == pytest.approx(1 / 3 * 3 / 4)  # one participant, 3 of 4 answers
    report = (out / "report.md").read_text()
    assert "| Perception Visualization | 33.3% +- 16.7% (n=3) | 83.3% +- 16.7% (n=3) |" in report
    assert "Acc(Grad-CAM) < Acc(Perception Visualization)" in report and "Acc(Grad-CAM) > Acc(Perception Visualization)" in report
    for subset in ("correct", "incorrect"):
        with Image.open(out / f"hist_{subset}.png") as image:
            assert image.format == "PNG" and image.size[0] > 400
    with (out / "per_participant.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 8


def test_no_continuity_and_exact_options_agree_with_scipy(responses, study, tmp_path):
    out = tmp_path / "report"
    assert pv_main(["survey", "analyze", "--db", str(responses), "--manifest", str(study), "--out", str(out), "--no-continuity"]) == 0
    test = json.loads((out / "summary.json").read_text())["tests"]["incorrect"]
    direct = mannwhitneyu(GRADCAM["incorrect"], PV["incorrect"], alternative="less", method="asymptotic", use_continuity=False)
    assert test["p"] == pytest.approx(float(direct.pvalue)) and test["p"] == pytest.approx(norm.cdf(test["z"]))
    assert pv_main(["survey", "analyze", "--db", str(responses), "--manifest", str(study), "--out", str(out), "--exact"]) == 0
    test = json.loads((out / "summary.json").read_text())["tests"]["incorrect"]
    assert test["method"] == "permutation"  # ties: an exact permutation test (20 arrangements)
    assert test["p"] == pytest.approx(2 / 20)  # U <= 0.5 in 2 of the C(6, 3) = 20 ways to split the six values


def test_mann_whitney_matches_scipy_for_every_alternative():
    x, y = [0.2, 0.4, 0.4, 0.9, 1.0], [0.1, 0.3, 0.4]
    for alternative in ("greater", "less", "two-sided"):
        for continuity in (True, False):
            direct = mannwhitneyu(x, y, alternative=alternative, method="asymptotic", use_continuity=continuity)
            ours = mann_whitney(x, y, alternative, continuity)
            assert (ours.u, ours.p) == (pytest.approx(direct.statistic), pytest.approx(direct.pvalue))
    x, y = [0.1, 0.5, 0.9], [0.2, 0.3, 0.4, 0.6]  # no ties: scipy's exact distribution
    exact = mann_whitney(x, y, "greater", exact=True)
    assert exact.method == "exact" and exact.p == pytest.approx(mannwhitneyu(x, y, alternative="greater", method="exact").pvalue)
    assert mann_whitney([], y) is None


def test_attention_failures_and_speeders_are_excluded_with_reasons(platform_study, tmp_path):
    manifest = load_manifest(platform_study)
    (check,) = manifest["attention_checks"]
    wrong = next(o["id"] for o in check["options"] if o["id"] != check["answer"])
    path = tmp_path / "responses.sqlite"
    db.init_db(path, manifest)
    fill(path, manifest, PLAN, checks={0: wrong}, seconds={s: 30 for s in range(8)} | {3: 0.5})
    out = tmp_path / "report"
    args = ["survey", "analyze", "--db", str(path), "--manifest", str(platform_study), "--out", str(out)]
    assert pv_main([*args, "--max-attention-failures", "0", "--min-seconds", "2"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    pv, gradcam = summary["arms"]["pv"], summary["arms"]["gradcam"]
    assert (pv["started"], pv["completed"], pv["excluded"], pv["included"]) == (4, 3, 1, 2)
    assert pv["exclusion_reasons"] == {"failed attention checks": 1}
    assert (gradcam["excluded"], gradcam["exclusion_reasons"]) == (1, {"too fast": 1})
    assert pv["accuracy"]["incorrect"]["n"] == 2 and pv["accuracy"]["incorrect"]["mean"] == pytest.approx(0.75)  # without seq 0
    reasons = {e["reason"] for e in summary["exclusions"]["excluded"]}
    assert any(r.startswith("failed attention check(s) a1") for r in reasons) and any("per question < 2 s" in r for r in reasons)
    report = (out / "report.md").read_text()
    assert "| Perception Visualization | 4 | 3 | 1 | 1 | 2 | failed attention checks: 1 |" in report
    assert pv_main(args) == 0  # without rules nobody is excluded, but failures are still counted
    summary = json.loads((out / "summary.json").read_text())
    assert summary["arms"]["pv"]["excluded"] == 0 and summary["arms"]["pv"]["attention_failures"] == 1
    with (out / "per_participant.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert rows[0]["attention_failed"] == "a1" and float(rows[0]["median_seconds"]) >= 29


def test_an_empty_subset_is_a_warning_and_draws_no_histogram(study, tmp_path):
    manifest = load_manifest(study)
    manifest["questions"] = [q for q in manifest["questions"] if q["subset"] == "correct"]
    folder = tmp_path / "only-correct"
    folder.mkdir()
    (folder / "images").symlink_to(study / "images")
    write_manifest(manifest, folder)
    path = tmp_path / "r.sqlite"
    db.init_db(path, manifest)
    fill(path, manifest, [{"correct": 1}, {"correct": 2}])
    with pytest.warns(UserWarning, match="no incorrectly classified questions: hist_incorrect.png is not drawn"):
        report = analyze(path, folder, tmp_path / "report")
    assert (tmp_path / "report" / "hist_correct.png").is_file() and not (tmp_path / "report" / "hist_incorrect.png").exists()
    assert "No incorrectly classified questions: no histogram." in report.read_text()


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
    assert all(r["place"] for r in answers)


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
