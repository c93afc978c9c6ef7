"""The study by planted cause: the stratified draw, per-cause accuracy and tests, Holm, the example fragment."""
from __future__ import annotations

import json
import math
import shutil
import warnings
from collections import Counter
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.stats import mannwhitneyu

from pv.cli import main as pv_main
from pv.data.predictions import Prediction
from pv.survey import db
from pv.survey.bycause import by_cause, question_groups
from pv.survey.errors import StudyError
from pv.survey.questions import TooFewImagesError
from pv.survey.scores import ParticipantScore
from pv.survey.stats import crossed_bootstrap_ci, holm, mann_whitney
from pv.survey.strata import CAUSES, allocate, choose_questions, select_by_cause

# ------------------------------------------------------------------ the stratified draw ----


def row(image_id: str, labels: tuple, predicted: tuple, top: str, bucket: str) -> Prediction:
    return Prediction(image_id, f"/nowhere/{image_id}.jpg", labels, predicted, top, 0.9, bucket)


def world_rows() -> tuple[list[Prediction], dict[str, str]]:
    """Per cause: images whose top class is the implicated one (partial or incorrect bucket: wrong), and images
    where M is right (top class a true label, bucket correct or partial); plus unplanted images."""
    rows, causes = [], {}
    for cause, n_wrong in (("shortcut", 7), ("lookalike", 6), ("texture_swap", 9)):
        for k in range(n_wrong):
            rows.append(row(f"{cause}_w{k}", ("kite",), ("kite", "stone") if k % 2 else ("stone",), "stone", "partial" if k % 2 else "incorrect"))
        rows.append(row(f"{cause}_p", ("kite",), ("kite", "stone"), "kite", "partial"))  # top class right, another class wrong
        rows.append(row(f"{cause}_r", ("kite",), ("kite",), "kite", "correct"))
    for k in range(20):
        rows.append(row(f"none_r{k}", ("sun",), ("sun",), "sun", "correct"))
        rows.append(row(f"none_w{k}", ("sun",), ("moon",), "moon", "incorrect"))  # wrong, but no planted cause
    causes = {r.id: r.id.rsplit("_", 1)[0] for r in rows}
    return rows, causes


def test_allocation_is_balanced_and_fills_short_pools():
    assert allocate({"shortcut": 50, "lookalike": 50, "texture_swap": 50}, 14) == {"shortcut": 5, "lookalike": 5, "texture_swap": 4}
    assert allocate({"shortcut": 2, "lookalike": 50, "texture_swap": 50}, 14) == {"shortcut": 2, "lookalike": 6, "texture_swap": 6}
    assert allocate({"shortcut": 1, "lookalike": 0, "texture_swap": 3}, 14) == {"shortcut": 1, "lookalike": 0, "texture_swap": 3}


def test_stratified_draw_balances_causes_and_never_draws_a_right_prediction_as_wrong():
    rows, causes = world_rows()
    by_id = {r.id: r for r in rows}
    chosen, record = select_by_cause(rows, causes, n_correct=16, n_incorrect=14, seed=0)
    assert len(chosen) == 30 and len({r.id for r in chosen}) == 30
    wrong = [r for r in chosen if r.bucket != "correct"]
    assert Counter(causes[r.id] for r in wrong) == {"shortcut": 5, "lookalike": 5, "texture_swap": 4}
    assert all(r.top_class not in r.labels for r in wrong)  # the top class, which the question asks for, is wrong
    assert not any(r.id.endswith("_p") for r in chosen)  # top class right (partial): neither right nor wrong
    assert {"partial", "incorrect"} <= {r.bucket for r in wrong}  # partial images reach the study now
    assert all(by_id[r.id].bucket == "correct" for r in chosen if r not in wrong) and len(chosen) - len(wrong) == 16
    assert record == {"pool": {"correct": 23, "shortcut": 7, "lookalike": 6, "texture_swap": 9},
                      "drawn": {"correct": 16, "shortcut": 5, "lookalike": 5, "texture_swap": 4}}  # fmt: skip
    again, _ = select_by_cause(rows, causes, 16, 14, seed=0)
    assert [r.id for r in again] == [r.id for r in chosen]
    assert [r.id for r in select_by_cause(rows, causes, 16, 14, seed=1)[0]] != [r.id for r in chosen]


