"""Output files of ``ctseg predict``: Cloud-Optimized GeoTIFFs written row band by row band (the PNGs are
:mod:`ctseg.predict.png`'s).

:class:`StreamedCOG` takes the rows of a raster in order (``write(top, rows)``) and writes them straight into a
temporary striped GeoTIFF (ZSTD level 1, 32-row strips: a few rows are ever in memory), then ``finish()`` lays it
out as a COG (GDAL's COG driver: 512 × 512 tiles, DEFLATE, internal overviews down to one tile — nearest
resampling for class maps, average for probabilities / confidence — the IFDs and tiles in the order a reader over
HTTP wants). Without a ``workdir`` the temporary files are siblings of the target and ``commit()`` renames the
COG into place; with one (``ctseg predict``'s staging folder, :mod:`ctseg.predict.stage`) both are written in
that folder, the COG under the target's name (:attr:`StreamedCOG.staged`), for the caller to move. Any failure
(a full disk included) removes both temporary files and is one line naming the output; what GDAL / libtiff
print straight to the process's stderr meanwhile (libtiff's ``_tiffWriteProc: No space left on device.``) is
read for that line instead of reaching the terminal (:mod:`ctseg.predict.failures`).

A ``mask_empty`` writer (the uint8 probabilities of an input with nodata) also writes a per-dataset validity mask,
row band by row band (GDAL's internal GTiff mask, no ``.msk`` sidecar), which the COG copy keeps with its
overviews: a pixel 0 in every band is no-data there (GDAL, QGIS show it so; rasterio's ``dataset_mask()``) and
every byte stays a probability. A nodata *value* would not do: 0 is also round(255 p) of any p < 1/510, so
nodata 0 would hide real near-zero probabilities. No valid pixel is 0 in every band (its K values round(255 p)
sum to at least 255 - K/2 > 0 for the at most 255 classes of a uint8 class map).

GDAL's block cache (its ``GDAL_CACHEMAX``, 5 % of the RAM by default) keeps every block it decodes or writes
until the cap is reached, so a cap larger than what the work needs fills as the rows go by and the peak memory
grows with the raster's height up to it. Both caps here are what the work needs, a fixed number of rows: while the
rows are predicted (:func:`gdal_cache_bytes`) two block rows of the source and the output rows of one row of
windows; while a COG is laid out (:func:`copy_cache_bytes`, set by :meth:`StreamedCOG.finish`) two rows of 512-row
tiles of that file. A raster of about two source block rows fills them as much as one of any height. The cap
changes only when GDAL drops a block, never a byte of the output (tested).
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ctseg.data.definitions import DatasetInfo
from ctseg.io import set_default_mode
from ctseg.predict.failures import gdal_errors, native_stderr, write_error
from ctseg.predict.png import write_color_png, write_index_png
from ctseg.staging import low_on_space

__all__ = [
    "COG_BLOCK",
    "CLASSES_TAG",
    "OutputWriters",
    "StreamedCOG",
    "class_map_writer",
    "classes_tag",
    "copy_cache_bytes",
    "gdal_cache_bytes",
    "open_writers",
    "write_color_png",
    "write_error",
    "write_index_png",
    "write_prediction",
]

#: Tile side of the COG outputs.
COG_BLOCK = 512
#: Metadata tag of the class map / probabilities: a JSON list of the class names, in index order.
CLASSES_TAG = "CTSEG_CLASSES"
_STRIP_ROWS = 32


#: Smallest GDAL cache cap set (bytes; GDAL reads a ``GDAL_CACHEMAX`` below 100,000 as megabytes).
MIN_CACHE = 4 << 20
#: Largest GDAL cache cap set (bytes).
MAX_CACHE = 1 << 30


def _cap(need: int) -> int:
    return int(min(max(int(need), MIN_CACHE), MAX_CACHE))


def gdal_cache_bytes(
    width: int, window: int, *, source_bytes: int, source_block: tuple[int, int], output_bytes: int
) -> int:  # fmt: skip
    """GDAL's block cache while a raster ``width`` wide is predicted by rows of ``window``-row windows.

    * source: two block rows, ``2 · bh · (width + bw) · source_bytes`` for blocks of ``source_block = (bh, bw)``
      and ``source_bytes`` per pixel (all bands read). GDAL decodes the blocks of a read one block row at a time,
      and the next read (the next row of windows) starts in the block row where this one ended;
    * outputs: the rows of one row of windows and one 32-row strip, ``(window + 32) · width · output_bytes``,
      ``output_bytes`` per pixel of every output written through the cache (several-band files and masks; a
      block written is needed until its strip is complete).

    At least :data:`MIN_CACHE`, at most :data:`MAX_CACHE`. A fixed number of rows: no more for a taller raster.
    """
    bh, bw = (max(int(v), 1) for v in source_block)
    source = 2 * bh * (int(width) + bw) * int(source_bytes)
    return _cap(source + (int(window) + _STRIP_ROWS) * int(width) * int(output_bytes))


def copy_cache_bytes(width: int, bytes_per_px: int) -> int:
    """GDAL's block cache while one file ``width`` wide with ``bytes_per_px`` (all bands, and its mask) is laid
    out as a COG: two rows of 512-row tiles, ``2 · 512 · width · bytes_per_px`` (the streamed strips under a row
    of output tiles, and the row being written or reduced to an overview), at least :data:`MIN_CACHE`."""
    return _cap(2 * COG_BLOCK * int(width) * int(bytes_per_px))


def _write_block(dataset, data: np.ndarray, window) -> None:
    """One row band into the open intermediate file (a function of its own so tests can fail it)."""
    dataset.write(data, window=window)


def _write_mask(dataset, data: np.ndarray, window) -> None:
    """The validity mask of one row band: 255 where any band is non-zero, 0 (no-data) where every band is 0."""
    import rasterio

    valid = np.where(data.any(axis=0), np.uint8(255), np.uint8(0))
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):  # inside the GeoTIFF, not a .msk sidecar
        dataset.write_mask(valid, window=window)


def _temp_sibling(target: Path, suffix: str, folder: Path | None = None) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=suffix, dir=folder or target.parent)
    os.close(fd)
    return Path(name)


class StreamedCOG:
    """A ``count``-band raster written in row order and finished as a COG (module docstring).

    ``float16``: ``dtype`` float32 stored with 16 bits per sample (GDAL's half-precision GeoTIFF); the rows
    given must hold float16 values. ``colormap`` ``{value: (r, g, b, a)}`` for band 1; ``tags`` go to the
    dataset's default metadata domain; ``descriptions``: one per band. ``workdir``: a private folder for the
    temporary file and the finished COG (:attr:`staged`), instead of siblings of ``target`` and :meth:`commit`.
    ``mask_empty``: pixels 0 in every band are written as no-data to the file's mask (module docstring). Several
    bands are grey values (``PHOTOMETRIC=MINISBLACK``), never RGB(A): a 4th class is no alpha band.
    """

    def __init__(
        self,
        target: str | os.PathLike,
        *,
        height: int,
        width: int,
        count: int = 1,
        dtype: str = "uint8",
        crs=None,
        transform=None,
        nodata: float | None = None,
        float16: bool = False,
        colormap: dict | None = None,
        tags: dict[str, str] | None = None,
        descriptions: Sequence[str] | None = None,
        resampling: str = "nearest",
        workdir: str | os.PathLike | None = None,
        mask_empty: bool = False,
    ):
        import rasterio

        self.target = Path(target)
        self._workdir = None if workdir is None else Path(workdir)
        #: The finished COG in ``workdir`` (``None`` without one).
        self.staged = None if self._workdir is None else self._workdir / self.target.name
        self.height, self.width, self.count = int(height), int(width), int(count)
        self.rows_written = 0
        #: Bytes per pixel of the file in GDAL's cache: every band (float16 is held as float32) and the mask.
        self.bytes_per_px = self.count * np.dtype(dtype).itemsize + int(bool(mask_empty))
        self._resampling = resampling
        self._float16 = float16
        self._mask_empty = bool(mask_empty)
        self._final: Path | None = None
        self._ds = None
        self._printed = ""
        self._part: Path | None = None
        try:
            self._part = _temp_sibling(self.target, ".part.tif", self._workdir)
        except OSError as err:
            raise write_error(self.target, err) from None
        profile = {"driver": "GTiff", "height": self.height, "width": self.width, "count": self.count,
                   "dtype": dtype, "blockysize": min(_STRIP_ROWS, self.height), "compress": "zstd",
                   "zstd_level": 1, "bigtiff": "if_safer", "interleave": "band"}  # fmt: skip
        if float16:
            profile["nbits"] = 16
        if self.count > 1:  # bands of values: GDAL would read 3 or 4 uint8 bands as RGB(A), a 4th as alpha
            profile["photometric"] = "minisblack"
        if crs is not None:
            profile["crs"] = crs
        if transform is not None:
            profile["transform"] = transform
        if nodata is not None:
            profile["nodata"] = nodata
        printed: list[str] = []
        try:
            with native_stderr(echo=False) as printed, warnings.catch_warnings():
                warnings.simplefilter("ignore")  # NotGeoreferencedWarning for PNG input
                self._ds = rasterio.open(self._part, "w", **profile)
                if colormap is not None:
                    self._ds.write_colormap(1, colormap)
                if tags:
                    self._ds.update_tags(**tags)
                for i, text in enumerate(descriptions or (), start=1):
                    self._ds.set_band_description(i, str(text))
        except gdal_errors() as err:
            self._fail(err, printed)
        self._remember(printed)

    def _remember(self, printed: list[str]) -> None:
        """Keep the end of what GDAL printed during a call that succeeded: a later failure may be its sequel."""
        self._printed = (self._printed + " ".join(printed))[-4096:]

    def _fail(self, err: BaseException, printed: list[str]):
        """Remove the partial files and raise the one-line error of ``err``."""
        full = low_on_space(self._workdir or self.target.parent)  # before the partial files go
        self.abort()
        raise write_error(self.target, err, f"{self._printed} {' '.join(printed)}", full) from None

    def write(self, top: int, rows: np.ndarray) -> None:
        """Rows ``[top, top + n)``: ``(n, width)`` or ``(count, n, width)``, following the rows written so far."""
        from rasterio.windows import Window

        data = rows[None] if rows.ndim == 2 else rows
        if top != self.rows_written or data.shape[0] != self.count or data.shape[2] != self.width:
            raise ValueError(f"rows {top}.. of shape {data.shape} do not follow row {self.rows_written}")
        n = data.shape[1]
        printed: list[str] = []
        try:
            with native_stderr(echo=False) as printed:
                _write_block(self._ds, data, Window(0, top, self.width, n))
                if self._mask_empty:
                    _write_mask(self._ds, data, Window(0, top, self.width, n))
        except gdal_errors() as err:
            self._fail(err, printed)
        self._remember(printed)
        self.rows_written += n

    def finish(self) -> None:
        """Close the streamed file and lay it out as a COG: under a temporary name beside the target, or as
        :attr:`staged` in the ``workdir``."""
        import rasterio
        import rasterio.shutil

        if self.rows_written != self.height:
            raise ValueError(f"{self.target}: {self.rows_written} of {self.height} rows written")
        printed: list[str] = []
        try:
            with native_stderr(echo=False) as printed:
                ds, self._ds = self._ds, None
                ds.close()
                if self.staged is not None:
                    self._final = self.staged
                else:
                    self._final = _temp_sibling(self.target, f".tmp{self.target.suffix}")
                options = {"compress": "deflate", "blocksize": COG_BLOCK, "resampling": self._resampling,
                           "bigtiff": "if_safer"}  # fmt: skip
                if self._float16:
                    options["nbits"] = 16
                cache = copy_cache_bytes(self.width, self.bytes_per_px)  # not the height (module docstring)
                with warnings.catch_warnings(), rasterio.Env(GDAL_CACHEMAX=cache):
                    warnings.simplefilter("ignore")
                    rasterio.shutil.copy(self._part, self._final, driver="COG", **options)
        except gdal_errors() as err:
            self._fail(err, printed)
        self._part.unlink(missing_ok=True)
        set_default_mode(self._final)

    def commit(self) -> Path:
        """Rename the finished COG onto the target (without a ``workdir``)."""
        assert self._final is not None and self.staged is None, "finish() first, and no workdir"
        os.replace(self._final, self.target)
        self._final = None
        return self.target

    def abort(self) -> None:
        """Close and remove whatever was written (safe to call more than once)."""
        if self._ds is not None:
            ds, self._ds = self._ds, None
            try:
                with native_stderr(echo=False), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ds.close()
            except Exception:  # noqa: BLE001 - a full disk may fail the close too; the file goes anyway
                pass
        for path in (self._part, self._final):
            if path is not None:
                path.unlink(missing_ok=True)


def _colormap(info: DatasetInfo) -> dict[int, tuple[int, int, int, int]]:
    lut = info.palette()
    return {i: (*map(int, lut[i]), 255) for i in range(256)}


def classes_tag(info: DatasetInfo) -> dict[str, str]:
    """``{CLASSES_TAG: JSON list of the class names}`` (``ctseg vectorize`` reads the names from it)."""
    return {CLASSES_TAG: json.dumps(list(info.classes))}


def class_map_writer(
    target: Path, info: DatasetInfo, height: int, width: int, georef: dict, nodata: int | None,
    workdir: Path | None = None,
) -> StreamedCOG:  # fmt: skip
    """The uint8 class map COG: palette colour table, class names in :data:`CLASSES_TAG`, ``nodata`` (255)."""
    return StreamedCOG(
        target, height=height, width=width, crs=georef.get("crs"), transform=georef.get("transform"),
        nodata=nodata, colormap=_colormap(info), tags=classes_tag(info),
        descriptions=["class"], workdir=workdir,
    )  # fmt: skip


@dataclass
class OutputWriters:
    """The streamed outputs of one input (``None``: not asked for)."""

    classes: StreamedCOG | None = None
    probs: StreamedCOG | None = None
    conf: StreamedCOG | None = None

    def all(self) -> list[StreamedCOG]:
        return [w for w in (self.classes, self.probs, self.conf) if w is not None]


def open_writers(
    targets, info: DatasetInfo, height: int, width: int, georef: dict, nodata: bool, probs: str | None,
    workdir: Path | None = None,
) -> OutputWriters:  # fmt: skip
    """The COG writers ``targets`` (``classes`` / ``probs`` / ``conf`` paths) asks for; ``nodata``: whether the
    input has nodata (class 255, NaN probabilities or uint8 ones masked (module docstring), confidence 0);
    ``probs``: ``"uint8"`` or ``"float16"``;
    ``workdir``: where they write (:class:`StreamedCOG`)."""
    out = OutputWriters()
    geo = {"crs": georef.get("crs"), "transform": georef.get("transform"), "workdir": workdir}
    try:
        if targets.classes is not None:
            out.classes = class_map_writer(
                targets.classes, info, height, width, georef, 255 if nodata else None, workdir
            )
        if targets.probs is not None:
            half = probs == "float16"
            out.probs = StreamedCOG(
                targets.probs, height=height, width=width, count=info.num_classes, **geo,
                dtype="float32" if half else "uint8", float16=half, nodata=float("nan") if half and nodata else None,
                tags={**classes_tag(info), "CTSEG_PROBS": "p" if half else "round(255 p)"},
                descriptions=list(info.classes), resampling="average", mask_empty=nodata and not half,
            )  # fmt: skip
        if targets.conf is not None:
            out.conf = StreamedCOG(
                targets.conf, height=height, width=width, **geo, nodata=0 if nodata else None,
                tags={"CTSEG_CONFIDENCE": "round(255 max p)"}, descriptions=["confidence"], resampling="average",
            )  # fmt: skip
    except BaseException:
        for w in out.all():
            w.abort()
        raise
    return out


def write_prediction(
    pred: np.ndarray,
    georef: dict,
    info: DatasetInfo,
    tif_path: Path,
    png_path: Path | None,
    *,
    nodata: int | None = None,
) -> list[Path]:
    """Write a class map held in memory as a COG (and a palette PNG), each atomically; ``nodata``: the COG's."""
    height, width = pred.shape
    writer = class_map_writer(Path(tif_path), info, height, width, georef, nodata)
    try:
        writer.write(0, np.ascontiguousarray(pred, dtype=np.uint8))
        writer.finish()
    except BaseException:
        writer.abort()
        raise
    written = [writer.commit()]
    if png_path is not None:
        written.append(write_color_png(pred, info, Path(png_path)))
    return written
