"""The quickstart of issues 14 and 21: every step as the public `pv` command a user would type, then a report.

    python scripts/quickstart.py [--seed 0] [--out runs/quickstart] [--preset default|confirm|small|full|tiny]
    python scripts/quickstart.py --pool OUT_SEED3 OUT_SEED4 ... --out POOLED   # the pre-registered pooled tests

Steps (each printed before it runs): pv world, pv survey simulate --observers-only (in a second process,
beside the next steps: the observers need only the world), pv fit (classifier M), pv fit (decoder, on M's
cached latents), pv analyze (val: M's mAP on the unbiased split; test: the planted causes), two studies on the
same observers: (a) the paper's (`pv survey build`, wrong = bucket incorrect) and (b) by planted cause
(`--stratify cause`: wrong = M's top class not a true label, equal numbers per cause), each `pv survey simulate`
and `pv survey analyze`, then pv sanity-check. Then decoder metrics on held-out images (SSIM, PSNR per background
kind; agreement of M's top class on reconstruction vs input, per planted cause), OUT/report.html, OUT/summary.json
and OUT/wrong_predictions.png (M's wrong predictions of study (b): input | Grad-CAM | reconstruction | PV).
Torch runs single-threaded (OMP_NUM_THREADS=1): on 2 busy cores two threads were 8x slower than one.
The pre-registered design (benchmarks/PREREGISTRATION.md) is preset `confirm`.
"""
from __future__ import annotations

import argparse
import atexit
import csv
import html
import json
import math
import os
import shlex
import subprocess
import sys
import time
import shutil
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PV = [sys.executable, "-m", "pv.cli"]
STUDIES = {"paper": "none", "by cause": "cause"}  # study -> `pv survey build --stratify`
SUFFIX = {"paper": "", "by cause": "_cause"}  # OUT/study, OUT/simulation (a); OUT/study_cause, OUT/simulation_cause (b)
ARMS = ("pv", "gradcam", "input", "reconstruction")
# Presets (sizes and epochs only: the world's design, M, the decoder's loss and the observer are the same in all).
# "default" is sized for the 10-minute budget on 2 cores with one torch thread per process: the observers (5 x 5
# epochs, about 420 s on one core) train in a second process beside M and the decoder, which are sized to finish
# about when they do (8 decoder epochs on cached latents; see benchmarks/WORLD.md); "full" is the world's
# DEFAULT_COUNTS and the configs' epochs.
PRESETS: dict[str, dict] = {
    "tiny": {"world": {"train": 300, "val": 100, "test-unbiased": 100, "test-per-cause": 40, "observer-train": 300, "observer-val": 60},
             "classifier_epochs": 1, "decoder_epochs": 1, "observer_epochs": 1, "questions": (4, 4)},
    "small": {"world": {"train": 2500, "val": 400, "test-unbiased": 150, "test-per-cause": 80, "observer-train": 1500, "observer-val": 200},
              "classifier_epochs": 4, "decoder_epochs": 2, "observer_epochs": 2, "questions": None},
    "default": {"world": {"train": 4000, "val": 500, "test-unbiased": 200, "test-per-cause": 100, "observer-train": 2400, "observer-val": 300},
                "classifier_epochs": 4, "decoder_epochs": 8, "observer_epochs": 5, "questions": None},
    # the pre-registered design (benchmarks/PREREGISTRATION.md): the same numbers as "default", named so that it cannot drift
    "confirm": {"world": {"train": 4000, "val": 500, "test-unbiased": 200, "test-per-cause": 100, "observer-train": 2400, "observer-val": 300},
                "classifier_epochs": 4, "decoder_epochs": 8, "observer_epochs": 5, "questions": None},
    "full": {"world": {}, "classifier_epochs": None, "decoder_epochs": None, "observer_epochs": 3, "questions": None},
}  # fmt: skip


