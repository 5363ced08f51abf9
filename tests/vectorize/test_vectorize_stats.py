"""Per-polygon statistics (issue 32): ``min_confidence`` with ``mean_confidence``, and ``mean_entropy`` from
``ctseg predict --uncertainty``'s entropy raster — against hand-computed values on a small raster whose polygons
cross block borders (4-pixel blocks), with NaN / nodata pixels left out; the same-grid refusal; the CLI flag;
``ctseg predict --vector --uncertainty --confidence``."""

from __future__ import annotations

import json
import math

import numpy as np
import pyogrio.raw
import pytest
import rasterio
from predict.test_predict_stream import RGB, geotiff, save_checkpoint
from rasterio.transform import from_origin

from ctseg.cli.entry import main
from ctseg.errors import CtsegError
from ctseg.vectorize.polygons import CLASSES_TAG, vectorize_raster

TRANSFORM = from_origin(500_000.0, 4_650_000.0, 1.0, 1.0)
# a 12 × 10 class map: "L" (class 1) over four 4-pixel blocks, a square (class 1) inside one block, class 2 strip
CLASSES = np.zeros((12, 10), np.uint8)
CLASSES[1:9, 2:5] = 1  # the L's stem: rows 1-8, columns 2-4 (crosses rows 4 and 8, column 4)
CLASSES[6:9, 5:9] = 1  # its foot: rows 6-8, columns 5-8
CLASSES[9:11, 0:2] = 1  # a square away from the L (rows 9-10, columns 0-1; block rows 8-11, columns 0-3)
CLASSES[11, :] = 2
L_MASK = np.zeros_like(CLASSES, bool)
L_MASK[1:9, 2:5] = True
L_MASK[6:9, 5:9] = True
SQUARE = np.zeros_like(CLASSES, bool)
SQUARE[9:11, 0:2] = True


def _write(path, data, *, nodata=None, names=("background", "building", "road")):
    profile = {"driver": "GTiff", "height": data.shape[0], "width": data.shape[1], "count": 1, "dtype": data.dtype,
               "crs": "EPSG:32633", "transform": TRANSFORM, "nodata": nodata}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
        if names:
            dst.update_tags(**{CLASSES_TAG: json.dumps(list(names))})
    return path


def _confidence() -> np.ndarray:
    rows, cols = np.indices(CLASSES.shape)
    conf = ((rows * 37 + cols * 11) % 250 + 3).astype(np.uint8)
    conf[3, 3] = 1  # the L's lowest confidence, in its stem (block row 0)
    conf[7, 7] = 0  # nodata: left out (else it would be the L's minimum)
    return conf


def _entropy() -> np.ndarray:
    rows, cols = np.indices(CLASSES.shape)
    ent = ((rows * 5 + cols * 3) % 17 / 16.0).astype(np.float32)
    ent[2, 2] = np.nan  # nodata in the L
    ent[SQUARE] = np.nan  # the square has no valid entropy at all: NaN
    return ent


@pytest.fixture()
def rasters(tmp_path):
    return (
        _write(tmp_path / "s_pred.tif", CLASSES),
        _write(tmp_path / "s_conf.tif", _confidence(), nodata=0, names=None),
        _write(tmp_path / "s_entropy.tif", _entropy(), names=None),
    )


def _fields(path) -> dict[str, np.ndarray]:
    meta, _, _, values = pyogrio.raw.read(path)
    return dict(zip(meta["fields"], values, strict=True))


def _row(fields, area) -> int:
    hits = np.flatnonzero((fields["area"] == area) & (fields["class_index"] == 1))
    assert len(hits) == 1
    return int(hits[0])


@pytest.mark.parametrize("block", [4, 3, 64])
def test_min_and_mean_by_hand_across_blocks(rasters, tmp_path, block):
    pred, conf_tif, ent_tif = rasters
    out = vectorize_raster(pred, tmp_path / "v.gpkg", "building,road", confidence_tif=conf_tif,
                           entropy_tif=ent_tif, block_size=block)  # fmt: skip
    f = _fields(out)
    assert list(f) == ["class", "class_index", "area", "mean_confidence", "min_confidence", "mean_entropy"]
    conf, ent = _confidence().astype(np.float64), _entropy().astype(np.float64)
    i = _row(f, L_MASK.sum())
    valid = L_MASK & (conf != 0)
    assert f["min_confidence"][i] == 1 / 255 and valid.sum() == L_MASK.sum() - 1
    assert f["mean_confidence"][i] == pytest.approx(conf[valid].mean() / 255, rel=1e-12)
    ok = L_MASK & np.isfinite(ent)
    assert ok.sum() == L_MASK.sum() - 1
    assert f["mean_entropy"][i] == pytest.approx(ent[ok].mean(), rel=1e-12)
    j = _row(f, SQUARE.sum())
    assert f["min_confidence"][j] == conf[SQUARE].min() / 255 and math.isnan(f["mean_entropy"][j])
    road = int(np.flatnonzero(f["class_index"] == 2)[0])
    assert f["min_confidence"][road] == conf[11].min() / 255
    assert f["mean_entropy"][road] == pytest.approx(ent[11].mean(), rel=1e-12)


