"""The array-built vectorize path (issue 33) writes what the one-polygon-at-a-time path wrote: the same polygons,
in the same order, vertex for vertex, with the same attributes.

The reference below is the earlier path, kept slow on purpose: each GDAL polygon built from its GeoJSON, checked
with ``is_valid`` (``make_valid`` when pinched), merged across seams as the block engine does, then
``drop_collinear``, holes, ``min_area``, the transform, ``simplify`` and ``orient`` one polygon at a time. The
class map is random (rings meeting at pixel corners everywhere, holes, shapes across every block border) plus a
few shapes drawn on purpose.
"""

from __future__ import annotations

import numpy as np
import pyogrio.raw
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.features import shapes
from rasterio.transform import from_origin
from shapely.geometry import shape
from shapely.geometry.polygon import orient

from ctseg.vectorize.blocks import Part, block_windows, merge_parts, polygons_of
from ctseg.vectorize.polygons import vectorize_raster
from ctseg.vectorize.regularize import collinear_keep, drop_collinear, drop_collinear_all
from ctseg.vectorize.stats import EMPTY

SIZE, BLOCK, RES = 160, 40, 0.5
TRANSFORM = from_origin(400_000.0, 5_000_000.0, RES, RES)


def _class_map() -> np.ndarray:
    rng = np.random.default_rng(3)
    data = (rng.random((SIZE // 4, SIZE // 4)) < 0.45).astype(np.uint8).repeat(4, 0).repeat(4, 1)
    data[rng.random((SIZE, SIZE)) < 0.08] ^= 1  # single pixels: pinches at their corners
    data[60:100, 10:150] = 1  # a long bar across three block borders with a hole cut by a border
    data[70:90, 30:50] = 0
    data[38:42, 38:42] = np.eye(4, dtype=np.uint8)  # a diagonal staircase of pixels over a block corner
    data[120:160, 120:160] = 2  # another class at the raster's corner
    return data


def _reference(data: np.ndarray, index: int, *, fill_holes=False, min_area=0.0, simplify=0.0) -> list:
    """The polygons of class ``index`` as the earlier path made them, in its order."""
    coeffs = np.array([[TRANSFORM.a, TRANSFORM.b], [TRANSFORM.d, TRANSFORM.e]])
    offset = np.array([TRANSFORM.c, TRANSFORM.f])
    out: list = []

    def finish(geom) -> None:
        geom = drop_collinear(geom)
        if fill_holes and geom.interiors:
            geom = shapely.Polygon(geom.exterior)
        if geom.area * RES * RES < min_area:
            return
        geom = shapely.transform(geom, lambda xy: xy @ coeffs.T + offset)
        if simplify > 0:
            geom = shapely.simplify(geom, simplify, preserve_topology=True)
        if not geom.is_empty:
            out.append(orient(geom, 1.0))

    pending: list[Part] = []
    for block_row in block_windows(SIZE, SIZE, BLOCK, BLOCK):
        bottom = block_row[0][0] + block_row[0][2]
        for r, c, h, w in block_row:
            mask = data[r : r + h, c : c + w] == index
            for g, _ in shapes(mask.view(np.uint8), mask=mask, connectivity=4, transform=Affine.translation(c, r)):
                geom = shape(g)
                for poly in polygons_of(geom if geom.is_valid else shapely.make_valid(geom)):
                    x0, y0, x1, y1 = poly.bounds
                    if (x0 == c > 0) or (x1 == c + w < SIZE) or (y0 == r > 0) or (y1 == r + h < SIZE):
                        pending.append(Part(poly, EMPTY))
                    else:
                        finish(poly)
        keep = []
        for part in merge_parts(pending):
            if part.geom.bounds[3] == bottom < SIZE:
                keep.append(part)
            else:
                finish(part.geom)
        pending = keep
    for part in pending:
        finish(part.geom)
    return out


@pytest.fixture(scope="module")
def pred(tmp_path_factory):
    path = tmp_path_factory.mktemp("arrays") / "pred.tif"
    with rasterio.open(path, "w", driver="GTiff", width=SIZE, height=SIZE, count=1, dtype="uint8",
                       crs="EPSG:32633", transform=TRANSFORM) as dst:  # fmt: skip
        dst.write(_class_map(), 1)
    return path


@pytest.mark.parametrize(
    "options", [{}, {"fill_holes": True, "min_area": 2.0}, {"simplify": 0.6}], ids=["plain", "holes", "simplify"]
)
def test_the_same_polygons_as_one_at_a_time(pred, tmp_path, options):
    out = vectorize_raster(pred, tmp_path / "v.gpkg", [1, 2], block_size=BLOCK, **options)
    _, _, wkb, (_, class_index, area) = pyogrio.raw.read(out)
    got = shapely.from_wkb(wkb)
    data = _class_map()
    want = _reference(data, 1, **options) + _reference(data, 2, **options)
    ones = _reference(data, 1, **options)
    assert len(got) == len(want) > 50 and list(class_index) == [1] * len(ones) + [2] * (len(want) - len(ones))
    # vertex for vertex, in the same order (WKB equal), and the areas to the last bit
    assert [g.wkb for g in got] == [g.wkb for g in want]
    assert np.array_equal(area, shapely.area(np.array(want, dtype=object)))
    # the map has what the test is about: holes, polygons merged over block borders, rings pinched at a corner
    assert sum(len(g.interiors) for g in want) > 10 or options.get("fill_holes")
    assert max(shapely.bounds(g)[2] - shapely.bounds(g)[0] for g in got) > 2 * BLOCK * RES
    assert sum(_touches_itself(g) for g in got) > 5 or options.get("fill_holes")


def _touches_itself(poly) -> bool:
    """Whether ``poly``'s rings meet at a vertex (a pixel corner of two diagonal pixels)."""
    xy = np.concatenate([shapely.get_coordinates(r)[:-1] for r in [poly.exterior, *poly.interiors]])
    return len(np.unique(xy, axis=0)) < len(xy)


def test_collinear_vertices_dropped_in_bulk_as_one_at_a_time():
    rng = np.random.default_rng(0)
    polys = [shapely.Polygon([(0, 0), (2, 0), (4, 0), (4, 3), (0, 3), (0, 1)])]  # two collinear vertices
    polys.append(shapely.Polygon([(0, 0), (5, 0), (5, 5), (0, 5)], [[(1, 1), (1, 2), (1, 3), (2, 3), (2, 1)]]))
    polys.append(shapely.Polygon([(0, 0), (1.5, 0), (3, 0), (3, 1), (0, 1)]))  # not integers: kept whole
    polys.append(shapely.box(0, 0, 3, 2))  # nothing to drop: the same object comes back
    for _ in range(30):  # unions of pixel boxes: vertices where the boxes met
        boxes = [shapely.box(x, y, x + 1, y + 1) for x, y in rng.integers(0, 6, (12, 2))]
        polys.extend(polygons_of(shapely.unary_union(boxes)))
    arr = np.empty(len(polys), dtype=object)
    arr[:] = polys
    got = drop_collinear_all(arr)
    assert [g.wkb for g in got] == [drop_collinear(p).wkb for p in polys]
    assert got[3] is polys[3]
    assert shapely.get_num_coordinates(got[0]) == 5 and shapely.get_num_coordinates(got[2]) == 6


def test_collinear_keep_rules():
    ring = np.array([[0, 0], [1, 0], [2, 0], [2, 2], [0, 2]], float)  # (1, 0) is on a straight edge
    keep, changed = collinear_keep(np.concatenate([ring, ring + 0.5]), [5, 5])
    assert keep.tolist() == [True, False, True, True, True] + [True] * 5 and changed.tolist() == [True, False]
    back = np.array([[0, 0], [3, 0], [1, 0]], float)  # a spike: the turn back at (3, 0) is a corner
    assert collinear_keep(back, [3])[0].tolist() == [True, True, True]
    big = ring + 2**40  # beyond float64's exact products: int64 arithmetic, the same answer
    assert collinear_keep(big, [5])[0].tolist() == [True, False, True, True, True]