def children_cpu_seconds() -> float:
    """User + system CPU seconds of the finished (waited-for) child processes so far."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def step(title: str, args: list[str], log: list[dict]) -> None:
    """Run one public command, printing it, timing it (wall and CPU seconds: on a busy machine the CPU seconds
    say what an idle one would take) and stopping on failure."""
    line = "pv " + " ".join(shlex.quote(a) for a in args)
    print(f"\n=== {title}\n$ {line}", flush=True)
    start, cpu = time.perf_counter(), children_cpu_seconds()
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "WANDB_MODE": "offline"}
    result = subprocess.run([*PV, *args], cwd=ROOT, env=env)
    seconds, cpu = time.perf_counter() - start, children_cpu_seconds() - cpu  # only this child was reaped meanwhile
    log.append({"step": title, "command": line, "seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1), "exit": result.returncode})
    print(f"--- {title}: {seconds:.0f} s ({cpu:.0f} CPU s)", flush=True)
    if result.returncode != 0:
        raise SystemExit(f"quickstart: step '{title}' failed (exit {result.returncode}): {line}")


def start_step(title: str, args: list[str], log_path: Path) -> tuple:
    """Start one public command in the background (its output to `log_path`); `finish_step` waits for it."""
    line = "pv " + " ".join(shlex.quote(a) for a in args)
    print(f"\n=== {title} (in the background, beside the next steps; output in {log_path})\n$ {line}", flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "WANDB_MODE": "offline"}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    handle = log_path.open("w", encoding="utf-8")
    process = subprocess.Popen([*PV, *args], cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
    atexit.register(lambda: process.poll() is None and process.kill())  # a failed foreground step stops it too
    return title, line, process, handle, log_path, time.perf_counter()


def finish_step(started: tuple, log: list[dict]) -> None:
    """Wait for a background step, print its output, time it and stop on failure."""
    title, line, process, handle, log_path, start = started
    waited, cpu = time.perf_counter(), children_cpu_seconds()
    code = process.wait()
    handle.close()
    seconds, cpu = time.perf_counter() - start, children_cpu_seconds() - cpu  # reaped only now: all its CPU seconds
    log.append({"step": title, "command": line, "seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1), "exit": code, "background": True})
    print(f"\n=== {title} (background) output:\n{log_path.read_text(encoding='utf-8').rstrip()}", flush=True)
    print(f"--- {title}: {seconds:.0f} s ({cpu:.0f} CPU s) in the background (waited {time.perf_counter() - waited:.0f} s for it)", flush=True)
    if code != 0:
        raise SystemExit(f"quickstart: step '{title}' failed (exit {code}): {line}")


def decoder_metrics(classifier_path: Path, decoder_path: Path, world: Path, split: str = "test", batch: int = 128) -> dict:
    """SSIM / PSNR of reconstructions of `split` (overall and per background kind) and top-class agreement (per cause)."""
    import torch
    from pytorch_msssim import ssim

    from pv.data import ImageTransform, voc_dataset
    from pv.data.world import CLASS_NAMES, read_truth
    from pv.explain import PerceptionVisualizer
    from pv.models import Classifier, load_decoder

    truth = read_truth(world)
    classifier = Classifier.from_checkpoint(classifier_path).eval()
    decoder, encoder_config = load_decoder(decoder_path)
    visualizer = PerceptionVisualizer(classifier, decoder.eval(), encoder_config)
    data = voc_dataset(world, ImageTransform(classifier.input_size), year="2007", image_set=split, classes=CLASS_NAMES)
    per: dict = defaultdict(list)
    with torch.no_grad():
        for start in range(0, len(data), batch):
            items = [data[i] for i in range(start, min(start + batch, len(data)))]
            images = torch.stack([item["image"] for item in items])
            reconstruction = visualizer.reconstruct(images)
            s = ssim(reconstruction, images, data_range=1.0, size_average=False)  # (B,)
            mse = ((reconstruction - images) ** 2).mean(dim=(1, 2, 3)).clamp(min=1e-10)
            psnr = 10 * torch.log10(1 / mse)
            agree = classifier(reconstruction).argmax(1) == classifier(images).argmax(1)
            for item, a, b, c in zip(items, s.tolist(), psnr.tolist(), agree.tolist()):
                row = truth[Path(item["path"]).stem]
                for key in ("all", f"background/{row['background']}", f"cause/{row['cause']}"):
                    per[key].append((a, b, c))
    mean = lambda values, k: sum(v[k] for v in values) / len(values)  # noqa: E731
    return {key: {"ssim": mean(v, 0), "psnr": mean(v, 1), "agreement": mean(v, 2), "images": len(v)} for key, v in sorted(per.items())}


def cause_errors(predictions: Path, world: Path) -> dict:
    """Per planted cause: images, share whose top class is not a true label, share in the `incorrect` bucket,
    and share whose top class is the class the cause implicates."""
    from pv.data.world import read_truth

    truth = read_truth(world)
    groups: dict = defaultdict(list)
    with predictions.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            t = truth[row["id"]]
            groups[t["cause"]].append((row["top_class"] not in t["labels"], row["bucket"] == "incorrect", row["top_class"] == t["implicated"]))
    return {cause: {"images": len(v), "top_wrong": sum(a for a, _, _ in v) / len(v), "bucket_incorrect": sum(b for _, b, _ in v) / len(v),
                    "top_is_implicated": sum(c for _, _, c in v) / len(v)} for cause, v in sorted(groups.items())}  # fmt: skip


def study_summary(simulation: Path) -> dict:
    """One simulated study's numbers: per arm accuracy on right and wrong predictions (and can't tell, filler picks),
    the paper's two Mann-Whitney tests, and per planted cause n questions, accuracy per arm with its 95% CI, the tests."""
    simulated = json.loads((simulation / "simulation.json").read_text())
    table = json.loads((simulation / "report" / "summary.json").read_text())
    arms = {arm: {"correct": simulated["accuracy"].get(arm, {}).get("correct", {}).get("mean"),
                  "incorrect": simulated["accuracy"].get(arm, {}).get("incorrect", {}).get("mean"),
                  "cant_tell": simulated["cant_tell"].get(arm), "filler_pick": simulated["filler_pick"].get(arm)} for arm in ARMS}  # fmt: skip
    tests = {subset: None if t is None else {k: t[k] for k in ("alternative", "u", "z", "p", "n1", "n2")} for subset, t in table["tests"].items()}
    by_cause = {group: {"subset": g["subset"], "n_questions": g["n_questions"],
                        "arms": {arm: {"accuracy": a["accuracy"], "ci95": a["ci95"]} for arm, a in g["arms"].items()},
                        "tests": {name: {k: t.get(k) for k in ("hypothesis", "first", "second", "alternative", "u", "z", "p", "p_holm")}
                                  for name, t in g["tests"].items()}}
                for group, g in (table.get("by_cause") or {}).items()}  # fmt: skip
    return {"arms": arms, "tests": tests, "by_cause": by_cause, "selection": table.get("selection")}


