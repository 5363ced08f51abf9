"""LoveDA (Wang et al., 2021; land-cover domain adaptation, 0.3 m Google Earth imagery): layout, labels, splits.

Layout, as the three archives ``Train.zip``, ``Val.zip`` and ``Test.zip`` unpack, found anywhere under the
source folder (folder names in any letter case)::

    Train/Urban/images_png/1366.png    1024 × 1024 RGB image
    Train/Urban/masks_png/1366.png     single-band index mask of the same name
    Train/Rural/…, Val/Urban/…, Val/Rural/…
    Test/{Urban,Rural}/images_png/     no masks: skipped with a note (the benchmark server scores Test)

**Labels**: mask value 0 is no-data (→ ignore, 255); 1–7 are background, building, road, water, barren,
forest, agriculture (→ classes 0–6, all seven scored). Any other value is an error naming file, pixel and
value. Display colours are LoveDA's customary palette.

**Splits**: ``Train/`` → ``"train"``, ``Val/`` → ``"val"`` (the usual evaluation split; its Urban and Rural
images together). Tile ids are ``"<domain>/<stem>"`` (``"urban/1366"``, ``"rural/0"``); the release numbers its
images once across splits and domains (Train Rural 0–1365, Train Urban 1366–2521, Val Rural 2522–3513, Val
Urban 3514–4190), so stems are unique, but should a stem repeat in one domain of both splits, those ids get the
split in front (``"train/urban/5"``, ``"val/urban/5"``). Each image is its own group; ``split_tiles`` overrides
the split by tile id (a bare stem such as ``"1366"`` names the tile when only one has it).

**Default crops**: ``CropSettings(1024, 1024, None)``: one crop per image, the whole 1024 × 1024 picture at
native resolution. Validation thus scores every image whole, with no crop borders, overlaps or padding; the
512 px training crops are drawn afresh each epoch by the data module's augmentation (random scale and
position inside the 1024 px crop), which sees more variety than four fixed 512 px quarters would.
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

#: LoveDA: seven classes from index masks (1–7), 0 = no-data; colours: the palette LoveDA results are shown in.
LOVEDA_COLORS = (
    (255, 255, 255), (255, 0, 0), (255, 255, 0), (0, 0, 255), (159, 129, 183), (0, 255, 0), (255, 195, 128),
)  # fmt: skip
LOVEDA = DatasetInfo(
    name="loveda",
    classes=("background", "building", "road", "water", "barren", "forest", "agriculture"),
    colors=LOVEDA_COLORS,
    eval_classes=None,
    label_values=(1, 2, 3, 4, 5, 6, 7),
    ignore_values=(0,),
)

#: Release folder name (lower case) → split; ``None``: no masks, skipped.
SPLIT_FOLDERS: dict[str, str | None] = {"train": "train", "val": "val", "test": None}
DOMAINS = ("urban", "rural")
_EXPECTED = (
    "Train/{Urban,Rural}/images_png/N.png images with Train/{Urban,Rural}/masks_png/N.png masks "
    "(and the same under Val/)"
)


def _split_folders(src: Path) -> dict[str, list[Path]]:
    """Release folder (``"train"``, ``"val"``, ``"test"``) → folders of that name holding Urban/ or Rural/."""
    found: dict[str, list[Path]] = {}
    for folder in walk_folders(src):
        key = folder.name.lower()
        if key in SPLIT_FOLDERS and any(d in subfolders(folder) for d in DOMAINS):
            found.setdefault(key, []).append(folder)
    return found


def discover_loveda(
    src: Path, split_tiles: Mapping[str, Iterable[str]] | None = None
) -> tuple[list[SourceTile], list[str]]:
    """Find LoveDA's Train and Val image / mask pairs under ``src`` (module docstring) and assign their splits.

    Returns:
        (pairs sorted by id, notes for the user: Test skipped, a missing domain, masks without an image).

    Raises:
        CtsegError: no Train / Val folder (the message gives the layout expected), the same release folder in two
            places, a domain folder without ``images_png/``, an image without its mask (naming the mask path
            expected).
    """
    src = Path(src)
    folders = _split_folders(src)
    notes = []
    for test in folders.pop("test", []):
        notes.append(f"loveda: skipping {test}: LoveDA's Test images have no public masks (the benchmark scores them)")
    if not folders:
        raise CtsegError(f"no LoveDA Train/ or Val/ folder found under {src}: expected {_EXPECTED}")
    found: list[tuple[str, str, Path, Path]] = []  # (split, domain, image, mask)
    for key, folder in sorted(one_folder_each(folders, "LoveDA {name}/").items()):
        split = SPLIT_FOLDERS[key]
        assert split is not None
        domains = subfolders(folder)
        for domain in DOMAINS:
            if domain not in domains:
                notes.append(f"loveda: {folder} has no {domain.capitalize()}/ folder")
                continue
            parts = subfolders(domains[domain])
            if "images_png" not in parts:
                raise CtsegError(f"{domains[domain]} has no images_png/ folder: expected {_EXPECTED}")
            masks = parts.get("masks_png", domains[domain] / "masks_png")
            pairs, more = pair_folders("loveda", [ImageFolder(domain, split, parts["images_png"], masks, str(masks))],
                                       layout=_EXPECTED, most=5)  # fmt: skip
            found += [(split, domain, pair.image, pair.label) for pair in pairs]
            notes += more

    uses: dict[str, set[str]] = {}
    for split, domain, image, _ in found:
        uses.setdefault(f"{domain}/{image.stem}".lower(), set()).add(split)
    repeated = sorted((k for k, v in uses.items() if len(v) > 1), key=natural_key)
    if repeated:
        notes.append(f"loveda: {len(repeated)} image name(s) in both Train and Val (e.g. {repeated[0]}); their tile "
                     "ids name the split too")  # fmt: skip
    repeated_ids = set(repeated)
    by_id: dict[str, tuple[str, Path, Path]] = {}
    for split, domain, image, mask in found:
        tile = f"{domain}/{image.stem}".lower()
        tile = f"{split}/{tile}" if tile in repeated_ids else tile
        if tile in by_id:  # the same stem with two suffixes (1.png and 1.tif) in one folder
            raise CtsegError(f"two LoveDA images for {tile}: {by_id[tile][1]} and {image}; keep one of them")
        by_id[tile] = (split, image, mask)

    stems: dict[str, list[str]] = {}
    for tile in by_id:
        stems.setdefault(tile.rsplit("/", 1)[-1], []).append(tile)

    def normalize(raw: str) -> str:
        key = raw.strip().replace("\\", "/").lower()
        key = re.sub(r"\.(png|tiff?|jpe?g)$", "", key)
        if key not in by_id and len(stems.get(key, ())) == 1:
            return stems[key][0]
        return key

    default: dict[str, list[str]] = {}
    for tile, (split, _, _) in by_id.items():
        default.setdefault(split, []).append(tile)
    assignment, skipped = resolve_splits(by_id, default, split_tiles, normalize=normalize, what="image")
    if skipped:
        notes.append(f"loveda: skipping {len(skipped)} image(s) in no split (e.g. {skipped[0]})")
    tiles = [
        SourceTile(tile=tile, group=tile, split=assignment[tile], image=image, label=mask, label_kind="mask")
        for tile, (_, image, mask) in sorted(by_id.items(), key=lambda item: natural_key(item[0]))
        if tile in assignment
    ]
    return tiles, notes


register_dataset(
    DatasetSpec(
        name="loveda",
        summary="LoveDA land cover, 0.3 m 1024² RGB images, Urban + Rural (Train 2522 / Val 1669)",
        info=LOVEDA,
        crop=CropSettings(1024, 1024, None),
        discover=without_options(discover_loveda),
        datamodule="ctseg.data.LoveDADataModule",
        layout=_EXPECTED,
    )
)
