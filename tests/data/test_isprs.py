"""ISPRS file discovery, splits and exact colour decoding on tiny generated GeoTIFFs."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
from helpers.make_isprs import PALETTE, make_potsdam, make_vaihingen, write_geotiff

from ctseg.data.definitions import IGNORE_INDEX, ISPRS_COLORS, POTSDAM
from ctseg.data.prepare import decode_label, read_rgb
from ctseg.data.sets.isprs import (
    POTSDAM_TEST,
    POTSDAM_TRAIN,
    VAIHINGEN_TEST,
    VAIHINGEN_TRAIN,
    discover_isprs,
)
from ctseg.errors import CtsegError


def test_splits_are_the_protocols():
    assert len(POTSDAM_TEST) == 14 and len(POTSDAM_TRAIN) == 24
    assert not set(POTSDAM_TEST) & set(POTSDAM_TRAIN)
    assert {"2_13", "4_15", "7_13"} <= set(POTSDAM_TEST) and {"6_7", "7_12", "2_10"} <= set(POTSDAM_TRAIN)
    assert len(VAIHINGEN_TRAIN) == 16 and len(VAIHINGEN_TEST) == 17
    assert not set(VAIHINGEN_TRAIN) & set(VAIHINGEN_TEST)
    numbers = sorted(int(a[4:]) for a in (*VAIHINGEN_TRAIN, *VAIHINGEN_TEST))
    assert numbers == [*range(1, 9), *range(10, 18), *range(20, 25), *range(26, 36), 37, 38]


def test_discover_potsdam_anywhere_with_split_labels(tmp_path):
    src = tmp_path / "dl"
    make_potsdam(src / "nested" / "deeper", tiles=("2_10", "2_13", "6_7"))
    tiles, notes = discover_isprs("potsdam", src)
    by_id = {t.tile: t for t in tiles}
    assert list(by_id) == ["2_10", "2_13", "6_7"]
    assert by_id["2_13"].split == "test" and by_id["2_13"].label.name == "top_potsdam_2_13_label_noBoundary.tif"
    assert by_id["2_13"].label_kind == "eroded"
    assert by_id["6_7"].split == "train" and by_id["6_7"].label.name == "top_potsdam_6_7_label.tif"
    assert by_id["2_10"].image.name == "top_potsdam_2_10_RGB.tif"
    assert any("found 3 of 38" in n for n in notes)


def test_discover_potsdam_ignores_other_products_and_skips_unlisted_tiles(tmp_path):
    src = tmp_path / "dl"
    tiles = make_potsdam(src, tiles=("2_10", "9_9"))
    shutil.copy(tiles["2_10"].image, src / "2_Ortho_RGB" / "top_potsdam_2_10_RGBIR.tif")
    found, notes = discover_isprs("potsdam", src)
    assert [t.tile for t in found] == ["2_10"]
    assert any("9_9" in n and "no split" in n for n in notes)


def test_discover_vaihingen_release_layout(vaihingen_src):
    src, made = vaihingen_src
    tiles, _ = discover_isprs("vaihingen", src)
    by_id = {t.tile: t for t in tiles}
    assert by_id["area1"].split == "train" and by_id["area1"].label.parent.name == "gts_for_participants"
    assert by_id["area1"].image.parent.name == "top"
    assert by_id["area2"].split == "test" and by_id["area2"].label.name == "top_mosaic_09cm_area2_noBoundary.tif"
    # the release folder "ISPRS_semantic_labeling_Vaihingen" contains "label" but is not a ground-truth folder
    assert by_id["area2"].image == made["area2"].image


def test_missing_eroded_label_is_an_error(potsdam_src):
    src, tiles = potsdam_src
    tiles["2_13"].eroded.unlink()
    with pytest.raises(CtsegError, match=r"2_13.*top_potsdam_2_13_label_noBoundary\.tif"):
        discover_isprs("potsdam", src)


def test_missing_vaihingen_train_label_is_an_error(vaihingen_src):
    src, tiles = vaihingen_src
    tiles["area1"].label.unlink()
    with pytest.raises(CtsegError, match=r"area1.*gts_for_participants"):
        discover_isprs("vaihingen", src)


@pytest.mark.parametrize(
    ("name", "pattern"), [("potsdam", "top_potsdam_X_Y_RGB.tif"), ("vaihingen", "top_mosaic_09cm_areaN.tif")]
)
def test_empty_or_wrong_folder_names_the_pattern(tmp_path, name, pattern):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CtsegError, match=re.escape(pattern)):
        discover_isprs(name, tmp_path / "empty")
    make_vaihingen(tmp_path / "other") if name == "potsdam" else make_potsdam(tmp_path / "other")
    with pytest.raises(CtsegError, match=re.escape(pattern)):
        discover_isprs(name, tmp_path / "other")


def test_split_override(potsdam_src):
    src, _ = potsdam_src
    tiles, _ = discover_isprs("potsdam", src, {"test": ["02_10"]})
    assert {t.tile: (t.split, t.label_kind) for t in tiles} == {"2_10": ("test", "eroded"), "2_13": ("train", "full")}
    with pytest.raises(CtsegError, match="5_5"):
        discover_isprs("potsdam", src, {"test": ["5_5"]})
    with pytest.raises(CtsegError, match="both"):
        discover_isprs("potsdam", src, {"train": ["2_10"], "test": ["2_10"]})


def test_decode_every_palette_colour_exactly():
    colors = np.array([*ISPRS_COLORS, (0, 0, 0)], np.uint8)
    rgb = np.repeat(colors[None], 3, axis=0)  # (3, 7, 3)
    expected = np.array([0, 1, 2, 3, 4, 5, IGNORE_INDEX], np.uint8)
    assert np.array_equal(decode_label(rgb, POTSDAM), np.repeat(expected[None], 3, axis=0))
    classes = np.random.default_rng(0).integers(0, 6, (40, 50)).astype(np.uint8)
    assert np.array_equal(decode_label(PALETTE[classes], POTSDAM), classes)


@pytest.mark.parametrize("color", [(254, 255, 255), (0, 0, 1), (128, 128, 128)])
def test_decode_rejects_other_colours_naming_file_colour_and_pixel(color):
    rgb = PALETTE[np.zeros((20, 30), np.uint8)]
    rgb[7, 11] = color
    rgb[15, 2] = color
    message = re.escape(f"lbl.tif: colour {color}") + r".*\(row 7, col 11\).*2 such pixels"
    with pytest.raises(CtsegError, match=message):
        decode_label(rgb, POTSDAM, "lbl.tif")


def test_read_geotiff_and_plain_tiff(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    for georeferenced in (True, False):
        path = write_geotiff(tmp_path / f"x{georeferenced}.tif", rgb, georeferenced=georeferenced)
        assert np.array_equal(read_rgb(path), rgb)
