"""Exact mid-epoch resume as one Lightning callback: :class:`ExactResume` (docs/design.md §9).

A run killed at any point and resumed from its last checkpoint (``ctseg fit ... --ckpt_path last``) continues
exactly as if it had never stopped: the same batches, augmentations, CT samples and losses, step by step.
``ctseg fit`` adds the callback by default; any ``lightning.Trainer`` can take it (``callbacks=[ExactResume()]``).

**What a checkpoint holds** (``checkpoint["ctseg_resume"]``, written on every save):

- ``rng``: the global RNG states a training step consumes (torch CPU, every CUDA device, numpy, Python), as plain
  tensors and lists so that the file stays loadable with ``torch.load(weights_only=True)``;
- ``epoch_batches`` and ``batches_epoch``: how many batches of which epoch were consumed;
- ``rng_per_rank`` under DDP: every rank's states. Lightning builds the checkpoint on every rank (rank 0 writes
  it), so the states are gathered there with a collective; on resume each rank restores its own;
- ``cut_short`` when ``max_steps`` stopped training inside an epoch (below).

**Why the skip is set while the loader is built**: the data modules (``ctseg.data``) ask
:meth:`ExactResume.resume_skip_batches` (through :func:`find_exact_resume`) while they build the training loader,
and tell its :class:`~ctseg.data.resumable.ResumableSampler` to skip the consumed batches before Lightning starts
the loader's iterator: with worker processes it begins drawing from the sampler at once, before
``on_train_start``. A loader built without asking is told in ``on_train_start`` (its sampler must be a
:class:`~ctseg.data.resumable.ResumableSampler`); a loader that cannot skip restarts the epoch, with a warning.

**RNG states** are restored in ``on_train_start``, after the loader and its (not yet advanced) iterator exist and
before the first batch, so the CT sampling and anything else drawing from the global RNG continue the interrupted
stream. A checkpoint with another number of ranks is loaded with one warning: every rank starts from rank 0's.

**Cut-short epochs**: a run stopped by ``max_steps`` mid-epoch writes its final ``last.ckpt`` from Lightning's
epoch-end hook, which counts the epoch as finished; resumed as it is, the next epoch would start. Such a
checkpoint is marked ``cut_short`` and, on loading (a callback's ``on_load_checkpoint`` runs before Lightning
restores its loops from the same dict), its loop counters are put back to mid-epoch — exactly what a step
checkpoint of the same step holds — so ``--trainer.max_steps M --ckpt_path last`` extends a shorter run exactly.
Resuming inside an epoch skips Lightning's ``on_train_epoch_start``, hence the bookkeeping in ``on_train_start``.
"""

from __future__ import annotations

import random
import warnings
from typing import Any

import lightning as L
import numpy as np
import torch

#: The checkpoint key of the resume state (unchanged since the first ctseg checkpoints).
CHECKPOINT_KEY = "ctseg_resume"


