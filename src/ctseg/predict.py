"""``ctseg predict``: segment GeoTIFF / PNG / JPEG files with a trained model and write class maps.

For each input ``<stem>.<ext>`` the output folder receives, with ``format="geotiff"`` (the default),

* ``<stem>_pred.tif`` — single-band uint8 GeoTIFF of class indices (deflate-compressed, tiled when large) with
  the input's CRS and geotransform (none for PNG / JPEG input) and a colour table in the data set's palette;
* ``<stem>_pred.png`` (unless ``color=False``) — the same class indices as a palette PNG, which viewers show
  in the data set's colours;

or, with ``format="index-png"``, only ``<stem>.png``: a uint8 single-channel PNG whose values are the class
indices (the input's file name with ``.png``; the format of the LoveDA test server, values 0–6).

**The model's input.** The data set description comes from, in this order: the ``dataset`` argument (a
registered data set, whose class count must match the model's), the checkpoint's own ``data_info`` (stored by
``ctseg fit``), the registered data set the checkpoint names, and for a 3-band model without any of these a
generic palette with ImageNet normalisation. It fixes the band layout the model takes (``bands``, ``dtype``,
the source ``band_indices``), the normalisation ``(x / scale − mean) / std`` and the palette.

**Inputs.** ``.tif`` / ``.tiff`` are read with rasterio, anything else with Pillow. Every input must hold the
model's dtype (uint8, uint16 or float32) and, after band selection, its number of bands:

* ``bands`` (``--bands 1,2,3,4``, 1-based) picks the bands, in that order;
* without it, the checkpoint's ``band_indices`` (the source bands the training images were made of), if any;
* otherwise the file must have exactly the model's number of bands (a file with more is refused with the
  ``--bands`` to pass); for a 3-band model a Pillow palette / RGBA / CMYK image counts as RGB.

**Nodata.** With a nodata value — ``nodata`` (``--nodata V``; ``"none"`` turns nodata off), else the GeoTIFF's
own, else the training data set's — pixels where every selected band equals it get class 255 in the output,
and the output GeoTIFF's nodata is 255. Non-finite values of a float32 input (NaN nodata) are fed to the model
as the band's mean, so that they do not spread through the windows that see them.

All inputs, their band layouts and the output paths are checked before the first prediction, so a bad argument
writes nothing; every file is written to a temporary sibling and renamed into place, so an interrupted run
leaves no partial file.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ctseg.data.definitions import DATASETS, IGNORE_INDEX, DatasetInfo, generic_colors, get_dataset_info
from ctseg.errors import CtsegError
from ctseg.io import atomic_path, ensure_writable_dir

__all__ = [
    "FORMATS",
    "ImageHeader",
    "fallback_info",
    "inspect_image",
    "plan_bands",
    "read_image",
    "run_predict",
    "write_index_png",
    "write_prediction",
]

GEOTIFF_SUFFIXES = (".tif", ".tiff")
#: Output formats of :func:`run_predict`.
FORMATS = ("geotiff", "index-png")
#: The class value of nodata pixels in the output (also the output GeoTIFF's nodata).
NODATA_CLASS = IGNORE_INDEX
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
    (``None`` for rasters read with rasterio).
    """

    path: Path
    bands: int
    dtype: str
    height: int
    width: int
    description: str  # e.g. "3 bands uint8" or "Pillow mode RGBA"
    nodata: float | None = None
    mode: str | None = None


def fallback_info(class_names: Sequence[str], bands: int = 3) -> DatasetInfo:
    """A :class:`DatasetInfo` with generic colours and ImageNet normalisation (RGB) for an unknown data set."""
    if bands != 3:
        raise CtsegError(f"no normalisation is known for a {bands}-band model without a data set description")
    return DatasetInfo(name="unknown", classes=tuple(class_names), colors=generic_colors(len(class_names)))


def _is_geotiff(path: Path) -> bool:
    return path.suffix.lower() in GEOTIFF_SUFFIXES


def _bands_text(n: int) -> str:
    return f"{n} band{'s' if n != 1 else ''}"


