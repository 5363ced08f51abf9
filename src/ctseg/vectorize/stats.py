"""Per-polygon raster statistics for ``ctseg vectorize``: ``mean_confidence`` and ``min_confidence`` from a
confidence raster, ``mean_entropy`` from an entropy raster, both on the class raster's grid.

A polygon's statistics are kept as a row of :data:`COLUMNS` that combines exactly across the block seams it is
merged over (:func:`combine`): over its valid class pixels, ``conf_sum`` = Σ c, ``conf_count`` = their number,
``conf_min`` = min c (+∞ without any), ``ent_sum`` = Σ h and ``ent_count`` over its pixels with a valid entropy h.
Rows are measured per block (:meth:`PixelStats.measure`: each pixel goes to the polygon that contains its
centre); merged parts add their sums and counts and take the smallest of their minima, so the result is the
one of the whole polygon. The attributes: ``mean_confidence = conf_sum / conf_count``, ``min_confidence =
conf_min``, ``mean_entropy = ent_sum / ent_count`` (NaN without valid pixels).

Confidence values are scaled to 0–1 (uint8 / 255, uint16 / 65535, float as is); a pixel is valid when it is
finite and not the raster's nodata value. The entropy raster is ``ctseg predict --uncertainty``'s
``<stem>_entropy.tif`` (float16 normalised entropy in [0, 1], NaN at nodata): it must be a float raster on the
same grid (width, height, transform); NaN, ±∞ and its nodata value are left out, and a finite value outside
[0, 1] is refused (one line naming the file).
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
#: The statistics row of a polygon (over its valid pixels), in column order; ``conf_min`` combines by min.
COLUMNS = ("conf_sum", "conf_count", "conf_min", "ent_sum", "ent_count")
#: The row of a polygon without any pixels.
EMPTY = np.array([0.0, 0.0, np.inf, 0.0, 0.0])

__all__ = ["COLUMNS", "CONFIDENCE_BAND", "EMPTY", "PixelStats", "combine", "open_confidence", "open_entropy"]


def open_confidence(src, confidence_tif, path: Path):
    """(dataset, band, scale, nodata, owned) of the confidence values, or ``None``."""
    if confidence_tif is None:
        for band, desc in enumerate(src.descriptions, start=1):
            if band > 1 and (desc or "").strip().lower() == CONFIDENCE_BAND:
                return src, band, _confidence_scale(src.dtypes[band - 1], path), src.nodatavals[band - 1], False
        return None
    cpath = Path(confidence_tif)
    conf = _open_stats_raster(cpath, "confidence raster", "does not exist")
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


def open_entropy(src, entropy_tif, path: Path):
    """The entropy raster ``entropy_tif`` (module docstring), opened and checked against the class raster ``src``
    (``path``); ``None`` when not given."""
    if entropy_tif is None:
        return None
    epath = Path(entropy_tif)
    ent = _open_stats_raster(epath, "entropy raster", "does not exist; pass the <stem>_entropy.tif of ctseg predict "
                             "--uncertainty")  # fmt: skip
    try:
        if (ent.height, ent.width) != (src.height, src.width) or not ent.transform.almost_equals(src.transform):
            raise CtsegError(
                f"entropy raster {epath.name} ({ent.width}x{ent.height}) is not on the grid of {path.name} "
                f"({src.width}x{src.height}); pass the <stem>_entropy.tif ctseg predict --uncertainty wrote with "
                "this class map"
            )
        if not np.issubdtype(np.dtype(ent.dtypes[0]), np.floating):
            raise CtsegError(
                f"entropy raster {epath.name} is {ent.dtypes[0]}; expected float normalised entropy in [0, 1] (the "
                "<stem>_entropy.tif of ctseg predict --uncertainty)"
            )
        return ent
    except BaseException:
        ent.close()
        raise


def _open_stats_raster(cpath: Path, what: str, missing: str):
    """``cpath`` opened through :func:`ctseg.safety.rasters.open_raster`; a missing or unreadable file is one line."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    from ctseg.safety.rasters import open_raster as open_checked

    if not cpath.is_file():
        raise CtsegError(f"{what} {cpath} {missing}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)  # the class raster's note says it
            return open_checked(cpath)  # a VRT's sources checked first (ctseg.safety.rasters)
    except rasterio.errors.RasterioIOError as err:
        raise CtsegError(f"{what} {cpath} cannot be read ({str(err).splitlines()[0]})") from None


def _confidence_scale(dtype: str, path: Path) -> float:
    if dtype == "uint8":
        return 255.0
    if dtype == "uint16":
        return 65535.0
    if dtype.startswith("float"):
        return 1.0
    raise CtsegError(f"confidence raster {path.name} is {dtype}; expected uint8 (0-255), uint16 or float (0-1)")


def _labels(parts, shape: tuple[int, int], row_off: int, col_off: int) -> np.ndarray:
    """(h, w) int32: 1 + the index of the part containing each pixel centre, 0 outside all (GDAL's rasterize)."""
    from affine import Affine
    from rasterio.features import rasterize

    return rasterize(
        ((g, i + 1) for i, g in enumerate(parts)),
        out_shape=shape,
        transform=Affine.translation(col_off, row_off),
        fill=0,
        dtype="int32",
    )


def combine(rows: np.ndarray) -> np.ndarray:
    """The statistics row of a polygon merged from parts with statistics ``rows`` (k × len(COLUMNS)): sums and
    counts add (in row order), the minimum is the smallest of the minima."""
    if not len(rows):
        return EMPTY.copy()
    out = rows.sum(axis=0)
    out[2] = rows[:, 2].min()
    return out


class PixelStats:
    """The statistics rasters of one vectorize run (module docstring): opened on the class raster ``src``'s grid,
    read one block window at a time; falsy when there are none."""

    def __init__(self, src, path: Path, confidence_tif=None, entropy_tif=None) -> None:
        self._conf = open_confidence(src, confidence_tif, path)
        try:
            self._ent = open_entropy(src, entropy_tif, path)
        except BaseException:
            self.close()
            raise
        self._block: dict[str, np.ndarray] = {}

    def __bool__(self) -> bool:
        return self._conf is not None or self._ent is not None

    @property
    def fields(self) -> list[str]:
        """The attributes the polygons get."""
        return (["mean_confidence", "min_confidence"] if self._conf else []) + (["mean_entropy"] if self._ent else [])

    def read(self, window) -> None:
        """Read the block ``window`` of each statistics raster."""
        if self._conf:
            cds, cband, scale, cnodata, _ = self._conf
            conf = read_band(cds, cband, window, "confidence raster").astype(np.float64)
            valid = np.isfinite(conf)
            if cnodata is not None and not math.isnan(cnodata):
                valid &= conf != cnodata
            conf /= scale
            self._block["conf"], self._block["conf_valid"] = conf, valid
        if self._ent is not None:
            ent = read_band(self._ent, 1, window, "entropy raster").astype(np.float64)
            valid = np.isfinite(ent)
            nodata = self._ent.nodata
            if nodata is not None and not math.isnan(nodata):
                valid &= ent != nodata
            bad = valid & ~((ent >= 0) & (ent <= 1))
            if bad.any():
                r, c = np.argwhere(bad)[0]
                raise CtsegError(
                    f"entropy raster {Path(self._ent.name).name} has {ent[r, c]:g} at row {window.row_off + r}, "
                    f"column {window.col_off + c}, outside [0, 1]; pass the normalised entropy of ctseg predict "
                    "--uncertainty"
                )
            self._block["ent"], self._block["ent_valid"] = ent, valid

    def measure(self, polys, mask: np.ndarray, row_off: int, col_off: int) -> np.ndarray:
        """Statistics rows (len(polys) × len(COLUMNS)) of the polygons ``polys`` (global pixel coordinates) of the
        block last read, over its pixels where ``mask`` (the class) holds."""
        n = len(polys)
        out = np.tile(EMPTY, (n, 1))
        if not self or not n:
            return out
        labels = _labels(polys, mask.shape, row_off, col_off)
        if self._conf:
            valid = self._block["conf_valid"] & mask & (labels > 0)
            lab, conf = labels[valid] - 1, self._block["conf"][valid]
            out[:, 0] = np.bincount(lab, weights=conf, minlength=n)
            out[:, 1] = np.bincount(lab, minlength=n)
            np.minimum.at(out[:, 2], lab, conf)
        if self._ent is not None:
            valid = self._block["ent_valid"] & mask & (labels > 0)
            lab = labels[valid] - 1
            out[:, 3] = np.bincount(lab, weights=self._block["ent"][valid], minlength=n)
            out[:, 4] = np.bincount(lab, minlength=n)
        return out

    def attributes(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The attribute columns (:attr:`fields`) of polygons with statistics ``rows``."""
        out: dict[str, np.ndarray] = {}
        with np.errstate(invalid="ignore", divide="ignore"):
            if self._conf:
                out["mean_confidence"] = np.where(rows[:, 1] > 0, rows[:, 0] / rows[:, 1], math.nan)
                out["min_confidence"] = np.where(rows[:, 1] > 0, rows[:, 2], math.nan)
            if self._ent is not None:
                out["mean_entropy"] = np.where(rows[:, 4] > 0, rows[:, 3] / rows[:, 4], math.nan)
        return out

    def close(self) -> None:
        if self._conf and self._conf[4]:
            self._conf[0].close()
        if getattr(self, "_ent", None) is not None:
            self._ent.close()
