"""Output files of ``ctseg predict``: Cloud-Optimized GeoTIFFs written row band by row band, and PNGs.

:class:`StreamedCOG` takes the rows of a raster in order (``write(top, rows)``) and writes them straight into a
temporary striped GeoTIFF beside the target (ZSTD level 1, 32-row strips: a few rows are ever in memory), then
``finish()`` lays it out as a COG (GDAL's COG driver: 512 × 512 tiles, DEFLATE, internal overviews down to one
tile — nearest resampling for class maps, average for probabilities / confidence — the IFDs and tiles in the
order a reader over HTTP wants), still under a temporary name, and ``commit()`` renames it into place. Any
failure (a full disk included) removes both temporary files and is one line naming the output.

How much GDAL caches while reading and writing is bounded per file (:func:`gdal_cache_bytes`): a few block rows,
not the raster.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ctseg.data.definitions import DatasetInfo
from ctseg.errors import CtsegError
from ctseg.io import atomic_path, set_default_mode
from ctseg.predict_io import error_text

__all__ = [
    "COG_BLOCK",
    "CLASSES_TAG",
    "OutputWriters",
    "StreamedCOG",
    "class_map_writer",
    "classes_tag",
    "gdal_cache_bytes",
    "open_writers",
    "write_color_png",
    "write_index_png",
    "write_prediction",
]

#: Tile side of the COG outputs.
COG_BLOCK = 512
#: Metadata tag of the class map / probabilities: a JSON list of the class names, in index order.
CLASSES_TAG = "CTSEG_CLASSES"
_STRIP_ROWS = 32


def gdal_cache_bytes(width: int, bytes_per_px: int, window: int) -> int:
    """GDAL's block cache for one file: ``window + 2 × 512`` full-width rows (two rows of source tiles while a
    row of windows is read, a row of output tiles while the COG is laid out) of ``bytes_per_px`` (all bands of
    the source and the outputs), at least 16 MiB, at most 1 GiB."""
    need = (window + 2 * COG_BLOCK) * int(width) * int(bytes_per_px)
    return int(min(max(need, 16 << 20), 1 << 30))


def _no_space(err: BaseException) -> bool:
    text = f"{err} {error_text(err)}".lower()
    return getattr(err, "errno", None) == errno.ENOSPC or "no space left" in text or "free disk space" in text


def write_error(target: Path, err: BaseException) -> CtsegError:
    """The one-line error of a failed write of ``target`` (whose partial files are gone)."""
    if _no_space(err):
        return CtsegError(
            f"cannot write {target}: no space left on device; the partial output was removed (free some space or "
            "choose another --out)"
        )
    return CtsegError(f"cannot write {target} ({error_text(err)}); the partial output was removed")


def _write_block(dataset, data: np.ndarray, window) -> None:
    """One row band into the open intermediate file (a function of its own so tests can fail it)."""
    dataset.write(data, window=window)


def _temp_sibling(target: Path, suffix: str) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    return Path(name)


class StreamedCOG:
    """A ``count``-band raster written in row order and finished as a COG (module docstring).

    ``float16``: ``dtype`` float32 stored with 16 bits per sample (GDAL's half-precision GeoTIFF); the rows
    given must hold float16 values. ``colormap`` ``{value: (r, g, b, a)}`` for band 1; ``tags`` go to the
    dataset's default metadata domain; ``descriptions``: one per band.
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
    ):
        import rasterio
        from rasterio.errors import RasterioError

        self.target = Path(target)
        self.height, self.width, self.count = int(height), int(width), int(count)
        self.rows_written = 0
        self._resampling = resampling
        self._float16 = float16
        self._final: Path | None = None
        self._ds = None
        self._part = _temp_sibling(self.target, ".part.tif")
        profile = {"driver": "GTiff", "height": self.height, "width": self.width, "count": self.count,
                   "dtype": dtype, "blockysize": min(_STRIP_ROWS, self.height), "compress": "zstd",
                   "zstd_level": 1, "bigtiff": "if_safer", "interleave": "band"}  # fmt: skip
        if float16:
            profile["nbits"] = 16
        if crs is not None:
            profile["crs"] = crs
        if transform is not None:
            profile["transform"] = transform
        if nodata is not None:
            profile["nodata"] = nodata
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # NotGeoreferencedWarning for PNG input
                self._ds = rasterio.open(self._part, "w", **profile)
                if colormap is not None:
                    self._ds.write_colormap(1, colormap)
                if tags:
                    self._ds.update_tags(**tags)
                for i, text in enumerate(descriptions or (), start=1):
                    self._ds.set_band_description(i, str(text))
        except (RasterioError, OSError) as err:
            self.abort()
            raise write_error(self.target, err) from None

    def write(self, top: int, rows: np.ndarray) -> None:
        """Rows ``[top, top + n)``: ``(n, width)`` or ``(count, n, width)``, following the rows written so far."""
        from rasterio.errors import RasterioError
        from rasterio.windows import Window

        data = rows[None] if rows.ndim == 2 else rows
        if top != self.rows_written or data.shape[0] != self.count or data.shape[2] != self.width:
            raise ValueError(f"rows {top}.. of shape {data.shape} do not follow row {self.rows_written}")
        n = data.shape[1]
        try:
            _write_block(self._ds, data, Window(0, top, self.width, n))
        except (RasterioError, OSError) as err:
            self.abort()
            raise write_error(self.target, err) from None
        self.rows_written += n

    def finish(self) -> None:
        """Close the streamed file and lay it out as a COG beside the target (still under a temporary name)."""
        import rasterio.shutil
        from rasterio.errors import RasterioError

        if self.rows_written != self.height:
            raise ValueError(f"{self.target}: {self.rows_written} of {self.height} rows written")
        try:
            ds, self._ds = self._ds, None
            ds.close()
            self._final = _temp_sibling(self.target, f".tmp{self.target.suffix}")
            options = {"compress": "deflate", "blocksize": COG_BLOCK, "resampling": self._resampling,
                       "bigtiff": "if_safer"}  # fmt: skip
            if self._float16:
                options["nbits"] = 16
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rasterio.shutil.copy(self._part, self._final, driver="COG", **options)
        except (RasterioError, OSError) as err:
            self.abort()
            raise write_error(self.target, err) from None
        self._part.unlink(missing_ok=True)

    def commit(self) -> Path:
        """Rename the finished COG onto the target."""
        assert self._final is not None, "finish() first"
        set_default_mode(self._final)
        os.replace(self._final, self.target)
        self._final = None
        return self.target

    def abort(self) -> None:
        """Close and remove whatever was written (safe to call more than once)."""
        if self._ds is not None:
            ds, self._ds = self._ds, None
            try:
                with warnings.catch_warnings():
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
    target: Path, info: DatasetInfo, height: int, width: int, georef: dict, nodata: int | None
) -> StreamedCOG:
    """The uint8 class map COG: palette colour table, class names in :data:`CLASSES_TAG`, ``nodata`` (255)."""
    return StreamedCOG(
        target, height=height, width=width, crs=georef.get("crs"), transform=georef.get("transform"),
        nodata=nodata, colormap=_colormap(info), tags=classes_tag(info),
        descriptions=["class"],
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
    targets, info: DatasetInfo, height: int, width: int, georef: dict, nodata: bool, probs: str | None
) -> OutputWriters:
    """The COG writers ``targets`` (``classes`` / ``probs`` / ``conf`` paths) asks for; ``nodata``: whether the
    input has nodata (class 255, NaN probabilities, confidence 0); ``probs``: ``"uint8"`` or ``"float16"``."""
    out, geo = OutputWriters(), {"crs": georef.get("crs"), "transform": georef.get("transform")}
    try:
        if targets.classes is not None:
            out.classes = class_map_writer(targets.classes, info, height, width, georef, 255 if nodata else None)
        if targets.probs is not None:
            half = probs == "float16"
            out.probs = StreamedCOG(
                targets.probs, height=height, width=width, count=info.num_classes, **geo,
                dtype="float32" if half else "uint8", float16=half, nodata=float("nan") if half and nodata else None,
                tags={**classes_tag(info), "CTSEG_PROBS": "p" if half else "round(255 p)"},
                descriptions=list(info.classes), resampling="average",
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


def _png_image(pred: np.ndarray, mode: str):
    """A Pillow image (mode ``"P"`` or ``"L"``) over the uint8 class map's own memory: no full-size copy."""
    from PIL import Image

    data = np.ascontiguousarray(pred, dtype=np.uint8)
    height, width = data.shape
    return Image.frombuffer(mode, (width, height), data, "raw", mode, 0, 1)


def write_color_png(pred: np.ndarray, info: DatasetInfo, path: Path) -> Path:
    """The class map as a palette PNG in the data set's colours, written atomically."""
    img = _png_image(pred, "P")
    img.putpalette(info.palette().reshape(-1).tolist())
    _save_png(img, path)
    return path


def _save_png(img, path: Path) -> None:
    try:
        with atomic_path(path) as tmp:
            img.save(tmp, format="PNG")
    except OSError as err:  # the temporary file is gone (atomic_path)
        raise write_error(path, err) from None


def write_index_png(pred: np.ndarray, path: Path) -> list[Path]:
    """Write the class map as a uint8 single-channel PNG of class indices (LoveDA's test-server format)."""
    _save_png(_png_image(pred, "L"), path)
    return [path]