def inspect_image(path: str | os.PathLike) -> ImageHeader:
    """Open ``path`` far enough to know its bands, dtype, size and nodata; unreadable files are a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise CtsegError(f"input {path} does not exist or is not a file")
    if _is_geotiff(path):
        import rasterio
        from rasterio.errors import RasterioError

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with rasterio.open(path) as src:
                    dtypes = set(src.dtypes)
                    dtype = src.dtypes[0] if len(dtypes) == 1 else "/".join(sorted(dtypes))
                    return ImageHeader(
                        path, src.count, dtype, src.height, src.width, f"{_bands_text(src.count)} {dtype}", src.nodata
                    )
        except RasterioError as err:
            msg = " ".join(str(err).split())
            raise CtsegError(f"input {path} cannot be read as a GeoTIFF ({msg})") from None
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
    return ImageHeader(path, bands, dtype, height, width, f"Pillow mode {mode}", None, mode)


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

    PNG / JPEG are decoded in full (they are small next to the model's work); a GeoTIFF's last row of pixels is
    read (a truncated or cut-off file fails there; a whole-tile read here would double the I/O of a big tile).
    """
    path = header.path
    if _is_geotiff(path):
        import rasterio
        from rasterio.errors import RasterioError
        from rasterio.windows import Window

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with rasterio.open(path) as src:
                    src.read(window=Window(0, src.height - 1, src.width, 1))
        except RasterioError as err:
            msg = " ".join(str(err).split())
            raise CtsegError(f"input {path} cannot be read as a GeoTIFF ({msg})") from None
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
    """``((C, H, W) array, georef)``: the bands :func:`plan_bands` picks for ``info`` (default: three 8-bit
    bands), in the file's dtype; ``georef`` holds ``crs``, ``transform`` (both ``None`` for PNG / JPEG) and the
    raster's ``nodata``."""
    path = Path(path)
    header = inspect_image(path)
    indices = list(plan_bands(header, info or fallback_info(["class_0"]), bands))
    if _is_geotiff(path):
        import rasterio
        from rasterio.errors import RasterioError

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with rasterio.open(path) as src:
                    data = src.read(indices)
                    georef = {"crs": src.crs, "transform": src.transform if src.crs or not src.transform.is_identity
                              else None, "nodata": src.nodata}  # fmt: skip
        except RasterioError as err:
            msg = " ".join(str(err).split())
            raise CtsegError(f"input {path} cannot be read as a GeoTIFF ({msg})") from None
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


def nodata_pixels(image: np.ndarray, nodata: float | None) -> np.ndarray | None:
    """(H, W) bool for a (C, H, W) image: True where every band equals ``nodata`` (NaN matches NaN)."""
    if nodata is None:
        return None
    if math.isnan(nodata):
        return np.isnan(image).all(axis=0) if np.issubdtype(image.dtype, np.floating) else None
    if np.issubdtype(image.dtype, np.integer):
        limits = np.iinfo(image.dtype)
        if nodata != int(nodata) or not limits.min <= nodata <= limits.max:
            return None  # no pixel of this dtype can hold it
    return (image == np.asarray(nodata, dtype=image.dtype)).all(axis=0)


