"""Files written by ctseg before the issue-29 package move still predict, export and resume with today's code.

``premove/`` holds a checkpoint (``ctseg fit``, optimizer state kept) and its ``ctseg export``, both written by the
code at commit 45d22a6 — ``premove/make.sh`` re-makes them. The checkpoint pickles the task's class path
(``ctseg.training.SegmentationTask``), the data module's hyper-parameters and the callbacks' state under the names
of that time; its weights are a UNetFormer over timm's ``test_efficientnet`` so the files stay small.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from ctseg.cli.entry import main

PREMOVE = Path(__file__).parent / "premove"
CKPT = PREMOVE / "premove.ckpt"
EXPORT = PREMOVE / "premove.safetensors"


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    """A 3-band 96 × 80 uint8 GeoTIFF in EPSG:32640 (random texture: every window gets a varied input)."""
    path = tmp_path_factory.mktemp("premove") / "scene.tif"
    pixels = np.random.default_rng(0).integers(0, 256, (3, 80, 96), dtype=np.uint8)
    profile = dict(driver="GTiff", width=96, height=80, count=3, dtype="uint8", crs="EPSG:32640",
                   transform=from_origin(300000, 2700000, 0.5, 0.5))  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(pixels)
    return path


def _class_map(out: Path) -> np.ndarray:
    with rasterio.open(out / "scene_pred.tif") as src:
        return src.read(1)


def test_premove_checkpoint_and_export_predict_the_same_map(scene, tmp_path):
    for name, model in (("ckpt", CKPT), ("export", EXPORT)):
        argv = ["predict", str(scene), "--ckpt", str(model), "--out", str(tmp_path / name), "--window", "32"]
        assert main([*argv, "--no-color"]) == 0
    from_ckpt, from_export = _class_map(tmp_path / "ckpt"), _class_map(tmp_path / "export")
    assert from_ckpt.shape == (80, 96)
    assert set(np.unique(from_ckpt)) <= set(range(6))
    np.testing.assert_array_equal(from_ckpt, from_export)


def test_premove_checkpoint_exports_byte_identically(tmp_path):
    out = tmp_path / "today.safetensors"
    assert main(["export", str(CKPT), str(out)]) == 0
    assert out.read_bytes() == EXPORT.read_bytes()


def test_premove_checkpoint_resumes(tmp_path):
    root = tmp_path / "resumed"
    argv = ["fit", "--config", str(PREMOVE / "config.yaml"), "--ckpt_path", str(CKPT),
            "--trainer.max_steps", "3", "--trainer.default_root_dir", str(root)]  # fmt: skip
    assert main(argv) == 0
    last = torch.load(next(root.rglob("last.ckpt")), map_location="cpu", weights_only=False)
    assert last["global_step"] == 3  # went on from the old checkpoint's step 2, one step more
    old = torch.load(CKPT, map_location="cpu", weights_only=False)
    assert old["global_step"] == 2
    moved = [k for k in old["state_dict"] if not torch.equal(old["state_dict"][k], last["state_dict"][k])]
    assert moved, "the resumed step changed no weight"
    assert set(last["state_dict"]) == set(old["state_dict"])
