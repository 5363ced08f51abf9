"""``<stem>_overlay.png`` (``ctseg predict --overlay``): the input image with the class colours blended on top.

The image is shown as a viewer shows it: its first three bands as red, green and blue (a one- or two-band image:
its first band as grey); 8-bit bands as they are, any other type stretched per band from its 2nd to its 98th
percentile to 0–255 (QGIS's default cumulative count cut; the percentiles estimated from at most about a million
pixels of the map's valid area). Each valid pixel is ``(1 − α) · image + α · class colour`` (α =
:data:`OVERLAY_ALPHA`), opaque; nodata pixels of the class map are transparent. The image is read twice, in strips
of rows (the percentiles, then the blend); the RGBA picture is the size of the map, which is why it is written only
up to ``--png-max-mpx``, like the colour PNG.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ctseg.data.definitions import DatasetInfo
from ctseg.data.raster import NODATA_CLASS
from ctseg.predict.png import save_png

__all__ = ["OVERLAY_ALPHA", "STRETCH_PERCENTILES", "display_bands", "overlay_rgba", "write_overlay_png"]

#: Weight of the class colour over the image.
OVERLAY_ALPHA = 0.5
#: The percentiles (per band) that a non-8-bit image is stretched between.
STRETCH_PERCENTILES = (2.0, 98.0)
_STRIP_ROWS = 256
_SAMPLES = 1 << 20


def display_bands(count: int) -> list[int]:
    """0-based bands of a ``count``-band image shown as red, green, blue: the first three, or the first as grey."""
    return [0, 1, 2] if count >= 3 else [0, 0, 0]


def _strips(height: int):
    for y0 in range(0, height, _STRIP_ROWS):
        yield y0, min(y0 + _STRIP_ROWS, height)


def _limits(source, pred: np.ndarray, bands: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) per shown band: the :data:`STRETCH_PERCENTILES` of a sample of the valid pixels."""
    valid_total = int(np.count_nonzero(pred != NODATA_CLASS))
    step = max(1, -(-valid_total // _SAMPLES))
    samples = []
    for y0, y1 in _strips(source.height):
        valid = (pred[y0:y1] != NODATA_CLASS).reshape(-1)
        rows = np.asarray(source.read(y0, y1))[bands].reshape(len(bands), -1)
        samples.append(rows[:, valid][:, ::step].astype(np.float64))
    values = np.concatenate(samples, axis=1) if samples else np.zeros((len(bands), 0))
    low, high = np.zeros(len(bands)), np.ones(len(bands))
    for k, band in enumerate(values):
        band = band[np.isfinite(band)]
        if band.size:
            low[k], high[k] = np.percentile(band, STRETCH_PERCENTILES)
            if not high[k] > low[k]:
                high[k] = low[k] + 1.0
    return low, high


def overlay_rgba(source, pred: np.ndarray, info: DatasetInfo, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """``(H, W, 4)`` uint8: ``source`` (a row source: ``count``, ``height``, ``width``, ``dtype``, ``read(y0, y1)``
    → ``(count, rows, width)``) blended with the class map ``pred`` (module docstring)."""
    height, width = pred.shape
    if (source.height, source.width) != (height, width):
        raise ValueError(f"image {source.height} x {source.width} and class map {height} x {width} differ")
    bands = display_bands(source.count)
    stretch = np.dtype(source.dtype) != np.uint8
    low, high = _limits(source, pred, bands) if stretch else (None, None)
    lut = info.palette().astype(np.float32)
    out = np.zeros((height, width, 4), np.uint8)
    for y0, y1 in _strips(height):
        img = np.asarray(source.read(y0, y1))[bands].astype(np.float32)
        if stretch:
            img = (img - low[:, None, None]) / (high - low)[:, None, None] * 255.0
            img = np.nan_to_num(np.clip(img, 0.0, 255.0), nan=0.0)
        classes = pred[y0:y1]
        blended = (1.0 - alpha) * np.moveaxis(img, 0, -1) + alpha * lut[classes]
        valid = classes != NODATA_CLASS
        out[y0:y1, :, :3] = np.where(valid[..., None], np.rint(blended), 0).astype(np.uint8)
        out[y0:y1, :, 3] = np.where(valid, 255, 0).astype(np.uint8)
    return out


def write_overlay_png(
    source, pred: np.ndarray, info: DatasetInfo, path: Path, workdir: Path | None = None,
    alpha: float = OVERLAY_ALPHA,
) -> Path:  # fmt: skip
    """The overlay (:func:`overlay_rgba`) as the RGBA PNG ``path``: atomically, or as ``workdir / path.name``."""
    from PIL import Image

    rgba = overlay_rgba(source, pred, info, alpha)
    height, width = pred.shape
    save_png(Image.frombuffer("RGBA", (width, height), rgba, "raw", "RGBA", 0, 1), Path(path), workdir)
    return Path(path)
