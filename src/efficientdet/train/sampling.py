"""Reproducible, resumable sampling: the order and every augmentation are functions of
(seed, epoch, image), so a run resumed from any step sees exactly the batches it would have seen.

The sampler yields keys ``epoch * len(dataset) + index``; :class:`SeededDataset` decodes them and
seeds the augmentation of that one image from (seed, epoch, index). Neither depends on how many
workers there are, on which worker gets which image, or on where a run was interrupted.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset, Sampler


class EpochSampler(Sampler[int]):
    """A permutation per epoch (from ``seed``), this rank's shard of it, full batches only.

    Rank ``r`` of ``world`` takes every ``world``-th image of the permutation, so the first
    global batch of N ranks × batch b holds the same images as 1 rank × batch N·b.
    ``set_epoch(epoch, start_batch)`` restarts mid-epoch after a resume.
    """

    def __init__(self, size: int, batch_size: int, seed: int = 0, rank: int = 0, world: int = 1,
                 shuffle: bool = True):
        if size // world < batch_size:
            raise ValueError(f"{size} training images are fewer than one batch of {batch_size} per process "
                             f"({world} process(es)); lower --batch-size")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world, self.shuffle = rank, world, shuffle
        self.epoch, self.start_batch = 0, 0

    @property
    def batches_per_epoch(self) -> int:
        return self.size // self.world // self.batch_size

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.size, generator=g)
        else:
            order = torch.arange(self.size)
        mine = order[self.rank::self.world][: self.batches_per_epoch * self.batch_size]
        offset = self.epoch * self.size
        return iter((mine[self.start_batch * self.batch_size:] + offset).tolist())

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.batch_size


class SeededDataset(Dataset):
    """Wraps a dataset: key ``epoch * n + i`` → item ``i``, augmented with its own seed."""

    def __init__(self, dataset: Dataset, seed: int = 0):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int) -> Any:
        epoch, index = divmod(key, len(self.dataset))
        # fork_rng: the caller's generator (the model's drop-path draws when workers=0) is untouched.
        # Only the CPU generator is seeded: torch.manual_seed would also reseed CUDA's, which
        # fork_rng(devices=[]) does not restore, and records a stack trace per call to do it lazily.
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed((self.seed * 1_000_003 + epoch) * 10_000_019 + index)
            return self.dataset[index]
