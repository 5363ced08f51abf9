"""Shared helpers of the benchmark scripts: test masks, timing with device synchronisation, device naming."""

from __future__ import annotations

import json
import math
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch


def blocky_masks(batch: int, size: int, classes: int, block: int = 32, seed: int = 0) -> torch.Tensor:
    """(B, size, size) int64 labels made of ``block``-pixel squares (pure patches exist at every CT stride)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, classes, (batch, size // block, size // block), generator=g)
    return coarse.repeat_interleave(block, 1).repeat_interleave(block, 2)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({cpu_model()}, {torch.get_num_threads()} threads)"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds for one call, the device synchronised before both clock reads."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


#: The phases :func:`train_step` clocks, in order.
PHASES = ("forward", "ct_forward", "backward", "optimizer")


def train_step(model, seg, ct, opt, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """One CPU training step as the CT benchmarks time it — encode, decode, seg loss, ``+ ct(features, y)`` unless
    ``ct`` is None, backward, grad-norm clip of the model, ``opt.step()`` — and the wall seconds of each of
    :data:`PHASES` and ``"total"``, with the process CPU seconds as ``"cpu"``."""
    t0, c0 = time.perf_counter(), time.process_time()
    feats = model.encode(x)
    loss = seg(model.decode(feats, x.shape[-2:]), y)
    t1 = time.perf_counter()
    if ct is not None:
        loss = loss + ct(feats, y)
    t2 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    t3 = time.perf_counter()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    t4 = time.perf_counter()
    times = dict(zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True))
    return {**times, "total": t4 - t0, "cpu": time.process_time() - c0}


def median(values: list[float]) -> float:
    return statistics.median(values)


def median_interval(values: list[float], least: float = 0.85) -> str:
    """Distribution-free intervals for the median of ``values`` (independent draws): the range, and, where there
    are enough values, the narrowest ``j``-th smallest to ``j``-th largest holding it with probability ``≥ least``.

    With ``n`` values, ``P(x_(j) ≤ median ≤ x_(n+1−j)) = 1 − 2 P(Bin(n, ½) ≤ j − 1)``: for the range (``j = 1``)
    ``1 − 2^(1−n)``, 93.8 % for five values; for ten, ``j = 3`` gives 89.1 %.
    """
    n, ordered = len(values), sorted(values)

    def holds(j: int) -> float:
        return 1 - 2 * sum(math.comb(n, i) for i in range(j)) / 2**n

    text = f"range {ordered[0]:.3f}–{ordered[-1]:.3f} ({holds(1):.1%})"
    j = max((j for j in range(2, (n + 1) // 2 + 1) if holds(j) >= least), default=None)
    if j is not None:
        text += f", sorted values {j} and {n + 1 - j} of {n} {ordered[j - 1]:.3f}–{ordered[n - j]:.3f} ({holds(j):.1%})"
    return text


def emit(result: dict[str, Any], path: str | None) -> None:
    """Print ``result`` as indented JSON, and write it to ``path`` too when given."""
    text = json.dumps(result, indent=2)
    print(text)
    if path:
        Path(path).write_text(text + "\n")


def prepared_batches(
    data: str, batch: int, workers: int, size: int, decoded_cache: bool | str, pin_memory: bool
) -> tuple[Any, Iterator[dict[str, torch.Tensor]]]:
    """``(data module, endless iterator of uint8 training batches)`` over a prepared folder.

    The real :class:`ctseg.data.PreparedDataModule` training loader in its fast pipeline (``augment_on_device``:
    the caller augments with ``dm.device_transform``), epoch after epoch (``set_epoch`` as Lightning calls it).
    """
    from ctseg.data import PreparedDataModule

    dm = PreparedDataModule(
        data, batch_size=batch, num_workers=workers, image_size=size, augment_on_device=True,
        decoded_cache=decoded_cache, pin_memory=pin_memory,
    )  # fmt: skip
    dm.prepare_data()
    dm.setup("fit")
    loader = dm.train_dataloader()

    def forever() -> Iterator[dict[str, torch.Tensor]]:
        epoch = 0
        while True:
            loader.sampler.set_epoch(epoch)
            yield from loader
            epoch += 1

    return dm, forever()
