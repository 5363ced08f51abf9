"""The sliding-window core shared by :func:`ctseg.inference.tile.predict_tile` (an image in memory) and
:func:`ctseg.inference.rows.predict_rows` (a raster read by row bands): the window grid, the Hann blend weights, and
the loop that feeds batches of windows to the model and hands over finished rows (method and weights:
:class:`~ctseg.inference.options.WindowOptions`' docstring; memory: :mod:`ctseg.inference.tile`'s). Both callers
go through :func:`blend_windows`, so they compute the same class map.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ctseg.errors import CtsegError

__all__ = [
    "WindowGrid",
    "blend_weights",
    "blend_windows",
    "call_model",
    "check_window_args",
    "class_indices",
    "resolve_amp",
    "window_grid",
    "window_positions",
]


def window_positions(length: int, window: int, overlap: float) -> list[int]:
    """Start offsets of the windows along one axis of ``length`` (≥ ``window``) pixels.

    The fewest windows whose step is at most ``window − round(overlap · window)``, spread evenly from 0 to
    ``length − window`` (so the real overlap is at least the requested one).
    """
    if length <= window:
        return [0]
    step = max(1, window - int(round(overlap * window)))
    n = math.ceil((length - window) / step) + 1
    return [int(round(k * (length - window) / (n - 1))) for k in range(n)]


def _hann(n: int) -> np.ndarray:
    t = (np.arange(n, dtype=np.float64) + 0.5) / n
    return np.sin(np.pi * t) ** 2


def blend_weights(length: int, window: int, positions: Sequence[int]) -> list[np.ndarray]:
    """Per-window 1-D weights along one axis, normalised so that at every pixel they sum to 1 (float32)."""
    base = _hann(window)
    total = np.zeros(length, dtype=np.float64)
    for p in positions:
        total[p : p + window] += base
    return [(base / total[p : p + window]).astype(np.float32) for p in positions]


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def window_multiple(model) -> int:
    encoder = getattr(model, "encoder", None)
    return int(getattr(encoder, "input_multiple", 32)) if encoder is not None else 32


def device_of(model) -> torch.device:
    for p in model.parameters() if hasattr(model, "parameters") else ():
        return p.device
    return torch.device("cpu")


@dataclass(frozen=True)
class WindowGrid:
    """The windows of an ``height × width`` image (module docstring: sizes, positions, padding).

    ``win_h × win_w``: the window (smaller than ``window`` along a short axis); the image is reflect-padded
    (edge-padded when one axis is a single pixel) at its bottom / right to ``full_h × full_w`` where an axis is
    shorter than the window; ``ys`` / ``xs``: the window starts in that padded image.
    """

    height: int
    width: int
    win_h: int
    win_w: int
    ys: tuple[int, ...]
    xs: tuple[int, ...]

    @property
    def full_h(self) -> int:
        return max(self.height, self.win_h)

    @property
    def full_w(self) -> int:
        return max(self.width, self.win_w)

    @property
    def jobs(self) -> list[tuple[int, int]]:
        """``(row, column)`` indices of every window, row by row: the order they are fed to the model."""
        return [(i, j) for i in range(len(self.ys)) for j in range(len(self.xs))]

    def pad(self, img: np.ndarray, rows: bool = True) -> np.ndarray:
        """``img`` (C, h, W) padded as the whole image is: to ``full_w`` columns (and ``full_h`` rows if ``rows``)."""
        pad_h = self.full_h - self.height if rows else 0
        pad_w = self.full_w - self.width
        if not (pad_h or pad_w):
            return img
        mode = "reflect" if min(self.height, self.width) > 1 else "edge"
        return np.pad(img, ((0, 0), (0, pad_h), (0, pad_w)), mode=mode)


def window_grid(height: int, width: int, window: int, overlap: float, multiple: int = 32) -> WindowGrid:
    """The :class:`WindowGrid` of an ``height × width`` image for ``window`` / ``overlap`` (module docstring)."""
    win_h = min(window, _round_up(height, multiple))
    win_w = min(window, _round_up(width, multiple))
    ys = window_positions(max(height, win_h), win_h, overlap)
    xs = window_positions(max(width, win_w), win_w, overlap)
    return WindowGrid(height, width, win_h, win_w, tuple(ys), tuple(xs))


def check_window_args(model, window: int, overlap: float, batch_size: int) -> tuple[int, int]:
    """``(window, batch_size)`` as ints; one-line errors for a window that is not a multiple of the model's input
    multiple, an overlap outside ``[0, 1)`` or a batch size below 1."""
    window, batch_size = int(window), int(batch_size)
    multiple = window_multiple(model)
    if window < multiple or window % multiple:
        raise CtsegError(f"window must be a positive multiple of {multiple}, got {window}")
    if not 0.0 <= float(overlap) < 1.0:
        raise CtsegError(f"overlap is a fraction of the window in [0, 1), got {overlap}")
    if batch_size < 1:
        raise CtsegError(f"batch_size must be at least 1, got {batch_size}")
    return window, batch_size


def call_model(model, x: Tensor, amp: bool) -> Tensor:
    """Logits ``(B, K, h, w)`` of normalised windows ``x``: the one place the model is called.

    ``model`` is anything callable on a float32 ``(B, C, h, w)`` tensor returning logits (a torch
    :class:`~ctseg.models.Segmentor`, or an ONNX session wrapped to look like one; a NumPy result is accepted).
    """
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bool(amp)):
        logits = model(x)
    if not isinstance(logits, Tensor):
        logits = torch.as_tensor(np.asarray(logits), device=x.device)
    return logits.float()


@contextlib.contextmanager
def _inference_mode(model, dev: torch.device) -> Iterator[None]:
    """Eval mode on ``dev`` for the duration (an ``nn.Module``'s training flag is restored afterwards)."""
    is_module = isinstance(model, nn.Module)
    was_training = model.training if is_module else False
    if is_module:
        model.eval()
        if device_of(model) != dev:
            model.to(dev)
    try:
        yield
    finally:
        if is_module:
            model.train(was_training)


def resolve_amp(dev: torch.device, amp: bool | None) -> bool:
    """bf16 autocast: ``None`` → on for CUDA devices that support bf16."""
    if amp is None:
        return dev.type == "cuda" and torch.cuda.is_bf16_supported()
    return bool(amp)


@torch.no_grad()
def blend_windows(
    model,
    grid: WindowGrid,
    crops: Callable[[list[tuple[int, int]]], np.ndarray],
    emit: Callable[[int, Tensor], None],
    *,
    batch_size: int,
    device: torch.device,
    mean: Sequence[float],
    std: Sequence[float],
    scale: float,
    amp: bool = False,
    tta: bool = False,
    tta_variance: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> None:
    """Run every window of ``grid`` through ``model`` and blend them (module docstring: weights, memory).

    ``crops(jobs)``: the raw windows ``(B, C, win_h, win_w)`` (uint8 / uint16 / float32) of the padded image for
    ``jobs`` (``(row, column)`` indices into ``grid.ys`` / ``grid.xs``), asked for in ``grid.jobs`` order, at most
    ``batch_size`` at a time. ``emit(top, probs)``: called with every block of finished rows in order, ``probs``
    ``(K, rows, width)`` float32 on ``device``, valid only during the call. ``on_batch(n)``: after each batch of
    ``n`` windows. The model is put in eval mode on ``device`` for the call.

    ``tta_variance`` (with ``tta``): ``probs`` gets one more channel, last, holding the blended TTA variance —
    per window and pixel, the mean squared distance of the T = 3 passes' probability vectors from their mean,
    ``V = (1/T) Σ_t Σ_k (p_tk − p̄_k)² = (1/T) Σ_t Σ_k p_tk² − Σ_k p̄_k²`` ∈ ``[0, 1 − 1/T]`` (0: the flips agree;
    2/3: three different one-hot answers), blended with the windows' weights like the probabilities (so it is
    the weighted mean of the covering windows' disagreement). The first K channels are unchanged by it.
    """
    dev = device
    wy = [torch.from_numpy(w).to(dev) for w in blend_weights(grid.full_h, grid.win_h, grid.ys)]
    wx = [torch.from_numpy(w).to(dev) for w in blend_weights(grid.full_w, grid.win_w, grid.xs)]
    jobs = grid.jobs
    height, width, win_h, win_w, ys, xs = grid.height, grid.width, grid.win_h, grid.win_w, grid.ys, grid.xs
    channels = len(mean)
    mean_t = torch.tensor([float(m) for m in mean], device=dev).view(1, channels, 1, 1)
    std_t = torch.tensor([float(s) for s in std], device=dev).view(1, channels, 1, 1)
    flips: list[tuple[int, ...]] = [(), (-1,), (-2,)] if tta else [()]
    variance = bool(tta and tta_variance)
    strip: Tensor | None = None  # (K, win_h, full_w) float32: rows [top, top + win_h) of the padded image
    top = 0

    def flush(stop: int) -> None:
        """Rows [top, stop) are final: hand them to ``emit``."""
        nonlocal strip, top
        assert strip is not None
        n = stop - top
        rows = min(stop, height) - top
        if rows > 0:
            emit(top, strip[:, :rows, :width])
        if n < win_h:
            strip[:, : win_h - n] = strip[:, n:].clone()
        strip[:, max(0, win_h - n) :] = 0
        top = stop

    with _inference_mode(model, dev):
        for start in range(0, len(jobs), batch_size):
            batch_jobs = jobs[start : start + batch_size]
            batch = crops(batch_jobs)
            if batch.dtype == np.uint16:  # exact in float32; torch's uint16 tensors support few operations
                batch = batch.astype(np.float32)
            x = torch.from_numpy(batch).to(dev, non_blocking=True).float()
            if scale != 1.0:
                x = x.div_(scale)
            x = x.sub_(mean_t).div_(std_t)
            prob: Tensor | None = None
            squares: Tensor | None = None  # (B, 1, h, w): Σ_t Σ_k p_tk² (tta_variance)
            for dims in flips:
                logits = call_model(model, x.flip(dims) if dims else x, amp)
                if logits.shape[-2:] != (win_h, win_w):
                    logits = F.interpolate(logits, size=(win_h, win_w), mode="bilinear", align_corners=False)
                p = logits.softmax(1)
                p = p.flip(dims) if dims else p
                if variance:
                    sq = p.square().sum(1, keepdim=True)
                    squares = sq if squares is None else squares.add_(sq)
                prob = p if prob is None else prob.add_(p)
            assert prob is not None
            if len(flips) > 1:
                prob.div_(len(flips))
            if squares is not None:  # V = mean of squares − square of the mean; ≥ 0 up to rounding
                squares.div_(len(flips)).sub_(prob.square().sum(1, keepdim=True)).clamp_(min=0.0)
            k = prob.shape[1]
            if strip is None:
                if k > 256:
                    raise CtsegError(f"the model predicts {k} classes; a uint8 class map holds at most 256")
                strip = torch.zeros((k + int(variance), win_h, grid.full_w), dtype=torch.float32, device=dev)
            for n, (i, j) in enumerate(batch_jobs):
                if ys[i] > top:
                    flush(ys[i])
                y0 = ys[i] - top
                weight = wy[i][:, None] * wx[j][None, :]
                strip[:k, y0 : y0 + win_h, xs[j] : xs[j] + win_w].addcmul_(prob[n], weight)
                if squares is not None:  # the variance channel, last, blended alike
                    strip[k:, y0 : y0 + win_h, xs[j] : xs[j] + win_w].addcmul_(squares[n], weight)
            if on_batch is not None:
                on_batch(len(batch_jobs))
        flush(grid.full_h)


def class_indices(probs: Tensor, chunk: int = 32) -> Tensor:
    """``(rows, W)`` uint8 argmax over the classes of ``(K, rows, W)`` blended probabilities: the first maximum,
    as ``argmax`` (``max(0)`` is several times faster on a CPU for the strided rows of the strip), ``chunk`` rows
    at a time (its int64 indices and float values are 12 B per pixel)."""
    out = torch.empty(probs.shape[1:], dtype=torch.uint8, device=probs.device)
    for y in range(0, probs.shape[1], chunk):
        out[y : y + chunk] = probs[:, y : y + chunk].max(0).indices
    return out
