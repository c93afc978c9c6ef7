"""Resumable randomness: data order and augmentation are functions of (seed, epoch), not of process state.

A run resumed from an epoch-end checkpoint therefore sees exactly the batches an uninterrupted run
would have seen, whatever the number of workers: `EpochShuffle` draws each epoch's order and one
seed per sample from (seed, epoch), and `SeededSamples` applies a sample's transform under its seed.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, Sampler


class EpochShuffle(Sampler):
    """Yields (index, sample_seed) in an order drawn from (seed, epoch); `set_epoch` is called by Lightning."""

    def __init__(self, length: int, seed: int = 0, epoch: int = 0):
        self.length, self.seed, self.epoch = length, seed, epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.length, generator=generator).tolist()
        seeds = torch.randint(0, 2**62, (self.length,), generator=generator).tolist()
        self.epoch += 1  # without a set_epoch call (e.g. inside a distributed wrapper) the next pass differs
        return iter(zip(order, seeds))


class SeededSamples(Dataset):
    """`dataset[index]` computed under `torch.manual_seed(sample_seed)`, leaving the caller's RNG untouched."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> dict:
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]
