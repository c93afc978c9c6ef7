"""Augmented views cached with their latents: decoder training without an encoder pass for E(x).

`ViewCacheDataModule(source, views=K)` draws K augmented views (the source's training transform, e.g.
random-resized crops + flips) of every training image once, stores them as uint8 with the frozen
encoder's latents E(view) (`pv.data.cache`'s memory-mapped format), and serves batches
{"image", "latent"}: a training step is then the decoder's forward / backward plus the DSIM pass only.
View k of image i is drawn under the seed (seed, k, i), so the cache is the same on every machine;
a cache of other files, views or encoder is rebuilt.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.utils.data import Dataset

from pv.data.cache import CachedDataModule, build_cache, cache_latents, cache_matches, source_paths
from pv.data.datamodules import ImageDataModule
from pv.errors import ConfigError


class RepeatedViews(Dataset):
    """`views` seeded augmented draws of every sample of `dataset`: item v * N + i is view v of sample i."""

    def __init__(self, dataset: Dataset, views: int, seed: int = 0):
        self.dataset, self.views, self.seed = dataset, views, seed
        paths = source_paths(dataset) or [str(i) for i in range(len(dataset))]  # type: ignore[arg-type]
        self.paths = [f"{path}#view{v}" for v in range(views) for path in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        view, item = divmod(index, len(self.dataset))  # type: ignore[arg-type]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.seed * 1_000_003 + view) * 1_000_003 + item)
            return self.dataset[item]


class ViewCacheDataModule(CachedDataModule):
    """Wraps an `ImageDataModule`: `views` augmented views per training image with cached latents; val un-augmented.

    The latents are computed in `setup` with the model's own frozen encoder (the `pv fit` model's
    `encoder`), `latent_batch_size` images at a time, and recomputed when the encoder config differs.
    """

    def __init__(self, source: ImageDataModule, cache_dir: str = "cache", views: int = 4, latent_batch_size: int = 32, num_workers: int = 0):
        if views < 1:
            raise ConfigError(f"data.init_args.views must be >= 1, got {views}")
        super().__init__(source, cache_dir=cache_dir, flip=False, random_crop=False, use_latents=True, num_workers=num_workers)
        self.views, self.latent_batch_size = views, latent_batch_size

    def split_dir(self, split: str) -> Path:
        views = f"_{self.views}views" if split == "train" else ""
        return self.cache_dir / f"{split}{views}_{self.image_size}px"

    def datasets(self) -> dict[str, Dataset]:
        self.source.setup("fit")
        return {"train": RepeatedViews(self.source.train_set, self.views, self.source.seed), "val": self.source.val_set}

    def prepare_data(self) -> None:
        self.source.prepare_data()
        for split, dataset in self.datasets().items():
            if not cache_matches(self.split_dir(split), dataset):
                build_cache(dataset, self.split_dir(split), f"caching {split} views" if split == "train" else "caching val images")
                (self.split_dir(split) / "latents.npy").unlink(missing_ok=True)

    def setup(self, stage: str = "fit") -> None:
        model = self.trainer.lightning_module if self.trainer is not None else None
        encoder = getattr(model, "encoder", None)
        folder = self.split_dir("train")
        tag = folder / "latents.json"
        stale = not (folder / "latents.npy").is_file() or not tag.is_file() or json.loads(tag.read_text()).get("encoder") != getattr(encoder, "config", None)
        if encoder is None:  # called before the Trainer attached the model: Lightning calls setup again then
            return
        if stale:
            cache_latents(folder, encoder, self.image_size, self.latent_batch_size, device=str(model.device))
        super().setup(stage)

    def training_data(self) -> dict | None:
        """The source's record (`pv_training_data`): the views are augmentations of its training files."""
        describe = getattr(self.source, "training_data", None)
        return describe() if callable(describe) else None


__all__ = ["RepeatedViews", "ViewCacheDataModule"]
