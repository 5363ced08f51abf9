"""The Dubai aerial set (Humans in the Loop, "Semantic segmentation of aerial imagery", CC0): layout and split.

Layout, found anywhere under the source folder (``Tile 1`` as in the original download works too)::

    tileN/images/image_part_00K.jpg    RGB image
    tileN/masks/image_part_00K.png     RGB colour-coded mask (some tiles store it as a palette PNG)

Mask colours are :data:`DUBAI` (the ``classes.json`` shipped with the data lists wrong
colours and is not read); Unlabeled ``#9B9B9B`` and the few pure-black pixels map to ignore (255). Every mask
pixel of tiles 1–7 was checked to be one of these seven colours exactly (70.4 M pixels, none outside the palette).

**Split by tile, never by crop.** The nine images of a tile come from one scene, so crops of one tile never land
in both splits. Default validation ("test") tiles: **1, 2 and 3** — 15.6 % of the labelled pixels (90 of the 441
default 512² crops). Class shares of all pixels, measured on tiles 1–7 (validation 1–3 / train 4–7 / all;
"ignore" is Unlabeled plus black):

============  ==========  ======  ======
class         validation  train   all
============  ==========  ======  ======
building         6.0 %    11.3 %  10.4 %
land            55.9 %    55.1 %  55.2 %
road            10.8 %     8.0 %   8.4 %
vegetation       4.8 %     9.2 %   8.5 %
water           20.7 %    16.2 %  16.9 %
ignore           1.8 %     0.2 %   0.4 %
============  ==========  ======  ======

Among all choices of one to three tiles (tile 7 alone holds 48 % of the pixels, too many to hold out), tiles 1–3
have the class shares closest to the whole set (largest gap 4.4 points, building) while every class is present
in both splits; the alternatives are worse (tiles 3 and 7: 54 % of the pixels held out; tiles 1 and 6: water
29 %, vegetation 21 %).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from ctseg.data.definitions import DatasetInfo
from ctseg.data.registry import CropSettings, DatasetSpec, SourceTile, register_dataset, without_options
from ctseg.data.splits import natural_key, resolve_splits
from ctseg.data.walk import ImageFolder, one_folder_each, pair_folders
from ctseg.errors import CtsegError

#: Dubai aerial set (Humans in the Loop, CC0); colours as actually used in the masks (its README).
DUBAI = DatasetInfo(
    name="dubai",
    classes=("building", "land", "road", "vegetation", "water"),
    colors=((0x3C, 0x10, 0x98), (0x84, 0x29, 0xF6), (0x6E, 0xC1, 0xE4), (0xFE, 0xDD, 0x3A), (0xE2, 0xA9, 0x29)),
    ignore_colors=((0x9B, 0x9B, 0x9B), (0, 0, 0)),
    eval_classes=None,
)

#: Default validation ("test") tiles; the rest are training tiles. See the module docstring for the choice.
DUBAI_VAL_TILES = ("tile1", "tile2", "tile3")

_TILE_FOLDER = re.compile(r"^tile[ _-]?(\d+)$", re.IGNORECASE)
_EXPECTED = "tileN/images/image_part_00K.jpg images with tileN/masks/image_part_00K.png masks"


def _tile_folders(src: Path) -> dict[str, list[Path]]:
    """``"tileN"`` → tile folders found under ``src`` (``src`` itself included)."""
    found: dict[str, list[Path]] = {}
    candidates = [src, *(p for p in sorted(src.rglob("*")) if p.is_dir())]
    for folder in candidates:
        if any(part.startswith(".") or ".tmp-" in part for part in folder.relative_to(src).parts):
            continue
        m = _TILE_FOLDER.match(folder.name)
        if m and ((folder / "images").is_dir() or (folder / "masks").is_dir()):
            found.setdefault(f"tile{int(m[1])}", []).append(folder)
    return found


def normalize_tile_id(raw: str) -> str:
    """``"3"``, ``"tile3"``, ``"Tile 3"`` → ``"tile3"``."""
    m = re.fullmatch(r"(?:tile[ _-]?)?(\d+)", raw.strip(), re.IGNORECASE)
    return f"tile{int(m[1])}" if m else raw


def discover_dubai(
    src: Path, split_tiles: Mapping[str, Iterable[str]] | None = None
) -> tuple[list[SourceTile], list[str]]:
    """Find the image/mask pairs under ``src`` and split them by tile (default: :data:`DUBAI_VAL_TILES` → test).

    Each image is one :class:`SourceTile` with id ``"tileN/<image stem>"`` and group ``"tileN"``.

    Returns:
        (pairs sorted by id, notes for the user).

    Raises:
        CtsegError: no tile folder (the message gives the layout expected), a tile folder without images, an image
            without its mask, the same tile in two places.
    """
    src = Path(src)
    found = _tile_folders(src)
    if not found:
        raise CtsegError(f"no Dubai tiles found under {src}: expected {_EXPECTED}")
    folders = one_folder_each(found, "tile {key}")
    default = {"train": [g for g in folders if g not in DUBAI_VAL_TILES], "test": list(DUBAI_VAL_TILES)}
    assignment, skipped = resolve_splits(folders, default, split_tiles, normalize=normalize_tile_id)
    notes = [f"dubai: skipping tile(s) in no split: {', '.join(skipped)}"] if skipped else []
    missing_val = [g for g in DUBAI_VAL_TILES if g not in folders]
    if split_tiles is None and missing_val:
        notes.append(f"dubai: default validation tile(s) {', '.join(missing_val)} not found")
    tiles, more = pair_folders(
        "dubai",
        (ImageFolder(g, assignment[g], folders[g] / "images", folders[g] / "masks", g)
         for g in sorted(assignment, key=natural_key)),
        layout=_EXPECTED,
    )  # fmt: skip
    return tiles, notes + more


#: 512 × 512 crops with stride 512 and no resize — the images are 509–2062 px a side, so 512 keeps the native
#: resolution and gives 441 crops for tiles 1–7 (the narrowest images, 509 px wide, get 3 columns of padding).
register_dataset(
    DatasetSpec(
        name="dubai",
        summary="Dubai aerial imagery (Humans in the Loop, CC0), 72 RGB images in 8 tiles",
        info=DUBAI,
        crop=CropSettings(512, 512, None),
        discover=without_options(discover_dubai),
        datamodule="ctseg.data.DubaiDataModule",
        layout=_EXPECTED,
    )
)