class ExactResume(L.Callback):
    """Store RNG states and the batches consumed in the current epoch in every checkpoint; restore both on resume.

    See the module docstring for the design. Use with a training loader whose sampler is a
    :class:`~ctseg.data.resumable.ResumableSampler` (every ctseg data module) and, for exact continuation, a
    DataLoader with a ``generator`` of its own (otherwise its worker base seed is drawn from the global RNG).
    """

    def __init__(self) -> None:
        self._resume_state: dict[str, Any] | None = None
        self._trainer: L.Trainer | None = None  # held from loading a checkpoint until the training starts
        self._epoch_batches = 0
        self._batches_epoch = 0

    # ------------------------------------------------------------------ data modules
    def resume_skip_batches(self, total: int) -> int:
        """Batches of the current epoch that a run resumed from a mid-epoch checkpoint has already trained on
        (0 otherwise); asked by the data modules while they build the training loader, so that the skip is in
        place before Lightning starts the loader's iterator (``total``: batches per epoch)."""
        state = self._resume_state
        if not state or self._trainer is None:
            return 0
        current = self._trainer.current_epoch
        done = int(state.get("epoch_batches", 0))
        same_epoch = state.get("batches_epoch", current) == current
        return done if 0 < done < total and same_epoch else 0

    # ------------------------------------------------------------------ hooks
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_batches = 0
        self._batches_epoch = trainer.current_epoch

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Runs after the training loader (and its not-yet-started iterator) exists, before the first batch;
        # Lightning skips on_train_epoch_start when it resumes inside an epoch.
        state = self._resume_state
        if state is None:
            return
        self._resume_state, self._trainer = None, None
        done = int(state.get("epoch_batches", 0))
        total = trainer.num_training_batches
        current = trainer.current_epoch
        same_epoch = state.get("batches_epoch", current) == current
        self._batches_epoch = current
        if 0 < done < total and not same_epoch:
            warnings.warn(
                f"the checkpoint was written {done} batches into epoch {state.get('batches_epoch')}, which this "
                f"Lightning version counts as finished: the run goes on with epoch {current} from its "
                "first batch (resume from a step checkpoint of the same step for an exact continuation)",
                stacklevel=2,
            )
        elif 0 < done < total:
            batches = getattr(trainer.train_dataloader, "batch_sampler", None)
            samples = getattr(batches, "sampler", None)
            if getattr(samples, "resume_skip_batches", 0) == done:  # the data module skipped them already
                samples.resume_skip_batches = 0
                self._epoch_batches = done
            elif hasattr(samples, "skip_samples") and getattr(batches, "batch_size", None):  # ResumableSampler
                samples.skip_samples(done * batches.batch_size)
                self._epoch_batches = done
            else:
                warnings.warn(
                    "resuming mid-epoch with a data loader that cannot skip batches: this epoch restarts from its "
                    "first batch (use a loader with a ctseg.data.resumable.ResumableSampler for exact resume)",
                    stacklevel=2,
                )
        per_rank = state.get("rng_per_rank")
        world, rank = trainer.world_size, trainer.global_rank
        if per_rank is not None and len(per_rank) == world:
            set_rng_states(per_rank[rank])
        else:
            if per_rank is not None or world > 1:
                warnings.warn(
                    f"the checkpoint holds RNG states of {len(per_rank) if per_rank else 1} process(es), this run "
                    f"has {world}: every rank starts from rank 0's; the run continues, but not exactly as before",
                    stacklevel=2,
                )
            set_rng_states(state.get("rng", {}))

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._epoch_batches += 1

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        # Lightning builds the checkpoint on every rank (then rank 0 writes it), so this collective is safe.
        states = rng_states()
        done = self._epoch_batches
        resume = {"rng": states, "epoch_batches": done, "batches_epoch": self._batches_epoch}
        if 0 < done < trainer.num_training_batches and epoch_counted_done(checkpoint, done):
            resume["cut_short"] = True
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            per_rank: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(per_rank, states)
            resume["rng_per_rank"] = per_rank
        checkpoint[CHECKPOINT_KEY] = resume

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        # Called before Lightning restores its loops from the same dict (module docstring: cut-short epochs).
        self._trainer = trainer
        self._resume_state = checkpoint.get(CHECKPOINT_KEY)
        if self._resume_state and self._resume_state.get("cut_short"):
            reopen_epoch(checkpoint)


def find_exact_resume(trainer: Any) -> ExactResume | None:
    """The trainer's :class:`ExactResume` callback (``None`` without a trainer or without the callback)."""
    for callback in getattr(trainer, "callbacks", None) or ():
        if isinstance(callback, ExactResume):
            return callback
    return None


def epoch_counted_done(checkpoint: dict[str, Any], batches: int) -> bool:
    """Whether Lightning's loop state in ``checkpoint`` counts the current epoch as processed after ``batches``
    batches (the state its epoch-end hook saves when max_steps stops training mid-epoch)."""
    try:
        loop = checkpoint["loops"]["fit_loop"]
        epoch = loop["epoch_progress"]["current"]
        batch = loop["epoch_loop.batch_progress"]["current"]
    except (KeyError, TypeError):
        return False
    epoch_done = epoch["ready"] == epoch["started"] == epoch["processed"] == epoch["completed"]
    return epoch_done and batch["ready"] == batch["started"] == batch["processed"] == batch["completed"] == batches


def reopen_epoch(checkpoint: dict[str, Any]) -> None:
    """Turn an epoch-end checkpoint of a cut-short epoch into the mid-epoch state a step checkpoint of the same
    step holds: the epoch neither processed nor completed, the last batch processed but not completed."""
    loop = checkpoint["loops"]["fit_loop"]
    for scope in ("current", "total"):
        loop["epoch_progress"][scope]["processed"] -= 1
        loop["epoch_progress"][scope]["completed"] -= 1
        loop["epoch_loop.batch_progress"][scope]["completed"] -= 1
    epoch_state = loop.get("epoch_loop.state_dict", {})
    if "_batches_that_stepped" in epoch_state:
        epoch_state["_batches_that_stepped"] -= 1
    checkpoint["epoch"] = max(0, int(checkpoint.get("epoch", 1)) - 1)


def rng_states() -> dict[str, Any]:
    """The global RNG states a training step consumes (torch CPU / CUDA, numpy, Python), as plain tensors and
    lists so that checkpoints stay loadable with ``torch.load(weights_only=True)``."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": [version, list(internal), gauss],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`rng_states` returned (any subset of its keys)."""
    if "torch" in states:
        torch.set_rng_state(states["torch"])
    if "numpy" in states:
        name, keys, pos, has_gauss, cached = states["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "python" in states:
        version, internal, gauss = states["python"]
        random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
