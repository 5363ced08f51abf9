"""UAVid: sequence discovery, splits by sequence and exact colour decoding on tiny generated files.

No UAVid data may be shipped, so the tests write small frames in the release's exact naming and format:
``uavid_{train,val,test}/seqN/Images/000000.png`` (RGB) with ``seqN/Labels/000000.png`` (RGB colour labels;
test sequences without Labels). Frames are 70 × 100 px and cut into 32 px crops, a size that divides neither
side (as 1024 divides neither side of a 3840 × 2160 frame).
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from helpers.make_uavid import write_uavid
from helpers.scored import assemble
from PIL import Image

from ctseg.cli.entry import main
from ctseg.data import PreparedDataset, prepare_dataset
from ctseg.data.crops import crop_offsets
from ctseg.data.registry import CropSettings, get_dataset
from ctseg.data.sets.uavid import UAVID, discover_uavid
from ctseg.errors import CtsegError


def test_discover_release_layout_splits_by_sequence(tmp_path):
    write_uavid(tmp_path / "dl" / "UAVid")
    tiles, notes = discover_uavid(tmp_path / "dl")
    assert [(t.tile, t.group, t.split) for t in tiles] == [
        ("seq1/000000", "seq1", "train"), ("seq1/000100", "seq1", "train"),
        ("seq2/000000", "seq2", "train"), ("seq2/000100", "seq2", "train"),
        ("seq16/000000", "seq16", "val"), ("seq16/000100", "seq16", "val"),
    ]  # fmt: skip
    tile = tiles[0]
    assert tile.image == tmp_path / "dl/UAVid/uavid_train/seq1/Images/000000.png"
    assert tile.label == tmp_path / "dl/UAVid/uavid_train/seq1/Labels/000000.png"
    assert len(notes) == 1 and "seq21" in notes[0] and "test" in notes[0]


def test_plain_split_folder_names_and_the_source_folder_itself(tmp_path):
    write_uavid(tmp_path, {"Train/more": (3,), "valid": (4,), "test": (5,)}, frames=("000000",))
    tiles, notes = discover_uavid(tmp_path)
    assert {t.tile: t.split for t in tiles} == {"seq3/000000": "train", "seq4/000000": "val"}
    assert "seq5" in notes[0]
    tiles, _ = discover_uavid(tmp_path / "valid")  # --src uavid_val: the source folder names the split
    assert {t.tile: t.split for t in tiles} == {"seq4/000000": "val"}


def test_sequences_in_no_split_folder_need_split_tiles(tmp_path):
    write_uavid(tmp_path, {"frames": (1, 2, 3)}, frames=("000000",))
    with pytest.raises(CtsegError, match=r"seq1, seq2, seq3 lie in no uavid_train/ or uavid_val/ folder.*split_tiles"):
        discover_uavid(tmp_path)
    tiles, _ = discover_uavid(tmp_path, {"val": ["2"], "train": ["seq1", "Seq3"]})
    assert {t.group: t.split for t in tiles} == {"seq1": "train", "seq2": "val", "seq3": "train"}


def test_split_tiles_override_the_folders(tmp_path):
    write_uavid(tmp_path, frames=("000000",))
    tiles, _ = discover_uavid(tmp_path, {"val": ["seq1"]})
    assert {t.group: t.split for t in tiles} == {"seq1": "val", "seq2": "train", "seq16": "train"}
    with pytest.raises(CtsegError, match="sequence 'seq21'"):  # test sequences have no labels
        discover_uavid(tmp_path, {"val": ["seq21"]})


def test_frame_without_label_names_the_expected_label(tmp_path):
    write_uavid(tmp_path)
    (tmp_path / "uavid_val/seq16/Labels/000100.png").unlink()
    expected = re.escape(str(tmp_path / "uavid_val/seq16/Labels/000100.png"))
    with pytest.raises(CtsegError, match=r"Images/000100\.png has no label: expected " + expected):
        discover_uavid(tmp_path)


def test_the_same_sequence_twice_and_an_empty_folder_are_errors(tmp_path):
    write_uavid(tmp_path, {"uavid_train": (1,), "copy/uavid_train": (1,)}, frames=("000000",))
    with pytest.raises(CtsegError, match="seq1 found twice"):
        discover_uavid(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CtsegError, match=r"no UAVid sequences.*seqN/Images/000000\.png"):
        discover_uavid(tmp_path / "empty")


def test_prepare_keeps_every_pixel_and_decodes_colours_exactly(tmp_path):
    classes = write_uavid(tmp_path / "src")
    dst = prepare_dataset("uavid", tmp_path / "src", tmp_path / "out", crop=32, workers=1, progress=False)
    val = PreparedDataset(dst, "val")
    assert val.info is UAVID and val.info.label_kind == "color"
    rows, cols = crop_offsets(70, 32, 32), crop_offsets(100, 32, 32)
    assert (rows, cols) == ([0, 32, 38], [0, 32, 64, 68])  # the last crop of each axis ends at the border
    frame = [r for r in val.records if r["tile"] == "seq16/000000"]
    assert sorted(tuple(r["offset"]) for r in frame) == [(r, c) for r in rows for c in cols]
    assert sum((b - t) * (r - lft) for t, lft, b, r in (x["scored"] for x in frame)) == 70 * 100
    rebuilt = assemble(val)  # the scored boxes partition each frame
    assert sorted(rebuilt) == ["seq16/000000", "seq16/000100"]
    for tile, mask in rebuilt.items():
        assert np.array_equal(mask, classes[tile]), tile
    train = PreparedDataset(dst, "train")
    assert {r["group"] for r in train.records} == {"seq1", "seq2"} and len(train) == 4 * 12
    for i in (0, 11, 47):  # training crops: the whole window, overlaps included
        row, col = train.records[i]["offset"]
        window = classes[train.records[i]["tile"]][row : row + 32, col : col + 32]
        assert np.array_equal(train[i]["mask"].numpy(), window)
    manifest = json.loads((dst / "manifest.json").read_text())
    val_classes = np.concatenate([m.ravel() for m in rebuilt.values()])
    assert manifest["pixels"]["val"]["clutter"] == int((val_classes == 7).sum())  # black is a class, not ignore
    assert manifest["settings"]["splits"]["val"] == ["seq16/000000", "seq16/000100"]


def test_default_crops_cover_a_4k_frame():
    settings = get_dataset("uavid").crop
    assert settings == CropSettings(1024, 1024, None)
    assert crop_offsets(3840, settings.crop, settings.stride) == [0, 1024, 2048, 2816]
    assert crop_offsets(2160, settings.crop, settings.stride) == [0, 1024, 1136]
    assert crop_offsets(4096, settings.crop, settings.stride) == [0, 1024, 2048, 3072]


@pytest.mark.parametrize("color", [(128, 0, 1), (255, 255, 255)])
def test_undeclared_colour_names_file_pixel_and_colour(tmp_path, color):
    write_uavid(tmp_path / "src", {"uavid_val": (16,)}, frames=("000000",))
    path = tmp_path / "src/uavid_val/seq16/Labels/000000.png"
    rgb = np.asarray(Image.open(path)).copy()
    rgb[4, 7] = color
    Image.fromarray(rgb, "RGB").save(path)
    message = re.escape(f"{path}: colour {color}") + r".*\(row 4, col 7\).*1 such pixels"
    with pytest.raises(CtsegError, match=message):
        prepare_dataset("uavid", tmp_path / "src", tmp_path / "out", crop=32, workers=1, progress=False)


def test_prepare_list_names_uavid(capsys):
    assert main(["prepare", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    line = next(line for line in lines if line.startswith("uavid "))
    assert "8 classes" in line and "3 bands uint8" in line
    assert any(line.startswith("loveda ") for line in lines)
