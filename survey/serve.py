"""`pv survey serve`: the study app behind waitress, a production WSGI server (no request logging, so no IPs)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from waitress.server import create_server

from survey.app import MAX_BODY, create_app


def make_server(study_dir: str | Path, db_path: str | Path, host: str = "127.0.0.1", port: int = 8000, threads: int = 8,
                admin_token: str | None = None, secure_cookies: bool = False):  # fmt: skip
    """A bound, not yet running waitress server (`.run()`, `.close()`, `.effective_port`); port 0 picks a free port."""
    app = create_app(study_dir, db_path, admin_token=admin_token, secure_cookies=secure_cookies)
    return create_server(
        app, host=host, port=port, threads=threads, ident="pv-survey",
        max_request_body_size=4 * MAX_BODY, max_request_header_size=16 * 1024, expose_tracebacks=False,
    )  # fmt: skip


def serve(study_dir: str | Path, db_path: str | Path, host: str = "127.0.0.1", port: int = 8000, threads: int = 8,
          admin_token: str | None = None, secure_cookies: bool = False, announce: Callable[[str], None] = print) -> None:  # fmt: skip
    """Serve until interrupted; announces the URL first (with the real port when `port` is 0)."""
    server = make_server(study_dir, db_path, host, port, threads, admin_token, secure_cookies)
    announce(f"Serving {Path(study_dir)} on http://{host}:{server.effective_port}/ with responses in {db_path} (Ctrl+C to stop)")
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
