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


# ------------------------------------------------------------------------------------------------ TTA variance
def _conv_model(seed: int, k: int = 4) -> torch.nn.Module:
    """A 3×3 convolution: not flip-symmetric, so the TTA passes disagree."""
    torch.manual_seed(seed)
    model = torch.nn.Conv2d(3, k, 3, padding=1)
    with torch.no_grad():
        model.weight.mul_(8.0)
    return model.eval()


def _variance_run(model, image: np.ndarray, **kw):
    from ctseg.inference.rows import ArrayRows, predict_rows

    probs, variance = [], []
    predict_rows(
        model, ArrayRows(image), lambda top, p, m: probs.append(p.clone()),
        on_variance=lambda top, v: variance.append(v.clone()), device="cpu", mean=(0.5,) * 3, std=(0.25,) * 3,
        batch_size=3, **kw,
    )  # fmt: skip
    return torch.cat(probs, 1), torch.cat(variance, 0)


def test_tta_variance_of_one_window_is_the_hand_computation():
    model = _conv_model(0)
    image = np.random.default_rng(1).integers(0, 256, (3, 64, 64), dtype=np.uint8)
    probs, variance = _variance_run(model, image, window=64, tta=True)
    x = (torch.from_numpy(image).float()[None] / 255 - 0.5) / 0.25
    with torch.no_grad():
        passes = [model(x)[0].softmax(0), model(x.flip(-1))[0].softmax(0).flip(-1),
                  model(x.flip(-2))[0].softmax(0).flip(-2)]  # fmt: skip
    mean = sum(passes) / 3
    hand = sum(((p - mean) ** 2).sum(0) for p in passes) / 3
    torch.testing.assert_close(probs, mean, atol=1e-6, rtol=0)
    torch.testing.assert_close(variance, hand, atol=1e-6, rtol=0)
    assert variance.max() > 1e-3 and variance.min() >= 0 and variance.max() <= 2 / 3


def test_tta_variance_leaves_the_probabilities_and_is_blended_like_them():
    from ctseg.inference.blend import blend_weights, window_positions
    from ctseg.inference.rows import ArrayRows, predict_rows

    model = _conv_model(2)
    image = np.random.default_rng(3).integers(0, 256, (3, 80, 112), dtype=np.uint8)
    probs, variance = _variance_run(model, image, window=64, overlap=0.5, tta=True)
    plain = []
    predict_rows(model, ArrayRows(image), lambda top, p, m: plain.append(p.clone()), device="cpu",
                 mean=(0.5,) * 3, std=(0.25,) * 3, window=64, overlap=0.5, tta=True)  # fmt: skip
    assert torch.equal(probs, torch.cat(plain, 1))  # the K probability channels are unchanged by it
    # hand blend: each window's own TTA variance, weighted by the separable Hann weights
    x = (torch.from_numpy(image).float()[None] / 255 - 0.5) / 0.25
    ys, xs = window_positions(80, 64, 0.5), window_positions(112, 64, 0.5)
    wy, wx = blend_weights(80, 64, ys), blend_weights(112, 64, xs)
    hand = torch.zeros(80, 112)
    for i, y in enumerate(ys):
        for j, x0 in enumerate(xs):
            win = x[..., y : y + 64, x0 : x0 + 64]
            with torch.no_grad():
                passes = [model(win)[0].softmax(0), model(win.flip(-1))[0].softmax(0).flip(-1),
                          model(win.flip(-2))[0].softmax(0).flip(-2)]  # fmt: skip
            mean = sum(passes) / 3
            v = sum(((p - mean) ** 2).sum(0) for p in passes) / 3
            hand[y : y + 64, x0 : x0 + 64] += v * torch.from_numpy(wy[i][:, None] * wx[j][None, :])
    torch.testing.assert_close(variance, hand, atol=1e-5, rtol=0)


def test_predict_tile_returns_the_same_variance():
    """The in-memory :func:`predict_tile` gives the streamed path's TTA variance, its class map and probabilities
    unchanged by asking for it."""
    from ctseg.errors import CtsegError
    from ctseg.inference.tile import predict_tile

    model = _conv_model(4)
    image = np.random.default_rng(6).integers(0, 256, (3, 80, 112), dtype=np.uint8)
    probs, variance = _variance_run(model, image, window=64, overlap=0.5, tta=True)
    kw = {"window": 64, "overlap": 0.5, "tta": True, "device": "cpu", "mean": (0.5,) * 3, "std": (0.25,) * 3,
          "batch_size": 3}  # fmt: skip
    classes, tile_probs, tile_variance = predict_tile(model, image, return_probs=True, return_variance=True, **kw)
    only_classes, only_variance = predict_tile(model, image, return_variance=True, **kw)
    assert tile_variance.shape == (80, 112) and tile_variance.dtype == np.float32
    np.testing.assert_array_equal(tile_variance, variance.numpy())
    np.testing.assert_array_equal(only_variance, tile_variance)
    np.testing.assert_array_equal(tile_probs, probs.numpy().astype(np.float16))
    plain = predict_tile(model, image, **kw)
    np.testing.assert_array_equal(classes, plain)
    np.testing.assert_array_equal(only_classes, plain)
    with pytest.raises(CtsegError, match="return_variance needs TTA"):
        predict_tile(model, image, return_variance=True, **{**kw, "tta": False})


def test_tta_variance_needs_tta():
    from ctseg.errors import CtsegError

    with pytest.raises(CtsegError, match="needs TTA"):
        _variance_run(_conv_model(0), np.zeros((3, 64, 64), np.uint8), window=64)


def test_predict_tta_uncertainty_writes_the_variance_band(run, tmp_path):
    src = tmp_path / "scene.tif"
    data = np.random.default_rng(5).integers(1, 256, (3, 96, 128), dtype=np.uint8)
    data[:, :10, :30] = 0
    profile = {"driver": "GTiff", "height": 96, "width": 128, "count": 3, "dtype": "uint8", "crs": "EPSG:32632",
               "transform": TRANSFORM, "nodata": 0}  # fmt: skip
    with rasterio.open(src, "w", **profile) as dst:
        dst.write(data)
    ckpt = next(run[0].parent.glob("m.ckpt"))
    argv = ["predict", "--ckpt", str(ckpt), str(src), "--out", str(tmp_path / "out"), "--device", "cpu",
            "--window", "64", "--tta", "--uncertainty", "--no-color"]  # fmt: skip
    assert main(argv) == 0
    with rasterio.open(tmp_path / "out" / "scene_entropy.tif") as ent:
        assert ent.count == 2 and ent.descriptions == ("entropy", "tta_variance")
        assert "CTSEG_TTA_VARIANCE" in ent.tags() and ent.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        v = ent.read(2)
        assert ent.overviews(2) == ent.overviews(1)
    nodata = (data == 0).all(0)
    assert np.isnan(v[nodata]).all() and np.isfinite(v[~nodata]).all()
    assert (v[~nodata] >= 0).all() and (v[~nodata] <= 2 / 3).all() and v[~nodata].max() > 0
