"""The study manifest (manifest.json): everything a host needs besides the images.

Layout (paths relative to the study folder):

    {"format": "pv-survey/2", "name", "seed", "question_text", "arm_order": ["pv", "gradcam"],
     "arms": {"pv": {"title", "introduction": [paragraph, ...]}, ...},
     "questions": [{"id": "q01", "image_id", "subset": "correct"|"incorrect", "labels", "predicted",
                    "top_class", "top_prob", "images": {"pv": "images/pv/q01.png", ...},
                    "options": [{"id": "o1", "label": "cat"}, ..., {"id": "cant_tell", ...}], "answer": "o3"}],
     "question_order": "random" | "fixed",          # per participant; absent (format 1): "fixed"
     "attention_checks": [{"id": "a1", "image": "images/attention/a1.png", "text", "options", "answer",
                           "position": 5 | null}],    # 1-based place among the items; null: random per participant
     "presentation": {"gradcam": "masked" | "overlay", ...},
     "estimated_minutes": 8,
     "platform": {"name", "participant_param", "study_param", "session_param", "completion_code",
                  "completion_url", "required"},      # optional (see pv.survey.platform)
     "selection": {"mode": "paper" | "cause", "world", "right", "wrong", "requested", "pool", "drawn"},
                                                     # optional: how questions were drawn (pv.survey.strata); with a
                                                     # world each question also has "cause" and "bucket"
     "source": {...provenance...}}

Format 1 manifests (written before question order, attention checks and platforms existed) still load:
their missing fields mean fixed order, no checks, no platform, and their fingerprint is unchanged.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pv.atomic import write_text
from pv.survey.errors import MissingFileError, StudyError

FORMAT = "pv-survey/2"
FORMATS = ("pv-survey/1", FORMAT)
MANIFEST_NAME = "manifest.json"
SUBSETS = ("correct", "incorrect")
ATTENTION = "attention"  # the subset name attention checks get in exports
QUESTION_ORDERS = ("random", "fixed")
SECONDS_PER_QUESTION = 20  # for the welcome page's estimate
INTRO_MINUTES = 2


class ManifestError(StudyError):
    """A study manifest that breaks the layout above."""


def manifest_path(study_dir: str | Path) -> Path:
    return Path(study_dir) / MANIFEST_NAME


def write_manifest(manifest: dict[str, Any], study_dir: str | Path) -> Path:
    """Validate and write `manifest` to STUDY/manifest.json (atomically)."""
    validate(manifest, Path(study_dir), check_files=True)
    return write_text(manifest_path(study_dir), json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")


def read_manifest(path: str | Path) -> tuple[Any, Path]:
    """The parsed JSON (not validated) and the manifest's path; `path` is the study folder or the file."""
    path = Path(path)
    if path.is_dir():
        path = manifest_path(path)
    if not path.is_file():
        raise MissingFileError(f"Study manifest not found: {path} (create it with `pv survey build`)")
    try:
        return json.loads(path.read_text(encoding="utf-8")), path
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ManifestError(f"{path}: not valid JSON: {err}") from None


def load_manifest(path: str | Path, check_files: bool = True) -> dict[str, Any]:
    """Read and validate a manifest; `path` is the study folder or the JSON file itself.

    `check_files=False` skips checking that the images exist (analysis needs only the answer key).
    """
    manifest, path = read_manifest(path)
    validate(manifest, path.parent, check_files=check_files, source=str(path))
    return manifest


def fingerprint(manifest: dict[str, Any]) -> str:
    """A short hash identifying the study content (arms, questions, key, and order and checks when present).

    Keys a format-1 manifest lacks are left out, so a study built before them keeps its fingerprint.
    """
    core = {k: manifest[k] for k in ("arm_order", "questions")}
    core.update({k: manifest[k] for k in ("question_order", "attention_checks") if k in manifest})
    return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()[:16]


