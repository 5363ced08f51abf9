"""``ctseg vectorize``: polygons from a class map, merged across block borders, with areas in map units.

The class map is generated: 300 × 300 pixels of 0.5 m (EPSG:32633), tiled 64 × 64 and read in 64-pixel blocks,
with shapes that straddle block borders and corners (a rectangle over four blocks, an L, a ring whose hole is
cut by two borders, a column through five block rows, a U whose arms meet only in the next block row).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pyogrio
import pyogrio.raw
import pytest
import rasterio
import rasterio.shutil
import shapely
from rasterio.transform import from_origin
from shapely import affinity

from ctseg.cli.entry import main
from ctseg.errors import CtsegError
from ctseg.vectorize.polygons import CLASSES_TAG, VectorizeWarning, vectorize_raster

SIZE, RES = 300, 0.5
TRANSFORM = from_origin(500_000.0, 4_650_000.0, RES, RES)
PIXEL_AREA = RES * RES
NAMES = ["background", "building", "road"]


def _rect(mask: np.ndarray, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    mask[r0:r1, c0:c1] = True
    return mask


def _shapes() -> dict[str, np.ndarray]:
    """Named building masks, each one 4-connected region (the two corner squares are two regions)."""
    z = lambda: np.zeros((SIZE, SIZE), bool)  # noqa: E731
    ring = _rect(z(), 170, 230, 40, 100)
    ring[185:215, 55:85] = False  # the hole is cut by x = 64 and y = 192
    ell = _rect(_rect(z(), 170, 200, 180, 200), 190, 200, 200, 240)
    rows, cols = np.indices((SIZE, SIZE))
    stairs = (rows >= 260) & (rows < 290) & (cols >= 100) & (cols - 100 <= rows - 260)  # cut by x = 128
    u = _rect(_rect(_rect(z(), 30, 75, 140, 145), 30, 75, 160, 165), 70, 75, 140, 165)
    return {
        "vertical_border": _rect(z(), 10, 30, 50, 80),
        "four_blocks": _rect(z(), 110, 150, 100, 140),
        "ell": ell,
        "ring": ring,
        "column": _rect(z(), 20, 235, 260, 266),
        "u": u,
        "corner_a": _rect(z(), 61, 64, 61, 64),  # meets corner_b only at the block corner (64, 64): two polygons
        "corner_b": _rect(z(), 64, 67, 64, 67),
        "stairs": stairs,
        "small": _rect(z(), 5, 7, 5, 7),  # 4 pixels = 1 m², inside one block
    }


SHAPES = _shapes()
ROAD = _rect(np.zeros((SIZE, SIZE), bool), 240, 250, 0, SIZE)


def _class_map() -> np.ndarray:
    data = np.zeros((SIZE, SIZE), np.uint8)
    for mask in SHAPES.values():
        data[mask] = 1
    data[ROAD] = 2
    data[290:, 290:] = 255  # nodata
    return data


def _confidence() -> np.ndarray:
    rows, cols = np.indices((SIZE, SIZE))
    return ((rows * 7 + cols * 3) % 256).astype(np.uint8)


def _write(path: Path, data: np.ndarray, *, crs="EPSG:32633", transform=TRANSFORM, names=NAMES, nodata=255) -> Path:
    profile = {"driver": "GTiff", "height": data.shape[0], "width": data.shape[1], "count": 1, "dtype": data.dtype,
               "tiled": True, "blockxsize": 64, "blockysize": 64}  # fmt: skip
    if crs is not None:
        profile.update(crs=crs, transform=transform)
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
        if names is not None:
            dst.update_tags(**{CLASSES_TAG: json.dumps(names)})
    return path


@pytest.fixture(scope="module")
def pred(tmp_path_factory) -> Path:
    return _write(tmp_path_factory.mktemp("vec") / "scene_pred.tif", _class_map())


def _read(path: Path) -> tuple[dict, list, dict[str, np.ndarray]]:
    meta, _, wkb, values = pyogrio.raw.read(path)
    return meta, list(shapely.from_wkb(wkb)), dict(zip(meta["fields"], values, strict=True))


def _point(mask: np.ndarray) -> shapely.Point:
    """The map position of the centre of one pixel of ``mask``."""
    r, c = np.argwhere(mask)[len(np.argwhere(mask)) // 2]
    x, y = TRANSFORM @ (c + 0.5, r + 0.5)
    return shapely.Point(x, y)


def _match(geoms: list, mask: np.ndarray) -> int:
    hits = [i for i, g in enumerate(geoms) if g.contains(_point(mask))]
    assert len(hits) == 1, f"{len(hits)} polygons over one shape"
    return hits[0]


def test_shapes_across_block_borders_are_one_polygon_each(pred, tmp_path):
    out = vectorize_raster(pred, tmp_path / "b.gpkg", ["building"], block_size=64)
    meta, geoms, fields = _read(out)
    assert meta["crs"] == "EPSG:32633" and meta["geometry_type"] == "Polygon"
    assert len(geoms) == len(SHAPES) and set(fields["class"]) == {"building"} and set(fields["class_index"]) == {1}
    for name, mask in SHAPES.items():
        i = _match(geoms, mask)
        assert geoms[i].is_valid and geoms[i].geom_type == "Polygon", name
        assert geoms[i].area == pytest.approx(mask.sum() * PIXEL_AREA, rel=1e-9), name
        assert fields["area"][i] == pytest.approx(mask.sum() * PIXEL_AREA, rel=1e-9), name
    ring = geoms[_match(geoms, SHAPES["ring"])]
    assert len(ring.interiors) == 1 and shapely.Polygon(ring.interiors[0]).area == 30 * 30 * PIXEL_AREA
    # the same polygons as in one block (no merging at all)
    _, whole, _ = _read(vectorize_raster(pred, tmp_path / "one.gpkg", "building", block_size=SIZE))
    for mask in SHAPES.values():
        assert shapely.equals(geoms[_match(geoms, mask)], whole[_match(whole, mask)])
    # exterior counter-clockwise (GeoJSON's rule)
    assert all(g.exterior.is_ccw for g in geoms)


def test_holes_min_area_simplify(pred, tmp_path):
    _, geoms, fields = _read(
        vectorize_raster(pred, tmp_path / "f.gpkg", "building", fill_holes=True, min_area=2.0, block_size=64)
    )
    assert len(geoms) == len(SHAPES) - 1  # "small" (1 m²) is dropped
    ring = geoms[_match(geoms, SHAPES["ring"])]
    assert not ring.interiors and ring.area == pytest.approx(60 * 60 * PIXEL_AREA)
    assert fields["area"][_match(geoms, SHAPES["ring"])] == pytest.approx(60 * 60 * PIXEL_AREA)
    _, simple, _ = _read(vectorize_raster(pred, tmp_path / "s.gpkg", "building", simplify=1.0, block_size=64))
    _, exact, _ = _read(vectorize_raster(pred, tmp_path / "e.gpkg", "building", block_size=64))
    assert len(simple) == len(exact) and all(g.is_valid and g.geom_type == "Polygon" for g in simple)
    i, j = _match(simple, SHAPES["stairs"]), _match(exact, SHAPES["stairs"])
    assert shapely.get_num_coordinates(simple[i]) < shapely.get_num_coordinates(exact[j]) / 4
    assert simple[i].area == pytest.approx(exact[j].area, rel=0.1)
    assert shapely.hausdorff_distance(simple[i], exact[j]) <= 1.0 + 1e-9


def test_class_names_indices_and_several_classes(pred, tmp_path):
    by_name = _read(vectorize_raster(pred, tmp_path / "n.geojson", "building", block_size=64))[1]
    by_index = _read(vectorize_raster(pred, tmp_path / "i.geojson", [1], block_size=64))[1]
    assert len(by_name) == len(by_index) and all(shapely.equals(a, b) for a, b in zip(by_name, by_index, strict=True))
    meta, geoms, fields = _read(vectorize_raster(pred, tmp_path / "two.geojson", "Building,road", block_size=64))
    assert meta["crs"] == "EPSG:32633" and pyogrio.read_info(tmp_path / "two.geojson")["driver"] == "GeoJSON"
    roads = [g for g, c in zip(geoms, fields["class"], strict=True) if c == "road"]
    assert len(roads) == 1 and roads[0].area == pytest.approx(ROAD.sum() * PIXEL_AREA)
    assert list(fields["class_index"]).count(1) == len(SHAPES)


def test_mean_confidence(pred, tmp_path):
    conf = _confidence()
    conf_tif = _write(tmp_path / "conf.tif", conf, names=None, nodata=None)
    _, geoms, fields = _read(
        vectorize_raster(pred, tmp_path / "c.gpkg", "building", confidence_tif=conf_tif, block_size=64)
    )
    for name, mask in SHAPES.items():
        i = _match(geoms, mask)
        assert fields["mean_confidence"][i] == pytest.approx(conf[mask].mean() / 255.0, rel=1e-9), name
    _, _, plain = _read(vectorize_raster(pred, tmp_path / "p.gpkg", "building", block_size=64))
    assert "mean_confidence" not in plain


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_not_georeferenced_uses_pixels(tmp_path, capsys):
    raw = _write(tmp_path / "raw.tif", _class_map(), crs=None)
    with pytest.warns(VectorizeWarning, match="not georeferenced.*pixels"):
        out = vectorize_raster(raw, tmp_path / "raw.gpkg", "building", min_area=5, block_size=64)
    meta, geoms, fields = _read(out)
    assert meta["crs"] is None and len(geoms) == len(SHAPES) - 1  # "small": 4 px² < 5
    i = _match([affinity.affine_transform(g, _to_map()) for g in geoms], SHAPES["four_blocks"])
    assert fields["area"][i] == SHAPES["four_blocks"].sum()
    assert main(["vectorize", str(raw), "--classes", "1", "--out", str(tmp_path / "cli.gpkg")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ctseg: warning:") and "pixels" in err[0]


def _to_map() -> list[float]:
    t = TRANSFORM
    return [t.a, t.b, t.d, t.e, t.c, t.f]


def _one_line(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("ctseg: error:"), err
    for needle in needles:
        assert needle in err, err
    return err


def test_bad_input_is_one_line(pred, tmp_path, capsys):
    geo = _write(tmp_path / "geo.tif", _class_map(), crs="EPSG:4326", transform=from_origin(13.0, 52.0, 1e-5, 1e-5))
    out = tmp_path / "x.gpkg"
    assert main(["vectorize", str(geo), "--classes", "building", "--out", str(out), "--min-area", "10"]) == 2
    _one_line(capsys, "EPSG:4326", "geographic", "gdalwarp")
    assert main(["vectorize", str(pred), "--classes", "bilding", "--out", str(out)]) == 2
    _one_line(capsys, "'bilding'", "background, building, road")
    nameless = _write(tmp_path / "nameless.tif", _class_map(), names=None)
    assert main(["vectorize", str(nameless), "--classes", "building", "--out", str(out)]) == 2
    _one_line(capsys, "no class names", "indices")
    assert main(["vectorize", str(pred), "--classes", "7", "--out", str(out)]) == 2
    _one_line(capsys, "3 classes")
    assert main(["vectorize", str(pred), "--classes", "1", "--out", str(tmp_path / "x.shp")]) == 2
    _one_line(capsys, ".gpkg")
    assert not out.exists()
    # existing output: refused, then replaced with --overwrite
    out.write_text("keep")
    assert main(["vectorize", str(pred), "--classes", "building", "--out", str(out)]) == 2
    _one_line(capsys, "already exists", "--overwrite")
    assert out.read_text() == "keep"
    assert main(["vectorize", str(pred), "--classes", "building", "--out", str(out), "--overwrite"]) == 0
    assert pyogrio.read_info(out)["features"] == len(SHAPES)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary left
    with pytest.raises(CtsegError, match="not on the grid"):
        small = _write(tmp_path / "small.tif", _confidence()[:100], names=None, nodata=None)
        vectorize_raster(pred, tmp_path / "y.gpkg", "building", confidence_tif=small)


def test_damaged_raster_is_one_line_and_writes_nothing(pred, tmp_path, capsys):
    """A class or confidence raster whose header opens but one of whose tiles does not decode: one line naming it."""
    from predict.test_predict_stream import corrupt_middle_tile

    cut = tmp_path / "cut.tif"
    with rasterio.open(pred) as src:
        rasterio.shutil.copy(src, cut, driver="GTiff", compress="deflate", tiled=True, blockxsize=64, blockysize=64)
    corrupt_middle_tile(cut)
    out = tmp_path / "x.gpkg"
    assert main(["vectorize", str(cut), "--classes", "building", "--out", str(out), "--block-size", "64"]) == 2
    _one_line(capsys, str(cut), "cannot be read")
    assert main(["vectorize", str(pred), "--classes", "1", "--out", str(out), "--confidence", str(cut)]) == 2
    _one_line(capsys, "confidence raster", str(cut), "cannot be read")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.tif"]


def test_confidence_without_georeference_is_one_note(tmp_path, capsys):
    raw = _write(tmp_path / "raw.tif", _class_map(), crs=None)
    conf = _write(tmp_path / "conf.tif", _confidence(), crs=None, names=None, nodata=None)
    argv = ["vectorize", str(raw), "--classes", "1", "--out", str(tmp_path / "c.gpkg"), "--confidence", str(conf)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rasterio's NotGeoreferencedWarning for conf.tif would fail here
        assert main(argv) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ctseg: warning:") and "not georeferenced" in err[0]


@pytest.mark.parametrize("tag", ["[" * 200_000 + "]" * 200_000, '["a", ["b"]]', "not json", '"' + "x" * 300_000 + '"'])
def test_a_crafted_classes_tag_is_one_line(tmp_path, capsys, tag):
    """The class map's ``CTSEG_CLASSES`` tag is data from whoever made the raster: deeply nested, not a list of
    names, not JSON or huge, it is ignored and a class asked for by name is one line (exit 2), nothing written."""
    pred = _write(tmp_path / "scene_pred.tif", _class_map(), names=None)
    with rasterio.open(pred, "r+") as dst:
        dst.update_tags(**{CLASSES_TAG: tag})
    out = tmp_path / "polys" / "v.gpkg"
    out.parent.mkdir()
    assert main(["vectorize", str(pred), "--classes", "building", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ctseg: error:") and "CTSEG_CLASSES" in err[0], err
    assert list(out.parent.iterdir()) == []
    assert main(["vectorize", str(pred), "--classes", "1", "--out", str(out)]) == 0  # by index it still works
