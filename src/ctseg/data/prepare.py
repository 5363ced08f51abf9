"""Turn a downloaded data set into training crops: ``prepare_dataset``.

Output layout (one folder, written atomically)::

    DST/
      images/<tile>_r<row>_c<col>.png   RGB uint8 crops (Vaihingen: IR-R-G, stored as the three channels)
      masks/<tile>_r<row>_c<col>.png    single-channel uint8 class indices, 255 = ignore
      manifest.json                     data set, classes, colours, settings, source tiles and one record per crop

Each crop record in ``manifest.json`` holds ``image`` and ``mask`` (paths relative to DST), ``tile`` (source tile
id), ``group`` (the unit the split is made of: the ISPRS tile, the Dubai ``tileN``), ``offset`` ``[row, col]`` of
the crop's top-left corner in the source tile (source pixels, before any resize) and ``split``; crops of an
evaluation split also hold ``scored`` (below). ``mask_size`` gives the side of the stored masks per split.

Cropping: a ``crop`` × ``crop`` window moves by ``stride`` along rows and columns; the last window of each row and
column is aligned to the tile's border, so the whole tile is covered (the last crops overlap their neighbours
when the tile size is not a multiple of the stride). A tile smaller than ``crop`` is padded at the bottom/right:
image with black, mask with ignore. Crops are then resized to ``resize`` × ``resize`` when asked: bilinear for
images, nearest for masks (always — no invented labels).

**Evaluation splits** (every split but ``"train"``; for ISPRS the test tiles, SPEC §4) are scored at the label's
native resolution, each source pixel once:

- their masks are never resized: a ``crop`` × ``crop`` mask (500 × 500 for ISPRS) beside its resized image
  (512 × 512); the model's logits are resized (bilinear) to the mask before scoring;
- pixels an earlier crop of the same tile already holds are set to ignore (255). Crops are numbered row-major
  over the row offsets ``r_0 < r_1 < …`` and column offsets ``c_0 < c_1 < …`` (:func:`crop_offsets`). The
  earlier row bands cover source rows ``[0, r_{i-1} + crop)`` over the whole width and the earlier crops of the
  same band columns ``[0, c_{j-1} + crop)``, so the new part of crop ``(i, j)`` is the rectangle
  ``mask[t_i:, l_j:]`` with ``t_i = max(0, r_{i-1} + crop − r_i)`` and ``l_j = max(0, c_{j-1} + crop − c_j)``
  (``t_0 = l_0 = 0``; :func:`scored_start`). The record's ``scored`` is ``[t_i, l_j, bottom, right]``, the
  scored box in crop pixels (half-open; ``bottom``/``right`` stop at the tile's border), and the boxes of a
  tile's crops partition the tile: ``Σ (bottom − t)(right − l) = H · W``, so the labelled pixels counted over
  the crops are exactly the tile's labelled pixels. Training crops keep their overlaps (more views, no bias in
  a score).

Format version 2 (this one) introduced both rules; :func:`prepare_dataset` refuses a version-1 folder (its test
masks were resized to 512 and its overlapping border pixels counted twice) without ``overwrite=True``, and
:class:`~ctseg.data.prepared.PreparedDataset` refuses to read its evaluation splits.

The generic machinery lives here (readers, colour decoding, crop offsets, the process pool, the atomic write);
the data-set specific parts (file names, splits) live in :mod:`ctseg.data.isprs` and :mod:`ctseg.data.dubai`.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ctseg.data.definitions import DatasetInfo, get_dataset_info
from ctseg.errors import CtsegError
from ctseg.io import set_default_mode

MANIFEST = "manifest.json"
FORMAT = "ctseg-prepared"
#: 2: evaluation masks at crop size and each source pixel scored once (module docstring); 1: masks resized.
FORMAT_VERSION = 2
#: The split trained on; every other split is an evaluation split (native-size masks, no pixel scored twice).
TRAIN_SPLIT = "train"
#: PNG compression level of the written crops: level 1 is ~30 % smaller than uncompressed and decodes in ~6 ms
#: per 512² RGB crop (measured with Pillow on one core).
PNG_LEVEL = 1
#: Entries a prepared folder may contain; anything else means "not ours" and is never deleted
#: (``decoded``: the default decoded-crop cache, :mod:`ctseg.data.decoded`).
_OWN_ENTRIES = {"images", "masks", "decoded", MANIFEST}
#: Marks pixels whose colour is not in the palette during decoding (never a class index or the ignore index).
_INVALID = 254


@dataclass(frozen=True)
class CropSettings:
    """Crop geometry: ``crop`` × ``crop`` windows every ``stride`` source pixels, resized to ``resize`` (or kept)."""

    crop: int
    stride: int
    resize: int | None

    @property
    def size(self) -> int:
        """Side of the stored crops."""
        return self.resize or self.crop


#: Defaults per data set. ISPRS: the paper's 500 × 500 crops resized to 512 × 512. Dubai: 512 × 512 crops with
#: stride 512 and no resize — its images are 509–2062 px a side, so 512 keeps the native resolution and gives
#: 441 crops for tiles 1–7 (the narrowest images, 509 px wide, get 3 columns of ignore padding).
DEFAULT_SETTINGS: dict[str, CropSettings] = {
    "potsdam": CropSettings(500, 500, 512),
    "vaihingen": CropSettings(500, 500, 512),
    "dubai": CropSettings(512, 512, None),
}


@dataclass(frozen=True)
class SourceTile:
    """One source image with the label used for its split.

    Attributes:
        tile: tile id, unique in the data set (``"2_10"``, ``"area1"``, ``"tile1/image_part_001"``).
        group: the unit the split is made of (the ISPRS tile itself; the Dubai ``"tileN"``).
        split: ``"train"`` or ``"test"`` (or a user-given split name).
        image: path of the image (GeoTIFF, JPEG or PNG).
        label: path of the colour-coded label.
        label_kind: ``"full"``, ``"eroded"`` (ISPRS noBoundary) or ``"mask"`` (Dubai).
    """

    tile: str
    group: str
    split: str
    image: Path
    label: Path
    label_kind: str


# --------------------------------------------------------------------------------------------------- reading
def _is_tiff(path: Path) -> bool:
    return path.suffix.lower() in {".tif", ".tiff"}


def _first_line(err: BaseException) -> str:
    """The first line of an error's message, looking through GDAL's "see previous exception" wrappers."""
    seen = 0
    while "previous exception" in str(err) and seen < 5:
        inner = err.__cause__ or err.__context__
        if inner is None:
            break
        err, seen = inner, seen + 1
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _open_raster(path: Path):
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return rasterio.open(path)


def raster_shape(path: Path) -> tuple[int, int]:
    """(height, width) of an image file, read from its header only."""
    path = Path(path)
    try:
        if _is_tiff(path):
            with _open_raster(path) as ds:
                return ds.height, ds.width
        with Image.open(path) as im:
            return im.height, im.width
    except CtsegError:
        raise
    except Exception as err:  # rasterio, Pillow and OS errors alike: the user's file is at fault
        raise CtsegError(f"cannot read {path}: {_first_line(err)}") from None


def _read_tiff(path: Path, *, label: bool) -> np.ndarray:
    from rasterio.errors import NotGeoreferencedWarning

    with _open_raster(path) as ds, warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
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


def _read_pillow(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        im.load()
        if im.mode not in {"RGB", "RGBA", "RGBX", "P", "PA", "L", "LA", "CMYK", "YCbCr"}:
            raise CtsegError(f"{path}: unsupported pixel mode {im.mode}, expected 8-bit RGB")
        return np.asarray(im.convert("RGB") if im.mode != "RGB" else im)


def read_rgb(path: Path, *, label: bool = False) -> np.ndarray:
    """Read an image or colour-coded label as (H, W, 3) uint8.

    GeoTIFFs are read with rasterio (first three bands; georeferencing is not needed and its warning is
    silenced), other formats with Pillow (palette and grey images converted to RGB). Unreadable or truncated
    files raise :class:`CtsegError` naming the file.
    """
    path = Path(path)
    try:
        return _read_tiff(path, label=label) if _is_tiff(path) else _read_pillow(path)
    except CtsegError:
        raise
    except MemoryError:
        raise
    except Exception as err:
        raise CtsegError(f"cannot read {path}: {_first_line(err)}") from None


# --------------------------------------------------------------------------------------------------- colours
def _color_key(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 → (...) int32 packed 0xRRGGBB."""
    return (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2].astype(np.int32)


