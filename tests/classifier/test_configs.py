"""The shipped classifier configs instantiate, and `pv fit` on the debug config saves usable checkpoints."""
from __future__ import annotations

import pytest
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from pv import ClassifierModule
from pv.cli import cli_main
from pv.data import VOC_CLASSES, VOCDataModule
from pv.models import Classifier, FrozenEncoder

from .conftest import REPO

CONFIGS = REPO / "configs"


@pytest.mark.parametrize("data_args", [[], ["--data", str(CONFIGS / "data" / "voc.yaml")]])
def test_paper_config_instantiates(data_args, tmp_path):
    # No internet here: random init instead of the ImageNet weights the config asks for.
    cli = cli_main(["--config", str(CONFIGS / "classifier" / "voc_resnet50.yaml"), *data_args, "--trainer.logger=false",
                    "--model.init_args.model.init_args.weights=null", f"--trainer.default_root_dir={tmp_path}"], run=False)  # fmt: skip
    module, data = cli.model, cli.datamodule
    assert isinstance(module, ClassifierModule) and isinstance(data, VOCDataModule)
    config = module.model.config  # num_classes and class_names linked from the data module
    assert {k: config[k] for k in ("arch", "num_classes", "class_names")} == {"arch": "resnet50", "num_classes": 20, "class_names": list(VOC_CLASSES)}
    assert (module.threshold, module.freeze_backbone_epochs) == (0.5, 1)
    assert isinstance(module.configure_optimizers(), torch.optim.Adam)
    if data_args:  # configs/data/voc.yaml: VOC's official train/val
        assert (data.image_size, data.train_split, data.val_split, data.val_fraction, data.year) == (224, "train", "val", None, "2012")
    else:  # the paper's: the 70/30 split of trainval its decoder shares (issue 20)
        assert (data.image_size, data.train_split, data.val_fraction, data.split_seed, data.year) == (224, "trainval", 0.3, 0, "2012")
    (checkpointing,) = [c for c in cli.trainer.callbacks if isinstance(c, ModelCheckpoint)]
    assert (checkpointing.monitor, checkpointing.mode, checkpointing.save_last) == ("val/map", "max", True)


def test_paper_config_asks_for_imagenet_weights_and_wandb():
    import yaml

    config = yaml.safe_load((CONFIGS / "classifier" / "voc_resnet50.yaml").read_text())
    assert config["model"]["init_args"]["model"]["init_args"]["weights"] == "IMAGENET1K_V2"
    loggers = yaml.safe_load((CONFIGS / "classifier" / config["trainer"]["logger"]).read_text())  # the shared logger piece
    (wandb,) = [logger for logger in loggers if logger["class_path"].endswith("WandbLogger")]
    assert wandb["init_args"]["project"] == "pv"
    assert any(logger["class_path"].endswith("CSVLogger") for logger in loggers)  # metrics readable offline too


def test_fit_debug_config_saves_checkpoints_the_decoder_accepts(fit_run):
    checkpoints = sorted(p.name for p in (fit_run / "checkpoints").glob("*.ckpt"))
    assert "last.ckpt" in checkpoints and len(checkpoints) == 2  # best by val/map + last
    last = fit_run / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["epoch"] == 1
    classifier = Classifier.from_checkpoint(last)
    assert classifier.config["arch"] == "resnet18" and classifier.class_names == list(VOC_CLASSES)
    encoder = FrozenEncoder(arch="resnet18", layer="layer4", checkpoint=str(last))
    assert encoder(torch.rand(1, 3, 64, 64)).shape == (1, 512, 2, 2)
    with pytest.raises(ValueError, match="holds a resnet18 classifier"):
        FrozenEncoder(arch="resnet34", layer="layer4", checkpoint=str(last))


def test_paper_config_logs_and_checkpoints_under_the_given_root_dir(tmp_path):
    from pytorch_lightning.loggers import WandbLogger

    cli = cli_main(["--config", str(CONFIGS / "classifier" / "voc_resnet50.yaml"), "--model.init_args.model.init_args.weights=null",
                    f"--trainer.default_root_dir={tmp_path}"], run=False)  # fmt: skip
    (wandb,) = [logger for logger in cli.trainer.loggers if isinstance(logger, WandbLogger)]
    (checkpointing,) = [c for c in cli.trainer.callbacks if isinstance(c, ModelCheckpoint)]
    assert (wandb.save_dir, checkpointing.dirpath) == (str(tmp_path), str(tmp_path / "checkpoints"))
    assert checkpointing.filename == "epoch{epoch:02d}-map{val/map:.4f}"


def test_authors_schedule_config_beside_pvs_own(tmp_path):
    """Issue 20.4: classifier/voc_resnet50_authors.yaml: Adam 1e-3, early stopping (patience 5), no augmentation, the
    whole network from the first step, on the 70/30 split of trainval the paper's decoder trains on."""
    from pytorch_lightning.callbacks import EarlyStopping

    from pv.commands.analyze import load_datamodule

    cli = cli_main(["--config", str(CONFIGS / "classifier" / "voc_resnet50_authors.yaml"), "--trainer.logger=false",
                    "--model.init_args.model.init_args.weights=null", f"--trainer.default_root_dir={tmp_path}"], run=False)  # fmt: skip
    module, data = cli.model, cli.datamodule
    optimizer = module.configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.defaults["lr"] == 1e-3 and module.freeze_backbone_epochs == 0
    (stopping,) = [c for c in cli.trainer.callbacks if isinstance(c, EarlyStopping)]
    assert (stopping.monitor, stopping.patience) == ("val/map", 5)
    (checkpointing,) = [c for c in cli.trainer.callbacks if isinstance(c, ModelCheckpoint)]
    assert checkpointing.dirpath == str(tmp_path / "checkpoints") and checkpointing.monitor == "val/map"
    steps = [type(step).__name__ for step in data.train_transform.pipeline.transforms]
    assert steps == ["Resize", "CenterCrop"] and data.train_transform.resize == "whole" and data.batch_size == 64  # no augmentation
    decoder = load_datamodule(CONFIGS / "decoder" / "voc_resnet50.yaml", {})
    assert (data.train_split, data.val_fraction, data.split_seed) == (decoder.train_split, decoder.val_fraction, decoder.split_seed)
    assert data.class_names == list(VOC_CLASSES) and module.model.config["arch"] == "resnet50"