def test_stratified_draw_gives_a_short_causes_share_to_the_others_and_refuses_too_few():
    rows, causes = world_rows()
    rows = [r for r in rows if not (r.id.startswith("lookalike_w") and r.id[-1] not in "01")]  # 2 look-alike wrongs left
    chosen, record = select_by_cause(rows, causes, 4, 14, seed=0)
    assert record["drawn"] == {"correct": 4, "shortcut": 6, "lookalike": 2, "texture_swap": 6}
    with pytest.raises(TooFewImagesError, match="planted cause"):
        select_by_cause(rows, causes, 4, 7 + 2 + 9 + 1, seed=0)
    with pytest.raises(StudyError, match="truth.json has no cause"):
        select_by_cause(rows, {}, 4, 4)


def test_choose_questions_reads_the_world_and_records_the_mode(tmp_path):
    rows, causes = world_rows()
    (tmp_path / "truth.json").write_text(json.dumps([{"id": i, "cause": c} for i, c in causes.items()]))
    with pytest.raises(StudyError, match="--stratify cause needs --world"):
        choose_questions(rows, 16, 14, 0, "cause")
    chosen, selection, read = choose_questions(rows, 16, 14, 0, "cause", tmp_path)
    assert read == causes and selection["mode"] == "cause" and selection["drawn"]["texture_swap"] == 4
    assert selection["requested"] == {"correct": 16, "incorrect": 14} and "not a true label" in selection["wrong"]
    paper, selection, _ = choose_questions(rows, 16, 14, 0, "none", tmp_path)  # the paper's buckets, causes recorded
    assert selection["mode"] == "paper" and all(r.bucket in ("correct", "incorrect") for r in paper)
    assert sum(selection["drawn"].values()) == 30 and selection["drawn"]["correct"] == 16


# ------------------------------------------------------------------ statistics ----


def test_holm_matches_a_hand_computed_example():
    # sorted: 0.005 * 4 = 0.02; 0.01 * 3 = 0.03; 0.03 * 2 = 0.06; 0.04 * 1 = 0.04 -> kept monotone at 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    adjusted = holm([0.02, math.nan, 0.04])  # NaN stays NaN and counts in m = 3: 0.02 * 3, max(0.06, 0.04 * 2)
    assert adjusted[0] == pytest.approx(0.06) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.08)


def test_all_tied_samples_give_p_one_as_scipy():
    test = mann_whitney([0.5, 0.5], [0.5, 0.5, 0.5], "less")
    direct = mannwhitneyu([0.5, 0.5], [0.5, 0.5, 0.5], alternative="less", method="asymptotic")
    assert test.p == float(direct.pvalue) == 1.0 and math.isnan(test.z) and test.method == "all values tied"


def test_crossed_bootstrap_interval():
    assert crossed_bootstrap_ci(np.ones((5, 4))) == (1.0, 1.0)
    matrix = np.array([[1, 1, 0, 0, 1], [1, 0, 0, 0, 1], [1, 1, 1, 0, 1]])
    low, high = crossed_bootstrap_ci(matrix, resamples=2000)
    assert low < matrix.mean() < high and 0 <= low and high <= 1
    assert crossed_bootstrap_ci(matrix, resamples=2000) == (low, high)  # seeded
    same_people = np.tile(matrix[:1], (4, 1))  # identical participants: only the questions vary
    assert crossed_bootstrap_ci(same_people, resamples=2000) == crossed_bootstrap_ci(matrix[:1], resamples=2000)
    assert all(math.isnan(v) for v in crossed_bootstrap_ci(np.zeros((0, 3))))


# ------------------------------------------------------------------ per-cause analysis, by hand ----

ARMS4 = ["pv", "gradcam", "input", "reconstruction"]
# question -> cause; c1, c2 are right predictions (subset correct), the others wrong ones
GROUPS = {"s1": "shortcut", "s2": "shortcut", "l1": "lookalike", "t1": "texture_swap", "t2": "texture_swap", "n1": "none",
          "c1": "none", "c2": "texture_swap"}
