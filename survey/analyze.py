"""`pv survey analyze`: the paper's Table 1 and Figure 6 from a response database.

Per participant who completed the survey: accuracy on the correctly and on the wrongly classified
questions ("I just can't tell" counts as wrong). Per arm: mean +- standard error, against the
random-guess baseline (1 / class options = 25%). Between arms: one-tailed Mann-Whitney U tests on
per-participant accuracy (scipy), reported with U (of the first arm), Z and p.
"""
from __future__ import annotations

import csv
import datetime as dt
import json
import math
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from scipy.stats import mannwhitneyu

from survey import db
from survey.manifest import SUBSETS, fingerprint, load_manifest
from survey.questions import CANT_TELL_ID

SUBSET_TITLES = {"correct": "Correctly classified", "incorrect": "Wrongly classified"}


@dataclass(frozen=True)
class ParticipantScore:
    participant: str
    arm: str
    completed: bool
    accuracy: dict[str, float]  # subset -> fraction correct (completed participants only)
    cant_tell: float  # fraction of answers that were "I just can't tell"


@dataclass(frozen=True)
class MannWhitney:
    u: float
    z: float
    p: float
    n1: int
    n2: int


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error (sample standard deviation / sqrt(n)); SE is nan for n < 2."""
    if not values:
        return math.nan, math.nan
    array = np.asarray(values, dtype=float)
    se = float(array.std(ddof=1) / math.sqrt(len(array))) if len(array) > 1 else math.nan
    return float(array.mean()), se


def mann_whitney(x: list[float], y: list[float], alternative: str = "greater") -> MannWhitney | None:
    """scipy's U test; U is the first sample's statistic; Z its normal approximation with tie correction."""
    if not x or not y:
        return None
    result = mannwhitneyu(x, y, alternative=alternative)
    n1, n2 = len(x), len(y)
    n = n1 + n2
    _, ties = np.unique(np.concatenate([x, y]), return_counts=True)
    variance = n1 * n2 / 12 * ((n + 1) - float((ties**3 - ties).sum()) / (n * (n - 1)))
    z = (float(result.statistic) - n1 * n2 / 2) / math.sqrt(variance) if variance > 0 else math.nan
    return MannWhitney(float(result.statistic), z, float(result.pvalue), n1, n2)


def score_participants(conn, manifest: dict) -> list[ParticipantScore]:
    """Per-participant accuracy per subset from the database's answers."""
    key = {q["id"]: q["answer"] for q in manifest["questions"]}
    subset_of = {q["id"]: q["subset"] for q in manifest["questions"]}
    answers: dict[str, dict[str, str]] = {}
    for row in db.read_answers(conn):
        answers.setdefault(row["participant_id"], {})[row["question_id"]] = row["option_id"]
    scores = []
    for p in db.read_participants(conn):
        given = answers.get(p["id"], {})
        completed = p["completed_at"] is not None
        accuracy = {}
        if completed:
            for subset in SUBSETS:
                ids = [q for q in key if subset_of[q] == subset]
                if ids:
                    accuracy[subset] = sum(given.get(q) == key[q] for q in ids) / len(ids)
        cant_tell = sum(o == CANT_TELL_ID for o in given.values()) / len(given) if given else math.nan
        scores.append(ParticipantScore(p["id"], p["arm"], completed, accuracy, cant_tell))
    return scores


def summarize(scores: list[ParticipantScore], arms: list[str], alternative: str) -> dict:
    """Counts, mean +- SE per arm and subset, and the Mann-Whitney tests first arm vs second."""
    summary: dict = {"arms": {}, "tests": {}, "alternative": alternative}
    for arm in arms:
        mine = [s for s in scores if s.arm == arm]
        done = [s for s in mine if s.completed]
        entry = {"participants": len(mine), "completed": len(done), "dropouts": len(mine) - len(done), "accuracy": {}}
        for subset in SUBSETS:
            values = [s.accuracy[subset] for s in done if subset in s.accuracy]
            mean, se = mean_se(values)
            entry["accuracy"][subset] = {"mean": mean, "se": se, "n": len(values)}
        entry["cant_tell"] = mean_se([s.cant_tell for s in done])[0]
        summary["arms"][arm] = entry
    if len(arms) >= 2:
        for subset in SUBSETS:
            x, y = ([s.accuracy[subset] for s in scores if s.arm == arm and s.completed and subset in s.accuracy] for arm in arms[:2])
            test = mann_whitney(x, y, alternative)
            summary["tests"][subset] = None if test is None else test.__dict__
    return summary


def percent(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.1f}%"


