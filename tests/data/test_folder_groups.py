"""``ctseg prepare folder`` on folders as they come: groups (tiles, scenes) with repeated file names, ``--split`` by
group name, stem or glob, split folders, and the error lines of each (through the real CLI entry)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from helpers.make_folder import GROUPS, STEMS, make_group_folder
from helpers.paths import DUBAI_DIR

from ctseg.cli.entry import main
from ctseg.data.pairs import find_layout
from ctseg.data.prepare import prepare_dataset
from ctseg.data.registry import PrepareOptions
from ctseg.data.sets.folder import discover_folder
from ctseg.errors import CtsegError


def _prepare(src: Path, dst: Path, **kwargs) -> dict:
    prepare_dataset("folder", src, dst, classes=src / "classes.yaml", crop=32, workers=1, progress=False, **kwargs)
    return json.loads((dst / "manifest.json").read_text())


def _groups_by_split(manifest: dict) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for record in manifest["crops"]:
        out.setdefault(record["split"], set()).add(record["group"])
    return out


# ------------------------------------------------------------------------------------------------ layouts
def test_groups_with_repeated_file_names_are_groups_not_splits(tmp_path):
    labels = make_group_folder(tmp_path / "src")
    manifest = _prepare(tmp_path / "src", tmp_path / "out")
    # no --split: --val-fraction (0.2) of the three groups, at least one, held out whole
    by_split = _groups_by_split(manifest)
    assert sorted(by_split) == ["train", "val"] and len(by_split["val"]) == 1 and len(by_split["train"]) == 2
    assert {t for ids in manifest["settings"]["splits"].values() for t in ids} == set(labels)
    files = [r["image"] for r in manifest["crops"]]
    assert len(files) == len(set(files))  # the repeated names never overwrite each other
    for record in manifest["crops"]:
        group, stem = record["tile"].split("/")
        assert record["group"] == group and Path(record["image"]).name.startswith(f"{group.replace(' ', '_')}_{stem}_r")
    rows = {row["tile"]: row for row in manifest["tiles"]}
    assert rows["Tile 2/image_part_001"]["group"] == "Tile 2"


@pytest.mark.parametrize(
    ("split", "val"),
    [
        ({"val": ["Tile 2"]}, {"Tile 2/image_part_001", "Tile 2/image_part_002"}),  # a group name
        ({"val": ["Tile [1-2]"]}, {f"Tile {g}/{s}" for g in (1, 2) for s in STEMS}),  # a glob over groups
        ({"val": ["image_part_002"]}, {f"{g}/image_part_002" for g in GROUPS}),  # a stem, in every group
        ({"val": ["*_part_00[1]", "Tile 3/image_part_002"]}, {f"{g}/image_part_001" for g in GROUPS}
         | {"Tile 3/image_part_002"}),  # a glob over stems, and group/stem
    ],
)  # fmt: skip
def test_split_by_group_name_stem_or_glob(tmp_path, split, val):
    labels = make_group_folder(tmp_path / "src")
    tiles, notes = discover_folder(tmp_path / "src", split, PrepareOptions())
    assert {t.tile for t in tiles if t.split == "val"} == val
    assert {t.tile for t in tiles if t.split == "train"} == set(labels) - val  # the rest go to train
    assert notes == []


def test_a_flat_folder_takes_stems_and_globs(tmp_path):
    from helpers.make_folder import make_uint16_folder

    make_uint16_folder(tmp_path / "src", count=5, h=40, w=40)
    tiles, _ = discover_folder(tmp_path / "src", {"val": ["scene_1", "scene_[34]"]}, PrepareOptions())
    assert {t.tile: t.split for t in tiles} == {"scene_0": "train", "scene_1": "val", "scene_2": "train",
                                                "scene_3": "val", "scene_4": "val"}  # fmt: skip
    with pytest.raises(CtsegError, match=r"--val-fraction and --split both choose"):
        discover_folder(tmp_path / "src", {"val": ["scene_1"]}, PrepareOptions(val_fraction=0.5))


def test_a_train_split_given_leaves_the_rest_out(tmp_path):
    make_group_folder(tmp_path / "src")
    tiles, notes = discover_folder(tmp_path / "src", {"train": ["Tile 3"], "val": ["Tile 1"]}, PrepareOptions())
    assert {t.group for t in tiles} == {"Tile 1", "Tile 3"} and "skipping 2 image(s)" in notes[0]


def test_known_split_folders_in_any_case_are_splits(tmp_path):
    make_group_folder(tmp_path / "src", {"Training": (40, 40), "validation": (40, 40)})
    assert find_layout(tmp_path / "src").kind == "splits"
    tiles, _ = discover_folder(tmp_path / "src", None, PrepareOptions())
    assert {t.split for t in tiles} == {"train", "val"}
    assert "val/image_part_001" in {t.tile for t in tiles}  # the same name in both: the split in front


def test_one_group_is_split_by_image(tmp_path):
    make_group_folder(tmp_path / "src", {"scene A": (40, 40)})
    tiles, _ = discover_folder(tmp_path / "src", None, PrepareOptions(val_fraction=0.5))
    assert sorted(t.split for t in tiles) == ["train", "val"]


def test_a_split_like_folder_among_groups_is_refused(tmp_path):
    make_group_folder(tmp_path / "src", {"Tile 1": (40, 40), "holdout": (40, 40)})
    with pytest.raises(CtsegError, match=r"holdout: 'holdout' is not a split folder name ctseg knows \(train, val"):
        discover_folder(tmp_path / "src", None, PrepareOptions())


# ------------------------------------------------------------------------------------------------ error lines
def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))}  # fmt: skip


def _argv(src: Path, dst: Path, *extra: str) -> list[str]:
    return ["prepare", "folder", "--src", str(src), "--classes", str(src / "classes.yaml"), "--dst", str(dst),
            "--crop", "32", "--workers", "1", *extra]  # fmt: skip


def _unknown_split_folder(src: Path) -> tuple[list[str], list[str]]:
    make_group_folder(src, {"train": (40, 40), "eval": (40, 40)})
    return [], [str(src / "eval"), "'eval' is not a split folder name", "train, val, test", "beside the split"]


def _pattern_matching_nothing(src: Path) -> tuple[list[str], list[str]]:
    make_group_folder(src)
    return ["--split", "val=Tile 9"], ["--split val=Tile 9", "matches no group or file name", str(src), "Tile 1"]


def _file_in_two_splits(src: Path) -> tuple[list[str], list[str]]:
    make_group_folder(src)
    image = src / "Tile 1" / "images" / "image_part_001.png"
    return ["--split", "val=Tile 1", "--split", "test=*_001"], [str(image), "val=Tile 1", "test=*_001"]


def _split_on_split_folders(src: Path) -> tuple[list[str], list[str]]:
    make_group_folder(src, {"train": (40, 40), "val": (40, 40)})
    return ["--split", "val=image_part_001"], ["--split:", str(src), "already has split folders (train, val)"]


@pytest.mark.parametrize(
    "case", [_unknown_split_folder, _pattern_matching_nothing, _file_in_two_splits, _split_on_split_folders]
)
def test_error_lines(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    extra, needles = case(tmp_path / "src")
    before = _snapshot(tmp_path)
    capsys.readouterr()
    code = main(_argv(tmp_path / "src", tmp_path / "out", *extra))
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("ctseg: error: "), err
    assert "split_tiles" not in lines[0] and "Traceback" not in err and out == ""
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert _snapshot(tmp_path) == before  # nothing written, nothing left behind


# ------------------------------------------------------------------------------------------------ the real set
DUBAI_CLASSES = """\
name: dubai-folder
classes:
  - {name: building, color: "#3C1098"}
  - {name: land, color: "#8429F6"}
  - {name: road, color: "#6EC1E4"}
  - {name: vegetation, color: "#FEDD3A"}
  - {name: water, color: "#E2A929"}
