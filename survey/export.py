"""`pv survey export`: the response database -> one CSV row per answer (drop-outs without answers get one empty row)."""
from __future__ import annotations

import csv
import json
from contextlib import closing
from pathlib import Path

from survey import db
from survey.manifest import question_index

COLUMNS = (
    "participant", "seq", "arm", "started_at", "completed_at", "completed",
    "question", "subset", "option", "option_label", "answer_key", "correct", "position", "answered_at",
)  # fmt: skip


def export_responses(db_path: str | Path, out: str | Path) -> int:
    """Write the CSV; return the number of answers written."""
    out = Path(out)
    if not out.parent.is_dir():
        raise FileNotFoundError(f"Output folder not found: {out.parent}")
    with closing(db.open_existing(db_path)) as conn:
        meta = db.read_meta(conn)
        participants = db.read_participants(conn)
        answers = db.read_answers(conn)
    if "manifest" not in meta:
        raise ValueError(f"{db_path}: no study manifest stored (was the server ever started on it?)")
    questions = question_index(json.loads(meta["manifest"]))
    by_participant: dict[str, list] = {}
    for a in answers:
        by_participant.setdefault(a["participant_id"], []).append(a)
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for p in participants:
            base = {"participant": p["id"], "seq": p["seq"], "arm": p["arm"], "started_at": p["started_at"],
                    "completed_at": p["completed_at"] or "", "completed": int(p["completed_at"] is not None)}  # fmt: skip
            rows = by_participant.get(p["id"], [])
            if not rows:
                writer.writerow(base)
            for a in rows:
                q = questions[a["question_id"]]
                labels = {o["id"]: o["label"] for o in q["options"]}
                writer.writerow({
                    **base, "question": a["question_id"], "subset": q["subset"], "option": a["option_id"],
                    "option_label": labels.get(a["option_id"], ""), "answer_key": q["answer"],
                    "correct": int(a["option_id"] == q["answer"]), "position": a["position"], "answered_at": a["answered_at"],
                })  # fmt: skip
    return len(answers)
