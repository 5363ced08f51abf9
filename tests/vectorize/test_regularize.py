"""Outline clean-up (``ctseg.vectorize.regularize``): seams leave no collinear vertex (exact, area to the bit), and
``--regularize`` gives rotated rectangles 4 corners, an L 6 right angles, a courtyard building a right-angled hole,
while a round tank stays round (simplified, not a box). The rasters are generated at 0.5 m (EPSG:32633) and read
in 64-pixel blocks, so most shapes are cut by seams.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyogrio.raw
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.features import rasterize, shapes
from rasterio.transform import from_origin
from shapely import affinity
from shapely.geometry import shape

from ctseg.cli.entry import main
from ctseg.vectorize.polygons import vectorize_raster
from ctseg.vectorize.regularize import drop_collinear, regularize_polygon

RES = 0.5
TRANSFORM = from_origin(500_000.0, 4_650_000.0, RES, RES)
X0, Y0 = 500_000.0, 4_650_000.0
SIZE = 320
ANGLES = (0, 17, 33, 45)


def _at(x: float, y: float):
    """A map position ``x`` m right of and ``y`` m below the raster's corner."""
    return X0 + x, Y0 - y


def _true_shapes() -> dict[str, shapely.Polygon]:
    out = {}
    for k, angle in enumerate(ANGLES):  # 20 m × 10 m, rotated about their centres
        cx, cy = _at(20 + 38 * k, 20)
        out[f"rect{angle}"] = affinity.rotate(shapely.box(cx - 10, cy - 5, cx + 10, cy + 5), angle)
    ell = shapely.Polygon([(0, 0), (20, 0), (20, 8), (8, 8), (8, 16), (0, 16)])
    out["ell"] = affinity.translate(affinity.rotate(ell, 30, origin=(0, 0)), *_at(25, 70))
    cx, cy = _at(80, 60)
    out["tank"] = shapely.Point(cx, cy).buffer(8.0, 128)
    cx, cy = _at(125, 60)
    court = shapely.box(cx - 14, cy - 11, cx + 14, cy + 11).difference(shapely.box(cx - 6, cy - 4, cx + 6, cy + 4))
    out["court"] = affinity.rotate(court, 20, origin=(cx, cy))
    return out


TRUE = _true_shapes()


def _write(path: Path, data: np.ndarray, crs="EPSG:32633", transform=TRANSFORM) -> Path:
    profile = {"driver": "GTiff", "height": data.shape[0], "width": data.shape[1], "count": 1, "dtype": "uint8",
               "tiled": True, "blockxsize": 64, "blockysize": 64}  # fmt: skip
    if crs is not None:
        profile.update(crs=crs, transform=transform)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
    return path


def _read(path: Path) -> list:
    _, _, wkb, _ = pyogrio.raw.read(path)
    return list(shapely.from_wkb(wkb))


def _iou(a, b) -> float:
    return a.intersection(b).area / a.union(b).area


def _angles(poly) -> np.ndarray:
    """Interior-ish corner angles (degrees, 0-180) of every ring of ``poly``."""
    out = []
    for ring in [poly.exterior, *poly.interiors]:
        xy = shapely.get_coordinates(ring)[:-1]
        a, b = xy - np.roll(xy, 1, axis=0), np.roll(xy, -1, axis=0) - xy
        cos = (a * b).sum(1) / np.hypot(*a.T) / np.hypot(*b.T)
        out.append(np.degrees(np.arccos(np.clip(cos, -1, 1))))
    return np.concatenate(out)


@pytest.fixture(scope="module")
def footprints(tmp_path_factory) -> list:
    data = rasterize(TRUE.values(), out_shape=(SIZE, SIZE), transform=TRANSFORM, dtype="uint8")
    folder = tmp_path_factory.mktemp("reg")
    pred = _write(folder / "pred_pred.tif", data)
    out = folder / "fp.gpkg"
    argv = ["vectorize", str(pred), "--classes", "1", "--out", str(out), "--block-size", "64", "--regularize"]
    assert main(argv) == 0
    return _read(out)


def _one(geoms: list, true) -> shapely.Polygon:
    hits = [g for g in geoms if g.intersects(true.representative_point())]
    assert len(hits) == 1
    return hits[0]


@pytest.mark.parametrize("angle", ANGLES)
def test_a_rotated_rectangle_comes_back_as_four_corners(footprints, angle):
    true = TRUE[f"rect{angle}"]
    got = _one(footprints, true)
    assert shapely.get_num_coordinates(got) - 1 <= 6 and got.is_valid
    assert _iou(got, true) >= 0.9
    assert np.allclose(_angles(got), 90.0, atol=1e-6)


def test_an_ell_has_six_right_angles_and_a_courtyard_keeps_its_hole(footprints):
    ell = _one(footprints, TRUE["ell"])
    assert shapely.get_num_coordinates(ell) - 1 == 6 and np.allclose(_angles(ell), 90.0, atol=1e-6)
    assert _iou(ell, TRUE["ell"]) >= 0.9
    court = _one(footprints, TRUE["court"])
    assert len(court.interiors) == 1 and shapely.get_num_coordinates(court) == 10  # 4 + 4 corners, 2 closing
    assert np.allclose(_angles(court), 90.0, atol=1e-6) and _iou(court, TRUE["court"]) >= 0.9


