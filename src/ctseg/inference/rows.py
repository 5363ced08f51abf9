"""Out-of-core prediction: a raster read by full-width row bands and predicted one row of windows at a time.

:func:`predict_rows` computes exactly what :func:`ctseg.inference.tile.predict_tile` computes for the whole image —
the same window grid, the same reflect padding at the raster's bottom and right edges (only an axis shorter
than the window is padded, and then the whole axis is in memory, so the padded values are the same), the same
batches of windows in the same order, the same float32 Hann blend — while holding only

* the source rows of the windows in flight: from the first row not yet final to the bottom of the last window
  fed to the model, about ``window + step`` rows × the raster width (more when a row of windows holds fewer
  windows than a batch);
* the blend strip ``(K, window, width)`` float32 of :func:`~ctseg.inference.tile.blend_windows`;
* what the consumer of the finished rows keeps (:mod:`ctseg.predict.write` writes them straight to disk).

Rows are read (:class:`RasterRows`: windowed rasterio reads) when the first window reaching them is fed to the
model, their nodata mask is taken and non-finite values are replaced by the band means, and they are dropped
as soon as no later window needs them. A window that cannot be read is a one-line error naming the file and
the window.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from ctseg.data.raster import NODATA_CLASS, error_text, nodata_pixels
from ctseg.errors import CtsegError
from ctseg.inference.blend import WindowGrid, blend_windows, class_indices, window_grid, window_multiple
from ctseg.inference.options import DEFAULT, WindowOptions, window_options

__all__ = [
    "ArrayRows",
    "RasterRows",
    "RowSource",
    "class_rows",
    "confidence_rows",
    "plan_grid",
    "predict_rows",
    "prob_rows",
]


class RowSource(Protocol):
    """Full-width row bands of a ``(count, height, width)`` image."""

    count: int
    height: int
    width: int
    dtype: np.dtype

    def read(self, y0: int, y1: int) -> np.ndarray:
        """Rows ``[y0, y1)``: ``(count, y1 − y0, width)``."""
        ...


class ArrayRows:
    """A :class:`RowSource` over an image in memory (PNG / JPEG inputs, tests)."""

    def __init__(self, image: np.ndarray):
        if image.ndim != 3:
            raise CtsegError(f"image must be (C, H, W), got shape {tuple(image.shape)}")
        self.image = image
        self.count, self.height, self.width = image.shape
        self.dtype = image.dtype

    def read(self, y0: int, y1: int) -> np.ndarray:
        return self.image[:, y0:y1]


class RasterRows:
    """A :class:`RowSource` reading bands ``indices`` (1-based) of an open rasterio dataset by windows."""

    def __init__(self, dataset, indices: Sequence[int], path: str | Path | None = None):
        self.dataset = dataset
        self.indices = [int(i) for i in indices]
        self.path = Path(path if path is not None else dataset.name)
        self.count, self.height, self.width = len(self.indices), dataset.height, dataset.width
        self.dtype = np.dtype(dataset.dtypes[self.indices[0] - 1])

    def read(self, y0: int, y1: int) -> np.ndarray:
        from rasterio.errors import RasterioError
        from rasterio.windows import Window

        try:
            return self.dataset.read(self.indices, window=Window(0, y0, self.width, y1 - y0))
        except RasterioError as err:
            raise CtsegError(
                f"input {self.path} cannot be read at rows {y0}-{y1 - 1}, columns 0-{self.width - 1} (window "
                f"row_off={y0} col_off=0 height={y1 - y0} width={self.width}): {error_text(err)}; nothing was "
                "written for it"
            ) from None


def _fill_nonfinite(raw: np.ndarray, fill: np.ndarray | None) -> np.ndarray:
    """NaN / inf of a float input replaced by ``fill`` (per band): they would spread through every window."""
    if fill is None or raw.dtype.kind != "f":
        return raw
    finite = np.isfinite(raw)
    if finite.all():
        return raw
    return np.where(finite, raw, fill).astype(np.float32)


class _Rows:
    """The source rows ``[lo, hi)`` in flight (model input) and their nodata mask."""

    def __init__(self, source: RowSource, grid: WindowGrid, fill: np.ndarray | None, nodata: float | None):
        self.source, self.grid, self.fill, self.nodata = source, grid, fill, nodata
        self.lo = self.hi = 0
        self.data = np.zeros((source.count, 0, source.width), dtype=source.dtype)
        self.mask: np.ndarray | None = None
        self.padded: np.ndarray | None = None  # the whole padded image, for a raster shorter than a window

    def extend(self, stop: int) -> None:
        stop = min(stop, self.grid.height)
        if stop <= self.hi:
            return
        raw = np.asarray(self.source.read(self.hi, stop))
        if raw.shape != (self.source.count, stop - self.hi, self.source.width):
            raise CtsegError(f"a read of rows {self.hi}-{stop - 1} returned shape {raw.shape}")
        mask = nodata_pixels(raw, self.nodata)
        if mask is not None:
            self.mask = mask if self.mask is None else np.concatenate([self.mask, mask], axis=0)
        data = _fill_nonfinite(raw, self.fill)
        self.data = data if self.data.shape[1] == 0 else np.concatenate([self.data, data], axis=1)
        self.hi = stop

    def crops(self, jobs: list[tuple[int, int]]) -> np.ndarray:
        g = self.grid
        if g.full_h > g.height:  # shorter than a window: all rows, padded as predict_tile pads the image
            if self.padded is None:
                self.extend(g.height)
                self.padded = g.pad(self.data)
            img = self.padded
            return np.stack([img[:, g.ys[i] : g.ys[i] + g.win_h, g.xs[j] : g.xs[j] + g.win_w] for i, j in jobs])
        self.extend(max(g.ys[i] for i, _ in jobs) + g.win_h)
        out = []
        for i, j in jobs:
            y0 = g.ys[i] - self.lo
            rows = g.pad(self.data[:, y0 : y0 + g.win_h], rows=False)
            out.append(rows[:, :, g.xs[j] : g.xs[j] + g.win_w])
        return np.stack(out)

    def mask_rows(self, top: int, n: int) -> np.ndarray | None:
        return None if self.mask is None else self.mask[top - self.lo : top - self.lo + n]

    def release(self, stop: int) -> None:
        """Rows above ``stop`` are final: no later window reads them."""
        k = min(stop, self.hi) - self.lo
        if k > 0 and self.padded is None:
            self.data = self.data[:, k:]
            if self.mask is not None:
                self.mask = self.mask[k:]
            self.lo += k


def plan_grid(model, height: int, width: int, window: int = 512, overlap: float = 0.25) -> WindowGrid:
    """The window grid :func:`predict_rows` (and :func:`~ctseg.inference.tile.predict_tile`) uses for that size."""
    return window_grid(height, width, int(window), float(overlap), window_multiple(model))


@torch.no_grad()
def predict_rows(
    model,
    source: RowSource,
    emit: Callable[[int, Tensor, np.ndarray | None], None],
    *,
    options: WindowOptions | None = None,
    window: int = DEFAULT.window,
    overlap: float = DEFAULT.overlap,
    batch_size: int = DEFAULT.batch_size,
    tta: bool = DEFAULT.tta,
    device: str | torch.device | None = DEFAULT.device,
    mean: Sequence[float] = DEFAULT.mean,
    std: Sequence[float] = DEFAULT.std,
    scale: float | None = DEFAULT.scale,
    amp: bool | None = DEFAULT.amp,
    nodata: float | None = None,
    fill: Sequence[float] | None = None,
    on_batch: Callable[[int], None] | None = None,
    on_variance: Callable[[int, Tensor], None] | None = None,
) -> WindowGrid:
    """Predict ``source`` by windows (``options`` or its keywords: :func:`~ctseg.inference.tile.predict_tile`),
    streaming the result.

    ``emit(top, probs, nodata_mask)`` receives the finished rows in order: ``probs`` ``(K, rows, width)``
    float32 on the device (valid during the call only; :func:`class_rows` turns them into what predict_tile
    returns for those rows), ``nodata_mask`` ``(rows, width)`` bool where every band equals ``nodata`` (``None``
    without nodata). ``fill``: values (on the raw scale, one per band) that replace NaN / inf of a float input.
    ``on_variance(top, variance)`` (needs ``tta``): called just before ``emit`` for the same rows with their
    ``(rows, width)`` blended TTA variance (:func:`~ctseg.inference.blend.blend_windows`; on the device, valid
    during the call only). Returns the window grid.
    """
    opts = window_options(
        options, window=window, overlap=overlap, batch_size=batch_size, tta=tta, device=device, mean=mean, std=std,
        scale=scale, amp=amp,
    )  # fmt: skip
    opts.check_model(model)
    if source.count != len(opts.mean):
        raise CtsegError(f"the source has {source.count} bands but mean / std have {len(opts.mean)} values")
    if on_variance is not None and not opts.tta:
        raise CtsegError("the TTA variance needs TTA: pass tta=True (ctseg predict --tta) with on_variance")
    scale = opts.value_scale(str(source.dtype))
    dev = opts.target_device(model)
    grid = opts.grid(model, source.height, source.width)
    fill_arr = None if fill is None else np.asarray(fill, dtype=np.float32).reshape(-1, 1, 1)
    rows = _Rows(source, grid, fill_arr, nodata)

    def finished(top: int, part: Tensor) -> None:
        n = part.shape[1]
        if on_variance is not None:
            on_variance(top, part[-1])
            part = part[:-1]
        emit(top, part, rows.mask_rows(top, n))
        rows.release(top + n)

    blend_windows(
        model, grid, rows.crops, finished, batch_size=opts.batch_size, device=dev, mean=opts.mean, std=opts.std,
        scale=scale, amp=opts.autocast(dev), tta=opts.tta, tta_variance=on_variance is not None, on_batch=on_batch,
    )  # fmt: skip
    return grid


def class_rows(probs: Tensor, mask: np.ndarray | None) -> np.ndarray:
    """``(rows, width)`` uint8 class indices (argmax), :data:`~ctseg.predict.inputs.NODATA_CLASS` where ``mask``."""
    out = class_indices(probs).cpu().numpy()
    if mask is not None:
        out[mask] = NODATA_CLASS
    return out


def prob_rows(probs: Tensor, mask: np.ndarray | None, dtype: str) -> np.ndarray:
    """``(K, rows, width)`` probabilities: ``"uint8"`` → round(255 p) (0 in every band at nodata, which no valid
    pixel is; ``ctseg predict``'s COG marks those pixels in a validity mask, not with a nodata value), ``"float16"``
    → half-precision values as float32 (NaN at nodata; the file stores them in 16 bits)."""
    if dtype == "uint8":
        out = probs.mul(255).round_().clamp_(0, 255).to(torch.uint8).cpu().numpy()
        fill = 0
    else:
        out = probs.to(torch.float16).cpu().numpy().astype(np.float32)
        fill = np.nan
    if mask is not None:
        out[:, mask] = fill
    return out


def confidence_rows(probs: Tensor, mask: np.ndarray | None) -> np.ndarray:
    """``(rows, width)`` uint8 round(255 · max probability), at least 1 (max p ≥ 1/K); 0 at nodata."""
    out = probs.amax(0).mul_(255).round_().clamp_(1, 255).to(torch.uint8).cpu().numpy()
    if mask is not None:
        out[mask] = 0
    return out
