"""Tiny ISPRS look-alikes: GeoTIFFs in the exact Potsdam / Vaihingen file names, folders and colour format.

No ISPRS data may be shipped, so the tests build a few small tiles (a few hundred pixels a side) into a
temporary folder: random rectangles of the six classes, colour-coded with the ISPRS palette, an eroded
"noBoundary" copy whose class boundaries are black, and an image whose colour follows its label (so that crops
can be checked for alignment). Run ``python tests/helpers/make_isprs.py DIR`` to look at them.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import Affine

from ctseg.data.definitions import IGNORE_INDEX, ISPRS_COLORS

PALETTE = np.zeros((256, 3), np.uint8)
PALETTE[: len(ISPRS_COLORS)] = ISPRS_COLORS  # ignore (255) stays black
#: Image colour of each class (distinct from the label colours, so a mix-up shows).
IMAGE_COLORS = np.array([[180, 180, 170], [120, 60, 50], [90, 160, 80], [30, 110, 40], [200, 40, 200], [60, 60, 160]])


@dataclass
class TinyTile:
    """Paths written for one tile and the class indices they encode ((H, W) uint8, 255 = ignore)."""

    image: Path
    label: Path
    eroded: Path
    classes: np.ndarray
    eroded_classes: np.ndarray


def random_classes(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """(H, W) uint8: impervious background with rectangles of every class, small ones for cars."""
    classes = np.zeros((height, width), np.uint8)
    for _ in range(max(8, height * width // 4000)):
        cls = int(rng.integers(0, 6))
        side = (4, 12) if cls == 4 else (12, max(13, min(height, width) // 3))
        h, w = rng.integers(*side, size=2)
        r, c = rng.integers(0, height - h), rng.integers(0, width - w)
        classes[r : r + h, c : c + w] = cls
    return classes


def erode(classes: np.ndarray) -> np.ndarray:
    """Class boundaries (a pixel whose right or lower neighbour differs, and that neighbour) → ignore."""
    out = classes.copy()
    edge_h = classes[:, 1:] != classes[:, :-1]
    edge_v = classes[1:, :] != classes[:-1, :]
    out[:, 1:][edge_h] = IGNORE_INDEX
    out[:, :-1][edge_h] = IGNORE_INDEX
    out[1:, :][edge_v] = IGNORE_INDEX
    out[:-1, :][edge_v] = IGNORE_INDEX
    return out


def image_for(classes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) uint8 image whose colour follows the classes, with mild noise."""
    base = IMAGE_COLORS[np.minimum(classes, 5)].astype(np.int16)
    noise = rng.integers(-12, 13, size=base.shape)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def write_geotiff(path: Path, rgb: np.ndarray, *, georeferenced: bool = True) -> Path:
    """(H, W, 3) uint8 → 3-band uint8 GeoTIFF (UTM 32N, 5 cm pixels when georeferenced)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "GTiff",
        "height": rgb.shape[0],
        "width": rgb.shape[1],
        "count": 3,
        "dtype": "uint8",
    }
    if georeferenced:
        profile.update(crs=CRS.from_epsg(32632), transform=Affine(0.05, 0.0, 368000.0, 0.0, -0.05, 5808000.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as ds:
            ds.write(np.moveaxis(rgb, -1, 0))
    return path


def make_potsdam(
    root: Path, tiles=("2_10", "2_13"), size: tuple[int, int] = (260, 300), seed: int = 0
) -> dict[str, TinyTile]:
    """Potsdam release layout under ``root``: ``2_Ortho_RGB/``, ``5_Labels_all/``, ``5_Labels_all_noBoundary/``."""
    rng = np.random.default_rng(seed)
    out = {}
    for tile in tiles:
        classes = random_classes(*size, rng)
        eroded = erode(classes)
        out[tile] = TinyTile(
            image=write_geotiff(root / "2_Ortho_RGB" / f"top_potsdam_{tile}_RGB.tif", image_for(classes, rng)),
            label=write_geotiff(root / "5_Labels_all" / f"top_potsdam_{tile}_label.tif", PALETTE[classes]),
            eroded=write_geotiff(
                root / "5_Labels_all_noBoundary" / f"top_potsdam_{tile}_label_noBoundary.tif", PALETTE[eroded]
            ),
            classes=classes,
            eroded_classes=eroded,
        )
    return out


def make_vaihingen(root: Path, areas=(1, 2), size: tuple[int, int] = (240, 200), seed: int = 1) -> dict[str, TinyTile]:
    """Vaihingen release layout: ``ISPRS_semantic_labeling_Vaihingen/{top,gts_for_participants}/`` (same file
    names for images and labels) and ``ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE/``."""
    rng = np.random.default_rng(seed)
    base = root / "ISPRS_semantic_labeling_Vaihingen"
    out = {}
    for area in areas:
        classes = random_classes(*size, rng)
        eroded = erode(classes)
        name = f"top_mosaic_09cm_area{area}"
        out[f"area{area}"] = TinyTile(
            image=write_geotiff(base / "top" / f"{name}.tif", image_for(classes, rng)),
            label=write_geotiff(base / "gts_for_participants" / f"{name}.tif", PALETTE[classes]),
            eroded=write_geotiff(
                root / "ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE" / f"{name}_noBoundary.tif",
                PALETTE[eroded],
            ),
            classes=classes,
            eroded_classes=eroded,
        )
    return out


def expected_eval_masks(records: list[dict], classes: np.ndarray, crop: int) -> dict[str, np.ndarray]:
    """Evaluation masks of one tile's crops, computed by brute force: mask path → (crop, crop) uint8.

    Crops in row-major order; a pixel already held by an earlier crop (a boolean coverage map of the tile) is
    ignore, as is the padding beyond the tile. Independent of ``ctseg.data.prepare``'s closed-form boxes.
    """
    height, width = classes.shape
    covered = np.zeros((height, width), bool)
    out = {}
    for record in sorted(records, key=lambda r: tuple(r["offset"])):
        r, c = record["offset"]
        mask = np.full((crop, crop), IGNORE_INDEX, np.uint8)
        window = classes[r : r + crop, c : c + crop]
        fresh = ~covered[r : r + crop, c : c + crop]
        mask[: window.shape[0], : window.shape[1]][fresh] = window[fresh]
        covered[r : r + crop, c : c + crop] = True
        out[record["mask"]] = mask
    return out


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "tiny_isprs")
    make_potsdam(target / "potsdam")
    make_vaihingen(target / "vaihingen")
    print(f"wrote tiny Potsdam and Vaihingen tiles under {target}")
