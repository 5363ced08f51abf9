"""Any folder of image / label pairs with a classes file: ``ctseg prepare folder`` (a public contract).

Three layouts; images and masks are paired by file stem, and an image without its mask (or a mask without its
image) is an error::

    DIR/images/<stem>.<tif|png|jpg|…>          DIR/masks/<stem>.<png|tif>           flat: split by image
    DIR/<group>/images/<stem>.<ext>            DIR/<group>/masks/<stem>.<ext>       groups (tiles, scenes, cities)
    DIR/<split>/images/<stem>.<ext>            DIR/<split>/masks/<stem>.<ext>       split folders: train, val, test

**Split folders** are only the names in :data:`~ctseg.data.pairs.SPLIT_FOLDERS` (any letter case: ``train`` /
``training``, ``val`` / ``valid`` / ``validation``, ``test`` / ``testing``); they name the splits (a file name found
in two of them gets its split in front: tile id ``val/0001``), and ``--split`` / ``--val-fraction`` are refused. A
folder of another name beside them, or one that reads as a split (``eval``, ``dev``, ``holdout``, ``trainval`` …),
is one error line naming it and the known names. **Any other folders** holding ``images/`` and ``masks/`` are
*groups*: the same file names may repeat across groups (tile ids ``<group>/<stem>``; crop files
``<group>_<stem>_r…_c…``, spaces and the like written as ``_``; each crop record names its ``group``), and a group
never lands in two splits unless ``--split`` picks single files out of it.

**Splits**: ``--split NAME=PATTERN,PATTERN`` (``split_tiles``; repeatable) puts every image whose group, stem or
``group/stem`` equals a pattern or matches it as a glob (``fnmatch``, letter case kept: ``'Tile [1-3]'``,
``'*_part_00[1-2]'``) into split NAME; images no pattern matches go to ``train`` (left out when a ``train``
split is given). A pattern that matches nothing, or an image matched by two splits, is an error. Without
``--split``, ``--val-fraction`` (default 0.2) of the groups — of the images in a flat folder or a single group —
drawn with ``--seed``, go to ``val`` (at least one when there are two or more).

Images may have any number of bands and uint8 / uint16 / float32 values (every image the same), read with
rasterio (GeoTIFF, JP2, VRT …) or Pillow (PNG, JPEG); ``--bands 1,2,3,4`` keeps those source bands, ``--nodata V``
(default: each raster's own nodata) marks nodata pixels: for uint8 / uint16 images a whole number the type holds,
for float32 images any finite number or ``nan`` (NaN and ±inf pixels of float images are nodata whatever
``--nodata`` says; ``inf`` is refused, as is a value the images' type cannot hold).

``classes.yaml`` — class index order in ctseg = order of the list::

    name: mine                             # optional; default "folder"
    classes:
      - {name: building, value: 1}         # index masks: the label value of the class
      - {name: road, value: 2}             # (or, for colour masks: {name: road, color: "#6ec1e4"})
    ignore: [0]                            # values (or colours) that mean "no label"
    eval_classes: [building, road]         # optional; default: all classes
    mean: [..]                             # optional per-band statistics (x / 255 for uint8, x / 65535 for
    std: [..]                              #   uint16, x for float32); default: computed over the train split

One kind per file: every class has a ``value`` (index masks: single-band PNG / GeoTIFF; a class may add a
``color`` for display) or every class has a ``color`` (``"#rrggbb"`` or ``[r, g, b]``; colour-coded masks).
A mask value or colour not in the file is an error naming the file, the pixel and the value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ctseg.data.definitions import IGNORE_INDEX, DatasetInfo, generic_colors
from ctseg.data.pairs import LAYOUT, Layout, assign_patterns, find_layout, layout_pairs, pairs, shown
from ctseg.data.raster import read_header
from ctseg.data.registry import CropSettings, DatasetSpec, PrepareOptions, SourceTile, register_dataset
from ctseg.data.splits import TRAIN_SPLIT, natural_key
from ctseg.errors import CtsegError

DEFAULT_VAL_FRACTION = 0.2
_KEYS = {"name", "classes", "ignore", "eval_classes", "mean", "std"}


# --------------------------------------------------------------------------------------------------- classes file
def _color(raw: Any, where: str) -> tuple[int, int, int]:
    if isinstance(raw, str) and re.fullmatch(r"#?[0-9a-fA-F]{6}", raw.strip()):
        h = raw.strip().lstrip("#")
        return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)
    if isinstance(raw, list | tuple) and len(raw) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in raw):
        return int(raw[0]), int(raw[1]), int(raw[2])
    raise CtsegError(f'{where}: colour {raw!r} is not "#rrggbb" or [r, g, b] with values 0–255')


def _value(raw: Any, where: str) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= 65535:
        raise CtsegError(f"{where}: label value {raw!r} is not an integer 0–65535")
    return int(raw)


def _floats(raw: Any, where: str) -> tuple[float, ...]:
    if not isinstance(raw, list) or not raw or not all(isinstance(v, int | float) for v in raw):
        raise CtsegError(f"{where}: expected a list of numbers, one per band")
    return tuple(float(v) for v in raw)


def read_classes(path: Path) -> dict[str, Any]:
    """Parse and check a ``classes.yaml`` (module docstring); every problem is one line naming the file.

    Returns a dict with ``name``, ``classes`` (names), ``kind`` (``"index"`` | ``"color"``), ``values`` or
    ``colors``, ``display`` (colours for predictions), ``ignore`` (values or colours), ``eval_classes``
    (indices or ``None``), ``mean`` / ``std`` (or ``None``).
    """
    from ctseg.safety.documents import read_yaml

    path = Path(path)
    if not path.is_file():
        raise CtsegError(f"classes file {path} does not exist; write one (see `ctseg prepare --help`)")
    doc = read_yaml(path, "classes file", max_bytes=1024 * 1024)  # no aliases: no expansion bomb
    return check_classes(doc, path)


def check_classes(doc: Any, path: Path) -> dict[str, Any]:
    """:func:`read_classes` of a parsed document (``path``: named in the messages)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("classes"), list) or not doc["classes"]:
        raise CtsegError(f"classes file {path}: expected a mapping with a non-empty 'classes' list")
    unknown = sorted(set(doc) - _KEYS)
    if unknown:
        raise CtsegError(f"classes file {path}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(_KEYS))})")
    names, values, colors = [], [], []
    for i, entry in enumerate(doc["classes"]):
        where = f"classes file {path}, class {i + 1}"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"].strip():
            raise CtsegError(f"{where}: expected {{name: ..., value: N}} or {{name: ..., color: '#rrggbb'}}")
        extra = sorted(set(entry) - {"name", "value", "color"})
        if extra:
            raise CtsegError(f"{where}: unknown key {extra[0]!r} (allowed: name, value, color)")
        name = entry["name"].strip()
        if name in names:
            raise CtsegError(f"classes file {path}: class name {name!r} appears twice")
        names.append(name)
        values.append(_value(entry["value"], where) if "value" in entry else None)
        colors.append(_color(entry["color"], where) if "color" in entry else None)
    if len(names) >= 254:
        raise CtsegError(f"classes file {path}: {len(names)} classes; at most 253 fit ctseg's uint8 masks")
    if all(v is not None for v in values):
        kind = "index"
    elif all(v is None for v in values) and all(c is not None for c in colors):
        kind = "color"
    else:
        raise CtsegError(
            f"classes file {path}: give every class a 'value' (index masks) or every class a 'color' (colour masks)"
        )
    keys = values if kind == "index" else colors
    for i, key in enumerate(keys):
        if keys.index(key) != i:
            what = "value" if kind == "index" else "colour"
            raise CtsegError(
                f"classes file {path}: {what} {key} is used by both {names[keys.index(key)]!r} and {names[i]!r}"
            )
    ignore_raw = doc.get("ignore", [])
    if not isinstance(ignore_raw, list):
        ignore_raw = [ignore_raw]
    parse = _value if kind == "index" else _color
    ignore = [parse(v, f"classes file {path}, ignore") for v in ignore_raw]
    for key in ignore:
        if key in keys:
            raise CtsegError(
                f"classes file {path}: ignore {key} is also the {kind} of class {names[keys.index(key)]!r}"
            )
    eval_classes = None
    if doc.get("eval_classes") is not None:
        wanted = doc["eval_classes"]
        if not isinstance(wanted, list) or not wanted:
            raise CtsegError(f"classes file {path}: eval_classes must be a non-empty list of class names")
        missing = [w for w in wanted if w not in names]
        if missing:
            raise CtsegError(f"classes file {path}: eval_classes names {missing[0]!r}, which is not a class")
        eval_classes = tuple(sorted(names.index(w) for w in set(wanted)))
    mean = _floats(doc["mean"], f"classes file {path}, mean") if "mean" in doc else None
    std = _floats(doc["std"], f"classes file {path}, std") if "std" in doc else None
    if (mean is None) != (std is None) or (mean is not None and std is not None and len(mean) != len(std)):
        raise CtsegError(f"classes file {path}: give both mean and std, one value per band each")
    for key, stats in (("mean", mean), ("std", std)):
        if stats is not None and not all(math.isfinite(v) for v in stats):
            raise CtsegError(f"classes file {path}: {key} values must be finite numbers (not .nan / .inf)")
    if std is not None and min(std) <= 0:
        raise CtsegError(f"classes file {path}: std values must be positive")
    fallback = generic_colors(len(names))
    display = [c if c is not None else fallback[i] for i, c in enumerate(colors)]
    name = str(doc.get("name") or "folder").strip().lower()
    if not re.fullmatch(r"[a-z][a-z0-9_-]*", name):
        raise CtsegError(f"classes file {path}: name {doc.get('name')!r}: use lower-case letters, digits, - and _")
    return {
        "name": name, "classes": names, "kind": kind, "values": values, "colors": colors, "display": display,
        "ignore": ignore, "eval_classes": eval_classes, "mean": mean, "std": std,
    }  # fmt: skip