def write_prediction(
    pred: np.ndarray,
    georef: dict,
    info: DatasetInfo,
    tif_path: Path,
    png_path: Path | None,
    *,
    nodata: int | None = None,
) -> list[Path]:
    """Write the class map as a GeoTIFF (and a palette PNG), each atomically; ``nodata``: the GeoTIFF's."""
    import rasterio
    from PIL import Image

    height, width = pred.shape
    profile = {"driver": "GTiff", "height": height, "width": width, "count": 1, "dtype": "uint8",
               "compress": "deflate"}  # fmt: skip
    if height >= 256 and width >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    if georef.get("crs") is not None:
        profile["crs"] = georef["crs"]
    if georef.get("transform") is not None:
        profile["transform"] = georef["transform"]
    if nodata is not None:
        profile["nodata"] = int(nodata)
    lut = info.palette()
    written = []
    with atomic_path(tif_path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NotGeoreferencedWarning for PNG input
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(pred, 1)
            dst.write_colormap(1, {i: (*map(int, lut[i]), 255) for i in range(256)})
    written.append(tif_path)
    if png_path is not None:
        img = Image.frombytes("P", (width, height), np.ascontiguousarray(pred).tobytes())
        img.putpalette(lut.reshape(-1).tolist())
        with atomic_path(png_path) as tmp:
            img.save(tmp, format="PNG")
        written.append(png_path)
    return written


def write_index_png(pred: np.ndarray, path: Path) -> list[Path]:
    """Write the class map as a uint8 single-channel PNG of class indices (LoveDA's test-server format)."""
    from PIL import Image

    height, width = pred.shape
    img = Image.frombytes("L", (width, height), np.ascontiguousarray(pred, dtype=np.uint8).tobytes())
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return [path]


def _resolve_info(loaded, ckpt: Path, dataset: str | None) -> DatasetInfo:
    """The data set description (module docstring: the order), checked against the model's classes and bands."""
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
_NO_NODATA = object()


def parse_nodata(nodata: str | float | None):
    """``None`` (default: the raster's, else the data set's), a float, or ``"none"`` (nodata off)."""
    if nodata is None or isinstance(nodata, (int, float)) and not isinstance(nodata, bool):
        return None if nodata is None else float(nodata)
    text = str(nodata).strip().lower()
    if text == "none":
        return _NO_NODATA
    try:
        return float(text)
    except ValueError:
        raise CtsegError(f"--nodata {nodata}: give a number (e.g. 0, -9999, nan) or none") from None


def run_predict(
    ckpt: str | os.PathLike,
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    tta: bool = False,
    window: int = 512,
    overlap: float = 0.25,
    batch_size: int = 8,
    color: bool = True,
    overwrite: bool = False,
    device: str = "auto",
    dataset: str | None = None,
    progress: bool = True,
    bands: str | Sequence[int] | None = None,
    nodata: str | float | None = None,
    out_format: str = "geotiff",
) -> list[Path]:
    """Predict every input and write its class map into ``out`` (module docstring: formats); returns the paths.

    Everything that can be checked before predicting (checkpoint, data set, devices, band layouts, output
    names) is checked first. ``bands``: 1-based bands to read (``"1,2,3,4"``); ``nodata``: a value, ``"none"``,
    or ``None`` for the raster's own (else the data set's); ``out_format``: ``"geotiff"`` or ``"index-png"``.
    """
    from tqdm.auto import tqdm

    from ctseg.checkpoints import load_model
    from ctseg.inference import predict_tile, resolve_device

    if not inputs:
        raise CtsegError("no input files given")
    if out_format not in FORMATS:
        raise CtsegError(f"--format {out_format}: use one of {', '.join(FORMATS)}")
    selected = parse_bands(bands)
    nodata_arg = parse_nodata(nodata)
    dev = resolve_device(device)
    ckpt = Path(ckpt)
    loaded = load_model(ckpt, device=dev)
    info = _resolve_info(loaded, ckpt, dataset)
    if selected is not None and len(selected) != info.bands:
        raise CtsegError(
            f"--bands {','.join(map(str, selected))} selects {_bands_text(len(selected))} but the model takes "
            f"{info.band_layout()} images ({info.name}); give {info.bands} band numbers"
        )
    multiple = loaded.model.encoder.input_multiple
    if window < multiple or window % multiple:
        raise CtsegError(f"--window must be a positive multiple of {multiple}, got {window}")
    if not 0.0 <= overlap < 1.0:
        raise CtsegError(f"--overlap is a fraction of the window in [0, 1), got {overlap}")
    if batch_size < 1:
        raise CtsegError(f"--batch-size must be at least 1, got {batch_size}")

    out_dir = Path(out)
    headers = [inspect_image(p) for p in inputs]
    for h in headers:
        plan_bands(h, info, selected)
    for h in headers:  # before the first prediction: a broken file later in the list writes nothing at all
        check_decodable(h)
    plan: list[tuple[ImageHeader, list[Path]]] = []
    seen: dict[str, Path] = {}
    sources = {h.path.resolve() for h in headers}
    for h in headers:
        stem = h.path.stem
        first = out_dir / (f"{stem}_pred.tif" if out_format == "geotiff" else f"{stem}.png")
        if stem in seen:
            raise CtsegError(f"inputs {seen[stem]} and {h.path} would both write {first.name}; rename one")
        seen[stem] = h.path
        targets = [first]
        if out_format == "geotiff" and color:
            targets.append(out_dir / f"{stem}_pred.png")
        for target in targets:
            if target.resolve() in sources:
                raise CtsegError(f"output {target} would replace an input image; choose another --out folder")
            if target.exists() and not overwrite:
                raise CtsegError(f"output {target} exists; pass --overwrite to replace it")
        plan.append((h, targets))
    ensure_writable_dir(out_dir)

    written: list[Path] = []
    files = tqdm(plan, desc="files", unit="file", disable=None if progress else True)
    for header, targets in files:
        image, georef = read_image(header.path, selected, info)
        if image.dtype.kind == "f" and not np.isfinite(image).all():
            # NaN / inf (float nodata) would spread through every window that sees them: fed as the band means
            means = np.asarray(info.mean, dtype=np.float32).reshape(-1, 1, 1) * np.float32(info.scale)
            finite = np.isfinite(image)
            model_input = np.where(finite, image, means).astype(np.float32)
        else:
            model_input = image
        pred = predict_tile(
            loaded.model,
            model_input,
            window=window,
            overlap=overlap,
            batch_size=batch_size,
            tta=tta,
            device=dev,
            mean=info.mean,
            std=info.std,
            scale=info.scale,
            progress=progress,
            desc=header.path.name,
        )
        if nodata_arg is _NO_NODATA:
            value = None
        elif nodata_arg is not None:
            value = nodata_arg
        else:
            value = georef.get("nodata") if georef.get("nodata") is not None else info.nodata
        mask = nodata_pixels(image, value)
        if mask is not None:
            pred[mask] = NODATA_CLASS
        if out_format == "index-png":
            written += write_index_png(pred, targets[0])
        else:
            png = targets[1] if len(targets) > 1 else None
            tif_nodata = NODATA_CLASS if value is not None else None
            written += write_prediction(pred, georef, info, targets[0], png, nodata=tif_nodata)
    return written
