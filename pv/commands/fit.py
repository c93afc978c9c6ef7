"""`pv fit` (and validate / test / predict): Lightning's CLI with pv's links, checks and safe checkpoints.

- Links (before instantiation): the decoder's `in_channels` follows the encoder's layer; a classifier's
  `num_classes` and `class_names` follow the data module's class names. They are set on the parsed config
  in `before_instantiate_classes`, not with `LightningCLI.link_arguments`: jsonargparse 4.53 no longer
  applies parse-time links whose target is inside a nested subclass's init_args
  (`model.init_args.model.init_args.num_classes`, `model.init_args.decoder.init_args.in_channels`).
- Configs are composed from shared pieces (`trainer: {logger: ../logger/wandb.yaml}`, callbacks, the
  authors' decoder and loss, data), included by path relative to the including file. `omegaconf+`
  resolves `${...}` after command-line overrides; with `omegaconf_absolute_to_relative_paths` an
  absolute `${trainer.default_root_dir}` is rewritten relative to the file it is written in, so it works
  with and without the `fit` subcommand, and an included piece names the key relative to where it lands
  (`${....default_root_dir}` from `trainer.logger[i].init_args`).
- Inputs are checked before any logger starts (data, required values, the encoder checkpoint); a start
  that still fails before its first training step removes the offline W&B run it began.
- Checkpoints are written to a temporary file beside the target and renamed; `--ckpt_path last`
  resumes from the newest readable checkpoint.
- A run's `config.yaml` records the W&B run id; `pv fit --config runs/X/config.yaml --ckpt_path last`
  resumes that run (same W&B run) and is the only way its config is rewritten.
"""
from __future__ import annotations

import difflib
from collections import OrderedDict
import os
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

import torch
from jsonargparse import ArgumentError, Namespace, set_parsing_settings
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningCLI, SaveConfigCallback
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from pv.atomic import atomic_path
from pv.errors import CheckpointError, PVError

REQUIRED = "???"  # a config value the user must give (OmegaConf's "missing" marker)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Saves each checkpoint to a temporary file in its own folder, then renames it over the target.

    A kill or a full disk during the save leaves the previous checkpoint intact, wherever TMPDIR is.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)


def readable_checkpoint(path: Path) -> str | None:
    """None when `path` is a complete torch checkpoint (zip with intact CRCs), else why not. Runs no pickle."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            if bad is not None:
                return f"corrupt member {bad}"
            if not any(name.endswith("data.pkl") for name in archive.namelist()):
                return "not a torch checkpoint"
    except (OSError, zipfile.BadZipFile) as err:
        return str(err) or type(err).__name__
    return None


def resolve_last(folders: list[Path]) -> Path:
    """`--ckpt_path last`: last.ckpt (newest) when readable, else the newest readable checkpoint (said)."""
    found = sorted({p for folder in folders if folder.is_dir() for p in folder.glob("*.ckpt")}, key=lambda p: p.stat().st_mtime, reverse=True)
    if not found:
        where = ", ".join(str(f) for f in folders) or "the checkpoint folder"
        raise CheckpointError(f"--ckpt_path last: no checkpoint in {where}; drop --ckpt_path to start a new run, or resume with "
                              "pv fit --config <run folder>/config.yaml --ckpt_path last")  # fmt: skip
    lasts = [p for p in found if p.name.startswith("last")]
    refused = []
    for path in lasts + [p for p in found if p not in lasts]:
        problem = readable_checkpoint(path)
        if problem is None:
            if refused:
                rank_zero_warn(f"pv fit: {'; '.join(refused)}: resuming from {path}, the newest readable checkpoint")
            return path
        refused.append(f"{path} is unreadable ({problem})")
    raise CheckpointError(f"--ckpt_path last: no readable checkpoint ({'; '.join(refused)})")


def encoder_channels(encoder: Namespace | dict | None) -> int | None:
    """Channels of the configured FrozenEncoder's latent, built without weights (on the meta device for torchvision)."""
    from pv.models.classifier import HEAD_NAMES, truncate
    from pv.models.weights import build_torchvision_model

    init = dict((encoder or {}).get("init_args") or {})
    arch, layer = init.get("arch", "resnet50"), init.get("layer", "layer4")
    try:
        with torch.device("meta"):
            net = build_torchvision_model(arch, None)
            children = list(net.named_children())
            cut = next((i for i, (name, _) in enumerate(children) if name in HEAD_NAMES), len(children))
            body = truncate(torch.nn.Sequential(OrderedDict(children[:cut])), layer)
            return int(body(torch.zeros(1, 3, 64, 64)).shape[1])
    except Exception:  # not a torchvision arch (timm, a ViT) or an unknown layer
        pass
    try:  # build it with random weights, leaving the random generator as it was
        from pv.models import FrozenEncoder

        with torch.random.fork_rng():
            return int(FrozenEncoder(arch=arch, layer=init.get("layer"), weights=None).out_channels)
    except Exception:  # an unknown arch or layer: the encoder's own constructor names the problem
        return None


