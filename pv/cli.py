"""The `pv` command: Lightning's fit/validate/test/predict plus pv's own sub-commands."""
from __future__ import annotations

import importlib
import re
import os
import sys

from jsonargparse import set_parsing_settings
from pytorch_lightning.cli import LightningCLI

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
# name -> (module, function, one-line help); imported only when used, so `pv --help` is fast.
COMMANDS = {
    "analyze": ("pv.analysis", "main", "run the classifier over a dataset split; bucket images as correct/incorrect"),
    "explain": ("pv.explain.cli", "explain_main", "PV, Grad-CAM and baselines for a folder of images; figures + index.html"),
    "featvis": ("pv.explain.cli", "featvis_main", "feature visualization by multi-scale gradient ascent"),
    "evaluate-explanations": ("pv.explain.evaluate", "main", "deletion/insertion AUC and decoder metrics over a dataset"),
    "survey": ("survey.cli", "main", "build, serve, export and analyze the user study"),
}
USER_ERRORS = (ValueError, FileNotFoundError, RuntimeError, KeyError)


def cli_main(args: list[str] | None = None, run: bool = True) -> LightningCLI:
    """LightningCLI over any LightningModule / LightningDataModule named by `class_path` in the config."""
    os.environ.setdefault("WANDB_MODE", "offline")  # no account needed; WANDB_MODE=online to sync
    # omegaconf+ resolves ${trainer.default_root_dir} after command-line overrides; configs name keys
    # from their own root, so they work with and without the `fit` subcommand.
    set_parsing_settings(omegaconf_absolute_to_relative_paths=True)
    return LightningCLI(
        args=args,
        run=run,
        parser_kwargs={"parser_mode": "omegaconf+"},  # interpolate after command-line overrides
        save_config_kwargs={"overwrite": True},
        seed_everything_default=0,
        auto_configure_optimizers=False,
    )


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
    except USER_ERRORS as err:
        if os.environ.get("PV_DEBUG"):
            raise
        print(f"pv {command}: error: {clean_error(err)}\n(set PV_DEBUG=1 for the full traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