def hold_out(units: list[str], options: PrepareOptions) -> set[str]:
    """``--val-fraction`` of ``units`` (images or groups), drawn with ``--seed``: at least one of two or more."""
    fraction = DEFAULT_VAL_FRACTION if options.val_fraction is None else float(options.val_fraction)
    if not 0.0 <= fraction < 1.0:
        raise CtsegError(f"--val-fraction must be in [0, 1), got {fraction}")
    order = np.random.default_rng(options.seed).permutation(len(units))
    count = int(round(fraction * len(units)))
    if fraction > 0 and len(units) >= 2:
        count = min(max(count, 1), len(units) - 1)
    return {units[i] for i in order[:count]}


def discover_folder(
    src: Path, split_tiles: Mapping[str, Iterable[str]] | None, options: PrepareOptions
) -> tuple[list[SourceTile], list[str]]:
    """Pair images and masks under ``src`` and assign splits (module docstring)."""
    layout = find_layout(src)
    notes: list[str] = []
    if layout.kind == "splits":
        return _split_folders(src, layout, split_tiles, options), notes
    items = layout_pairs(layout)
    if not items:
        where = src / "images" if layout.kind == "flat" else src
        raise CtsegError(f"{where} holds no images: expected {LAYOUT}")
    grouped = layout.kind == "groups"
    if split_tiles is not None:
        if options.val_fraction is not None:
            raise CtsegError("--val-fraction and --split both choose the held-out images; give one of them")
        assignment, skipped = assign_patterns(items, split_tiles, src, grouped)
        if skipped:
            notes.append(f"folder: skipping {len(skipped)} image(s) in no split: {shown(skipped)}")
    else:
        groups = list(dict.fromkeys(item.group for item in items))
        by_group = grouped and len(groups) >= 2  # one group: split its images
        held = hold_out(groups if by_group else [item.tile for item in items], options)
        assignment = {item.tile: "val" if (item.group if by_group else item.tile) in held else TRAIN_SPLIT
                      for item in items}  # fmt: skip
        if by_group and held:
            notes.append(f"folder: no --split: group(s) {shown(sorted(held, key=natural_key))} held out as val "
                         "(--val-fraction of the groups); choose them with --split val=PATTERN")  # fmt: skip
    tiles = [SourceTile(item.tile, item.group, assignment[item.tile], item.image, item.mask, label_kind="mask")
             for item in items if item.tile in assignment]  # fmt: skip
    return tiles, notes


