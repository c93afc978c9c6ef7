"""The study manifest (manifest.json): questions, image paths, options, answer key and arm introductions.

Layout (paths relative to the study folder):

    {"format": "pv-survey/1", "name", "seed", "question_text", "arm_order": ["pv", "gradcam"],
     "arms": {"pv": {"title", "introduction": [paragraph, ...]}, ...},
     "questions": [{"id": "q01", "image_id", "subset": "correct"|"incorrect", "labels", "predicted",
                    "top_class", "top_prob", "images": {"pv": "images/pv/q01.png", ...},
                    "options": [{"id": "o1", "label": "cat"}, ..., {"id": "cant_tell", ...}], "answer": "o3"}],
     "source": {...provenance...}}
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

FORMAT = "pv-survey/1"
MANIFEST_NAME = "manifest.json"
SUBSETS = ("correct", "incorrect")


def manifest_path(study_dir: str | Path) -> Path:
    return Path(study_dir) / MANIFEST_NAME


def write_manifest(manifest: dict[str, Any], study_dir: str | Path) -> Path:
    """Validate and write `manifest` to STUDY/manifest.json."""
    validate(manifest, Path(study_dir), check_files=True)
    path = manifest_path(study_dir)
    path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def load_manifest(path: str | Path, check_files: bool = True) -> dict[str, Any]:
    """Read and validate a manifest; `path` is the study folder or the JSON file itself.

    `check_files=False` skips checking that the images exist (analysis needs only the answer key).
    """
    path = Path(path)
    if path.is_dir():
        path = manifest_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Study manifest not found: {path} (create it with `pv survey build`)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON: {err}") from None
    validate(manifest, path.parent, check_files=check_files, source=str(path))
    return manifest


def fingerprint(manifest: dict[str, Any]) -> str:
    """A short hash identifying the study content (questions, options, key, arms)."""
    core = {k: manifest[k] for k in ("arm_order", "questions")}
    return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()[:16]


def validate(manifest: Any, study_dir: Path, check_files: bool = True, source: str = "manifest") -> None:
    """Raise ValueError naming the field that breaks the layout above."""

    def fail(field: str, problem: str) -> None:
        raise ValueError(f"{source}: field {field!r} {problem}")

    if not isinstance(manifest, dict):
        fail("(root)", "must be a JSON object")
    if manifest.get("format") != FORMAT:
        fail("format", f"is {manifest.get('format')!r}, expected {FORMAT!r}")
    arms = manifest.get("arms")
    order = manifest.get("arm_order")
    if not isinstance(order, list) or len(order) < 1 or len(set(order)) != len(order):
        fail("arm_order", "must list distinct arm names")
    if not isinstance(arms, dict) or set(arms) != set(order):
        fail("arms", f"must hold exactly the arms {order}")
    for arm, spec in arms.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("title"), str):
            fail(f"arms.{arm}.title", "must be a string")
        intro = spec.get("introduction")
        if not isinstance(intro, list) or not all(isinstance(p, str) for p in intro):
            fail(f"arms.{arm}.introduction", "must be a list of paragraphs")
    questions = manifest.get("questions")
    if not isinstance(questions, list) or not questions:
        fail("questions", "must be a non-empty list")
    seen: set[str] = set()
    for i, q in enumerate(questions):
        where = f"questions[{i}]"
        if not isinstance(q, dict) or not isinstance(q.get("id"), str) or not q["id"]:
            fail(f"{where}.id", "must be a non-empty string")
        if q["id"] in seen:
            fail(f"{where}.id", f"repeats {q['id']!r}")
        seen.add(q["id"])
        if q.get("subset") not in SUBSETS:
            fail(f"{where}.subset", f"is {q.get('subset')!r}, expected one of {SUBSETS}")
        options = q.get("options")
        if not isinstance(options, list) or len(options) < 2:
            fail(f"{where}.options", "must list at least two options")
        ids = [o.get("id") if isinstance(o, dict) else None for o in options]
        if not all(isinstance(x, str) and x for x in ids) or len(set(ids)) != len(ids):
            fail(f"{where}.options", "must have distinct non-empty ids")
        if not all(isinstance(o.get("label"), str) for o in options):
            fail(f"{where}.options", "must all have a string label")
        if q.get("answer") not in ids:
            fail(f"{where}.answer", f"is {q.get('answer')!r}, not one of the option ids {ids}")
        images = q.get("images")
        if not isinstance(images, dict) or set(images) != set(order):
            fail(f"{where}.images", f"must give one image per arm {order}")
        for arm, rel in images.items():
            rel_path = Path(str(rel))
            if rel_path.is_absolute() or ".." in rel_path.parts or rel_path.parts[:1] != ("images",):
                fail(f"{where}.images.{arm}", f"must be a path under images/, got {rel!r}")
            if check_files and not (study_dir / rel_path).is_file():
                fail(f"{where}.images.{arm}", f"names a missing file {study_dir / rel_path}")


def question_index(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """question id -> question."""
    return {q["id"]: q for q in manifest["questions"]}
