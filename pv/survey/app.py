"""The study web app (Flask, served by waitress): welcome, introduction, one question per page, end page.

State lives in SQLite only (`pv.survey.db`); the browser holds a signed, HttpOnly cookie with the
participant's random id. Every form carries the participant's token; anything unknown, forged or
oversized gets a 4xx and changes nothing. A participant arriving from a recruitment platform (the
manifest's `platform` block) is known by a keyed hash of their platform ID only; a second arrival
with the same ID is refused, and the end page gives the completion code (and returns to the platform).
"""
from __future__ import annotations

import datetime as dt
import hmac
import secrets
import sqlite3
from pathlib import Path

from flask import Flask, abort, g, redirect, render_template, request, send_from_directory, session, url_for
from werkzeug.exceptions import HTTPException

from pv.survey import db
from pv.survey.admin import register_admin
from pv.survey.manifest import estimated_minutes, item_image, item_index, load_manifest
from pv.survey.order import Layouts, default_order
from pv.survey.platform import arriving_id, participant_hash

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
DEFAULT_HINT = "Choose the class you think the model named."


def create_app(study_dir: str | Path, db_path: str | Path, admin_token: str | None = None, secure_cookies: bool = False) -> Flask:
    """The app for one study folder (built by `pv survey build`) and one response database.

    `admin_token` enables the researcher's pages /admin (live view) and /admin/status (JSON)
    (`Authorization: Bearer TOKEN`, or HTTP Basic with the token as password); `secure_cookies`
    marks the cookie HTTPS-only (set it when serving behind TLS).
    """
    study_dir = Path(study_dir).resolve()
    manifest = load_manifest(study_dir)
    keys = db.init_db(db_path, manifest)
    items = item_index(manifest)
    manifest_order = default_order(manifest)
    platform = manifest.get("platform")
    layouts = Layouts(manifest)

    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=keys["cookie"],
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

    def order_of(found: db.Participant) -> list[str]:
        return found.question_order or manifest_order  # participants from before per-participant orders: the manifest's

    def check_token(field: str, expected: str) -> None:
        given = request.form.get(field, "")
        if not hmac.compare_digest(given.encode(), expected.encode()):
            abort(403, "This form has expired or was not sent by this survey. Go back to the first page.")

    def next_question(found: db.Participant) -> str | None:
        done = db.answers_of(conn(), found.id)
        return next((q for q in order_of(found) if q not in done), None)

    def resume(found: db.Participant):
        return redirect(url_for("question" if db.answers_of(conn(), found.id) else "intro"), 303)

    def refused():
        name = (platform or {}).get("name", "the platform")
        return render_template("refused.html", platform=name), 403

    @app.get("/")
    def welcome():
        found = participant()
        if found is not None:
            return resume(found)
        try:
            platform_id = arriving_id(platform, request.args)
        except ValueError as err:
            abort(400, str(err))
        if platform_id is not None:
            digest = participant_hash(keys["platform"], platform, platform_id)
            if db.find_by_platform_hash(conn(), digest) is not None:
                return refused()
            session["arrival"] = digest
        elif platform and platform.get("required") and not session.get("arrival"):
            abort(403, f"Please open this study through {platform['name']}: the link there identifies you.")
        session.setdefault("start", secrets.token_urlsafe(24))
        return render_template("welcome.html", count=len(manifest_order), minutes=estimated_minutes(manifest), study=manifest["name"])

    @app.post("/start")
    def start():
        found = participant()
        if found is not None:
            return resume(found)
        start_key = session.get("start") or secrets.token_urlsafe(24)
        check_token("start", start_key)
        arrival = session.get("arrival")
        try:  # a resent Start: the same participant
            found = db.create_participant(conn(), manifest["arm_order"], layouts, start_key, platform_hash=arrival)
        except db.AlreadyParticipated:
            return refused()
        session.clear()
        session["pid"] = found.id
        session.permanent = True
        return redirect(url_for("intro"), 303)

    @app.get("/intro")
    def intro():
        found = require_participant()
        arm = manifest["arms"][found.arm]
        return render_template("intro.html", arm=arm, count=len(order_of(found)), question_text=manifest["question_text"])

    @app.get("/question")
    def question():
        found = require_participant()
        qid = next_question(found)
        if qid is None:
            return redirect(url_for("done"), 303)
        item = items[qid]
        db.mark_shown(conn(), found.id, qid)
        labels = {o["id"]: o["label"] for o in item["options"]}
        shown = found.option_order.get(qid) or [o["id"] for o in item["options"]]
        options = [{"id": oid, "label": labels[oid]} for oid in shown]
        order = order_of(found)
        return render_template(
            "question.html", qid=qid, number=order.index(qid) + 1, count=len(order), options=options, token=found.form_token,
            question_text=item.get("question_text", manifest["question_text"]), explanation=manifest["arms"][found.arm]["title"],
            hint=item.get("text") or DEFAULT_HINT, attention=item["subset"] == "attention",
        )  # fmt: skip

    @app.post("/answer")
    def answer():
        found = require_participant()
        check_token("token", found.form_token)
        qid = request.form.get("question", "")
        if qid not in items:
            abort(400, "Unknown question.")
        option = request.form.get("option", "")
        shown = found.option_order.get(qid) or [o["id"] for o in items[qid]["options"]]
        if option not in shown:
            abort(400, "Unknown answer: please choose one of the options.")
        outcome = db.record_answer(conn(), found.id, order_of(found), qid, option, shown.index(option))
        if outcome == "not_current":
            abort(409, "That question is not the current one.")
        return redirect(url_for("question"), 303)

    @app.get("/image/<qid>")
    def image(qid: str):
        found = require_participant()
        if qid not in items:
            abort(404)
        return send_from_directory(study_dir, item_image(items[qid], found.arm), mimetype="image/png", max_age=0)

    @app.get("/done")
    def done():
        found = require_participant()
        if next_question(found) is not None:
            return redirect(url_for("question"), 303)
        code = (platform or {}).get("completion_code")
        url = (platform or {}).get("completion_url")
        return render_template("done.html", code=code, completion_url=url)

    register_admin(app, manifest, db_path, admin_token)

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException):
        response = err.get_response()
        page = render_template("error.html", code=err.code, name=err.name, message=err.description)
        return page, err.code, {k: v for k, v in response.headers.items() if k == "WWW-Authenticate"}

    @app.after_request
    def headers(response):
        response.headers.update(SECURITY_HEADERS)
        if not request.path.startswith("/static/"):
            response.headers["Cache-Control"] = "no-store"
        return response

    return app
