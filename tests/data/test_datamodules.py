"""Data options: whole-image resize, EXIF orientation, subsets, the 70/30 split, resumable order, VOC split errors."""
import numpy as np
import pytest
import torch
from PIL import Image

from pv.data import ImageFolderDataModule, ImageTransform, VOCDataModule, load_image, voc_dataset
from pv.data.cache import source_paths
from pv.data.sampling import EpochShuffle, SeededSamples


def test_whole_image_resize_is_the_default_and_keeps_the_borders():
    array = np.zeros((40, 120, 3), np.uint8)
    array[:, :20] = 255  # a white object at the left edge, which a centre crop would cut away
    whole = ImageTransform(32)(Image.fromarray(array))
    crop = ImageTransform(32, resize="crop")(Image.fromarray(array))
    assert whole.shape == crop.shape == (3, 32, 32)
    assert whole[:, :, 0].min() > 0.9 and crop[:, :, 0].max() < 0.1
    with pytest.raises(ValueError, match="resize"):
        ImageTransform(32, resize="pad")


def test_exif_orientation_is_applied(tmp_path):
    image = Image.fromarray(np.zeros((60, 120, 3), np.uint8))  # stored 120 wide, 60 high
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees when shown
    image.save(tmp_path / "phone.jpg", exif=exif)
    assert load_image(tmp_path / "phone.jpg").size == (60, 120)


def test_image_folder_subset_is_seeded(tmp_path):
    for i in range(20):
        Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(tmp_path / f"{i:02d}.png")
    def files(seed):
        data = ImageFolderDataModule(root=str(tmp_path), subset_size=10, subset_seed=seed, val_fraction=0.2, image_size=8)
        data.setup("fit")
        return {p for s in (data.train_set, data.val_set) for p in source_paths(s)}
    assert len(files(0)) == 10 and files(0) == files(0) and files(0) != files(1)


def test_voc_70_30_split_of_trainval(voc_root):
    data = VOCDataModule(root=str(voc_root), train_split="trainval", val_fraction=0.3, split_seed=0, image_size=32)
    data.setup("fit")
    train, val = set(data.train_set.indices), set(data.val_set.indices)
    assert len(val) == round(8 * 0.3) and not train & val and len(train | val) == 8
    assert data.class_names[0] == "aeroplane" and data.num_classes == 20 == len(data.class_names)


def test_missing_voc_split_lists_the_splits_and_names_the_key(voc_root):
    with pytest.raises(FileNotFoundError, match=r"no split 'val'.*splits there are: trainval.*data\.init_args\.val_split"):
        VOCDataModule(root=str(voc_root), train_split="trainval", val_split="val", image_size=32).setup("fit")
    with pytest.raises(FileNotFoundError, match="--split"):
        voc_dataset(voc_root, ImageTransform(32), image_set="train", split_option="--split")


def test_epoch_order_and_augmentation_depend_only_on_seed_and_epoch():
    sampler = EpochShuffle(10, seed=3)
    sampler.set_epoch(4)
    first = list(sampler)
    resumed = EpochShuffle(10, seed=3, epoch=4)
    assert list(resumed) == first
    sampler.set_epoch(5)
    assert list(sampler) != first
    noisy = SeededSamples([None] * 3)
    noisy.dataset = type("Noise", (), {"__getitem__": lambda self, i: torch.rand(2), "__len__": lambda self: 3})()
    state = torch.get_rng_state()
    assert torch.equal(noisy[(1, 7)], noisy[(1, 7)]) and not torch.equal(noisy[(1, 7)], noisy[(1, 8)])
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random state is untouched
