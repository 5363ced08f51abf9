"""LoveDA: discovery, splits and exact index-mask decoding on tiny generated files in the release's layout.

No LoveDA data may be shipped, so the tests write a few small PNGs in its exact naming and format:
``{Train,Val,Test}/{Urban,Rural}/images_png/N.png`` (RGB) with ``masks_png/N.png`` (8-bit grey, values 0–7;
Test without masks), numbered as the release numbers its images.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from helpers.make_loveda import write_loveda
from helpers.scored import assemble
from PIL import Image

from ctseg.cli.entry import main
from ctseg.data import PreparedDataset, prepare_dataset
from ctseg.data.definitions import IGNORE_INDEX
from ctseg.data.registry import CropSettings, get_dataset
from ctseg.data.sets.loveda import LOVEDA, discover_loveda
from ctseg.errors import CtsegError


def classes_of(values: np.ndarray) -> np.ndarray:
    """LoveDA mask values → ctseg class indices: v → v − 1, 0 (no-data) → ignore."""
    return np.where(values == 0, IGNORE_INDEX, values.astype(np.int64) - 1).astype(np.uint8)


def test_discover_release_layout_anywhere(tmp_path):
    src = tmp_path / "dl"
    write_loveda(src / "2021LoveDA")
    tiles, notes = discover_loveda(src)
    assert [(t.tile, t.split) for t in tiles] == [
        ("rural/0", "train"), ("rural/1", "train"), ("rural/2522", "val"),
        ("urban/1366", "train"), ("urban/3514", "val"), ("urban/3515", "val"),
    ]  # fmt: skip
    by_id = {t.tile: t for t in tiles}
    tile = by_id["urban/1366"]
    assert tile.group == "urban/1366" and tile.label_kind == "mask"
    assert tile.image == src / "2021LoveDA/Train/Urban/images_png/1366.png"
    assert tile.label == src / "2021LoveDA/Train/Urban/masks_png/1366.png"
    assert len(notes) == 1 and "Test" in notes[0] and "no public masks" in notes[0]


def test_folder_names_in_any_case_and_missing_domain_noted(tmp_path):
    write_loveda(tmp_path, {("train", "urban"): (1366,), ("VAL", "RURAL"): (2522,)})
    tiles, notes = discover_loveda(tmp_path)
    assert {t.tile: t.split for t in tiles} == {"urban/1366": "train", "rural/2522": "val"}
    assert any("has no Rural/" in n for n in notes) and any("has no Urban/" in n for n in notes)


def test_repeated_stem_gets_the_split_in_its_id(tmp_path):
    write_loveda(tmp_path, {("Train", "Urban"): (5,), ("Val", "Urban"): (5,), ("Val", "Rural"): (5,)})
    tiles, notes = discover_loveda(tmp_path)
    assert {t.tile: t.split for t in tiles} == {"train/urban/5": "train", "val/urban/5": "val", "rural/5": "val"}
    assert len({t.tile for t in tiles}) == 3 and any("both Train and Val" in n for n in notes)


def test_split_override_by_tile_id_or_unique_stem(tmp_path):
    write_loveda(tmp_path)
    tiles, _ = discover_loveda(tmp_path, {"val": ["1366", "Rural/0"]})
    assert {t.tile for t in tiles if t.split == "val"} == {"urban/1366", "rural/0"}
    assert {t.split for t in tiles if t.tile not in ("urban/1366", "rural/0")} == {"train"}
    with pytest.raises(CtsegError, match="image '9999'"):
        discover_loveda(tmp_path, {"val": ["9999"]})


def test_image_without_mask_names_the_expected_mask(tmp_path):
    write_loveda(tmp_path)
    (tmp_path / "Val/Urban/masks_png/3515.png").unlink()
    expected = re.escape(str(tmp_path / "Val/Urban/masks_png/3515.png"))
    with pytest.raises(CtsegError, match=r"images_png/3515\.png has no mask: expected " + expected):
        discover_loveda(tmp_path)


def test_masks_without_an_image_are_skipped_with_a_note(tmp_path):
    write_loveda(tmp_path)
    masks = tmp_path / "Train/Urban/masks_png"
    for stem in ("12", "9"):
        Image.fromarray(np.ones((80, 96), np.uint8), "L").save(masks / f"{stem}.png")
    tiles, notes = discover_loveda(tmp_path)
    assert "urban/9" not in {t.tile for t in tiles} and len(tiles) == 6
    assert f"loveda: {masks}: 2 mask(s) without an image, skipped: 9.png, 12.png" in notes


def test_no_train_or_val_names_the_layout(tmp_path):
    write_loveda(tmp_path, {("Test", "Urban"): (5162,)})
    with pytest.raises(CtsegError, match=r"no LoveDA Train/ or Val/ folder.*images_png/N\.png"):
        discover_loveda(tmp_path)


def test_prepare_val_gives_the_exact_class_indices(tmp_path):
    values = write_loveda(tmp_path / "src")
    dst = prepare_dataset("loveda", tmp_path / "src", tmp_path / "out", crop=48, workers=1, progress=False)
    val = PreparedDataset(dst, "val")
    assert val.info is LOVEDA and val.info.label_kind == "index"
    assert {tuple(r["offset"]) for r in val.records} == {(0, 0), (0, 48), (32, 0), (32, 48)}  # 80 × 96 by 48
    rebuilt = assemble(val)
    assert sorted(rebuilt) == ["rural/2522", "urban/3514", "urban/3515"]
    for tile, mask in rebuilt.items():
        assert np.array_equal(mask, classes_of(values[tile])), tile
    train = PreparedDataset(dst, "train")
    for i, record in enumerate(train.records):  # training crops: the whole window, overlaps included
        row, col = record["offset"]
        window = classes_of(values[record["tile"]])[row : row + 48, col : col + 48]
        assert np.array_equal(train[i]["mask"].numpy(), window)
    manifest = json.loads((dst / "manifest.json").read_text())
    scored = manifest["pixels"]["val"]
    all_val = np.concatenate([classes_of(values[t]).ravel() for t in rebuilt])
    assert scored["building"] == int((all_val == 1).sum()) and scored["ignore"] >= int((all_val == 255).sum())
    assert manifest["settings"]["splits"]["val"] == ["rural/2522", "urban/3514", "urban/3515"]


def test_default_crop_is_the_whole_image(tmp_path):
    assert get_dataset("loveda").crop == CropSettings(1024, 1024, None)
    values = write_loveda(tmp_path / "src", {("Val", "Urban"): (3514,)})
    dst = prepare_dataset("loveda", tmp_path / "src", tmp_path / "out", workers=1, progress=False)
    val = PreparedDataset(dst, "val")
    (record,) = val.records
    assert record["offset"] == [0, 0] and record["scored"] == [0, 0, 80, 96]
    mask = val[0]["mask"].numpy()
    assert mask.shape == (1024, 1024) and np.array_equal(mask[:80, :96], classes_of(values["urban/3514"]))
    assert (mask[80:] == IGNORE_INDEX).all() and (mask[:, 96:] == IGNORE_INDEX).all()


def test_undeclared_mask_value_names_file_pixel_and_value(tmp_path):
    write_loveda(tmp_path / "src")
    path = tmp_path / "src/Train/Urban/masks_png/1366.png"
    mask = np.asarray(Image.open(path)).copy()
    mask[3, 5] = 8
    mask[40, 50] = 8
    Image.fromarray(mask, "L").save(path)
    message = re.escape(f"{path}: label value 8 at pixel (row 3, col 5)") + r".*2 such pixels"
    with pytest.raises(CtsegError, match=message):
        prepare_dataset("loveda", tmp_path / "src", tmp_path / "out", crop=48, workers=1, progress=False)
    assert not (tmp_path / "out").exists()


def test_prepare_list_names_loveda(capsys):
    assert main(["prepare", "--list"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("loveda "))
    assert "7 classes" in line and "3 bands uint8" in line
