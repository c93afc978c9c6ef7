"""Photo folders for ImageNet classifiers (pv.data.photos) and cached augmented views (pv.data.views)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pv.data.photos import PhotoFolderDataModule, PhotoTransform, holdout_split
from pv.data.views import RepeatedViews
from pv.errors import ConfigError


def photos(folder, count: int = 12, subfolders: bool = False):
    rng = np.random.default_rng(0)
    for i in range(count):
        path = folder / (f"c{i % 3}" if subfolders else "") / f"p{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40 + i, 50, 3), dtype=np.uint8)).save(path)
    return folder


def test_holdout_split_every_tenth_from_the_first():
    train, held = holdout_split(25, 10)
    assert held == [0, 10, 20] and train == [i for i in range(25) if i not in (0, 10, 20)]
    with pytest.raises(ConfigError, match="holdout_every"):
        holdout_split(25, 1)


def test_folder_split_labels_and_views(tmp_path):
    module = PhotoFolderDataModule(root=str(photos(tmp_path)), holdout_every=5, image_size=32, batch_size=4)
    module.setup("fit")
    assert [Path(p).name for p in module.val_set.paths] == ["p00.png", "p05.png", "p10.png"]
    assert len(module.train_set) == 9
    sample = module.val_set[1]
    assert sample["image"].shape == (3, 32, 32) and int(sample["label"]) == 5  # file order = class index
    assert int(module.train_set[0]["label"]) == 1
    assert 0 <= float(module.train_set[0]["image"].min()) and float(module.train_set[0]["image"].max()) <= 1
    views = RepeatedViews(module.train_set, views=2, seed=3)
    assert len(views) == 18 and views.paths[9].endswith("p01.png#view1")
    assert torch.equal(views[4]["image"], views[4]["image"])  # seeded: the same view every time
    assert not torch.equal(views[0]["image"], views[9]["image"])  # two views of one photo differ


def test_folder_labels_and_errors(tmp_path):
    module = PhotoFolderDataModule(root=str(photos(tmp_path, subfolders=True)), labels="folder", image_size=16)
    paths, labels = module.files()
    assert [int(labels[i]) for i in range(len(paths))] == [int(p.parent.name[1]) for p in paths]
    with pytest.raises(ConfigError, match="labels"):
        PhotoFolderDataModule(root=str(tmp_path), labels="name")
    with pytest.raises(ConfigError, match="dataset"):
        PhotoFolderDataModule(root=str(tmp_path), dataset="imagenet")


def test_eval_transform_is_resize_and_centre_crop():
    image = Image.fromarray(np.tile(np.arange(256, dtype=np.uint8)[None, :, None], (128, 1, 3)))  # 256 wide, 128 high
    out = PhotoTransform(64, train=False, crop_pct=0.5)(image)
    assert out.shape == (3, 64, 64)
    assert abs(float(out[0, 0].mean()) - 0.5) < 0.05  # the middle of the horizontal ramp
