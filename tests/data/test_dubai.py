"""The real Dubai aerial set (``../shared/data/dubai-aerial``): layout, exact palette, class shares, split, prepare."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from helpers.paths import DUBAI_DIR
from PIL import Image

from ctseg.data import PreparedDataset
from ctseg.data.definitions import DUBAI, IGNORE_INDEX
from ctseg.data.prepare import decode_label, prepare_dataset, read_rgb
from ctseg.data.sets.dubai import DUBAI_VAL_TILES, discover_dubai
from ctseg.errors import CtsegError

needs_dubai = pytest.mark.skipif(not DUBAI_DIR.is_dir(), reason=f"Dubai data set absent ({DUBAI_DIR})")


def _readme_shares() -> dict[str, tuple[str, float]]:
    """README table: lower-case class name → (colour hex, share in %)."""
    rows = re.findall(
        r"^\| ([A-Za-z]+)[^|]*\| #([0-9A-Fa-f]{6}) \| ([\d.]+)% \|$", (DUBAI_DIR / "README.md").read_text(), re.M
    )
    return {name.lower(): (color.upper(), float(share)) for name, color, share in rows}


@needs_dubai
def test_layout_and_default_split():
    tiles, notes = discover_dubai(DUBAI_DIR)
    assert len(tiles) == 63 and notes == []
    assert sorted({t.group for t in tiles}) == [f"tile{i}" for i in range(1, 8)]
    assert {t.group for t in tiles if t.split == "test"} == set(DUBAI_VAL_TILES) == {"tile1", "tile2", "tile3"}
    assert all(t.label.parent.name == "masks" and t.label.stem == t.image.stem for t in tiles)


@needs_dubai
def test_every_mask_pixel_is_a_palette_colour_and_shares_match_readme():
    readme = _readme_shares()
    assert len(readme) == 6
    for name, color in zip(DUBAI.classes, DUBAI.colors, strict=True):
        assert readme[name][0] == "{:02X}{:02X}{:02X}".format(*color)
    assert readme["unlabeled"][0] == "{:02X}{:02X}{:02X}".format(*DUBAI.ignore_colors[0])
    tiles, _ = discover_dubai(DUBAI_DIR)
    counts = np.zeros(256, np.int64)
    black = 0
    for tile in tiles:
        rgb = read_rgb(tile.label, label=True)
        black += int((rgb.max(-1) == 0).sum())
        counts += np.bincount(decode_label(rgb, DUBAI, tile.label).ravel(), minlength=256)  # raises on any stray
    total = counts.sum()
    for index, name in enumerate(DUBAI.classes):
        assert 100 * counts[index] / total == pytest.approx(readme[name][1], abs=1.0), name
    unlabeled = counts[IGNORE_INDEX] - black
    assert 100 * unlabeled / total == pytest.approx(readme["unlabeled"][1], abs=0.3)
    assert 0 < black < 1e-4 * total  # "a few pixels are pure black (under 0.01 %)"


@needs_dubai
def test_prepare_two_tiles(tmp_path):
    dst = prepare_dataset(
        "dubai", DUBAI_DIR, tmp_path / "dubai", split_tiles={"train": ["2"], "test": ["tile3"]}, progress=False
    )
    manifest = json.loads((dst / "manifest.json").read_text())
    assert manifest["settings"]["crop"] == 512 and manifest["settings"]["resize"] is None
    crops = manifest["crops"]
    assert {c["group"] for c in crops if c["split"] == "train"} == {"tile2"}
    assert {c["group"] for c in crops if c["split"] == "test"} == {"tile3"}
    assert len(crops) == 9 * 2 + 9 * 4  # tile 2: 544 × 509 (H × W) → 2 × 1 crops; tile 3: 658 × 682 → 2 × 2
    record = next(c for c in crops if c["tile"] == "tile2/image_part_001" and c["offset"] == [32, 0])
    mask = np.asarray(Image.open(dst / record["mask"]))
    source = decode_label(read_rgb(DUBAI_DIR / "tile2/masks/image_part_001.png", label=True), DUBAI)
    assert source.shape == (544, 509)
    assert np.array_equal(mask[:, :509], source[32:]) and (mask[:, 509:] == IGNORE_INDEX).all()
    ds = PreparedDataset(dst, "test")
    assert len(ds) == 36 and ds.info is DUBAI and ds[0]["image"].shape == (3, 512, 512)


@needs_dubai
def test_missing_mask_is_an_error(tmp_path):
    import shutil

    shutil.copytree(DUBAI_DIR / "tile2", tmp_path / "tile2")
    (tmp_path / "tile2/masks/image_part_004.png").chmod(0o644)
    (tmp_path / "tile2/masks/image_part_004.png").unlink()
    with pytest.raises(CtsegError, match=r"image_part_004\.jpg has no mask: expected .*masks/image_part_004\.png"):
        discover_dubai(tmp_path)


def test_empty_folder_names_the_layout(tmp_path):
    with pytest.raises(CtsegError, match=r"tileN/images/image_part_00K\.jpg"):
        discover_dubai(tmp_path)


@needs_dubai
@pytest.mark.slow
def test_prepare_full_default(tmp_path):
    dst = prepare_dataset("dubai", DUBAI_DIR, tmp_path / "dubai", progress=False)
    manifest = json.loads((dst / "manifest.json").read_text())
    splits = [c["split"] for c in manifest["crops"]]
    assert len(splits) == 441 and splits.count("test") == 90
    assert manifest["settings"]["splits"]["test"][0].startswith("tile1/")