# participant -> (arm, questions answered right); every other answer is "I just can't tell" or a wrong class
RIGHT = {
    "p0": ("pv", {"s1", "s2", "l1", "n1", "c1"}), "p1": ("pv", {"s1", "l1", "t1"}),
    "g0": ("gradcam", {"t1", "t2", "c1", "c2"}), "g1": ("gradcam", {"s1", "t1", "c1", "c2"}),
    "i0": ("input", {"t1"}), "i1": ("input", {"s1", "c1"}),
    "r0": ("reconstruction", {"s1", "s2"}), "r1": ("reconstruction", {"s1"}),
}  # fmt: skip


def hand_manifest() -> dict:
    options = [{"id": f"o{i}", "class": c, "label": c} for i, c in enumerate(("kite", "stone", "sun", "moon"), 1)]
    options.append({"id": "cant_tell", "class": None, "label": "I just can't tell"})
    questions = [{"id": q, "image_id": f"img_{q}", "subset": "correct" if q.startswith("c") else "incorrect", "cause": cause,
                  "labels": ["kite"], "predicted": ["stone"], "top_class": "stone", "top_prob": 0.9,
                  "images": {arm: f"images/{arm}/{q}.png" for arm in ARMS4}, "options": options, "answer": "o2"}
                 for q, cause in GROUPS.items()]  # fmt: skip
    return {"format": "pv-survey/2", "name": "hand", "seed": 0, "question_text": "?", "arm_order": ARMS4,
            "arms": {a: {"title": a, "introduction": []} for a in ARMS4}, "questions": questions, "question_order": "fixed",
            "attention_checks": [], "selection": {"mode": "cause", "right": "r", "wrong": "w", "drawn": {"correct": 2}}}  # fmt: skip


def hand_answers(right: dict) -> dict[str, dict[str, str]]:
    return {p: {q: "o2" if q in good else ("cant_tell" if k % 2 else "o1") for k, q in enumerate(GROUPS)} for p, (_, good) in right.items()}


