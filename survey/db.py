"""The response database: SQLite in WAL mode; every write is one `BEGIN IMMEDIATE` transaction.

Tables: `meta` (study fingerprint, the manifest, the cookie-signing key), `participants` (random id,
arrival number, arm, form token, start token, option order per question, start/completion times) and `answers`
(first answer per participant and question). No IP address, user agent or other personal data.
"""
from __future__ import annotations

import datetime as dt
import json
import secrets
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from survey.manifest import fingerprint

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS participants (
    id TEXT PRIMARY KEY,               -- random, anonymous
    seq INTEGER NOT NULL UNIQUE,       -- arrival number 0, 1, 2, ... (arm = arm_order[seq % arms])
    arm TEXT NOT NULL,
    form_token TEXT NOT NULL,          -- per-participant CSRF token
    start_key TEXT,                    -- the welcome page's one-time token: a double-clicked Start makes one participant
    option_order TEXT NOT NULL,        -- JSON {question id: [option ids in display order]}
    started_at TEXT NOT NULL,
    completed_at TEXT                  -- NULL while incomplete (a drop-out if it stays NULL)
);
CREATE TABLE IF NOT EXISTS answers (
    participant_id TEXT NOT NULL REFERENCES participants(id),
    question_id TEXT NOT NULL,
    option_id TEXT NOT NULL,
    position INTEGER NOT NULL,         -- 0-based place of the chosen option on the page
    answered_at TEXT NOT NULL,
    PRIMARY KEY (participant_id, question_id)
);
"""


@dataclass(frozen=True)
class Participant:
    id: str
    seq: int
    arm: str
    form_token: str
    option_order: dict[str, list[str]]
    started_at: str
    completed_at: str | None


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def connect(db_path: str | Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit) that waits up to 30 s for the write lock."""
    conn = sqlite3.connect(str(db_path), timeout=30, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = FULL")  # a committed answer survives a crash of the server or the machine
    return conn


@contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction holding the database's write lock from its first statement."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def init_db(db_path: str | Path, manifest: dict[str, Any]) -> str:
    """Create the schema (WAL mode) and bind the database to this study; return the cookie-signing key.

    A database already bound to a different study raises ValueError.
    """
    db_path = Path(db_path)
    if not db_path.parent.is_dir():
        raise FileNotFoundError(f"Folder for the response database not found: {db_path.parent}")
    try:
        with closing(connect(db_path)) as conn:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise ValueError(f"{db_path}: cannot switch SQLite to WAL mode (got {mode!r})")
            conn.executescript(SCHEMA)
            with immediate(conn):
                columns = {r["name"] for r in conn.execute("PRAGMA table_info(participants)")}
                if "start_key" not in columns:  # a database made before start tokens were stored
                    conn.execute("ALTER TABLE participants ADD COLUMN start_key TEXT")
                conn.execute("CREATE UNIQUE INDEX IF NOT EXISTS participants_start_key ON participants (start_key)")
                meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
                study = fingerprint(manifest)
                if "study" in meta and meta["study"] != study:
                    raise ValueError(f"{db_path} holds responses to study {meta.get('study_name')!r} ({meta['study']}), "
                                     f"not to {manifest['name']!r} ({study}); use another --db")  # fmt: skip
                if "study" not in meta:
                    meta = {"study": study, "study_name": manifest["name"], "manifest": json.dumps(manifest),
                            "secret_key": secrets.token_hex(32), "created_at": now()}  # fmt: skip
                    conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", meta.items())
                return meta["secret_key"]
    except sqlite3.DatabaseError as err:
        raise ValueError(f"{db_path}: not a usable SQLite database: {err}") from None


def read_meta(conn: sqlite3.Connection) -> dict[str, str]:
    return dict(conn.execute("SELECT key, value FROM meta").fetchall())


def create_participant(conn: sqlite3.Connection, arms: list[str], option_order: Callable[[int], dict[str, list[str]]],
                       start_key: str | None = None) -> Participant:  # fmt: skip
    """Add the next participant: arm round-robin by arrival number, atomic under concurrent arrivals.

    A `start_key` (the welcome page's one-time token) already used returns the participant it made:
    a double-clicked or resent Start adds no second participant, arm or drop-out.
    """
    with immediate(conn):
        if start_key is not None:
            made = conn.execute("SELECT id FROM participants WHERE start_key = ?", (start_key,)).fetchone()
            if made is not None:
                return get_participant(conn, made["id"])
        seq = conn.execute("SELECT COALESCE(MAX(seq), -1) + 1 FROM participants").fetchone()[0]
        participant = Participant(
            id=secrets.token_hex(16), seq=seq, arm=arms[seq % len(arms)], form_token=secrets.token_urlsafe(32),
            option_order=option_order(seq), started_at=now(), completed_at=None,
        )  # fmt: skip
        conn.execute(
            "INSERT INTO participants (id, seq, arm, form_token, start_key, option_order, started_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (participant.id, seq, participant.arm, participant.form_token, start_key, json.dumps(participant.option_order),
             participant.started_at),  # fmt: skip
        )
    return participant


