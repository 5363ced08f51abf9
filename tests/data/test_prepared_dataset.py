"""PreparedDataset: reading prepared crops back, and its errors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from ctseg.data import PreparedDataset
from ctseg.data.definitions import POTSDAM
from ctseg.errors import CtsegError


def test_samples(prepared_potsdam):
    ds = PreparedDataset(prepared_potsdam, "train")
    assert len(ds) == 9 and ds.classes == list(POTSDAM.classes) and ds.info is POTSDAM
    assert PreparedDataset(prepared_potsdam, "test").splits == ["test", "train"]
    sample = ds[4]
    assert sample["image"].shape == (3, 64, 64) and sample["image"].dtype == torch.float32
    assert 0.0 <= sample["image"].min() and sample["image"].max() <= 1.0
    assert sample["mask"].shape == (64, 64) and sample["mask"].dtype == torch.int64
    assert sample["meta"] == {"tile": "2_10", "offset": (100, 100)}
    assert set(sample["mask"].unique().tolist()) <= set(range(6))


def test_uint8_fast_path_and_transform(prepared_potsdam):
    fast = PreparedDataset(prepared_potsdam, "test", as_uint8=True)
    slow = PreparedDataset(prepared_potsdam, "test", transform=lambda s: {**s, "extra": 1})
    a, b = fast[2], slow[2]
    assert a["image"].dtype == torch.uint8 and a["mask"].dtype == torch.uint8
    assert torch.equal(a["image"].float() / 255, b["image"]) and torch.equal(a["mask"].long(), b["mask"])
    assert b["extra"] == 1
    image, mask = fast.read_uint8(2)
    assert torch.equal(image, a["image"]) and image.is_contiguous()
    assert (b["mask"] == 255).any()  # test crops carry the eroded boundaries


def test_missing_or_garbled_folder(prepared_potsdam, tmp_path):
    with pytest.raises(CtsegError, match="does not exist"):
        PreparedDataset(tmp_path / "nope")
    with pytest.raises(CtsegError, match="no manifest.json"):
        PreparedDataset(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(CtsegError, match="unreadable"):
        PreparedDataset(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "ctseg-prepared", "version": 1, "crops": []}))
    with pytest.raises(CtsegError, match="garbled"):
        PreparedDataset(tmp_path)
    with pytest.raises(CtsegError, match=r"no crops in split 'val' .*test, train"):
        PreparedDataset(prepared_potsdam, "val")


def test_missing_crop_file(prepared_potsdam, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(prepared_potsdam, root)
    ds = PreparedDataset(root, "train")
    (root / ds.records[0]["image"]).unlink()
    with pytest.raises(CtsegError, match=r"images/2_10_r00000_c00000\.tif is missing"):
        ds[0]


@pytest.mark.parametrize("name", ["/etc/passwd", "../outside.png", "train/../../outside.png", "C:/x.png"])
def test_a_manifest_names_only_its_own_files(prepared_potsdam, tmp_path, name):
    """A handed prepared folder: a crop path outside the folder is refused before any crop is opened."""
    manifest = json.loads((prepared_potsdam / "manifest.json").read_text())
    manifest["crops"][0]["image"] = name
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CtsegError, match="not inside the prepared folder"):
        PreparedDataset(tmp_path)
