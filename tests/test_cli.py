import errno
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pv.cli import cli_main, main
from pv.errors import PVError

REPO = Path(__file__).resolve().parents[1]
DEBUG = str(REPO / "configs" / "debug" / "decoder.yaml")


def shipped_configs() -> list[Path]:
    return sorted(p for p in (REPO / "configs").rglob("*.yaml") if "model" in (yaml.safe_load(p.read_text()) or {}))


def test_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "fit" in out and "explain" in out and "survey" in out


def test_fast_dev_run_in_process(tmp_path):
    cli = cli_main(["fit", "--config", DEBUG, "--trainer.fast_dev_run=true", f"--trainer.default_root_dir={tmp_path}"])
    assert cli.trainer.global_step == 1


@pytest.mark.parametrize("config", shipped_configs(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_config_parses_and_instantiates(config, tmp_path):
    """Downloads are impossible here, so pretrained weights are overridden; a required classifier checkpoint
    is a random-init one of the config's arch. No data is read (instantiation only), so no photos are needed.
    The configured loggers are built (no W&B run starts before fit): each writes under the run folder, and a
    config that logs to W&B also writes the metrics to a CSV there (issue 11.6)."""
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.loggers import CSVLogger, WandbLogger

    text = yaml.safe_load(config.read_text())
    overrides = [f"--trainer.default_root_dir={tmp_path}"]
    model_args = text["model"]["init_args"]
    for part in ("encoder", "model"):
        if part in model_args and "weights" in model_args[part].get("init_args", {}):
            overrides.append(f"--model.init_args.{part}.init_args.weights=null")
    encoder = model_args.get("encoder", {}).get("init_args", {})
    if encoder.get("checkpoint"):  # M's checkpoint (required by the paper configs)
        overrides.append(f"--model.init_args.encoder.init_args.checkpoint={random_classifier_checkpoint(encoder['arch'], tmp_path)}")
    data = text["data"]
    if isinstance(data, str):  # a data-module config file, relative to the config
        data = yaml.safe_load((config.parent / data).read_text())
    if "root" in data.get("init_args", {}):
        overrides.append(f"--data.init_args.root={tmp_path}")
    if "source" in data.get("init_args", {}):
        overrides += [f"--data.init_args.source.init_args.root={tmp_path}", f"--data.init_args.cache_dir={tmp_path}"]
    if model_args.get("compile"):
        overrides.append("--model.init_args.compile=false")  # compiling is lazy but slow to set up on CPU
    cli = cli_main(["--config", str(config), *overrides], run=False)
    assert cli.model is not None and cli.datamodule is not None
    loggers = cli.trainer.loggers
    assert all(Path(logger.save_dir) == tmp_path for logger in loggers), [(type(x).__name__, x.save_dir) for x in loggers]
    if any(isinstance(logger, WandbLogger) for logger in loggers):
        assert any(isinstance(logger, CSVLogger) for logger in loggers), "W&B without a CSV beside the run"
    for callback in cli.trainer.callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.dirpath:
            assert Path(callback.dirpath).parent == tmp_path


def random_classifier_checkpoint(arch: str, folder: Path) -> Path:
    """A randomly initialised pv classifier checkpoint of `arch` (what `pv fit` on a classifier config saves)."""
    import torch

    from pv import ClassifierModule
    from pv.models import Classifier

    module = ClassifierModule(Classifier(arch, num_classes=3, weights=None, class_names=["a", "b", "c"]))
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, folder / "classifier.ckpt")
    return folder / "classifier.ckpt"


def test_bad_config_values_give_one_line_errors(capsys):
    code = main(["fit", "--config", DEBUG, "--model.init_args.loss.init_args.weights=[0,0,0]"])
    err = capsys.readouterr().err
    assert code == 2 and "loss weights must not all be zero" in err and "Traceback" not in err
    code = main(["fit", "--config", DEBUG, "--model.init_args.encoder.init_args.layer=layer7"])
    err = capsys.readouterr().err
    assert code == 2 and "Layer 'layer7' not found" in err and "layer4.1" in err


def test_checkpoint_of_another_architecture_is_rejected(tmp_path, capsys):
    cli = cli_main(["fit", "--config", DEBUG, "--trainer.fast_dev_run=true", f"--trainer.default_root_dir={tmp_path}"])
    path = tmp_path / "decoder.ckpt"
    cli.trainer.save_checkpoint(path)
    code = main(["fit", "--config", DEBUG, f"--model.init_args.encoder.init_args.checkpoint={path}"])
    assert code == 2 and "not a pv classifier checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize(
    "error, one_line",
    [
        (PVError("Checkpoint x.ckpt does not exist\nsecond line"), "pv featvis: error: Checkpoint x.ckpt does not exist second line"),
        (OSError(errno.ENOSPC, "No space left on device", "/out/fig.png"), "pv featvis: error: cannot write /out/fig.png: No space left on device"),
        (ValueError("a bug"), None),
        (KeyError("a bug"), None),
        (RuntimeError("CUDA out of memory"), None),
    ],
)
def test_only_user_errors_are_one_line(error, one_line, monkeypatch, capsys):
    """Issue 9.6: PVError (and environment OS errors) print one line with exit 2; anything else keeps its traceback."""
    import pv.commands.featvis

    def fail(argv):
        raise error

    monkeypatch.setattr(pv.commands.featvis, "main", fail)
    if one_line is None:
        with pytest.raises(type(error)):
            main(["featvis"])
        return
    assert main(["featvis"]) == 2
    assert capsys.readouterr().err == one_line + "\n"


def test_usage_errors_are_one_line(capsys):
    assert main(["explain", "--images", "x", "--out", "y", "--topk", "0"]) == 2
    err = capsys.readouterr().err
    assert err == "pv explain: error: argument --topk: must be >= 1, got 0 (see pv explain --help)\n"
    assert main(["featvis", "--out", "o", "--no-such-flag"]) == 2
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err


def test_commands_live_in_pv_commands():
    """Issue 9.1: one module per command; pv.explain holds no argparse."""
    from pv.cli import COMMANDS

    assert all(module.startswith(("pv.commands.", "pv.survey.")) for module, _, _ in COMMANDS.values())
    for path in (REPO / "pv" / "explain").glob("*.py"):
        assert "import argparse" not in path.read_text(), path


def test_console_script_help():
    result = subprocess.run([sys.executable, "-m", "pv.cli", "fit", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "--ckpt_path" in result.stdout and "--print_config" in result.stdout
