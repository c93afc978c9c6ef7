"""`pv survey analyze`: the paper's Table 1, its Mann-Whitney tests and Figure 6 from a response database.

When the questions carry their planted cause (a generated world, `pv survey build --world`), also accuracy and
the pre-registered tests per cause (pv.survey.bycause).

Per participant who completed the survey and is not excluded: accuracy on the correctly and on the
wrongly classified questions ("I just can't tell" counts as wrong; attention checks do not count). Per
arm: started, completed, excluded (with reasons), mean +- standard error, against the random-guess
baseline. Between arms: Mann-Whitney U tests with the paper's per-subset hypotheses (pv.survey.stats).
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import math
import warnings
from contextlib import closing
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from pv.atomic import write_text
from pv.explain.figures import save_figure
from pv.survey import bycause, db
from pv.survey.manifest import SUBSETS, fingerprint, load_manifest
from pv.survey.questions import CANT_TELL_ID
from pv.survey.scores import ExclusionRules, ParticipantScore, arm_table, score_participants, values_for
from pv.survey.stats import ALTERNATIVES, PAPER_ALTERNATIVES, mann_whitney
from pv.survey.errors import StudyError

SUBSET_TITLES = {"correct": "Correctly classified", "incorrect": "Wrongly classified"}
SIGNS = {"greater": ">", "less": "<", "two-sided": "!="}


def test_arms(arms: list[str]) -> tuple[str, str]:
    """(first, second) sample: Grad-CAM first as in the paper, else the manifest's first two arms."""
    return ("gradcam", "pv") if {"gradcam", "pv"} <= set(arms) else (arms[0], arms[1])


def summarize(scores: list[ParticipantScore], arms: list[str], alternative: str = "paper", continuity: bool = True,
              exact: bool = False) -> dict:  # fmt: skip
    """Counts and Table 1 per arm, and the Mann-Whitney test per subset (first sample: `test_arms`)."""
    summary: dict = {"arms": arm_table(scores, arms), "tests": {}, "alternative": alternative}
    if len(arms) >= 2:
        first, second = test_arms(arms)
        summary["test_order"] = [first, second]
        for subset in SUBSETS:
            chosen = PAPER_ALTERNATIVES[subset] if alternative == "paper" else alternative
            test = mann_whitney(values_for(scores, first, subset), values_for(scores, second, subset), chosen, continuity, exact)
            summary["tests"][subset] = None if test is None else test.__dict__
    return summary


def percent(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.1f}%"


def plot_histograms(scores: list[ParticipantScore], manifest: dict, arms: list[str], subset: str, baseline: float, path: Path) -> Path | None:
    """Figure 6: per-participant accuracy histograms, one panel per arm, for one subset; None (and a warning)
    when the study has no question in that subset."""
    n_questions = sum(q["subset"] == subset for q in manifest["questions"])
    if n_questions == 0:
        warnings.warn(f"the study has no {subset}ly classified questions: {path.name} is not drawn", stacklevel=2)
        path.unlink(missing_ok=True)
        return None
    edges = (np.arange(n_questions + 2) - 0.5) / n_questions  # one bin per possible score k/n
    fig = Figure(figsize=(4.5 * len(arms), 3.4))
    axes = fig.subplots(1, len(arms), sharey=True, squeeze=False)
    for ax, arm in zip(axes[0], arms):
        values = values_for(scores, arm, subset)
        ax.hist(values, bins=edges, rwidth=0.85, color="#1f5fbf" if arm == arms[0] else "#d9822b", alpha=0.85)
        ax.axvline(baseline, color="#666", linestyle=":", label=f"random guess {percent(baseline)}")
        if values:
            ax.axvline(float(np.mean(values)), color="black", linestyle="--", label=f"mean {percent(float(np.mean(values)))}")
        ax.set_title(f"{manifest['arms'][arm]['title']} (n={len(values)})")
        ax.set_xlabel("per-participant accuracy")
        ax.set_xlim(-0.05, 1.05)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8, loc="best", framealpha=0.9)
    axes[0][0].set_ylabel("participants")
    fig.suptitle(f"{SUBSET_TITLES[subset]} images ({n_questions} questions)")
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


