"""Questions drawn by planted cause, for a world whose truth is known (`pv survey build --stratify cause`).

The paper's mode (`pv.survey.questions.select_questions`) draws wrong questions from the `incorrect` bucket
(no true label predicted). In a generated world M often names the true object *and* the class a planted
cause implicates, so those images are `partial` and never reach the study. Here a wrong prediction is one
whose top class, the class the question asks for, is not a true label, and the wrong questions are drawn in
equal numbers from each planted cause (14 -> 5/5/4; a cause with too few images gives its share to the
others). Right questions are the paper's: the `correct` bucket (predicted set == label set), any cause.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from pv.survey.errors import MissingFileError, StudyError
from pv.survey.questions import Prediction, TooFewImagesError

CAUSES = ("shortcut", "lookalike", "texture_swap")  # pv.data.world.CAUSES, in the order shares are given out
STRATIFY_MODES = ("none", "cause")
RIGHT = "bucket correct: the predicted set equals the true label set"
WRONG = {"none": "bucket incorrect: no true label predicted",
         "cause": "the top class (the class the question asks for) is not a true label; any bucket"}  # fmt: skip


def read_causes(world: str | Path) -> dict[str, str]:
    """image id -> planted cause ("none" or one of CAUSES), from WORLD/truth.json (written by `pv world`)."""
    path = Path(world) / "truth.json"
    if not path.is_file():
        raise MissingFileError(f"{path} not found: --world must be a folder written by `pv world`")
    return {row["id"]: row["cause"] for row in json.loads(path.read_text(encoding="utf-8"))}


def is_wrong(row: Prediction) -> bool:
    """M's top class is not among the image's true labels."""
    return row.top_class not in row.labels


def allocate(available: dict[str, int], total: int) -> dict[str, int]:
    """Share `total` questions among causes as equally as their pools allow (one at a time to the cause with the
    fewest so far that still has images; ties go to the earlier cause): 14 over ample pools -> 5, 5, 4."""
    shares = dict.fromkeys(available, 0)
    for _ in range(total):
        open_ = [c for c in available if shares[c] < available[c]]
        if not open_:
            break
        shares[min(open_, key=lambda c: shares[c])] += 1
    return shares


def select_by_cause(rows: list[Prediction], causes: dict[str, str], n_correct: int = 16, n_incorrect: int = 14,
                    seed: int = 0) -> tuple[list[Prediction], dict]:  # fmt: skip
    """`n_correct` right and `n_incorrect` wrong rows (balanced over CAUSES), shuffled together, and what was drawn:
    {"pool": {...}, "drawn": {...}} per "correct" and per cause. Seeded."""
    if n_correct < 0 or n_incorrect < 0 or n_correct + n_incorrect == 0:
        raise StudyError(f"question counts must be >= 0 and not both 0, got correct={n_correct}, incorrect={n_incorrect}")
    missing = sorted({r.id for r in rows} - set(causes))
    if missing:
        raise StudyError(f"--world: truth.json has no cause for {len(missing)} image(s) of the predictions table, e.g. {missing[0]!r}: "
                         "the analysis must come from that world's images")  # fmt: skip
    ids = [r.id for r in rows]
    if len(set(ids)) != len(ids):
        raise StudyError(f"duplicate image id(s) in the predictions table: {sorted({i for i in ids if ids.count(i) > 1})}")
    pools = {"correct": sorted((r for r in rows if r.bucket == "correct"), key=lambda r: r.id)}
    for cause in CAUSES:
        pools[cause] = sorted((r for r in rows if is_wrong(r) and causes[r.id] == cause), key=lambda r: r.id)
    wrong_pool = sum(len(pools[c]) for c in CAUSES)
    if len(pools["correct"]) < n_correct or wrong_pool < n_incorrect:
        raise TooFewImagesError(
            f"the predictions table has {len(pools['correct'])} correctly classified images and {wrong_pool} with a planted cause "
            f"whose top class is not a true label ({', '.join(f'{c} {len(pools[c])}' for c in CAUSES)}), but {n_correct} correct "
            f"and {n_incorrect} incorrect questions were requested: lower --correct/--incorrect or analyze more cause images"
        )
    drawn = {"correct": n_correct, **allocate({c: len(pools[c]) for c in CAUSES}, n_incorrect)}
    rng = random.Random(seed)
    chosen: list[Prediction] = []
    for group, count in drawn.items():
        chosen += rng.sample(pools[group], count)
    rng.shuffle(chosen)
    return chosen, {"pool": {g: len(p) for g, p in pools.items()}, "drawn": drawn}


def selection_record(mode: str, world: str | Path | None, n_correct: int, n_incorrect: int, drawn: dict | None = None) -> dict:
    """The manifest's "selection": how the questions were chosen (mode, definitions, counts per group)."""
    record = {"mode": "paper" if mode == "none" else mode, "world": None if world is None else str(Path(world).resolve()),
              "right": RIGHT, "wrong": WRONG[mode], "requested": {"correct": n_correct, "incorrect": n_incorrect}}  # fmt: skip
    return record | (drawn or {})


def check_stratify(stratify: str, world: str | Path | None) -> None:
    """A one-line error for an unknown mode, or "cause" without a world (before any work)."""
    if stratify not in STRATIFY_MODES:
        raise StudyError(f"--stratify must be one of {', '.join(STRATIFY_MODES)}, got {stratify!r}")
    if stratify == "cause" and world is None:
        raise StudyError("--stratify cause needs --world (the folder written by `pv world`, whose truth.json names each image's cause)")
    if world is not None and not (Path(world) / "truth.json").is_file():
        raise MissingFileError(f"{Path(world) / 'truth.json'} not found: --world must be a folder written by `pv world`")


def choose_questions(rows: list[Prediction], n_correct: int, n_incorrect: int, seed: int, stratify: str = "none",
                     world: str | Path | None = None) -> tuple[list[Prediction], dict, dict[str, str] | None]:  # fmt: skip
    """The study's rows, the manifest's "selection" record and the causes by image id (None without a world).

    stratify "none": the paper's buckets (`select_questions`); a `world` then only records each question's cause.
    stratify "cause": `select_by_cause` (needs `world`).
    """
    from pv.survey.questions import select_questions

    check_stratify(stratify, world)
    causes = read_causes(world) if world is not None else None
    if stratify == "cause":
        chosen, drawn = select_by_cause(rows, causes, n_correct, n_incorrect, seed)
    else:
        chosen, drawn = select_questions(rows, n_correct, n_incorrect, seed), None
        if causes is not None:
            counts: dict[str, int] = {}
            for row in chosen:
                group = "correct" if row.bucket == "correct" else causes.get(row.id, "unknown")
                counts[group] = counts.get(group, 0) + 1
            drawn = {"drawn": counts}
    return chosen, selection_record(stratify, world, n_correct, n_incorrect, drawn), causes


def question_fields(row: Prediction, causes: dict[str, str] | None) -> dict:
    """A question's "subset" (correct | incorrect), and with a world its "bucket" and planted "cause"."""
    if causes is None:
        return {"subset": row.bucket}
    return {"subset": "correct" if row.bucket == "correct" else "incorrect", "bucket": row.bucket, "cause": causes.get(row.id, "unknown")}
