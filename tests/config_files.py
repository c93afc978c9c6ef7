"""Reading shipped configs in tests: a config with its included pieces inlined."""
from __future__ import annotations

from pathlib import Path

import yaml

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def composed(path: Path):
    """A config with its included pieces (string values naming a .yaml file, relative to the including file) inlined."""

    def inline(value, folder: Path):
        if isinstance(value, str) and value.endswith(".yaml") and (folder / value).is_file():
            return composed(folder / value)
        if isinstance(value, dict):
            return {key: inline(child, folder) for key, child in value.items()}
        if isinstance(value, list):
            return [inline(child, folder) for child in value]
        return value

    return inline(yaml.safe_load(Path(path).read_text()), Path(path).parent)