def data_class_names(data: Namespace | dict | None) -> list[str] | None:
    """The class names a data module declares (class attribute `class_names`), or None."""
    import importlib

    class_path = (data or {}).get("class_path") if data is not None else None
    if not class_path:
        return None
    given = ((data or {}).get("init_args") or {}).get("class_names")
    if given:
        return list(given)
    given = (data.get("init_args") or {}).get("class_names")  # e.g. the generated world's VOCDataModule
    if given:
        return list(given)
    module, _, name = class_path.rpartition(".")
    try:
        names = getattr(importlib.import_module(module), name).__dict__.get("class_names")
    except (ImportError, AttributeError):
        return None
    return list(names) if names else None


def closest_key(bad: str, candidates: list[str]) -> str | None:
    match = difflib.get_close_matches(bad, candidates, n=1, cutoff=0.6)
    return match[0] if match else None


def flat_keys(value: Any, prefix: str = "") -> list[str]:
    """Dotted keys of a nested config (dicts only), e.g. model.init_args.decoder.init_args.widths."""
    if not isinstance(value, dict):
        return []
    keys = []
    for key, child in value.items():
        dotted = f"{prefix}{key}"
        keys.append(dotted)
        keys += flat_keys(child, dotted + ".")
    return keys


class RunConfig(SaveConfigCallback):
    """Saves `config.yaml` in the run folder with the W&B run id, so resuming continues the same W&B run."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and trainer.is_global_zero:
                set_wandb_id(self.config, logger.experiment.id)
        super().setup(trainer, pl_module, stage)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        """Finish W&B runs when the run ends, so the run file is complete once `pv fit` returns (not later, at exit)."""
        super().teardown(trainer, pl_module, stage)
        for logger in trainer.loggers:
            run = getattr(logger, "_experiment", None) if isinstance(logger, WandbLogger) else None
            if run is not None and trainer.is_global_zero:
                run.finish()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        """A new run that failed before its first training step leaves no offline W&B run behind."""
        if trainer.global_step > 0 or self.config.get("ckpt_path") or not trainer.is_global_zero:  # trained, resumed: keep
            return
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                remove_offline_run(logger)


def remove_offline_run(logger: WandbLogger) -> None:
    """Finish and delete the logger's offline W&B run (`wandb sync` would upload it); online runs stay."""
    run = getattr(logger, "_experiment", None)  # None: the run never started
    if run is None or not getattr(run, "offline", False):
        return
    folder = Path(run.dir).parent  # <save_dir>/wandb/offline-run-<time>-<id>
    run.finish(exit_code=1)
    logger._experiment = None
    shutil.rmtree(folder, ignore_errors=True)
    for link in folder.parent.iterdir() if folder.parent.is_dir() else []:
        if link.is_symlink() and not link.exists():  # latest-run, debug.log pointing into the removed run
            link.unlink()
    rank_zero_info(f"pv fit: removed the offline W&B run {folder} (this start failed before its first training step)")


def set_wandb_id(config: Namespace, run_id: str) -> None:
    loggers = config.get("trainer.logger")
    for entry in loggers if isinstance(loggers, list) else [loggers]:
        if isinstance(entry, Namespace) and str(entry.get("class_path", "")).endswith("WandbLogger"):
            entry["init_args.id"] = run_id


