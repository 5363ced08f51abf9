"""Reading source rasters for preparation: images of any band count and dtype, colour-coded and index labels.

GeoTIFFs and every other GDAL-readable raster (JP2, VRT, …) are read with rasterio; PNG / JPEG / BMP with
Pillow. Georeferencing is not needed for preparation and its warning is silenced. Every failure is a
:class:`~ctseg.errors.CtsegError` naming the file. A path inside a release archive (``…/Train.zip/Train/…``,
:mod:`ctseg.data.walk`) is read from the archive in place: Pillow streams the member, rasterio opens it from
memory (:mod:`ctseg.safety.archives`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ctseg.data.definitions import DTYPES, IGNORE_INDEX
from ctseg.errors import CtsegError

#: Read with Pillow; anything else goes to rasterio (GDAL).
PILLOW_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}
_PILLOW_8BIT = {"RGB", "RGBA", "RGBX", "P", "PA", "L", "LA", "CMYK", "YCbCr", "1"}


def first_line(err: BaseException) -> str:
    """The first line of an error's message, looking through GDAL's "see previous exception" wrappers."""
    seen = 0
    while "previous exception" in str(err) and seen < 5:
        inner = err.__cause__ or err.__context__
        if inner is None:
            break
        err, seen = inner, seen + 1
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


@contextmanager
def reading(path: Path) -> Iterator[None]:
    """Turn any failure while reading ``path`` (rasterio, Pillow, OS) into one ``cannot read PATH: …`` line."""
    try:
        yield
    except (CtsegError, MemoryError):
        raise
    except Exception as err:  # the user's file is at fault
        raise CtsegError(f"cannot read {path}: {first_line(err)}") from None


def uses_pillow(path: Path) -> bool:
    return Path(path).suffix.lower() in PILLOW_SUFFIXES


def open_raster(path: Path, *, header_only: bool = False):
    """``rasterio.open(path)`` through :func:`ctseg.safety.rasters.open_raster` (a VRT's sources checked, an
    allow-listed driver) with the NotGeoreferencedWarning silenced; an archive member through
    :func:`ctseg.safety.archives.open_member_raster` (``header_only``: for the header fields only, which spares
    decompressing a whole TIFF). Use it in a ``with`` statement."""
    from ctseg.safety.archives import archive_member
    from ctseg.safety.rasters import open_raster as open_checked

    member = archive_member(path)
    if member is not None and member[1]:
        return _member_raster(*member, header_only)
    with _quiet():
        return open_checked(path)


@contextmanager
def _quiet() -> Iterator[None]:
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        yield


@contextmanager
def _member_raster(archive: Path, name: str, header_only: bool):
    from ctseg.safety.archives import open_member_raster

    with ExitStack() as stack:
        with _quiet():
            dataset = stack.enter_context(open_member_raster(archive, name, header_only=header_only))
        yield dataset


@contextmanager
def open_image(path: Path) -> Iterator[Image.Image]:
    """``PIL.Image.open(path)``; an archive member is streamed from the archive."""
    from ctseg.safety.archives import archive_member, open_member

    member = archive_member(path)
    with ExitStack() as stack:
        source = stack.enter_context(open_member(*member)) if member is not None and member[1] else path
        yield stack.enter_context(Image.open(source))


@dataclass(frozen=True)
class RasterHeader:
    """What a raster holds, from its header only."""

    height: int
    width: int
    bands: int
    dtype: str
    nodata: float | None


def _pillow_header(im: Image.Image) -> tuple[int, str]:
    if im.mode in ("I;16", "I;16B", "I;16L"):
        return 1, "uint16"
    if im.mode == "F":
        return 1, "float32"
    if im.mode in _PILLOW_8BIT:
        return (3 if im.mode in ("P", "PA", "YCbCr", "CMYK", "RGBX") else len(im.getbands())), "uint8"
    return len(im.getbands()), f"Pillow mode {im.mode}"


def read_header(path: Path) -> RasterHeader:
    """Size, band count, dtype and nodata of a raster, read from its header only."""
    path = Path(path)
    with reading(path):
        if not uses_pillow(path):
            with open_raster(path, header_only=True) as ds:
                return RasterHeader(ds.height, ds.width, ds.count, str(ds.dtypes[0]), ds.nodata)
        with open_image(path) as im:
            bands, dtype = _pillow_header(im)
            return RasterHeader(im.height, im.width, bands, dtype, None)


def raster_shape(path: Path) -> tuple[int, int]:
    """(height, width) of an image file, read from its header only."""
    header = read_header(path)
    return header.height, header.width


def _select(count: int, bands: Sequence[int] | None, path: Path) -> list[int]:
    if bands is None:
        return list(range(1, count + 1))
    bad = [b for b in bands if not 1 <= int(b) <= count]
    if bad:
        raise CtsegError(f"{path} has {count} band(s); band {bad[0]} does not exist (bands are numbered 1–{count})")
    return [int(b) for b in bands]


def read_image(path: Path, bands: Sequence[int] | None = None) -> tuple[np.ndarray, float | None]:
    """Read an image as ``(H, W, C)`` in its own dtype (uint8, uint16 or float32) and its nodata value.

    Args:
        path: the image.
        bands: 1-based bands to read, in this order (``None``: all). Pillow images: a palette image is its RGB
            colours, CMYK / YCbCr are converted to RGB; 16-bit grey PNGs are uint16.

    Returns:
        ``(array, nodata)``; ``nodata`` is the raster's nodata value (``None`` when it has none; always for
        Pillow formats).
    """
    path = Path(path)
    with reading(path):
        if uses_pillow(path):
            with open_image(path) as im:
                im.load()
                if im.mode in ("P", "PA", "CMYK", "YCbCr", "RGBX", "1"):
                    im = im.convert("RGB")
                elif im.mode in ("I;16", "I;16B", "I;16L"):
                    array = np.asarray(im).astype(np.uint16)
                    im = None
                elif im.mode not in ("RGB", "RGBA", "L", "LA", "F"):
                    raise CtsegError(f"{path}: unsupported pixel mode {im.mode}")
                if im is not None:
                    array = np.asarray(im)
            if array.ndim == 2:
                array = array[..., None]
            chosen = _select(array.shape[2], bands, path)
            out = array[..., [b - 1 for b in chosen]] if chosen != list(range(1, array.shape[2] + 1)) else array
            return np.ascontiguousarray(out), None
        with open_raster(path) as ds, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dtype = str(ds.dtypes[0])
            if dtype not in DTYPES or len(set(ds.dtypes)) > 1:
                raise CtsegError(
                    f"{path}: bands of type {', '.join(sorted(set(ds.dtypes)))}; ctseg reads uint8, uint16 or "
                    "float32 rasters (convert it, e.g. gdal_translate -ot UInt16)"
                )
            chosen = _select(ds.count, bands, path)
            data = ds.read(chosen)
            return np.ascontiguousarray(np.moveaxis(data, 0, -1)), ds.nodata


def read_rgb(path: Path, *, label: bool = False) -> np.ndarray:
    """Read an 8-bit image or colour-coded label as (H, W, 3) uint8.

    GeoTIFFs: the first three bands (8-bit only); a one-band GeoTIFF label with a colour table is expanded
    through it. Pillow formats: palette and grey images are converted to RGB.
    """
    path = Path(path)
    with reading(path):
        if uses_pillow(path):
            with open_image(path) as im:
                im.load()
                if im.mode not in _PILLOW_8BIT:
                    raise CtsegError(f"{path}: unsupported pixel mode {im.mode}, expected 8-bit RGB")
                return np.asarray(im.convert("RGB") if im.mode != "RGB" else im)
        with open_raster(path) as ds, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if any(dt != "uint8" for dt in ds.dtypes):
                raise CtsegError(f"{path}: expected 8-bit bands, found {ds.dtypes[0]}")
            if ds.count >= 3:
                return np.moveaxis(ds.read((1, 2, 3)), 0, -1)
            if ds.count == 1 and label:
                band = ds.read(1)
                try:
                    cmap = ds.colormap(1)
                except ValueError:
                    raise CtsegError(f"{path}: expected an RGB colour-coded label, found one band") from None
                lut = np.zeros((256, 3), np.uint8)
                for value, rgba in cmap.items():
                    lut[value] = rgba[:3]
                return lut[band]
            raise CtsegError(f"{path}: expected a 3-band (RGB / IRRG) image, found {ds.count} band(s)")


def read_index(path: Path) -> np.ndarray:
    """Read a single-band index mask as (H, W) integers (uint8 or uint16; palette PNGs give their indices)."""
    path = Path(path)
    with reading(path):
        if uses_pillow(path):
            with open_image(path) as im:
                im.load()
                if im.mode in ("L", "P"):
                    return np.asarray(im)
                if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                    return np.asarray(im).astype(np.int64)
                raise CtsegError(
                    f"{path}: an index mask must be one band (grey or palette PNG), found mode {im.mode}; "
                    "for colour-coded masks give each class a color in the classes file"
                )
        with open_raster(path) as ds, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if ds.count != 1:
                raise CtsegError(
                    f"{path}: an index mask must have one band, found {ds.count}; for colour-coded masks give "
                    "each class a color in the classes file"
                )
            if not np.issubdtype(np.dtype(ds.dtypes[0]), np.integer):
                raise CtsegError(f"{path}: an index mask must hold integers, found {ds.dtypes[0]}")
            return ds.read(1)


#: The class value of nodata pixels in predicted maps (also their GeoTIFFs' nodata): the ignore index.
NODATA_CLASS = IGNORE_INDEX


def error_text(err: BaseException) -> str:
    """One line from a rasterio error: GDAL's own message (rasterio chains it as the cause) when there is one."""
    parts, seen = [], err
    while seen is not None and len(parts) < 4:
        text = " ".join(str(seen).split())
        if text and "See previous exception" not in text:
            parts.append(text)
        seen = seen.__cause__ or seen.__context__
    return parts[0] if parts else type(err).__name__


