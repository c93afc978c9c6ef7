"""Recruitment platforms (Prolific, Amazon Mechanical Turk): arrival parameters, completion, keyed IDs.

A study's manifest may carry a `platform` block naming the URL parameters the platform appends to the
study link and the completion code / URL. The participant's platform ID is never stored: only
HMAC-SHA256(per-study key, platform name + ID), enough to refuse a second attempt and to look a
participant up for payment, useless to anyone without the key (see pv.survey.keys).
"""
from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Any
from pv.survey.errors import StudyError

PRESETS: dict[str, dict[str, Any]] = {
    "prolific": {
        "participant_param": "PROLIFIC_PID", "study_param": "STUDY_ID", "session_param": "SESSION_ID",
        "completion_url": "https://app.prolific.com/submissions/complete?cc={code}",
    },
    "mturk": {"participant_param": "workerId", "study_param": "hitId", "session_param": "assignmentId", "completion_url": None},
}  # fmt: skip
PLATFORM_ID = re.compile(r"[A-Za-z0-9_.:@-]{1,128}")


def platform_config(name: str | None, completion_code: str | None = None, completion_url: str | None = None,
                    required: bool = False) -> dict[str, Any] | None:  # fmt: skip
    """The manifest's `platform` block for a preset (None: no platform)."""
    if name in (None, "none"):
        if completion_code is None and completion_url is None:
            return None
        return {"name": "none", "participant_param": "", "completion_code": completion_code, "completion_url": completion_url, "required": False}
    if name not in PRESETS:
        raise StudyError(f"--platform must be one of {', '.join(PRESETS)} or none, got {name!r}")
    config = {"name": name, **PRESETS[name], "completion_code": completion_code, "required": required}
    if completion_url is not None:
        config["completion_url"] = completion_url
    if config["completion_url"] and "{code}" in config["completion_url"]:
        if not completion_code:
            raise StudyError(f"--completion-code is required: the {name} completion URL carries it")
        config["completion_url"] = config["completion_url"].format(code=completion_code)
    return config


def arriving_id(platform: dict[str, Any] | None, query: Mapping[str, str]) -> str | None:
    """The platform ID in the study link's query (None without one); ValueError for a malformed one."""
    if not platform or not platform.get("participant_param"):
        return None
    given = query.get(platform["participant_param"])
    if given is None or given == "":
        return None
    if not PLATFORM_ID.fullmatch(given):
        raise ValueError(f"{platform['participant_param']} is not a platform ID")
    return given


def participant_hash(key: str, platform: dict[str, Any], platform_id: str) -> str:
    """HMAC-SHA256 of the platform's name and the participant's ID under the study's key (hex)."""
    message = f"{platform.get('name', '')}:{platform_id}".encode()
    return hmac.new(bytes.fromhex(key), message, hashlib.sha256).hexdigest()
