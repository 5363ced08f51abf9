"""Tiny generated folders in the layout of ``ctseg prepare folder`` (``DIR/images`` + ``DIR/masks`` by stem).

``make_uint16_folder``: 4-band uint16 GeoTIFFs (georeferenced, nodata 0 with a nodata border) and single-band
index PNG masks (values 1–3 = classes, 0 = ignore). ``make_jpeg_folder``: 3-band JPEG images and index PNG masks.
``make_color_folder``: RGB PNG images with colour-coded PNG masks. ``make_group_folder``: groups (``Tile 1/`` …)
of RGB PNG images and index masks, the same file names in every group.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

INDEX_CLASSES = """\
name: mine
classes:
  - {name: building, value: 1}
  - {name: road, value: 2}
  - {name: water, value: 3, color: "#33a02c"}
ignore: [0]
eval_classes: [building, road]
"""
COLOR_CLASSES = """\
classes:
  - {name: building, color: "#ff0000"}
  - {name: road, color: [255, 255, 0]}
  - {name: grass, color: "#00ff00"}
ignore: ["#000000"]
"""
COLORS = np.array([(255, 0, 0), (255, 255, 0), (0, 255, 0)], dtype=np.uint8)


def _labels(rng: np.random.Generator, h: int, w: int, values=(1, 2, 3), ignore=0) -> np.ndarray:
    """Blocky label values with some ignore pixels."""
    coarse = rng.choice(np.asarray(values), size=(h // 8 + 1, w // 8 + 1))
    labels = np.kron(coarse, np.ones((8, 8), dtype=coarse.dtype))[:h, :w].astype(np.uint8)
    labels[rng.random((h, w)) < 0.02] = ignore
    return labels


def make_uint16_folder(
    root: Path, count: int = 5, h: int = 90, w: int = 110, bands: int = 4, nodata: int = 0, seed: int = 0,
    split_folders: tuple[str, ...] | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:  # fmt: skip
    """Write ``count`` pairs (stems ``scene_0`` …) and ``classes.yaml``; returns stem → (image (H, W, C) uint16,
    label values (H, W)). Image 0 has a nodata border: its first 70 columns are nodata (so a 64-px crop at
    column 0 is entirely nodata), every band = ``nodata``."""
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(seed)
    out = {}
    for i in range(count):
        split = split_folders[i % len(split_folders)] if split_folders else None
        base = root / split if split else root
        (base / "images").mkdir(parents=True, exist_ok=True)
        (base / "masks").mkdir(parents=True, exist_ok=True)
        image = rng.integers(1, 60000, (h, w, bands), dtype=np.uint16)
        labels = _labels(rng, h, w)
        if i == 0:
            image[:, :70] = nodata
        stem = f"scene_{i}"
        profile = dict(driver="GTiff", height=h, width=w, count=bands, dtype="uint16", nodata=nodata,
                       crs="EPSG:32633", transform=from_origin(500000 + 100 * i, 6000000, 0.5, 0.5))  # fmt: skip
        with rasterio.open(base / "images" / f"{stem}.tif", "w", **profile) as dst:
            dst.write(np.moveaxis(image, -1, 0))
        Image.fromarray(labels).save(base / "masks" / f"{stem}.png")
        out[stem] = (image, labels)
    (root / "classes.yaml").write_text(INDEX_CLASSES)
    return out


def make_jpeg_folder(root: Path, count: int = 4, h: int = 72, w: int = 96, seed: int = 1) -> dict[str, np.ndarray]:
    """3-band JPEG images + index PNG masks (``classes.yaml`` as for the uint16 folder); stem → label values."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    out = {}
    for i in range(count):
        stem = f"tile_{i:02d}"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "images" / f"{stem}.jpg")
        labels = _labels(rng, h, w)
        Image.fromarray(labels).save(root / "masks" / f"{stem}.png")
        out[stem] = labels
    (root / "classes.yaml").write_text(INDEX_CLASSES)
    return out


def make_color_folder(root: Path, count: int = 3, h: int = 64, w: int = 80, seed: int = 2) -> dict[str, np.ndarray]:
    """RGB PNG images + colour-coded PNG masks; stem → class indices (255 = ignore)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    out = {}
    for i in range(count):
        stem = f"p{i}"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "images" / f"{stem}.png")
        classes = _labels(rng, h, w, values=(0, 1, 2), ignore=255)
        rgb = np.zeros((h, w, 3), np.uint8)
        rgb[classes != 255] = COLORS[classes[classes != 255]]
        Image.fromarray(rgb).save(root / "masks" / f"{stem}.png")
        out[stem] = classes
    (root / "classes.yaml").write_text(COLOR_CLASSES)
    return out


#: Group → (height, width) of its two images: overlapping border crops, an image smaller than the crop (padding),
#: an exact multiple of the crop; every group holds the same two file names.
GROUPS = {"Tile 1": (40, 50), "Tile 2": (30, 40), "Tile 3": (64, 64)}
STEMS = ("image_part_001", "image_part_002")


def make_group_folder(root: Path, groups: dict[str, tuple[int, int]] = GROUPS, seed: int = 0) -> dict[str, np.ndarray]:
    """``root/<group>/{images,masks}/<stem>.png``: RGB images, index masks (0 = ignore, 1–3 = classes) and
    ``root/classes.yaml``; returns tile id (``group/stem``) → label values."""
    rng = np.random.default_rng(seed)
    out = {}
    for group, (h, w) in groups.items():
        for sub in ("images", "masks"):
            (root / group / sub).mkdir(parents=True)
        for stem in STEMS:
            image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            labels = np.kron(rng.integers(0, 4, (h // 4 + 1, w // 4 + 1)), np.ones((4, 4), int))[:h, :w]
            labels = labels.astype(np.uint8)
            Image.fromarray(image).save(root / group / "images" / f"{stem}.png")
            Image.fromarray(labels).save(root / group / "masks" / f"{stem}.png")
            out[f"{group}/{stem}"] = labels
    (root / "classes.yaml").write_text(INDEX_CLASSES)
    return out


if __name__ == "__main__":  # the worked example (docs/own-data.md): python tests/helpers/make_folder.py out/tiles
    import argparse

    parser = argparse.ArgumentParser(description="write a tiny 4-band uint16 folder data set (with nodata)")
    parser.add_argument("out", type=Path)
    parser.add_argument("--count", type=int, default=6)
    parser.add_argument("--size", type=int, default=192)
    args = parser.parse_args()
    if args.out.exists():
        parser.error(f"{args.out} exists; choose a new folder")
    make_uint16_folder(args.out, count=args.count, h=args.size, w=args.size)
    print(f"wrote {args.count} image/mask pairs and classes.yaml to {args.out}")