def _split_folders(
    src: Path, layout: Layout, split_tiles: Mapping[str, Iterable[str]] | None, options: PrepareOptions
) -> list[SourceTile]:
    names = ", ".join(folder.name for folder in layout.folders.values())
    if options.val_fraction is not None:
        raise CtsegError(f"--val-fraction: {src} already has split folders ({names}); drop the option")
    if split_tiles is not None:
        raise CtsegError(
            f"--split: {src} already has split folders ({names}), which name the splits; drop --split, or move "
            "the files between those folders"
        )
    items = layout_pairs(layout)  # tile ids split/stem: the same stem may be in two splits
    stems = [item.stem for item in items]
    repeated = len(set(stems)) < len(stems)  # else the ids stay the stems, as ctseg always named them
    tiles = [SourceTile(item.tile if repeated else item.stem, item.tile if repeated else item.stem, item.group,
                        item.image, item.mask, label_kind="mask") for item in items]  # fmt: skip
    if not tiles:
        raise CtsegError(f"the split folders under {src} hold no images: expected {LAYOUT}")
    return tiles


def _first_image(src: Path) -> Path:
    for folder in find_layout(src).folders.values():
        found = pairs(folder)
        if found:
            return found[0][1]
    raise CtsegError(f"no images under {src}: expected {LAYOUT}")


