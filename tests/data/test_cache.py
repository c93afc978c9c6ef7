import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from pv import DecoderModule
from pv.data import CachedDataModule, ImageFolderDataModule, cache_latents
from pv.data.cache import random_crops
from pv.models import Decoder, FrozenEncoder


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(10):
        Image.fromarray(rng.integers(0, 255, (48, 60, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    return tmp_path


def test_cache_round_trip_and_device_augmentation(folder, tmp_path):
    source = ImageFolderDataModule(root=str(folder), val_fraction=0.2, image_size=32, batch_size=4)
    data = CachedDataModule(source, cache_dir=str(tmp_path / "cache"), cache_size=40, num_workers=0)
    data.prepare_data()
    data.setup("fit")
    images = np.load(tmp_path / "cache" / "train_40px" / "images.npy", mmap_mode="r")
    assert images.shape == (8, 3, 40, 40) and images.dtype == np.uint8
    batch = next(iter(data.val_dataloader()))
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (2, 3, 40, 40)
    out = data.on_after_batch_transfer(dict(batch), 0)  # no trainer: evaluation -> centre crop
    assert out["image"].shape == (2, 3, 32, 32) and out["image"].dtype == torch.float32
    assert torch.allclose(out["image"], batch["image"][..., 4:36, 4:36].float() / 255)
    # the cache holds what the uncached pipeline gives at cache_size, for the same held-out files
    reference = ImageFolderDataModule(root=str(folder), val_fraction=0.2, image_size=40, batch_size=4)
    reference.setup("fit")
    direct = reference.val_set[0]["image"] * 255
    assert (direct - batch["image"][0].float()).abs().max() <= 1
    assert source.train_set is None  # the wrapped data module was not modified


def test_random_crops_differ_per_image_and_come_from_the_image():
    images = torch.arange(2 * 1 * 10 * 10).view(2, 1, 10, 10).repeat(8, 1, 1, 1)
    torch.manual_seed(0)
    crops = random_crops(images, 4)
    assert crops.shape == (16, 1, 4, 4)
    corners = {int(c[0, 0, 0]) % 100 for c in crops}
    assert len(corners) > 1
    for crop, image in zip(crops, images):
        r, c = divmod(int(crop[0, 0, 0]) % 100, 10)
        assert torch.equal(crop, image[:, r : r + 4, c : c + 4])


def test_cached_latents_feed_training(folder, tmp_path):
    torch.manual_seed(0)
    source = ImageFolderDataModule(root=str(folder), val_fraction=0.2, image_size=64, batch_size=4)
    data = CachedDataModule(source, cache_dir=str(tmp_path / "cache"), flip=False, random_crop=False, use_latents=True, num_workers=0)
    encoder = FrozenEncoder("resnet18", "layer4", weights=None)
    data.prepare_data()
    cache_latents(data.split_dir("train"), encoder, 64)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert batch["latent"].shape == (4, 512, 2, 2)
    with torch.no_grad():
        expected = encoder(batch["image"].float() / 255)
    assert torch.allclose(batch["latent"].float(), expected, rtol=1e-2, atol=1e-2 * expected.abs().max().item())
    module = DecoderModule(encoder, Decoder(512, (8, 8, 8, 8, 8)))
    trainer = pl.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=1, accelerator="cpu")
    trainer.fit(module, data)
    assert trainer.global_step == 2


def test_latents_require_unaugmented_batches(folder, tmp_path):
    source = ImageFolderDataModule(root=str(folder), image_size=32)
    with pytest.raises(ValueError, match="use_latents needs un-augmented"):
        CachedDataModule(source, cache_dir=str(tmp_path), use_latents=True)
    with pytest.raises(ValueError, match="cache_size"):
        CachedDataModule(source, cache_dir=str(tmp_path), cache_size=16)


def test_stale_cache_of_other_files_is_rebuilt(folder, tmp_path):
    def cached_train_images(root) -> np.ndarray:
        source = ImageFolderDataModule(root=str(root), val_fraction=0.2, image_size=32, batch_size=4)
        data = CachedDataModule(source, cache_dir=str(tmp_path / "cache"), num_workers=0)
        data.prepare_data()
        return np.load(data.split_dir("train") / "images.npy")

    first = cached_train_images(folder)
    again = cached_train_images(folder)  # same files: the cache is reused as it is
    assert np.array_equal(first, again)
    other = tmp_path / "other"
    other.mkdir()
    for i in range(5):
        Image.fromarray(np.full((40, 40, 3), 10 * i, dtype=np.uint8)).save(other / f"{i}.png")
    rebuilt = cached_train_images(other)  # same cache_dir, other images: never the stale cache
    assert rebuilt.shape[0] == 4 and set(np.unique(rebuilt)) <= {0, 10, 20, 30, 40}


def test_latents_of_another_encoder_are_rejected(folder, tmp_path):
    source = ImageFolderDataModule(root=str(folder), val_fraction=0.2, image_size=64, batch_size=4)
    data = CachedDataModule(source, cache_dir=str(tmp_path / "cache"), flip=False, random_crop=False, use_latents=True, num_workers=0)
    data.prepare_data()
    cache_latents(data.split_dir("train"), FrozenEncoder("resnet18", "layer3", weights=None), 64)
    module = DecoderModule(FrozenEncoder("resnet18", "layer4", weights=None), Decoder(512, (8, 8, 8, 8, 8)))
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    with pytest.raises(ValueError, match="holds latents of .*layer3.* but the model's encoder is .*layer4"):
        trainer.fit(module, data)


def test_build_latents_computes_them_with_the_models_encoder_and_redoes_them_for_other_weights(folder, tmp_path):
    source = ImageFolderDataModule(root=str(folder), val_fraction=0.2, image_size=64, batch_size=4)

    def fit(encoder: FrozenEncoder) -> np.ndarray:
        data = CachedDataModule(source, cache_dir=str(tmp_path / "cache"), flip=False, random_crop=False, use_latents=True,
                                build_latents=True, num_workers=0)
        data.prepare_data()
        data.setup("fit")  # no trainer yet (pv fit checks the data early): no latents needed, none built
        assert "latent" not in next(iter(data.train_dataloader()))
        module = DecoderModule(encoder, Decoder(512, (8, 8, 8, 8, 8)))
        trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, limit_val_batches=1, accelerator="cpu")
        trainer.fit(module, data)
        latents = np.load(data.split_dir("train") / "latents.npy")
        images = torch.from_numpy(np.load(data.split_dir("train") / "images.npy")).float() / 255
        with torch.no_grad():
            expected = encoder(images)
        assert np.allclose(latents, expected.numpy(), rtol=1e-2, atol=1e-2 * expected.abs().max().item())
        return latents

    torch.manual_seed(0)
    first = fit(FrozenEncoder("resnet18", "layer4", weights=None))
    assert not (tmp_path / "cache" / "train_64px" / "latents.npy").stat().st_size == 0
    torch.manual_seed(1)  # same config, other weights, the first encoder's latents on disk: rebuilt, never reused
    assert not np.allclose(first, fit(FrozenEncoder("resnet18", "layer4", weights=None)))
