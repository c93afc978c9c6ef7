"""Per-participant results from the response database: accuracy per subset, attention checks, timing, exclusions.

Accuracy counts only the study's questions ("I just can't tell" is wrong); attention checks are scored on
their own. A participant who completed is excluded when they failed more attention checks than allowed
or answered faster than a threshold (median seconds per question), each with its reason.
"""
from __future__ import annotations

import math
import sqlite3
import statistics
from dataclasses import dataclass, field, replace

from pv.survey import db
from pv.survey.manifest import SUBSETS, attention_checks
from pv.survey.questions import CANT_TELL_ID
from pv.survey.stats import mean_se


@dataclass(frozen=True)
class ParticipantScore:
    participant: str
    seq: int
    arm: str
    completed: bool
    accuracy: dict[str, float]  # subset -> fraction correct (completed participants only)
    cant_tell: float  # fraction of question answers that were "I just can't tell"
    answered: int
    attention_passed: int = 0
    attention_failed: list[str] = field(default_factory=list)  # ids of failed checks
    median_seconds: float = math.nan  # per question, from first view to answer
    question_order: list[str] | None = None
    exclusion: str | None = None  # why the participant is left out of the tests, None when included

    @property
    def included(self) -> bool:
        return self.completed and self.exclusion is None


@dataclass(frozen=True)
class ExclusionRules:
    max_attention_failures: int | None = None  # None: nobody is excluded for failed checks
    min_median_seconds: float | None = None  # None: nobody is excluded for speed

    def reason(self, score: ParticipantScore) -> str | None:
        reasons = []
        if self.max_attention_failures is not None and len(score.attention_failed) > self.max_attention_failures:
            reasons.append(f"failed attention check(s) {', '.join(score.attention_failed)}")
        if self.min_median_seconds is not None and not math.isnan(score.median_seconds) and score.median_seconds < self.min_median_seconds:
            reasons.append(f"median {score.median_seconds:.1f} s per question < {self.min_median_seconds:g} s")
        return "; ".join(reasons) or None


def score_participants(conn: sqlite3.Connection, manifest: dict, rules: ExclusionRules | None = None) -> list[ParticipantScore]:
    """Per-participant accuracy, checks, timing and (with `rules`) exclusion, from the database's answers."""
    import json

    key = {q["id"]: q["answer"] for q in manifest["questions"]}
    subset_of = {q["id"]: q["subset"] for q in manifest["questions"]}
    checks = {c["id"]: c["answer"] for c in attention_checks(manifest)}
    answers: dict[str, dict[str, sqlite3.Row]] = {}
    for row in db.read_answers(conn):
        answers.setdefault(row["participant_id"], {})[row["question_id"]] = row
    scores = []
    for p in db.read_participants(conn):
        given = answers.get(p["id"], {})
        completed = p["completed_at"] is not None
        accuracy = {}
        if completed:
            for subset in SUBSETS:
                ids = [q for q in key if subset_of[q] == subset]
                if ids:
                    accuracy[subset] = sum(q in given and given[q]["option_id"] == key[q] for q in ids) / len(ids)
        question_answers = [r for q, r in given.items() if q in key]
        cant_tell = sum(r["option_id"] == CANT_TELL_ID for r in question_answers) / len(question_answers) if question_answers else math.nan
        times = [r["seconds"] for r in question_answers if r["seconds"] is not None]
        failed = [c for c in checks if c in given and given[c]["option_id"] != checks[c]]
        if completed:
            failed += [c for c in checks if c not in given]  # a completed participant saw every check
        scores.append(ParticipantScore(
            p["id"], p["seq"], p["arm"], completed, accuracy, cant_tell, len(given),
            attention_passed=sum(c in given and given[c]["option_id"] == checks[c] for c in checks), attention_failed=sorted(failed),
            median_seconds=statistics.median(times) if times else math.nan,
            question_order=None if p["question_order"] is None else json.loads(p["question_order"]),
        ))  # fmt: skip
    if rules is not None:
        scores = [replace(s, exclusion=rules.reason(s)) if s.completed else s for s in scores]
    return scores


def arm_table(scores: list[ParticipantScore], arms: list[str]) -> dict[str, dict]:
    """Per arm: started, completed, excluded (with reasons), included, Table 1 cells over included participants."""
    table = {}
    for arm in arms:
        mine = [s for s in scores if s.arm == arm]
        done = [s for s in mine if s.completed]
        included = [s for s in done if s.exclusion is None]
        reasons: dict[str, int] = {}
        for s in done:
            for reason in (s.exclusion or "").split("; "):
                if reason:
                    kind = "failed attention checks" if reason.startswith("failed attention") else "too fast"
                    reasons[kind] = reasons.get(kind, 0) + 1
        entry = {
            "started": len(mine), "completed": len(done), "dropouts": len(mine) - len(done),
            "excluded": len(done) - len(included), "exclusion_reasons": reasons, "included": len(included), "accuracy": {},
            "attention_failures": sum(bool(s.attention_failed) for s in done),
        }  # fmt: skip
        entry["participants"] = entry["started"]  # the name used before exclusions existed
        for subset in SUBSETS:
            values = [s.accuracy[subset] for s in included if subset in s.accuracy]
            mean, se = mean_se(values)
            entry["accuracy"][subset] = {"mean": mean, "se": se, "n": len(values)}
        entry["cant_tell"] = mean_se([s.cant_tell for s in included if not math.isnan(s.cant_tell)])[0]
        table[arm] = entry
    return table


def values_for(scores: list[ParticipantScore], arm: str, subset: str) -> list[float]:
    """Per-participant accuracies of the included participants of one arm on one subset."""
    return [s.accuracy[subset] for s in scores if s.arm == arm and s.included and subset in s.accuracy]