def write_report(summary: dict, manifest: dict, arms: list[str], baseline: float, out: Path, db_path: Path, drawn: list[str]) -> Path:
    """report.md: participants (started, completed, excluded and why), Table 1, the tests and the histograms."""
    titles = {arm: manifest["arms"][arm]["title"] for arm in arms}
    counts = {s: sum(q["subset"] == s for q in manifest["questions"]) for s in SUBSETS}
    rules = summary.get("exclusions", {})
    lines = [
        f"# {manifest['name']}: simulatability study results",
        "",
        f"Database `{db_path}`, study `{fingerprint(manifest)}`, {len(manifest['questions'])} questions "
        f"({counts['correct']} correctly, {counts['incorrect']} wrongly classified), "
        f"{len(manifest.get('attention_checks') or [])} attention checks. "
        f"Generated {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}.",
        "",
        "## Participants",
        "",
        f"Exclusion rules: {rules.get('description', 'none')}.",
        "",
        "| Arm | Started | Completed | Drop-outs | Excluded | Analysed | Exclusion reasons |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for a in arms:
        e = summary["arms"][a]
        reasons = ", ".join(f"{k}: {v}" for k, v in e["exclusion_reasons"].items()) or "-"
        lines.append(f"| {titles[a]} | {e['started']} | {e['completed']} | {e['dropouts']} | {e['excluded']} | {e['included']} | {reasons} |")
    lines += [
        "",
        "## Accuracy (Table 1)",
        "",
        "Mean +- standard error of per-participant accuracy over analysed participants; \"I just can't tell\" counts as wrong.",
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
        first, second = summary["test_order"]
        lines += [
            "## Mann-Whitney U tests",
            "",
            f"First sample {titles[first]}, second {titles[second]}; U is the first sample's statistic, Z its normal "
            "approximation with the tie correction" + (" and the continuity correction" if summary.get("continuity", True) else "")
            + "; p is " + ("exact (see method)" if summary.get("exact") else "from that same Z") + ". "
            + ("Hypotheses per subset as in the paper." if summary["alternative"] == "paper" else ""),
            "",
            "| Subset | H1 | U | Z | p | method | n1 | n2 |",
            "|---|---|---:|---:|---:|---|---:|---:|",
        ]
        for subset in SUBSETS:
            t = summary["tests"].get(subset)
            if t is None:
                lines.append(f"| {SUBSET_TITLES[subset]} | | n/a | n/a | n/a | | | |")
                continue
            h1 = f"Acc({titles[first]}) {SIGNS[t['alternative']]} Acc({titles[second]})"
            lines.append(f"| {SUBSET_TITLES[subset]} | {h1} | {t['u']:.1f} | {t['z']:.3f} | {t['p']:.4g} | {t['method']} | {t['n1']} | {t['n2']} |")
        lines.append("")
    lines += bycause.report_lines(summary.get("by_cause") or {}, titles, manifest.get("selection"))
    lines += ["## Per-participant accuracy (Figure 6)", ""]
    lines += [f"![{SUBSET_TITLES[s]}](hist_{s}.png)\n" if s in drawn else f"No {s}ly classified questions: no histogram.\n" for s in SUBSETS]
    return write_text(out / "report.md", "\n".join(lines) + "\n")


def analyze(db_path: str | Path, manifest_path: str | Path, out: str | Path, alternative: str = "paper", continuity: bool = True,
            exact: bool = False, rules: ExclusionRules | None = None) -> Path:  # fmt: skip
    """Write report.md, summary.json, per_participant.csv and hist_{correct,incorrect}.png to `out`; return report.md."""
    if alternative not in ("paper", *ALTERNATIVES):
        raise StudyError(f"alternative must be paper, greater, less or two-sided, got {alternative!r}")
    rules = rules or ExclusionRules()
    manifest = load_manifest(manifest_path, check_files=False)
    db_path = Path(db_path)
    with closing(db.open_for_reading(db_path)) as conn:
        stored = db.read_meta(conn).get("study")
        if stored != fingerprint(manifest):
            raise StudyError(f"{db_path} holds responses to study {stored}, but {manifest_path} is study {fingerprint(manifest)}")
        scores = score_participants(conn, manifest, rules)
        answers = bycause.answer_table(conn)
    arms = list(manifest["arm_order"])
    options = [o for o in manifest["questions"][0]["options"] if o["id"] != CANT_TELL_ID]
    baseline = 1 / len(options)
    summary = summarize(scores, arms, alternative, continuity, exact)
    summary.update(random_guess=baseline, continuity=continuity, exact=exact)
    groups = bycause.by_cause(answers, manifest, scores, alternative, continuity, exact)
    if groups:  # the questions carry their planted cause (a study of `pv world`, built with --world)
        summary.update(selection=manifest.get("selection"), by_cause=groups, by_cause_settings=bycause.settings(groups))
    summary["exclusions"] = {
        "max_attention_failures": rules.max_attention_failures, "min_median_seconds": rules.min_median_seconds,
        "description": describe_rules(rules),
        "excluded": [{"participant": s.participant, "arm": s.arm, "reason": s.exclusion} for s in scores if s.exclusion],
    }  # fmt: skip
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "summary.json", json.dumps(summary, indent=2, allow_nan=True) + "\n")
    write_text(out / "per_participant.csv", per_participant_csv(scores))
    drawn = [s for s in SUBSETS if plot_histograms(scores, manifest, arms, s, baseline, out / f"hist_{s}.png") is not None]
    return write_report(summary, manifest, arms, baseline, out, db_path, drawn)


def describe_rules(rules: ExclusionRules) -> str:
    parts = []
    if rules.max_attention_failures is not None:
        parts.append(f"more than {rules.max_attention_failures} failed attention check(s)")
    if rules.min_median_seconds is not None:
        parts.append(f"median time per question under {rules.min_median_seconds:g} s")
    return "; ".join(parts) or "none"


def per_participant_csv(scores: list[ParticipantScore]) -> str:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["participant", "arm", "completed", *(f"accuracy_{s}" for s in SUBSETS), "cant_tell", "answered",
                     "attention_passed", "attention_failed", "median_seconds", "excluded", "exclusion_reason", "question_order"])  # fmt: skip
    for s in scores:
        writer.writerow([s.participant, s.arm, int(s.completed), *(s.accuracy.get(k, "") for k in SUBSETS), s.cant_tell, s.answered,
                         s.attention_passed, ";".join(s.attention_failed), "" if math.isnan(s.median_seconds) else f"{s.median_seconds:.2f}",
                         int(s.exclusion is not None), s.exclusion or "", ";".join(s.question_order or [])])  # fmt: skip
    return buffer.getvalue()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", required=True, help="SQLite response database")
    parser.add_argument("--manifest", required=True, help="the study folder or its manifest.json")
    parser.add_argument("--out", required=True, help="report folder")
    parser.add_argument("--alternative", default="paper", choices=("paper", *ALTERNATIVES),
                        help="H1 for Grad-CAM (first sample) against PV; paper: less on wrongly, greater on correctly classified images")  # fmt: skip
    parser.add_argument("--no-continuity", action="store_true", help="Z and its p without the continuity correction")
    parser.add_argument("--exact", action="store_true", help="exact p-values (small samples): exact U distribution, or a permutation test with ties")
    parser.add_argument("--max-attention-failures", type=int, default=None,
                        help="exclude participants who failed more attention checks than this (default: exclude nobody)")  # fmt: skip
    parser.add_argument("--min-seconds", type=float, default=None,
                        help="exclude participants whose median time per question is below this many seconds")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    rules = ExclusionRules(args.max_attention_failures, args.min_seconds)
    report = analyze(args.db, args.manifest, args.out, args.alternative, not args.no_continuity, args.exact, rules)
    print(f"Wrote {report} (with summary.json, per_participant.csv, hist_*.png)")
    return 0
