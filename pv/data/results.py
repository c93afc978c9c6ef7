"""Per-image results of a job over many images, kept so that the job can be split and resumed.

An output folder holds:
- `manifest.json`: which command made it and the fingerprint of the models and settings that shape its
  results; a later run with other models or settings is refused (one line) instead of mixing results.
- `shards/*.json`: one file per batch per rank (written atomically), each a list of per-image records.
- `index.json` and `index.csv`: every image once, in the job's stable order, merged from the shards.

A record is a dict with at least `key` (the image's stable output name), `path`, `sha256` (of the file's
bytes) and `status` ("ok" or "unreadable"); an image counts as done when its record's hash matches the
file today and every file the record names under `files` exists. Partial files never count: every file
is written to a temporary name and renamed (`pv.atomic`).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import uuid
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pv.atomic import write_text
from pv.errors import PVError

MANIFEST = "manifest.json"
SHARDS = "shards"
INDEX_JSON = "index.json"
INDEX_CSV = "index.csv"


class OutputMismatchError(PVError, ValueError):
    """An output folder made by another command, classifier, decoder or other settings."""


@dataclass(frozen=True)
class ImageItem:
    """One image of a job: its place in the stable order, its file, its output name and optional extras (labels)."""

    index: int
    path: Path
    key: str
    extra: dict = field(default_factory=dict)


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes ("" when it cannot be read)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except OSError:
        return ""
    return digest.hexdigest()


def describe_difference(recorded: dict, current: dict, prefix: str = "") -> str | None:
    """The first field where two fingerprints differ, as "field: recorded -> current"; None when equal."""
    for name in sorted(set(recorded) | set(current)):
        old, new = recorded.get(name), current.get(name)
        if isinstance(old, dict) and isinstance(new, dict):
            found = describe_difference(old, new, f"{prefix}{name}.")
            if found:
                return found
        elif old != new:
            short = lambda value: (value[:12] + "...") if isinstance(value, str) and len(value) > 40 else value  # noqa: E731
            return f"{prefix}{name}: {short(old)!r} there, {short(new)!r} now"
    return None


class ResultStore:
    """The results of one command in one output folder: manifest, shards, merged index."""

    def __init__(self, out: str | Path, command: str, flag: str = "--out"):
        self.out, self.command, self.flag = Path(out), command, flag
        self.shards = self.out / SHARDS

    # --- manifest ---

    def check_manifest(self, fingerprint: dict, write: bool = True) -> None:
        """Refuse (one line) a folder whose manifest records another command or fingerprint; record ours if absent."""
        path = self.out / MANIFEST
        current = {"command": self.command, **fingerprint}
        if path.is_file():
            try:
                recorded = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as err:
                raise OutputMismatchError(f"{self.flag} {self.out}: its {MANIFEST} cannot be read ({err}); choose another {self.flag}") from None
            difference = describe_difference(recorded, current)
            if difference:
                raise OutputMismatchError(
                    f"{self.flag} {self.out} holds results made with other models or settings ({difference}); "
                    f"choose another {self.flag} or empty this one"
                )
        elif write:
            write_text(path, json.dumps(current, indent=1, sort_keys=True))

    # --- records ---

    def write_shard(self, rank: int, batch: int, records: Sequence[dict], token: str) -> Path | None:
        """One shard file (atomically) with these records; `token` keeps runs from overwriting each other's shards."""
        if not records:
            return None
        return write_text(self.shards / f"rank{rank:03d}-{token}-{batch:07d}.json", json.dumps(list(records)))

    def shard_files(self) -> list[Path]:
        return sorted(p for p in self.shards.glob("*.json") if not p.name.startswith(".")) if self.shards.is_dir() else []

    def records(self) -> dict[str, list[dict]]:
        """Every stored record by image key: those of the merged index first, then those in shards (in name order)."""
        found: dict[str, list[dict]] = {}
        sources = [self.out / INDEX_JSON, *self.shard_files()]
        for source in sources:
            if not source.is_file():
                continue
            try:
                data = json.loads(source.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # not ours or damaged by hand: its images are simply done again
            for record in data if isinstance(data, list) else []:
                if isinstance(record, dict) and "key" in record and "sha256" in record:
                    found.setdefault(record["key"], []).append(record)
        return found

    def complete(self, record: dict, item: ImageItem, sha256: str) -> bool:
        """A record stands for `item` when it is of the same file (hash) and all its files are on disk."""
        if record.get("sha256") != sha256 or not sha256:
            return False
        return all((self.out / name).is_file() for name in (record.get("files") or {}).values())

    def split_done(self, items: Sequence[ImageItem]) -> tuple[dict[str, dict], list[ImageItem]]:
        """(records of the items already done, the items still to do); only items with a stored record are hashed."""
        stored = self.records()
        done, todo = {}, []
        for item in items:
            candidates = stored.get(item.key, [])
            sha256 = file_sha256(item.path) if candidates else ""
            record = next((r for r in candidates if self.complete(r, item, sha256)), None)
            if record is None:
                todo.append(item)
            else:
                done[item.key] = record
        return done, todo

    def merge(self, items: Sequence[ImageItem]) -> list[dict]:
        """One record per item that has a complete one, in the items' order."""
        done, _ = self.split_done(items)
        return [done[item.key] for item in items if item.key in done]

    def merge_readable(self, items: Sequence[ImageItem]) -> tuple[list[dict], list[dict]]:
        """`merge`, with one warning naming each unreadable image: (every record, the readable ones)."""
        records = self.merge(items)
        for record in records:
            if record["status"] != "ok":
                warnings.warn(f"Skipping {record['path']}: {record.get('error', 'unreadable')}", stacklevel=2)
        return records, [record for record in records if record["status"] == "ok"]

    def write_index(self, records: Sequence[dict], columns: Sequence[str]) -> tuple[Path, Path]:
        """index.json (whole records) and index.csv (`columns`; lists joined by ';'); then the shards they hold are removed."""
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\r\n")
        writer.writeheader()
        for record in records:
            writer.writerow({c: csv_value(record.get(c)) for c in columns})
        others = [r for key, found in self.records().items() if key not in {r["key"] for r in records} for r in found]
        json_path = write_text(self.out / INDEX_JSON, json.dumps(list(records), indent=1))
        csv_path = write_text(self.out / INDEX_CSV, buffer.getvalue())
        self.compact(others)
        return csv_path, json_path

    def compact(self, others: Sequence[dict]) -> None:
        """Replace the shards by one holding `others` (records of images not in this index, e.g. beyond a --limit):
        called only after the index was written, so every record stays on disk throughout."""
        old = self.shard_files()
        if others:
            self.write_shard(0, 0, others, f"kept-{run_token()}")
        for shard in old:
            shard.unlink(missing_ok=True)


def csv_value(value) -> str | float | int:
    if isinstance(value, (list, tuple)):
        return csv_value(";".join(str(v) for v in value))
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, str):  # a file name that is not UTF-8: its bytes shown escaped (\\xe9)
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "" if value is None else value


def run_token() -> str:
    """A short random name part, unique per run and rank."""
    return uuid.uuid4().hex[:10]


def ordered_keys(items: Iterable[ImageItem]) -> list[str]:
    return [item.key for item in items]