class PVLightningCLI(LightningCLI):
    """LightningCLI with pv's links and checks (see the module docstring)."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--auto_precision", type=bool, default=False,
                            help="bf16-mixed + channels_last where the device runs bf16 fast (AMX / AVX-512 BF16 CPUs, bf16 GPUs), else 32-true")  # fmt: skip

    def _config(self) -> Namespace:
        return self.config[self.subcommand] if self.subcommand else self.config

    def before_instantiate_classes(self) -> None:
        config = self._config()
        missing = [key for key in config.keys() if isinstance(config.get(key), str) and config.get(key) == REQUIRED]
        if missing:
            raise PVError(f"{missing[0]} is required by this config ({REQUIRED}): give it with --{missing[0]}=VALUE")
        self.check_encoder_checkpoint(config)
        link_class_names(config)
        link_decoder_channels(config)
        if config.get("auto_precision"):
            config["trainer.precision"] = auto_precision(config.get("trainer.accelerator") or "auto")
            channels = "model.init_args.channels_last"
            if config.get(channels) is not None:
                config[channels] = "auto"

    @staticmethod
    def check_encoder_checkpoint(config: Namespace) -> None:
        """The encoder's arch must match its classifier checkpoint: one message with the exact flags to change."""
        checkpoint, arch = config.get("model.init_args.encoder.init_args.checkpoint"), config.get("model.init_args.encoder.init_args.arch")
        if not checkpoint or str(checkpoint).lower() in ("none", "null"):
            return
        from pv.models.classifier import load_checkpoint

        saved = load_checkpoint(checkpoint).get("classifier_config")
        if not saved:
            raise CheckpointError(f"{checkpoint} is not a pv classifier checkpoint (no 'classifier_config'; was it a decoder?): "
                                  "give the classifier M's checkpoint with --model.init_args.encoder.init_args.checkpoint=PATH")  # fmt: skip
        if arch and saved.get("arch") != arch:
            raise PVError(
                f"{checkpoint} holds a {saved.get('arch')} classifier but the encoder is {arch}: add "
                f"--model.init_args.encoder.init_args.arch={saved.get('arch')} (the decoder's in_channels follows the encoder)"
            )

    def before_fit(self) -> None:
        """Check data and the run folder before the logger starts a (W&B) run; resolve --ckpt_path last."""
        config = self.config_init[self.subcommand]
        self.datamodule.prepare_data()
        self.datamodule.setup("fit")
        folders = [Path(c.dirpath) for c in self.trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint) and c.dirpath]
        folders.append(Path(self.trainer.default_root_dir) / "checkpoints")
        if config.get("ckpt_path") == "last":
            config["ckpt_path"] = str(resolve_last(folders))
        self.check_run_folder(resuming=config.get("ckpt_path") is not None)

    def check_run_folder(self, resuming: bool) -> None:
        """A run's config.yaml is never overwritten by another run (only by resuming that run)."""
        if self.trainer.fast_dev_run or not self.save_config_callback:
            return
        folder = Path(self.trainer.log_dir or self.trainer.default_root_dir)
        saved = folder / "config.yaml"
        started = saved.is_file() and any(folder.rglob("*.ckpt"))
        if started and not resuming:
            raise PVError(
                f"{folder} holds another run (config.yaml and checkpoints): resume it with pv fit --config {saved} --ckpt_path last, "
                f"or start a new run with --trainer.default_root_dir=NEW_FOLDER"
            )


def link_decoder_channels(config: Namespace) -> None:
    """The decoder's `in_channels` follow the encoder's layer (computed without its weights)."""
    if not isinstance(config.get("model.init_args.decoder"), Namespace) or not isinstance(config.get("model.init_args.encoder"), Namespace):
        return
    channels = encoder_channels(config.get("model.init_args.encoder"))
    if channels is not None:  # else the encoder's own constructor names the bad arch or layer
        config["model.init_args.decoder.init_args.in_channels"] = channels


def link_class_names(config: Namespace) -> None:
    """A classifier's `class_names` and `num_classes` follow the data module's class names unless the config sets them.

    (Set here rather than with `link_arguments`: see the module docstring.)
    """
    key = "model.init_args.model.init_args"
    names = data_class_names(config.get("data"))
    if not names or not isinstance(config.get(key), Namespace):
        return
    given = config.get(f"{key}.class_names")
    if given and list(given) != names:
        raise PVError(f"{key}.class_names {list(given)} differ from the data module's {names}: leave them out of the config, pv fit links them")
    config[f"{key}.class_names"] = names
    config[f"{key}.num_classes"] = len(names)


def auto_precision(accelerator: str) -> str:
    """Trainer precision for `auto_precision: true`, using pv.models.precision when present; says what it picked."""
    device = torch.device("cuda" if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available() else "cpu")
    try:
        from pv.models import precision as precision_module

        chosen = precision_module.resolve_precision("auto", device)
        reason = getattr(precision_module, "describe_precision", lambda *a: "")("auto", device)
    except ImportError:
        chosen, reason = ("bf16" if cpu_has_fast_bf16() or device.type == "cuda" else "32"), ""
    picked = "bf16-mixed" if str(chosen).startswith("bf16") else "32-true"
    rank_zero_info(f"pv fit: auto_precision picked {picked} on {device.type}{': ' + str(reason) if reason else ''}")
    return picked


