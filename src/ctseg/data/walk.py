"""Walking a download folder: every data set's discovery skips hidden folders and ctseg's own temporary ones
(``<dst>.tmp-*`` / ``<dst>.old-*``, :mod:`ctseg.data.atomic_folder`), in sorted order."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ctseg.data.registry import SourceTile


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