def plot_histograms(scores: list[ParticipantScore], manifest: dict, arms: list[str], subset: str, baseline: float, path: Path) -> None:
    """Figure 6: per-participant accuracy histograms, one panel per arm, for one subset."""
    n_questions = sum(q["subset"] == subset for q in manifest["questions"])
    edges = (np.arange(n_questions + 2) - 0.5) / max(n_questions, 1)  # one bin per possible score k/n
    fig = Figure(figsize=(4.5 * len(arms), 3.4))
    axes = fig.subplots(1, len(arms), sharey=True, squeeze=False)
    for ax, arm in zip(axes[0], arms):
        values = [s.accuracy[subset] for s in scores if s.arm == arm and s.completed and subset in s.accuracy]
        ax.hist(values, bins=edges, rwidth=0.85, color="#1f5fbf" if arm == arms[0] else "#d9822b", alpha=0.85)
        ax.axvline(baseline, color="#666", linestyle=":", label=f"random guess {percent(baseline)}")
        if values:
            ax.axvline(float(np.mean(values)), color="black", linestyle="--", label=f"mean {percent(float(np.mean(values)))}")
        ax.set_title(f"{manifest['arms'][arm]['title']} (n={len(values)})")
        ax.set_xlabel("per-participant accuracy")
        ax.set_xlim(edges[0] - 0.02, edges[-1] + 0.02)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8, loc="best", framealpha=0.9)
    axes[0][0].set_ylabel("participants")
    fig.suptitle(f"{SUBSET_TITLES[subset]} images ({n_questions} questions)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write_report(summary: dict, manifest: dict, arms: list[str], baseline: float, out: Path, db_path: Path) -> Path:
    """report.md: participants, Table 1, the tests and the embedded histograms."""
    titles = {arm: manifest["arms"][arm]["title"] for arm in arms}
    counts = {s: sum(q["subset"] == s for q in manifest["questions"]) for s in SUBSETS}
    lines = [
        f"# {manifest['name']}: simulatability study results",
        "",
        f"Database `{db_path}`, study `{fingerprint(manifest)}`, {len(manifest['questions'])} questions "
        f"({counts['correct']} correctly, {counts['incorrect']} wrongly classified). "
        f"Generated {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}.",
        "",
        "## Participants",
        "",
        "| Arm | Participants | Completed | Drop-outs |",
        "|---|---:|---:|---:|",
        *(f"| {titles[a]} | {summary['arms'][a]['participants']} | {summary['arms'][a]['completed']} | {summary['arms'][a]['dropouts']} |" for a in arms),
        "",
        "## Accuracy (Table 1)",
        "",
        "Mean +- standard error of per-participant accuracy, completed participants only; "
        "\"I just can't tell\" counts as wrong.",
        "",
        "| Technique | Correctly classified | Wrongly classified | \"Can't tell\" answers |",
        "|---|---:|---:|---:|",
    ]
    for arm in arms:
        cells = []
        for subset in SUBSETS:
            acc = summary["arms"][arm]["accuracy"][subset]
            cells.append(f"{percent(acc['mean'])} +- {percent(acc['se'])} (n={acc['n']})")
        lines.append(f"| {titles[arm]} | {cells[0]} | {cells[1]} | {percent(summary['arms'][arm]['cant_tell'])} |")
    lines += [f"| Random guess | {percent(baseline)} | {percent(baseline)} | |", ""]
    if summary["tests"]:
        sign = {"greater": ">", "less": "<", "two-sided": "!="}[summary["alternative"]]
        tail = "two-tailed" if summary["alternative"] == "two-sided" else "one-tailed"
        lines += [
            f"## Mann-Whitney U tests ({tail}, H1: {titles[arms[0]]} {sign} {titles[arms[1]]})",
            "",
            f"U is the statistic of the {titles[arms[0]]} sample (scipy.stats.mannwhitneyu); Z its normal approximation with tie correction.",
            "",
            "| Subset | U | Z | p | n1 | n2 |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for subset in SUBSETS:
            t = summary["tests"].get(subset)
            lines.append(f"| {SUBSET_TITLES[subset]} | " + ("n/a | n/a | n/a | | |" if t is None else f"{t['u']:.1f} | {t['z']:.3f} | {t['p']:.4g} | {t['n1']} | {t['n2']} |"))
        lines.append("")
    lines += ["## Per-participant accuracy (Figure 6)", ""]
    lines += [f"![{SUBSET_TITLES[s]}](hist_{s}.png)\n" for s in SUBSETS]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def analyze(db_path: str | Path, manifest_path: str | Path, out: str | Path, alternative: str = "greater") -> Path:
    """Write report.md, summary.json, per_participant.csv and hist_{correct,incorrect}.png to `out`; return report.md."""
    if alternative not in ("greater", "less", "two-sided"):
        raise ValueError(f"alternative must be greater, less or two-sided, got {alternative!r}")
    manifest = load_manifest(manifest_path, check_files=False)
    db_path = Path(db_path)
    with closing(db.open_existing(db_path)) as conn:
        stored = db.read_meta(conn).get("study")
        if stored != fingerprint(manifest):
            raise ValueError(f"{db_path} holds responses to study {stored}, but {manifest_path} is study {fingerprint(manifest)}")
        scores = score_participants(conn, manifest)
    arms = list(manifest["arm_order"])
    options = [o for o in manifest["questions"][0]["options"] if o["id"] != CANT_TELL_ID]
    baseline = 1 / len(options)
    summary = summarize(scores, arms, alternative)
    summary["random_guess"] = baseline
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=True) + "\n", encoding="utf-8")
    with (out / "per_participant.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["participant", "arm", "completed", *(f"accuracy_{s}" for s in SUBSETS), "cant_tell"])
        for s in scores:
            writer.writerow([s.participant, s.arm, int(s.completed), *(s.accuracy.get(k, "") for k in SUBSETS), s.cant_tell])
    for subset in SUBSETS:
        plot_histograms(scores, manifest, arms, subset, baseline, out / f"hist_{subset}.png")
    return write_report(summary, manifest, arms, baseline, out, db_path)
