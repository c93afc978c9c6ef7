"""`pv survey COMMAND`: one table of sub-commands, one parser.

Each sub-command is a module with `add_arguments(parser)` and `run(args) -> int`; only the chosen
one is imported (so `pv survey serve` never loads torch). Adding a sub-command = one module + one
`SUBCOMMANDS` line.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from pv.commands.help import HelpFormatter

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "build": ("pv.survey.build", "select questions, render both arms' images, write the study folder"),
    "check": ("pv.survey.check", "validate a study folder before launch; print the preview and the study link"),
    "serve": ("pv.survey.serve", "run the study web app (waitress)"),
    "export": ("pv.survey.export", "responses -> CSV, the file to share (no platform IDs)"),
    "analyze": ("pv.survey.analyze", "Table 1, Mann-Whitney tests, exclusions and Figure 6 as a Markdown report"),
    "simulate": ("pv.survey.simulate", "machine observers answer the study in four arms (pv, gradcam, input, reconstruction)"),
    "lookup": ("pv.survey.lookup", "which platform IDs took part (for payment), from their keyed hashes"),
}


def parser(chosen: str | None = None) -> argparse.ArgumentParser:
    """The parser; only `chosen`'s module is imported to add its arguments."""
    root = argparse.ArgumentParser(prog="pv survey", description="The Perception Visualization user study (see survey/README.md).")
    sub = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, text) in SUBCOMMANDS.items():
        command = sub.add_parser(name, help=text, description=text, formatter_class=HelpFormatter)
        if name == chosen:
            importlib.import_module(module).add_arguments(command)
    return root


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    args = parser(chosen if chosen in SUBCOMMANDS else None).parse_args(argv)
    return int(importlib.import_module(SUBCOMMANDS[args.command][0]).run(args) or 0)
