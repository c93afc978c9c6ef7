"""The study web app through Flask's test client: flow, resuming, arms, forged input, privacy, headers."""
from __future__ import annotations

import base64
import json
import re
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from survey_client import form_value, parse_question, snapshot
from survey_testdata import COMPLETION_CODE

from pv.survey.app import create_app
from pv.survey.export import export_responses
from pv.survey.lookup import lookup
from pv.survey.manifest import estimate_minutes, load_manifest

CLIENT_ADDR = "203.0.113.77"
USER_AGENT = "Mozilla/5.0 (secret-agent-1234)"


@pytest.fixture()
def db_path(tmp_path):
    return tmp_path / "responses.sqlite"


@pytest.fixture()
def app(study, db_path):
    return create_app(study, db_path, admin_token="s3cret-admin")


def new_client(app):
    client = app.test_client()
    client.environ_base.update(REMOTE_ADDR=CLIENT_ADDR, HTTP_USER_AGENT=USER_AGENT)
    return client


def start(client):
    welcome = client.get("/")
    assert welcome.status_code == 200 and "Start" in welcome.text
    return client.post("/start", data={"start": form_value(welcome.text, "start")}, follow_redirects=True)


def current(client) -> dict | None:
    page = client.get("/question", follow_redirects=True)
    return None if "Thank you" in page.text else parse_question(page.text)


def answer(client, page, choice, **overrides):
    fields = {"token": page["token"], "question": page["qid"], "option": choice, **overrides}
    return client.post("/answer", data=fields)


def rows(db_path, sql):
    with closing(sqlite3.connect(db_path)) as conn:
        return conn.execute(sql).fetchall()


def test_complete_flow_intro_progress_end_page(app, study, db_path):
    manifest = load_manifest(study)
    client = new_client(app)
    intro = start(client)
    arm = manifest["arm_order"][0]
    assert manifest["arms"][arm]["title"] in intro.text and manifest["question_text"].replace("'", "&#39;") in intro.text
    numbers = []
    while (q := current(client)) is not None:
        numbers.append((q["number"], q["count"]))
        assert len(q["options"]) == 5 and q["options"][-1] == ("cant_tell", "I just can&#39;t tell")
        image = client.get(f"/image/{q['qid']}")
        assert image.status_code == 200 and image.mimetype == "image/png"
        question = next(x for x in manifest["questions"] if x["id"] == q["qid"])
        assert image.data == (study / question["images"][arm]).read_bytes()
        response = answer(client, q, q["options"][0][0])
        assert response.status_code == 303
    assert numbers == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert "Thank you" in client.get("/done").text
    (participant,) = rows(db_path, "SELECT arm, completed_at FROM participants")
    assert participant[0] == arm and participant[1] is not None
    assert len(rows(db_path, "SELECT * FROM answers")) == 4


def test_reload_and_return_continue_where_stopped(app, db_path):
    client = new_client(app)
    start(client)
    first = current(client)
    assert current(client)["qid"] == first["qid"]  # reload: same question, same option order
    assert current(client)["options"] == first["options"]
    answer(client, first, first["options"][1][0])
    second = current(client)
    assert second["number"] == 2
    later = new_client(app)  # the browser comes back later with its cookie
    later.set_cookie("pv_survey", client.get_cookie("pv_survey").value)
    assert later.get("/").headers["Location"].endswith("/question")
    assert current(later)["qid"] == second["qid"]
    assert len(rows(db_path, "SELECT * FROM participants")) == 1


def test_answering_twice_keeps_the_first_answer(app, db_path):
    client = new_client(app)
    start(client)
    q = current(client)
    assert answer(client, q, q["options"][0][0]).status_code == 303
    again = answer(client, q, q["options"][2][0])  # back button + resubmit
    assert again.status_code == 303
    assert rows(db_path, "SELECT question_id, option_id, position FROM answers") == [(q["qid"], q["options"][0][0], 0)]


