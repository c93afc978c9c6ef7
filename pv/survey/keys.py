"""The study's secrets, kept in a 0600 file beside the response database, never inside it.

`RESPONSES.sqlite.keys` (JSON) holds the cookie-signing key and the per-study key of the keyed hash
that stands for a participant's platform ID. The database and its CSV export can then be shared
without letting anyone forge a participant's cookie or test a guessed platform ID against the hashes.
"""
from __future__ import annotations

import json
import os
import secrets
import stat
from pathlib import Path
from pv.survey.errors import StudyError

KEY_NAMES = ("cookie", "platform")


def keys_path(db_path: str | Path) -> Path:
    return Path(f"{db_path}.keys")


def load_or_create_keys(db_path: str | Path, cookie_key: str | None = None) -> dict[str, str]:
    """The keys beside `db_path`, created (0600) when missing; `cookie_key` seeds the cookie key of a new file
    (a database from before this file existed keeps its participants' cookies valid)."""
    path = keys_path(db_path)
    if not path.exists():
        keys = {"cookie": cookie_key or secrets.token_hex(32), "platform": secrets.token_hex(32)}
        create_private_file(path, (json.dumps(keys, indent=2) + "\n").encode())
    try:
        keys = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise StudyError(
            f"{path}: unreadable study keys ({err}); restore it from a backup (without it cookies and platform IDs cannot be checked)"
        ) from None
    if not isinstance(keys, dict) or not all(isinstance(keys.get(k), str) and len(keys[k]) >= 32 for k in KEY_NAMES):
        raise StudyError(f"{path}: expected a JSON object with the keys {', '.join(KEY_NAMES)}")
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        os.chmod(path, 0o600)
    return keys


def create_private_file(path: Path, data: bytes) -> None:
    """Write `data` to a new file readable by its owner only; a file made meanwhile by another process wins."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)  # atomic, and refuses to replace an existing file
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)


def create_private_empty(path: Path) -> None:
    """Create an empty file with mode 0600 unless it exists (the response database before SQLite opens it)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
