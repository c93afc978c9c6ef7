"""The response database: WAL, study binding, atomic round-robin, first answer kept."""
from __future__ import annotations

import copy
import threading
from collections import Counter
from contextlib import closing

import pytest

from pv.survey import db
from pv.survey.manifest import load_manifest


def orders(manifest):
    return lambda seq: {q["id"]: [o["id"] for o in q["options"]] for q in manifest["questions"]}


def arrive_together(path, manifest, count: int, start_key: str | None = None) -> list[db.Participant]:
    """`count` threads, each with its own connection, call create_participant at the same moment."""
    barrier = threading.Barrier(count)
    made, errors = [], []

    def arrive():
        try:
            with closing(db.connect(path)) as conn:
                barrier.wait(timeout=30)
                made.append(db.create_participant(conn, manifest["arm_order"], orders(manifest), start_key=start_key))
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=arrive) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and len(made) == count
    return made


def test_schema_wal_and_study_binding(tmp_path, study):
    manifest = load_manifest(study)
    key = db.init_db(tmp_path / "r.sqlite", manifest)
    assert db.init_db(tmp_path / "r.sqlite", manifest) == key  # restart: same cookie key, nothing reset
    with closing(db.connect(tmp_path / "r.sqlite")) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"meta", "participants", "answers"} <= tables
    other = copy.deepcopy(manifest)
    other["questions"][0]["answer"] = "cant_tell"
    with pytest.raises(ValueError, match=r"r\.sqlite holds responses to study"):
        db.init_db(tmp_path / "r.sqlite", other)
    with pytest.raises(FileNotFoundError, match="missing"):
        db.init_db(tmp_path / "missing" / "r.sqlite", manifest)
    (tmp_path / "junk.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(ValueError, match=r"junk\.sqlite"):
        db.init_db(tmp_path / "junk.sqlite", manifest)


def test_round_robin_is_atomic_under_50_concurrent_arrivals(tmp_path, study):
    manifest = load_manifest(study)
    path = tmp_path / "r.sqlite"
    db.init_db(path, manifest)
    made = arrive_together(path, manifest, 50)
    assert sorted(p.seq for p in made) == list(range(50))
    assert all(p.arm == manifest["arm_order"][p.seq % 2] for p in made)
    counts = Counter(p.arm for p in made)
    assert abs(counts["pv"] - counts["gradcam"]) <= 1
    assert len({p.id for p in made}) == 50 and len({p.form_token for p in made}) == 50
    with closing(db.connect(path)) as conn:
        assert db.arm_counts(conn) == {"pv": {"participants": 25, "completed": 0}, "gradcam": {"participants": 25, "completed": 0}}


def test_first_answer_kept_only_current_question_accepted_completion_recorded(tmp_path, study):
    manifest = load_manifest(study)
    ids = [q["id"] for q in manifest["questions"]]
    db.init_db(tmp_path / "r.sqlite", manifest)
    with closing(db.connect(tmp_path / "r.sqlite")) as conn:
        p = db.create_participant(conn, manifest["arm_order"], orders(manifest))
        assert db.record_answer(conn, p.id, ids, ids[1], "o1", 0) == "not_current"
        assert db.record_answer(conn, p.id, ids, ids[0], "o2", 1) == "recorded"
        assert db.record_answer(conn, p.id, ids, ids[0], "o3", 2) == "duplicate"
        assert db.answers_of(conn, p.id) == {ids[0]: "o2"}
        for qid in ids[1:-1]:
            assert db.record_answer(conn, p.id, ids, qid, "cant_tell", 4) == "recorded"
        assert db.get_participant(conn, p.id).completed_at is None
        assert db.record_answer(conn, p.id, ids, ids[-1], "o1", 0) == "recorded"
        assert db.get_participant(conn, p.id).completed_at is not None
        assert len(db.read_answers(conn)) == len(ids)


def test_a_resent_start_token_makes_one_participant_even_concurrently(tmp_path, study):
    manifest = load_manifest(study)
    path = tmp_path / "r.sqlite"
    db.init_db(path, manifest)
    made = arrive_together(path, manifest, 20, start_key="same-welcome-page")  # one Start clicked 20 times
    assert {p.id for p in made} == {made[0].id} and made[0].seq == 0
    with closing(db.connect(path)) as conn:
        other = db.create_participant(conn, manifest["arm_order"], orders(manifest), start_key="another-browser")
        assert (other.seq, other.arm) == (1, manifest["arm_order"][1])  # the round-robin skipped nothing
        assert db.create_participant(conn, manifest["arm_order"], orders(manifest)).seq == 2  # no key: always a new one
        assert len(db.read_participants(conn)) == 3


def test_a_database_from_before_start_tokens_is_upgraded_in_place(tmp_path, study):
    manifest = load_manifest(study)
    path = tmp_path / "old.sqlite"
    with closing(db.connect(path)) as conn:
        conn.executescript(db.SCHEMA.replace("    start_key TEXT,", ""))  # leaves a comment line
        assert "start_key" not in {r["name"] for r in conn.execute("PRAGMA table_info(participants)")}
        conn.execute("INSERT INTO participants (id, seq, arm, form_token, option_order, started_at) VALUES ('a', 0, 'pv', 't', '{}', 'now')")
    db.init_db(path, manifest)
    with closing(db.connect(path)) as conn:
        assert db.get_participant(conn, "a").arm == "pv"
        assert db.create_participant(conn, manifest["arm_order"], orders(manifest), start_key="k").seq == 1
        assert db.create_participant(conn, manifest["arm_order"], orders(manifest), start_key="k").seq == 1