def check_nodata(value: float, dtype: str, first: Path) -> None:
    """One line for a ``--nodata`` no pixel of ``dtype`` can hold (it would silently mark nothing): NaN, a
    fraction or a number out of range for integer images; an infinite one for any."""
    if math.isinf(value):
        raise CtsegError(f"--nodata {value}: must be a finite number (or nan for float images)")
    if np.issubdtype(np.dtype(dtype), np.integer):
        low, high = np.iinfo(dtype).min, np.iinfo(dtype).max
        if math.isnan(value) or value != int(value) or not low <= value <= high:
            raise CtsegError(
                f"--nodata {value:g}: {first} holds {dtype} pixels, whole numbers {low} … {high}; give one of "
                "those, or leave --nodata out to use each raster's own"
            )


def folder_info(src: Path, options: PrepareOptions) -> DatasetInfo:
    """The folder's :class:`DatasetInfo`: classes from ``options.classes``, bands and dtype from its first image."""
    if options.classes is None:
        raise CtsegError("ctseg prepare folder needs --classes classes.yaml (class names with label values or colours)")
    return dataset_info(read_classes(options.classes), _first_image(src), options)


def dataset_info(spec: dict[str, Any], first: Path, options: PrepareOptions) -> DatasetInfo:
    """The :class:`DatasetInfo` of a classes file's description (:func:`read_classes`) and the images' first one
    (bands, dtype, nodata; ``--bands`` / ``--nodata`` checked against it)."""
    header = read_header(first)
    if header.dtype not in ("uint8", "uint16", "float32"):
        raise CtsegError(f"{first}: {header.dtype} pixels; ctseg reads uint8, uint16 or float32 images")
    bands = options.bands
    if bands is not None and max(bands) > header.bands:
        raise CtsegError(f"--bands {','.join(map(str, bands))}: {first} has only {header.bands} band(s)")
    count = len(bands) if bands is not None else header.bands
    if spec["mean"] is not None and len(spec["mean"]) != count:
        raise CtsegError(
            f"classes file {options.classes}: mean/std have {len(spec['mean'])} values but the images have {count} "
            "band(s) (after --bands)"
        )
    if options.nodata is not None:
        check_nodata(options.nodata, header.dtype, first)
    nodata = options.nodata if options.nodata is not None else header.nodata
    kind = spec["kind"]
    return DatasetInfo(
        name=spec["name"],
        classes=tuple(spec["classes"]),
        colors=tuple(spec["colors"] if kind == "color" else spec["display"]),
        ignore_colors=tuple(spec["ignore"]) if kind == "color" else (),
        eval_classes=spec["eval_classes"],
        mean=spec["mean"] or (0.0,) * count,
        std=spec["std"] or (1.0,) * count,
        ignore_index=IGNORE_INDEX,
        label_values=tuple(spec["values"]) if kind == "index" else None,
        ignore_values=tuple(spec["ignore"]) if kind == "index" else (),
        bands=count,
        dtype=header.dtype,
        band_indices=bands,
        nodata=None if nodata is None else float(nodata),
        extra={"stats_given": spec["mean"] is not None},
    )


register_dataset(
    DatasetSpec(
        name="folder",
        summary="your own imagery: DIR/images + DIR/masks paired by stem (or DIR/<group>/…, DIR/<split>/…), "
        "classes from --classes classes.yaml",
        crop=CropSettings(512, 512, None),
        discover=discover_folder,
        make_info=folder_info,
        options=("classes", "val_fraction", "bands", "nodata"),
        compute_stats=True,
        datamodule="ctseg.data.FolderDataModule",
        layout=LAYOUT,
    )
)
