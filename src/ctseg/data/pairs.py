"""Folders of image / mask pairs, as ``ctseg prepare folder`` reads them (:mod:`ctseg.data.sets.folder`): the three
layouts — flat, groups (tiles, scenes, cities) and split folders — and ``--split NAME=PATTERN`` by pattern.

:func:`find_layout` tells the layouts apart, :func:`layout_pairs` lists the pairs of a flat or groups layout,
:func:`assign_patterns` puts them into splits by pattern. Every refusal is one line naming the folder, file or
pattern, and the fix.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

from ctseg.data.crops import safe_name
from ctseg.data.splits import TRAIN_SPLIT, check_split_name, natural_key
from ctseg.data.walk import skip_folder
from ctseg.errors import CtsegError

#: File suffixes read as images in a folder data set's ``images`` folders.
IMAGE_SUFFIXES = {".tif", ".tiff", ".png", ".jpg", ".jpeg", ".jp2", ".vrt", ".img", ".bmp"}
#: File suffixes read as masks in its ``masks`` folders.
MASK_SUFFIXES = {".png", ".tif", ".tiff"}
LAYOUT = (
    "DIR/images/* with DIR/masks/* of the same stems, or DIR/<group>/images + DIR/<group>/masks for groups such as "
    "tiles or scenes, or DIR/<split>/images + DIR/<split>/masks for split folders (train, val, test)"
)
#: Split folder names ``ctseg prepare folder`` knows (any letter case) → the split they give.
SPLIT_FOLDERS = {
    "train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
    "test": "test", "testing": "test",
}  # fmt: skip
_KNOWN_SPLITS = "train, val, test; also training, valid, validation, testing"
#: Folder names that read as a split (a split layout is meant) though ctseg does not know them: eval, dev, holdout,
#: trainval, train_set, …
_SPLIT_LIKE = re.compile(
    r"^(.*[ _-])?(train(ing)?|trainval|val(id|idation)?|test(ing)?|eval(uation)?|dev|hold[ _-]?out)"
    r"([ _-]?(set|split|data))?$",
    re.IGNORECASE,
)


def files(folder: Path, suffixes: set[str]) -> dict[str, Path]:
    """Stem → file of ``folder`` with one of ``suffixes`` (any letter case); two files of one stem are an error."""
    out: dict[str, Path] = {}
    if not folder.is_dir():
        return out
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file() or path.suffix.lower() not in suffixes:
            continue
        if path.stem in out:
            raise CtsegError(
                f"{folder} holds two files with the stem {path.stem!r} ({out[path.stem].name}, {path.name})"
            )
        out[path.stem] = path
    return out


def pairs(root: Path) -> list[tuple[str, Path, Path]]:
    """(stem, image, mask) of ``root/images`` and ``root/masks`` in natural order; a file without its partner is an
    error."""
    images, masks = files(root / "images", IMAGE_SUFFIXES), files(root / "masks", MASK_SUFFIXES)
    for stem, path in images.items():
        if stem not in masks:
            raise CtsegError(f"{path} has no mask: expected {root / 'masks' / stem}.png (or .tif)")
    for stem, path in masks.items():
        if stem not in images:
            raise CtsegError(f"{path} has no image: expected {root / 'images' / stem}.<tif|png|jpg>")
    return [(stem, images[stem], masks[stem]) for stem in sorted(images, key=natural_key)]


class Layout(NamedTuple):
    """What :func:`find_layout` found: ``kind`` (``"flat"``, ``"splits"`` or ``"groups"``) and its folders (split or
    group → the folder holding ``images/`` and ``masks/``; ``{"": src}`` for a flat folder)."""

    kind: str
    folders: dict[str, Path]


def _holds_pairs(folder: Path) -> bool:
    return (folder / "images").is_dir() or (folder / "masks").is_dir()


def find_layout(src: Path) -> Layout:
    """Which of the three layouts (module docstring) ``src`` is in; one line for split folders of unknown names."""
    if _holds_pairs(src):
        return Layout("flat", {"": src})
    found = {name: folder for name, folder in _subfolders(src).items() if _holds_pairs(folder)}
    if not found:
        deeper = next((sub for sub in _subfolders(src).values() for inner in _subfolders(sub).values()
                       if _holds_pairs(inner)), None)  # fmt: skip
        hint = f" (one level down, {deeper} holds such folders: --src {deeper}?)" if deeper is not None else ""
        raise CtsegError(f"no images/ and masks/ folders under {src}: expected {LAYOUT}{hint}")
    known = {name: SPLIT_FOLDERS[name.lower()] for name in found if name.lower() in SPLIT_FOLDERS}
    unknown = [name for name in found if name not in known]
    if not known and not any(_SPLIT_LIKE.match(name) for name in unknown):
        return Layout("groups", found)
    if unknown:  # a split layout is meant (a known or split-like name), but not every folder is a split
        name = min(unknown, key=lambda n: (not _SPLIT_LIKE.match(n), natural_key(n)))
        beside = f"beside the split folder(s) {', '.join(known)}" if known else "which reads as a split"
        raise CtsegError(
            f"{found[name]}: {name!r} is not a split folder name ctseg knows ({_KNOWN_SPLITS}), {beside}; rename "
            "it to one of those (or, for groups such as tiles or scenes, give no folder a split name and choose the "
            "splits with --split NAME=PATTERN)"
        )
    splits: dict[str, Path] = {}
    for name, split in known.items():
        if split in splits:
            raise CtsegError(
                f"{splits[split]} and {found[name]} both hold the {split!r} split; merge them into one folder"
            )
        splits[split] = found[name]
    return Layout("splits", splits)


def _subfolders(folder: Path) -> dict[str, Path]:
    """Name → sub-folder (hidden and ctseg's temporary folders left out), in natural order."""
    try:
        subs = [p for p in folder.iterdir() if p.is_dir() and not skip_folder(p.name)]
    except OSError:
        return {}
    return {p.name: p for p in sorted(subs, key=lambda p: natural_key(p.name))}


class Pair(NamedTuple):
    """One image / mask pair: its tile id (unique), group and stem."""

    tile: str
    group: str
    stem: str
    image: Path
    mask: Path


def layout_pairs(layout: Layout) -> list[Pair]:
    """Every pair of a layout, in order; tile ids ``stem`` (flat) or ``folder/stem`` (groups, split folders: the
    group is the split's name there), whose crop file names (:func:`~ctseg.data.crops.safe_name`) must differ."""
    out: list[Pair] = []
    names: dict[str, Pair] = {}
    for group, folder in layout.folders.items():
        for stem, image, mask in pairs(folder):
            item = Pair(f"{group}/{stem}" if group else stem, group or stem, stem, image, mask)
            clash = names.setdefault(safe_name(item.tile), item)
            if clash is not item:
                raise CtsegError(
                    f"{image}: its crops would have the file names of {clash.image}'s ({safe_name(item.tile)}_r…); "
                    "rename one of the two folders or files"
                )
            out.append(item)
    return out


def _matched(pattern: str, item: Pair, fold: bool = False) -> str | None:
    """The item's name a ``--split`` pattern names — its group, its stem or ``group/stem``, exactly or as a glob —
    or ``None``; ``fold``: ignoring letter case."""
    for name in (item.group, item.stem, item.tile):
        a, b = (pattern.lower(), name.lower()) if fold else (pattern, name)
        if a == b or fnmatch.fnmatchcase(b, a):
            return name
    return None


def shown(names: list[str], most: int = 6) -> str:
    names = list(dict.fromkeys(names))
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def assign_patterns(
    items: list[Pair], split_tiles: Mapping[str, Iterable[str]], src: Path, grouped: bool
) -> tuple[dict[str, str], list[str]]:
    """tile id → split from ``--split NAME=PATTERN,…`` (module docstring); the tile ids left out (a train split was
    given, and they are in none)."""
    if isinstance(split_tiles, str | bytes) or not isinstance(split_tiles, Mapping):
        raise CtsegError("--split: expected split names with patterns, e.g. {'val': ['Tile 1', '*_part_00[1-2]']}")
    chosen: dict[str, tuple[str, str]] = {}  # tile id → (split, the pattern that chose it)
    for split, patterns in split_tiles.items():
        check_split_name(str(split), "--split")
        for pattern in [patterns] if isinstance(patterns, str) else patterns:
            pattern = str(pattern)
            hits = [item for item in items if _matched(pattern, item) is not None]
            if not hits:
                what = "group or file name (stem)" if grouped else "file name (stem)"
                found = shown([item.group for item in items]) if grouped else shown([item.stem for item in items])
                near = next(filter(None, (_matched(pattern, item, fold=True) for item in items)), None)
                hint = f"; names are matched with their letter case ({near!r}?)" if near is not None else ""
                raise CtsegError(
                    f"--split {split}={pattern}: the pattern matches no {what} under {src} (found: {found}){hint}"
                )
            for item in hits:
                before = chosen.setdefault(item.tile, (str(split), pattern))
                if before[0] != split:
                    raise CtsegError(
                        f"--split: {item.image} is matched by both {before[0]}={before[1]} and {split}={pattern}; "
                        "a file goes to one split: make the patterns exclusive"
                    )
    assignment = {tile: split for tile, (split, _) in chosen.items()}
    if TRAIN_SPLIT not in split_tiles:
        for item in items:
            assignment.setdefault(item.tile, TRAIN_SPLIT)
    return assignment, [item.tile for item in items if item.tile not in assignment]
