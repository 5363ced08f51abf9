"""The GIS-friendly outputs' writers, file by file: the class map's PAM sidecar (as GDAL reads it) and QGIS style,
the colour PNG's transparency, the legend and the overlay, and the frame of outputs without georeference."""

from __future__ import annotations

import warnings
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import rasterio
from helpers.gdal_pam import read_categories
from PIL import Image
from rasterio.crs import CRS
from rasterio.transform import from_origin

from ctseg.data.definitions import DatasetInfo
from ctseg.inference.rows import ArrayRows
from ctseg.predict.gis import (
    GFT,
    GFU,
    aux_xml,
    georef_warning,
    output_georef,
    qml,
    sidecar_paths,
    upright_transform,
    write_class_sidecars,
)
from ctseg.predict.overlay import OVERLAY_ALPHA, overlay_rgba, write_overlay_png
from ctseg.predict.png import legend_image, write_color_png, write_legend_png
from ctseg.predict.write import class_map_writer

NAMES = ("road & <lane>", 'bâti "1"', "tree\x01")
INFO = DatasetInfo(name="t", classes=NAMES, colors=((10, 20, 30), (200, 100, 0), (0, 160, 60)))


def _class_map(tmp_path, nodata=255, transform=None):
    pred = np.zeros((40, 30), np.uint8)
    pred[10:20, 5:9], pred[25:, :] = 2, 1
    if nodata is not None:
        pred[:4] = nodata
    tif = tmp_path / "m_pred.tif"
    georef = {"crs": None, "transform": transform or upright_transform()}
    writer = class_map_writer(tif, INFO, 40, 30, georef, nodata)
    writer.write(0, pred)
    writer.finish()
    writer.commit()
    write_class_sidecars(*sidecar_paths(tif), INFO, nodata)
    return tif, pred


def _gdal(tif):
    found = read_categories(tif)
    if found is None:
        pytest.skip("no GDAL library to call")
    return found