def cpu_has_fast_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"\b(amx_bf16|avx512_bf16)\b", flags))


def one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def cli_main(args: list[str] | None = None, run: bool = True) -> LightningCLI:
    """LightningCLI over any LightningModule / LightningDataModule named by `class_path` in the config.

    Parse errors and Lightning configuration errors raise `PVError` (one line; a mistyped key names
    the closest valid one); anything else keeps its traceback.
    """
    os.environ.setdefault("WANDB_MODE", "offline")  # no account needed; WANDB_MODE=online to sync
    # omegaconf+ resolves ${trainer.default_root_dir} after command-line overrides; configs name keys
    # from their own root, so they work with and without the `fit` subcommand.
    set_parsing_settings(omegaconf_absolute_to_relative_paths=True)
    try:
        return PVLightningCLI(
            args=args,
            run=run,
            parser_kwargs={"parser_mode": "omegaconf+", "exit_on_error": False, "allow_abbrev": False},
            save_config_callback=RunConfig,
            save_config_kwargs={"overwrite": True},  # RunConfig's checks decide; see PVLightningCLI.check_run_folder
            seed_everything_default=0,
            auto_configure_optimizers=False,
        )
    except ArgumentError as err:
        raise PVError(parse_error_line(err, args)) from None
    except MisconfigurationException as err:
        raise PVError(one_line(err)) from None
    except ValueError as err:
        if "Does not validate against any of the Union subtypes" not in str(err):
            raise
        raise PVError(innermost_error(str(err))) from err


def innermost_error(text: str) -> str:
    """The message a class raised, from jsonargparse's nested "Does not validate against any of..." report."""
    noise = ("Does not validate", "Expected a <class 'NoneType'>", "Subtypes:", "Errors:", "Given value")
    bullets = [line.strip()[2:] for line in text.splitlines() if line.strip().startswith("- ")]
    useful = [b for b in bullets if not b.startswith(noise)]
    return one_line(useful[0] if useful else text.splitlines()[0])


def parse_error_line(err: BaseException, args: list[str] | None) -> str:
    """One line for a parse error; an unknown key gets the closest valid key."""
    text = str(err)
    bad = None
    if match := re.search(r"unrecognized arguments:.*?--([\w.\-]+)", text, re.IGNORECASE):
        bad = match.group(1)
    elif (match := re.search(r"NestedArg\(key='([\w.\-]+)'", text)) and (parent := re.match(r'\s*Parser key "([\w.]+)"', text)):
        bad = f"{parent.group(1)}.init_args.{match.group(1)}"
    elif match := re.search(r"Key '([\w.\-]+)' is not expected|No action for key \"?([\w.\-]+)", text):
        bad = match.group(1) or match.group(2)
    if bad:
        near = closest_key(bad, known_keys(args))
        hint = f"; did you mean --{near}?" if near else ""
        return f"unknown option --{bad}{hint} (pv fit --help lists the options)"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("Parser key", "Does not validate", "Subtypes:", "Errors:", "- Expected a <class 'NoneType'>", "Given value"))]
    return " ".join((useful or lines or [type(err).__name__])[-2:]).lstrip("- ")


def known_keys(args: list[str] | None) -> list[str]:
    """Dotted keys of the --config files given, and the Trainer's options (candidates for a typo)."""
    import sys

    import yaml

    keys: list[str] = []
    argv = list(sys.argv[1:] if args is None else args)
    for flag, value in zip(argv, argv[1:] + [""]):
        if flag == "--config" and Path(value).is_file():
            keys += flat_keys(yaml.safe_load(Path(value).read_text()) or {})
        elif flag.startswith("--config="):
            path = Path(flag.split("=", 1)[1])
            keys += flat_keys(yaml.safe_load(path.read_text()) or {}) if path.is_file() else []
    return keys + TRAINER_KEYS + ["model", "data", "ckpt_path", "seed_everything", "auto_precision"]


def _trainer_keys() -> list[str]:
    import inspect

    from pytorch_lightning import Trainer

    return [f"trainer.{name}" for name in inspect.signature(Trainer.__init__).parameters if name != "self"]


TRAINER_KEYS = _trainer_keys()
