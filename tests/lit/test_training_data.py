"""Issue 20.1: checkpoints record what they trained on (`pv_training_data`), read by `pv.models.checkpoint.training_data`."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pv.cli import main
from pv.data import ImageFolderDataModule, VOCDataModule
from pv.data.datamodules import describe_training_data
from pv.errors import CheckpointError, ConfigError
from pv.models.checkpoint import TRAINING_DATA_KEY, files_sha256, training_data

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"


@pytest.fixture(scope="module")
def decoder_run(tmp_path_factory) -> Path:
    """`pv fit --config configs/debug/decoder.yaml` (the bundled photos, 64 px, one epoch); its run folder."""
    root = tmp_path_factory.mktemp("decoder_run")
    assert main(["fit", "--config", str(CONFIGS / "debug" / "decoder.yaml"), "--trainer.default_root_dir", str(root),
                 "--trainer.enable_progress_bar=false"]) == 0  # fmt: skip
    return root


def test_a_decoder_checkpoint_records_its_training_images(decoder_run):
    (checkpoint,) = (decoder_run / "checkpoints").glob("*.ckpt")
    record = training_data(checkpoint)
    trained = ["astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry"]  # QUICKSTART_IMAGES[:-2]
    assert record["dataset"] == "skimage.data" and record["files"] == [f"skimage.data.{name}" for name in trained]
    assert record["n_images"] == 6 and record["files_sha256"] == files_sha256(record["files"])
    assert set(record) == {"dataset", "root", "split", "seed", "n_images", "files_sha256", "files"}


def test_the_reader_returns_none_for_older_checkpoints_and_refuses_an_edited_list(tmp_path, decoder_run):
    (checkpoint,) = (decoder_run / "checkpoints").glob("*.ckpt")
    saved = torch.load(checkpoint, weights_only=False)
    saved[TRAINING_DATA_KEY]["files"] = saved[TRAINING_DATA_KEY]["files"][1:]  # one image dropped, digest kept
    torch.save(saved, tmp_path / "edited.ckpt")
    with pytest.raises(CheckpointError, match="edited.ckpt"):
        training_data(tmp_path / "edited.ckpt")
    del saved[TRAINING_DATA_KEY]
    torch.save(saved, tmp_path / "old.ckpt")
    assert training_data(tmp_path / "old.ckpt") is None


def test_voc_with_val_fraction_records_the_kept_ids_and_holds_out_the_rest(voc_root):
    data = VOCDataModule(root=str(voc_root), train_split="trainval", val_fraction=0.3, split_seed=0, image_size=32)
    record = data.training_data()
    held = [Path(p).stem for p in data.held_out().paths]
    every = (voc_root / "VOCdevkit" / "VOC2012" / "ImageSets" / "Main" / "trainval.txt").read_text().split()
    assert record["dataset"] == "VOC2012" and record["seed"] == 0 and record["root"] == str(voc_root.resolve())
    assert (len(record["files"]), len(held)) == (6, 2)  # round(8 * 0.3) held out
    assert not set(record["files"]) & set(held) and sorted(record["files"] + held) == sorted(every)
    assert [Path(data.val_set.dataset.paths[i]).stem for i in data.val_set.indices] == held  # validation is the held-out part
    assert describe_training_data(data) == record


@pytest.mark.parametrize("pair", ["voc_resnet50", "voc_resnet18"])
def test_the_paper_classifier_and_decoder_share_one_split_of_trainval(pair, voc_root):
    """M and its decoder train on the same 70% of VOC 2012 trainval, so the other 30% is new to both."""
    from pv.commands.analyze import load_datamodule

    classifier = load_datamodule(CONFIGS / "classifier" / f"{pair}.yaml", {"root": str(voc_root)})
    decoder = load_datamodule(CONFIGS / "decoder" / f"{pair}.yaml", {"root": str(voc_root)})
    assert classifier.training_data()["files"] == decoder.training_data()["files"]
    assert classifier.held_out().paths == decoder.held_out().paths
    assert (classifier.train_split, classifier.val_fraction) == ("trainval", 0.3)


def test_a_classifier_run_records_the_voc_ids(tmp_path, voc_root):
    assert main(["fit", "--config", str(CONFIGS / "debug" / "classifier.yaml"), "--trainer.default_root_dir", str(tmp_path),
                 "--data.init_args.root", str(voc_root), "--trainer.max_epochs=1", "--model.init_args.freeze_backbone_epochs=0"]) == 0  # fmt: skip
    record = training_data(tmp_path / "checkpoints" / "last.ckpt")
    every = (voc_root / "VOCdevkit" / "VOC2012" / "ImageSets" / "Main" / "trainval.txt").read_text().split()
    assert (record["dataset"], record["split"], record["seed"]) == ("VOC2012", "trainval", None)
    assert record["files"] == every


def write_images(folder: Path, count: int) -> None:
    folder.mkdir(parents=True)
    for k in range(count):
        Image.fromarray(np.full((8, 8, 3), k, dtype=np.uint8)).save(folder / f"img{k:02d}.png")


def test_image_folder_val_size_validates_outside_the_subset(tmp_path):
    """imagenet_subset: train on all `subset_size` images, validate on `val_size` others."""
    write_images(tmp_path / "images" / "sub", 12)
    data = ImageFolderDataModule(root=str(tmp_path / "images"), val_fraction=0.0, subset_size=8, val_size=3, image_size=8)
    data.setup()
    record = data.training_data()
    val = {Path(p).relative_to(tmp_path / "images").as_posix() for p in (data.val_set.dataset.paths[i] for i in data.val_set.indices)}
    assert len(record["files"]) == 8 and len(val) == 3 and not set(record["files"]) & val
    assert all(name.startswith("sub/img") for name in record["files"])
    whole = ImageFolderDataModule(root=str(tmp_path / "images"), val_root=str(tmp_path / "images"), subset_size=8, image_size=8)
    assert whole.training_data()["files"] == record["files"]  # the whole subset is trained on
    with pytest.raises(ConfigError, match="too few"):
        ImageFolderDataModule(root=str(tmp_path / "images"), val_fraction=0.0, subset_size=10, val_size=3, image_size=8).setup()
    with pytest.raises(ConfigError, match="val_size"):
        ImageFolderDataModule(root=str(tmp_path / "images"), val_fraction=0.05, subset_size=8, val_size=3)


def test_every_paper_config_on_voc_uses_the_one_split():
    """M's configs and every decoder config for M (fast one included) split VOC 2012 trainval the same way."""
    from tests.config_files import composed

    def split_of(name: str) -> tuple:
        data = composed(CONFIGS / name)["data"]["init_args"]
        data = data["source"]["init_args"] if "source" in data else data  # CachedDataModule
        return data["year"], data["train_split"], data["val_fraction"], data.get("split_seed", 0)

    names = ["classifier/voc_resnet50.yaml", "classifier/voc_resnet50_authors.yaml", "classifier/voc_resnet18.yaml", "decoder/voc_resnet50.yaml",
             "decoder/voc_resnet50_fast.yaml", "decoder/voc_resnet18.yaml", "decoder/imagenet_resnet50.yaml"]  # fmt: skip
    assert {name: split_of(name) for name in names} == {name: ("2012", "trainval", 0.3, 0) for name in names}


def test_analyze_heldout_needs_a_data_config_that_holds_out(tmp_path, voc_root, capsys):
    assert main(["analyze", "--checkpoint", str(tmp_path / "none.ckpt"), "--data", str(CONFIGS / "data" / "voc.yaml"), "--root", str(voc_root),
                 "--split", "heldout", "--out", str(tmp_path / "out")]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--split heldout needs a data config with val_fraction" in err
