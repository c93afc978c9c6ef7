"""`pv survey serve`: the study app behind waitress, a production WSGI server (no request logging, so no IPs).

Tuned for a public study link: many connections (a slow or idle client holds one socket, not a thread),
a short idle timeout, poll() instead of select() (no 1024-descriptor ceiling), and a log that keeps
real events (the connection limit reached, errors) but not waitress's per-request queue-depth lines.
"""
from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable
from pathlib import Path

from waitress.server import create_server

from pv.survey.app import MAX_BODY, create_app

ADMIN_TOKEN_ENV = "PV_SURVEY_ADMIN_TOKEN"
CONNECTION_LIMIT = 1000  # waitress's default of 100 let 100 idle sockets lock everyone out
CHANNEL_TIMEOUT = 20  # seconds a connection may sit idle (waitress: 120)
CLEANUP_INTERVAL = 5  # how often idle connections are looked for (waitress: 30)
THREADS = 16


def quiet_logs() -> None:
    """Queue-depth warnings fire on every burst of requests and are no event: keep them out of the log."""
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)


def make_server(study_dir: str | Path, db_path: str | Path, host: str = "127.0.0.1", port: int = 8000, threads: int = THREADS,
                admin_token: str | None = None, secure_cookies: bool = False, connection_limit: int = CONNECTION_LIMIT,
                channel_timeout: int = CHANNEL_TIMEOUT):  # fmt: skip
    """A bound, not yet running waitress server (`.run()`, `.close()`, `.effective_port`); port 0 picks a free port."""
    app = create_app(study_dir, db_path, admin_token=admin_token, secure_cookies=secure_cookies)
    quiet_logs()
    return create_server(
        app, host=host, port=port, threads=threads, ident="pv-survey", connection_limit=connection_limit,
        channel_timeout=channel_timeout, cleanup_interval=CLEANUP_INTERVAL, asyncore_use_poll=True, backlog=2048,
        max_request_body_size=4 * MAX_BODY, max_request_header_size=16 * 1024, expose_tracebacks=False,
    )  # fmt: skip


def serve(study_dir: str | Path, db_path: str | Path, host: str = "127.0.0.1", port: int = 8000, threads: int = THREADS,
          admin_token: str | None = None, secure_cookies: bool = False, announce: Callable[[str], None] = print,
          connection_limit: int = CONNECTION_LIMIT, channel_timeout: int = CHANNEL_TIMEOUT) -> None:  # fmt: skip
    """Serve until interrupted; announces the URL first (with the real port when `port` is 0)."""
    server = make_server(study_dir, db_path, host, port, threads, admin_token, secure_cookies, connection_limit, channel_timeout)
    announce(f"Serving {Path(study_dir)} on http://{host}:{server.effective_port}/ with responses in {db_path} (Ctrl+C to stop)")
    if admin_token:
        announce(f"Live view: http://{host}:{server.effective_port}/admin (any user name, the admin token as password)")
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (f"Serve the study with waitress; responses go to a SQLite database (WAL, created 0600) and its keys to "
                          f"DB.keys beside it (0600). Set {ADMIN_TOKEN_ENV} to enable the live view /admin and /admin/status.")  # fmt: skip
    parser.add_argument("study", help="study folder made by `pv survey build`")
    parser.add_argument("--db", required=True, help="SQLite response database (created if missing)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=8000, help="port (0 picks a free one)")
    parser.add_argument("--threads", type=int, default=THREADS, help="worker threads")
    parser.add_argument("--connection-limit", type=int, default=CONNECTION_LIMIT, help="open connections accepted at once")
    parser.add_argument("--channel-timeout", type=int, default=CHANNEL_TIMEOUT, help="seconds before an idle connection is closed")
    parser.add_argument("--secure-cookies", action="store_true", help="send the cookie over HTTPS only (behind a TLS proxy)")


def run(args: argparse.Namespace) -> int:
    serve(args.study, args.db, args.host, args.port, args.threads, os.environ.get(ADMIN_TOKEN_ENV) or None, args.secure_cookies,
          announce=lambda line: print(line, flush=True), connection_limit=args.connection_limit, channel_timeout=args.channel_timeout)  # fmt: skip
    return 0