def question_order(manifest: dict[str, Any]) -> str:
    """"random" or "fixed"; a manifest without the field (format 1) keeps the order it was served in."""
    return manifest.get("question_order", "fixed")


def attention_checks(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    return list(manifest.get("attention_checks") or [])


def estimated_minutes(manifest: dict[str, Any]) -> int:
    """The study's length as the welcome page states it (stored at build, else from the item count)."""
    if isinstance(manifest.get("estimated_minutes"), int):
        return manifest["estimated_minutes"]
    return estimate_minutes(len(manifest["questions"]) + len(attention_checks(manifest)))


def estimate_minutes(items: int) -> int:
    """Minutes for `items` questions at SECONDS_PER_QUESTION each plus INTRO_MINUTES of reading, rounded up."""
    return max(1, INTRO_MINUTES + -(-items * SECONDS_PER_QUESTION // 60))


def validate(manifest: Any, study_dir: Path, check_files: bool = True, source: str = "manifest") -> None:
    """Raise ManifestError naming the first field that breaks the layout above."""
    problems = manifest_problems(manifest, study_dir, check_files, source, first_only=True)
    if problems:
        raise ManifestError(problems[0])


def manifest_problems(manifest: Any, study_dir: Path, check_files: bool = True, source: str = "manifest",
                      first_only: bool = False) -> list[str]:  # fmt: skip
    """Every problem found (`pv survey check`), each a line naming the field; [] when the manifest is usable."""
    problems: list[str] = []

    class Stop(Exception):
        pass

    def fail(field: str, problem: str, fatal: bool = False) -> None:
        problems.append(f"{source}: field {field!r} {problem}")
        if first_only or fatal:
            raise Stop

    try:
        if not isinstance(manifest, dict):
            fail("(root)", "must be a JSON object", fatal=True)
        if manifest.get("format") not in FORMATS:
            fail("format", f"is {manifest.get('format')!r}, expected {FORMAT!r}", fatal=True)
        arms = manifest.get("arms")
        order = manifest.get("arm_order")
        if not isinstance(order, list) or len(order) < 1 or len(set(order)) != len(order):
            fail("arm_order", "must list distinct arm names", fatal=True)
        if not isinstance(arms, dict) or set(arms) != set(order):
            fail("arms", f"must hold exactly the arms {order}", fatal=True)
        for arm, spec in arms.items():
            if not isinstance(spec, dict) or not isinstance(spec.get("title"), str):
                fail(f"arms.{arm}.title", "must be a string", fatal=True)
            intro = spec.get("introduction")
            if not isinstance(intro, list) or not all(isinstance(p, str) for p in intro):
                fail(f"arms.{arm}.introduction", "must be a list of paragraphs")
        questions = manifest.get("questions")
        if not isinstance(questions, list) or not questions:
            fail("questions", "must be a non-empty list", fatal=True)
        seen: dict[str, str] = {}
        images_seen: dict[str, str] = {}
        for i, q in enumerate(questions):
            where = f"questions[{i}]"
            check_id(q, where, seen, fail)
            if q.get("image_id") and q["image_id"] in images_seen:
                fail(f"{where}.image_id", f"repeats image {q['image_id']!r} of {images_seen[q['image_id']]}")
            if q.get("image_id"):
                images_seen.setdefault(q["image_id"], where)
            if q.get("subset") not in SUBSETS:
                fail(f"{where}.subset", f"is {q.get('subset')!r}, expected one of {SUBSETS}")
            if "cause" in q and (not isinstance(q["cause"], str) or not q["cause"]):
                fail(f"{where}.cause", f"is {q['cause']!r}, expected the planted cause's name")
            check_options(q, where, fail)
            images = q.get("images")
            if not isinstance(images, dict) or set(images) != set(order):
                fail(f"{where}.images", f"must give one image per arm {order}")
                continue
            for arm, rel in images.items():
                check_image(study_dir, rel, f"{where}.images.{arm}", check_files, fail)
        if manifest.get("question_order", "fixed") not in QUESTION_ORDERS:
            fail("question_order", f"is {manifest.get('question_order')!r}, expected one of {QUESTION_ORDERS}")
        checks = manifest.get("attention_checks", [])
        if not isinstance(checks, list):
            fail("attention_checks", "must be a list", fatal=True)
        items = len(questions) + len(checks)
        for i, check in enumerate(checks):
            where = f"attention_checks[{i}]"
            check_id(check, where, seen, fail)
            check_options(check, where, fail)
            check_image(study_dir, check.get("image"), f"{where}.image", check_files, fail)
            position = check.get("position")
            if position is not None and (not isinstance(position, int) or not 1 <= position <= items):
                fail(f"{where}.position", f"is {position!r}, expected null (random) or 1..{items}")
        selection = manifest.get("selection")
        if selection is not None and (not isinstance(selection, dict) or selection.get("mode") not in ("paper", "cause")):
            fail("selection.mode", "must be paper or cause")
        platform = manifest.get("platform")
        if platform is not None:
            if not isinstance(platform, dict) or not isinstance(platform.get("participant_param"), str):
                fail("platform.participant_param", "must name the URL parameter holding the participant's platform ID")
            elif platform.get("completion_url") is not None and not str(platform["completion_url"]).startswith("https://"):
                fail("platform.completion_url", f"must be an https:// URL, got {platform['completion_url']!r}")
    except Stop:
        pass
    return problems


def check_id(item, where: str, seen: dict[str, str], fail) -> None:
    """A question or attention check needs a non-empty string id, unique across both lists (`seen`: id -> where)."""
    if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
        fail(f"{where}.id", "must be a non-empty string", fatal=True)
    if item["id"] in seen:
        fail(f"{where}.id", f"repeats {item['id']!r} ({seen[item['id']]})")
    seen[item["id"]] = where


def check_options(item: dict, where: str, fail) -> None:
    """Options are distinct, labelled, and the answer is one of them."""
    options = item.get("options")
    if not isinstance(options, list) or len(options) < 2:
        fail(f"{where}.options", "must list at least two options")
        return
    ids = [o.get("id") if isinstance(o, dict) else None for o in options]
    if not all(isinstance(x, str) and x for x in ids) or len(set(ids)) != len(ids):
        fail(f"{where}.options", "must have distinct non-empty ids")
        return
    if not all(isinstance(o.get("label"), str) for o in options):
        fail(f"{where}.options", "must all have a string label")
    labels = [o.get("label") for o in options]
    if len(set(labels)) != len(labels):
        fail(f"{where}.options", f"repeat a label: {sorted({x for x in labels if labels.count(x) > 1})}")
    if item.get("answer") in (None, ""):
        fail(f"{where}.answer", "is missing: give the option id of the expected (or instructed) answer")
    elif item["answer"] not in ids:
        fail(f"{where}.answer", f"is {item['answer']!r}, not one of the option ids {ids}")


def check_image(study_dir: Path, rel: Any, field: str, check_files: bool, fail) -> None:
    rel_path = Path(str(rel))
    if not isinstance(rel, str) or rel_path.is_absolute() or ".." in rel_path.parts or rel_path.parts[:1] != ("images",):
        fail(field, f"must be a path under images/, got {rel!r}")
    elif check_files and not (study_dir / rel_path).is_file():
        fail(field, f"names a missing file {study_dir / rel_path}")


def question_index(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """question id -> question."""
    return {q["id"]: q for q in manifest["questions"]}


def item_index(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """item id -> question or attention check (checks carry "subset": "attention")."""
    items = question_index(manifest)
    items.update({c["id"]: {**c, "subset": ATTENTION} for c in attention_checks(manifest)})
    return items


def item_image(item: dict[str, Any], arm: str) -> str:
    """The image path an item shows in `arm` (attention checks show one image in every arm)."""
    return item["image"] if item.get("subset") == ATTENTION else item["images"][arm]
