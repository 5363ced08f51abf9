"""Walking a download folder: every data set's discovery skips hidden folders, macOS's ``__MACOSX`` and ctseg's
own temporary ones (``<dst>.tmp-*`` / ``<dst>.old-*``, :mod:`ctseg.data.atomic_folder`), in sorted order.

**Release archives** are read as downloaded: a ``.zip`` file is walked as the folder it would unpack into, named
like the archive (``Train.zip/Train/Urban/images_png/1366.png``), its members read in place, never extracted
(:mod:`ctseg.safety.archives` checks them first and refuses a dangerous archive in one line). The walks, the
folder listings (:func:`subfolders`, :func:`image_files`), :func:`is_file` and :func:`file_size` take both kinds
of path alike, and so do the readers of :mod:`ctseg.data.raster`.

The shared tail of the release-folder data sets (Dubai, UAVid, LoveDA): :func:`one_folder_each` (each group found
once) and :func:`pair_folders` (each folder's images paired by stem with the labels in their own folder: source
tiles, :class:`~ctseg.data.registry.SourceTile`, and notes); each data set keeps only its layout, names, splits."""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from ctseg.safety.archives import archive_member, is_archive, list_archive

if TYPE_CHECKING:
    from ctseg.data.registry import SourceTile

#: The image files a release folder's discovery takes (by suffix, any letter case).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff"})


def skip_folder(name: str) -> bool:
    """Whether a folder of this name is left out of discovery (hidden, macOS's ``__MACOSX`` resource forks, or a
    temporary prepare folder)."""
    return name.startswith(".") or name == "__MACOSX" or ".tmp-" in name or ".old-" in name


def _entries(folder: Path) -> tuple[list[str], list[str]] | None:
    """(sub-folders, files) of a folder, of an archive or of a folder inside one, each sorted; an archive is both a
    file and a sub-folder. ``None`` when ``folder`` is none of these."""
    if folder.is_dir():
        dirs, files = [], []
        try:
            with os.scandir(folder) as found:
                for entry in found:
                    if entry.is_dir():
                        dirs.append(entry.name)
                    elif entry.is_file():
                        files.append(entry.name)
                        if is_archive(folder / entry.name):
                            dirs.append(entry.name)
        except OSError:
            pass
        return sorted(dirs), sorted(files)
    member = archive_member(folder)
    if member is None:
        return None
    listed = list_archive(member[0]).folders.get(member[1])
    return None if listed is None else (list(listed[0]), list(listed[1]))


def subfolders(folder: Path) -> dict[str, Path]:
    """Lower-case name → sub-folder of ``folder`` (archives included; none when it cannot be listed)."""
    found = _entries(folder)
    return {} if found is None else {name.lower(): folder / name for name in found[0] if not skip_folder(name)}


def _walk(src: Path) -> Iterator[tuple[Path, list[str], list[str]]]:
    """(folder, sub-folder names, file names) for ``src`` and every folder under it, top-down, sorted (symbolic
    links followed); each archive is walked right after the folder holding it."""
    for folder, dirs, files in os.walk(src, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not skip_folder(d))
        here = Path(folder)
        files = sorted(files)
        archives = [name for name in files if not skip_folder(name) and is_archive(here / name)]
        yield here, dirs + archives, files
        for name in archives:
            stack = [here / name]
            while stack:
                inside = stack.pop()
                listed = _entries(inside) or ([], [])
                subs = [d for d in listed[0] if not skip_folder(d)]
                yield inside, subs, listed[1]
                stack.extend(inside / d for d in reversed(subs))


def walk_folders(src: Path) -> Iterator[Path]:
    """``src`` and every folder under it (archives and the folders inside them included), in sorted order."""
    yield src
    for folder, dirs, _ in _walk(src):
        for d in dirs:
            yield folder / d


def walk_files(src: Path) -> Iterator[tuple[Path, str]]:
    """(folder, file name) for every file under ``src`` (archive members included), in sorted order."""
    for folder, _, files in _walk(src):
        for file in files:
            yield folder, file


def is_file(path: Path) -> bool:
    """Whether ``path`` is a file, or a file inside an archive."""
    if path.is_file():
        return True
    member = archive_member(path)
    return member is not None and member[1] in list_archive(member[0]).sizes


def file_size(path: Path) -> int:
    """Size in bytes of a file, or the uncompressed size an archive member declares."""
    member = archive_member(path)
    if member is not None and member[1]:
        return list_archive(member[0]).sizes[member[1]]
    return path.stat().st_size


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

    listed = _entries(label_dir)
    labels = set(listed[1]) if listed is not None else set()
    tiles = []
    for image in images:
        label = label_dir / f"{image.stem}.png"
        if label.name not in labels:
            raise CtsegError(f"{image} has no {label_word}: expected {label}")
        tiles.append(SourceTile(f"{group}/{image.stem}", group, split, image, label, label_kind="mask"))
    stems = {p.stem for p in images}
    orphans = [name for name in labels if name.endswith(".png") and Path(name).stem not in stems]
    return tiles, sorted(orphans, key=natural_key)


def image_files(folder: Path, suffixes: Collection[str] = IMAGE_SUFFIXES) -> list[Path]:
    """The files in ``folder`` whose suffix (lower case) is one of ``suffixes``, in natural order of their stems;
    none when ``folder`` is missing."""
    from ctseg.data.splits import natural_key

    listed = _entries(folder)
    if listed is None:
        return []
    found = (folder / name for name in listed[1] if Path(name).suffix.lower() in suffixes)
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