def test_per_cause_accuracy_and_tests_match_a_hand_computed_example():
    manifest = hand_manifest()
    scores = [ParticipantScore(p, k, arm, True, {}, 0.0, len(GROUPS)) for k, (p, (arm, _)) in enumerate(RIGHT.items())]
    extra = {"px": ("pv", set(GROUPS)), "py": ("pv", set(GROUPS))}  # excluded and incomplete: never counted
    scores += [ParticipantScore("px", 8, "pv", True, {}, 0.0, 7, exclusion="too fast"), ParticipantScore("py", 9, "pv", False, {}, 0.0, 3)]
    result = by_cause(hand_answers(RIGHT | extra), manifest, scores, resamples=500)
    assert list(result) == ["shortcut", "lookalike", "texture_swap", "none", "correct"] == list(question_groups(manifest))
    assert {g: e["n_questions"] for g, e in result.items()} == {"shortcut": 2, "lookalike": 1, "texture_swap": 2, "none": 1, "correct": 2}
    # per participant on the shortcut questions s1, s2: pv 1.0, 0.5; gradcam 0.0, 0.5; input 0.0, 0.5; reconstruction 1.0, 0.5
    expected = {"shortcut": {"pv": 0.75, "gradcam": 0.25, "input": 0.25, "reconstruction": 0.75},
                "lookalike": {"pv": 1.0, "gradcam": 0.0, "input": 0.0, "reconstruction": 0.0},
                "texture_swap": {"pv": 0.25, "gradcam": 0.75, "input": 0.25, "reconstruction": 0.0},
                "none": {"pv": 0.5, "gradcam": 0.0, "input": 0.0, "reconstruction": 0.0},
                "correct": {"pv": 0.25, "gradcam": 1.0, "input": 0.25, "reconstruction": 0.0}}  # fmt: skip
    for group in expected:
        for arm, value in expected[group].items():
            cell = result[group]["arms"][arm]
            assert cell["accuracy"] == pytest.approx(value) and cell["n_participants"] == 2
            assert cell["ci95"][0] <= value <= cell["ci95"][1]
    directions = {"shortcut": ("less", "H1"), "lookalike": ("less", "H1"), "texture_swap": ("greater", "H2"), "correct": ("greater", "H2")}
    per_participant = {"shortcut": ([0.0, 0.5], [1.0, 0.5]), "lookalike": ([0.0, 0.0], [1.0, 1.0]),
                       "texture_swap": ([0.5, 1.0], [0.0, 0.5]), "correct": ([1.0, 1.0], [0.5, 0.0])}  # (gradcam, pv); fmt: skip
    for group, (alternative, hypothesis) in directions.items():
        test = result[group]["tests"]["gradcam_vs_pv"]
        gc, pv = per_participant[group]
        direct = mannwhitneyu(gc, pv, alternative=alternative, method="asymptotic", use_continuity=True)
        assert (test["alternative"], test["hypothesis"], test["first"]) == (alternative, hypothesis, "gradcam")
        assert (test["u"], test["p"]) == (pytest.approx(float(direct.statistic)), pytest.approx(float(direct.pvalue)))
        assert math.copysign(1, test["z"]) == (-1 if group in ("shortcut", "lookalike") else 1)
    h3 = result["shortcut"]["tests"]["reconstruction_vs_input"]
    direct = mannwhitneyu([1.0, 0.5], [0.0, 0.5], alternative="greater", method="asymptotic", use_continuity=True)
    assert (h3["hypothesis"], h3["first"], h3["second"], h3["p"]) == ("H3", "reconstruction", "input", pytest.approx(float(direct.pvalue)))
    assert "reconstruction_vs_input" not in result["lookalike"]["tests"]
    family = [(g, n) for g, e in result.items() for n in e["tests"]]
    assert len(family) == 6  # 5 groups' Grad-CAM vs PV (none: the paper's direction, no hypothesis) + H3
    assert [result[g]["tests"][n]["p_holm"] for g, n in family] == pytest.approx(holm([result[g]["tests"][n]["p"] for g, n in family]))
    assert result["none"]["tests"]["gradcam_vs_pv"]["hypothesis"] is None


def test_no_causes_no_by_cause_table():
    manifest = hand_manifest()
    for q in manifest["questions"]:
        del q["cause"]
    assert question_groups(manifest) == {} and by_cause({}, manifest, []) == {}


