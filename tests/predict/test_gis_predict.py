"""``ctseg predict``'s GIS-friendly outputs end to end: the files per input, the class names GDAL reads, the legend
beside (not over) the transparent colour PNG, ``--overlay``, and inputs without georeference written upright —
one warning for the run, class map / probabilities / confidence / polygons in the frame a GIS draws them in."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import rasterio
from helpers.gdal_pam import read_categories
from PIL import Image
from rasterio.crs import CRS
from test_predict_stream import RGB, TRANSFORM, geotiff, save_checkpoint

from ctseg.cli.entry import main
from ctseg.evaluation.files import find_pairs
from ctseg.predict.overlay import OVERLAY_ALPHA

UPRIGHT = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("gis-model") / "rgb.ckpt", RGB)


def _rgb(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 256, (3, h, w), dtype=np.uint8)


def _predict(ckpt: Path, inputs, out: Path, *extra: str) -> int:
    argv = ["predict", "--ckpt", str(ckpt), *map(str, inputs), "--out", str(out), "--device", "cpu", "--window", "64"]
    return main([*argv, *extra])


def _png(path: Path, h: int, w: int, seed: int) -> Path:
    Image.fromarray(_rgb(h, w, seed).transpose(1, 2, 0)).save(path)
    return path


def _coords(geojson: Path) -> np.ndarray:
    features = json.loads(geojson.read_text())["features"]
    assert features
    return np.concatenate([np.asarray(ring) for f in features for ring in f["geometry"]["coordinates"]])


def test_images_without_georeference_warn_once_and_come_out_upright(ckpt, tmp_path, capsys):
    a, b = _png(tmp_path / "a.png", 70, 50, 1), _png(tmp_path / "b.png", 40, 64, 2)
    out = tmp_path / "out"
    assert _predict(ckpt, [a, b], out, "--confidence", "--probs", "uint8") == 0
    err = capsys.readouterr().err
    warned = [line for line in err.splitlines() if "georeference" in line]
    assert len(warned) == 1 and warned[0].startswith("ctseg: warning: 2 inputs with no georeference"), err
    assert str(a) in warned[0] and str(b) in warned[0] and "y = -r" in warned[0]
    kinds = ("_pred.tif", "_pred.tif.aux.xml", "_pred.qml", "_pred.png", "_legend.png", "_probs.tif", "_conf.tif")
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{s}{k}" for s in "ab" for k in kinds)
    for kind in ("_pred.tif", "_probs.tif", "_conf.tif"):
        with rasterio.open(out / f"a{kind}") as src:
            assert src.crs is None and tuple(src.transform)[:6] == UPRIGHT, kind
            assert src.bounds == (0.0, -70.0, 50.0, 0.0)
    # ctseg vectorize on such a class map: polygons in the same frame (x in [0, width], y in [-height, 0])
    polys = tmp_path / "a.geojson"
    assert main(["vectorize", str(out / "a_pred.tif"), "--classes", "0,1,2,3", "--out", str(polys)]) == 0
    xy = _coords(polys)
    assert (xy[:, 0] >= 0).all() and (xy[:, 0] <= 50).all() and (xy[:, 1] <= 0).all() and (xy[:, 1] >= -70).all()
    notes = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(notes) == 1 and "is not georeferenced" in notes[0] and "in pixels" in notes[0], notes


def test_predict_vector_of_an_image_without_georeference_lies_on_its_class_map(ckpt, tmp_path, capsys):
    a = _png(tmp_path / "a.png", 64, 48, 3)
    out = tmp_path / "out"
    assert _predict(ckpt, [a], out, "--vector", ".geojson", "--vector-classes", "0,1,2,3", "--no-color") == 0
    xy = _coords(out / "a.geojson")
    assert (xy[:, 1] <= 0).all() and (xy[:, 1] >= -64).all() and (xy[:, 0] >= 0).all() and (xy[:, 0] <= 48).all()
    with rasterio.open(out / "a_pred.tif") as src:
        classes = src.read(1)
    # the polygons' area per class is the class map's pixel count (one pixel = 1 unit²)
    features = json.loads((out / "a.geojson").read_text())["features"]
    for index in range(4):
        area = sum(f["properties"]["area"] for f in features if f["properties"]["class_index"] == index)
        assert area == pytest.approx((classes == index).sum())
    lines = capsys.readouterr().err.splitlines()
    assert sum("with no georeference" in line for line in lines) == 1  # predict's, for the run
    assert sum("a_pred.tif is not georeferenced" in line for line in lines) == 1  # vectorize's: areas in pixels


def test_a_georeferenced_input_with_nodata_gets_every_gis_output(ckpt, tmp_path, capsys):
    data = _rgb(96, 80, 4)
    data[:, :20, :30] = 0  # nodata 0
    src = geotiff(tmp_path / "scene.tif", data, nodata=0)
    out = tmp_path / "out"
    assert _predict(ckpt, [src], out, "--overlay") == 0
    err = capsys.readouterr().err
    assert "georeference" not in err and "warning" not in err
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"scene{k}" for k in ("_pred.tif", "_pred.tif.aux.xml", "_pred.qml", "_pred.png", "_legend.png", "_overlay.png")
    )
    with rasterio.open(out / "scene_pred.tif") as pred:
        assert pred.crs == CRS.from_epsg(32632) and pred.transform.almost_equals(TRANSFORM)
        classes = pred.read(1)
    nodata = (data == 0).all(0)
    assert (classes[nodata] == 255).all() and (classes[~nodata] < 4).all()
    # the class names as GDAL reads them (category names and attribute table), and the QGIS style
    found = read_categories(out / "scene_pred.tif")
    if found is not None:
        assert found["names"][:4] == list(RGB.classes) and found["names"][255] == "nodata"
        assert [row[:2] for row in found["rows"]] == [[str(i), n] for i, n in enumerate(RGB.classes)] + [
            ["255", "nodata"]
        ]
    style = ET.parse(out / "scene_pred.qml").getroot()
    entries = {e.get("value"): e for e in style.iter("paletteEntry")}
    assert sorted(entries, key=int) == ["0", "1", "2", "3", "255"]
    for i, (name, colour) in enumerate(zip(RGB.classes, RGB.colors, strict=True)):
        assert entries[str(i)].get("label") == name and entries[str(i)].get("color") == "#{:02x}{:02x}{:02x}".format(
            *colour
        )
    assert entries["255"].get("alpha") == "0"
    # the colour PNG: the class map pixel for pixel (no legend drawn over it), transparent at nodata
    png = np.asarray(Image.open(out / "scene_pred.png").convert("RGBA"))
    assert png.shape[:2] == classes.shape
    np.testing.assert_array_equal(png[..., 3], np.where(nodata, 0, 255))
    np.testing.assert_array_equal(png[~nodata][:, :3], RGB.palette()[classes[~nodata]])
    # the legend beside it: a swatch of every class colour, and the checkered nodata swatch
    legend = np.asarray(Image.open(out / "scene_legend.png").convert("RGB"))
    for colour in RGB.colors:
        assert (legend == np.asarray(colour, np.uint8)).all(-1).sum() >= 100
    assert (legend == 204).all(-1).any()
    # the overlay: image and class colours blended half and half, nodata transparent
    overlay = np.asarray(Image.open(out / "scene_overlay.png"))
    assert overlay.shape == (96, 80, 4)
    image = np.moveaxis(data, 0, -1).astype(np.float64)
    expect = np.rint((1 - OVERLAY_ALPHA) * image + OVERLAY_ALPHA * RGB.palette()[classes].astype(np.float64))
    np.testing.assert_array_equal(overlay[~nodata][:, :3], expect[~nodata])
    np.testing.assert_array_equal(overlay[..., 3], np.where(nodata, 0, 255))


def test_overlay_follows_the_png_limit_and_the_format(ckpt, tmp_path, capsys):
    src = geotiff(tmp_path / "t.tif", _rgb(120, 200, 5))
    out = tmp_path / "out"
    assert _predict(ckpt, [src], out, "--overlay", "--png-max-mpx", "0.01") == 0
    assert "no colour PNG / overlay above --png-max-mpx 0.01" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["t_pred.qml", "t_pred.tif", "t_pred.tif.aux.xml"]
    assert _predict(ckpt, [src], tmp_path / "idx", "--overlay", "--format", "index-png") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ctseg: error: --overlay needs --format geotiff") and len(err.splitlines()) == 1
    assert not (tmp_path / "idx").exists()
    assert _predict(ckpt, [src], tmp_path / "plain", "--overlay", "--no-color") == 0
    assert sorted(p.name for p in (tmp_path / "plain").iterdir()) == [
        "t_overlay.png", "t_pred.qml", "t_pred.tif", "t_pred.tif.aux.xml"
    ]  # fmt: skip


def test_evaluate_pairs_a_predict_folder_with_its_legend_and_overlay(tmp_path):
    preds, truth = tmp_path / "pred", tmp_path / "truth"
    preds.mkdir()
    truth.mkdir()
    for name in ("s_pred.tif", "s_pred.png", "s_legend.png", "s_overlay.png", "s_pred.qml", "s_pred.tif.aux.xml"):
        (preds / name).write_bytes(b"")
    (truth / "s.png").write_bytes(b"")
    assert find_pairs(preds, truth) == [("s", preds / "s_pred.tif", truth / "s.png")]
