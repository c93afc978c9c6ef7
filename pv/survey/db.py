"""The response database: SQLite in WAL mode; every write is one `BEGIN IMMEDIATE` transaction.

Tables: `meta` (study fingerprint and manifest), `participants` (random id, arrival number, arm, form
token, start token, question and option order, keyed hash of a platform ID, start/completion times),
`views` (when each question was first shown) and `answers` (first answer per participant and question,
with the seconds since it was shown). No IP address, user agent, raw platform ID or secret: the keys
live in a 0600 file beside the database (pv.survey.keys), and the database itself is created 0600.

A database made by an earlier version (no views, no question order, the cookie key in `meta`) is
upgraded in place when a server opens it; its participants keep their order and their cookies.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import sqlite3
import stat
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pv.survey.keys import create_private_empty, load_or_create_keys
from pv.survey.manifest import fingerprint
from pv.survey.errors import MissingFileError, StudyError

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
    question_order TEXT,               -- JSON [item ids in the order served]; NULL: the manifest's order
    platform_hash TEXT,                -- HMAC of the recruitment platform's ID (never the ID); NULL without one
    started_at TEXT NOT NULL,
    completed_at TEXT                  -- NULL while incomplete (a drop-out if it stays NULL)
);
CREATE TABLE IF NOT EXISTS views (
    participant_id TEXT NOT NULL REFERENCES participants(id),
    question_id TEXT NOT NULL,
    shown_at TEXT NOT NULL,            -- the first time the question page was served
    PRIMARY KEY (participant_id, question_id)
);
CREATE TABLE IF NOT EXISTS answers (
    participant_id TEXT NOT NULL REFERENCES participants(id),
    question_id TEXT NOT NULL,
    option_id TEXT NOT NULL,
    position INTEGER NOT NULL,         -- 0-based place of the chosen option on the page
    answered_at TEXT NOT NULL,
    seconds REAL,                      -- answered_at - first shown; NULL for answers stored before views existed
    PRIMARY KEY (participant_id, question_id)
);
"""
ADDED_COLUMNS = {  # table -> column -> declaration, for databases made before the column existed
    "participants": {"start_key": "TEXT", "question_order": "TEXT", "platform_hash": "TEXT"},
    "answers": {"seconds": "REAL"},
}


class AlreadyParticipated(Exception):
    """A platform ID that already started this study arrives again."""


