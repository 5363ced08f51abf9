"""Cutting one source tile into crops: window geometry, the scored boxes of evaluation splits, crop files.

:func:`cut_tile` reads a tile's image and label raster whole; :class:`CropWriter` writes and counts the crops of
any tile whose windows come from elsewhere (``ctseg prepare vector`` reads and rasterises them one at a time).

Cropping: a ``crop`` × ``crop`` window moves by ``stride`` along rows and columns; the last window of each row and
column is aligned to the tile's border, so the whole tile is covered, every pixel of it (the last crops overlap
their neighbours when the tile size is not a multiple of the stride; no row or column is dropped). A tile
smaller than ``crop`` is padded at the bottom/right: image with 0, mask with ignore. Crops are then resized to
``resize`` × ``resize`` when asked: bilinear for images, nearest for masks (always — no invented labels).

**Evaluation splits** (every split but ``"train"``) are scored at the label's native resolution, each source
pixel once:

- their masks are never resized: a ``crop`` × ``crop`` mask (500 × 500 for ISPRS) beside its resized image
  (512 × 512); the model's logits are resized (bilinear) to the mask before scoring;
- pixels an earlier crop of the same tile already holds are set to ignore (255). Crops are numbered row-major
  over the row offsets ``r_0 < r_1 < …`` and column offsets ``c_0 < c_1 < …`` (:func:`crop_offsets`). The
  earlier row bands cover source rows ``[0, r_{i-1} + crop)`` over the whole width and the earlier crops of the
  same band columns ``[0, c_{j-1} + crop)``, so the new part of crop ``(i, j)`` is the rectangle
  ``mask[t_i:, l_j:]`` with ``t_i = max(0, r_{i-1} + crop − r_i)`` and ``l_j = max(0, c_{j-1} + crop − c_j)``
  (``t_0 = l_0 = 0``; :func:`scored_start`). The record's ``scored`` is ``[t_i, l_j, bottom, right]``, the
  scored box in crop pixels (half-open; ``bottom``/``right`` stop at the tile's border), and the boxes of a
  tile's crops partition the tile: ``Σ (bottom − t)(right − l) = H · W``. Training crops keep their overlaps.

**Nodata**: pixels where every image band equals the nodata value (and, in float images, pixels with a NaN or
infinite band, stored as 0) are ignore in the mask and left out of the band statistics; a crop with no valid
image pixel at all is not written (its scored box held only ignore pixels). **Files**: every image crop is a
``(C, H, W)`` pixel-interleaved TIFF (GDAL's GTiff driver, no georeference; 3-band uint8: photometric RGB),
ZSTD level 1 with the horizontal predictor (floating-point predictor for float bands) in 64-row strips
(:data:`TIFF_OPTIONS`), encoded in memory, then written by Python (a full disk is one ``OSError``, never GDAL's
messages on stderr); masks are single-channel uint8 PNGs of class indices (level :data:`PNG_LEVEL`). Folders
prepared before issue 33 hold 3-band uint8 images as RGB PNGs, which :func:`read_crop_image` still reads: the
pixels are the same either way (lossless both; RGB crops are resized by Pillow's RGB bilinear as before). A crop
that cannot be written (full disk, I/O error) raises :class:`CropWriteError`, which crosses the process pool as
one picklable line.

**Why a pixel is ignore** (:data:`IGNORE_CAUSES`, counted per tile in :func:`cut_tile`, each ignore pixel of a
written mask once, under the first that applies): ``padding`` — outside a source image smaller than the crop;
``overlap`` — an evaluation crop's pixel that an earlier, overlapping crop of the same tile already scores;
``nodata`` — no image data there; ``label`` — the data set's own ignore label (an ignore colour or value).
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ctseg.data.definitions import DatasetInfo
from ctseg.data.labels import decode_index, decode_label
from ctseg.data.manifest import IGNORE_CAUSES
from ctseg.data.raster import nodata_mask, read_header, read_image, read_index, read_rgb, uses_pillow
from ctseg.data.registry import CropSettings, SourceTile
from ctseg.data.splits import is_eval_split
from ctseg.errors import CtsegError

#: PNG compression level of the mask crops (and of the RGB image crops of folders prepared before issue 33).
PNG_LEVEL = 1
#: GTiff creation options of the image crops (the predictor is added per dtype). Issue 33
#: (``benchmarks/crop_format.py``, ``benchmarks/README.md``): a 512² RGB Dubai crop is written and read back
#: ~4× faster than as a level-1 PNG (Pillow's PNG encoder spends most of its time on filtering and deflate), at
#: ~1.2× its size; GDAL, QGIS, libtiff and Pillow open it.
TIFF_OPTIONS: dict[str, Any] = {"compress": "zstd", "zstd_level": 1, "blockysize": 64, "interleave": "pixel"}
#: Suffix of the image crops of every data set (``.png`` for 3-band uint8 ones before issue 33, still read).
IMAGE_SUFFIX = ".tif"
#: Codes of :func:`cut_tile`'s per-pixel cause map (0: a labelled pixel).
_PADDING, _OVERLAP, _NODATA, _LABEL = 1, 2, 3, 4


class CropWriteError(CtsegError):
    """A crop file could not be written (``errno``, the OS reason, the crop's file name): raised in a worker of
    the pool, re-raised by the driver as one line naming the destination (a full disk said as such)."""

    def __init__(self, errno: int | None, reason: str, crop: str) -> None:
        super().__init__(errno, reason, crop)  # the args rebuild it on the other side of the process pool
        self.errno, self.reason, self.crop = errno, reason, crop

    def __str__(self) -> str:
        return f"crop {self.crop} cannot be written ({self.reason})"


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    try:
        yield
    except OSError as err:
        raise CropWriteError(err.errno, err.strerror or str(err), path.name) from None


def crop_offsets(length: int, crop: int, stride: int) -> list[int]:
    """Start positions of windows of ``crop`` every ``stride`` along ``length``; the last ends at the border.

    ``crop_offsets(6000, 500, 500)`` → 0, 500, …, 5500 (12 windows); ``crop_offsets(1100, 500, 500)`` →
    0, 500, 600; a length not larger than ``crop`` gives the single offset 0 (the crop is then padded).
    """
    if length <= crop:
        return [0]
    offsets = list(range(0, length - crop, stride))
    offsets.append(length - crop)
    return offsets


def scored_start(offsets: Sequence[int], index: int, crop: int) -> int:
    """First crop pixel of window ``index`` along one axis that no earlier window covers.

    ``t_i = max(0, o_{i-1} + crop − o_i)`` and ``t_0 = 0`` for the offsets ``o`` of :func:`crop_offsets`
    (sorted, gaps never larger than ``crop``): ``scored_start([0, 500, 600], 2, 500)`` → 400, since window 1
    already holds source pixels 500–999 and window 2 starts at 600.
    """
    if index == 0:
        return 0
    return max(0, offsets[index - 1] + crop - offsets[index])


def _window(array: np.ndarray, row: int, col: int, crop: int, fill: int) -> np.ndarray:
    part = array[row : row + crop, col : col + crop]
    if part.shape[0] == crop and part.shape[1] == crop:
        return np.ascontiguousarray(part)
    out = np.full((crop, crop, *array.shape[2:]), fill, dtype=array.dtype)
    out[: part.shape[0], : part.shape[1]] = part
    return out


def safe_name(tile: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", tile)


def _resize_bands(array: np.ndarray, size: int) -> np.ndarray:
    """(H, W, C) any dtype → (size, size, C) bilinear per band (Pillow float mode), rounded back for integers."""
    out = np.empty((size, size, array.shape[2]), dtype=array.dtype)
    for b in range(array.shape[2]):
        band = Image.fromarray(array[..., b].astype(np.float32), mode="F").resize(
            (size, size), Image.Resampling.BILINEAR
        )
        values = np.asarray(band)
        if np.issubdtype(array.dtype, np.integer):
            limits = np.iinfo(array.dtype)
            values = np.clip(np.rint(values), limits.min, limits.max)
        out[..., b] = values
    return out


def _is_rgb(array: np.ndarray) -> bool:
    return array.ndim == 3 and array.shape[2] == 3 and array.dtype == np.uint8


def resize_image(array: np.ndarray, size: int) -> np.ndarray:
    """(H, W, C) → (size, size, C), bilinear: 3 × uint8 through Pillow's RGB resize (the pixels ctseg's RGB crops
    have always had), any other band count / dtype per band in float (:func:`_resize_bands`)."""
    if _is_rgb(array):
        return np.asarray(Image.fromarray(array).resize((size, size), Image.Resampling.BILINEAR))
    return _resize_bands(array, size)


def encode_tiff(array: np.ndarray) -> bytes:
    """An (H, W, C) image crop as the bytes of a (C, H, W) TIFF with :data:`TIFF_OPTIONS` (module docstring).

    Predictor 2 (horizontal differencing, per sample) for integers, 3 (floating point) for floats; lossless.
    """
    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.io import MemoryFile

    height, width, count = array.shape
    predictor = 2 if np.issubdtype(array.dtype, np.integer) else 3
    with warnings.catch_warnings(), MemoryFile() as memory:
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with memory.open(
            driver="GTiff", height=height, width=width, count=count, dtype=array.dtype.name, predictor=predictor,
            **TIFF_OPTIONS,
        ) as dst:  # fmt: skip
            dst.write(np.moveaxis(array, -1, 0))
        return memory.read()


def save_image(array: np.ndarray, path: Path, resize: int | None) -> None:
    """Write an (H, W, C) image crop as a TIFF (:func:`encode_tiff`), resized first when ``resize`` asks.

    Encoded in memory and written by Python: a full disk is an ``OSError`` (GDAL / libtiff would print to
    stderr).
    """
    if resize is not None and array.shape[:2] != (resize, resize):
        array = resize_image(array, resize)
    path.write_bytes(encode_tiff(array))


def read_crop_image(path: Path) -> np.ndarray:
    """A written image crop back as (C, H, W) in its dtype: a TIFF, or an RGB PNG (folders prepared before
    issue 33)."""
    if path.suffix == ".png":
        with Image.open(path) as im:
            if im.mode != "RGB":
                raise CtsegError(f"{path}: expected an RGB PNG, found mode {im.mode}; prepare the data again")
            return np.array(im).transpose(2, 0, 1)
    from ctseg.data.raster import open_raster

    with open_raster(path) as ds:
        return ds.read()


def read_tile(tile: SourceTile, info: DatasetInfo) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(image (H, W, C), class-index mask (H, W) uint8, valid pixels (H, W) bool or None) of one source tile.

    Bands: ``info.band_indices``, else the first ``info.bands``. Nodata: ``info.nodata``, else the image's own.
    """
    if (info.bands, info.dtype) == (3, "uint8") and info.band_indices is None:
        # RGB data sets read as every ctseg did: palette, grey and RGBA images converted to RGB
        image = read_rgb(tile.image)
        file_nodata = None if uses_pillow(tile.image) else read_header(tile.image).nodata
    else:
        image, file_nodata = read_image(tile.image, info.band_indices or tuple(range(1, info.bands + 1)))
    if image.dtype.name != info.dtype:
        raise CtsegError(
            f"{tile.image}: {image.dtype.name} pixels, but {info.name} holds {info.dtype} images; convert it or "
            "prepare it as a data set of its own"
        )
    if info.label_kind == "index":
        mask = decode_index(read_index(tile.label), info, tile.label)
    else:
        mask = decode_label(read_rgb(tile.label, label=True), info, tile.label)
    if image.shape[:2] != mask.shape:
        raise CtsegError(
            f"{tile.label}: label is {mask.shape[0]}×{mask.shape[1]} but its image {tile.image.name} is "
            f"{image.shape[0]}×{image.shape[1]} (height×width)"
        )
    invalid = nodata_mask(image, info.nodata if info.nodata is not None else file_nodata)
    if np.issubdtype(image.dtype, np.floating):  # NaN / inf anywhere in a pixel: nodata, stored as 0
        finite = np.isfinite(image)
        if not finite.all():
            broken = ~finite.all(axis=-1)
            image = image.copy()
            image[broken] = 0
            invalid = broken if invalid is None else (invalid | broken)
    if invalid is not None and invalid.any():
        mask[invalid] = info.ignore_index
    return image, mask, (None if invalid is None else ~invalid)


