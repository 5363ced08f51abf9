"""Samplers that let a training run resume mid-epoch exactly where it was killed.

* :class:`EpochRandomSampler` — a random order that depends only on ``(seed, epoch)`` (Lightning calls
  ``set_epoch``), so a resumed run sees the same order as the run it replaces;
* :class:`SkippableBatchSampler` — its next iteration can start ``n`` batches in, without reading their data.

:class:`ctseg.training.SegmentationTask` stores the number of batches consumed in the current epoch and the RNG
states in every checkpoint, and on resume tells the training loader's :class:`SkippableBatchSampler` to skip
them. The loader needs its own ``generator`` (DataLoader otherwise draws its worker base seed from the global
RNG each time an iterator is made, which would shift the restored RNG stream).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import BatchSampler, Sampler


class EpochRandomSampler(Sampler[int]):
    """A permutation of ``range(n)`` drawn from a generator seeded with ``(seed, epoch)``."""

    def __init__(self, n: int, seed: int = 0) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=generator).tolist())

    def __len__(self) -> int:
        return self.n


class SkippableBatchSampler(BatchSampler):
    """A :class:`~torch.utils.data.BatchSampler` whose next iteration can skip its first ``n`` batches.

    The skip is taken when the iteration actually starts (the generator's first step), so iterators that are
    made but never advanced do not consume it.
    """

    def __init__(self, sampler: Sampler[int], batch_size: int, drop_last: bool) -> None:
        super().__init__(sampler, batch_size, drop_last)
        self._skip = 0

    def skip_next(self, batches: int) -> None:
        self._skip = max(0, int(batches))

    def __iter__(self) -> Iterator[list[int]]:
        skip, self._skip = self._skip, 0
        for i, batch in enumerate(super().__iter__()):
            if i >= skip:
                yield batch
