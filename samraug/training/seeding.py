"""Seeding and data order of training runs: global RNG seeding, DataLoader worker seeding, per-epoch generators
and a sampler that skips the batches already done (to resume inside an epoch).

Example:
    >>> seed_everything(0); a = torch.rand(1); seed_everything(0)
    >>> bool(torch.equal(a, torch.rand(1)))
    True
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

__all__ = ["SkipSampler", "epoch_generator", "seed_everything", "seed_worker"]


def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy's global RNG and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (the global RNG user code may rely on)
    torch.manual_seed(seed)


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed numpy and ``random`` in the worker from torch's per-worker seed
    (itself derived from the loader's seeded generator), so augmentations in workers are reproducible."""
    s = torch.initial_seed() % 2**32
    np.random.seed(s)  # noqa: NPY002
    random.seed(s)


def epoch_generator(seed: int, epoch: int, rank: int) -> torch.Generator:
    """The DataLoader generator of one epoch on one rank, mixed from ``(seed, epoch, rank)``.

    Example:
        >>> a, b = epoch_generator(0, 1, 0), epoch_generator(0, 1, 0)
        >>> bool(torch.equal(torch.rand(2, generator=a), torch.rand(2, generator=b)))
        True
    """
    mixed = np.random.SeedSequence([int(seed) % 2**32, int(epoch), int(rank)]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(mixed) % 2**63)


class SkipSampler(Sampler[int]):
    """Yields the indices of ``sampler`` after the first ``skip`` (to resume inside an epoch)."""

    def __init__(self, sampler: Sampler[int], skip: int) -> None:
        self.sampler = sampler
        self.skip = int(skip)

    def __iter__(self) -> Iterator[int]:
        it = iter(self.sampler)
        for _ in range(self.skip):
            next(it, None)
        yield from it

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)  # type: ignore[arg-type]
