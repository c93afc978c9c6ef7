"""`pv survey export`: the response database -> one CSV row per answer (drop-outs without answers get one empty row).

This CSV is what gets shared: it holds no platform ID, no keyed hash of one, no token and no IP address.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
from contextlib import closing
from pathlib import Path

from pv.atomic import write_text
from pv.survey import db
from pv.survey.manifest import item_index
from pv.survey.order import default_order
from pv.survey.errors import MissingFileError, StudyError

COLUMNS = (
    "participant", "seq", "arm", "started_at", "completed_at", "completed",
    "question", "subset", "place", "option", "option_label", "answer_key", "correct", "position", "answered_at", "seconds",
)  # fmt: skip


def export_responses(db_path: str | Path, out: str | Path) -> int:
    """Write the CSV (atomically); return the number of answers written."""
    out = Path(out)
    if not out.parent.is_dir():
        raise MissingFileError(f"Output folder not found: {out.parent}")
    with closing(db.open_for_reading(db_path)) as conn:
        meta = db.read_meta(conn)
        participants = db.read_participants(conn)
        answers = db.read_answers(conn)
    if "manifest" not in meta:
        raise StudyError(f"{db_path}: no study manifest stored (was the server ever started on it?)")
    manifest = json.loads(meta["manifest"])
    items = item_index(manifest)
    manifest_order = default_order(manifest)
    by_participant: dict[str, list] = {}
    for a in answers:
        by_participant.setdefault(a["participant_id"], []).append(a)
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    for p in participants:
        order = json.loads(p["question_order"]) if p["question_order"] else manifest_order
        base = {"participant": p["id"], "seq": p["seq"], "arm": p["arm"], "started_at": p["started_at"],
                "completed_at": p["completed_at"] or "", "completed": int(p["completed_at"] is not None)}  # fmt: skip
        rows = by_participant.get(p["id"], [])
        if not rows:
            writer.writerow(base)
        for a in rows:
            q = items[a["question_id"]]
            labels = {o["id"]: o["label"] for o in q["options"]}
            writer.writerow({
                **base, "question": a["question_id"], "subset": q["subset"],
                "place": order.index(a["question_id"]) + 1 if a["question_id"] in order else "",
                "option": a["option_id"], "option_label": labels.get(a["option_id"], ""), "answer_key": q["answer"],
                "correct": int(a["option_id"] == q["answer"]), "position": a["position"], "answered_at": a["answered_at"],
                "seconds": "" if a["seconds"] is None else f"{a['seconds']:.3f}",
            })  # fmt: skip
    write_text(out, buffer.getvalue())
    return len(answers)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", required=True, help="SQLite response database")
    parser.add_argument("--out", required=True, help="CSV file to write, e.g. responses.csv (the file to share: no IDs or keys)")


def run(args: argparse.Namespace) -> int:
    count = export_responses(args.db, args.out)
    print(f"Wrote {count} answers to {args.out}")
    return 0
