"""`--help` that shows every default; light (no torch), so `pv survey serve` can use it."""
from __future__ import annotations

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows every default, also for options without help text; `None` defaults are explained in the help."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" in text or action.default in (None, argparse.SUPPRESS, False) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)".lstrip()

    def _format_action(self, action: argparse.Action) -> str:
        if action.help is None and action.option_strings and action.default not in (None, argparse.SUPPRESS, False):
            action.help = ""  # argparse skips the help column (and so the default) when help is None
        return super()._format_action(action)