@dataclass(frozen=True)
class Participant:
    id: str
    seq: int
    arm: str
    form_token: str
    option_order: dict[str, list[str]]
    question_order: list[str] | None
    started_at: str
    completed_at: str | None
    platform_hash: str | None = None


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def seconds_between(start: str, end: str) -> float:
    return (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()


def connect(db_path: str | Path, readonly: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit) that waits up to 30 s for the write lock.

    `readonly` connections (the admin page) never take a lock a participant's write waits for (WAL).
    """
    if readonly:
        conn = sqlite3.connect(f"{Path(db_path).resolve().as_uri()}?mode=ro", uri=True, timeout=30, isolation_level=None)
    else:
        conn = sqlite3.connect(str(db_path), timeout=30, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 30000")
    if not readonly:
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


def init_db(db_path: str | Path, manifest: dict[str, Any]) -> dict[str, str]:
    """Create (0600) or upgrade the database, bind it to this study, and return the study's keys.

    A database already bound to a different study raises ValueError.
    """
    db_path = Path(db_path)
    if not db_path.parent.is_dir():
        raise MissingFileError(f"Folder for the response database not found: {db_path.parent}")
    create_private_empty(db_path)
    if stat.S_IMODE(db_path.stat().st_mode) & 0o077 and db_path.stat().st_uid == os.getuid():
        os.chmod(db_path, 0o600)  # a database made before it was created private
    try:
        with closing(connect(db_path)) as conn:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StudyError(f"{db_path}: cannot switch SQLite to WAL mode (got {mode!r})")
            conn.executescript(SCHEMA)
            with immediate(conn):
                for table, columns in ADDED_COLUMNS.items():
                    have = {r["name"] for r in conn.execute(f"PRAGMA table_info({table})")}
                    for column, declaration in columns.items():
                        if column not in have:
                            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
                conn.execute("CREATE UNIQUE INDEX IF NOT EXISTS participants_start_key ON participants (start_key)")
                conn.execute("CREATE UNIQUE INDEX IF NOT EXISTS participants_platform_hash ON participants (platform_hash)")
                meta = read_meta(conn)
                study = fingerprint(manifest)
                if "study" in meta and meta["study"] != study:
                    raise StudyError(f"{db_path} holds responses to study {meta.get('study_name')!r} ({meta['study']}), "
                                     f"not to {manifest['name']!r} ({study}); use another --db")  # fmt: skip
                if "study" not in meta:
                    meta = {"study": study, "study_name": manifest["name"], "manifest": json.dumps(manifest), "created_at": now()}
                    conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", meta.items())
            keys = load_or_create_keys(db_path, cookie_key=meta.get("secret_key"))
            if "secret_key" in meta:  # made before the keys file: the key leaves the response file
                conn.execute("PRAGMA secure_delete = ON")
                with immediate(conn):
                    conn.execute("DELETE FROM meta WHERE key = 'secret_key'")
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return keys
    except sqlite3.DatabaseError as err:
        raise StudyError(f"{db_path}: not a usable SQLite database: {err}") from None


def read_meta(conn: sqlite3.Connection) -> dict[str, str]:
    return dict(conn.execute("SELECT key, value FROM meta").fetchall())


Layout = Callable[[int], tuple[list[str] | None, dict[str, list[str]]]]  # arrival number -> (question order, option order)


def create_participant(conn: sqlite3.Connection, arms: list[str], layout: Layout, start_key: str | None = None,
                       platform_hash: str | None = None) -> Participant:  # fmt: skip
    """Add the next participant: arm round-robin by arrival number, atomic under concurrent arrivals.

    A `start_key` (the welcome page's one-time token) already used returns the participant it made:
    a double-clicked or resent Start adds no second participant, arm or drop-out. A `platform_hash`
    that already started raises AlreadyParticipated.
    """
    with immediate(conn):
        if start_key is not None:
            made = conn.execute("SELECT id FROM participants WHERE start_key = ?", (start_key,)).fetchone()
            if made is not None:
                return get_participant(conn, made["id"])
        if platform_hash is not None and conn.execute("SELECT 1 FROM participants WHERE platform_hash = ?", (platform_hash,)).fetchone():
            raise AlreadyParticipated
        seq = conn.execute("SELECT COALESCE(MAX(seq), -1) + 1 FROM participants").fetchone()[0]
        question_order, option_order = layout(seq)
        participant = Participant(
            id=secrets.token_hex(16), seq=seq, arm=arms[seq % len(arms)], form_token=secrets.token_urlsafe(32),
            option_order=option_order, question_order=question_order, started_at=now(), completed_at=None,
            platform_hash=platform_hash,
        )  # fmt: skip
        conn.execute(
            "INSERT INTO participants (id, seq, arm, form_token, start_key, option_order, question_order, platform_hash, started_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (participant.id, seq, participant.arm, participant.form_token, start_key, json.dumps(option_order),
             None if question_order is None else json.dumps(question_order), platform_hash, participant.started_at),  # fmt: skip
        )
    return participant


def participant_from_row(row: sqlite3.Row) -> Participant:
    order = row["question_order"]
    return Participant(row["id"], row["seq"], row["arm"], row["form_token"], json.loads(row["option_order"]),
                       None if order is None else json.loads(order), row["started_at"], row["completed_at"], row["platform_hash"])  # fmt: skip


def get_participant(conn: sqlite3.Connection, participant_id: str) -> Participant | None:
    row = conn.execute("SELECT * FROM participants WHERE id = ?", (participant_id,)).fetchone()
    return None if row is None else participant_from_row(row)


def find_by_platform_hash(conn: sqlite3.Connection, platform_hash: str) -> Participant | None:
    row = conn.execute("SELECT * FROM participants WHERE platform_hash = ?", (platform_hash,)).fetchone()
    return None if row is None else participant_from_row(row)


def answers_of(conn: sqlite3.Connection, participant_id: str) -> dict[str, str]:
    """question id -> chosen option id."""
    rows = conn.execute("SELECT question_id, option_id FROM answers WHERE participant_id = ?", (participant_id,))
    return {r["question_id"]: r["option_id"] for r in rows}


def mark_shown(conn: sqlite3.Connection, participant_id: str, question_id: str) -> None:
    """Remember when a question was first shown (a reload keeps the first time)."""
    if conn.execute("SELECT 1 FROM views WHERE participant_id = ? AND question_id = ?", (participant_id, question_id)).fetchone():
        return
    with immediate(conn):
        conn.execute("INSERT OR IGNORE INTO views (participant_id, question_id, shown_at) VALUES (?, ?, ?)", (participant_id, question_id, now()))


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
        answered_at = now()
        shown = conn.execute("SELECT shown_at FROM views WHERE participant_id = ? AND question_id = ?", (participant_id, question_id)).fetchone()
        seconds = None if shown is None else seconds_between(shown["shown_at"], answered_at)
        conn.execute(
            "INSERT INTO answers (participant_id, question_id, option_id, position, answered_at, seconds) VALUES (?, ?, ?, ?, ?, ?)",
            (participant_id, question_id, option_id, position, answered_at, seconds),
        )
        if len(done) + 1 == len(question_ids):
            conn.execute("UPDATE participants SET completed_at = ? WHERE id = ? AND completed_at IS NULL", (answered_at, participant_id))
    return "recorded"


def read_participants(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    """Every participant in arrival order, without tokens or hashes (`via_platform` says whether one arrived with an ID)."""
    return conn.execute(
        "SELECT id, seq, arm, question_order, platform_hash IS NOT NULL AS via_platform, started_at, completed_at "
        "FROM participants ORDER BY seq"
    ).fetchall()


def read_answers(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    return conn.execute(
        "SELECT a.participant_id, p.seq, p.arm, a.question_id, a.option_id, a.position, a.answered_at, a.seconds "
        "FROM answers a JOIN participants p ON p.id = a.participant_id ORDER BY p.seq, a.answered_at"
    ).fetchall()


def last_activity(conn: sqlite3.Connection) -> dict[str, str]:
    """participant id -> time of their latest start, view or answer."""
    rows = conn.execute(
        "SELECT p.id, MAX(COALESCE(a.t, p.started_at), COALESCE(v.t, p.started_at), p.started_at) AS t FROM participants p "
        "LEFT JOIN (SELECT participant_id, MAX(answered_at) AS t FROM answers GROUP BY participant_id) a ON a.participant_id = p.id "
        "LEFT JOIN (SELECT participant_id, MAX(shown_at) AS t FROM views GROUP BY participant_id) v ON v.participant_id = p.id"
    )
    return {r["id"]: r["t"] for r in rows}


def arm_counts(conn: sqlite3.Connection) -> dict[str, dict[str, int]]:
    """arm -> {"participants", "completed"}."""
    rows = conn.execute("SELECT arm, COUNT(*) AS n, COUNT(completed_at) AS done FROM participants GROUP BY arm")
    return {r["arm"]: {"participants": r["n"], "completed": r["done"]} for r in rows}


class OldDatabase(Exception):
    """A response database in an earlier layout (see `open_for_reading`)."""


def open_existing(db_path: str | Path) -> sqlite3.Connection:
    """Connect to a response database that must already exist (for export and analysis)."""
    db_path = Path(db_path)
    if not db_path.is_file():
        raise MissingFileError(f"Response database not found: {db_path}")
    conn = connect(db_path)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as err:
        conn.close()
        raise StudyError(f"{db_path}: not a SQLite database: {err}") from None
    if not {"meta", "participants", "answers"} <= tables:
        conn.close()
        raise StudyError(f"{db_path}: not a pv survey response database (tables {sorted(tables)})")
    columns = {r["name"] for r in conn.execute("PRAGMA table_info(participants)")} | {r["name"] for r in conn.execute("PRAGMA table_info(answers)")}
    if not {"question_order", "platform_hash", "seconds"} <= columns or "views" not in tables:
        conn.close()  # a database from an earlier version that no server has opened since: upgrade it for reading
        raise OldDatabase(db_path)
    return conn


def open_for_reading(db_path: str | Path) -> sqlite3.Connection:
    """`open_existing`, upgrading a database of an earlier version in place first (columns added, nothing removed)."""
    try:
        return open_existing(db_path)
    except OldDatabase:
        with closing(connect(db_path)) as conn:
            manifest = json.loads(read_meta(conn)["manifest"])
        init_db(db_path, manifest)
        return open_existing(db_path)
