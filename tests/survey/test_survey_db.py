"""The response database: WAL, study binding, atomic round-robin, first answer kept."""
from __future__ import annotations

import copy
import threading
from collections import Counter
from contextlib import closing

import pytest

import json
import os
import stat

from pv.survey import db
from pv.survey.keys import keys_path
from pv.survey.manifest import fingerprint, load_manifest


def orders(manifest):
    """A layout: the manifest's question order and option order for every arrival."""
    ids = [q["id"] for q in manifest["questions"]]
    return lambda seq: (ids, {q["id"]: [o["id"] for o in q["options"]] for q in manifest["questions"]})


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
    keys = db.init_db(tmp_path / "r.sqlite", manifest)
    assert db.init_db(tmp_path / "r.sqlite", manifest) == keys  # restart: same keys, nothing reset
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


def test_database_and_keys_are_private_and_the_keys_stay_out_of_the_database(tmp_path, study):
    os.umask(0o022)  # a usual umask: files would be world-readable
    manifest = load_manifest(study)
    path = tmp_path / "r.sqlite"
    keys = db.init_db(path, manifest)
    with closing(db.connect(path)) as conn:
        db.create_participant(conn, manifest["arm_order"], orders(manifest))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(keys_path(path).stat().st_mode) == 0o600
    assert json.loads(keys_path(path).read_text()) == keys and set(keys) == {"cookie", "platform"}
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("r.sqlite*") if p != keys_path(path))
    assert all(key.encode() not in raw for key in keys.values())
    with closing(db.connect(path)) as conn:
        assert "secret_key" not in db.read_meta(conn)


def test_a_platform_id_hash_starts_once_and_is_never_the_id(tmp_path, study):
    manifest = load_manifest(study)
    path = tmp_path / "r.sqlite"
    db.init_db(path, manifest)
    with closing(db.connect(path)) as conn:
        first = db.create_participant(conn, manifest["arm_order"], orders(manifest), start_key="a", platform_hash="h1")
        with pytest.raises(db.AlreadyParticipated):
            db.create_participant(conn, manifest["arm_order"], orders(manifest), start_key="b", platform_hash="h1")
        assert db.create_participant(conn, manifest["arm_order"], orders(manifest), start_key="a", platform_hash="h1").id == first.id  # resent Start
        assert db.find_by_platform_hash(conn, "h1").id == first.id
        assert [bool(r["via_platform"]) for r in db.read_participants(conn)] == [True]


def test_time_on_each_question_runs_from_its_first_view(tmp_path, study):
    manifest = load_manifest(study)
    ids = [q["id"] for q in manifest["questions"]]
    path = tmp_path / "r.sqlite"
    db.init_db(path, manifest)
    with closing(db.connect(path)) as conn:
        p = db.create_participant(conn, manifest["arm_order"], orders(manifest))
        db.mark_shown(conn, p.id, ids[0])
        conn.execute("UPDATE views SET shown_at = '2000-01-01T00:00:00.000+00:00'")
        db.mark_shown(conn, p.id, ids[0])  # a reload keeps the first time
        db.record_answer(conn, p.id, ids, ids[0], "o1", 0)
        db.record_answer(conn, p.id, ids, ids[1], "o1", 0)  # never shown (a client posting directly): no time
        seconds = {r["question_id"]: r["seconds"] for r in db.read_answers(conn)}
    assert seconds[ids[0]] > 20 * 365 * 24 * 3600 and seconds[ids[1]] is None


def test_a_database_of_the_previous_version_keeps_its_participants_and_cookie_key(old_study, tmp_path):
    study, path = old_study
    manifest = load_manifest(study)
    with closing(db.connect(path)) as conn:
        old_key = db.read_meta(conn)["secret_key"]
        before = [dict(r) for r in conn.execute("SELECT id, seq, arm, option_order, started_at, completed_at FROM participants")]
    assert manifest["format"] == "pv-survey/1" and db.read_meta(db.connect(path))["study"] == fingerprint(manifest)  # fingerprint unchanged
    keys = db.init_db(path, manifest)
    assert keys["cookie"] == old_key  # cookies of participants in progress stay valid
    with closing(db.connect(path)) as conn:
        assert "secret_key" not in db.read_meta(conn)
        after = [dict(r) for r in conn.execute("SELECT id, seq, arm, option_order, started_at, completed_at FROM participants")]
        assert after == before and all(db.get_participant(conn, r["id"]).question_order is None for r in after)
    assert old_key.encode() not in b"".join(p.read_bytes() for p in tmp_path.glob("old_responses.sqlite*") if not p.name.endswith(".keys"))
