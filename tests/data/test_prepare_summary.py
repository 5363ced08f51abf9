"""The summary ``ctseg prepare`` prints after every run and keeps in the manifest: crops, pixels, ignore pixels by
cause and class shares per split, checked against counts worked out here from the source labels alone; the
manifest read back, an older one without the summary included."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from helpers.make_folder import GROUPS, make_group_folder

from ctseg.cli.entry import main
from ctseg.data.manifest import IGNORE_CAUSES, load_manifest, split_summary
from ctseg.data.summary import format_summary
from ctseg.errors import CtsegError

CROP = 32
CLASSES = ("building", "road", "water")  # label values 1, 2, 3; 0 is ignore


def _offsets(length: int) -> list[int]:
    return [0] if length <= CROP else [*range(0, length - CROP, CROP), length - CROP]


def _expected(labels: dict[str, np.ndarray], val_groups: set[str]) -> dict[str, dict]:
    """Per split, from the labels alone: crops, pixels, class pixels, and ignore pixels by cause. Training crops
    count every window (overlaps twice, padding as ignore); evaluation crops score each source pixel once."""
    out = {s: {"crops": 0, "pixels": 0, "classes": np.zeros(4, np.int64), **dict.fromkeys(IGNORE_CAUSES, 0)}
           for s in ("train", "val")}  # fmt: skip
    for tile, values in labels.items():
        row = out["val" if tile.split("/")[0] in val_groups else "train"]
        h, w = values.shape
        inside_total = 0
        for r in _offsets(h):
            for c in _offsets(w):
                window = values[r : r + CROP, c : c + CROP]
                row["crops"] += 1
                row["pixels"] += CROP * CROP
                row["padding"] += CROP * CROP - window.size
                inside_total += window.size
                if row is out["train"]:
                    row["classes"] += np.bincount(window.ravel(), minlength=4)
        if row is out["val"]:
            row["classes"] += np.bincount(values.ravel(), minlength=4)
            row["overlap"] += inside_total - values.size
    for row in out.values():
        row["label"] = int(row["classes"][0])
    return out


def _parse(printed: str) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]]:
    """The two tables printed: split → column → cell, and class → split → share."""
    blocks = [b.splitlines() for b in printed.strip().split("\n\n")]
    header, *rows = [line.replace(" %", "%").split() for line in blocks[0]]
    splits = {row[0]: dict(zip(header, row, strict=True)) for row in rows}
    assert blocks[1][0] == "class shares of the labelled pixels"
    header, *rows = [line.replace(" %", "%").split() for line in blocks[1][1:]]
    shares = {row[0]: dict(zip(header[1:], row[1:], strict=True)) for row in rows}
    return splits, shares


def _close(cell: str, part: int, whole: int) -> None:
    value = 100.0 * part / whole
    if cell == "<0.1%":
        assert 0 < value < 0.05
    else:
        assert cell.endswith("%") and abs(float(cell[:-1]) - value) <= 0.05 + 1e-9, (cell, value)


def test_printed_table_matches_counts_from_the_labels(tmp_path, capsys):
    labels = make_group_folder(tmp_path / "src")
    argv = ["prepare", "folder", "--src", str(tmp_path / "src"), "--classes", str(tmp_path / "src" / "classes.yaml"),
            "--dst", str(tmp_path / "out"), "--crop", str(CROP), "--workers", "1", "--split", "val=Tile 1"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    expected = _expected(labels, {"Tile 1"})
    splits, shares = _parse(printed.split("\nignore pixels, by cause:")[0])
    for split, want in expected.items():
        cells = splits[split]
        assert int(cells["crops"]) == want["crops"] and int(cells["pixels"].replace(",", "")) == want["pixels"]
        assert int(cells["images"]) == 2 * (1 if split == "val" else 2) and int(cells["groups"]) == len(GROUPS) - 2 + (
            split == "train"
        )
        ignore = sum(want[cause] for cause in IGNORE_CAUSES)
        assert ignore + want["classes"][1:].sum() == want["pixels"]
        _close(cells["ignore"], ignore, want["pixels"])
        for cause in IGNORE_CAUSES:
            _close(cells[cause], want[cause], want["pixels"])
        for index, name in enumerate(CLASSES, start=1):
            _close(shares[name][split], want["classes"][index], want["classes"][1:].sum())
    assert expected["val"]["overlap"] > 0 and expected["train"]["padding"] > 0  # both causes are exercised
    for cause in ("padding", "overlap", "label"):
        assert f"  {cause}: " in printed
    assert "  nodata: " not in printed  # only the causes that occur are explained
    # the manifest keeps the same numbers, exactly
    summary = split_summary(load_manifest(tmp_path / "out"))
    for split, want in expected.items():
        assert summary[split]["crops"] == want["crops"] and summary[split]["pixels"] == want["pixels"]
        assert summary[split]["causes"] == {cause: want[cause] for cause in IGNORE_CAUSES}
        assert summary[split]["classes"] == dict(zip(CLASSES, want["classes"][1:].tolist(), strict=True))
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    for split, row in manifest["summary"].items():
        assert sum(row["ignore"].values()) == manifest["pixels"][split]["ignore"]


def test_an_older_manifest_without_the_summary_still_reads_and_prints(tmp_path, capsys):
    make_group_folder(tmp_path / "src")
    argv = ["prepare", "folder", "--src", str(tmp_path / "src"), "--classes", str(tmp_path / "src" / "classes.yaml"),
            "--dst", str(tmp_path / "out"), "--crop", str(CROP), "--workers", "1", "--split", "val=Tile 3"]  # fmt: skip
    assert main(argv) == 0
    new = split_summary(load_manifest(tmp_path / "out"))
    path = tmp_path / "out" / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["summary"]
    for record in manifest["crops"]:
        del record["group"]  # older still: crop records without their group
    path.write_text(json.dumps(manifest))
    old = split_summary(load_manifest(tmp_path / "out"))
    for split, row in new.items():
        assert old[split]["causes"] is None
        for key in ("images", "crops", "pixels", "ignore", "classes"):
            assert old[split][key] == row[key], key
    capsys.readouterr()
    assert main(argv) == 0  # the same settings: nothing to do, and the table from the older manifest
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split() == ["split", "groups", "images", "crops", "pixels", "ignore"]
    assert "were not counted by the ctseg that prepared this folder" in printed
    assert format_summary(manifest).splitlines()[0] == printed.splitlines()[0]


@pytest.mark.parametrize(
    "summary",
    [[1, 2], {"train": {"crops": -1}}, {"train": {"crops": True}}, {"val": {"ignore": {"weather": 3}}},
     {"val": {"ignore": {"label": "many"}}}, {"val": {"colour": 1}}],
)  # fmt: skip
def test_a_garbled_summary_is_one_line(tmp_path, summary):
    make_group_folder(tmp_path / "src", {"Tile 1": (40, 40), "Tile 2": (40, 40)})
    argv = ["prepare", "folder", "--src", str(tmp_path / "src"), "--classes", str(tmp_path / "src" / "classes.yaml"),
            "--dst", str(tmp_path / "out"), "--crop", str(CROP), "--workers", "1"]  # fmt: skip
    assert main(argv) == 0
    path = tmp_path / "out" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["summary"] = summary
    path.write_text(json.dumps(manifest))
    with pytest.raises(CtsegError, match=re.escape(f"{path} is garbled (its summary")):
        load_manifest(tmp_path / "out")