@lru_cache(maxsize=8)
def _color_lut(
    colors: tuple[tuple[int, int, int], ...], ignore_colors: tuple[tuple[int, int, int], ...], ignore_index: int
) -> np.ndarray:
    """16 MiB table: packed colour → class index, ``ignore_index`` for ignore colours, ``_INVALID`` otherwise."""
    if len(colors) >= _INVALID or ignore_index == _INVALID:
        raise ValueError("too many classes for uint8 masks")
    lut = np.full(1 << 24, _INVALID, dtype=np.uint8)
    for color in ignore_colors:
        lut[_color_key(np.asarray(color, np.uint8))] = ignore_index
    for index, color in enumerate(colors):
        lut[_color_key(np.asarray(color, np.uint8))] = index
    return lut


def _hex(color: Sequence[int]) -> str:
    return "#" + "".join(f"{int(c):02X}" for c in color)


def decode_label(rgb: np.ndarray, info: DatasetInfo, path: Path | str = "<array>") -> np.ndarray:
    """Colour-coded label (H, W, 3) uint8 → class indices (H, W) uint8 (``info.ignore_index`` for ignore colours).

    Exact colours only: a colour that is neither a class colour nor an ignore colour raises
    :class:`CtsegError` naming ``path``, the colour, one pixel position (row, col) and how many pixels have
    unknown colours.
    """
    lut = _color_lut(tuple(info.colors), tuple(info.ignore_colors), info.ignore_index)
    index = lut[_color_key(rgb)]
    bad = index == _INVALID
    if bad.any():
        row, col = divmod(int(np.argmax(bad)), rgb.shape[1])
        color = tuple(int(c) for c in rgb[row, col])
        allowed = " ".join(_hex(c) for c in (*info.colors, *info.ignore_colors))
        raise CtsegError(
            f"{path}: colour {color} ({_hex(color)}) at pixel (row {row}, col {col}) is not in the {info.name} "
            f"palette ({int(bad.sum())} such pixels; expected one of {allowed})"
        )
    return index