def test_arms_alternate_and_show_identical_options_in_per_participant_order(app, study, db_path):
    manifest = load_manifest(study)
    clients = [new_client(app) for _ in range(6)]
    for client in clients:
        start(client)
    arms = [row[0] for row in rows(db_path, "SELECT arm FROM participants ORDER BY seq")]
    assert arms == ["pv", "gradcam"] * 3
    pages = [current(client) for client in clients]
    options = {q["id"]: {o["id"] for o in q["options"]} for q in manifest["questions"]}
    assert all({oid for oid, _ in p["options"]} == options[p["qid"]] for p in pages)  # same options in both arms
    stored = [json.loads(row[0]) for row in rows(db_path, "SELECT option_order FROM participants ORDER BY seq")]
    for page, order in zip(pages, stored):
        assert [oid for oid, _ in page["options"]] == order[page["qid"]]
    first = manifest["questions"][0]["id"]
    assert len({tuple(order[first]) for order in stored}) > 1  # in a different order per participant
    pv, gradcam = (clients[i].get(f"/image/{pages[i]['qid']}").data for i in (0, 1))
    images = {q["id"]: q["images"] for q in manifest["questions"]}
    assert pv == (study / images[pages[0]["qid"]]["pv"]).read_bytes()
    assert gradcam == (study / images[pages[1]["qid"]]["gradcam"]).read_bytes() != pv


def test_malformed_and_forged_requests_get_4xx_and_change_nothing(app, db_path):
    client = new_client(app)
    start(client)
    q = current(client)
    answer(client, q, q["options"][0][0])
    q = current(client)
    before = snapshot(db_path)
    script = "<script>alert('x')</script>"
    later = json.loads(rows(db_path, "SELECT question_order FROM participants")[0][0])[-1]  # the participant's last question
    stranger = new_client(app)
    forged = new_client(app)
    cookie = client.get_cookie("pv_survey").value
    forged.set_cookie("pv_survey", cookie[:-3] + ("AAA" if not cookie.endswith("AAA") else "BBB"))
    attempts = {
        "unknown option": (client, {"option": "o9"}, 400),
        "script as option": (client, {"option": script}, 400),
        "script as question": (client, {"question": script}, 400),
        "unknown question": (client, {"question": "q99"}, 400),
        "question not reached": (client, {"question": later}, 409),
        "no token": (client, {"token": ""}, 403),
        "wrong token": (client, {"token": q["token"][:-1] + "x"}, 403),
        "script as token": (client, {"token": script}, 403),
        "no participant": (stranger, {}, 403),
        "forged cookie": (forged, {}, 403),
    }
    for name, (who, overrides, status) in attempts.items():
        response = answer(who, q, q["options"][0][0], **overrides)
        assert response.status_code == status, name
        assert script not in response.text and "<script" not in response.text, name
    assert client.post("/answer", data={"token": q["token"], "question": q["qid"], "option": "o1" * 3000}).status_code == 413
    assert client.post("/answer", json={"token": q["token"], "question": q["qid"], "option": "o1"}).status_code == 403
    assert client.post("/start", data={"start": "made-up"}).status_code == 303  # already a participant: just resumes
    assert stranger.post("/start", data={"start": "made-up"}).status_code == 403
    assert stranger.post("/start", data={}).status_code == 403
    assert client.get("/answer").status_code == 405
    for path in ("/image/q99", "/image/..%2Fmanifest.json", "/manifest.json", "/preview.html", "/static/../manifest.json",
                 "/images/pv/q1.png", "/admin/status"):  # fmt: skip
        assert client.get(path).status_code in (401, 404), path
    assert stranger.get("/image/q1").status_code == 403
    assert stranger.get("/question").status_code == 403
    assert snapshot(db_path) == before
    assert answer(client, q, q["options"][0][0]).status_code == 303  # the genuine answer still works
    assert len(snapshot(db_path)["answers"]) == 2


def test_no_personal_data_in_the_database(app, db_path):
    client = new_client(app)
    start(client)
    while (q := current(client)) is not None:
        answer(client, q, q["options"][-1][0])
    dump = "\n".join(repr(r) for table in snapshot(db_path).values() for r in table)
    assert CLIENT_ADDR not in dump and "secret-agent" not in dump and "127.0.0.1" not in dump
    raw = b"".join(p.read_bytes() for p in db_path.parent.glob("responses.sqlite*"))
    assert CLIENT_ADDR.encode() not in raw and b"secret-agent" not in raw
    columns = {r[1] for t in ("participants", "answers") for r in rows(db_path, f"PRAGMA table_info({t})")}
    assert not {c for c in columns if c in ("ip", "ip_address", "email", "name") or "addr" in c or "agent" in c}


