"""``ctseg vectorize --workers`` (issue 33): blocks polygonised in worker processes give the very same file as
the calling process alone — geometries byte for byte (WKB), every attribute, the order — on a map whose regions
cross many blocks (and block rows), with pinched corners, three classes, confidence and entropy statistics; an
error in a worker is the same one line; the workers are plain interpreters, so a script without a
``__main__`` guard works; the worker count is checked."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pyogrio.raw
import pytest
import rasterio
from rasterio.transform import from_origin

from ctseg.cli.entry import main
from ctseg.errors import CtsegError
from ctseg.vectorize import workers as workers_mod
from ctseg.vectorize.polygons import vectorize_raster
from ctseg.vectorize.workers import MIN_BLOCKS, BlockPool, resolve_workers

SIZE = (230, 170)  # rows, columns: 8 × 6 blocks of 32 (ragged last ones)
BLOCK = 32


def _write(path, data, nodata=None):
    transform = from_origin(500_000.0, 4_650_000.0, 0.5, 0.5)
    profile = {"driver": "GTiff", "height": data.shape[0], "width": data.shape[1], "count": 1, "dtype": data.dtype,
               "crs": "EPSG:32633", "transform": transform, "nodata": nodata}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
    return path


@pytest.fixture(scope="module")
def rasters(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("workers")
    rng = np.random.default_rng(7)
    coarse = rng.integers(0, 3, (SIZE[0] // 10 + 1, SIZE[1] // 10 + 1), dtype=np.uint8)
    classes = np.kron(coarse, np.ones((10, 10), np.uint8))[: SIZE[0], : SIZE[1]]
    noise = rng.random(SIZE) < 0.03  # single pixels: diagonal pinches and holes
    classes[noise] = rng.integers(0, 3, int(noise.sum()), dtype=np.uint8)
    classes[5:225, 40:44] = 1  # a strip through every block row
    conf = rng.integers(1, 256, SIZE, dtype=np.uint8)
    conf[rng.random(SIZE) < 0.01] = 0  # nodata
    ent = rng.random(SIZE).astype(np.float32)
    ent[rng.random(SIZE) < 0.01] = np.nan
    return _write(tmp / "m_pred.tif", classes), _write(tmp / "m_conf.tif", conf, 0), _write(tmp / "m_ent.tif", ent)


def _read(path):
    meta, _, geometry, values = pyogrio.raw.read(path)
    return list(geometry), dict(zip(meta["fields"], values, strict=True))


def test_workers_write_the_same_file(rasters, tmp_path):
    pred, conf, ent = rasters
    outs = {}
    for n in (0, 2, 3):
        outs[n] = vectorize_raster(pred, tmp_path / f"w{n}.gpkg", "1,2,0", confidence_tif=conf, entropy_tif=ent,
                                   block_size=BLOCK, workers=n)  # fmt: skip
    geoms0, fields0 = _read(outs[0])
    assert len(geoms0) > 100 and set(fields0["class_index"]) == {0, 1, 2}
    assert np.isfinite(fields0["mean_entropy"]).any() and np.isfinite(fields0["min_confidence"]).any()
    for n in (2, 3):
        geoms, fields = _read(outs[n])
        assert geoms == geoms0  # WKB, byte for byte, in the same order
        assert fields.keys() == fields0.keys()
        for name, values in fields0.items():
            np.testing.assert_array_equal(fields[name], values)
    # the strip crossing every block row is one polygon
    strip = fields0["area"][fields0["class_index"] == 1].max()
    assert strip >= 220 * 4 * 0.25


def test_a_worker_error_is_the_same_line(rasters, tmp_path, capfd):
    pred, _, _ = rasters
    ent = np.zeros(SIZE, np.float32)
    ent[200, 150] = 3.0  # outside [0, 1], in the last block row
    bad = _write(tmp_path / "bad_ent.tif", ent)
    lines = []
    for n in (0, 2):
        with pytest.raises(CtsegError) as err:
            vectorize_raster(pred, tmp_path / f"e{n}.gpkg", [1], entropy_tif=bad, block_size=BLOCK, workers=n)
        lines.append(str(err.value))
        assert not (tmp_path / f"e{n}.gpkg").exists()
    assert lines[0] == lines[1] and "row 200, column 150" in lines[0] and "\n" not in lines[0]
    assert "Traceback" not in capfd.readouterr().err  # the workers ended quietly


def test_workers_keep_the_callers_vrt_policy(rasters, tmp_path):
    """A class map as a VRT naming a file outside its folder: refused by default, read by the workers too when
    the caller allows it (``--allow-outside``)."""
    from ctseg.safety.rasters import allowing

    pred, _, _ = rasters
    with rasterio.open(pred) as src:
        height, width = src.height, src.width
    (tmp_path / "vrt").mkdir()
    vrt = tmp_path / "vrt" / "m.vrt"
    vrt.write_text(
        f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}"><VRTRasterBand dataType="Byte" band="1">'
        f'<SimpleSource><SourceFilename relativeToVRT="0">{pred}</SourceFilename><SourceBand>1</SourceBand>'
        "</SimpleSource></VRTRasterBand></VRTDataset>"
    )
    with pytest.raises(CtsegError, match="outside"):
        vectorize_raster(vrt, tmp_path / "no.gpkg", [1], block_size=BLOCK, workers=2)
    with allowing(outside=True):
        vectorize_raster(vrt, tmp_path / "v2.gpkg", [1], block_size=BLOCK, workers=2)
        vectorize_raster(vrt, tmp_path / "v0.gpkg", [1], block_size=BLOCK, workers=0)
    assert _read(tmp_path / "v2.gpkg")[0] == _read(tmp_path / "v0.gpkg")[0] != []


def test_pool_ends_its_workers(rasters):
    pred, _, _ = rasters
    pool = BlockPool(pred, None, None, [1], 2)
    procs = list(pool._procs)
    with pool:
        parts = list(pool.map([(0, 0, 32, 32), (32, 0, 32, 32), (64, 0, 32, 32)]))
    assert len(parts) == 3 and all(p.returncode == 0 for p in procs)


def test_a_script_without_main_guard(rasters, tmp_path):
    pred, _, _ = rasters
    script = tmp_path / "plain.py"
    script.write_text(
        textwrap.dedent(f"""
        from ctseg.vectorize.polygons import vectorize_raster
        vectorize_raster({str(pred)!r}, {str(tmp_path / "s.gpkg")!r}, [1], block_size={BLOCK}, workers=2)
        print("done")
    """)
    )
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["done"]
    assert _read(tmp_path / "s.gpkg")[0]


def test_worker_count(monkeypatch):
    monkeypatch.setattr(workers_mod.os, "sched_getaffinity", lambda _: {0, 1, 2}, raising=False)
    assert resolve_workers(None, MIN_BLOCKS - 1) == 1  # small rasters: no workers by default
    assert resolve_workers(None, 100) == 3
    assert resolve_workers(2, 1) == 1 and resolve_workers(0, 100) == 1 and resolve_workers(5, 100) == 5
    for bad in (-1, True, 1.5):
        with pytest.raises(CtsegError, match="--workers"):
            resolve_workers(bad, 100)


def test_cli_refuses_a_negative_worker_count(rasters, tmp_path, capsys):
    pred, _, _ = rasters
    code = main(["vectorize", str(pred), "--classes", "1", "--out", str(tmp_path / "x.gpkg"), "--workers", "-1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("ctseg: error: --workers -1")
    assert not (tmp_path / "x.gpkg").exists()