def test_gdal_reads_the_category_names_and_attribute_table(tmp_path):
    tif, _ = _class_map(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m_pred.qml", "m_pred.tif", "m_pred.tif.aux.xml"]
    found = _gdal(tif)
    shown = ["road & <lane>", 'bâti "1"', "tree\ufffd"]  # a control character cannot be XML: U+FFFD
    assert found["names"][:3] == shown and found["names"][255] == "nodata" and len(found["names"]) == 256
    assert set(found["names"][3:255]) == {""}
    assert found["thematic"]
    assert found["columns"] == [
        ("Value", GFT["Integer"], GFU["MinMax"]), ("Class_Name", GFT["String"], GFU["Name"]),
        ("Red", GFT["Integer"], GFU["Red"]), ("Green", GFT["Integer"], GFU["Green"]),
        ("Blue", GFT["Integer"], GFU["Blue"]), ("Alpha", GFT["Integer"], GFU["Alpha"]),
    ]  # fmt: skip
    assert found["rows"] == [
        ["0", shown[0], "10", "20", "30", "255"], ["1", shown[1], "200", "100", "0", "255"],
        ["2", shown[2], "0", "160", "60", "255"], ["255", "nodata", "0", "0", "0", "0"],
    ]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the sidecar parses: no GDAL warning through rasterio either
        with rasterio.open(tif) as src:
            assert src.nodata == 255 and src.colormap(1)[2][:3] == (0, 160, 60)
            assert src.transform == upright_transform() and src.crs is None


def test_without_nodata_there_is_no_nodata_category(tmp_path):
    tif, _ = _class_map(tmp_path, nodata=None)
    found = _gdal(tif)
    assert len(found["names"]) == 3 and [r[0] for r in found["rows"]] == ["0", "1", "2"]
    root = ET.fromstring(aux_xml(INFO, None))
    assert [c.text for c in root.iter("Category")][0] == "road & <lane>"
    assert [e.get("value") for e in ET.fromstring(qml(INFO, None)).iter("paletteEntry")] == ["0", "1", "2"]


def test_the_aux_xml_is_gdals_pam_layout():
    root = ET.fromstring(aux_xml(INFO, 255))
    assert root.tag == "PAMDataset"
    (band,) = root
    assert band.tag == "PAMRasterBand" and band.get("band") == "1"
    assert [child.tag for child in band] == ["CategoryNames", "GDALRasterAttributeTable"]
    table = band.find("GDALRasterAttributeTable")
    assert table.get("tableType") == "thematic"
    assert [f.findtext("Name") for f in table.iter("FieldDefn")] == [
        "Value", "Class_Name", "Red", "Green", "Blue", "Alpha"
    ]  # fmt: skip
    assert [r.get("index") for r in table.iter("Row")] == ["0", "1", "2", "3"]
    assert b"&amp; &lt;lane&gt;" in aux_xml(INFO, 255)


def test_the_qgis_style_is_a_paletted_renderer_of_every_class():
    text = qml(INFO, 255)
    assert text.startswith(b"<!DOCTYPE qgis")
    root = ET.fromstring(text)
    assert root.tag == "qgis" and root.get("version", "").startswith("3.")
    renderer = root.find("pipe/rasterrenderer")
    assert renderer.get("type") == "paletted" and renderer.get("band") == "1"
    entries = [(e.get("value"), e.get("color"), e.get("alpha"), e.get("label")) for e in renderer.iter("paletteEntry")]
    assert entries == [
        ("0", "#0a141e", "255", "road & <lane>"), ("1", "#c86400", "255", 'bâti "1"'),
        ("2", "#00a03c", "255", "tree\ufffd"), ("255", "#000000", "0", "nodata"),
    ]  # fmt: skip


def test_colour_png_is_transparent_at_nodata(tmp_path):
    pred = np.array([[0, 1, 255], [2, 255, 0]], np.uint8)
    path = write_color_png(pred, INFO, tmp_path / "m_pred.png")
    img = Image.open(path)
    assert img.mode == "P"  # a palette PNG: the class indices, and a tRNS chunk
    np.testing.assert_array_equal(np.asarray(img), pred)
    rgba = np.asarray(img.convert("RGBA"))
    np.testing.assert_array_equal(rgba[..., 3], np.where(pred == 255, 0, 255))
    np.testing.assert_array_equal(rgba[0, 0, :3], INFO.colors[0])
    np.testing.assert_array_equal(rgba[1, 0, :3], INFO.colors[2])


def _swatch_rows(legend: np.ndarray, colour) -> np.ndarray:
    return np.flatnonzero((legend == np.asarray(colour, np.uint8)).all(axis=-1).any(axis=1))


def test_the_legend_shows_each_class_colour_and_name_in_order(tmp_path):
    path = write_legend_png(INFO, tmp_path / "m_legend.png", nodata=True)
    legend = np.asarray(Image.open(path).convert("RGB"))
    tops = [_swatch_rows(legend, c) for c in INFO.colors]
    assert all(len(rows) >= 10 for rows in tops)  # a swatch of each colour, one below the other
    assert tops[0].max() < tops[1].min() and tops[1].max() < tops[2].min()
    below = legend[tops[2].max() + 4 :]
    assert ((below == 204).all(axis=-1)).any()  # the checkered nodata swatch under the classes
    assert legend.shape[0] < 200 and legend.shape[1] < 400
    without = np.asarray(legend_image(INFO, nodata=False))
    assert without.shape[0] < legend.shape[0] and without.shape[1] <= legend.shape[1]
    # names are drawn: the text column (right of the swatches) holds dark pixels on every class row
    for rows in tops:
        assert (legend[rows.min() : rows.max() + 1, 40:] < 100).any()


def test_overlay_blends_uint8_images_as_they_are(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (4, 20, 16), dtype=np.uint8)
    pred = rng.integers(0, 3, (20, 16)).astype(np.uint8)
    pred[0] = 255
    rgba = overlay_rgba(ArrayRows(image), pred, INFO)
    colours = INFO.palette()[pred].astype(np.float64)
    expect = np.rint((1 - OVERLAY_ALPHA) * np.moveaxis(image[:3], 0, -1) + OVERLAY_ALPHA * colours)
    np.testing.assert_array_equal(rgba[1:, :, :3], expect[1:])
    assert (rgba[0] == 0).all() and (rgba[1:, :, 3] == 255).all()
    path = write_overlay_png(ArrayRows(image), pred, INFO, tmp_path / "m_overlay.png")
    np.testing.assert_array_equal(np.asarray(Image.open(path).convert("RGBA")), rgba)


def test_overlay_stretches_other_types_between_the_percentiles():
    image = np.broadcast_to(np.arange(1000, 1100, dtype=np.uint16), (1, 100, 100)).copy()  # one band: grey
    pred = np.zeros((100, 100), np.uint8)
    rgba = overlay_rgba(ArrayRows(image), pred, INFO, alpha=0.0)
    grey = rgba[0, :, 0].astype(int)
    assert (rgba[..., 0] == rgba[..., 1]).all() and (rgba[..., 1] == rgba[..., 2]).all()
    assert grey[:3].tolist() == [0, 0, 0] and grey[-3:].tolist() == [255, 255, 255]
    assert (np.diff(grey) >= 0).all() and 100 < grey[50] < 155


def test_outputs_of_an_image_without_georeference_are_upright():
    transform = upright_transform()
    assert (transform.a, transform.e, transform.c, transform.f) == (1.0, -1.0, 0.0, 0.0)
    assert output_georef({"crs": None, "transform": None, "nodata": 0})["transform"] == transform
    geo = {"crs": CRS.from_epsg(32633), "transform": from_origin(5, 6, 1, 1), "nodata": None}
    assert output_georef(geo) is geo
    assert georef_warning([]) is None
    line = georef_warning([f"{i}.png" for i in range(5)])
    assert line.startswith("ctseg: warning: 5 inputs with no georeference (0.png, 1.png, 2.png and 2 more)")
    assert "\n" not in line