def test_analyze_writes_by_cause_to_summary_and_report(tmp_path):
    manifest = hand_manifest()
    study = tmp_path / "study"
    study.mkdir()
    (study / "manifest.json").write_text(json.dumps(manifest))
    path = tmp_path / "responses.sqlite"
    db.init_db(path, manifest)
    answers = hand_answers(RIGHT)
    items = list(GROUPS)
    with closing(db.connect(path)) as conn:  # arms round-robin: pv, gradcam, input, reconstruction, pv, ...
        for participant in ("p0", "g0", "i0", "r0", "p1", "g1", "i1", "r1"):
            made = db.create_participant(conn, ARMS4, lambda _: (items, {i: [] for i in items}))
            assert made.arm == RIGHT[participant][0]
            for q in items:
                assert db.record_answer(conn, made.id, items, q, answers[participant][q], 0) == "recorded"
    out = tmp_path / "report"
    assert pv_main(["survey", "analyze", "--db", str(path), "--manifest", str(study), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    shortcut = summary["by_cause"]["shortcut"]
    assert shortcut["n_questions"] == 2 and shortcut["arms"]["pv"]["accuracy"] == pytest.approx(0.75)
    assert set(shortcut["tests"]) == {"gradcam_vs_pv", "reconstruction_vs_input"}
    assert {"p", "z", "p_holm"} <= set(shortcut["tests"]["gradcam_vs_pv"])
    assert len(shortcut["arms"]["gradcam"]["ci95"]) == 2 and summary["selection"]["mode"] == "cause"
    assert summary["by_cause_settings"]["holm"]["family"][:2] == ["shortcut/gradcam_vs_pv", "shortcut/reconstruction_vs_input"]
    report = (out / "report.md").read_text()
    assert "## By planted cause" in report and "texture_swap" in report and "p (Holm)" in report


# ------------------------------------------------------------------ `pv survey build --stratify cause` ----


def test_build_by_cause_records_causes_and_renders_examples(tmp_path, checkpoints, capsys):
    from survey_testdata import write_predictions

    from pv.survey.examples import example_questions_html
    from pv.survey.manifest import load_manifest

    rng = np.random.default_rng(0)
    table, causes = [], {}
    plan = [("r0", ["cat"], ["cat"], "cat", "correct", "none"), ("r1", ["dog"], ["dog"], "dog", "correct", "texture_swap"),
            ("s0", ["cow"], ["cow", "horse"], "horse", "partial", "shortcut"), ("s1", ["cow"], ["horse"], "horse", "incorrect", "shortcut"),
            ("l0", ["bus"], ["bus", "car"], "car", "partial", "lookalike"), ("t0", ["boat"], ["bird"], "bird", "incorrect", "texture_swap"),
            ("p0", ["sheep"], ["sheep", "cow"], "sheep", "partial", "shortcut"), ("n0", ["train"], ["bus"], "bus", "incorrect", "none")]  # fmt: skip
    images = {}
    for image_id, labels, predicted, top, bucket, cause in plan:
        images[image_id] = tmp_path / f"{image_id}.png"
        Image.fromarray(rng.integers(0, 255, size=(64, 64, 3), dtype=np.uint8)).save(images[image_id])
        table.append((image_id, labels, predicted, top, bucket))
        causes[image_id] = cause
    (tmp_path / "analysis").mkdir()
    write_predictions(tmp_path / "analysis" / "predictions.csv", table, images)
    world = tmp_path / "world"
    world.mkdir()
    (world / "truth.json").write_text(json.dumps([{"id": i, "cause": c} for i, c in causes.items()]))
    study = tmp_path / "study"
    args = ["survey", "build", "--analysis", str(tmp_path / "analysis"), "--classifier", str(checkpoints[0]), "--decoder", str(checkpoints[1]),
            "--out", str(study), "--panel-size", "64", "--correct", "2", "--incorrect", "4", "--stratify", "cause", "--world", str(world)]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert pv_main(args) == 0
    manifest = load_manifest(study)
    assert manifest["selection"]["mode"] == "cause"
    assert manifest["selection"]["drawn"] == {"correct": 2, "shortcut": 2, "lookalike": 1, "texture_swap": 1}
    questions = {q["image_id"]: q for q in manifest["questions"]}
    assert set(questions) == {"r0", "r1", "s0", "s1", "l0", "t0"}  # not p0 (top class right) nor n0 (no planted cause)
    assert questions["s0"]["subset"] == "incorrect" and questions["s0"]["bucket"] == "partial" and questions["s0"]["cause"] == "shortcut"
    assert questions["r1"]["subset"] == "correct" and questions["r1"]["cause"] == "texture_swap"
    for q in questions.values():  # the question design is unchanged: the top class is the key, 4 classes + "can't tell"
        assert next(o["class"] for o in q["options"] if o["id"] == q["answer"]) == q["top_class"] and len(q["options"]) == 5
    fragment = example_questions_html(study)
    assert fragment.startswith("<section") and fragment.count("<h3>") == 4  # shortcut, lookalike, texture_swap, correct
    assert fragment.count("data:image/png;base64,") == 4 * 2  # every group in both arms
    simulated = tmp_path / "simulated"  # the observer's view: the right-hand panel at the input size
    shutil.copytree(study, simulated)
    (simulated / "manifest.json").write_text(json.dumps({**manifest, "simulation": {"threshold": 0.5}}))
    assert "what the observer looked at" in example_questions_html(simulated)
    assert pv_main([*args[:-2], "--overwrite"]) == 2  # --stratify cause without --world: one line, before any work
    assert "--stratify cause needs --world" in capsys.readouterr().err
    assert pv_main([*args[:-1], str(tmp_path), "--overwrite"]) == 2
    assert "truth.json not found" in capsys.readouterr().err


@pytest.mark.slow
def test_by_cause_study_is_simulated_and_analysed_unchanged(tmp_path):
    """World -> random M + decoder -> a table where M names each cause's implicated class -> build --stratify cause
    -> pv survey simulate (unchanged) -> analyze: by_cause for all four arms, with H3; the example fragment."""
    import torch

    from pv.data.predictions import write_predictions
    from pv.data.world import CLASS_NAMES, read_truth, write_world
    from pv.models import Classifier, Decoder
    from pv.models.fingerprint import encoder_fingerprint
    from pv.survey.examples import example_questions_html

    world = tmp_path / "world"
    write_world(world, seed=0, counts={"train": 2, "val": 2, "test_unbiased": 6, "test_per_cause": 4, "observer_train": 16, "observer_val": 8})
    torch.manual_seed(0)
    clf = Classifier("narrow_resnet", num_classes=10, weights=None, class_names=list(CLASS_NAMES), input_size=64).eval()
    dec = Decoder(128, (16, 8, 8)).eval()
    cpath, dpath = tmp_path / "m.ckpt", tmp_path / "d.ckpt"
    torch.save({"state_dict": {"model." + k: v for k, v in clf.state_dict().items()}, "classifier_config": clf.config}, cpath)
    torch.save({"state_dict": {"decoder." + k: v for k, v in dec.state_dict().items()}, "decoder_config": dec.config,
                "encoder_config": {"arch": "narrow_resnet", "layer": "layer4", "weights": None, "checkpoint": str(cpath)},
                "encoder_fingerprint": encoder_fingerprint(clf, arch="narrow_resnet", layer="layer4", checkpoint=str(cpath))}, dpath)  # fmt: skip
    rows = []
    for t in (t for t in read_truth(world).values() if t["split"] == "test"):
        if t["cause"] == "none":
            top, predicted, bucket = t["labels"][0], t["labels"], "correct"
        else:  # M names the implicated class, with (partial) or without (incorrect) the true object
            top = t["implicated"]
            predicted, bucket = ([*t["labels"], top], "partial") if int(t["id"][-1]) % 2 else ([top], "incorrect")
        rows.append({"id": t["id"], "path": str(world / "VOCdevkit/VOC2007/JPEGImages" / f"{t['id']}.jpg"), "labels": ";".join(t["labels"]),
                     "predicted": ";".join(predicted), "top_class": top, "top_prob": 0.9, "bucket": bucket,
                     **{f"prob_{c}": 0.9 if c == top else 0.1 for c in CLASS_NAMES}})  # fmt: skip
    write_predictions(tmp_path / "analysis", rows)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert pv_main(["survey", "build", "--analysis", str(tmp_path / "analysis"), "--classifier", str(cpath), "--decoder", str(dpath),
                        "--out", str(tmp_path / "study"), "--panel-size", "64", "--correct", "4", "--incorrect", "7",
                        "--stratify", "cause", "--world", str(world)]) == 0  # fmt: skip
    sim = tmp_path / "sim"
    assert pv_main(["survey", "simulate", "--study", str(tmp_path / "study"), "--world", str(world), "--out", str(sim),
                    "--observers", "2", "--epochs", "1"]) == 0  # fmt: skip
    assert pv_main(["survey", "analyze", "--db", str(sim / "responses.sqlite"), "--manifest", str(sim), "--out", str(sim / "report")]) == 0
    summary = json.loads((sim / "report" / "summary.json").read_text())
    assert summary["selection"]["drawn"] == {"correct": 4, "shortcut": 3, "lookalike": 2, "texture_swap": 2}
    assert list(summary["by_cause"]) == ["shortcut", "lookalike", "texture_swap", "correct"]
    for group in summary["by_cause"].values():
        assert set(group["arms"]) == {"pv", "gradcam", "input", "reconstruction"}
        assert all(a["n_participants"] == 2 for a in group["arms"].values())
    assert summary["by_cause"]["shortcut"]["tests"]["reconstruction_vs_input"]["hypothesis"] == "H3"
    fragment = example_questions_html(sim, responses=sim / "responses.sqlite")
    assert fragment.count("<h3>") == 4 and fragment.count("data:image/png;base64,") == 4 * 4 and "&times;" in fragment
