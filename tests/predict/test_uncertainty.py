"""``ctseg predict --uncertainty`` / ``--uncertain-windows`` (issue 32): the entropy raster against a hand
computation from the probabilities of the same run, and the ranked cells against a brute-force ranking."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning
import numpy as np
import pyogrio.raw
import pytest
import rasterio
import shapely
import torch
from rasterio.transform import from_origin

from ctseg.cli.entry import main
from ctseg.data.definitions import DatasetInfo, generic_colors, info_to_json
from ctseg.inference.entropy import entropy_rows, normalised_entropy
from ctseg.training.task import SegmentationTask

INFO = DatasetInfo(name="rgb-unc", classes=("ground", "roof", "tree", "water"), colors=generic_colors(4))
TRANSFORM = from_origin(400_000.0, 5_000_000.0, 0.5, 0.5)
CELL = 64


def test_entropy_extremes_and_nodata():
    k = 5
    uniform = torch.full((k, 2, 3), 1.0 / k)
    onehot = torch.nn.functional.one_hot(torch.tensor([[0, 4, 2], [1, 3, 0]]), k).permute(2, 0, 1).float()
    np.testing.assert_allclose(normalised_entropy(uniform).numpy(), 1.0, atol=1e-6)
    assert (normalised_entropy(onehot).numpy() == 0).all()
    p = torch.tensor([0.5, 0.25, 0.25, 0.0, 0.0]).view(k, 1, 1)
    assert normalised_entropy(p).item() == pytest.approx(1.5 * math.log(2) / math.log(k), abs=1e-6)
    mask = np.array([[True, False, False], [False, False, True]])
    rows = entropy_rows(uniform, mask)
    assert np.isnan(rows[mask]).all() and np.allclose(rows[~mask], 1.0, atol=1e-3)


def _checkpoint(path: Path) -> Path:
    torch.manual_seed(3)
    task = SegmentationTask(
        model="pf-tiny", num_classes=INFO.num_classes, img_size=64, class_names=list(INFO.classes),
        dataset=INFO.name, in_chans=3, data_info=info_to_json(INFO),
    )  # fmt: skip
    ckpt = {"pytorch-lightning_version": lightning.__version__, "state_dict": task.state_dict()}
    torch.save({**ckpt, "hyper_parameters": dict(task.hparams)}, path)
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("uncertainty")
    data = np.random.default_rng(0).integers(1, 256, (3, 150, 210), dtype=np.uint8)
    data[:, :20, :40] = 0  # nodata
    data[:, 128:, 192:] = 0  # a whole (edge) cell of nodata: not ranked
    src = root / "scene.tif"
    profile = {"driver": "GTiff", "height": 150, "width": 210, "count": 3, "dtype": "uint8", "crs": "EPSG:32632",
               "transform": TRANSFORM, "nodata": 0}  # fmt: skip
    with rasterio.open(src, "w", **profile) as dst:
        dst.write(data)
    out = root / "out"
    argv = ["predict", "--ckpt", str(_checkpoint(root / "m.ckpt")), str(src), "--out", str(out), "--device", "cpu",
            "--window", "64", "--probs", "float16", "--uncertain-windows", "4", "--no-color"]  # fmt: skip
    assert main(argv) == 0
    return out, (data == 0).all(0)


def test_entropy_raster_equals_hand_computation(run):
    out, nodata = run
    assert {p.name for p in out.iterdir()} >= {"scene_entropy.tif", "scene_uncertain.gpkg"}
    with rasterio.open(out / "scene_probs.tif") as probs:
        p = probs.read().astype(np.float64)
    with rasterio.open(out / "scene_entropy.tif") as ent:
        assert ent.count == 1 and ent.tags(1, ns="IMAGE_STRUCTURE").get("NBITS") == "16"
        assert ent.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and "CTSEG_ENTROPY" in ent.tags()
        assert ent.crs == "EPSG:32632" and ent.transform.almost_equals(TRANSFORM)
        h = ent.read(1)
    assert np.isnan(h[nodata]).all() and np.isfinite(h[~nodata]).all()
    hand = -(p * np.log(np.clip(p, 1e-30, None))).sum(0) / math.log(4)
    assert np.abs(h[~nodata] - hand[~nodata]).max() < 3e-3  # float16 probabilities, float16 entropy
    assert (h[~nodata] >= 0).all() and (h[~nodata] <= 1).all()


def test_uncertain_windows_are_the_brute_force_top(run):
    out, _ = run
    with rasterio.open(out / "scene_entropy.tif") as ent:
        h = ent.read(1).astype(np.float64)
    with rasterio.open(out / "scene_pred.tif") as pred:
        classes = pred.read(1)
        assert json.loads(pred.tags()["CTSEG_CLASSES"]) == list(INFO.classes)
    means = {}
    for y in range(0, h.shape[0], CELL):
        for x in range(0, h.shape[1], CELL):
            cell = h[y : y + CELL, x : x + CELL]
            if np.isfinite(cell).any():
                means[(y, x)] = np.nanmean(cell)
    assert (128, 192) not in means
    meta, _, geoms, values = pyogrio.raw.read(out / "scene_uncertain.gpkg")
    fields = list(meta["fields"])
    assert fields == ["rank", "mean_entropy", *INFO.classes] and meta["crs"] == "EPSG:32632"
    col = dict(zip(fields, values, strict=True))
    assert list(col["rank"]) == [1, 2, 3, 4]
    np.testing.assert_allclose(col["mean_entropy"], sorted(means.values(), reverse=True)[:4], rtol=1e-12)
    inverse = ~TRANSFORM
    for i, geom in enumerate(shapely.from_wkb(geoms)):
        minx, miny, maxx, maxy = geom.bounds
        x0, y0 = (round(v) for v in inverse @ (minx, maxy))
        x1, y1 = (round(v) for v in inverse @ (maxx, miny))
        assert x0 % CELL == 0 and y0 % CELL == 0 and (x1 - x0, y1 - y0) == (
            min(CELL, h.shape[1] - x0), min(CELL, h.shape[0] - y0))  # fmt: skip
        assert col["mean_entropy"][i] == pytest.approx(means[(y0, x0)], rel=1e-12)
        cell = classes[y0:y1, x0:x1]
        valid = cell[cell != 255]
        for k, name in enumerate(INFO.classes):
            assert col[name][i] == pytest.approx(np.mean(valid == k))


@pytest.mark.parametrize(
    ("kw", "text"),
    [
        ({"uncertain_windows": 0}, "--uncertain-windows 0"),
        ({"uncertainty": True, "out_format": "index-png"}, "geotiff"),
    ],
)
def test_bad_uncertainty_settings_are_one_line(tmp_path, kw, text):
    from ctseg.errors import CtsegError
    from ctseg.predict.run import run_predict

    with pytest.raises(CtsegError, match=text):
        run_predict(tmp_path / "m.ckpt", [tmp_path / "a.tif"], tmp_path / "out", progress=False, **kw)
    assert not (tmp_path / "out").exists()
