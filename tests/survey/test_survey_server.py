"""The real server (waitress) on 127.0.0.1: 200 concurrent participants, and a crash + restart."""
from __future__ import annotations

import os
import random
import re
import select
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import pytest
from survey_client import HttpParticipant, parse_question, running_server

from pv.survey import db

REPO = Path(__file__).resolve().parents[2]


def take_survey(base: str, seed: int, stop_after: int | None = None) -> tuple[HttpParticipant, list[str]]:
    """One participant answering with seeded random choices (all questions, or `stop_after`); returns it and its choices."""
    rng = random.Random(seed)
    person = HttpParticipant(base)
    assert person.start().status == 200
    page = person.question()
    chosen = []
    while page is not None and (stop_after is None or len(chosen) < stop_after):
        option = rng.choice(page["options"])[0]
        reply = person.answer(page, option)
        assert reply.status == 200, reply.text
        chosen.append(option)
        page = None if reply.url.endswith("/done") else parse_question(reply.text)
    return person, chosen


def answers_by_participant(db_path) -> tuple[Counter, Counter]:
    with closing(db.connect(db_path)) as conn:
        answers = db.read_answers(conn)
        order = [r["question_id"] for r in answers]
        per: dict[str, dict[str, str]] = {}
        for r in answers:
            per.setdefault(r["participant_id"], {})[r["question_id"]] = r["option_id"]
        arms = Counter(r["arm"] for r in db.read_participants(conn))
    questions = sorted(set(order))
    return Counter(tuple(p[q] for q in questions if q in p) for p in per.values()), arms


def test_200_concurrent_participants_lose_no_answer(study, tmp_path):
    db_path = tmp_path / "responses.sqlite"
    with running_server(study, db_path, threads=8) as base:
        with ThreadPoolExecutor(max_workers=50) as pool:
            results = list(pool.map(lambda seed: take_survey(base, seed)[1], range(200)))
    assert all(len(chosen) == 4 for chosen in results)
    stored, arms = answers_by_participant(db_path)
    assert stored == Counter(tuple(chosen) for chosen in results)
    assert sum(stored.values()) == 200
    assert arms == {"pv": 100, "gradcam": 100}
    with closing(db.connect(db_path)) as conn:
        assert db.arm_counts(conn) == {"pv": {"participants": 100, "completed": 100}, "gradcam": {"participants": 100, "completed": 100}}


def start_process(study, db_path) -> tuple[subprocess.Popen, str]:
    """`python -m pv.survey serve` as a separate process; returns it with its URL (bounded wait)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "pv.survey", "serve", str(study), "--db", str(db_path), "--port", "0"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 1.0)
        if ready:
            line = proc.stdout.readline()
            url = re.search(r"http://127\.0\.0\.1:\d+", line)
            if url:
                return proc, url.group(0)
            if not line and proc.poll() is not None:
                break
    proc.kill()
    pytest.fail(f"server did not start: {proc.stdout.read() if proc.stdout else ''}")


def test_crash_and_restart_lose_nothing(study, tmp_path):
    db_path = tmp_path / "responses.sqlite"
    proc, base = start_process(study, db_path)
    try:
        finished, done_choices = take_survey(base, seed=1)
        halfway, half_choices = take_survey(base, seed=2, stop_after=2)
        waiting = halfway.question()
        proc.send_signal(signal.SIGKILL)  # a crash: no clean shutdown
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    proc, base = start_process(study, db_path)
    try:
        for person in (finished, halfway):
            person.base = base
        assert finished.request("/").url.endswith("/done")
        resumed = halfway.question()
        assert (resumed["qid"], resumed["number"], resumed["options"]) == (waiting["qid"], 3, waiting["options"])
        reply = halfway.answer(resumed, resumed["options"][0][0])
        last = parse_question(reply.text)
        halfway.answer(last, last["options"][1][0])
        newcomer, _ = take_survey(base, seed=3, stop_after=0)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
    stored, arms = answers_by_participant(db_path)
    assert stored == Counter([tuple(done_choices), (*half_choices, resumed["options"][0][0], last["options"][1][0])])
    assert arms == {"pv": 2, "gradcam": 1}  # the round-robin continues after the restart
    with closing(db.connect(db_path)) as conn:
        assert [p["completed_at"] is not None for p in db.read_participants(conn)] == [True, True, False]
