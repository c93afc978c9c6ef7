"""User errors: bad files, bad configs, mismatched checkpoints.

The `pv` command prints a `PVError` as one line and exits with status 2; any other exception keeps its
traceback, because it is a bug (or an out-of-memory) that someone needs to see.
"""
from __future__ import annotations


class PVError(Exception):
    """A problem with what the user gave (a file, a flag, a config field), worded for the user."""


class CheckpointError(PVError, ValueError):
    """A checkpoint that is missing, unreadable, refused or of the wrong kind."""


class EncoderMismatchError(PVError, ValueError):
    """A decoder paired with a classifier whose latent it did not learn to invert."""


class ConfigError(PVError, ValueError):
    """A config field or command-line option with a value that cannot work."""


class DataError(PVError, ValueError):
    """A dataset, annotation or image the user pointed at that cannot be used."""


class DataNotFoundError(PVError, FileNotFoundError):
    """A dataset folder, split or file that is not where the user said."""