def test_a_round_tank_is_simplified_not_boxed(footprints):
    tank = _one(footprints, TRUE["tank"])
    assert shapely.get_num_coordinates(tank) - 1 > 6  # not a box
    assert not np.allclose(_angles(tank), 90.0, atol=5.0)
    assert _iou(tank, TRUE["tank"]) >= 0.9


def test_regularize_polygon_falls_back_and_checks_its_tolerance():
    disk = shapely.Point(0, 0).buffer(5.0, 64)
    pixels = shapely.Polygon(np.round(shapely.get_coordinates(disk.exterior) * 2) / 2)  # a coarse outline
    assert shapely.equals(regularize_polygon(pixels, 0.75), shapely.simplify(pixels, 0.75, preserve_topology=True))
    with pytest.raises(ValueError, match="tolerance"):
        regularize_polygon(pixels, 0.0)


def test_bad_regularize_settings_are_one_line(tmp_path, capsys):
    data = np.zeros((64, 64), np.uint8)
    data[10:20, 10:30] = 1
    geo = _write(tmp_path / "geo.tif", data, crs="EPSG:4326", transform=from_origin(13.0, 52.0, 1e-5, 1e-5))
    out = tmp_path / "x.gpkg"
    assert main(["vectorize", str(geo), "--classes", "1", "--out", str(out), "--regularize"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "geographic" in err and "--regularize" in err
    utm = _write(tmp_path / "utm.tif", data)
    for flag, value in (("--regularize-tolerance", "0"), ("--regularize-min-iou", "1.5")):
        assert main(["vectorize", str(utm), "--classes", "1", "--out", str(out), "--regularize", flag, value]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and flag in err
    assert not out.exists()


# ------------------------------------------------------------------------------------------ collinear vertices
def _spiral(cells: int, scale: int) -> np.ndarray:
    """A square spiral one coarse cell wide with one-cell gaps, ``cells`` coarse cells a side, scaled up."""
    coarse = np.zeros((cells, cells), bool)
    r = c = 0
    coarse[0, 0] = True
    steps = [cells - 1, cells - 1, cells - 1]
    n = cells - 3
    while n > 0:
        steps += [n, n]
        n -= 2
    for k, length in enumerate(steps):
        dr, dc = ((0, 1), (1, 0), (0, -1), (-1, 0))[k % 4]
        for _ in range(length):
            r, c = r + dr, c + dc
            coarse[r, c] = True
    return np.kron(coarse, np.ones((scale, scale), bool))


def _seamed() -> np.ndarray:
    data = np.zeros((SIZE, SIZE), np.uint8)
    for c in range(0, 160, 32):
        data[:, c + 3 : c + 19] = 1  # stripes through every block row
    data[8:8 + 21 * 7, 165:165 + 21 * 7][_spiral(21, 7)] = 1  # fmt: skip
    return data


def _collinear_triples(poly) -> int:
    rings = [poly.exterior, *poly.interiors]
    total = 0
    for ring in rings:
        xy = shapely.get_coordinates(ring)[:-1]
        a, b = xy - np.roll(xy, 1, axis=0), np.roll(xy, -1, axis=0) - xy
        total += int(((a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]) == 0).sum())
    return total


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
@pytest.mark.filterwarnings("ignore::ctseg.vectorize.io.VectorizeWarning")
@pytest.mark.parametrize("georeferenced", [False, True])
def test_seams_leave_no_collinear_vertex_and_the_area_to_the_bit(tmp_path, georeferenced):
    data = _seamed()
    pred = _write(tmp_path / "s.tif", data, crs="EPSG:32633" if georeferenced else None)
    got = _read(vectorize_raster(pred, tmp_path / "s.gpkg", [1], block_size=64))
    frame = TRANSFORM if georeferenced else Affine.identity()
    ref = [shape(g) for g, _ in shapes(data, mask=data == 1, connectivity=4, transform=frame)]  # one block
    assert len(got) == len(ref) == 6
    assert sum(_collinear_triples(g) for g in got) == 0 == sum(_collinear_triples(g) for g in ref)
    for poly in ref:
        (match,) = [g for g in got if g.intersects(poly.representative_point())]
        assert shapely.get_num_coordinates(match) == shapely.get_num_coordinates(poly)
        assert shapely.equals(match, poly)
        if not georeferenced:  # pixel units: the shoelace sum is exact, the pixel count to the bit
            pixels = rasterize([poly], out_shape=data.shape, dtype="uint8").sum()
            assert match.area == float(pixels)


def test_drop_collinear_is_exact_and_keeps_corners():
    ring = [(0, 0), (2, 0), (5, 0), (5, 3), (5, 4), (0, 4), (0, 2)]  # 2,0 / 5,3 / 0,2 are collinear
    hole = [(1, 1), (1, 2), (1, 3), (3, 3), (3, 1), (2, 1)]
    poly = shapely.Polygon(ring, [hole])
    clean = drop_collinear(poly)
    assert shapely.get_num_coordinates(clean) == 5 + 5 and clean.area == poly.area and shapely.equals(clean, poly)
    assert drop_collinear(clean) is clean
    off_grid = shapely.Polygon([(0, 0), (0.5, 0), (1, 0), (1, 1)])
    assert drop_collinear(off_grid) is off_grid  # not on the pixel grid: left alone
    assert math.isclose(shapely.area(clean), 20 - 4)
