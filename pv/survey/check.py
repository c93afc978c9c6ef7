"""`pv survey check DIR`: validate a study folder before launch and print how to preview and link it.

Lists every problem at once (missing or unreadable images, options, duplicated questions or images,
attention checks without an answer, platform settings), then the preview page, the serve command and
the study link to paste into the recruitment platform.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from pv.survey.errors import StudyError
from pv.survey.manifest import manifest_problems, read_manifest


class StudyCheckError(StudyError):
    """A study folder that is not ready for launch."""


def study_problems(study_dir: str | Path) -> tuple[dict | None, list[str]]:
    """(the manifest or None, every problem found)."""
    manifest, path = read_manifest(study_dir)
    problems = manifest_problems(manifest, path.parent, check_files=True, source=path.name)
    if problems or not isinstance(manifest, dict):
        return manifest, problems
    images = {p for q in manifest["questions"] for p in q["images"].values()} | {c["image"] for c in manifest.get("attention_checks") or []}
    for rel in sorted(images):
        try:
            with Image.open(path.parent / rel) as image:
                image.verify()
        except (OSError, UnidentifiedImageError) as err:
            problems.append(f"{rel}: not a readable image ({err})")
    if not (path.parent / "preview.html").is_file():
        problems.append("preview.html is missing: rebuild the study with `pv survey build` to review it before launch")
    return manifest, problems


def study_link(manifest: dict, base: str) -> str:
    """The URL to give the platform, with its placeholders (Prolific: {{%PROLIFIC_PID%}} etc.)."""
    platform = manifest.get("platform") or {}
    if platform.get("name") == "prolific":
        params = [f"{platform[k]}={{{{%{platform[k]}%}}}}" for k in ("participant_param", "study_param", "session_param") if platform.get(k)]
        return f"{base}/?" + "&".join(params)
    if platform.get("name") == "mturk":
        return f"{base}/  (MTurk appends {platform['participant_param']}, {platform['study_param']}, {platform['session_param']})"
    return f"{base}/"


def check_study(study_dir: str | Path, base_url: str = "http://127.0.0.1:8000") -> list[str]:
    """Report lines for a study that passes; StudyCheckError listing every problem otherwise."""
    manifest, problems = study_problems(study_dir)
    if problems:
        raise StudyCheckError(f"{len(problems)} problem(s) in {study_dir}: " + " | ".join(problems))
    study_dir = Path(study_dir).resolve()
    checks = manifest.get("attention_checks") or []
    platform = manifest.get("platform") or {}
    counts = {s: sum(q["subset"] == s for q in manifest["questions"]) for s in ("correct", "incorrect")}
    return [
        f"OK: {study_dir} ({manifest['name']}): {len(manifest['questions'])} questions ({counts['correct']} correct, "
        f"{counts['incorrect']} incorrect), {len(checks)} attention checks, arms {', '.join(manifest['arm_order'])}, "
        f"question order {manifest.get('question_order', 'fixed')}, about {manifest.get('estimated_minutes', '?')} minutes",
        f"platform: {platform.get('name', 'none')}; completion code: {platform.get('completion_code') or '(none)'}; "
        f"completion URL: {platform.get('completion_url') or '(none)'}",
        f"preview (researcher only, with the key): {(study_dir / 'preview.html').as_uri()}",
        f"serve: pv survey serve {study_dir} --db RESPONSES.sqlite",
        f"study link: {study_link(manifest, base_url.rstrip('/'))}",
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study", help="study folder made by `pv survey build`")
    parser.add_argument("--base-url", default="http://127.0.0.1:8000", help="where the study will be served (for the study link)")


def run(args: argparse.Namespace) -> int:
    for line in check_study(args.study, args.base_url):
        print(line)
    return 0
