"""What ``ctseg prepare`` records about how a folder was made: the crop geometry (:func:`resolve_settings`), the
data-set options a data set takes (:func:`check_options`) and the ``settings`` block of the manifest
(:func:`settings_json`, with :func:`options_json`) that the next prepare of the same destination compares.

The source files that shape the output are recorded by content: the classes file, and for ``ctseg prepare
vector`` the labels file (with a Shapefile's sidecars) and the ``--extent`` file, each by path and SHA-256.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ctseg.data.manifest import FORMAT, FORMAT_VERSION
from ctseg.data.registry import CropSettings, DatasetSpec, PrepareOptions, SourceTile
from ctseg.data.splits import natural_key
from ctseg.errors import CtsegError

#: Largest ``crop`` / ``resize`` in pixels: every worker holds a few crops of this side in memory (8192² × 4 bands
#: of uint16 is 512 MiB); a larger value is nearly always a typo (``--crop 100000`` would ask for 74.5 GiB).
MAX_CROP = 8192
#: A Shapefile's sidecars whose content is part of the labels (attributes, index, projection, encoding).
SHAPEFILE_SIDECARS = (".shx", ".dbf", ".prj", ".cpg")


def resolve_settings(spec: DatasetSpec, crop, stride, resize) -> CropSettings:
    default = spec.crop
    assert default is not None
    crop_v = default.crop if crop is None else int(crop)
    stride_v = crop_v if stride is None and crop is not None else (default.stride if stride is None else int(stride))
    if resize is None:
        resize_v = default.resize if crop is None else None
    else:
        resize_v = int(resize) or None
    if crop_v < 1:
        raise CtsegError(f"crop must be a positive number of pixels, got {crop_v}")
    if crop_v > MAX_CROP:
        raise CtsegError(
            f"--crop {crop_v}: crops are at most {MAX_CROP} pixels (every worker holds a few in memory); choose a "
            f"smaller --crop, e.g. {default.crop}"
        )
    if not 1 <= stride_v <= crop_v:
        raise CtsegError(f"stride must be between 1 and the crop size {crop_v} (no gaps), got {stride_v}")
    if resize_v is not None and resize_v < 1:
        raise CtsegError(f"resize must be a positive size or 0 (keep), got {resize_v}")
    if resize_v is not None and resize_v > MAX_CROP:
        raise CtsegError(
            f"--resize {resize_v}: crops are resized to at most {MAX_CROP} pixels; choose a smaller --resize, "
            "or 0 to keep the crop size"
        )
    return CropSettings(crop_v, stride_v, resize_v)


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, with a Shapefile's sidecars (:data:`SHAPEFILE_SIDECARS`) after it."""
    digest = hashlib.sha256()
    parts = [path]
    if path.suffix.lower() == ".shp":
        parts += [p for p in (path.with_suffix(s) for s in SHAPEFILE_SIDECARS) if p.is_file()]
    for part in parts:
        with open(part, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def options_json(options: PrepareOptions, taken: Sequence[str]) -> dict[str, Any]:
    """The data-set specific options that shape the output (recorded in ``settings``; defaults left out)."""
    out: dict[str, Any] = {}
    if options.bands is not None:
        out["bands"] = list(options.bands)
    if options.nodata is not None:
        out["nodata"] = options.nodata
    if options.classes is not None:
        out["classes_sha256"] = hashlib.sha256(Path(options.classes).read_bytes()).hexdigest()
    if "val_fraction" in taken:
        out["val_fraction"] = options.val_fraction
        out["seed"] = options.seed
    for key in ("labels", "extent"):
        path = getattr(options, key)
        if path is not None:
            out[key] = str(Path(path).absolute())
            out[f"{key}_sha256"] = file_sha256(Path(path))
    if options.class_field is not None:
        out["class_field"] = options.class_field
    if options.all_touched:
        out["all_touched"] = True
    return out


def settings_json(name: str, settings: CropSettings, tiles: Sequence[SourceTile], options: dict) -> dict[str, Any]:
    """The manifest's ``settings``: format, data set, crop geometry, the splits' tiles, label kinds, ``options``."""
    splits: dict[str, list[str]] = {}
    labels: dict[str, str] = {}
    for tile in tiles:
        splits.setdefault(tile.split, []).append(tile.tile)
        labels[tile.split] = tile.label_kind
    out = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "dataset": name,
        "crop": settings.crop,
        "stride": settings.stride,
        "resize": settings.resize,
        "splits": {split: sorted(ids, key=natural_key) for split, ids in sorted(splits.items())},
        "labels": dict(sorted(labels.items())),
    }
    if options:
        out["options"] = options
    return out


def check_options(spec: DatasetSpec, options: PrepareOptions) -> None:
    """One line for an option the data set does not take (:attr:`DatasetSpec.options`)."""
    given = {
        "classes": options.classes is not None,
        "val_fraction": options.val_fraction is not None,
        "bands": options.bands is not None,
        "nodata": options.nodata is not None,
        "labels": options.labels is not None,
        "class_field": options.class_field is not None,
        "extent": options.extent is not None,
        "all_touched": options.all_touched,
    }
    for key, is_given in given.items():
        if is_given and key not in spec.options:
            flag = "--" + key.replace("_", "-")
            raise CtsegError(f"{flag} does not apply to data set {spec.name!r} (it takes: {', '.join(spec.options)})")
