"""A preprocessed dataset cache: decoded, resized uint8 images in one memory-mapped .npy file.

Decoding JPEGs is the bottleneck of decoder training on a GPU. The cache is built once (a progress
bar, one pass over the source dataset); afterwards whole batches are sliced from the memory map as
uint8, moved to the device in one copy, and cropped / flipped / scaled there
(`on_after_batch_transfer`). Optionally it also stores the frozen encoder's latents E(x) of the
centre crops, so training skips one encoder pass (only valid without augmentation).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler, Subset
from tqdm.auto import tqdm

from pv.data.datamodules import ImageDataModule
from pv.data.transforms import ImageTransform
from pv.errors import ConfigError, DataNotFoundError


def source_paths(dataset: Dataset) -> list[str] | None:
    """The image files a dataset reads, in order (through `Subset`s), or None when it does not say."""
    if isinstance(dataset, Subset):
        paths = source_paths(dataset.dataset)
        return None if paths is None else [paths[i] for i in dataset.indices]
    paths = getattr(dataset, "paths", None)
    return [str(p) for p in paths] if paths is not None else None


def cache_matches(folder: Path, dataset: Dataset) -> bool:
    """Whether `folder` holds a complete cache of exactly `dataset`'s files (a stale cache is rebuilt)."""
    if not (folder / "images.npy").is_file() or not (folder / "meta.json").is_file():
        return False
    meta = json.loads((folder / "meta.json").read_text())
    return meta.get("source") == source_paths(dataset) and meta.get("count") == len(dataset)