def nodata_pixels(image: np.ndarray, nodata: float | None) -> np.ndarray | None:
    """(H, W) bool for a (C, H, W) image: True where every band equals ``nodata`` (NaN matches NaN)."""
    if nodata is None:
        return None
    if math.isnan(nodata):
        return np.isnan(image).all(axis=0) if np.issubdtype(image.dtype, np.floating) else None
    if np.issubdtype(image.dtype, np.integer):
        limits = np.iinfo(image.dtype)
        if not math.isfinite(nodata) or nodata != int(nodata) or not limits.min <= nodata <= limits.max:
            return None  # no pixel of this dtype can hold it
    return (image == np.asarray(nodata, dtype=image.dtype)).all(axis=0)


def nodata_mask(image: np.ndarray, nodata: float | None) -> np.ndarray | None:
    """(H, W) bool, True where every band equals ``nodata`` (NaN matches NaN); ``None`` without nodata."""
    if nodata is None:
        return None
    if np.isnan(nodata):
        return np.isnan(image).all(axis=-1)
    if np.issubdtype(image.dtype, np.integer):
        limits = np.iinfo(image.dtype)
        if nodata != int(nodata) or not limits.min <= nodata <= limits.max:
            return np.zeros(image.shape[:2], dtype=bool)  # no pixel of this dtype can hold it
    return (image == np.asarray(nodata, dtype=image.dtype)).all(axis=-1)
