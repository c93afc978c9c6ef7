"""The researcher's live view: /admin (HTML, refreshes itself) and /admin/status (JSON), token-protected.

Counts per arm (started, completed, in progress, dropped: incomplete and idle for DROPOUT_MINUTES),
answers per question and the current Table 1. Reads through a read-only connection: in WAL mode a
reader never blocks a participant's write.
"""
from __future__ import annotations

import datetime as dt
import hmac
from base64 import b64decode
from contextlib import closing
from pathlib import Path

from flask import Flask, abort, jsonify, render_template, request
from werkzeug.datastructures import WWWAuthenticate
from werkzeug.exceptions import Unauthorized

from pv.survey import db
from pv.survey.manifest import SUBSETS, item_index
from pv.survey.order import default_order
from pv.survey.scores import arm_table, score_participants

DROPOUT_MINUTES = 30
REFRESH_SECONDS = 10


def authorized(header: str, token: str) -> bool:
    """`Bearer TOKEN`, or HTTP Basic with TOKEN as the password (so a browser can open the page)."""
    if header.startswith("Basic "):
        try:
            header = "Bearer " + b64decode(header[6:], validate=True).decode().partition(":")[2]
        except (ValueError, UnicodeDecodeError):
            return False
    return hmac.compare_digest(header.encode(), f"Bearer {token}".encode())


def live_status(db_path: str | Path, manifest: dict, dropout_minutes: float = DROPOUT_MINUTES) -> dict:
    """Counts per arm, answers per item and Table 1 (completed participants) from a read-only connection."""
    with closing(db.connect(db_path, readonly=True)) as conn:
        conn.execute("BEGIN")  # one consistent snapshot
        scores = score_participants(conn, manifest)
        active = db.last_activity(conn)
        per_item = dict(conn.execute("SELECT question_id, COUNT(*) FROM answers GROUP BY question_id").fetchall())
        conn.execute("COMMIT")
    arms = list(manifest["arm_order"])
    table = arm_table(scores, arms)
    cutoff = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=dropout_minutes)).isoformat(timespec="milliseconds")
    for arm in arms:
        waiting = [s for s in scores if s.arm == arm and not s.completed]
        table[arm]["dropped"] = sum(active.get(s.participant, "") < cutoff for s in waiting)
        table[arm]["in_progress"] = len(waiting) - table[arm]["dropped"]
    items = item_index(manifest)
    answers = [{"id": i, "subset": items[i]["subset"], "answers": per_item.get(i, 0)} for i in default_order(manifest)]
    return {"study": manifest["name"], "questions": len(manifest["questions"]), "arms": table, "answers": answers,
            "dropout_minutes": dropout_minutes, "generated": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}  # fmt: skip


def register_admin(app: Flask, manifest: dict, db_path: str | Path, token: str | None) -> None:
    """Add /admin and /admin/status to `app`; both answer 404 without a token."""

    def require_token() -> None:
        if not token:
            abort(404)
        if not authorized(request.headers.get("Authorization", ""), token):
            raise Unauthorized("Admin token required.", www_authenticate=WWWAuthenticate("basic", {"realm": "pv survey admin"}))

    @app.get("/admin/status")
    def admin_status():
        require_token()
        return jsonify(live_status(db_path, manifest))

    @app.get("/admin")
    def admin_page():
        require_token()
        status = live_status(db_path, manifest)
        titles = {arm: manifest["arms"][arm]["title"] for arm in manifest["arm_order"]}
        return render_template("admin.html", status=status, titles=titles, subsets=SUBSETS, refresh=REFRESH_SECONDS)
