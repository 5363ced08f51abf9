"""UAVid (Lyu et al., 2020; oblique 4K UAV video frames, 8 classes): layout, colour labels, splits by sequence.

Layout, as the release unpacks, found anywhere under the source folder (folder names in any letter case)::

    uavid_train/seq1/Images/000000.png    RGB frame, 3840 × 2160 or 4096 × 2160
    uavid_train/seq1/Labels/000000.png    RGB colour-coded label of the same name
    uavid_val/seq16/…                     validation sequences
    uavid_test/seq21/Images/…             no Labels: skipped with a note (the benchmark server scores them)

**Labels** are colour-coded: building (128, 0, 0), road (128, 64, 128), tree (0, 128, 0), low vegetation
(128, 128, 0), moving car (64, 0, 128), static car (192, 0, 192), human (64, 64, 0) and clutter (0, 0, 0) →
classes 0–7, all eight scored; clutter is a class, so there is no ignore colour, and any other colour is an
error naming file, pixel and colour.

**Splits by sequence, never by frame**: the frames of one video are near-duplicates, so a sequence lies in one
split. A sequence's split is named by the nearest folder above it (the source folder included) that says one:
``uavid_train`` / ``train`` → ``"train"``; ``uavid_val`` / ``val`` / ``valid`` → ``"val"``; ``uavid_test`` /
``test`` → skipped. Sequences in no such folder need ``split_tiles`` (group ids ``"seqN"``, or just ``"N"``),
which may also override the folders' splits. Frame tile ids are ``"seqN/000000"``, groups ``"seqN"``.

**Default crops**: ``CropSettings(1024, 1024, None)``, native resolution (training crops of 512 come from the
data module's augmentation). Frames do not divide by 1024, and no row or column is dropped: the last crop of
each axis is aligned to the frame's border, so a 3840 × 2160 frame gives columns 0, 1024, 2048, 2816 and rows 0,
1024, 1136 (12 crops); in the val split each pixel is scored once (:mod:`ctseg.data.crops`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from ctseg.data.definitions import DatasetInfo
from ctseg.data.registry import CropSettings, DatasetSpec, SourceTile, register_dataset, without_options
from ctseg.data.splits import natural_key, resolve_splits
from ctseg.data.walk import ImageFolder, one_folder_each, pair_folders, subfolders, walk_folders
from ctseg.errors import CtsegError

#: UAVid: eight classes from colour-coded labels (the release's colours); clutter is scored like the others.
UAVID_COLORS = (
    (128, 0, 0), (128, 64, 128), (0, 128, 0), (128, 128, 0), (64, 0, 128), (192, 0, 192), (64, 64, 0), (0, 0, 0),
)  # fmt: skip
UAVID = DatasetInfo(
    name="uavid",
    classes=("building", "road", "tree", "low_vegetation", "moving_car", "static_car", "human", "clutter"),
    colors=UAVID_COLORS,
    ignore_colors=(),
    eval_classes=None,
)

#: Folder names that give the split of the sequences below them (``None``: test, no labels, skipped).
_SPLIT_NAMES: tuple[tuple[re.Pattern[str], str | None], ...] = (
    (re.compile(r"^(uavid[ _-]?)?train(ing)?$", re.IGNORECASE), "train"),
    (re.compile(r"^(uavid[ _-]?)?(val|valid|validation)$", re.IGNORECASE), "val"),
    (re.compile(r"^(uavid[ _-]?)?test(ing)?$", re.IGNORECASE), None),
)
_SEQUENCE = re.compile(r"^seq[ _-]?(\d+)$", re.IGNORECASE)
_EXPECTED = "uavid_train/seqN/Images/000000.png frames with seqN/Labels/000000.png colour labels (and uavid_val/)"
_NO_SPLIT = object()


def folder_split(folder: Path, src: Path):
    """The split named by the nearest folder above ``folder``, up to ``src`` (included): ``"train"``, ``"val"``,
    ``None`` (test) or ``_NO_SPLIT``."""
    parent = folder
    while parent != src:
        parent = parent.parent
        for pattern, split in _SPLIT_NAMES:
            if pattern.match(parent.name):
                return split
    return _NO_SPLIT


def normalize_sequence(raw: str) -> str:
    """``"3"``, ``"seq3"``, ``"Seq 3"`` → ``"seq3"``."""
    m = re.fullmatch(r"(?:seq[ _-]?)?(\d+)", raw.strip(), re.IGNORECASE)
    return f"seq{int(m[1])}" if m else raw.strip()


def _sequences(src: Path) -> dict[str, list[Path]]:
    """``"seqN"`` → sequence folders (``seqN`` holding ``Images/``) under ``src``."""
    found: dict[str, list[Path]] = {}
    for folder in walk_folders(src):
        m = _SEQUENCE.match(folder.name)
        if m and "images" in subfolders(folder):
            found.setdefault(f"seq{int(m[1])}", []).append(folder)
    return found


def discover_uavid(
    src: Path, split_tiles: Mapping[str, Iterable[str]] | None = None
) -> tuple[list[SourceTile], list[str]]:
    """Find the UAVid sequences under ``src`` and split them by sequence (module docstring).

    Returns:
        (frames sorted by id, notes for the user: test sequences skipped, labels without a frame).

    Raises:
        CtsegError: no sequence (the message gives the layout expected), the same sequence in two places,
            sequences in no train / val folder without ``split_tiles``, a sequence without frames, a frame
            without its label (naming the label path expected).
    """
    src = Path(src)
    found = _sequences(src)
    if not found:
        raise CtsegError(f"no UAVid sequences found under {src}: expected {_EXPECTED}")
    folders = one_folder_each(found, "UAVid sequence {key}")
    splits = {group: folder_split(folder, src) for group, folder in folders.items()}
    notes = []
    test = sorted((g for g, s in splits.items() if s is None), key=natural_key)
    if test:
        notes.append(f"uavid: skipping {len(test)} test sequence(s) ({', '.join(test)}): UAVid's test labels are not "
                     "public (the benchmark scores them)")  # fmt: skip
    groups = sorted((g for g in folders if g not in test), key=natural_key)
    if not groups:
        raise CtsegError(f"only UAVid test sequences (no labels) under {src}: expected {_EXPECTED}")
    loose = [g for g in groups if splits[g] is _NO_SPLIT]
    if loose and split_tiles is None:
        raise CtsegError(
            f"UAVid sequence(s) {', '.join(loose)} lie in no uavid_train/ or uavid_val/ folder: put them there as in "
            "the release, or give their splits with split_tiles (e.g. {'train': ['seq1'], 'val': ['seq2']})"
        )
    default: dict[str, list[str]] = {}
    for group in groups:
        if splits[group] is not _NO_SPLIT:
            default.setdefault(splits[group], []).append(group)
    assignment, skipped = resolve_splits(groups, default, split_tiles, normalize=normalize_sequence, what="sequence")
    if skipped:
        notes.append(f"uavid: skipping sequence(s) in no split: {', '.join(skipped)}")
    parts = {group: subfolders(folders[group]) for group in assignment}
    tiles, more = pair_folders(
        "uavid",
        (ImageFolder(g, assignment[g], parts[g]["images"], parts[g].get("labels", folders[g] / "Labels"), g)
         for g in sorted(assignment, key=natural_key)),
        layout=_EXPECTED,
        image_word="frame",
        label_word="label",
    )  # fmt: skip
    return tiles, notes + more


register_dataset(
    DatasetSpec(
        name="uavid",
        summary="UAVid oblique UAV video frames, 4K RGB, split by sequence (train 20 / val 7 sequences)",
        info=UAVID,
        crop=CropSettings(1024, 1024, None),
        discover=without_options(discover_uavid),
        datamodule="ctseg.data.UAVidDataModule",
        layout=_EXPECTED,
    )
)
