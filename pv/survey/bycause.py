"""The study by planted cause (issue 21): accuracy per arm per cause with 95% intervals, and the pre-registered tests.

Groups: the wrong-prediction questions of each cause (shortcut, lookalike, texture_swap; "none" for wrong
predictions on unplanted images), and "correct": every right-prediction question. Accuracy of an arm on a group
is the mean over analysed participants of their accuracy on the group's questions ("I just can't tell" and an
unanswered question count as wrong); its 95% interval is a percentile bootstrap resampling participants and
questions (`crossed_bootstrap_ci`). Tests are the paper's one-sided Mann-Whitney U on per-participant accuracies,
Grad-CAM first, with the pre-registered directions (`HYPOTHESES`), and a Holm correction over all of them.
"""
from __future__ import annotations

import math
import sqlite3

from pv.survey import db
from pv.survey.scores import ParticipantScore
from pv.survey.stats import crossed_bootstrap_ci, holm, mann_whitney

CAUSE_ORDER = ("shortcut", "lookalike", "texture_swap", "none")
RIGHT = "correct"
# group -> [(test name, first arm, second arm, alternative for first vs second, hypothesis)]
HYPOTHESES: dict[str, list[tuple[str, str, str, str, str | None]]] = {
    "shortcut": [("gradcam_vs_pv", "gradcam", "pv", "less", "H1"), ("reconstruction_vs_input", "reconstruction", "input", "greater", "H3")],
    "lookalike": [("gradcam_vs_pv", "gradcam", "pv", "less", "H1")],
    "texture_swap": [("gradcam_vs_pv", "gradcam", "pv", "greater", "H2")],
    RIGHT: [("gradcam_vs_pv", "gradcam", "pv", "greater", "H2")],
}
OTHER_WRONG = [("gradcam_vs_pv", "gradcam", "pv", "less", None)]  # the paper's direction on wrong predictions
HYPOTHESIS_TEXT = {
    "H1": "PV > Grad-CAM on shortcut and look-alike wrong predictions (H1 of the test: Acc(Grad-CAM) < Acc(PV))",
    "H2": "Grad-CAM >= PV on texture swaps and right predictions (tested as the paper's right-prediction test: Acc(Grad-CAM) > Acc(PV))",
    "H3": "reconstruction only > input only on shortcut wrong predictions",
}
CI_METHOD = "percentile bootstrap over participants and questions (two-way, 10,000 resamples, seed 0)"
ALPHA = 0.05


def question_groups(manifest: dict) -> dict[str, list[str]]:
    """group -> question ids, in CAUSE_ORDER (other causes after it), then "correct"; {} when questions carry no cause."""
    questions = manifest["questions"]
    if not any("cause" in q for q in questions):
        return {}
    groups: dict[str, list[str]] = {}
    for q in questions:
        group = RIGHT if q["subset"] == "correct" else q.get("cause", "unknown")
        groups.setdefault(group, []).append(q["id"])
    rank = {g: i for i, g in enumerate((*CAUSE_ORDER, RIGHT))}
    return dict(sorted(groups.items(), key=lambda item: (item[0] == RIGHT, rank.get(item[0], len(CAUSE_ORDER)), item[0])))


def answer_table(conn: sqlite3.Connection) -> dict[str, dict[str, str]]:
    """participant id -> {question id: chosen option id}."""
    table: dict[str, dict[str, str]] = {}
    for row in db.read_answers(conn):
        table.setdefault(row["participant_id"], {})[row["question_id"]] = row["option_id"]
    return table


def correctness(answers: dict[str, dict[str, str]], manifest: dict, scores: list[ParticipantScore], arm: str,
                question_ids: list[str]) -> list[list[int]]:  # fmt: skip
    """(analysed participants of `arm`, questions) matrix: 1 where the answer is the key."""
    key = {q["id"]: q["answer"] for q in manifest["questions"]}
    return [[int(answers.get(s.participant, {}).get(q) == key[q]) for q in question_ids] for s in scores if s.arm == arm and s.included]