class CropWriter:
    """Writes the crops of one ``height`` × ``width`` tile into ``out`` and counts what they hold — the part of
    :func:`cut_tile` that any source of windows shares (``ctseg prepare vector`` rasterises its masks per window).

    Windows start at :attr:`rows` × :attr:`cols` (:func:`crop_offsets`); :meth:`add` takes each one's image and
    mask, :meth:`result` returns the tile's record (:func:`cut_tile`'s).
    """

    def __init__(self, tile: SourceTile, info: DatasetInfo, settings: CropSettings, out: Path, height: int,
                 width: int) -> None:  # fmt: skip
        self.tile, self.info, self.settings, self.out = tile, info, settings, out
        self.height, self.width = height, width
        #: Start rows of the windows (:func:`crop_offsets` along the height).
        self.rows = crop_offsets(height, settings.crop, settings.stride)
        #: Start columns of the windows (:func:`crop_offsets` along the width).
        self.cols = crop_offsets(width, settings.crop, settings.stride)
        self.name, self.suffix = safe_name(tile.tile), IMAGE_SUFFIX
        self.evaluation = is_eval_split(tile.split)
        self.counts = np.zeros(256, dtype=np.int64)
        self.causes = np.zeros(len(IGNORE_CAUSES) + 1, dtype=np.int64)  # [labelled, padding, overlap, nodata, label]
        self.records: list[dict[str, Any]] = []

    def add(self, i: int, j: int, image: np.ndarray, mask: np.ndarray, valid: np.ndarray | None) -> None:
        """Write window ``(i, j)`` (at ``rows[i]``, ``cols[j]``): ``image`` (h, w, C), ``mask`` (h, w) uint8 class
        indices, ignore where not ``valid`` (h, w, or ``None``: all valid); h, w are under the crop size only where
        the tile is smaller. A window without a valid pixel is not written."""
        if valid is not None and not valid.any():
            return  # all nodata: nothing to learn or score
        info, crop = self.info, self.settings.crop
        row, col = self.rows[i], self.cols[j]
        cause = np.where(mask == info.ignore_index, _LABEL, 0).astype(np.uint8)
        if valid is not None:
            cause[~valid] = _NODATA
        stem = f"{self.name}_r{row:05d}_c{col:05d}"
        image_crop = _window(image, 0, 0, crop, 0)
        mask_crop = _window(mask, 0, 0, crop, info.ignore_index)
        cause_crop = _window(cause, 0, 0, crop, _PADDING)
        image_path = self.out / "images" / f"{stem}{self.suffix}"
        with _writing(image_path):
            save_image(image_crop, image_path, self.settings.resize)
        record: dict[str, Any] = {
            "image": f"images/{stem}{self.suffix}",
            "mask": f"masks/{stem}.png",
            "tile": self.tile.tile,
            "group": self.tile.group,
            "offset": [row, col],
            "split": self.tile.split,
        }
        if self.evaluation:  # native size; pixels an earlier crop holds → ignore (a copy: never the caller's mask)
            top, left = scored_start(self.rows, i, crop), scored_start(self.cols, j, crop)
            mask_crop = mask_crop.copy()
            mask_crop[:top] = info.ignore_index
            mask_crop[:, :left] = info.ignore_index
            covered = np.zeros(cause_crop.shape, dtype=bool)
            covered[:top] = True
            covered[:, :left] = True
            cause_crop[covered & (cause_crop != _PADDING)] = _OVERLAP
            record["scored"] = [top, left, min(crop, self.height - row), min(crop, self.width - col)]
            mask_im = Image.fromarray(mask_crop)
            cause_im = Image.fromarray(cause_crop)
        else:
            mask_im = Image.fromarray(mask_crop)
            cause_im = Image.fromarray(cause_crop)
            if self.settings.resize is not None and self.settings.resize != crop:
                size = (self.settings.resize, self.settings.resize)  # the same nearest sampling for both
                mask_im = mask_im.resize(size, Image.Resampling.NEAREST)
                cause_im = cause_im.resize(size, Image.Resampling.NEAREST)
        self.counts += np.bincount(np.asarray(mask_im).ravel(), minlength=256)
        self.causes += np.bincount(np.asarray(cause_im).ravel(), minlength=len(self.causes))
        mask_path = self.out / "masks" / f"{stem}.png"
        with _writing(mask_path):
            mask_im.save(mask_path, format="PNG", compress_level=PNG_LEVEL)
        self.records.append(record)

    def result(self, stats: tuple | None) -> dict[str, Any]:
        """The tile's record: :func:`cut_tile`'s return value."""
        return {
            "tile": self.tile.tile, "height": self.height, "width": self.width, "records": self.records,
            "counts": self.counts, "stats": stats,
            "causes": dict(zip(IGNORE_CAUSES, (int(n) for n in self.causes[1:]), strict=True)),
        }  # fmt: skip


