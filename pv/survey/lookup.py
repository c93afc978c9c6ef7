"""`pv survey lookup`: which of the platform IDs you hold took part (for approving and paying), from the keyed hashes.

The database stores HMAC(study key, platform ID) only; with the keys file beside it this command hashes
the IDs you give (e.g. Prolific's list of submissions) and reports each one's status. Its output holds the
raw IDs you gave it: keep it with your platform records, do not share it.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from contextlib import closing
from pathlib import Path

from pv.survey import db
from pv.survey.errors import StudyError
from pv.survey.keys import keys_path, load_or_create_keys
from pv.survey.platform import participant_hash


def lookup(db_path: str | Path, platform_ids: list[str]) -> list[dict[str, str]]:
    """[{"platform_id", "status" (not started | started | completed), "arm", "completed_at"}] per given ID."""
    if not keys_path(db_path).is_file():
        raise StudyError(f"{keys_path(db_path)} not found: platform IDs can only be looked up with the study's keys file")
    keys = load_or_create_keys(db_path)
    with closing(db.open_for_reading(db_path)) as conn:
        platform = json.loads(db.read_meta(conn)["manifest"]).get("platform") or {}
        rows = []
        for platform_id in platform_ids:
            found = db.find_by_platform_hash(conn, participant_hash(keys["platform"], platform, platform_id))
            status = "not started" if found is None else "completed" if found.completed_at else "started"
            rows.append({"platform_id": platform_id, "status": status, "arm": found.arm if found else "",
                         "completed_at": (found.completed_at or "") if found else ""})  # fmt: skip
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", required=True, help="SQLite response database (its .keys file must be beside it)")
    parser.add_argument("ids", nargs="+", help="platform IDs, or @FILE with one ID per line")


def run(args: argparse.Namespace) -> int:
    ids: list[str] = []
    for given in args.ids:
        ids += [line.strip() for line in Path(given[1:]).read_text().splitlines() if line.strip()] if given.startswith("@") else [given]
    writer = csv.DictWriter(sys.stdout, fieldnames=["platform_id", "status", "arm", "completed_at"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(lookup(args.db, ids))
    return 0