def get_participant(conn: sqlite3.Connection, participant_id: str) -> Participant | None:
    row = conn.execute("SELECT * FROM participants WHERE id = ?", (participant_id,)).fetchone()
    if row is None:
        return None
    return Participant(row["id"], row["seq"], row["arm"], row["form_token"], json.loads(row["option_order"]), row["started_at"], row["completed_at"])


def answers_of(conn: sqlite3.Connection, participant_id: str) -> dict[str, str]:
    """question id -> chosen option id."""
    rows = conn.execute("SELECT question_id, option_id FROM answers WHERE participant_id = ?", (participant_id,))
    return {r["question_id"]: r["option_id"] for r in rows}


def record_answer(conn: sqlite3.Connection, participant_id: str, question_ids: list[str], question_id: str, option_id: str, position: int) -> str:
    """Store an answer to the participant's current question, atomically.

    Returns "recorded", "duplicate" (already answered: the first answer is kept) or "not_current"
    (a question the participant has not reached; nothing is stored). The participant is marked
    complete with their last answer.
    """
    with immediate(conn):
        done = set(answers_of(conn, participant_id))
        if question_id in done:
            return "duplicate"
        current = next((q for q in question_ids if q not in done), None)
        if question_id != current:
            return "not_current"
        conn.execute(
            "INSERT INTO answers (participant_id, question_id, option_id, position, answered_at) VALUES (?, ?, ?, ?, ?)",
            (participant_id, question_id, option_id, position, now()),
        )
        if len(done) + 1 == len(question_ids):
            conn.execute("UPDATE participants SET completed_at = ? WHERE id = ? AND completed_at IS NULL", (now(), participant_id))
    return "recorded"


def read_participants(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    return conn.execute("SELECT id, seq, arm, started_at, completed_at FROM participants ORDER BY seq").fetchall()


def read_answers(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    return conn.execute(
        "SELECT a.participant_id, p.seq, p.arm, a.question_id, a.option_id, a.position, a.answered_at "
        "FROM answers a JOIN participants p ON p.id = a.participant_id ORDER BY p.seq, a.answered_at"
    ).fetchall()


def arm_counts(conn: sqlite3.Connection) -> dict[str, dict[str, int]]:
    """arm -> {"participants", "completed"}."""
    rows = conn.execute("SELECT arm, COUNT(*) AS n, COUNT(completed_at) AS done FROM participants GROUP BY arm")
    return {r["arm"]: {"participants": r["n"], "completed": r["done"]} for r in rows}


def open_existing(db_path: str | Path) -> sqlite3.Connection:
    """Connect to a response database that must already exist (for export and analysis)."""
    db_path = Path(db_path)
    if not db_path.is_file():
        raise FileNotFoundError(f"Response database not found: {db_path}")
    conn = connect(db_path)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as err:
        conn.close()
        raise ValueError(f"{db_path}: not a SQLite database: {err}") from None
    if not {"meta", "participants", "answers"} <= tables:
        conn.close()
        raise ValueError(f"{db_path}: not a pv survey response database (tables {sorted(tables)})")
    return conn
