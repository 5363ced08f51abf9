"""ISPRS Potsdam and Vaihingen: file names, the splits of the paper's protocol, tile discovery.

Files are found anywhere under the source folder, whatever the sub-folders are called, in the release zips as
downloaded too (read in place, :mod:`ctseg.data.walk`; an archive stands for the folder it unpacks into):

**Potsdam** (5 cm, 6000 × 6000 GeoTIFF tiles; tile id ``"X_Y"``):
    - images ``top_potsdam_X_Y_RGB.tif`` (``2_Ortho_RGB.zip``; the RGBIR / IRRG variants of ``4_Ortho_RGBIR.zip``
      / ``3_Ortho_IRRG.zip`` are not used: a source holding only those is an error that names the RGB download);
    - labels ``top_potsdam_X_Y_label.tif`` (``5_Labels_all.zip``), used for the train tiles;
    - eroded labels ``top_potsdam_X_Y_label_noBoundary.tif`` (``5_Labels_all_noBoundary.zip``), used for the
      test tiles (boundary pixels are black → ignore).

**Vaihingen** (9 cm IR-R-G GeoTIFF tiles of ~2000 × 2500; tile id ``"areaN"``):
    - images ``top/top_mosaic_09cm_areaN.tif``;
    - labels of the same file name in a ground-truth folder: ``gts_for_participants/`` (the 16 train areas of the
      original release) or ``..._ground_truth_COMPLETE/`` (all areas; the zip of that name holds them at its top).
      A file named ``top_mosaic_09cm_areaN.tif`` is a label when one of the folders (or archives) between the
      source folder and the file is called ``gt``/``gts…``, ``…ground_truth…``, ``label(s)``, ``mask(s)`` or
      ``annotation(s)``; otherwise it is an image — unless the same area has an image in a ``top/`` folder: then
      the others are its labels (the ground-truth zip unpacked beside ``top/`` puts them there; a note says so);
    - eroded labels ``top_mosaic_09cm_areaN_noBoundary.tif`` (``gts_eroded_for_participants/`` or
      ``..._ground_truth_eroded_COMPLETE/``), used for the test areas.

Labels are colour-coded RGB (:data:`ISPRS_COLORS`, black = ignore); decoding and cropping are generic
(:mod:`ctseg.data.crops`). Default crops: the paper's 500 × 500, resized to 512 × 512.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from ctseg.data.definitions import DatasetInfo
from ctseg.data.registry import CropSettings, DatasetSpec, PrepareOptions, SourceTile, register_dataset
from ctseg.data.splits import natural_key, resolve_splits
from ctseg.data.walk import file_size, walk_files
from ctseg.errors import CtsegError

#: The six ISPRS classes (Potsdam and Vaihingen), in label-index order.
ISPRS_CLASSES = ("impervious_surface", "building", "low_vegetation", "tree", "car", "clutter")
#: The RGB label colour of each of :data:`ISPRS_CLASSES`, in the same order.
ISPRS_COLORS = ((255, 255, 255), (0, 0, 255), (0, 255, 255), (0, 255, 0), (255, 255, 0), (255, 0, 0))

#: docs/design.md §4: scored over the five classes without clutter; black label pixels (eroded boundaries) are ignore.
POTSDAM = DatasetInfo(
    name="potsdam",
    classes=ISPRS_CLASSES,
    colors=ISPRS_COLORS,
    ignore_colors=((0, 0, 0),),
    eval_classes=(0, 1, 2, 3, 4),
)
VAIHINGEN = DatasetInfo(
    name="vaihingen",
    classes=ISPRS_CLASSES,
    colors=ISPRS_COLORS,
    ignore_colors=((0, 0, 0),),
    eval_classes=(0, 1, 2, 3, 4),
)

#: docs/design.md §4.1: the 14 Potsdam test tiles and the 24 train tiles.
POTSDAM_TEST = (
    "2_13", "2_14", "3_13", "3_14", "4_13", "4_14", "4_15", "5_13", "5_14", "5_15", "6_13", "6_14", "6_15", "7_13",
)  # fmt: skip
POTSDAM_TRAIN = (
    "2_10", "2_11", "2_12", "3_10", "3_11", "3_12", "4_10", "4_11", "4_12", "5_10", "5_11", "5_12",
    "6_7", "6_8", "6_9", "6_10", "6_11", "6_12", "7_7", "7_8", "7_9", "7_10", "7_11", "7_12",
)  # fmt: skip
#: docs/design.md §4.2: the customary Vaihingen split (16 train areas, 17 test areas).
VAIHINGEN_TRAIN = tuple(f"area{n}" for n in (1, 3, 5, 7, 11, 13, 15, 17, 21, 23, 26, 28, 30, 32, 34, 37))
VAIHINGEN_TEST = tuple(f"area{n}" for n in (2, 4, 6, 8, 10, 12, 14, 16, 20, 22, 24, 27, 29, 31, 33, 35, 38))

SPLITS: dict[str, dict[str, tuple[str, ...]]] = {
    "potsdam": {"train": POTSDAM_TRAIN, "test": POTSDAM_TEST},
    "vaihingen": {"train": VAIHINGEN_TRAIN, "test": VAIHINGEN_TEST},
}

_TIF = r"\.tiff?$"
_POTSDAM = {
    "image": re.compile(r"^top_potsdam_(\d+)_(\d+)_RGB" + _TIF, re.IGNORECASE),
    "full": re.compile(r"^top_potsdam_(\d+)_(\d+)_label" + _TIF, re.IGNORECASE),
    "eroded": re.compile(r"^top_potsdam_(\d+)_(\d+)_label_noBoundary" + _TIF, re.IGNORECASE),
}
_VAIHINGEN_SHARED = re.compile(r"^top_mosaic_09cm_area(\d+)" + _TIF, re.IGNORECASE)
_VAIHINGEN_ERODED = re.compile(r"^top_mosaic_09cm_area(\d+)_noBoundary" + _TIF, re.IGNORECASE)
#: Potsdam's other image products (4_Ortho_RGBIR, 3_Ortho_IRRG): recognised only to say what is missing.
_POTSDAM_OTHER = re.compile(r"^top_potsdam_(\d+)_(\d+)_(RGBIR|IRRG)" + _TIF, re.IGNORECASE)
#: Folder names that mark Vaihingen ground truth (the images and labels share their file names).
_LABEL_FOLDER = re.compile(r"^(gts?([_ -].*)?|.*ground[_ -]?truth.*|labels?|masks?|annotations?)$", re.IGNORECASE)

_EXPECTED = {
    "potsdam": "top_potsdam_X_Y_RGB.tif images with top_potsdam_X_Y_label.tif (train) and "
    "top_potsdam_X_Y_label_noBoundary.tif (test) labels (2_Ortho_RGB.zip, 5_Labels_all.zip, "
    "5_Labels_all_noBoundary.zip, as downloaded or unpacked)",
    "vaihingen": "top_mosaic_09cm_areaN.tif images (e.g. in top/) with labels of the same name in "
    "gts_for_participants/ (train) and top_mosaic_09cm_areaN_noBoundary.tif eroded labels (test) "
    "(ISPRS_semantic_labeling_Vaihingen.zip and its ground_truth zips, as downloaded or unpacked)",
}
_VAIHINGEN_LAYOUT = (
    "Vaihingen images and labels share their file names: keep the images in top/ and the labels in a ground-truth "
    "folder (gts_for_participants/, …_ground_truth_COMPLETE/) or in the release zips as downloaded"
)
_POTSDAM_RGB = (
    "ctseg prepares Potsdam from the RGB tiles top_potsdam_X_Y_RGB.tif: download 2_Ortho_RGB.zip from the ISPRS "
    "2D Semantic Labeling Contest's Potsdam download page (beside 5_Labels_all.zip and 5_Labels_all_noBoundary.zip) "
    "and put it in {src}"
)
_LABEL_FILE = {
    ("potsdam", "full"): "top_potsdam_{}_label.tif",
    ("potsdam", "eroded"): "top_potsdam_{}_label_noBoundary.tif",
    ("vaihingen", "full"): "top_mosaic_09cm_{}.tif in a ground-truth folder such as gts_for_participants/",
    ("vaihingen", "eroded"): "top_mosaic_09cm_{}_noBoundary.tif",
}


def _folder_parts(folder: Path, src: Path) -> tuple[str, ...]:
    try:
        return folder.relative_to(src).parts
    except ValueError:
        return folder.parts


def _in_label_folder(folder: Path, src: Path) -> bool:
    return any(_LABEL_FOLDER.match(part) for part in _folder_parts(folder, src))


def _classify(name: str, src: Path) -> tuple[dict[str, dict[str, list[Path]]], list[Path]]:
    """(role ("image" | "full" | "eroded" | "other": Potsdam's RGBIR / IRRG) → tile id → candidate files, the
    Vaihingen files taken as labels because their area has an image in a ``top/`` folder)."""
    found: dict[str, dict[str, list[Path]]] = {"image": {}, "full": {}, "eroded": {}, "other": {}}
    in_top: set[Path] = set()
    for folder, file in walk_files(src):
        role = tile = None
        if name == "potsdam":
            for candidate, pattern in (*_POTSDAM.items(), ("other", _POTSDAM_OTHER)):
                if m := pattern.match(file):
                    role, tile = candidate, f"{int(m[1])}_{int(m[2])}"
                    break
        else:
            if m := _VAIHINGEN_ERODED.match(file):
                role, tile = "eroded", f"area{int(m[1])}"
            elif m := _VAIHINGEN_SHARED.match(file):
                role = "full" if _in_label_folder(folder, src) else "image"
                tile = f"area{int(m[1])}"
                if role == "image" and any(part.lower() == "top" for part in _folder_parts(folder, src)):
                    in_top.add(folder / file)
        if role is not None:
            found[role].setdefault(tile, []).append(folder / file)
    moved = []
    for tile, paths in found["image"].items():
        tops = [p for p in paths if p in in_top]
        if tops and len(tops) < len(paths):  # the ground-truth release unpacked beside top/
            found["full"].setdefault(tile, []).extend(p for p in paths if p not in in_top)
            moved += [p for p in paths if p not in in_top]
            found["image"][tile] = tops
    return found, moved


def _pick(paths: list[Path], what: str, fix: str = "keep one of them") -> Path:
    """One file out of duplicates: identical copies (same size) are fine — an unpacked one first, it reads faster
    than an archive member — different ones are ambiguous."""
    if len(paths) > 1 and len({file_size(p) for p in paths}) > 1:
        raise CtsegError(f"ambiguous {what}: {paths[0]} and {paths[1]} differ; {fix}")
    return min(paths, key=lambda p: not p.is_file())


def normalize_tile_id(name: str, raw: str) -> str:
    """User-written tile id → canonical: Potsdam ``"02_10"`` → ``"2_10"``, Vaihingen ``"3"`` → ``"area3"``."""
    raw = raw.strip()
    if name == "vaihingen":
        m = re.fullmatch(r"(?:area)?(\d+)", raw, re.IGNORECASE)
        return f"area{int(m[1])}" if m else raw
    m = re.fullmatch(r"(\d+)_(\d+)", raw)
    return f"{int(m[1])}_{int(m[2])}" if m else raw


def discover_isprs(
    name: str, src: Path, split_tiles: Mapping[str, Iterable[str]] | None = None
) -> tuple[list[SourceTile], list[str]]:
    """Find the tiles of ``name`` (``"potsdam"`` | ``"vaihingen"``) under ``src`` and assign their splits.

    Train tiles are paired with their full labels, every other split with the eroded (noBoundary) labels.

    Returns:
        (tiles sorted by id, notes for the user: tiles skipped or missing).

    Raises:
        CtsegError: no image found (the message gives the file pattern), a tile of a split without the label it
            needs, ambiguous duplicates.
    """
    if name not in SPLITS:
        raise ValueError(f"not an ISPRS data set: {name!r}")
    src = Path(src)
    found, moved = _classify(name, src)
    images = found["image"]
    if not images and found["other"]:
        other = next(iter(found["other"].values()))[0]
        raise CtsegError(f"no potsdam RGB images under {src}, only {len(found['other'])} tile(s) of other bands (e.g. "
                         f"{other.name}); {_POTSDAM_RGB.format(src=src)}")  # fmt: skip
    if not images:
        raise CtsegError(f"no {name} images found under {src}: expected {_EXPECTED[name]}")
    assignment, skipped = resolve_splits(
        images, SPLITS[name], split_tiles, normalize=lambda raw: normalize_tile_id(name, raw)
    )
    notes = []
    if moved:
        notes.append(
            f"{name}: {len(moved)} file(s) named like images, beside top/ but in no ground-truth folder, "
            f"taken as labels (the …_ground_truth_COMPLETE release unpacked there; e.g. {moved[0]})"
        )
    if skipped:
        notes.append(f"{name}: skipping {len(skipped)} tile(s) in no split: {', '.join(skipped)}")
    expected = sum(len(v) for v in SPLITS[name].values())
    if split_tiles is None and len(assignment) < expected:
        missing = [t for v in SPLITS[name].values() for t in v if t not in assignment]
        shown = ", ".join(missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
        notes.append(f"{name}: found {len(assignment)} of {expected} tiles (missing: {shown})")
    if not assignment:
        raise CtsegError(f"no {name} tile under {src} belongs to a split; found: {', '.join(sorted(images))}")
    fix = _VAIHINGEN_LAYOUT if name == "vaihingen" else "keep one of them"
    tiles = []
    for tile in sorted(assignment, key=natural_key):
        split = assignment[tile]
        kind = "full" if split == "train" else "eroded"
        labels = found[kind].get(tile)
        if not labels:
            expected_file = _LABEL_FILE[(name, kind)].format(tile)
            raise CtsegError(
                f"{name} {split} tile {tile} ({images[tile][0].name}) has no "
                f"{'eroded ' if kind == 'eroded' else ''}label: expected {expected_file} under {src}"
            )
        tiles.append(
            SourceTile(
                tile=tile,
                group=tile,
                split=split,
                image=_pick(images[tile], f"{name} image for tile {tile}", fix),
                label=_pick(labels, f"{name} {kind} label for tile {tile}"),
                label_kind=kind,
            )
        )
    orphans = sorted((set(found["full"]) | set(found["eroded"])) - set(images), key=natural_key)
    if orphans:
        notes.append(f"{name}: {len(orphans)} label(s) without an image, skipped: {', '.join(orphans)}")
    return tiles, notes


def _discover(name: str):
    def discover(src: Path, split_tiles, options: PrepareOptions) -> tuple[list[SourceTile], list[str]]:
        return discover_isprs(name, src, split_tiles)

    return discover


register_dataset(
    DatasetSpec(
        name="potsdam",
        summary="ISPRS Potsdam, 5 cm RGB tiles (24 train / 14 test, docs/design.md §4)",
        info=POTSDAM,
        crop=CropSettings(500, 500, 512),
        discover=_discover("potsdam"),
        datamodule="ctseg.data.PotsdamDataModule",
        layout=_EXPECTED["potsdam"],
    )
)
register_dataset(
    DatasetSpec(
        name="vaihingen",
        summary="ISPRS Vaihingen, 9 cm IR-R-G tiles (16 train / 17 test areas)",
        info=VAIHINGEN,
        crop=CropSettings(500, 500, 512),
        discover=_discover("vaihingen"),
        datamodule="ctseg.data.VaihingenDataModule",
        layout=_EXPECTED["vaihingen"],
    )
)