# --------------------------------------------------------------------------------------------------- geometry
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


def is_eval_split(split: str) -> bool:
    """Whether ``split`` is scored (every split but :data:`TRAIN_SPLIT`): native-size masks, no pixel twice."""
    return split != TRAIN_SPLIT


def _window(array: np.ndarray, row: int, col: int, crop: int, fill: int) -> np.ndarray:
    part = array[row : row + crop, col : col + crop]
    if part.shape[0] == crop and part.shape[1] == crop:
        return np.ascontiguousarray(part)
    out = np.full((crop, crop, *array.shape[2:]), fill, dtype=array.dtype)
    out[: part.shape[0], : part.shape[1]] = part
    return out


def _save_png(array: np.ndarray, path: Path, resize: int | None, resample: Image.Resampling) -> None:
    im = Image.fromarray(array)
    if resize is not None and im.size != (resize, resize):
        im = im.resize((resize, resize), resample)
    im.save(path, format="PNG", compress_level=PNG_LEVEL)


def _safe_name(tile: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", tile)


def natural_key(text: str) -> tuple:
    """Sort key that orders ``2_9`` before ``2_10`` and ``area2`` before ``area10``."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text))


# --------------------------------------------------------------------------------------------------- one tile
def _cut_tile(tile: SourceTile, info: DatasetInfo, settings: CropSettings, out: Path) -> dict[str, Any]:
    """Read, decode and crop one tile into ``out``; returns its crop records and pixel counts per class index.

    Evaluation-split masks are kept at crop size and their already-covered part set to ignore (module docstring).
    """
    image = read_rgb(tile.image)
    label = read_rgb(tile.label, label=True)
    if image.shape[:2] != label.shape[:2]:
        raise CtsegError(
            f"{tile.label}: label is {label.shape[0]}×{label.shape[1]} but its image {tile.image.name} is "
            f"{image.shape[0]}×{image.shape[1]} (height×width)"
        )
    mask = decode_label(label, info, tile.label)
    del label
    height, width = mask.shape
    name = _safe_name(tile.tile)
    counts = np.zeros(256, dtype=np.int64)
    records = []
    evaluation = is_eval_split(tile.split)
    crop = settings.crop
    rows, cols = crop_offsets(height, crop, settings.stride), crop_offsets(width, crop, settings.stride)
    for i, row in enumerate(rows):
        for j, col in enumerate(cols):
            stem = f"{name}_r{row:05d}_c{col:05d}"
            image_crop = _window(image, row, col, crop, 0)
            mask_crop = _window(mask, row, col, crop, info.ignore_index)
            _save_png(image_crop, out / "images" / f"{stem}.png", settings.resize, Image.Resampling.BILINEAR)
            record: dict[str, Any] = {
                "image": f"images/{stem}.png",
                "mask": f"masks/{stem}.png",
                "tile": tile.tile,
                "group": tile.group,
                "offset": [row, col],
                "split": tile.split,
            }
            if evaluation:  # native size; pixels an earlier crop holds → ignore (a copy: never the tile's mask)
                top, left = scored_start(rows, i, crop), scored_start(cols, j, crop)
                mask_crop = mask_crop.copy()
                mask_crop[:top] = info.ignore_index
                mask_crop[:, :left] = info.ignore_index
                record["scored"] = [top, left, min(crop, height - row), min(crop, width - col)]
                mask_im = Image.fromarray(mask_crop)
            else:
                mask_im = Image.fromarray(mask_crop)
                if settings.resize is not None and settings.resize != crop:
                    mask_im = mask_im.resize((settings.resize, settings.resize), Image.Resampling.NEAREST)
            counts += np.bincount(np.asarray(mask_im).ravel(), minlength=256)
            mask_im.save(out / "masks" / f"{stem}.png", format="PNG", compress_level=PNG_LEVEL)
            records.append(record)
    return {"tile": tile.tile, "height": height, "width": width, "records": records, "counts": counts}


# --------------------------------------------------------------------------------------------------- splits
def resolve_splits(
    groups: Iterable[str],
    default: Mapping[str, Sequence[str]],
    split_tiles: Mapping[str, Iterable[str]] | None,
    normalize=lambda g: g,
    what: str = "tile",
) -> tuple[dict[str, str], list[str]]:
    """Assign each found group to a split.

    Args:
        groups: the groups (split units) found in the source folder.
        default: the data set's split → groups.
        split_tiles: user override, split name → groups. Groups not listed go to ``"train"`` when ``"train"`` is
            not a key, else they are skipped. Listing a group that was not found is an error.
        normalize: maps a user-written group id to the canonical one (``"3"`` → ``"tile3"``).

    Returns:
        (group → split, groups skipped because they are in no split).
    """
    found = sorted(set(groups), key=natural_key)
    assignment: dict[str, str] = {}
    if split_tiles is None:
        for split, members in default.items():
            for group in members:
                assignment[group] = split
        chosen = {g: assignment[g] for g in found if g in assignment}
        return chosen, [g for g in found if g not in assignment]
    if isinstance(split_tiles, str | bytes) or not isinstance(split_tiles, Mapping):
        raise CtsegError("split_tiles must map split names to lists of tile ids, e.g. {'test': ['tile3']}")
    for split, members in split_tiles.items():
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", str(split)):
            raise CtsegError(f"split_tiles: invalid split name {split!r}")
        if isinstance(members, str):
            members = [members]
        for raw in members:
            group = normalize(str(raw))
            if group not in found:
                raise CtsegError(
                    f"split_tiles: {what} {raw!r} (split {split!r}) was not found in the source; "
                    f"found: {', '.join(found)}"
                )
            if group in assignment and assignment[group] != split:
                raise CtsegError(f"split_tiles: {what} {raw!r} is listed in both {assignment[group]!r} and {split!r}")
            assignment[group] = str(split)
    if "train" not in split_tiles:
        for group in found:
            assignment.setdefault(group, "train")
    return assignment, [g for g in found if g not in assignment]


def _discover(name: str, src: Path, split_tiles) -> tuple[list[SourceTile], list[str]]:
    if name in ("potsdam", "vaihingen"):
        from ctseg.data.isprs import discover_isprs

        return discover_isprs(name, src, split_tiles)
    if name == "dubai":
        from ctseg.data.dubai import discover_dubai

        return discover_dubai(src, split_tiles)
    raise CtsegError(f"data set {name!r} cannot be prepared from files; choose one of: {', '.join(DEFAULT_SETTINGS)}")


# --------------------------------------------------------------------------------------------------- manifest
def info_to_json(info: DatasetInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "classes": list(info.classes),
        "colors": [list(c) for c in info.colors],
        "ignore_colors": [list(c) for c in info.ignore_colors],
        "eval_classes": None if info.eval_classes is None else list(info.eval_classes),
        "mean": list(info.mean),
        "std": list(info.std),
        "ignore_index": info.ignore_index,
    }


def _settings_json(name: str, settings: CropSettings, tiles: Sequence[SourceTile]) -> dict[str, Any]:
    splits: dict[str, list[str]] = {}
    labels: dict[str, str] = {}
    for tile in tiles:
        splits.setdefault(tile.split, []).append(tile.tile)
        labels[tile.split] = tile.label_kind
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "dataset": name,
        "crop": settings.crop,
        "stride": settings.stride,
        "resize": settings.resize,
        "splits": {split: sorted(ids, key=natural_key) for split, ids in sorted(splits.items())},
        "labels": dict(sorted(labels.items())),
    }


def _existing_state(dst: Path, wanted: dict[str, Any]) -> tuple[str, str]:
    """('absent' | 'complete' | 'different' | 'partial' | 'foreign', explanation) for a destination folder."""
    if not dst.exists():
        return "absent", ""
    if not dst.is_dir():
        return "foreign", f"{dst} exists and is not a folder"
    entries = {p.name for p in dst.iterdir()}
    if not entries:
        return "absent", ""
    if not entries <= _OWN_ENTRIES:
        extra = sorted(entries - _OWN_ENTRIES)[:3]
        return "foreign", f"{dst} holds files that are not prepared crops ({', '.join(extra)})"
    try:
        manifest = json.loads((dst / MANIFEST).read_text())
        settings = manifest["settings"]
        crops = manifest["crops"]
    except Exception:
        return "partial", f"{dst} has no readable {MANIFEST}"
    version = manifest.get("version") if isinstance(manifest, dict) else None
    if isinstance(version, int) and version < FORMAT_VERSION:
        return "different", (
            f"{dst} was prepared by an older ctseg (format version {version}: test masks resized and overlapping "
            f"border pixels scored twice; version {FORMAT_VERSION} keeps them at the label's resolution, each "
            "pixel once)"
        )
    if settings != wanted:
        diff = [k for k in sorted(set(settings) | set(wanted)) if settings.get(k) != wanted.get(k)]
        return "different", f"{dst} was prepared with different settings ({', '.join(diff)})"
    for record in crops:
        for key in ("image", "mask"):
            if not (dst / record[key]).is_file():
                return "partial", f"{dst} is incomplete ({record[key]} is missing)"
    return "complete", ""


# --------------------------------------------------------------------------------------------------- driver
def _say(message: str, progress: bool) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


def _resolve_settings(name: str, crop, stride, resize) -> CropSettings:
    default = DEFAULT_SETTINGS[name]
    crop_v = default.crop if crop is None else int(crop)
    stride_v = crop_v if stride is None and crop is not None else (default.stride if stride is None else int(stride))
    if resize is None:
        resize_v = default.resize if crop is None else None
    else:
        resize_v = int(resize) or None
    if crop_v < 1:
        raise CtsegError(f"crop must be a positive number of pixels, got {crop_v}")
    if not 1 <= stride_v <= crop_v:
        raise CtsegError(f"stride must be between 1 and the crop size {crop_v} (no gaps), got {stride_v}")
    if resize_v is not None and resize_v < 1:
        raise CtsegError(f"resize must be a positive size or 0 (keep), got {resize_v}")
    return CropSettings(crop_v, stride_v, resize_v)


def _pool_context():
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def _run_tiles(tiles, info, settings, out: Path, workers: int, progress: bool) -> list[dict[str, Any]]:
    from tqdm.auto import tqdm

    bar = tqdm(total=len(tiles), unit="tile", desc=f"prepare {info.name}", disable=not progress, file=sys.stderr)
    results = []
    try:
        if workers <= 1 or len(tiles) <= 1:
            for tile in tiles:
                results.append(_cut_tile(tile, info, settings, out))
                bar.update(1)
            return results
        # Largest tiles first so that one big tile does not run alone at the end.
        order = sorted(tiles, key=lambda t: -t.image.stat().st_size)
        with ProcessPoolExecutor(max_workers=min(workers, len(tiles)), mp_context=_pool_context()) as pool:
            pending = {pool.submit(_cut_tile, tile, info, settings, out) for tile in order}
            try:
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        results.append(future.result())  # re-raises a worker's error here
                        bar.update(1)
            except BaseException:
                for future in pending:
                    future.cancel()
                raise
        return results
    finally:
        bar.close()


def _replace(tmp: Path, dst: Path) -> None:
    """Move the finished ``tmp`` to ``dst``; an existing ``dst`` is swapped out first, then deleted."""
    if not dst.exists():
        os.replace(tmp, dst)
        return
    old = Path(tempfile.mkdtemp(prefix=f"{dst.name}.old-", dir=dst.parent))
    old.rmdir()
    os.replace(dst, old)
    os.replace(tmp, dst)
    shutil.rmtree(old, ignore_errors=True)


def prepare_dataset(
    name: str,
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    crop: int | None = None,
    stride: int | None = None,
    resize: int | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    split_tiles: Mapping[str, Iterable[str]] | None = None,
    progress: bool = True,
) -> Path:
    """Cut a downloaded data set into crops stored as PNG pairs plus ``manifest.json`` (layout: module docstring).

    Args:
        name: ``"potsdam"``, ``"vaihingen"`` or ``"dubai"``.
        src: folder holding the download; searched recursively (see :mod:`ctseg.data.isprs`,
            :mod:`ctseg.data.dubai` for the file names expected).
        dst: output folder. Written as ``<dst>.tmp-XXXX`` beside it and renamed at the end: ``dst`` is never
            left half-written, and the temporary folder is removed on error.
        crop: crop side in source pixels (default: 500 for ISPRS, 512 for Dubai).
        stride: step between crops (default: ``crop``, i.e. no overlap except the border-aligned last crops).
            Must not exceed ``crop``.
        resize: side the crops are resized to (bilinear images, nearest masks); ``0`` keeps the crop size.
            Default: 512 for ISPRS when ``crop`` is left at its default (the paper's 500 → 512), else none.
            Masks of the evaluation splits (all but ``"train"``) are never resized, and the pixels they share
            with an earlier crop are ignore (module docstring: each source pixel is scored once).
        workers: processes, one tile at a time each (default: all cores). Workers are started with
            ``forkserver`` (``spawn`` where missing), never ``fork`` (unsafe once torch runs threads), so a script
            calling this with ``workers > 1`` needs the usual ``if __name__ == "__main__":`` guard.
        overwrite: replace a destination prepared with other settings, or an incomplete one. Without it such a
            destination is an error; a complete destination with the same settings is left as it is.
        split_tiles: override the split, split name → tile ids (ISPRS ``"2_13"`` / ``"area2"``, Dubai
            ``"tile3"``; bare numbers work for Vaihingen and Dubai). Tiles not listed go to ``"train"`` unless
            ``"train"`` is given. ISPRS ``"train"`` tiles use the full labels, every other split the eroded ones.
        progress: show a progress bar and one-line notes on stderr.

    Returns:
        ``Path(dst)``.

    Raises:
        CtsegError: one line naming the file: empty or wrong source folder (with the file pattern expected), a
            tile without its label, image and label of different sizes, a label colour outside the palette
            (colour and pixel position), an unreadable or truncated file, a destination that needs
            ``overwrite=True`` or that does not look like prepared data (never deleted).
    """
    name = str(name).lower()
    info = get_dataset_info(name)
    if name not in DEFAULT_SETTINGS:
        choices = ", ".join(DEFAULT_SETTINGS)
        raise CtsegError(f"data set {name!r} cannot be prepared from files; choose one of: {choices}")
    settings = _resolve_settings(name, crop, stride, resize)
    src_path = Path(src).expanduser()
    dst_path = Path(dst).expanduser().absolute()
    if not src_path.is_dir():
        raise CtsegError(f"source folder {src_path} does not exist")
    if dst_path == src_path.absolute() or dst_path in src_path.absolute().parents:
        raise CtsegError(f"destination {dst_path} would contain the source folder {src_path}; choose another --dst")
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    if workers < 1:
        raise CtsegError(f"workers must be at least 1, got {workers}")

    tiles, notes = _discover(name, src_path, split_tiles)
    for note in notes:
        _say(note, progress)
    for tile in tiles:  # cheap header check before any heavy work
        image_shape, label_shape = raster_shape(tile.image), raster_shape(tile.label)
        if image_shape != label_shape:
            raise CtsegError(
                f"{tile.label}: label is {label_shape[0]}×{label_shape[1]} but its image {tile.image.name} is "
                f"{image_shape[0]}×{image_shape[1]} (height×width)"
            )
    wanted = _settings_json(name, settings, tiles)

    state, why = _existing_state(dst_path, wanted)
    if state == "complete" and not overwrite:
        _say(f"{dst_path} is already prepared with these settings; nothing to do", progress)
        return dst_path
    if state == "foreign":
        raise CtsegError(f"{why}; refusing to write there, choose an empty or new --dst")
    if state in ("different", "partial") and not overwrite:
        raise CtsegError(f"{why}; pass overwrite=True (--overwrite) to replace it")

    dst_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{dst_path.name}.tmp-", dir=dst_path.parent))
    set_default_mode(tmp)  # mkdtemp makes it 0700
    started = time.perf_counter()
    try:
        (tmp / "images").mkdir()
        (tmp / "masks").mkdir()
        results = _run_tiles(tiles, info, settings, tmp, workers, progress)
        by_tile = {r["tile"]: r for r in results}
        crops, tile_rows = [], []
        pixels: dict[str, np.ndarray] = {}
        for tile in sorted(tiles, key=lambda t: natural_key(t.tile)):
            result = by_tile[tile.tile]
            crops.extend(result["records"])
            pixels[tile.split] = pixels.get(tile.split, 0) + result["counts"]
            tile_rows.append(
                {
                    "tile": tile.tile,
                    "group": tile.group,
                    "split": tile.split,
                    "image": str(tile.image.absolute()),
                    "label": str(tile.label.absolute()),
                    "label_kind": tile.label_kind,
                    "height": result["height"],
                    "width": result["width"],
                    "crops": len(result["records"]),
                }
            )
        manifest = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "dataset": info_to_json(info),
            "settings": wanted,
            "size": settings.size,
            "mask_size": {split: settings.crop if is_eval_split(split) else settings.size for split in pixels},
            "source": str(src_path.absolute()),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "pixels": {
                split: {
                    **{cls: int(counts[i]) for i, cls in enumerate(info.classes)},
                    "ignore": int(counts[info.ignore_index]),
                }
                for split, counts in sorted(pixels.items())
            },
            "tiles": tile_rows,
            "crops": crops,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        _replace(tmp, dst_path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    counts_text = ", ".join(f"{split} {len(ids)}" for split, ids in wanted["splits"].items())
    _say(
        f"prepared {len(crops)} crops of {settings.size}×{settings.size} from {len(tiles)} source images "
        f"({counts_text}) in {time.perf_counter() - started:.1f} s → {dst_path}",
        progress,
    )
    return dst_path
