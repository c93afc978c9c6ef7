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
from tests.config_files import composed

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
DEBUG = str(CONFIGS / "debug" / "decoder.yaml")


def test_decoder_in_channels_follow_the_encoder_layer(tmp_path):
    cli = cli_main(["--config", DEBUG, "--model.init_args.encoder.init_args.layer=layer3", f"--trainer.default_root_dir={tmp_path}"], run=False)
    assert cli.model.decoder.in_channels == cli.model.encoder.out_channels == 256


def test_decoder_in_channels_follow_a_timm_encoder_layer(tmp_path):
    """The link also covers zoo encoders torchvision does not know (EfficientNet-Lite0's default layer: 1280)."""
    cli = cli_main(["--config", DEBUG, "--model.init_args.encoder.init_args.arch=tf_efficientnet_lite0",
                    "--model.init_args.encoder.init_args.layer=null", f"--trainer.default_root_dir={tmp_path}"], run=False)  # fmt: skip
    assert cli.model.decoder.in_channels == cli.model.encoder.out_channels == 1280


def test_typo_in_an_override_names_the_closest_key(capsys):
    assert main(["fit", "--config", DEBUG, "--trainer.max_epohcs=3"]) == 2
    err = capsys.readouterr().err
    assert "did you mean --trainer.max_epochs?" in err and len(err.strip().splitlines()) == 1
    assert main(["fit", "--config", DEBUG, "--model.init_args.decoder.init_args.widthz=[8]"]) == 2
    assert "--model.init_args.decoder.init_args.widths" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["voc_resnet50.yaml", "voc_resnet50_fast.yaml", "imagenet_subset.yaml", "voc_resnet18.yaml"])
def test_paper_decoder_configs_require_the_classifier_checkpoint(name, capsys):
    assert main(["fit", "--config", str(CONFIGS / "decoder" / name), "--trainer.logger=false"]) == 2
    err = capsys.readouterr().err
    assert "--model.init_args.encoder.init_args.checkpoint=" in err and len(err.strip().splitlines()) == 1


def test_authors_settings_in_the_paper_config():
    config = composed(CONFIGS / "decoder" / "voc_resnet50.yaml")
    model, data = config["model"]["init_args"], config["data"]["init_args"]
    assert model["optimizer"]["init_args"]["lr"] == 1e-4 and config["trainer"]["max_epochs"] == 100
    assert (data["batch_size"], data["image_size"], data["resize"], data["flip"], data["random_crop"]) == (32, 224, "whole", False, False)
    assert (data["train_split"], data["val_fraction"]) == ("trainval", 0.3)
    assert model["decoder"]["init_args"] == {"widths": [512, 512, 256, 128, 64], "convs_per_block": [2, 2, 2, 1, 1], "upsample_kernel": 2, "negative_slope": 0.2}
    assert model["loss"]["init_args"] == {"weights": [0.2, 0.4, 0.4], "ssim_reduction": "sum"}
    imagenet = composed(CONFIGS / "decoder" / "imagenet_resnet50.yaml")
    assert imagenet["model"]["init_args"]["encoder"]["init_args"] == {"arch": "resnet50", "layer": "layer4", "weights": "IMAGENET1K_V2", "checkpoint": None}
    assert imagenet["model"]["init_args"]["decoder"] == model["decoder"] and imagenet["data"] == config["data"]


@pytest.mark.parametrize("name", ["voc_resnet50.yaml", "imagenet_subset.yaml", "imagenet_resnet50.yaml", "voc_resnet18.yaml"])
def test_print_config_of_the_paper_decoders_shows_leaky_relu_0_2(name, capsys):
    """Issue 20.2: the authors' decoder uses LeakyReLU(0.2) after every conv (their utils.py, make_decoder_model)."""
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(CONFIGS / "decoder" / name), "--print_config"])
    assert done.value.code == 0
    decoder = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]["decoder"]
    assert decoder["class_path"] == "pv.models.Decoder" and decoder["init_args"]["negative_slope"] == 0.2


