"""Walking a download folder: every data set's discovery skips hidden folders and ctseg's own temporary ones
(``<dst>.tmp-*`` / ``<dst>.old-*``, :mod:`ctseg.data.atomic_folder`), in sorted order.

The shared tail of the release-folder data sets (Dubai, UAVid, LoveDA): :func:`one_folder_each` (each group found
once) and :func:`pair_folders` (each folder's images paired by stem with the labels in their own folder: source
tiles, :class:`~ctseg.data.registry.SourceTile`, and notes); each data set keeps only its layout, names, splits."""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from ctseg.data.registry import SourceTile

#: The image files a release folder's discovery takes (by suffix, any letter case).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff"})


def skip_folder(name: str) -> bool:
    """Whether a folder of this name is left out of discovery (hidden, or a temporary prepare folder)."""
    return name.startswith(".") or ".tmp-" in name or ".old-" in name


def subfolders(folder: Path) -> dict[str, Path]:
    """Lower-case name → sub-folder of ``folder`` (none when it cannot be listed)."""
    try:
        return {p.name.lower(): p for p in sorted(folder.iterdir()) if p.is_dir() and not skip_folder(p.name)}
    except OSError:
        return {}


def walk_folders(src: Path) -> Iterator[Path]:
    """``src`` and every folder under it, in sorted order (symbolic links followed)."""
    yield src
    for folder, dirs, _ in os.walk(src, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not skip_folder(d))
        for d in dirs:
            yield Path(folder) / d


def walk_files(src: Path) -> Iterator[tuple[Path, str]]:
    """(folder, file name) for every file under ``src``, in sorted order."""
    for folder, dirs, files in os.walk(src, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not skip_folder(d))
        for file in sorted(files):
            yield Path(folder), file


def pair_by_stem(
    images: list[Path], label_dir: Path, *, group: str, split: str, label_word: str = "mask"
) -> tuple[list[SourceTile], list[str]]:
    """One :class:`~ctseg.data.registry.SourceTile` per image (id ``"<group>/<stem>"``) with the PNG label of the
    same stem in ``label_dir``, and the names of the PNG labels there that have no image (sorted naturally).

    Raises:
        CtsegError: an image without its label (naming the image and the label path expected).
    """
    from ctseg.data.registry import SourceTile
    from ctseg.data.splits import natural_key
    from ctseg.errors import CtsegError

    tiles = []
    for image in images:
        label = label_dir / f"{image.stem}.png"
        if not label.is_file():
            raise CtsegError(f"{image} has no {label_word}: expected {label}")
        tiles.append(SourceTile(f"{group}/{image.stem}", group, split, image, label, label_kind="mask"))
    stems = {p.stem for p in images}
    orphans = sorted((p.name for p in label_dir.glob("*.png") if p.stem not in stems), key=natural_key)
    return tiles, orphans


def image_files(folder: Path, suffixes: Collection[str] = IMAGE_SUFFIXES) -> list[Path]:
    """The files in ``folder`` whose suffix (lower case) is one of ``suffixes``, in natural order of their stems;
    none when ``folder`` is missing."""
    from ctseg.data.splits import natural_key

    if not folder.is_dir():
        return []
    found = (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
    return sorted(found, key=lambda p: natural_key(p.stem))


def one_folder_each(found: Mapping[str, list[Path]], what: str) -> dict[str, Path]:
    """Group → its one folder.

    Raises:
        CtsegError: a group found in two places, named by ``what`` (``{key}``: the group, ``{name}``: the first
            folder's name; e.g. ``"tile {key}"``).
    """
    from ctseg.errors import CtsegError

    for key, paths in found.items():
        if len(paths) > 1:
            named = what.format(key=key, name=paths[0].name)
            raise CtsegError(f"{named} found twice: {paths[0]} and {paths[1]}; keep one of them")
    return {key: paths[0] for key, paths in found.items()}


class ImageFolder(NamedTuple):
    """A folder of images to pair: their group and split, the folder of their labels, what notes call it."""

    group: str
    split: str
    images: Path
    labels: Path
    where: str


def pair_folders(
    dataset: str,
    folders: Iterable[ImageFolder],
    *,
    layout: str,
    suffixes: Collection[str] = IMAGE_SUFFIXES,
    image_word: str = "image",
    label_word: str = "mask",
    most: int | None = None,
) -> tuple[list[SourceTile], list[str]]:
    """Every folder's images (:func:`image_files`) paired with their labels (:func:`pair_by_stem`), in order, and a
    note per folder whose labels have no image (naming at most ``most`` of them, all if ``None``).

    Raises:
        CtsegError: a folder without images (the message gives ``layout``), an image without its label.
    """
    from ctseg.errors import CtsegError

    tiles: list[SourceTile] = []
    notes: list[str] = []
    article = "an" if image_word[:1] in "aeiou" else "a"
    for folder in folders:
        images = image_files(folder.images, suffixes)
        if not images:
            raise CtsegError(f"{folder.images} holds no {image_word}s: expected {layout}")
        pairs, orphans = pair_by_stem(images, folder.labels, group=folder.group, split=folder.split,
                                      label_word=label_word)  # fmt: skip
        tiles += pairs
        if orphans:
            shown = ", ".join(orphans[:most])
            if most is not None and len(orphans) > most:
                shown += f" and {len(orphans) - most} more"
            notes.append(f"{dataset}: {folder.where}: {len(orphans)} {label_word}(s) without {article} {image_word}, "
                         f"skipped: {shown}")  # fmt: skip
    return tiles, notes
