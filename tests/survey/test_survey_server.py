"""The real server (waitress) on 127.0.0.1: 200 concurrent participants, and a crash + restart."""
from __future__ import annotations

import json
import logging
import os
import random
import re
import select
import signal
import socket
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


def take_survey(base: str, seed: int, stop_after: int | None = None, timeout: float = 60) -> tuple[HttpParticipant, list[str]]:
    """One participant answering with seeded random choices (all questions, or `stop_after`); returns it and its choices."""
    rng = random.Random(seed)
    person = HttpParticipant(base, timeout=timeout)
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
    """(Counter of each participant's answers in the order they were served, Counter of arms)."""
    with closing(db.connect(db_path)) as conn:
        per: dict[str, dict[str, str]] = {}
        for r in db.read_answers(conn):
            per.setdefault(r["participant_id"], {})[r["question_id"]] = r["option_id"]
        participants = db.read_participants(conn)
    orders = {p["id"]: json.loads(p["question_order"]) for p in participants}
    stored = Counter(tuple(answers[q] for q in orders[pid] if q in answers) for pid, answers in per.items())
    return stored, Counter(p["arm"] for p in participants)


def test_200_concurrent_participants_lose_no_answer(study, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="waitress")
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
    noise = [r.getMessage() for r in caplog.records if "queue depth" in r.getMessage() or "connection limit" in r.getMessage()]
    assert not noise, noise[:3]  # the log keeps real events only


@pytest.mark.slow
def test_100_idle_connections_do_not_lock_participants_out(study, tmp_path):
    db_path = tmp_path / "responses.sqlite"
    with running_server(study, db_path) as base:
        port = int(base.rsplit(":", 1)[1])
        idle = []
        try:
            for k in range(100):  # a slow or hostile client: half open nothing, half send half a request
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                if k % 2:
                    sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                idle.append(sock)
            _, chosen = take_survey(base, seed=5, timeout=15)  # waitress's defaults: blocked for about 120 s
        finally:
            for sock in idle:
                sock.close()
    assert len(chosen) == 4


@pytest.mark.slow
def test_admin_view_counts_while_50_participants_answer(study, tmp_path):
    db_path = tmp_path / "responses.sqlite"
    token = "live-view-token"
    with running_server(study, db_path, admin_token=token) as base:
        researcher = HttpParticipant(base)
        headers = {"Authorization": f"Bearer {token}"}
        seen = []
        with ThreadPoolExecutor(max_workers=10) as pool:
            futures = [pool.submit(take_survey, base, seed) for seed in range(50)]
            while not all(f.done() for f in futures):
                page = researcher.request("/admin/status", headers=headers)
                assert page.status == 200
                seen.append(json.loads(page.text)["arms"])
            assert all(len(f.result()[1]) == 4 for f in futures)
        final = json.loads(researcher.request("/admin/status", headers=headers).text)
        html = researcher.request("/admin", headers=headers).text
    completed = [sum(arm["completed"] for arm in arms.values()) for arms in seen]
    assert completed == sorted(completed) and len(seen) >= 2  # polled while they answered, counts only grow
    assert {a: (v["started"], v["completed"], v["dropped"]) for a, v in final["arms"].items()} == {"pv": (25, 25, 0), "gradcam": (25, 25, 0)}
    assert sum(item["answers"] for item in final["answers"]) == 50 * 4
    assert '<td class="completed">25</td>' in html


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