ignore: ["#9B9B9B", "#000000"]
"""


@pytest.mark.skipif(not DUBAI_DIR.is_dir(), reason=f"Dubai data set absent ({DUBAI_DIR})")
def test_the_dubai_set_in_its_original_layout(tmp_path, capsys):
    """``Tile 1/images`` … as downloaded (here: links to tiles 1 and 2), prepared in one command; the val split
    scores every labelled pixel of Tile 1 exactly once, and the printed table says so."""
    from ctseg.data.definitions import IGNORE_INDEX
    from ctseg.data.labels import decode_label
    from ctseg.data.manifest import info_from_manifest, load_manifest, split_summary
    from ctseg.data.raster import read_rgb

    src = tmp_path / "Semantic segmentation dataset"
    src.mkdir()
    for n in (1, 2):
        os.symlink(DUBAI_DIR / f"tile{n}", src / f"Tile {n}")
    (tmp_path / "classes.yaml").write_text(DUBAI_CLASSES)
    argv = ["prepare", "folder", "--src", str(src), "--classes", str(tmp_path / "classes.yaml"),
            "--dst", str(tmp_path / "out"), "--split", "val=Tile 1", "--workers", "2"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    manifest = load_manifest(tmp_path / "out")
    assert _groups_by_split(manifest) == {"train": {"Tile 2"}, "val": {"Tile 1"}}
    assert any(Path(r["image"]).name == "Tile_1_image_part_001_r00000_c00000.tif" for r in manifest["crops"])
    summary = split_summary(manifest)
    info = info_from_manifest(manifest)
    truth = np.zeros(256, np.int64)
    for mask in sorted((DUBAI_DIR / "tile1" / "masks").glob("*.png")):
        truth += np.bincount(decode_label(read_rgb(mask, label=True), info, mask).ravel(), minlength=256)
    assert summary["val"]["classes"] == {c: int(truth[i]) for i, c in enumerate(info.classes)}
    assert summary["val"]["causes"]["label"] == truth[IGNORE_INDEX] and summary["val"]["causes"]["padding"] == 0
    assert summary["train"]["causes"]["padding"] > 0  # tile 2 is 509 px wide: its crops are filled up to 512
    row = re.search(r"^val\s+1\s+9\s+(\d+)\s+([\d,]+)\s", printed, re.MULTILINE)
    assert row and int(row[1]) == summary["val"]["crops"] and int(row[2].replace(",", "")) == summary["val"]["pixels"]
    assert "overlap: evaluation pixels an earlier, overlapping crop" in printed
