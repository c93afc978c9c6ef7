"""`make quickstart` twice must not overwrite or mix an earlier run (the second start says what to do)."""
import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "quickstart.py"


def test_an_earlier_run_is_kept_and_named(tmp_path):
    spec = importlib.util.spec_from_file_location("quickstart", SCRIPT)
    quickstart = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quickstart)
    (tmp_path / "report.html").write_text("earlier")
    with pytest.raises(SystemExit, match=rf"holds an earlier run \(open {tmp_path / 'report.html'}\); remove it"):
        quickstart.main(["--out", str(tmp_path), "--tiny"])
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"] and (tmp_path / "report.html").read_text() == "earlier"


def load_quickstart():
    spec = importlib.util.spec_from_file_location("quickstart", SCRIPT)
    quickstart = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quickstart)
    return quickstart


def write_run(run: Path, answers: list[tuple[int, str, str, str, str, int]], questions: dict[str, int]) -> None:
    """A finished quickstart run, as far as --pool reads it: study (b)'s answers.csv and summary.json's question counts."""
    import json

    (run / "simulation_cause").mkdir(parents=True)
    lines = ["observer,arm,question,image_id,subset,cause,option,class,correct"]
    lines += [f"{k},{arm},{q},img_{q},{subset},{cause},o1,x,{c}" for k, arm, q, subset, cause, c in answers]
    (run / "simulation_cause" / "answers.csv").write_text("\n".join(lines) + "\n")
    by_cause = {group: {"n_questions": n} for group, n in questions.items()}
    (run / "summary.json").write_text(json.dumps({"studies": {"by cause": {"by_cause": by_cause}}}))


def test_pooled_tests_pool_observers_of_all_runs_and_apply_holm(tmp_path):
    quickstart = load_quickstart()
    runs = []
    for seed in range(2):
        answers = []
        for k in range(3):  # observers
            for arm in ("pv", "gradcam", "input", "reconstruction"):
                # shortcut: PV right on both questions, Grad-CAM on none; reconstruction right on one, input on none
                answers += [(k, arm, "s1", "incorrect", "shortcut", int(arm == "pv" or arm == "reconstruction")),
                            (k, arm, "s2", "incorrect", "shortcut", int(arm == "pv"))]
                answers += [(k, arm, "c1", "correct", "none", int(arm != "pv" or k == 0))]
        run = tmp_path / f"seed{seed}"
        write_run(run, answers, {"shortcut": 2, "correct": 1})
        runs.append(run)
    result = quickstart.pooled_tests(runs)
    shortcut = result["groups"]["shortcut"]
    assert shortcut["n_questions"] == 4 and shortcut["arms"]["pv"] == {"accuracy": 1.0, "n_observers": 6}
    assert shortcut["arms"]["gradcam"]["accuracy"] == 0.0 and shortcut["arms"]["reconstruction"]["accuracy"] == 0.5
    h1 = shortcut["tests"]["gradcam_vs_pv"]
    assert h1["hypothesis"] == "H1" and h1["alternative"] == "less" and h1["n1"] == h1["n2"] == 6 and h1["p"] < 0.01
    assert shortcut["tests"]["reconstruction_vs_input"]["hypothesis"] == "H3" and shortcut["tests"]["reconstruction_vs_input"]["p"] < 0.01
    assert result["groups"]["correct"]["arms"]["pv"]["accuracy"] == pytest.approx(2 / 6)  # observer 0 of each run
    assert result["holm_family"] == ["shortcut/gradcam_vs_pv", "shortcut/reconstruction_vs_input", "lookalike/gradcam_vs_pv",
                                     "texture_swap/gradcam_vs_pv", "correct/gradcam_vs_pv"]
    # Holm: the smallest of 5 p-values (2 groups without answers count as NaN) is multiplied by 5
    smallest = min(t["p"] for g in result["groups"].values() for t in g["tests"].values() if t["p"] == t["p"])
    assert min(t["p_holm"] for g in result["groups"].values() for t in g["tests"].values() if t["p_holm"] == t["p_holm"]) == pytest.approx(5 * smallest)
    out = tmp_path / "pooled"
    assert quickstart.main(["--pool", *map(str, runs), "--out", str(out)]) == 0 and (out / "pooled.json").is_file()


def test_pool_refuses_unfinished_runs(tmp_path):
    with pytest.raises(SystemExit, match="no finished run"):
        load_quickstart().main(["--pool", str(tmp_path / "nothing"), "--out", str(tmp_path / "pooled")])


def test_wrong_predictions_png_shows_the_first_questions_of_each_cause(tmp_path):
    import json

    from PIL import Image

    quickstart = load_quickstart()
    world, simulation = tmp_path / "world", tmp_path / "simulation_cause"
    world.mkdir()
    truth, questions = [], []
    for i, cause in enumerate(["shortcut", "shortcut", "shortcut", "lookalike", "texture_swap", "none"]):
        truth.append({"id": f"img{i}", "cause": cause})
        images = {}
        for j, arm in enumerate(("input", "gradcam", "reconstruction", "pv")):
            path = simulation / "images" / arm / f"q{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (256, 128), (40 * j, 10 * i, 0)).save(path)  # side by side: photo | explanation
            images[arm] = str(path.relative_to(simulation))
        questions.append({"id": f"q{i}", "image_id": f"img{i}", "subset": "incorrect" if cause != "none" else "correct",
                          "top_class": "stone", "labels": ["sun"], "images": images})
    (world / "truth.json").write_text(json.dumps(truth))
    (simulation / "manifest.json").write_text(json.dumps({"questions": questions}))
    path = quickstart.wrong_predictions_png(simulation, world, tmp_path / "docs" / "wrong.png")
    sheet = Image.open(path).convert("RGB")
    assert sheet.size == (4 * 132 + 4, 14 + 4 * (14 + 128 + 4) + 4)  # 2 shortcut rows (of 3), 1 look-alike, 1 texture swap
    first_row_pv = sheet.getpixel((4 + 3 * 132 + 64, 14 + 14 + 64))
    assert first_row_pv == (120, 0, 0)  # question q0's PV panel (the right-hand half), in the last column


def test_a_step_records_wall_and_cpu_seconds_and_a_failure_stops(capsys):
    quickstart = load_quickstart()
    log: list[dict] = []
    quickstart.step("help", ["--help"], log)
    assert log[0]["exit"] == 0 and log[0]["command"] == "pv --help"
    assert 0 <= log[0]["cpu_seconds"] <= 2 * log[0]["seconds"] + 0.1  # the child's own CPU seconds (at most 2 cores' worth)
    assert "--- help:" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="step 'bad' failed"):
        quickstart.step("bad", ["no-such-command"], log)
