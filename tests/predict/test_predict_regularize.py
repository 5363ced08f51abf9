"""``ctseg predict --vector … --regularize``: the polygons are those of ``ctseg vectorize --regularize`` on the
written class map; the flags without ``--vector`` are one line before anything is read."""

from __future__ import annotations

import numpy as np
import pyogrio.raw
import pytest
import shapely
from predict.test_predict_stream import RGB, geotiff, save_checkpoint

from ctseg.cli.entry import main
from ctseg.vectorize.polygons import vectorize_raster


def _predict(ckpt, src, out, *extra: str) -> int:
    return main(["predict", "--ckpt", str(ckpt), str(src), "--out", str(out), "--device", "cpu", *extra])


def _geoms(path) -> list:
    return list(shapely.from_wkb(pyogrio.raw.read(path)[2]))


def test_predict_regularizes_the_vector_polygons(tmp_path, capsys):
    ckpt = save_checkpoint(tmp_path / "m.ckpt", RGB)
    rows, cols = np.indices((96, 128))
    data = np.stack([((rows // 24 + cols // 32) % 2 * 200).astype(np.uint8)] * 3)  # blocks of two kinds
    src = geotiff(tmp_path / "t.tif", data)
    out = tmp_path / "out"
    argv = ["--window", "64", "--no-color", "--vector", ".gpkg", "--vector-classes", "0,1,2,3", "--regularize",
            "--regularize-tolerance", "0.5"]  # fmt: skip
    assert _predict(ckpt, src, out, *argv) == 0
    got = _geoms(out / "t.gpkg")
    ref = vectorize_raster(out / "t_pred.tif", tmp_path / "ref.gpkg", "0,1,2,3", regularize=True,
                           regularize_tolerance=0.5)  # fmt: skip
    want = _geoms(ref)
    assert len(got) == len(want) > 0 and all(shapely.equals_exact(a, b, 0) for a, b in zip(got, want, strict=True))
    capsys.readouterr()
    for extra in (["--regularize"], ["--regularize-tolerance", "1"]):
        assert _predict(ckpt, src, tmp_path / "o2", *extra) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "--vector" in err, err
    assert not (tmp_path / "o2").exists()


@pytest.mark.parametrize("value", ["0", "nan"])
def test_a_bad_tolerance_is_refused_before_predicting(tmp_path, capsys, value):
    src = geotiff(tmp_path / "t.tif", np.zeros((3, 64, 64), np.uint8))
    argv = ["--vector", ".gpkg", "--vector-classes", "1", "--regularize", "--regularize-tolerance", value]
    assert _predict(tmp_path / "missing.ckpt", src, tmp_path / "o", *argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--regularize-tolerance" in err, err
