"""The study web app (Flask, served by waitress): introduction, one question per page, end page.

State lives in SQLite only (`survey.db`); the browser holds a signed, HttpOnly cookie with the
participant's random id. Every form carries the participant's token; anything unknown, forged or
oversized gets a 4xx and changes nothing.
"""
from __future__ import annotations

import datetime as dt
import hmac
import random
import secrets
import sqlite3
from pathlib import Path

from flask import Flask, abort, g, jsonify, redirect, render_template, request, send_from_directory, session, url_for
from werkzeug.exceptions import HTTPException

from survey import db
from survey.manifest import fingerprint, load_manifest, question_index
from survey.questions import display_order

MAX_BODY = 4096  # bytes; an answer form is about 100
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def create_app(study_dir: str | Path, db_path: str | Path, admin_token: str | None = None, secure_cookies: bool = False) -> Flask:
    """The app for one study folder (built by `pv survey build`) and one response database.

    `admin_token` enables GET /admin/status (Authorization: Bearer TOKEN); `secure_cookies` marks
    the cookie HTTPS-only (set it when serving behind TLS).
    """
    study_dir = Path(study_dir).resolve()
    manifest = load_manifest(study_dir)
    secret_key = db.init_db(db_path, manifest)
    questions = question_index(manifest)
    order = [q["id"] for q in manifest["questions"]]
    seed = f"{manifest.get('seed', 0)}:{fingerprint(manifest)}"

    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=secret_key,
        MAX_CONTENT_LENGTH=MAX_BODY,
        MAX_FORM_MEMORY_SIZE=1024,
        MAX_FORM_PARTS=8,
        SESSION_COOKIE_NAME="pv_survey",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=secure_cookies,
        PERMANENT_SESSION_LIFETIME=dt.timedelta(days=60),
        TEMPLATES_AUTO_RELOAD=False,
    )
    app.json.sort_keys = True

    def option_order(seq: int) -> dict[str, list[str]]:
        rng = random.Random(f"{seed}:{seq}")  # seeded by study and arrival number: reproducible, different per participant
        return {qid: display_order(questions[qid]["options"], rng) for qid in order}

    def conn() -> sqlite3.Connection:
        if "db" not in g:
            g.db = db.connect(db_path)
        return g.db

    @app.teardown_appcontext
    def close_db(_error: BaseException | None) -> None:
        connection = g.pop("db", None)
        if connection is not None:
            connection.close()

    def participant() -> db.Participant | None:
        pid = session.get("pid")
        return db.get_participant(conn(), pid) if isinstance(pid, str) else None

    def require_participant() -> db.Participant:
        found = participant()
        if found is None:
            abort(403, "No survey in progress in this browser: start from the first page.")
        return found

    def check_token(field: str, expected: str) -> None:
        given = request.form.get(field, "")
        if not hmac.compare_digest(given.encode(), expected.encode()):
            abort(403, "This form has expired or was not sent by this survey. Go back to the first page.")

    def next_question(found: db.Participant) -> str | None:
        done = db.answers_of(conn(), found.id)
        return next((q for q in order if q not in done), None)

    def resume(found: db.Participant):
        return redirect(url_for("question" if db.answers_of(conn(), found.id) else "intro"), 303)

    @app.get("/")
    def welcome():
        found = participant()
        if found is not None:
            return resume(found)
        session.setdefault("start", secrets.token_urlsafe(24))
        return render_template("welcome.html", count=len(order), study=manifest["name"])

    @app.post("/start")
    def start():
        found = participant()
        if found is not None:
            return resume(found)
        start_key = session.get("start") or secrets.token_urlsafe(24)
        check_token("start", start_key)
        found = db.create_participant(conn(), manifest["arm_order"], option_order, start_key)  # a resent Start: the same participant
        session.clear()
        session["pid"] = found.id
        session.permanent = True
        return redirect(url_for("intro"), 303)

    @app.get("/intro")
    def intro():
        found = require_participant()
        arm = manifest["arms"][found.arm]
        return render_template("intro.html", arm=arm, count=len(order), question_text=manifest["question_text"])

    @app.get("/question")
    def question():
        found = require_participant()
        qid = next_question(found)
        if qid is None:
            return redirect(url_for("done"), 303)
        labels = {o["id"]: o["label"] for o in questions[qid]["options"]}
        options = [{"id": oid, "label": labels[oid]} for oid in found.option_order[qid]]
        return render_template(
            "question.html", qid=qid, number=order.index(qid) + 1, count=len(order), options=options,
            token=found.form_token, question_text=manifest["question_text"], explanation=manifest["arms"][found.arm]["title"],
        )  # fmt: skip

    @app.post("/answer")
    def answer():
        found = require_participant()
        check_token("token", found.form_token)
        qid = request.form.get("question", "")
        if qid not in questions:
            abort(400, "Unknown question.")
        option = request.form.get("option", "")
        shown = found.option_order[qid]
        if option not in shown:
            abort(400, "Unknown answer: please choose one of the options.")
        outcome = db.record_answer(conn(), found.id, order, qid, option, shown.index(option))
        if outcome == "not_current":
            abort(409, "That question is not the current one.")
        return redirect(url_for("question"), 303)

    @app.get("/image/<qid>")
    def image(qid: str):
        found = require_participant()
        if qid not in questions:
            abort(404)
        return send_from_directory(study_dir, questions[qid]["images"][found.arm], mimetype="image/png", max_age=0)

    @app.get("/done")
    def done():
        found = require_participant()
        if next_question(found) is not None:
            return redirect(url_for("question"), 303)
        return render_template("done.html")

    @app.get("/admin/status")
    def admin_status():
        if not admin_token:
            abort(404)
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {admin_token}".encode()):
            abort(401, "Admin token required.")
        return jsonify({"study": manifest["name"], "questions": len(order), "arms": db.arm_counts(conn())})

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException):
        return render_template("error.html", code=err.code, name=err.name, message=err.description), err.code

    @app.after_request
    def headers(response):
        response.headers.update(SECURITY_HEADERS)
        if not request.path.startswith("/static/"):
            response.headers["Cache-Control"] = "no-store"
        return response

    return app