def test_experiment_configs_include_the_shared_pieces_instead_of_repeating_them():
    """Issue 9.5: logger and callbacks are written once (configs/logger, configs/callbacks) and included."""
    for path in sorted(CONFIGS.rglob("*.yaml")):
        if "world" in path.name:
            continue  # the generated world's configs (CSV only, their own callbacks)
        text = yaml.safe_load(path.read_text())
        trainer = text.get("trainer") if isinstance(text, dict) else None
        if not trainer or trainer.get("logger") in (None, False):
            continue
        assert isinstance(trainer["logger"], str) and (path.parent / trainer["logger"]).is_file(), path
        assert "WandbLogger" not in path.read_text(), path
    assert (CONFIGS / "debug" / "decoder.yaml").is_file() and (CONFIGS / "debug" / "classifier.yaml").is_file()
    assert not (CONFIGS / "debug.yaml").exists() and not (CONFIGS / "classifier" / "debug.yaml").exists()


def test_included_pieces_follow_the_run_folder_under_the_fit_subcommand(tmp_path, capsys):
    """${....default_root_dir} in an included piece resolves to the command-line run folder, with `fit` too."""
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(CONFIGS / "decoder" / "voc_resnet50.yaml"), f"--trainer.default_root_dir={tmp_path}", "--print_config"])
    assert done.value.code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    wandb, csv = config["trainer"]["logger"]
    assert wandb["class_path"].endswith("WandbLogger") and csv["class_path"].endswith("CSVLogger")
    assert wandb["init_args"]["save_dir"] == csv["init_args"]["save_dir"] == wandb["init_args"]["name"] == str(tmp_path)
    assert config["trainer"]["callbacks"][0]["init_args"]["dirpath"] == f"{tmp_path}/checkpoints"


def test_resnet18_configs_pair_a_classifier_with_its_decoder(tmp_path):
    """Issue 11.4: a ResNet-18 M and its decoder for machines without a GPU; the decoder inverts that M's layer4."""
    classifier = composed(CONFIGS / "classifier" / "voc_resnet18.yaml")
    decoder = composed(CONFIGS / "decoder" / "voc_resnet18.yaml")
    assert classifier["model"]["init_args"]["model"]["init_args"]["arch"] == "resnet18"
    encoder = decoder["model"]["init_args"]["encoder"]["init_args"]
    assert (encoder["arch"], encoder["layer"], encoder["checkpoint"]) == ("resnet18", "layer4", "???")
    assert classifier["auto_precision"] is decoder["auto_precision"] is True  # bf16 only where the CPU runs it fast
    from tests.test_cli import random_classifier_checkpoint

    checkpoint = random_classifier_checkpoint("resnet18", tmp_path)
    cli = cli_main(["--config", str(CONFIGS / "decoder" / "voc_resnet18.yaml"), f"--model.init_args.encoder.init_args.checkpoint={checkpoint}",
                    f"--trainer.default_root_dir={tmp_path}", "--trainer.logger=false"], run=False)  # fmt: skip
    assert cli.model.decoder.in_channels == cli.model.encoder.out_channels == 512
    latent = cli.model.encoder(torch.rand(1, 3, 224, 224))
    assert cli.model.decoder(latent).shape == (1, 3, 224, 224)
    assert sum(p.numel() for p in cli.model.decoder.parameters()) < 5_000_000  # small enough for a CPU


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(["--data", str(CONFIGS / "data" / "voc.yaml"), "--data.init_args.root={tmp}/no_voc"], id="bad-data"),
        pytest.param(["--model.init_args.encoder.init_args.checkpoint={tmp}/missing.ckpt"], id="bad-weights"),
        pytest.param(["--data.init_args.image_size=48"], id="fails-in-sanity-check"),  # 48 px: decoder output 64 px
    ],
)
def test_a_failed_start_leaves_no_offline_wandb_run(failure, tmp_path, monkeypatch):
    """Issue 11.6: inputs are checked before W&B starts, and a start failing later (before its first training
    step) removes the offline run it began, so `wandb sync` uploads only real runs."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    args = ["fit", "--config", DEBUG, f"--trainer.logger={CONFIGS / 'logger' / 'wandb.yaml'}", f"--trainer.default_root_dir={tmp_path}",
            *[arg.format(tmp=tmp_path) for arg in failure]]  # fmt: skip
    try:
        assert main(args) == 2  # a user error, in one line
    except (ValueError, OSError):  # an error that keeps its traceback (e.g. met during the sanity check)
        pass
    assert not list(tmp_path.rglob("offline-run-*")) and not list(tmp_path.rglob("*.wandb"))


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
