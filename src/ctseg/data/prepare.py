"""Turn a downloaded data set into training crops: :func:`prepare_dataset` (``ctseg prepare``).

The driver only: the data set is looked up in the registry (:mod:`ctseg.data.registry`), which finds its source
files and splits; :mod:`ctseg.data.crops` cuts each tile (geometry, scored boxes of evaluation splits, nodata) —
a data set may cut its own (``DatasetSpec.cut``); tiles are cut in a process pool (:mod:`ctseg.data.prepare_run`);
the crop geometry and the settings recorded are :mod:`ctseg.data.prepare_settings`'s; the folder is written as
``<dst>.tmp-XXXX`` beside ``dst`` and renamed when complete, with :mod:`ctseg.data.manifest` describing it. The
output layout and the manifest fields are in :mod:`ctseg.data.manifest`.

A prepare killed outright (SIGKILL, power loss) leaves no partial ``dst``, only its ``<dst>.tmp-XXXX`` folder,
which holds a ``.ctseg-owner`` file naming the process; the next prepare of the same destination deletes
such folders whose process is gone (and restores a previous ``dst`` a kill left in ``<dst>.old-XXXX``). Any
error — Ctrl-C, a bad file, a disk that fills up (one line naming ``dst`` and "no space left", whichever worker
met it; the other workers' tiles are dropped) — removes the temporary folder (and the folders above ``dst`` this
run created) and leaves a previous ``dst`` as it was. Bad values (a crop over :data:`MAX_CROP`, ``--nodata
inf``, a ``dst`` inside ``src`` or the other way round, a read-only ``dst``) are refused before any file is read.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ctseg.data.atomic_folder import clean_stale, replace_folder, write_owner
from ctseg.data.crops import PNG_LEVEL, CropWriteError, crop_offsets, cut_tile, scored_start
from ctseg.data.definitions import DatasetInfo, info_to_json
from ctseg.data.labels import decode_label
from ctseg.data.manifest import FORMAT, FORMAT_VERSION, MANIFEST, existing_state, summarize
from ctseg.data.prepare_run import check_nesting, discard, make_parents, pool_context, run_tiles, writing
from ctseg.data.prepare_settings import MAX_CROP, check_options, options_json, resolve_settings, settings_json
from ctseg.data.raster import raster_shape, read_header, read_rgb
from ctseg.data.registry import DatasetSpec, PrepareOptions, SourceTile, get_dataset
from ctseg.data.splits import TRAIN_SPLIT, is_eval_split, natural_key
from ctseg.errors import CtsegError
from ctseg.io import check_writable_root, is_disk_full, set_default_mode, write_error

__all__ = [
    "FORMAT", "FORMAT_VERSION", "MANIFEST", "MAX_CROP", "PNG_LEVEL", "crop_offsets", "decode_label", "info_to_json",
    "prepare_dataset", "read_rgb", "scored_start",
]  # fmt: skip


#: Most worker processes: each holds a whole source image (and two float64 copies of it for the statistics).
MAX_WORKERS = 256


# --------------------------------------------------------------------------------------------------- driver
def _say(message: str, progress: bool) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


def _notes(notes: Sequence[str], now: bool) -> list[str]:
    """Print the source's notes (tiles skipped or missing) as plain stderr lines when ``now`` (on a terminal: as soon
    as they are known); else return them, to be printed once the prepare succeeded — a failed one prints only its
    error line (CI logs get the notes too, never before an error)."""
    for note in notes if now else ():
        print(note, file=sys.stderr, flush=True)
    return [] if now else list(notes)


_pool_context = pool_context  # its older name


def _check_headers(tiles: Sequence[SourceTile], info: DatasetInfo, labels: bool = True) -> None:
    """Cheap header checks of every pair before any heavy work: sizes (``labels``: of label rasters), band counts,
    dtypes."""
    need = max(info.band_indices) if info.band_indices else info.bands
    rgb = (info.bands, info.dtype) == (3, "uint8") and info.band_indices is None
    for tile in tiles:
        header = read_header(tile.image)
        image_shape = (header.height, header.width)
        label_shape = raster_shape(tile.label) if labels else image_shape
        if image_shape != label_shape:
            raise CtsegError(
                f"{tile.label}: label is {label_shape[0]}×{label_shape[1]} but its image {tile.image.name} is "
                f"{image_shape[0]}×{image_shape[1]} (height×width)"
            )
        if rgb:
            continue
        if header.bands < need:
            raise CtsegError(
                f"{tile.image} has {header.bands} band(s), but {info.name} needs {need} ({info.band_layout()}); "
                "give every image the same bands, or choose bands with --bands"
            )
        if header.dtype != info.dtype:
            raise CtsegError(
                f"{tile.image} holds {header.dtype} pixels, but {info.name} holds {info.dtype} ({info.band_layout()}); "
                "give every image the same data type"
            )


def _statistics(results: list[dict[str, Any]], tiles: Sequence[SourceTile], info: DatasetInfo) -> dict[str, Any]:
    """Per-band mean / std over the training split's valid pixels (all splits when there is no training split)."""
    split_of = {t.tile: t.split for t in tiles}
    chosen = [r for r in results if split_of[r["tile"]] == TRAIN_SPLIT] or results
    n = sum(r["stats"][0] for r in chosen)
    if n == 0:
        raise CtsegError(f"{info.name}: no valid (non-nodata) image pixel to compute band statistics from")
    total = np.sum([r["stats"][1] for r in chosen], axis=0)
    squares = np.sum([r["stats"][2] for r in chosen], axis=0)
    mean = total / n
    std = np.sqrt(np.maximum(squares / n - mean**2, 0.0))
    std = np.where(std > 1e-8, std, 1.0)  # a constant band: leave it unscaled
    over = TRAIN_SPLIT if any(split_of[r["tile"]] == TRAIN_SPLIT for r in results) else "all"
    return {"mean": [float(v) for v in mean], "std": [float(v) for v in std], "split": over, "pixels": int(n)}


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
    classes: str | os.PathLike | None = None,
    val_fraction: float | None = None,
    seed: int = 0,
    bands: Sequence[int] | None = None,
    nodata: float | None = None,
    labels: str | os.PathLike | None = None,
    class_field: str | None = None,
    extent: str | os.PathLike | None = None,
    all_touched: bool = False,
) -> Path:
    """Cut a downloaded data set into crops plus ``manifest.json`` (layout: :mod:`ctseg.data.manifest`).

    Args:
        name: a registered data set (``ctseg prepare --list``): ``"potsdam"``, ``"vaihingen"``, ``"dubai"``,
            ``"loveda"``, ``"uavid"``, ``"folder"`` …
        src: folder holding the download; each data set's module says what it looks for (``"vector"``: also a
            ``.txt`` list of rasters or one raster / VRT).
        dst: output folder, outside ``src`` (and not holding it). Written as ``<dst>.tmp-XXXX`` beside it and
            renamed at the end: ``dst`` is never left half-written; the temporary folder is removed on error (a
            full disk included), and by the next prepare of ``dst`` after a kill (module docstring).
        crop: crop side in source pixels (default: the data set's; 500 for ISPRS, 512 for Dubai); at most
            :data:`MAX_CROP`.
        stride: step between crops (default: ``crop``, i.e. no overlap except the border-aligned last crops).
            Must not exceed ``crop``.
        resize: side the crops are resized to (bilinear images, nearest masks); ``0`` keeps the crop size.
            Default: the data set's when ``crop`` is left at its default (ISPRS: the paper's 500 → 512), else
            none; at most :data:`MAX_CROP`. Masks of the evaluation splits (all but ``"train"``) are never
            resized, and the pixels they share with an earlier crop are ignore (:mod:`ctseg.data.crops`: each
            source pixel is scored once).
        workers: processes, one tile at a time each (default: all cores; at most :data:`MAX_WORKERS`). Workers
            are started with ``forkserver`` (``spawn`` where missing), never ``fork`` (unsafe once torch runs
            threads), so a script calling this with ``workers > 1`` needs the usual ``if __name__ == "__main__":``
            guard.
        overwrite: replace a destination prepared with other settings, or an incomplete one. Without it such a
            destination is an error; a complete destination with the same settings is left as it is.
        split_tiles: override the split, split name → group ids (ISPRS ``"2_13"`` / ``"area2"``, Dubai
            ``"tile3"``, UAVid ``"seq1"`` …). Groups not listed go to ``"train"`` unless ``"train"`` is given.
        progress: show a progress bar and the notes (tiles skipped or missing, one line each) on stderr as they
            come; without it the notes are printed at the end of a prepare that succeeded.
        classes: folder data set: the ``classes.yaml`` file (:mod:`ctseg.data.sets.folder`).
        val_fraction, seed: folder data set without given splits: share of source images held out as ``val``.
        bands: 1-based source bands to keep, in order (recorded; predict reads the same ones).
        nodata: nodata value of the source images (default: each raster's own nodata, if any); finite, or NaN
            for float images (the data set may refuse a value its images' type cannot hold).
        labels, class_field, extent, all_touched: vector data set (:mod:`ctseg.data.sets.vector`): the polygons'
            file, their class attribute, where they are complete, and rasterisation of every touched pixel.

    Returns:
        ``Path(dst)``.

    Raises:
        CtsegError: one line naming the file: empty or wrong source folder (with the layout expected), a tile
            without its label, image and label of different sizes, a band count or dtype that differs between
            files, a label colour / value not declared (value and pixel position), an unreadable or truncated
            file, a destination that needs ``overwrite=True`` or that does not look like prepared data, a
            destination inside the source (or holding it), on a read-only mount or on a disk that fills up
            (naming ``dst`` and "no space left"), a crop / resize over :data:`MAX_CROP`, an infinite nodata.
    """
    spec = get_dataset(name)
    if not spec.preparable:
        choices = ", ".join(s.name for s in _preparable())
        raise CtsegError(f"data set {spec.name!r} cannot be prepared from files; choose one of: {choices}")
    settings = resolve_settings(spec, crop, stride, resize)
    src_path = Path(src).expanduser()
    dst_path = Path(dst).expanduser().absolute()
    if not src_path.is_dir() and not (src_path.is_file() and src_path.suffix.lower() in spec.src_files):
        why = "is not a folder" if src_path.exists() else "does not exist"
        kinds = f" (or a {' / '.join(spec.src_files)} file)" if spec.src_files else ""
        raise CtsegError(f"source folder{kinds} {src_path} {why}")
    check_nesting(src_path, dst_path)
    if not (dst_path / MANIFEST).is_file():  # a prepared dst on a read-only mount may still be a no-op (below)
        check_writable_root(dst_path, "--dst", beside=True)
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    if workers < 1:
        raise CtsegError(f"workers must be at least 1, got {workers}")
    if workers > MAX_WORKERS:
        raise CtsegError(f"--workers {workers}: at most {MAX_WORKERS} (each holds a source image in memory)")
    if int(seed) < 0:
        raise CtsegError(f"--seed {seed}: must be zero or positive")
    if nodata is not None and math.isinf(float(nodata)):
        raise CtsegError(
            f"--nodata {nodata}: must be a finite number (or nan for float images); infinite pixels of float "
            "images are nodata already"
        )
    options = PrepareOptions(
        classes=None if classes is None else Path(classes).expanduser(),
        val_fraction=val_fraction,
        seed=int(seed),
        bands=None if bands is None else tuple(int(b) for b in bands),
        nodata=None if nodata is None else float(nodata),
        labels=None if labels is None else Path(labels).expanduser(),
        class_field=class_field,
        extent=None if extent is None else Path(extent).expanduser(),
        all_touched=bool(all_touched),
    )
    check_options(spec, options)
    if options.bands is not None and (not options.bands or min(options.bands) < 1):
        raise CtsegError(f"--bands {','.join(map(str, options.bands))}: bands are numbered from 1")

    info = spec.build_info(src_path, options)
    assert spec.discover is not None
    tiles, notes = spec.discover(src_path, split_tiles, options)
    held = _notes(notes, progress)
    if not tiles:
        raise CtsegError(f"no {spec.name} image/label pairs found under {src_path}; expected {spec.layout}")
    _check_headers(tiles, info, labels=spec.cut is None)
    wanted = settings_json(spec.name, settings, tiles, options_json(options, spec.options))

    state, why = existing_state(dst_path, wanted)
    if state == "complete" and not overwrite:
        _say(f"{dst_path} is already prepared with these settings; nothing to do", progress)
        clean_stale(dst_path)
        _notes(held, True)
        return dst_path
    if state == "foreign":
        raise CtsegError(f"{why}; refusing to write there, choose an empty or new --dst")
    if state in ("different", "partial") and not overwrite:
        raise CtsegError(f"{why}; pass overwrite=True (--overwrite) to replace it")

    check_writable_root(dst_path, "--dst", beside=True)  # before the first write: a read-only mount is one line
    created: list[Path] = []
    tmp: Path | None = None
    started = time.perf_counter()
    try:
        with writing(dst_path):
            created = make_parents(dst_path.parent)
            for stale in clean_stale(dst_path):
                _say(f"removed {stale.name}, left by an interrupted prepare", progress)
            tmp = Path(tempfile.mkdtemp(prefix=f"{dst_path.name}.tmp-", dir=dst_path.parent))
            set_default_mode(tmp)  # mkdtemp makes it 0700
            write_owner(tmp)
            (tmp / "images").mkdir()
            (tmp / "masks").mkdir()
        need_stats = spec.compute_stats and not info.extra.get("stats_given")
        results = run_tiles(spec.cut or cut_tile, tiles, info, settings, tmp, workers, progress, need_stats)
        statistics = None
        if need_stats:
            statistics = _statistics(results, tiles, info)
            info = info.with_stats(statistics["mean"], statistics["std"])
        manifest = _manifest(info, wanted, settings, src_path, tiles, results, statistics)
        with writing(dst_path):
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
            replace_folder(tmp, dst_path)
    except CropWriteError as err:  # from a worker: one line naming dst ("no space left" for a full disk)
        discard(tmp, created)
        raise CtsegError(write_error(dst_path, OSError(err.errno, err.reason))) from None
    except BaseException as err:
        discard(tmp, created)
        if isinstance(err, Exception) and not isinstance(err, CtsegError) and is_disk_full(err):
            raise CtsegError(write_error(dst_path, err)) from None
        raise
    _notes(held, True)
    counts_text = ", ".join(f"{split} {len(ids)}" for split, ids in wanted["splits"].items())
    _say(
        f"prepared {len(manifest['crops'])} crops of {settings.size}×{settings.size} from {len(tiles)} source images "
        f"({counts_text}) in {time.perf_counter() - started:.1f} s → {dst_path}",
        progress,
    )
    return dst_path


def _preparable() -> list[DatasetSpec]:
    from ctseg.data.registry import list_datasets

    return [s for s in list_datasets() if s.preparable]


def _manifest(info, wanted, settings, src_path, tiles, results, statistics) -> dict[str, Any]:
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
        "summary": summarize((t.split, t.group, by_tile[t.tile]) for t in tiles),
        "tiles": tile_rows,
        "crops": crops,
    }
    if statistics is not None:
        manifest["statistics"] = statistics
    return manifest
