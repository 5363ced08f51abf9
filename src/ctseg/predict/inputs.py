"""Inputs of ``ctseg predict``: what a file holds, which of its bands feed the model, nodata, the data set.

PNG / JPEG (and BMP / GIF / WebP) files are read with Pillow, in full; everything else — GeoTIFF, JPEG 2000,
a VRT mosaic of many tiles, any raster GDAL reads — with rasterio, by windows (:mod:`ctseg.inference.rows`). The
band rules (``--bands``, the checkpoint's ``band_indices``, Pillow's RGB modes) and the nodata rules are those
of :mod:`ctseg.predict.run`'s docstring.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ctseg.data.definitions import DATASETS, DatasetInfo, generic_colors, get_dataset_info
from ctseg.data.raster import NODATA_CLASS, error_text, nodata_pixels
from ctseg.errors import CtsegError
from ctseg.safety.remote import RasterSource

__all__ = [
    "FORMATS",
    "NODATA_CLASS",
    "NO_NODATA",
    "ImageHeader",
    "check_decodable",
    "check_header",
    "error_text",
    "fallback_info",
    "inspect_image",
    "nodata_pixels",
    "open_raster",
    "parse_bands",
    "parse_nodata",
    "plan_bands",
    "read_image",
    "resolve_info",
    "uses_pillow",
]

GEOTIFF_SUFFIXES = (".tif", ".tiff")
#: Read with Pillow (in full); every other suffix is read with rasterio / GDAL, by windows.
PILLOW_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
#: Output formats of :func:`~ctseg.predict.run.run_predict`.
FORMATS = ("geotiff", "index-png")
#: Pillow modes read through an RGB conversion (their band count is 3).
_PILLOW_AS_RGB = ("P", "PA", "CMYK", "YCbCr", "1")
#: Pillow modes whose first three bands are RGB (a 3-band model reads those without ``--bands``).
_PILLOW_RGB_FIRST = ("RGB", "RGBA", "RGBX", *_PILLOW_AS_RGB)
_PILLOW_8BIT = ("RGB", "RGBA", "RGBX", "L", "LA", *_PILLOW_AS_RGB)
_PILLOW_16BIT = ("I;16", "I;16L", "I;16B")


@dataclass(frozen=True)
class ImageHeader:
    """What an input file holds, read without decoding the pixels.

    ``nodata``: the raster's own nodata value (GeoTIFF; ``None`` for Pillow formats). ``mode``: the Pillow mode
    (``None`` for rasters read with rasterio). ``georeferenced``: the raster has a CRS or a geotransform other
    than the identity (``False`` for Pillow formats). ``path`` is a :class:`~ctseg.safety.remote.RasterSource`
    for a raster by address or a STAC item's asset. ``window``: ``(col, row, width, height)`` of the region to
    predict (``--bbox`` / ``--aoi``; ``height`` / ``width`` are then the window's), ``clip``: an ``--aoi``'s
    polygons in the raster's CRS (:mod:`ctseg.predict.region`).
    """

    path: Path
    bands: int
    dtype: str
    height: int
    width: int
    description: str  # e.g. "3 bands uint8" or "Pillow mode RGBA"
    nodata: float | None = None
    mode: str | None = None
    georeferenced: bool = True
    window: tuple[int, int, int, int] | None = None
    clip: tuple | None = None


def fallback_info(class_names: Sequence[str], bands: int = 3) -> DatasetInfo:
    """A :class:`DatasetInfo` with generic colours and ImageNet normalisation (RGB) for an unknown data set."""
    if bands != 3:
        raise CtsegError(f"no normalisation is known for a {bands}-band model without a data set description")
    return DatasetInfo(name="unknown", classes=tuple(class_names), colors=generic_colors(len(class_names)))


def uses_pillow(path: Path) -> bool:
    """True for local PNG / JPEG (and BMP / GIF / WebP) files, read with Pillow; others are GDAL rasters."""
    return not isinstance(path, RasterSource) and Path(path).suffix.lower() in PILLOW_SUFFIXES


def _raster_error(path: Path, err: BaseException) -> CtsegError:
    kind = "GeoTIFF" if path.suffix.lower() in GEOTIFF_SUFFIXES else "raster (GDAL)"
    return CtsegError(f"input {path} cannot be read as a {kind} ({error_text(err)})")


@contextlib.contextmanager
def open_raster(path: Path) -> Iterator:
    """``rasterio.open(path)`` with GDAL's warnings silenced; an unreadable file is a one-line error. Opened through
    :func:`ctseg.safety.rasters.open_raster`: a VRT's sources are checked first, the driver is allow-listed; a
    :class:`~ctseg.safety.remote.RasterSource` through :func:`ctseg.safety.remote.open_source`."""
    from rasterio.errors import RasterioError

    from ctseg.safety.rasters import open_raster as open_checked
    from ctseg.safety.remote import open_source

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if isinstance(path, RasterSource):
            with open_source(path) as src:
                yield src
            return
        try:
            src = open_checked(path)
        except RasterioError as err:
            raise _raster_error(path, err) from None
        with src:
            yield src


def _bands_text(n: int) -> str:
    return f"{n} band{'s' if n != 1 else ''}"


def inspect_image(path: str | os.PathLike) -> ImageHeader:
    """Open ``path`` far enough to know its bands, dtype, size and nodata; unreadable files are a one-line error."""
    path = path if isinstance(path, RasterSource) else Path(path)
    if not isinstance(path, RasterSource) and not path.is_file():
        raise CtsegError(f"input {path} does not exist or is not a file")
    if not uses_pillow(path):
        with open_raster(path) as src:
            dtypes = set(src.dtypes)
            dtype = src.dtypes[0] if len(dtypes) == 1 else "/".join(sorted(dtypes))
            return ImageHeader(
                path, src.count, dtype, src.height, src.width, f"{_bands_text(src.count)} {dtype}", src.nodata,
                georeferenced=bool(src.crs) or not src.transform.is_identity,
            )  # fmt: skip
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            mode = img.mode
            bands = 3 if mode in _PILLOW_AS_RGB else len(img.getbands())
            width, height = img.size
            img.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        msg = " ".join(str(err).split()) or type(err).__name__
        raise CtsegError(f"input {path} cannot be read as an image ({msg})") from None
    if mode in _PILLOW_8BIT:
        dtype = "uint8"
    elif mode in _PILLOW_16BIT:
        dtype = "uint16"
    elif mode == "F":
        dtype = "float32"
    elif mode == "I":
        dtype = "int32"
    else:
        dtype = mode
    return ImageHeader(path, bands, dtype, height, width, f"Pillow mode {mode}", None, mode, georeferenced=False)


def _dtype_fix(have: str, want: str) -> str:
    if have == "uint16" and want == "uint8":
        return "rescale it to 8 bits (e.g. gdal_translate -ot Byte -scale), or use a model trained on 16-bit images"
    if have == "uint8" and want == "uint16":
        return "give the 16-bit source image (an 8-bit copy would be read as 16-bit values), or use an 8-bit model"
    return f"convert it to {want} as the training images were, or use a model trained on {have} images"


def _holds(header: ImageHeader) -> str:
    """``"4 bands uint16"`` or ``"4 bands uint8 (Pillow mode RGBA)"``."""
    text = f"{_bands_text(header.bands)} {header.dtype}"
    return text if header.mode is None else f"{text} ({header.description})"


def plan_bands(header: ImageHeader, info: DatasetInfo, bands: Sequence[int] | None = None) -> tuple[int, ...]:
    """The 1-based bands of ``header``'s file to feed a model of ``info``'s band layout, in order.

    Raises a one-line :class:`CtsegError` naming the file and the fix when the dtype differs, ``bands`` names a
    band the file lacks, or the file's band count does not fit (module docstring: the rules).
    """
    path, holds = header.path, _holds(header)
    layout = f"{info.band_layout()} images ({info.name})"
    if header.dtype != info.dtype:
        raise CtsegError(
            f"input {path} holds {holds}; the model takes {layout}: {_dtype_fix(header.dtype, info.dtype)}"
        )
    count = header.bands
    if bands is not None:
        bad = [b for b in bands if not 1 <= b <= count]
        if bad:
            raise CtsegError(
                f"--bands {','.join(map(str, bands))}: input {path} holds {holds}, numbered 1-{count}; "
                f"band {bad[0]} does not exist"
            )
        return tuple(bands)
    if info.band_indices is not None:
        if all(1 <= b <= count for b in info.band_indices):
            return tuple(info.band_indices)
        raise CtsegError(
            f"input {path} holds {holds}; the model reads source bands {','.join(map(str, info.band_indices))} "
            f"({_bands_text(info.bands)} {info.dtype}, {info.name}): give the source image, or pass --bands with "
            f"{info.bands} of bands 1-{count} if this file holds them already"
        )
    if count == info.bands:
        return tuple(range(1, count + 1))
    if info.bands == 3 and header.mode in _PILLOW_RGB_FIRST:
        return (1, 2, 3)
    if count > info.bands:
        example = ",".join(str(b) for b in range(1, info.bands + 1))
        raise CtsegError(
            f"input {path} holds {holds}; the model takes {layout}: pass --bands with {info.bands} of bands "
            f"1-{count} in the training order, e.g. --bands {example}"
        )
    raise CtsegError(
        f"input {path} holds {holds}; the model takes {layout}: give an image with {_bands_text(info.bands)}"
    )


def check_header(header: ImageHeader, info: DatasetInfo | None = None, bands: Sequence[int] | None = None) -> None:
    """Raise a one-line error unless the file fits ``info``'s band layout (default: three 8-bit bands)."""
    plan_bands(header, info or fallback_info(["class_0"]), bands)


def check_decodable(header: ImageHeader) -> None:
    """Raise a one-line error for an input that would fail to decode half-way.

    PNG / JPEG are decoded in full (they are small next to the model's work); a GDAL raster's last row of pixels
    is read (a truncated or cut-off file fails there; a whole-raster read here would double the I/O), the last row
    of its ``window`` for a region. A raster damaged in the middle is found while it is predicted
    (:class:`ctseg.inference.rows.RasterRows`), as is a raster by address (opened, but not read twice here).
    """
    path = header.path
    if isinstance(path, RasterSource) and path.remote:
        return
    if not uses_pillow(path):
        from rasterio.errors import RasterioError
        from rasterio.windows import Window

        with open_raster(path) as src:
            col, row, width, height = header.window or (0, 0, src.width, src.height)
            try:
                src.read(window=Window(col, row + height - 1, width, 1))
            except RasterioError as err:
                raise _raster_error(path, err) from None
        return
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
    except (OSError, SyntaxError, ValueError) as err:
        msg = " ".join(str(err).split()) or type(err).__name__
        raise CtsegError(f"input {path} cannot be read as an image ({msg})") from None


def read_image(
    path: str | os.PathLike, bands: Sequence[int] | None = None, info: DatasetInfo | None = None
) -> tuple[np.ndarray, dict]:
    """``((C, H, W) array, georef)``, the whole file in memory: the bands :func:`plan_bands` picks for ``info``
    (default: three 8-bit bands), in the file's dtype; ``georef`` holds ``crs``, ``transform`` (both ``None`` for
    PNG / JPEG) and the raster's ``nodata``. ``ctseg predict`` reads GDAL rasters by windows instead."""
    path = Path(path)
    header = inspect_image(path)
    indices = list(plan_bands(header, info or fallback_info(["class_0"]), bands))
    if not uses_pillow(path):
        from rasterio.errors import RasterioError

        with open_raster(path) as src:
            try:
                data = src.read(indices)
            except RasterioError as err:
                raise _raster_error(path, err) from None
            georef = raster_georef(src)
        return np.ascontiguousarray(data), georef
    from PIL import Image

    try:
        with Image.open(path) as img:
            arr = np.asarray(img.convert("RGB") if img.mode in _PILLOW_AS_RGB else img)
    except (OSError, SyntaxError, ValueError) as err:
        msg = " ".join(str(err).split()) or type(err).__name__
        raise CtsegError(f"input {path} cannot be read as an image ({msg})") from None
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    if arr.dtype.byteorder == ">":  # Pillow's I;16B
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return np.ascontiguousarray(arr[[i - 1 for i in indices]]), {"crs": None, "transform": None, "nodata": None}


def raster_georef(src) -> dict:
    """``crs``, ``transform`` (``None`` for a raster without georeference) and ``nodata`` of an open dataset."""
    transform = src.transform if src.crs or not src.transform.is_identity else None
    return {"crs": src.crs, "transform": transform, "nodata": src.nodata}


def resolve_info(loaded, ckpt: Path, dataset: str | None) -> DatasetInfo:
    """The data set description (:mod:`ctseg.predict.run` docstring: the order), checked against the model's classes
    and bands."""
    k, bands = loaded.model.num_classes, loaded.in_chans
    stored = getattr(loaded, "info", None)
    if dataset is not None:
        info = get_dataset_info(dataset)
        if info.num_classes != k:
            raise CtsegError(
                f"checkpoint {ckpt} predicts {k} classes but data set {dataset!r} has {info.num_classes} "
                f"({', '.join(info.classes)}); pick the data set the model was trained on"
            )
    elif stored is not None and stored.num_classes == k:
        info = stored
    elif loaded.dataset in DATASETS and DATASETS[loaded.dataset].num_classes == k:
        info = DATASETS[loaded.dataset]
    elif bands == 3:
        return fallback_info(loaded.class_names if len(loaded.class_names) == k else [f"class_{i}" for i in range(k)])
    else:
        raise CtsegError(
            f"checkpoint {ckpt} takes {_bands_text(bands)} but records no data set description (data_info) to "
            "normalise them with; pass --dataset NAME of the data set it was trained on"
        )
    if info.bands != bands:
        raise CtsegError(
            f"checkpoint {ckpt} takes {_bands_text(bands)} but data set {info.name!r} has {info.band_layout()}; "
            "pick the data set the model was trained on"
        )
    if len(info.mean) != info.bands or len(info.std) != info.bands:
        raise CtsegError(
            f"data set {info.name!r} has {_bands_text(info.bands)} but {len(info.mean)} mean / {len(info.std)} std "
            "values; its description needs one of each per band"
        )
    return info


def parse_bands(bands: str | Sequence[int] | None) -> tuple[int, ...] | None:
    """``"1,2,3,4"`` (or a sequence of ints) → ``(1, 2, 3, 4)``; one-line error unless positive integers."""
    if bands is None:
        return None
    if isinstance(bands, str):
        parts = [p.strip() for p in bands.split(",")]
        if not all(p.isascii() and p.isdigit() for p in parts):
            raise CtsegError(f"--bands {bands}: give 1-based band numbers separated by commas, e.g. --bands 1,2,3,4")
        values = tuple(int(p) for p in parts)
    else:
        values = tuple(int(b) for b in bands)
    if not values or min(values) < 1:
        raise CtsegError(
            f"--bands {','.join(map(str, values))}: bands are numbered from 1 (as GDAL does), e.g. --bands 1,2,3,4"
        )
    return values


#: ``nodata="none"``: no nodata at all (not even the raster's own).
NO_NODATA = object()


def parse_nodata(nodata: str | float | None):
    """``None`` (default: the raster's, else the data set's), a float, or ``"none"`` (nodata off).

    The value must be finite or NaN: NaN is the nodata of many float rasters (it matches their NaN pixels, and no
    pixel of an integer raster); ±infinity (``inf``, ``1e999``) is refused in one line."""
    if nodata is None:
        return None
    if isinstance(nodata, (int, float)) and not isinstance(nodata, bool):
        value = float(nodata)
    else:
        text = str(nodata).strip().lower()
        if text == "none":
            return NO_NODATA
        try:
            value = float(text)
        except (ValueError, OverflowError):
            raise CtsegError(f"--nodata {nodata}: give a number (e.g. 0, -9999, nan) or none") from None
    if math.isinf(value):
        raise CtsegError(
            f"--nodata {nodata}: nodata must be a finite number (e.g. 0, -9999), nan (float rasters) or none"
        )
    return value
