"""`pv fit`: links, required values, one-line errors, safe checkpoints and resume."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml

from pv.cli import main
from pv.commands.fit import AtomicCheckpointIO, cli_main, readable_checkpoint, resolve_last
from pv.errors import CheckpointError

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
DEBUG = str(CONFIGS / "debug.yaml")


def test_decoder_in_channels_follow_the_encoder_layer(tmp_path):
    cli = cli_main(["--config", DEBUG, "--model.init_args.encoder.init_args.layer=layer3", f"--trainer.default_root_dir={tmp_path}"], run=False)
    assert cli.model.decoder.in_channels == cli.model.encoder.out_channels == 256


def test_typo_in_an_override_names_the_closest_key(capsys):
    assert main(["fit", "--config", DEBUG, "--trainer.max_epohcs=3"]) == 2
    err = capsys.readouterr().err
    assert "did you mean --trainer.max_epochs?" in err and len(err.strip().splitlines()) == 1
    assert main(["fit", "--config", DEBUG, "--model.init_args.decoder.init_args.widthz=[8]"]) == 2
    assert "--model.init_args.decoder.init_args.widths" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["voc_resnet50.yaml", "voc_resnet50_fast.yaml", "imagenet_subset.yaml"])
def test_paper_decoder_configs_require_the_classifier_checkpoint(name, capsys):
    assert main(["fit", "--config", str(CONFIGS / "decoder" / name), "--trainer.logger=false"]) == 2
    err = capsys.readouterr().err
    assert "--model.init_args.encoder.init_args.checkpoint=" in err and len(err.strip().splitlines()) == 1


def test_authors_settings_in_the_paper_config():
    config = yaml.safe_load((CONFIGS / "decoder" / "voc_resnet50.yaml").read_text())
    model, data = config["model"]["init_args"], config["data"]["init_args"]
    assert model["optimizer"]["init_args"]["lr"] == 1e-4 and config["trainer"]["max_epochs"] == 100
    assert (data["batch_size"], data["image_size"], data["resize"], data["flip"], data["random_crop"]) == (32, 224, "whole", False, False)
    assert (data["train_split"], data["val_fraction"]) == ("trainval", 0.3)
    imagenet = yaml.safe_load((CONFIGS / "decoder" / "imagenet_resnet50.yaml").read_text())
    assert imagenet["model"]["init_args"]["encoder"]["init_args"] == {"arch": "resnet50", "layer": "layer4", "weights": "IMAGENET1K_V2", "checkpoint": None}


def test_checkpoint_of_another_backbone_gives_one_message_with_the_flag(tmp_path, capsys):
    from pv import ClassifierModule
    from pv.models import Classifier

    module = ClassifierModule(Classifier("resnet18", num_classes=3, weights=None, class_names=["a", "b", "c"]))
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, tmp_path / "r18.ckpt")
    code = main(["fit", "--config", DEBUG, "--model.init_args.encoder.init_args.arch=resnet50",
                 f"--model.init_args.encoder.init_args.checkpoint={tmp_path / 'r18.ckpt'}"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "--model.init_args.encoder.init_args.arch=resnet18" in err


def test_atomic_checkpoint_io_leaves_the_old_file_when_saving_fails(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, path)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "elsewhere"))

    class Exploding:
        def __reduce__(self):
            raise OSError(28, "No space left on device")

    with pytest.raises(Exception):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "bad": Exploding()}, path)
    assert readable_checkpoint(path) is None
    assert torch.equal(torch.load(path, weights_only=True)["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left behind


def test_ckpt_path_last_skips_a_corrupt_last_checkpoint(tmp_path, capsys):
    good = tmp_path / "epoch=0.ckpt"
    torch.save({"state_dict": {}}, good)
    last = tmp_path / "last.ckpt"
    last.write_bytes(good.read_bytes()[:40])  # truncated by a kill
    os.utime(good, (1, 1))
    with pytest.warns(UserWarning, match="last.ckpt is unreadable.*resuming from .*epoch=0.ckpt"):
        assert resolve_last([tmp_path]) == good
    with pytest.raises(CheckpointError, match="no checkpoint"):
        resolve_last([tmp_path / "empty"])


def test_a_run_folder_is_not_overwritten_by_another_run(tmp_path, capsys):
    args = ["fit", "--config", DEBUG, f"--trainer.default_root_dir={tmp_path}", "--trainer.max_steps=1", "--trainer.limit_val_batches=0",
            "--trainer.enable_checkpointing=true"]  # fmt: skip
    assert main(args) == 0
    saved = (tmp_path / "config.yaml").read_text()
    assert list(tmp_path.rglob("*.ckpt"))
    assert main([*args, "--trainer.max_steps=2"]) == 2
    err = capsys.readouterr().err
    assert f"--config {tmp_path / 'config.yaml'} --ckpt_path last" in err
    assert (tmp_path / "config.yaml").read_text() == saved