def by_cause(answers: dict[str, dict[str, str]], manifest: dict, scores: list[ParticipantScore], alternative: str = "paper",
             continuity: bool = True, exact: bool = False, resamples: int = 10_000) -> dict:  # fmt: skip
    """summary["by_cause"]: {group: {subset, n_questions, arms: {arm: {accuracy, ci95, n_participants}}, tests: {...}}}.

    `alternative` "paper" uses HYPOTHESES' directions; any other value (greater, less, two-sided) replaces them all.
    """
    arms = list(manifest["arm_order"])
    result: dict = {}
    for group, ids in question_groups(manifest).items():
        matrices = {arm: correctness(answers, manifest, scores, arm, ids) for arm in arms}
        entry: dict = {"subset": "correct" if group == RIGHT else "incorrect", "n_questions": len(ids), "arms": {}, "tests": {}}
        for arm, matrix in matrices.items():
            accuracy = sum(map(sum, matrix)) / (len(matrix) * len(ids)) if matrix else math.nan
            entry["arms"][arm] = {"accuracy": accuracy, "ci95": list(crossed_bootstrap_ci(matrix, resamples=resamples)),
                                  "n_participants": len(matrix)}  # fmt: skip
        for name, first, second, direction, hypothesis in HYPOTHESES.get(group, OTHER_WRONG):
            if first not in matrices or second not in matrices:
                continue
            chosen = direction if alternative == "paper" else alternative
            x, y = ([sum(row) / len(row) for row in matrices[arm]] for arm in (first, second))
            test = mann_whitney(x, y, chosen, continuity, exact)
            entry["tests"][name] = {"first": first, "second": second, "hypothesis": hypothesis,
                                    **(test.__dict__ if test else {"alternative": chosen, "u": None, "z": None, "p": None})}  # fmt: skip
        result[group] = entry
    family = [(g, name) for g, entry in result.items() for name in entry["tests"]]
    p_values = [result[g]["tests"][name]["p"] for g, name in family]
    for (g, name), adjusted in zip(family, holm([math.nan if p is None else p for p in p_values])):
        result[g]["tests"][name]["p_holm"] = adjusted
    return result


def settings(by_group: dict) -> dict:
    """summary["by_cause_settings"]: how the by-cause numbers were computed."""
    return {"ci": CI_METHOD, "hypotheses": HYPOTHESIS_TEXT, "test_order": "first sample first; Grad-CAM first as in the paper",
            "holm": {"alpha": ALPHA, "family": [f"{g}/{name}" for g, entry in by_group.items() for name in entry["tests"]]}}  # fmt: skip


def report_lines(by_group: dict, titles: dict[str, str], selection: dict | None = None) -> list[str]:
    """The report.md section: how questions were drawn, accuracy with intervals per arm and group, the tests with Holm's p."""
    if not by_group:
        return []
    drawn = ", ".join(f"{g} {n}" for g, n in (selection or {}).get("drawn", {}).items())
    how = (f"Questions drawn in mode {selection['mode']!r}: right = {selection['right']}; wrong = {selection['wrong']}"
           + (f"; drawn: {drawn}" if drawn else "") + ".") if selection else ""  # fmt: skip
    arms = list(next(iter(by_group.values()))["arms"])
    cell = lambda a: "n/a" if math.isnan(a["accuracy"]) else f"{100 * a['accuracy']:.1f}% [{100 * a['ci95'][0]:.1f}, {100 * a['ci95'][1]:.1f}]"  # noqa: E731
    lines = [
        "## By planted cause", "", *([how, ""] if how else []),
        f"Accuracy per arm on the wrong predictions of each planted cause and on all right predictions (\"correct\"), "
        f"with 95% intervals: {CI_METHOD}.", "",
        "| Group | Questions | " + " | ".join(titles[a] for a in arms) + " |",
        "|---|---:|" + "---:|" * len(arms),
    ]  # fmt: skip
    lines += [f"| {g} | {e['n_questions']} | " + " | ".join(cell(e["arms"][a]) for a in arms) + " |" for g, e in by_group.items()]
    lines += ["", f"One-sided Mann-Whitney U on per-participant accuracy (first sample first), Holm over all {sum(len(e['tests']) for e in by_group.values())} "
              f"tests below (alpha {ALPHA}).", "",
              "| Group | Hypothesis | H1 of the test | U | Z | p | p (Holm) | n1 | n2 |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    signs = {"greater": ">", "less": "<", "two-sided": "!="}
    number = lambda v, f: "n/a" if v is None or math.isnan(v) else format(v, f)  # noqa: E731
    for g, e in by_group.items():
        for t in e["tests"].values():
            h1 = f"Acc({titles[t['first']]}) {signs[t['alternative']]} Acc({titles[t['second']]})"
            lines.append(f"| {g} | {t['hypothesis'] or '-'} | {h1} | {number(t['u'], '.1f')} | {number(t['z'], '.3f')} | {number(t['p'], '.4g')} "
                         f"| {number(t['p_holm'], '.4g')} | {t.get('n1', 0)} | {t.get('n2', 0)} |")  # fmt: skip
    lines += ["", *(f"- {h}: {text}" for h, text in HYPOTHESIS_TEXT.items()), ""]
    return lines