def cut_tile(
    tile: SourceTile, info: DatasetInfo, settings: CropSettings, out: Path, with_stats: bool = True
) -> dict[str, Any]:
    """Read, decode and crop one tile into ``out``; returns its crop records, pixel counts per class index, the
    ignore pixels of its masks by cause (``causes``: :data:`IGNORE_CAUSES` → count) and, ``with_stats``, per-band
    sums over its valid pixels (``stats``: count, Σx, Σx² on the ``x / scale`` scale, float64; else ``None`` — they
    take two float64 copies of the tile).

    Evaluation-split masks are kept at crop size and their already-covered part set to ignore (module docstring).
    A crop that cannot be written raises :class:`CropWriteError`.
    """
    image, mask, valid = read_tile(tile, info)
    height, width = mask.shape
    stats = None
    if with_stats:
        pixels = image.reshape(-1, image.shape[2]) if valid is None else image[valid]
        scaled = pixels.astype(np.float64) / info.scale
        stats = (int(scaled.shape[0]), scaled.sum(axis=0), np.square(scaled).sum(axis=0))
        del pixels, scaled
    writer = CropWriter(tile, info, settings, out, height, width)
    crop = settings.crop
    for i, row in enumerate(writer.rows):
        for j, col in enumerate(writer.cols):
            window = (slice(row, row + crop), slice(col, col + crop))
            writer.add(i, j, image[window], mask[window], None if valid is None else valid[window])
    return writer.result(stats)
