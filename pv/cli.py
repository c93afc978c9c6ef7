"""The `pv` command: Lightning's fit/validate/test/predict plus pv's own sub-commands (pv/commands/).

A user error (`pv.errors.PVError`, a usage error, a bad config value) is printed as one line with exit
status 2; any other exception keeps its traceback, because it is a bug or an out-of-memory.
"""
from __future__ import annotations

import errno
import importlib
import os
import re
import sys


LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
# name -> (module, function, one-line help); imported only when used, so `pv --help` is fast.
COMMANDS = {
    "analyze": ("pv.commands.analyze", "main", "run the classifier over a dataset split; bucket images as correct/incorrect"),
    "explain": ("pv.commands.explain", "main", "PV, Grad-CAM and baselines for a folder of images; figures + index.html"),
    "featvis": ("pv.commands.featvis", "main", "feature visualization by multi-scale gradient ascent"),
    "evaluate-explanations": ("pv.commands.evaluate", "main", "deletion/insertion AUC and decoder metrics over a dataset"),
    "export": ("pv.commands.export", "main", "a decoder or classifier as a Hugging Face folder (safetensors, config, model card); --push to the Hub"),
    "survey": ("pv.survey.cli", "main", "build, check, serve, export and analyze the user study"),
    "sanity-check": ("pv.commands.sanity", "main", "cascading randomisation: how much PV and Grad-CAM change when the model does"),
    "world": ("pv.commands.world", "main", "generate the world with planted misperceptions (VOC layout + ground truth)"),
}
# OS errors that come from the environment (a full disk, a read-only folder), not from a bug.
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG}


def cli_main(args: list[str] | None = None, run: bool = True):
    """Lightning's CLI (`pv fit ...`); imported on use so `pv --help` does not load Lightning."""
    from pv.commands.fit import cli_main as lightning_cli

    return lightning_cli(args, run=run)


def usage() -> str:
    lines = ["usage: pv COMMAND [options]   (pv COMMAND --help for details)", "", "commands:"]
    lines += [f"  {name:<22} Lightning: {name} a model (--config configs/...yaml)" for name in LIGHTNING_COMMANDS]
    lines += [f"  {name:<22} {text}" for name, (_, _, text) in COMMANDS.items()]
    return "\n".join(lines)


def clean_error(err: Exception) -> str:
    """The useful part of an error; jsonargparse wraps errors raised in __init__ in Union-validation noise."""
    text = str(err).split("\nGiven value type:")[0]
    if "Errors:" in text:
        bullets = re.split(r"\n\s*- ", "\n" + text.split("Errors:", 1)[1])
        useful = [b.strip() for b in bullets if b.strip() and not b.strip().startswith("Expected a <class 'NoneType'>")]
        if useful:
            return useful[0]
    return text


def _raised_in_jsonargparse(err: BaseException) -> bool:
    traceback = err.__traceback__
    while traceback is not None and traceback.tb_next is not None:
        traceback = traceback.tb_next
    return traceback is not None and f"{os.sep}jsonargparse{os.sep}" in traceback.tb_frame.f_code.co_filename


def user_error_message(err: BaseException) -> str | None:
    """One line for a user error, or None for an error that must keep its traceback.

    User errors: a PVError (also when it caused another error), a config value that a class rejected while
    jsonargparse built it, and OS errors of the environment (disk full, read-only folder) naming the path.
    """
    from pv.errors import PVError

    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, PVError):
            return " ".join(str(cause).split("\n"))
        cause = cause.__cause__
    if isinstance(err, ValueError) and _raised_in_jsonargparse(err):
        return " ".join(clean_error(err).split())
    if isinstance(err, OSError) and err.errno in ENVIRONMENT_ERRNOS:
        where = f" {err.filename}" if err.filename else ""
        return f"cannot write{where}: {err.strerror or err}"
    return None


def main(argv: list[str] | None = None) -> int:
    from_console = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    try:
        if command in LIGHTNING_COMMANDS:
            cli_main(None if from_console else [command, *rest])
            return 0
        if command not in COMMANDS:
            print(f"pv: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
            return 2
        module, function, _ = COMMANDS[command]
        return int(getattr(importlib.import_module(module), function)(rest) or 0)
    except Exception as err:
        message = user_error_message(err)
        if message is None:
            raise
        print(f"pv {command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
