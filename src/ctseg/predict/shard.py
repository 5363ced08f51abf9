"""Many inputs, many processes: ``torchrun`` / SLURM ranks, input lists, and the job-wide summary.

A ``ctseg predict`` started by ``torchrun --nproc_per_node N`` (``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK``) or
as a SLURM task (``SLURM_NTASKS`` / ``SLURM_PROCID`` / ``SLURM_LOCALID``) takes every world-size-th input, from
its rank on, and runs on GPU ``LOCAL_RANK`` when CUDA is used. The ranks need no process group for the work
(each writes its own files); under ``torchrun`` they join a gloo group only to check that they were given the
same inputs and to print one summary for the job.
"""

from __future__ import annotations

import datetime
import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ctseg.errors import CtsegError

__all__ = ["Shard", "ShardGroup", "detect_shard", "read_input_list", "shard_device"]


@dataclass(frozen=True)
class Shard:
    """This process's share of the inputs: every ``world``-th, from ``rank`` on."""

    rank: int = 0
    world: int = 1
    local_rank: int | None = None
    launcher: str | None = None  # "torchrun" or "slurm"

    def take(self, items: Sequence) -> list:
        return list(items)[self.rank :: self.world]

    @property
    def prefix(self) -> str:
        return f"[rank {self.rank}/{self.world}] " if self.world > 1 else ""


def _int(env: Mapping[str, str], key: str) -> int:
    try:
        return int(env[key])
    except ValueError:
        raise CtsegError(f"environment variable {key}={env[key]!r} is not a whole number") from None


def detect_shard(environ: Mapping[str, str] | None = None) -> Shard:
    """The :class:`Shard` of this process from torchrun's or SLURM's environment (one process otherwise)."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" in env and "RANK" in env:
        keys, launcher = ("WORLD_SIZE", "RANK", "LOCAL_RANK"), "torchrun"
    elif "SLURM_NTASKS" in env and "SLURM_PROCID" in env:
        keys, launcher = ("SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID"), "slurm"
    else:
        return Shard()
    world, rank = _int(env, keys[0]), _int(env, keys[1])
    local = _int(env, keys[2]) if keys[2] in env else None
    if world < 1 or not 0 <= rank < world:
        raise CtsegError(f"{keys[1]}={rank} with {keys[0]}={world}: the rank must be in 0-{world - 1}")
    return Shard(rank, world, local, launcher)


def shard_device(dev: torch.device, shard: Shard) -> torch.device:
    """CUDA without an index → ``cuda:LOCAL_RANK`` (one GPU per rank on a node)."""
    if dev.type == "cuda" and dev.index is None and shard.local_rank is not None:
        return torch.device("cuda", shard.local_rank % max(1, torch.cuda.device_count()))
    return dev


def read_input_list(path: str | os.PathLike) -> list[Path]:
    """The paths in a list file: one per line, blank lines and ``#`` comments skipped; a relative path is taken
    from the list file's folder."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or type(err).__name__
        raise CtsegError(f"--inputs {path} cannot be read ({reason}); give a text file, one path a line") from None
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            item = Path(line).expanduser()
            out.append(item if item.is_absolute() else path.parent / item)
    return out


class ShardGroup:
    """A gloo process group among torchrun's ranks for the duration (nothing without torchrun or one rank)."""

    def __init__(self, shard: Shard, timeout_s: float = 2 * 3600):
        self.shard, self.timeout_s, self.active = shard, timeout_s, False

    def __enter__(self) -> ShardGroup:
        import torch.distributed as dist

        env = os.environ
        if (self.shard.world > 1 and "MASTER_ADDR" in env and "MASTER_PORT" in env and dist.is_available()
                and not dist.is_initialized()):  # fmt: skip
            dist.init_process_group(
                "gloo",
                rank=self.shard.rank,
                world_size=self.shard.world,
                timeout=datetime.timedelta(seconds=self.timeout_s),
            )
            self.active = True
        return self

    def __exit__(self, *exc) -> None:
        if self.active:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.active = False

    def gather(self, obj) -> list | None:
        """Every rank's ``obj`` (``None`` without a group, or when a rank is gone)."""
        if not self.active:
            return None
        import torch.distributed as dist

        out: list = [None] * self.shard.world
        try:
            dist.all_gather_object(out, obj)
        except RuntimeError:
            return None
        return out

    def agree(self, inputs: Sequence[Path]) -> None:
        """One-line error unless every rank was given the same inputs in the same order."""
        digest = hashlib.sha256("\n".join(str(p) for p in inputs).encode()).hexdigest()
        seen = self.gather(digest)
        if seen is not None and len(set(seen)) > 1:
            raise CtsegError(
                f"the {self.shard.world} ranks were given different input lists; give every rank the same "
                "arguments (and the same --inputs file)"
            )