def test_only_what_is_given(rasters, tmp_path):
    pred, conf_tif, ent_tif = rasters
    assert list(_fields(vectorize_raster(pred, tmp_path / "e.gpkg", [1], entropy_tif=ent_tif))) == [
        "class", "class_index", "area", "mean_entropy"]  # fmt: skip
    assert "mean_entropy" not in _fields(vectorize_raster(pred, tmp_path / "c.gpkg", [1], confidence_tif=conf_tif))


def test_the_cli_flag(rasters, tmp_path, capsys):
    pred, conf_tif, ent_tif = rasters
    out = tmp_path / "cli.geojson"
    argv = ["vectorize", str(pred), "--classes", "building", "--out", str(out), "--confidence", str(conf_tif),
            "--entropy", str(ent_tif), "--block-size", "4"]  # fmt: skip
    assert main(argv) == 0
    f = _fields(out)
    assert f["min_confidence"][_row(f, L_MASK.sum())] == 1 / 255 and "mean_entropy" in f


def _one_line(capsys, *needles):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("ctseg: error:"), err
    for needle in needles:
        assert needle in err, err


def test_an_entropy_raster_off_the_grid_or_not_entropy_is_one_line(rasters, tmp_path, capsys):
    pred, _, _ = rasters
    out = tmp_path / "x.gpkg"
    cases = {
        "small.tif": (_write(tmp_path / "small.tif", _entropy()[:6], names=None), ("not on the grid", "10x6")),
        "ints.tif": (_write(tmp_path / "ints.tif", CLASSES, names=None), ("uint8", "float")),
        "high.tif": (_write(tmp_path / "high.tif", _entropy() * 2, names=None), ("outside [0, 1]",)),
        "gone.tif": (tmp_path / "gone.tif", ("does not exist", "--uncertainty")),
    }
    for name, (path, needles) in cases.items():
        argv = ["vectorize", str(pred), "--classes", "1", "--out", str(out), "--entropy", str(path)]
        assert main(argv) == 2, name
        _one_line(capsys, name, *needles)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    moved = _write(tmp_path / "moved.tif", _entropy(), names=None)
    with rasterio.open(moved, "r+") as dst:
        dst.transform = from_origin(500_010.0, 4_650_000.0, 1.0, 1.0)
    with pytest.raises(CtsegError, match="moved.tif .*not on the grid.*--uncertainty"):
        vectorize_raster(pred, out, [1], entropy_tif=moved)


def test_predict_vector_gets_the_entropy_and_confidence(tmp_path):
    ckpt = save_checkpoint(tmp_path / "m.ckpt", RGB)
    rows, cols = np.indices((96, 128))
    data = np.stack([((rows // 24 + cols // 32) % 2 * 200 + 20).astype(np.uint8)] * 3)
    src = geotiff(tmp_path / "t.tif", data)
    out = tmp_path / "out"
    argv = ["predict", "--ckpt", str(ckpt), str(src), "--out", str(out), "--device", "cpu", "--window", "64",
            "--no-color", "--uncertainty", "--confidence", "--vector", ".gpkg",
            "--vector-classes", "0,1,2,3"]  # fmt: skip
    assert main(argv) == 0
    got = _fields(out / "t.gpkg")
    conf = next(p for p in out.iterdir() if "conf" in p.name and p.suffix == ".tif")
    want = _fields(vectorize_raster(out / "t_pred.tif", tmp_path / "ref.gpkg", "0,1,2,3", confidence_tif=conf,
                                    entropy_tif=out / "t_entropy.tif"))  # fmt: skip
    assert {"mean_confidence", "min_confidence", "mean_entropy"} <= set(got) and len(got["area"]) > 0
    for field in ("area", "mean_confidence", "min_confidence", "mean_entropy"):
        assert np.array_equal(got[field], want[field], equal_nan=True), field
    assert np.all((got["mean_entropy"] >= 0) & (got["mean_entropy"] <= 1))
