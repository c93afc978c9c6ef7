"""The study's user errors: printed by `pv survey` as one line (exit status 2), like every `pv.errors.PVError`."""
from __future__ import annotations

from pv.errors import PVError


class StudyError(PVError, ValueError):
    """A study folder, manifest, response database or option that cannot be used as given."""


class MissingFileError(PVError, FileNotFoundError):
    """A file the command needs (manifest, database, image, text) does not exist."""
