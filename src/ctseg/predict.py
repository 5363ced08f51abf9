"""``ctseg predict``: segment GeoTIFF / PNG / JPEG files with a trained model and write class maps.

For each input ``<stem>.<ext>`` the output folder receives

* ``<stem>_pred.tif`` — single-band uint8 GeoTIFF of class indices (deflate-compressed, tiled when large) with
  the input's CRS and geotransform (none for PNG / JPEG input) and a colour table in the data set's palette;
* ``<stem>_pred.png`` (unless ``color=False``) — the same class indices as a palette PNG, which viewers show
  in the data set's colours.

Inputs with ``.tif`` / ``.tiff`` are read with rasterio, anything else with Pillow. Every input must have three
8-bit bands (RGB, or IR-R-G for Vaihingen); a Pillow palette image counts as RGB. All inputs and output paths
are checked before the first prediction, so a bad argument writes nothing; every file is written to a
temporary sibling and renamed into place, so an interrupted run leaves no partial file.

The colours and the normalisation come from the checkpoint's data set (``dataset`` in the checkpoint, or the
``dataset`` argument, whose class count must match the model's); a checkpoint without a known data set gets a
generic palette and ImageNet normalisation.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ctseg.data.definitions import DATASETS, DatasetInfo, get_dataset_info
from ctseg.errors import CtsegError
from ctseg.io import atomic_path, ensure_writable_dir

__all__ = ["ImageHeader", "fallback_info", "inspect_image", "read_image", "run_predict", "write_prediction"]

GEOTIFF_SUFFIXES = (".tif", ".tiff")
#: Generic colours for checkpoints without a known data set (cycled with darker shades beyond 12 classes).
_FALLBACK_COLORS = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
    (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207), (255, 255, 255), (0, 0, 0),
)  # fmt: skip


@dataclass(frozen=True)
class ImageHeader:
    """What an input file holds, read without decoding the pixels."""

    path: Path
    bands: int
    dtype: str
    height: int
    width: int
    description: str  # e.g. "3 bands uint8" or "Pillow mode RGBA"


def fallback_info(class_names: Sequence[str]) -> DatasetInfo:
    """A :class:`DatasetInfo` with generic colours and ImageNet normalisation for an unknown data set."""
    colors = []
    for i in range(len(class_names)):
        r, g, b = _FALLBACK_COLORS[i % len(_FALLBACK_COLORS)]
        shade = 1.0 / (1 + i // len(_FALLBACK_COLORS))
        colors.append((int(r * shade), int(g * shade), int(b * shade)))
    return DatasetInfo(name="unknown", classes=tuple(class_names), colors=tuple(colors))


def _is_geotiff(path: Path) -> bool:
    return path.suffix.lower() in GEOTIFF_SUFFIXES


def inspect_image(path: str | os.PathLike) -> ImageHeader:
    """Open ``path`` far enough to know its bands and size; unreadable files are a one-line error."""
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
                    return ImageHeader(path, src.count, dtype, src.height, src.width, f"{src.count} bands {dtype}")
        except RasterioError as err:
            msg = " ".join(str(err).split())
            raise CtsegError(f"input {path} cannot be read as a GeoTIFF ({msg})") from None
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            mode = img.mode
            bands = 3 if mode == "P" else len(img.getbands())
            width, height = img.size
            img.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        msg = " ".join(str(err).split()) or type(err).__name__
        raise CtsegError(f"input {path} cannot be read as an image ({msg})") from None
    dtype = "uint8" if mode in ("RGB", "P", "L", "LA", "RGBA", "RGBX", "CMYK", "YCbCr", "1") else mode
    return ImageHeader(path, bands, dtype, height, width, f"Pillow mode {mode}")


def check_header(header: ImageHeader) -> None:
    """Raise a one-line error unless the file has three 8-bit bands."""
    if header.bands != 3:
        raise CtsegError(
            f"input {header.path} has {header.bands} band{'s' if header.bands != 1 else ''} ({header.description}); "
            "need 3 bands (RGB, or IR-R-G for Vaihingen)"
        )
    if header.dtype != "uint8":
        raise CtsegError(f"input {header.path} has {header.dtype} bands; need 8-bit (uint8) images")


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


def read_image(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """``((3, H, W) uint8, georef)`` where ``georef`` holds ``crs`` and ``transform`` (both ``None`` for PNG/JPEG)."""
    path = Path(path)
    check_header(inspect_image(path))
    if _is_geotiff(path):
        import rasterio
        from rasterio.errors import RasterioError

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with rasterio.open(path) as src:
                    data = src.read()
                    georef = {"crs": src.crs, "transform": src.transform if src.crs or not src.transform.is_identity
                              else None}  # fmt: skip
        except RasterioError as err:
            msg = " ".join(str(err).split())
            raise CtsegError(f"input {path} cannot be read as a GeoTIFF ({msg})") from None
        return np.ascontiguousarray(data), georef
    from PIL import Image

    try:
        with Image.open(path) as img:
            rgb = np.asarray(img.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as err:
        msg = " ".join(str(err).split()) or type(err).__name__
        raise CtsegError(f"input {path} cannot be read as an image ({msg})") from None
    return np.ascontiguousarray(rgb.transpose(2, 0, 1)), {"crs": None, "transform": None}


def write_prediction(
    pred: np.ndarray, georef: dict, info: DatasetInfo, tif_path: Path, png_path: Path | None
) -> list[Path]:
    """Write the class map as a GeoTIFF (and a palette PNG), each atomically."""
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


def _resolve_info(loaded, ckpt: Path, dataset: str | None) -> DatasetInfo:
    k = loaded.model.num_classes
    if dataset is not None:
        info = get_dataset_info(dataset)
        if info.num_classes != k:
            raise CtsegError(
                f"checkpoint {ckpt} predicts {k} classes but data set {dataset!r} has {info.num_classes} "
                f"({', '.join(info.classes)}); pick the data set the model was trained on"
            )
        return info
    if loaded.dataset in DATASETS and DATASETS[loaded.dataset].num_classes == k:
        return DATASETS[loaded.dataset]
    return fallback_info(loaded.class_names if len(loaded.class_names) == k else [f"class_{i}" for i in range(k)])


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
) -> list[Path]:
    """Predict every input and write ``<stem>_pred.tif`` (+ ``<stem>_pred.png``) into ``out``; returns the paths.

    Everything that can be checked before predicting (checkpoint, data set, devices, inputs, output names) is
    checked first; see the module docstring for formats.
    """
    from tqdm.auto import tqdm

    from ctseg.checkpoints import load_model
    from ctseg.inference import predict_tile, resolve_device

    if not inputs:
        raise CtsegError("no input files given")
    dev = resolve_device(device)
    ckpt = Path(ckpt)
    loaded = load_model(ckpt, device=dev)
    info = _resolve_info(loaded, ckpt, dataset)
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
        check_header(h)
    for h in headers:  # before the first prediction: a broken file later in the list writes nothing at all
        check_decodable(h)
    plan: list[tuple[ImageHeader, Path, Path | None]] = []
    seen: dict[str, Path] = {}
    for h in headers:
        stem = h.path.stem
        if stem in seen:
            raise CtsegError(f"inputs {seen[stem]} and {h.path} would both write {stem}_pred.tif; rename one")
        seen[stem] = h.path
        tif = out_dir / f"{stem}_pred.tif"
        png = out_dir / f"{stem}_pred.png" if color else None
        for target in (tif, png):
            if target is not None and target.exists() and not overwrite:
                raise CtsegError(f"output {target} exists; pass --overwrite to replace it")
        plan.append((h, tif, png))
    ensure_writable_dir(out_dir)

    written: list[Path] = []
    files = tqdm(plan, desc="files", unit="file", disable=None if progress else True)
    for header, tif, png in files:
        image, georef = read_image(header.path)
        pred = predict_tile(
            loaded.model,
            image,
            window=window,
            overlap=overlap,
            batch_size=batch_size,
            tta=tta,
            device=dev,
            mean=info.mean,
            std=info.std,
            progress=progress,
            desc=header.path.name,
        )
        written += write_prediction(pred, georef, info, tif, png)
    return written