def test_security_headers_cookie_flags_and_escaping(app):
    client = new_client(app)
    welcome = client.get("/")
    assert "default-src 'none'" in welcome.headers["Content-Security-Policy"]
    assert welcome.headers["X-Frame-Options"] == "DENY" and welcome.headers["X-Content-Type-Options"] == "nosniff"
    assert welcome.headers["Cache-Control"] == "no-store"
    started = client.post("/start", data={"start": form_value(welcome.text, "start")})
    cookie = started.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "<script" not in client.get("/intro").text


def test_admin_status_requires_the_token(app, study, tmp_path):
    client = new_client(app)
    start(client)
    assert client.get("/admin/status").status_code == 401
    assert client.get("/admin/status", headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = client.get("/admin/status", headers={"Authorization": "Bearer s3cret-admin"})
    assert ok.status_code == 200 and set(ok.json["arms"]) == {"pv", "gradcam"}
    pv = ok.json["arms"]["pv"]
    assert (pv["started"], pv["completed"], pv["in_progress"], pv["dropped"]) == (1, 0, 1, 0)
    assert client.get("/admin").status_code == 401 and "Basic" in client.get("/admin").headers["WWW-Authenticate"]
    page = client.get("/admin", headers={"Authorization": "Basic " + base64.b64encode(b"me:s3cret-admin").decode()})
    assert page.status_code == 200 and 'http-equiv="refresh"' in page.text and "Table 1" in page.text
    closed = create_app(study, tmp_path / "other.sqlite")
    assert closed.test_client().get("/admin/status", headers={"Authorization": "Bearer s3cret-admin"}).status_code == 404


def test_bad_study_or_database_is_a_clear_error(tmp_path, study):
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        create_app(tmp_path, tmp_path / "r.sqlite")
    (tmp_path / "manifest.json").write_text('{"format": "pv-survey/1", "arm_order": ["pv"], "arms": {}}')
    with pytest.raises(ValueError, match="field 'arms'"):
        create_app(tmp_path, tmp_path / "r.sqlite")


def test_a_double_clicked_start_makes_one_participant(app, db_path):
    first = new_client(app)
    welcome = first.get("/")
    second = new_client(app)  # the same browser sending the Start form twice: same cookie, same token
    second.set_cookie("pv_survey", first.get_cookie("pv_survey").value)
    token = form_value(welcome.text, "start")
    replies = [client.post("/start", data={"start": token}) for client in (first, second)]
    assert [r.status_code for r in replies] == [303, 303]
    assert len(rows(db_path, "SELECT * FROM participants")) == 1
    assert current(first)["qid"] == current(second)["qid"]
    q = current(second)
    answer(second, q, q["options"][0][0])
    assert current(first)["number"] == 2  # both requests gave the browser the same participant
    newcomer = new_client(app)
    start(newcomer)
    assert [r[0] for r in rows(db_path, "SELECT arm FROM participants ORDER BY seq")] == ["pv", "gradcam"]


def test_question_order_is_random_per_participant_and_stored(app, study, db_path):
    orders = []
    for _ in range(6):
        client = new_client(app)
        start(client)
        seen = []
        while (q := current(client)) is not None:
            seen.append(q["qid"])
            answer(client, q, q["options"][0][0])
        orders.append(seen)
    stored = [json.loads(r[0]) for r in rows(db_path, "SELECT question_order FROM participants ORDER BY seq")]
    assert stored == orders
    assert all(sorted(o) == sorted(q["id"] for q in load_manifest(study)["questions"]) for o in orders)
    assert len({tuple(o) for o in orders}) > 1
    numbers = rows(db_path, "SELECT COUNT(*) FROM answers WHERE seconds IS NOT NULL")[0][0]
    assert numbers == 6 * 4  # every answer timed from its first view


def test_welcome_page_states_the_studys_length(app, study):
    manifest = load_manifest(study)
    text = new_client(app).get("/").text
    assert f"about {estimate_minutes(len(manifest['questions']))} minutes" in text and "ten minutes" not in text
    assert manifest["estimated_minutes"] == estimate_minutes(4) == 4  # 2 min reading + 4 x 20 s


def test_a_study_in_progress_survives_the_upgrade(old_study, tmp_path):
    study, db_path = old_study
    manifest = load_manifest(study)
    with closing(sqlite3.connect(db_path)) as conn:
        (half,) = conn.execute("SELECT id, option_order FROM participants WHERE completed_at IS NULL").fetchall()
    app = create_app(study, db_path)
    client = new_client(app)
    with client.session_transaction() as session:  # the participant's browser still holds its cookie
        session["pid"] = half[0]
    q = current(client)
    assert (q["qid"], q["number"], q["count"]) == ("q2", 2, 4)  # the manifest's order, where they stopped
    assert [oid for oid, _ in q["options"]] == json.loads(half[1])["q2"]
    while q is not None:
        answer(client, q, q["options"][0][0])
        q = current(client)
    newcomer = new_client(app)
    start(newcomer)
    assert [current(newcomer)["qid"] for _ in range(2)] == ["q1", "q1"]  # a format-1 study keeps its fixed order
    report = __import__("pv.survey.analyze", fromlist=["analyze"]).analyze(db_path, study, tmp_path / "report")
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["arms"]["pv"]["completed"] == 1 and summary["arms"]["gradcam"]["completed"] == 1 and report.is_file()
    assert export_responses(db_path, tmp_path / "responses.csv") == 4 + 4


def prolific(client, pid: str, path: str = "/"):
    return client.get(f"{path}?PROLIFIC_PID={pid}&STUDY_ID=study-1&SESSION_ID=session-{pid}")


def test_platform_arrival_completion_code_and_one_attempt_per_id(platform_study, tmp_path):
    manifest = load_manifest(platform_study)
    db_path = tmp_path / "responses.sqlite"
    app = create_app(platform_study, db_path)
    client = new_client(app)
    welcome = prolific(client, "5f0c0ffee0000000000000aa")
    assert welcome.status_code == 200
    client.post("/start", data={"start": form_value(welcome.text, "start")})
    seen = []
    while (q := current(client)) is not None:
        seen.append(q["qid"])
        if q["qid"] == "a1":
            page = client.get("/question").text
            check = manifest["attention_checks"][0]
            label = next(o["label"] for o in check["options"] if o["id"] == check["answer"])
            assert f"Please choose \u201c{label}\u201d." in page and "Photo</span>" not in page
            assert client.get("/image/a1").data == (platform_study / check["image"]).read_bytes()
        answer(client, q, q["options"][0][0])
    assert seen[2] == "a1" and manifest["attention_checks"][0]["position"] == 3 and len(seen) == 5  # in the middle of 4 questions
    done = client.get("/done").text
    assert COMPLETION_CODE in done and f'url=https://app.prolific.com/submissions/complete?cc={COMPLETION_CODE}' in done
    again = new_client(app)  # the same person in another browser
    refused = prolific(again, "5f0c0ffee0000000000000aa")
    assert refused.status_code == 403 and "already taken part" in refused.text
    assert client.get("/").status_code == 303  # the first browser simply resumes (at the end page)
    other = new_client(app)
    assert prolific(other, "5f0c0ffee0000000000000bb").status_code == 200
    assert prolific(new_client(app), "bad id <script>").status_code == 400
    export_responses(db_path, tmp_path / "responses.csv")
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("responses.*") if not p.name.endswith(".keys"))
    assert b"5f0c0ffee" not in raw and b"session-" not in raw
    csv_text = (tmp_path / "responses.csv").read_text()
    digests = [r[0] for r in rows(db_path, "SELECT platform_hash FROM participants")]
    assert all(re.fullmatch(r"[0-9a-f]{64}", d) and d not in csv_text for d in digests)
    statuses = {r["platform_id"]: r["status"] for r in lookup(db_path, ["5f0c0ffee0000000000000aa", "5f0c0ffee0000000000000bb", "never"])}
    assert statuses == {"5f0c0ffee0000000000000aa": "completed", "5f0c0ffee0000000000000bb": "not started", "never": "not started"}


def test_a_required_platform_id_turns_away_visitors_without_one(platform_study, tmp_path):
    manifest = load_manifest(platform_study)
    manifest["platform"]["required"] = True
    folder = tmp_path / "required"
    folder.mkdir()
    (folder / "images").symlink_to(platform_study / "images")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert new_client(create_app(platform_study, tmp_path / "open.sqlite")).get("/").status_code == 200  # not required: as without a platform
    app = create_app(folder, tmp_path / "r.sqlite")
    assert new_client(app).get("/").status_code == 403
    assert prolific(new_client(app), "someone").status_code == 200
    assert Path(tmp_path / "r.sqlite.keys").is_file()