def build_cache(dataset: Dataset, folder: str | Path, description: str = "caching") -> Path:
    """Write `folder/images.npy` (N, 3, S, S) uint8, `labels.npy` if the samples have labels, `meta.json`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    first = dataset[0]
    size = first["image"].shape[-1]
    images = np.lib.format.open_memmap(folder / "images.partial.npy", mode="w+", dtype=np.uint8, shape=(len(dataset), 3, size, size))
    labels, paths = [], []
    for index in tqdm(range(len(dataset)), desc=description, unit="img"):
        sample = first if index == 0 else dataset[index]
        images[index] = (sample["image"] * 255).round().clamp(0, 255).to(torch.uint8).numpy()
        paths.append(sample["path"])
        if "label" in sample:
            labels.append(sample["label"].numpy())
    images.flush()
    del images
    if labels:
        np.save(folder / "labels.npy", np.stack(labels))
    meta = {"count": len(paths), "size": size, "paths": paths, "source": source_paths(dataset)}
    (folder / "meta.json").write_text(json.dumps(meta))
    (folder / "images.partial.npy").rename(folder / "images.npy")  # complete only once fully written
    return folder


def cache_latents(folder: str | Path, encoder: torch.nn.Module, image_size: int, batch_size: int = 64, device: str = "cpu") -> Path:
    """Store E(centre crop) for every cached image as float16 `latents.npy`, tagged with the encoder config."""
    folder = Path(folder)
    images = np.load(folder / "images.npy", mmap_mode="r")
    encoder = encoder.to(device).eval()
    chunks = []
    with torch.no_grad():
        for start in tqdm(range(0, len(images), batch_size), desc="caching latents", unit="batch"):
            batch = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).to(device)
            chunks.append(encoder(center_crop(batch, image_size).float() / 255).half().cpu().numpy())
    np.save(folder / "latents.npy", np.concatenate(chunks))
    fingerprint = encoder.fingerprint()["params_sha256"] if callable(getattr(encoder, "fingerprint", None)) else None
    (folder / "latents.json").write_text(json.dumps({"encoder": getattr(encoder, "config", {}), "image_size": image_size, "params_sha256": fingerprint}))
    return folder


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    top, left = (images.shape[-2] - size) // 2, (images.shape[-1] - size) // 2
    return images[..., top : top + size, left : left + size]


def random_crops(images: torch.Tensor, size: int) -> torch.Tensor:
    """A different random `size` x `size` crop of each image (B, C, S, S), as one gather on the device."""
    batch, channels, height, width = images.shape
    top = torch.randint(0, height - size + 1, (batch, 1), device=images.device) + torch.arange(size, device=images.device)
    left = torch.randint(0, width - size + 1, (batch, 1), device=images.device) + torch.arange(size, device=images.device)
    b = torch.arange(batch, device=images.device)[:, None, None, None]
    c = torch.arange(channels, device=images.device)[None, :, None, None]
    return images[b, c, top[:, None, :, None], left[:, None, None, :]]  # (B, C, size, size)


class CachedBatches(Dataset):
    """Index lists -> whole batches sliced from the memory map (one read per batch, not per image)."""

    def __init__(self, folder: str | Path, with_latents: bool = False):
        folder = Path(folder)
        self.images = np.load(folder / "images.npy", mmap_mode="r")
        self.labels = np.load(folder / "labels.npy") if (folder / "labels.npy").is_file() else None
        self.latents = np.load(folder / "latents.npy", mmap_mode="r") if with_latents else None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, indices: list[int]) -> dict:
        order = np.sort(np.asarray(indices))
        batch = {"image": torch.from_numpy(np.ascontiguousarray(self.images[order]))}  # (B, 3, S, S) uint8
        if self.labels is not None:
            batch["label"] = torch.from_numpy(self.labels[order]).float()
        if self.latents is not None:
            batch["latent"] = torch.from_numpy(np.ascontiguousarray(self.latents[order]))
        return batch


class CachedDataModule(pl.LightningDataModule):
    """Wraps any `ImageDataModule`: caches its images once at `cache_size`, then augments on the device.

    Training batches get a random `image_size` crop and a horizontal flip on the GPU; validation a
    centre crop. `use_latents` adds cached E(x) to un-augmented training batches; with `build_latents`
    they are computed at the start of `fit` with the model's own encoder when missing or made by another.
    """

    def __init__(self, source: ImageDataModule, cache_dir: str = "cache", cache_size: int | None = None, flip: bool = True,
                 random_crop: bool = True, use_latents: bool = False, num_workers: int = 2, build_latents: bool = False):
        super().__init__()
        self.source = source
        self.cache_dir = Path(cache_dir)
        self.image_size = source.image_size
        self.cache_size = cache_size or source.image_size
        if self.cache_size < self.image_size:
            raise ConfigError(f"cache_size ({self.cache_size}) must be >= image_size ({self.image_size})")
        if use_latents and (flip or (random_crop and self.cache_size > self.image_size)):
            raise ConfigError("use_latents needs un-augmented batches: set flip: false and random_crop: false")
        self.flip, self.random_crop, self.use_latents, self.build_latents = flip, random_crop, use_latents, build_latents
        self.batch_size, self.num_workers = source.batch_size, num_workers

    def split_dir(self, split: str) -> Path:
        return self.cache_dir / f"{split}_{self.cache_size}px"

    def prepare_data(self) -> None:
        self.source.prepare_data()
        source = copy.copy(self.source)  # same files and split, un-augmented at the cache size
        source.eval_transform = source.train_transform = ImageTransform(self.cache_size)
        source.setup("fit")
        for split, dataset in (("train", source.train_set), ("val", source.val_set)):
            if not cache_matches(self.split_dir(split), dataset):  # missing, or cached from other files
                build_cache(dataset, self.split_dir(split), f"caching {split} images")
                (self.split_dir(split) / "latents.npy").unlink(missing_ok=True)

    def setup(self, stage: str = "fit") -> None:
        with_latents = self.use_latents
        if self.use_latents:
            encoder = getattr(self.trainer.lightning_module, "encoder", None) if self.trainer is not None else None
            if self.build_latents and encoder is None:
                with_latents = False  # no model yet (e.g. pv fit's early data check): built when the Trainer sets up
            else:
                if self.build_latents and not self.latents_match(encoder):
                    cache_latents(self.split_dir("train"), encoder, self.image_size, device=str(next(encoder.parameters()).device))
                self.check_latents()
        self.train_set = CachedBatches(self.split_dir("train"), with_latents=with_latents)
        self.val_set = CachedBatches(self.split_dir("val"))

    def latents_match(self, encoder: torch.nn.Module) -> bool:
        """Whether the cached training latents exist and were made by `encoder` (config and weights) at this image size."""
        path = self.split_dir("train") / "latents.json"
        if not path.is_file() or not (self.split_dir("train") / "latents.npy").is_file():
            return False
        cached = json.loads(path.read_text())
        weights = encoder.fingerprint()["params_sha256"] if callable(getattr(encoder, "fingerprint", None)) else None
        return cached.get("encoder") == encoder.config and cached.get("image_size") == self.image_size and cached.get("params_sha256") == weights

    def check_latents(self) -> None:
        """Cached latents must exist and come from the encoder being trained against (same config)."""
        folder = self.split_dir("train")
        if not (folder / "latents.npy").is_file():
            raise DataNotFoundError(f"No cached latents in {folder}: run pv.data.cache.cache_latents first")
        cached = json.loads((folder / "latents.json").read_text())
        model = self.trainer.lightning_module if self.trainer is not None else None
        encoder = getattr(getattr(model, "encoder", None), "config", None)
        if encoder is not None and (cached.get("encoder") != encoder or cached.get("image_size") != self.image_size):
            raise ConfigError(
                f"{folder / 'latents.npy'} holds latents of {cached.get('encoder')} at {cached.get('image_size')} px, but the model's "
                f"encoder is {encoder} at {self.image_size} px: run cache_latents again for this encoder"
            )
        fingerprint = getattr(getattr(model, "encoder", None), "fingerprint", None)
        if cached.get("params_sha256") and callable(fingerprint) and cached["params_sha256"] != fingerprint()["params_sha256"]:
            raise ConfigError(f"{folder / 'latents.npy'} holds latents of other weights than the model's encoder (same config): "
                              "run cache_latents again, or set build_latents: true")

    def _loader(self, dataset: CachedBatches, shuffle: bool) -> DataLoader:
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(self.source.seed)) if shuffle else SequentialSampler(dataset)
        return DataLoader(dataset, sampler=BatchSampler(sampler, self.batch_size, drop_last=False), batch_size=None,
                          num_workers=self.num_workers, pin_memory=torch.cuda.is_available(), persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        images = batch["image"]  # (B, 3, S, S) uint8 on the device
        training = self.trainer is not None and self.trainer.training
        if training and self.random_crop and images.shape[-1] > self.image_size:
            images = random_crops(images, self.image_size)
        else:
            images = center_crop(images, self.image_size)
        images = images.float().div_(255)  # (B, 3, image_size, image_size) in [0, 1]
        if training and self.flip:
            flip = torch.rand(len(images), device=images.device) < 0.5
            images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        batch["image"] = images
        if "latent" in batch:
            batch["latent"] = batch["latent"].float()
        return batch