def panel_uri(path: Path) -> str:
    """The right-hand panel of a study image as an inline PNG."""
    import base64
    import io

    from PIL import Image

    image = Image.open(path).convert("RGB")
    panel = image.crop((image.width - image.height, 0, image.width, image.height))
    buffer = io.BytesIO()
    panel.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


PANELS = (("input", "input"), ("gradcam", "Grad-CAM"), ("reconstruction", "reconstruction"), ("pv", "PV"))
SIGN = {"less": "<", "greater": ">", "two-sided": "!="}


def percent(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{100 * value:.1f}%"


def number(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or value != value else f"{value:.{digits}g}" if digits == 4 else f"{value:.{digits}f}"


def wrong_predictions_png(simulation: Path, world: Path, path: Path, per_cause: int = 2) -> Path:
    """A picture of M's wrong predictions: per planted cause its first `per_cause` questions (by id: no picking),
    one row each, input | Grad-CAM | reconstruction | PV as the study shows them, a caption above every row."""
    from PIL import Image, ImageDraw

    from pv.data.world import CAUSES, read_truth

    truth = read_truth(world)
    manifest = json.loads((simulation / "manifest.json").read_text())
    wrong = sorted((q for q in manifest["questions"] if q["subset"] == "incorrect"), key=lambda q: q["id"])
    rows = [q for cause in CAUSES for q in [q for q in wrong if truth[q["image_id"]]["cause"] == cause][:per_cause]]
    size, caption, gap = 128, 14, 4
    sheet = Image.new("RGB", (len(PANELS) * (size + gap) + gap, caption + len(rows) * (caption + size + gap) + gap), "white")
    draw = ImageDraw.Draw(sheet)
    for column, (_, label) in enumerate(PANELS):
        draw.text((gap + column * (size + gap), 1), label, fill="black")
    for row, q in enumerate(rows):
        top = caption + row * (caption + size + gap)
        t = truth[q["image_id"]]
        draw.text((gap, top + 1), f"{t['cause']}: M says {q['top_class']}; true {', '.join(q['labels'])}", fill="black")
        for column, (arm, _) in enumerate(PANELS):
            picture = Image.open(simulation / q["images"][arm]).convert("RGB")
            panel = picture.crop((picture.width - picture.height, 0, picture.width, picture.height)).resize((size, size))
            sheet.paste(panel, (gap + column * (size + gap), top + caption))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, optimize=True)
    return path


def write_report(out: Path, summary: dict, steps: list[dict], causes: dict, decoder: dict, world: Path) -> Path:
    from pv.atomic import write_text
    from pv.data.world import read_truth

    e = html.escape
    truth = read_truth(world)
    parts = ["<!doctype html><meta charset='utf-8'><title>pv quickstart: a world where the truth is known</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
             "padding:.3em .6em}img.p{width:128px;image-rendering:pixelated}figure{display:inline-block;margin:.3em}</style>",
             f"<h1>pv quickstart, world seed {summary['world']['seed']}</h1>",
             "<p>Every number below comes from the commands listed at the end. The classifier M was trained on a biased split "
             "(planted shortcut); see pv/data/world.py for the design of the planted causes.</p>",
             f"<h2>Classifier M</h2><p>mAP on the unbiased split: <b>{summary['classifier']['map']:.3f}</b></p>",
             "<table><tr><th>planted cause</th><th>images</th><th>top class not a true label</th><th>bucket incorrect</th><th>top class = implicated class</th></tr>"]  # fmt: skip
    for cause, c in causes.items():
        parts.append(f"<tr><td>{e(cause)}</td><td>{c['images']}</td><td>{100 * c['top_wrong']:.1f}%</td><td>{100 * c['bucket_incorrect']:.1f}%</td>"
                     f"<td>{100 * c['top_is_implicated']:.1f}%</td></tr>")  # fmt: skip
    parts.append("</table><h2>Decoder</h2><table><tr><th>images</th><th>n</th><th>SSIM</th><th>PSNR (dB)</th><th>top-class agreement</th></tr>")
    for key, d in decoder.items():
        parts.append(f"<tr><td>{e(key)}</td><td>{d['images']}</td><td>{d['ssim']:.3f}</td><td>{d['psnr']:.2f}</td><td>{100 * d['agreement']:.1f}%</td></tr>")
    parts.append("</table><h2>M's wrong predictions (study b, by cause): input | Grad-CAM | reconstruction | PV</h2>"
                 "<img src='wrong_predictions.png' alt='wrong predictions'>")
    cause_manifest = json.loads((out / "simulation_cause" / "manifest.json").read_text())
    for q in [q for q in cause_manifest["questions"] if q["subset"] == "incorrect"]:
        t = truth.get(q["image_id"], {})
        figures = "".join(f"<figure><img class='p' src='{panel_uri(out / 'simulation_cause' / q['images'][arm])}' alt='{arm}'><figcaption>{label}</figcaption></figure>"
                          for arm, label in PANELS)  # fmt: skip
        parts.append(f"<div><p><b>{e(q['image_id'])}</b>: labels {e(', '.join(q['labels']))}; M says <b>{e(q['top_class'])}</b>; "
                     f"planted cause: <b>{e(t.get('cause', '?'))}</b> (implicates {e(t.get('implicated') or '-')}), background {e(t.get('background', '?'))}</p>{figures}</div>")  # fmt: skip
    for name, study in summary["studies"].items():
        folder = f"simulation{SUFFIX[name]}"
        manifest = json.loads((out / folder / "manifest.json").read_text())
        title = {"paper": "(a) the paper's study: wrong = bucket incorrect (no true label predicted)",
                 "by cause": "(b) by planted cause: wrong = M's top class not a true label, drawn equally per cause"}[name]
        parts.append(f"<h2>Simulated user study {e(title)}</h2><table><tr><th>arm</th><th>correctly classified</th><th>wrongly classified</th>"
                     "<th>can't tell</th><th>filler picks</th></tr>")  # fmt: skip
        for arm in manifest["arm_order"]:
            a = study["arms"][arm]
            parts.append(f"<tr><td>{e(manifest['arms'][arm]['title'])}</td>" + "".join(f"<td>{percent(a[k])}</td>" for k in ("correct", "incorrect", "cant_tell", "filler_pick")) + "</tr>")
        parts.append("</table><p>Mann-Whitney U, Grad-CAM first (the paper's alternatives: less on wrongly, greater on correctly classified images):</p><ul>")
        for subset, test in study["tests"].items():
            parts.append(f"<li>{e(subset)}: " + ("n/a" if test is None else f"U = {test['u']:.1f}, Z = {test['z']:.3f}, p = {test['p']:.4g} (n = {test['n1']}, {test['n2']})") + "</li>")
        parts.append(f"</ul><img src='{folder}/report/hist_incorrect.png' alt='histogram, wrongly classified'> "
                     f"<img src='{folder}/report/hist_correct.png' alt='histogram, correctly classified'>")
        if study["by_cause"]:
            parts.append("<h3>Per planted cause (accuracy with 95% CI; tests one-sided, Grad-CAM first; Holm over the study's tests)</h3>"
                         "<table><tr><th>group</th><th>questions</th>" + "".join(f"<th>{e(a)}</th>" for a in ARMS) + "<th>tests</th></tr>")  # fmt: skip
            for group, g in study["by_cause"].items():
                cells = "".join(f"<td>{percent(g['arms'][a]['accuracy'])} [{percent(g['arms'][a]['ci95'][0])}, {percent(g['arms'][a]['ci95'][1])}]</td>" for a in ARMS)
                tests = "; ".join(f"{e(t['hypothesis'] or n)} {e(t['first'])} {SIGN.get(t['alternative'], '?')} {e(t['second'])}: Z = {number(t['z'])}, "
                                  f"p = {number(t['p'], 4)}, Holm p = {number(t['p_holm'], 4)}" for n, t in g["tests"].items())  # fmt: skip
                parts.append(f"<tr><td>{e(group)}</td><td>{g['n_questions']}</td>{cells}<td>{tests}</td></tr>")
            parts.append("</table>")
    from pv.survey.examples import example_questions_html

    parts.append("<h2>Example questions, study (b): one per planted cause, every arm as the observer saw it</h2>")
    parts.append(example_questions_html(out / "simulation_cause", responses=out / "simulation_cause" / "responses.sqlite"))
    parts.append("<h2>Sanity check (cascading randomisation)</h2><img src='sanity/sanity.png' alt='sanity check curves'>")
    parts.append("<h2>Commands</h2><table><tr><th>step</th><th>command</th><th>seconds (wall)</th><th>CPU seconds</th></tr>")
    parts += [f"<tr><td>{e(s['step'])}</td><td><code>{e(s['command'])}</code></td><td>{s['seconds']}</td><td>{s.get('cpu_seconds', '')}</td></tr>" for s in steps]
    parts.append("</table>")
    return write_text(out / "report.html", "\n".join(parts) + "\n")


def participant_accuracies(answers: Path) -> dict[tuple[str, str], list[float]]:
    """(group, arm) -> per-observer accuracy on the group's questions (answers.csv of `pv survey simulate`);
    group: the planted cause of a wrong-prediction question, or "correct" for every right-prediction question."""
    hits: dict = defaultdict(list)
    with answers.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            group = "correct" if row["subset"] == "correct" else row["cause"]
            hits[group, row["arm"], row["observer"]].append(int(row["correct"]))
    values: dict = defaultdict(list)
    for (group, arm, _), correct in sorted(hits.items()):
        values[group, arm].append(sum(correct) / len(correct))
    return values


def pooled_tests(runs: list[Path]) -> dict:
    """The pre-registered confirmatory analysis: study (b)'s per-cause tests with the observers of all `runs` (one
    world seed each) pooled, per-observer accuracy on its own seed's questions; one-sided Mann-Whitney, Holm over all."""
    from pv.survey.bycause import HYPOTHESES
    from pv.survey.stats import holm, mann_whitney

    values: dict = defaultdict(list)
    questions: dict = defaultdict(int)
    for run in runs:
        for key, v in participant_accuracies(run / "simulation_cause" / "answers.csv").items():
            values[key] += v
        for group, g in json.loads((run / "summary.json").read_text())["studies"]["by cause"]["by_cause"].items():
            questions[group] += g["n_questions"]
    result: dict = {"runs": [str(r) for r in runs], "groups": {}}
    for group, tests in HYPOTHESES.items():
        entry = {"n_questions": questions[group], "arms": {arm: {"accuracy": sum(v) / len(v) if (v := values[group, arm]) else None,
                                                               "n_observers": len(values[group, arm])} for arm in ARMS}, "tests": {}}  # fmt: skip
        for name, first, second, alternative, hypothesis in tests:
            test = mann_whitney(values[group, first], values[group, second], alternative)
            entry["tests"][name] = {"hypothesis": hypothesis, "first": first, "second": second, **(test.__dict__ if test else {"p": math.nan})}
        result["groups"][group] = entry
    family = [(g, n) for g, entry in result["groups"].items() for n in entry["tests"]]
    for (g, n), adjusted in zip(family, holm([result["groups"][g]["tests"][n]["p"] for g, n in family])):
        result["groups"][g]["tests"][n]["p_holm"] = adjusted
    result["holm_family"] = [f"{g}/{n}" for g, n in family]
    return result


def pool(runs: list[Path], out: Path) -> int:
    from pv.atomic import write_text

    missing = [str(r) for r in runs if not (r / "summary.json").is_file()]
    if missing:
        raise SystemExit(f"quickstart --pool: no finished run (summary.json) in {', '.join(missing)}")
    result = pooled_tests(runs)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "pooled.json", json.dumps(result, indent=2, allow_nan=True) + "\n")
    for group, g in result["groups"].items():
        arms = ", ".join(f"{arm} {percent(a['accuracy'])} (n = {a['n_observers']})" for arm, a in g["arms"].items())
        print(f"{group} ({g['n_questions']} questions): {arms}")
        for name, t in g["tests"].items():
            print(f"  {t['hypothesis']} {t['first']} {SIGN.get(t.get('alternative'), '?')} {t['second']}: U = {number(t.get('u'), 1)}, "
                  f"Z = {number(t.get('z'))}, p = {number(t['p'], 4)}, Holm p = {number(t['p_holm'], 4)}")  # fmt: skip
    print(f"pooled tests of {len(runs)} runs: {out / 'pooled.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="world seed")
    parser.add_argument("--out", default="runs/quickstart", help="output folder")
    parser.add_argument("--preset", choices=list(PRESETS), default="default",
                        help="sizes and epochs: default (sized for 10 min on 2 idle cores), confirm (the pre-registered design: the same numbers), small (about half), full (the world's default counts), tiny (smoke test)")
    parser.add_argument("--small", action="store_const", const="small", dest="preset", help="the same as --preset small")
    parser.add_argument("--tiny", action="store_const", const="tiny", dest="preset", help="the same as --preset tiny")
    parser.add_argument("--observers", type=int, default=5, help="observers per arm")
    parser.add_argument("--pool", nargs="+", metavar="RUN", default=None,
                        help="finished runs (one world seed each): the pre-registered by-cause tests with their observers pooled, into --out")
    args = parser.parse_args(argv)
    if args.pool:
        return pool([Path(r) for r in args.pool], Path(args.out))
    preset = PRESETS[args.preset]
    world_size = [x for key, value in preset["world"].items() for x in (f"--{key}", str(value))]
    epochs = ["--trainer.max_epochs", str(preset["classifier_epochs"])] if preset["classifier_epochs"] else []
    decoder_epochs = ["--trainer.max_epochs", str(preset["decoder_epochs"])] if preset["decoder_epochs"] else []
    questions = ["--correct", str(preset["questions"][0]), "--incorrect", str(preset["questions"][1])] if preset["questions"] else []
    observer_epochs = ["--epochs", str(preset["observer_epochs"])]
    out = Path(args.out)
    if out.is_dir() and any(out.iterdir()):  # never overwrite (or half-mix) an earlier run's results
        done = out / "report.html"
        raise SystemExit(f"quickstart: {out} holds an earlier run{f' (open {done})' if done.is_file() else ''}; "
                         f"remove it to run again (rm -r {out}), or choose another --out / SEED")  # fmt: skip
    world, cls_dir, dec_dir = out / "world", out / "classifier", out / "decoder"
    classifier, decoder = cls_dir / "checkpoints" / "last.ckpt", dec_dir / "checkpoints" / "last.ckpt"
    steps: list[dict] = []
    total = time.perf_counter()
    step("generate the world", ["world", "--out", str(world), "--seed", str(args.seed), *world_size], steps)
    # The observers need only the world: train them in a second process (the machine's second core) while M and the
    # decoder train; `pv survey simulate` below reuses them (same --world, --out, --epochs).
    observers = start_step("train the observers", ["survey", "simulate", "--observers-only", "--world", str(world), "--out", str(out / "simulation"),
                                                   "--observers", str(args.observers), *observer_epochs], out / "observers.log")  # fmt: skip
    step("fit the classifier M", ["fit", "--config", "configs/classifier/world.yaml", "--data.init_args.root", str(world),
                                  "--trainer.default_root_dir", str(cls_dir), "--trainer.enable_progress_bar", "false", *epochs], steps)  # fmt: skip
    step("fit the PV decoder", ["fit", "--config", "configs/decoder/world.yaml", "--data.init_args.source.init_args.root", str(world),
                                "--model.init_args.encoder.init_args.checkpoint", str(classifier),
                                "--trainer.default_root_dir", str(dec_dir), "--trainer.enable_progress_bar", "false", *decoder_epochs], steps)  # fmt: skip
    step("analyze M on the unbiased split", ["analyze", "--checkpoint", str(classifier), "--data", "configs/data/world.yaml", "--root", str(world),
                                             "--split", "val", "--out", str(out / "analysis_val")], steps)  # fmt: skip
    step("analyze M on the planted causes", ["analyze", "--checkpoint", str(classifier), "--data", "configs/data/world.yaml", "--root", str(world),
                                             "--split", "test", "--out", str(out / "analysis")], steps)  # fmt: skip
    # Two studies on the same observers: (a) the paper's buckets, (b) wrong questions drawn equally per planted cause.
    # The presentation is pinned (not left to defaults), so the pre-registered design cannot drift.
    presentation = ["--panel-size", "128", "--normalization", "minmax", "--fillers", "all", "--world", str(world), "--overwrite", *questions]
    for name, stratify in STUDIES.items():
        step(f"build study ({name})", ["survey", "build", "--analysis", str(out / "analysis"), "--classifier", str(classifier), "--decoder", str(decoder),
                                       "--out", str(out / f"study{SUFFIX[name]}"), "--stratify", stratify, *presentation], steps)  # fmt: skip
    finish_step(observers, steps)
    for name in STUDIES:
        simulation = out / f"simulation{SUFFIX[name]}"
        if SUFFIX[name]:  # the same observers: their cache is reused when the settings match (loaded, not retrained)
            shutil.copytree(out / "simulation" / "observers", simulation / "observers")
        step(f"simulate the observers ({name})", ["survey", "simulate", "--study", str(out / f"study{SUFFIX[name]}"), "--world", str(world),
                                                  "--out", str(simulation), "--observers", str(args.observers), *observer_epochs], steps)  # fmt: skip
        step(f"analyze the simulated study ({name})", ["survey", "analyze", "--db", str(simulation / "responses.sqlite"),
                                                       "--manifest", str(simulation), "--out", str(simulation / "report")], steps)  # fmt: skip
    with (out / "analysis" / "predictions.csv").open(newline="", encoding="utf-8") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda r: (r["bucket"] != "incorrect", r["id"]))
    (out / "sanity_images.txt").write_text("".join(r["path"] + "\n" for r in rows[:32]), encoding="utf-8")
    step("sanity check", ["sanity-check", "--classifier", str(classifier), "--decoder", str(decoder), "--images", str(out / "sanity_images.txt"),
                          "--out", str(out / "sanity")], steps)  # fmt: skip

    print("\n=== decoder metrics and report", flush=True)
    decoder_numbers = decoder_metrics(classifier, decoder, world)
    causes = cause_errors(out / "analysis" / "predictions.csv", world)
    sanity = json.loads((out / "sanity" / "sanity.json").read_text())
    studies = {name: study_summary(out / f"simulation{SUFFIX[name]}") for name in STUDIES}
    summary = {
        "world": {"seed": args.seed, "preset": args.preset, **preset["world"]},
        "classifier": {"map": json.loads((out / "analysis_val" / "summary.json").read_text())["map"], "causes": causes},
        "decoder": {"ssim": decoder_numbers["all"]["ssim"], "psnr": decoder_numbers["all"]["psnr"], "agreement": decoder_numbers["all"]["agreement"],
                    "by_group": decoder_numbers},
        "studies": studies,
        "sanity": {"pv_ssim_randomized": sanity["pv_ssim_randomized"], "gradcam_ssim_randomized": sanity["gradcam_ssim_randomized"],
                   "steps": sanity["steps"], "pv_ssim": sanity["pv_ssim"], "gradcam_ssim": sanity["gradcam_ssim"]},
        "steps": steps, "seconds": round(time.perf_counter() - total, 1),
    }  # fmt: skip
    from pv.atomic import write_text

    write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    wrong_predictions_png(out / "simulation_cause", world, out / "wrong_predictions.png")
    report = write_report(out, summary, steps, causes, decoder_numbers, world)
    print(f"\nquickstart done in {summary['seconds']:.0f} s: open {report} (numbers in {out / 'summary.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
