"""The training sampler of every ctseg data module and the per-sample seed: exact resume on the data side.

* :class:`ResumableSampler` — a :class:`~torch.utils.data.DistributedSampler` (an order drawn from
  ``(seed, epoch)``, sharded over DDP ranks; Lightning keeps it and calls ``set_epoch``) that yields
  ``(epoch, index)`` and whose next iteration can start ``n`` samples in (:meth:`ResumableSampler.skip_samples`);
* :func:`sample_seed` — the seed of one sample's augmentation, from ``(seed, epoch, index)``, so it depends
  neither on the worker count nor on what was drawn before.

The :class:`~ctseg.training.resume.ExactResume` callback stores the batches consumed in the current epoch and the RNG
states in every checkpoint; on resume the data modules ask it (:func:`skip_resumed_batches`) while they build the
training loader and the sampler skips those batches. The loader needs its own ``generator`` (DataLoader
otherwise draws its worker base seed from the global RNG each time an iterator is made, which would shift the
restored RNG stream).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch.utils.data import DistributedSampler

_MIX = 0x9E3779B97F4A7C15


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed from (seed, epoch, index) that differs for neighbouring values of each."""
    value = (seed * 1_000_003 + epoch) * 998_244_353 + index
    value = (value * _MIX) & 0xFFFFFFFFFFFFFFFF
    value ^= value >> 29
    return value & 0x7FFFFFFFFFFFFFFF


class ResumableSampler(DistributedSampler):
    """Seeded shuffling by epoch (and DDP shard): yields ``(epoch, index)`` so datasets can seed per sample.

    Lightning recognises it as a distributed sampler (it is not replaced) and calls :meth:`set_epoch`.
    :meth:`skip_samples` makes the next iteration start that many samples in (exact mid-epoch resume); the skip
    is taken when iteration starts, so iterators that are made but never advanced keep it.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._skip = 0
        #: Batches skipped for a resume by the data module (read and cleared by ExactResume.on_train_start).
        self.resume_skip_batches = 0

    def skip_samples(self, samples: int) -> None:
        self._skip = max(0, int(samples))

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        skip, self._skip = self._skip, 0
        epoch = self.epoch
        for i, index in enumerate(super().__iter__()):
            if i >= skip:
                yield epoch, index


def skip_resumed_batches(trainer: Any, sampler: ResumableSampler, batches: int, batch_size: int) -> int:
    """For a run resumed mid-epoch, make ``sampler`` skip the batches of the current epoch that the checkpoint
    already trained on (asked of the trainer's :class:`~ctseg.training.resume.ExactResume`; ``batches``: the loader's
    batches per epoch); the number skipped (0 without the callback or without a mid-epoch resume).

    Called while the data module builds the training loader, before Lightning creates its iterator (with worker
    processes it starts drawing from the sampler at once, before ``on_train_start``).
    """
    resume = _exact_resume(trainer)
    skip = resume.resume_skip_batches(batches) if resume is not None else 0
    if skip:
        sampler.skip_samples(skip * batch_size)
        sampler.resume_skip_batches = skip
    return skip


def _exact_resume(trainer: Any) -> Any:
    """The trainer's exact-resume callback — any callback with a ``resume_skip_batches`` method
    (:class:`ctseg.training.resume.ExactResume`), found by what it does so that ``data`` needs nothing of
    ``training`` — or ``None``."""
    for callback in getattr(trainer, "callbacks", None) or ():
        if callable(getattr(callback, "resume_skip_batches", None)):
            return callback
    return None
