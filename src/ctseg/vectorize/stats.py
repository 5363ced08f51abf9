"""Per-polygon raster statistics for ``ctseg vectorize``: ``mean_confidence`` from a confidence raster on the
class raster's grid.

A polygon's statistics are kept as sums that add up exactly across the block seams it is merged over: a row of
:data:`COLUMNS` per polygon (``conf_sum`` = Σ c over its valid class pixels, ``conf_count`` = their number),
measured per block (:meth:`PixelStats.measure`: each pixel is given to the polygon that contains its centre) and
combined by :func:`combine` when parts merge. The written attribute is ``mean_confidence = conf_sum /
conf_count`` (NaN without valid pixels). Confidence values are scaled to 0–1 (uint8 / 255, uint16 / 65535,
float as is); a pixel is valid when it is finite and not the raster's nodata value.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from ctseg.errors import CtsegError
from ctseg.vectorize.io import read_band

#: Band description that marks a confidence band inside the class raster.
CONFIDENCE_BAND = "confidence"
#: The statistics row of a polygon (sums over its valid pixels), in column order.
COLUMNS = ("conf_sum", "conf_count")

__all__ = ["COLUMNS", "CONFIDENCE_BAND", "PixelStats", "combine", "confidence_sums", "open_confidence"]


def open_confidence(src, confidence_tif, path: Path):
    """(dataset, band, scale, nodata, owned) of the confidence values, or ``None``."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    from ctseg.safety.rasters import open_raster as open_checked

    if confidence_tif is None:
        for band, desc in enumerate(src.descriptions, start=1):
            if band > 1 and (desc or "").strip().lower() == CONFIDENCE_BAND:
                return src, band, _confidence_scale(src.dtypes[band - 1], path), src.nodatavals[band - 1], False
        return None
    cpath = Path(confidence_tif)
    if not cpath.is_file():
        raise CtsegError(f"confidence raster {cpath} does not exist")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)  # the class raster's note says it
            conf = open_checked(cpath)  # a VRT's sources checked first (ctseg.safety.rasters)
    except rasterio.errors.RasterioIOError as err:
        raise CtsegError(f"confidence raster {cpath} cannot be read ({str(err).splitlines()[0]})") from None
    try:
        if (conf.height, conf.width) != (src.height, src.width) or not conf.transform.almost_equals(src.transform):
            raise CtsegError(
                f"confidence raster {cpath.name} ({conf.width}x{conf.height}) is not on the grid of {path.name} "
                f"({src.width}x{src.height}); give the confidence written with this prediction"
            )
        return conf, 1, _confidence_scale(conf.dtypes[0], cpath), conf.nodatavals[0], True
    except BaseException:
        conf.close()
        raise


def _confidence_scale(dtype: str, path: Path) -> float:
    if dtype == "uint8":
        return 255.0
    if dtype == "uint16":
        return 65535.0
    if dtype.startswith("float"):
        return 1.0
    raise CtsegError(f"confidence raster {path.name} is {dtype}; expected uint8 (0-255), uint16 or float (0-1)")


def confidence_sums(parts: list, conf: np.ndarray, valid: np.ndarray, row_off: int, col_off: int):
    """Per part: (sum of confidence, valid pixel count) over its pixels (labels burnt at pixel centres)."""
    from affine import Affine
    from rasterio.features import rasterize

    labels = rasterize(
        ((g, i + 1) for i, g in enumerate(parts)),
        out_shape=conf.shape,
        transform=Affine.translation(col_off, row_off),
        fill=0,
        dtype="int32",
    )
    labels = np.where(valid, labels, 0).ravel()
    sums = np.bincount(labels, weights=np.where(valid, conf, 0.0).ravel(), minlength=len(parts) + 1)
    counts = np.bincount(labels, minlength=len(parts) + 1)
    return sums[1:], counts[1:]


def combine(rows: np.ndarray) -> np.ndarray:
    """The statistics row of a polygon merged from parts with statistics ``rows`` (k × len(COLUMNS)): sums add."""
    return rows.sum(axis=0)


class PixelStats:
    """The statistics rasters of one vectorize run (module docstring): opened on the class raster ``src``'s grid,
    read one block window at a time; falsy when there are none."""

    def __init__(self, src, path: Path, confidence_tif=None) -> None:
        self._conf = open_confidence(src, confidence_tif, path)
        self._values: np.ndarray | None = None
        self._valid: np.ndarray | None = None

    def __bool__(self) -> bool:
        return self._conf is not None

    @property
    def fields(self) -> list[str]:
        """The attributes the polygons get."""
        return ["mean_confidence"] if self._conf else []

    def read(self, window) -> None:
        """Read the block ``window`` of each statistics raster."""
        if not self._conf:
            return
        cds, cband, scale, cnodata, _ = self._conf
        conf = read_band(cds, cband, window, "confidence raster").astype(np.float64)
        valid = np.isfinite(conf)
        if cnodata is not None and not math.isnan(cnodata):
            valid &= conf != cnodata
        conf /= scale
        self._values, self._valid = conf, valid

    def measure(self, polys: list, mask: np.ndarray, row_off: int, col_off: int) -> np.ndarray:
        """Statistics rows (len(polys) × len(COLUMNS)) of the polygons ``polys`` (global pixel coordinates) of the
        block last read, over its pixels where ``mask`` (the class) holds."""
        out = np.zeros((len(polys), len(COLUMNS)))
        if self._conf and len(polys):
            sums, counts = confidence_sums(polys, self._values, self._valid & mask, row_off, col_off)
            out[:, 0], out[:, 1] = sums, counts
        return out

    def attributes(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The attribute columns (:attr:`fields`) of polygons with statistics ``rows``."""
        if not self._conf:
            return {}
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(rows[:, 1] > 0, rows[:, 0] / rows[:, 1], math.nan)
        return {"mean_confidence": mean}

    def close(self) -> None:
        if self._conf and self._conf[4]:
            self._conf[0].close()
