"""A participant driving the study app over HTTP (Flask test client or a real server via urllib)."""
from __future__ import annotations

import http.cookiejar
import re
import sqlite3
import threading
import urllib.error
import urllib.parse
import urllib.request
from contextlib import closing, contextmanager
from dataclasses import dataclass

from pv.survey.serve import make_server


@dataclass
class Page:
    status: int
    url: str
    text: str


def form_value(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found, f"no {name!r} field in page"
    return found.group(1)


def parse_question(html: str) -> dict:
    """The question page -> {"qid", "token", "options": [(id, label)], "number", "count"}."""
    options = re.findall(r'<input type="radio" name="option" value="([^"]+)" required> ([^<]+)</label>', html)
    progress = re.search(r"Question (\d+) of (\d+)", html)
    assert progress, "no progress indicator"
    return {"qid": form_value(html, "question"), "token": form_value(html, "token"), "options": options,
            "number": int(progress.group(1)), "count": int(progress.group(2))}  # fmt: skip


def snapshot(db_path) -> dict:
    """Every row of the response tables, to compare before and after."""
    with closing(sqlite3.connect(db_path)) as conn:
        return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall()) for t in ("meta", "participants", "answers")}


class HttpParticipant:
    """A browser-like client with its own cookie jar that follows redirects (urllib, bounded timeouts)."""

    def __init__(self, base: str, timeout: float = 60):
        self.base, self.timeout = base.rstrip("/"), timeout
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def request(self, path: str, fields: dict | None = None, headers: dict | None = None) -> Page:
        data = None if fields is None else urllib.parse.urlencode(fields).encode()
        request = urllib.request.Request(self.base + path, data=data, headers=headers or {})
        try:
            with self.opener.open(request, timeout=self.timeout) as response:
                return Page(response.status, response.url, response.read().decode())
        except urllib.error.HTTPError as err:
            return Page(err.code, err.url, err.read().decode())

    def start(self) -> Page:
        welcome = self.request("/")
        return self.request("/start", {"start": form_value(welcome.text, "start")})

    def question(self) -> dict | None:
        page = self.request("/question")
        assert page.status == 200, page.text
        return None if page.url.endswith("/done") else parse_question(page.text)

    def answer(self, question: dict, option: str) -> Page:
        return self.request("/answer", {"token": question["token"], "question": question["qid"], "option": option})


@contextmanager
def running_server(study, db_path, threads=8, admin_token=None):
    """A waitress server on 127.0.0.1 (free port) in a background thread, closed afterwards."""
    server = make_server(study, db_path, host="127.0.0.1", port=0, threads=threads, admin_token=admin_token)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        server.close()
        server.task_dispatcher.shutdown()
        thread.join(timeout=10)
