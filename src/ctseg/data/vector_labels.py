"""Vector labels on an image's grid: polygons read, reprojected and rasterised one crop window at a time.

``ctseg prepare vector`` (:mod:`ctseg.data.sets.vector`) never builds a whole-scene mask. Per image, the crop
windows are taken a row at a time (:meth:`TileLabels.band`): the features whose envelope meets that row of windows
are read from the labels file with a bounding-box filter (``pyogrio``; the row's bounds carried into the labels'
CRS with densified edges and a margin of a pixel), repaired where invalid (``shapely.make_valid``, polygon parts
kept), reprojected to the image's CRS vertex by vertex (``rasterio.warp.transform``, i.e. PROJ) and put in an
``STRtree``. Each window (:meth:`LabelBand.mask`) rasterises only the polygons its box meets
(``rasterio.features.rasterize`` on the window's own grid: a pixel is burnt when its centre is inside a polygon,
or with ``--all-touched`` when the polygon touches it), in class order — later classes in the classes file win
where polygons overlap, ``ignore`` values over all — onto the background class, or ignore without one. Pixels
outside ``--extent`` polygons are ignore.

:func:`scan_labels` reads the whole file once before any crop is cut, in chunks of :data:`SCAN_CHUNK` features:
it refuses class values the classes file does not list, geometries that are not polygons and labels that meet
no image (one line each), and counts the invalid polygons that will be repaired.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ctseg.data.definitions import IGNORE_INDEX
from ctseg.data.vector_classes import UNKNOWN, class_codes, unknown_value
from ctseg.errors import CtsegError

#: Features read at a time by :func:`scan_labels`.
SCAN_CHUNK = 100_000
#: Points per side of a box carried into another CRS (its edges may curve there).
DENSIFY = 21
_POLYGONAL = (3, 6)  # shapely type ids: Polygon, MultiPolygon
_COLLECTION = 7
_TYPE_NAMES = {0: "Point", 1: "LineString", 2: "LinearRing", 4: "MultiPoint", 5: "MultiLineString"}


@dataclass(frozen=True)
class VectorConfig:
    """What a worker needs to rasterise the labels of one image (travels in ``DatasetInfo.extra["vector"]``)."""

    labels: Path
    layer: str
    field: str
    crs: str  # the labels' CRS as WKT
    lookup: dict  # value key → class index (IGNORE_INDEX: an ignore value)
    background: int | None
    num_classes: int
    all_touched: bool = False
    indexed: bool = True  # the labels file filters by bounding box fast (a spatial index)
    extent: Path | None = None
    extent_layer: str | None = None
    extent_crs: str | None = None


@dataclass(frozen=True)
class ImageGrid:
    """An image's grid: CRS (WKT), affine transform (6 numbers, rasterio's order), size."""

    path: Path
    crs: str
    transform: tuple[float, ...]
    width: int
    height: int


def reproject(geoms: np.ndarray, src: str, dst: str) -> np.ndarray:
    """Shapely geometries from CRS ``src`` to ``dst`` (WKT or any user input), every vertex through PROJ."""
    import shapely
    from rasterio.crs import CRS
    from rasterio.warp import transform

    src_crs, dst_crs = CRS.from_user_input(src), CRS.from_user_input(dst)
    if src_crs == dst_crs or len(geoms) == 0:
        return geoms

    def move(coords: np.ndarray) -> np.ndarray:
        xs, ys = transform(src_crs, dst_crs, coords[:, 0], coords[:, 1])
        return np.column_stack([np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)])

    return shapely.transform(geoms, move)


def pixel_box(grid_transform, row0: float, col0: float, row1: float, col1: float):
    """The polygon of pixel rows ``row0 … row1`` and columns ``col0 … col1`` (edges) in the image's CRS,
    :data:`DENSIFY` points a side."""
    import shapely
    from affine import Affine

    t = np.linspace(0.0, 1.0, DENSIFY)
    cols = np.concatenate([col0 + (col1 - col0) * t, np.full(DENSIFY, col1), col1 - (col1 - col0) * t,
                           np.full(DENSIFY, col0)])  # fmt: skip
    rows = np.concatenate([np.full(DENSIFY, row0), row0 + (row1 - row0) * t, np.full(DENSIFY, row1),
                           row1 - (row1 - row0) * t])  # fmt: skip
    xs, ys = Affine(*grid_transform) * (cols, rows)
    return shapely.Polygon(np.column_stack([xs, ys]))


def polygonal(geoms: np.ndarray) -> np.ndarray:
    """Each geometry with only its polygon parts (a collection that ``make_valid`` left with lines keeps its
    polygons); ``None`` where none is left."""
    import shapely

    out = np.array(geoms, dtype=object)
    kinds = shapely.get_type_id(out)
    for i in np.flatnonzero(~np.isin(kinds, _POLYGONAL)):
        parts = shapely.get_parts(out[i]) if out[i] is not None else []
        keep = [p for p in parts if shapely.get_type_id(p) in _POLYGONAL]
        out[i] = shapely.multipolygons(shapely.get_parts(keep)) if keep else None
    return out


def repaired(geoms: np.ndarray) -> np.ndarray:
    """Invalid geometries through ``shapely.make_valid``, then :func:`polygonal`."""
    import shapely

    geoms = np.array(geoms, dtype=object)
    bad = ~shapely.is_valid(geoms) & ~shapely.is_missing(geoms)
    if bad.any():
        geoms[bad] = shapely.make_valid(geoms[bad])
    return polygonal(geoms)


@dataclass
class ScanResult:
    """What :func:`scan_labels` found: features, invalid polygons (count, first ids), images any feature meets."""

    features: int
    invalid: int
    invalid_ids: list[int]
    hit: set[int]


def scan_labels(cfg: VectorConfig, classes: Path, grids: Sequence[ImageGrid]) -> ScanResult:
    """Read every feature once (module docstring); one line for an unlisted class value (the first feature id,
    how many), a geometry that is no polygon, or labels that meet none of ``grids``."""
    import shapely

    from ctseg.safety.vector_files import read_features

    footprints = np.array([reproject(np.array([pixel_box(g.transform, 0, 0, g.height, g.width)], dtype=object),
                                     g.crs, cfg.crs)[0] for g in grids], dtype=object)  # fmt: skip
    result = ScanResult(0, 0, [], set())
    skip = 0
    while True:
        fids, wkb, (values,) = read_features(cfg.labels, cfg.layer, [cfg.field], skip=skip, count=SCAN_CHUNK)
        if len(fids) == 0:
            break
        codes = class_codes(values, cfg.lookup)
        if (codes == UNKNOWN).any():
            first = int(np.argmax(codes == UNKNOWN))
            from ctseg.data.vector_classes import value_key

            raise CtsegError(unknown_value(cfg.labels, cfg.field, int(fids[first]), value_key(values[first]),
                                           int((codes == UNKNOWN).sum()), _known(cfg), classes))  # fmt: skip
        geoms = shapely.from_wkb(wkb)
        kinds = shapely.get_type_id(geoms)
        wrong = ~np.isin(kinds, (*_POLYGONAL, _COLLECTION, -1))
        if wrong.any():
            first = int(np.argmax(wrong))
            raise CtsegError(
                f"labels file {cfg.labels}: feature {int(fids[first])} is a {_TYPE_NAMES.get(int(kinds[first]), '?')}"
                f" ({int(wrong.sum())} feature(s) are not polygons); labels are polygons: buffer lines and points "
                "into polygons first (e.g. ogr2ogr -dialect SQLite -sql 'SELECT ST_Buffer(geom, 3) AS geom, ...')"
            )
        bad = ~shapely.is_valid(geoms) & ~shapely.is_missing(geoms)
        result.invalid += int(bad.sum())
        result.invalid_ids += [int(f) for f in fids[bad][: max(0, 5 - len(result.invalid_ids))]]
        tree = shapely.STRtree(repaired(geoms))  # GEOS predicates want valid polygons
        result.hit.update(int(i) for i in tree.query(footprints, predicate="intersects")[0])
        result.features += len(fids)
        skip += len(fids)
        if len(fids) < SCAN_CHUNK:
            break
    if result.features and not result.hit:
        raise CtsegError(_no_overlap(cfg, grids, footprints))
    return result


def _known(cfg: VectorConfig) -> str:
    from ctseg.data.vector_classes import shown_value

    return ", ".join(shown_value(key) for key in cfg.lookup)


def _no_overlap(cfg: VectorConfig, grids: Sequence[ImageGrid], footprints: np.ndarray) -> str:
    import pyogrio
    import shapely

    try:
        bounds = pyogrio.read_info(cfg.labels, layer=cfg.layer, force_total_bounds=True)["total_bounds"]
        where = "[" + ", ".join(f"{v:.6g}" for v in bounds) + "]"
    except Exception:
        where = "?"
    images = "[" + ", ".join(f"{v:.6g}" for v in shapely.total_bounds(footprints)) + "]"
    return (
        f"labels file {cfg.labels}: none of its polygons overlaps any of the {len(grids)} image(s) (in the labels' "
        f"CRS the polygons lie in {where}, the images in {images}); check that the labels and the images are of the "
        "same place, and the CRS each file declares"
    )


def read_extent(cfg: VectorConfig, crs: str) -> np.ndarray:
    """The ``--extent`` polygons, repaired, in the image CRS ``crs``."""
    import shapely

    from ctseg.safety.vector_files import read_features

    assert cfg.extent is not None and cfg.extent_layer is not None and cfg.extent_crs is not None
    _, wkb, _ = read_features(cfg.extent, cfg.extent_layer, [], what="extent file")
    geoms = repaired(shapely.from_wkb(wkb))
    geoms = geoms[~shapely.is_missing(geoms)]
    return reproject(geoms, cfg.extent_crs, crs)


def check_extent(cfg: VectorConfig, grids: Sequence[ImageGrid]) -> None:
    """One line when the ``--extent`` polygons meet none of the images (every pixel would be ignore)."""
    import shapely

    if cfg.extent is None:
        return
    for grid in grids:
        geoms = read_extent(cfg, grid.crs)
        if len(geoms) and shapely.intersects(shapely.union_all(geoms), pixel_box(grid.transform, 0, 0, grid.height,
                                                                                 grid.width)):  # fmt: skip
            return
    raise CtsegError(
        f"extent file {cfg.extent}: its polygons overlap none of the {len(grids)} image(s), so every pixel would be "
        "ignore; check that it covers the images, and the CRS it declares"
    )


class TileLabels:
    """The labels of one image, served a row of windows at a time (module docstring). A labels file without a
    spatial index (GeoJSON, a Shapefile without ``.qix``) is read once per image instead of once per row."""

    def __init__(self, cfg: VectorConfig, grid: ImageGrid) -> None:
        import shapely

        self.cfg, self.grid = cfg, grid
        self.extent = None
        if cfg.extent is not None:
            geoms = read_extent(cfg, grid.crs)
            self.extent = (geoms, shapely.STRtree(geoms))
        self.whole = None
        if not cfg.indexed:
            geoms, values = self._read(0, grid.height)
            self.whole = (geoms, values, shapely.STRtree(geoms))

    def _read(self, top: int, bottom: int) -> tuple[np.ndarray, np.ndarray]:
        """(polygons in the image's CRS, class values) that may meet pixel rows ``top … bottom``, in the order
        they are burnt: class order (ignore values last), then file order."""
        import shapely

        from ctseg.safety.vector_files import read_features

        cfg, grid = self.cfg, self.grid
        rows = pixel_box(grid.transform, top - 1, -1, bottom + 1, grid.width + 1)  # a pixel of margin all round
        box = reproject(np.array([rows], dtype=object), grid.crs, cfg.crs)[0]
        fids, wkb, (values,) = read_features(cfg.labels, cfg.layer, [cfg.field], bbox=tuple(shapely.bounds(box)))
        codes = class_codes(values, cfg.lookup).astype(np.int64)
        if (codes == UNKNOWN).any():  # the file changed since the scan
            raise CtsegError(f"labels file {cfg.labels} changed while it was being prepared; prepare again")
        geoms = repaired(shapely.from_wkb(wkb))
        keep = ~shapely.is_missing(geoms) & ~shapely.is_empty(geoms)
        geoms, codes, fids = reproject(geoms[keep], cfg.crs, grid.crs), codes[keep], np.asarray(fids)[keep]
        # cut to the rows (and their margin): a land-use polygon of 100,000 vertices is not burnt whole per window
        geoms = shapely.clip_by_rect(geoms, *shapely.bounds(rows))
        keep = ~shapely.is_empty(geoms)
        geoms, codes, fids = geoms[keep], codes[keep], fids[keep]
        rank = np.where(codes == IGNORE_INDEX, cfg.num_classes, codes)  # ignore values over every class
        order = np.lexsort((fids, rank))
        return geoms[order], codes[order].astype(np.uint8)

    def band(self, top: int, bottom: int) -> LabelBand:
        """The polygons that may meet the windows of pixel rows ``top … bottom``."""
        if self.whole is None:
            return LabelBand(self, *self._read(top, bottom))
        geoms, values, tree = self.whole
        near = np.sort(tree.query(pixel_box(self.grid.transform, top - 1, -1, bottom + 1, self.grid.width + 1)))
        return LabelBand(self, geoms[near], values[near])


class LabelBand:
    """The polygons of one row of windows (:meth:`TileLabels.band`), rasterised window by window."""

    def __init__(self, tile: TileLabels, geoms: np.ndarray, values: np.ndarray) -> None:
        import shapely

        self.tile, self.geoms, self.values = tile, geoms, values
        self.tree = shapely.STRtree(geoms)

    def mask(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        """(height, width) uint8 class indices of the window at ``row``, ``col``: background (or ignore) where no
        polygon is, ignore outside ``--extent``."""
        from affine import Affine
        from rasterio.features import rasterize

        cfg, grid = self.tile.cfg, self.tile.grid
        window = Affine(*grid.transform) * Affine.translation(col, row)
        box = pixel_box(grid.transform, row, col, row + height, col + width)
        fill = IGNORE_INDEX if cfg.background is None else cfg.background
        hits = np.sort(self.tree.query(box))  # sorted: the band's class order
        if len(hits):
            shapes = zip(self.geoms[hits], (int(v) for v in self.values[hits]), strict=True)
            out = rasterize(shapes, out_shape=(height, width), fill=fill, transform=window,
                            all_touched=cfg.all_touched, dtype="uint8")  # fmt: skip
        else:
            out = np.full((height, width), fill, dtype=np.uint8)
        if self.tile.extent is not None:
            geoms, tree = self.tile.extent
            near = tree.query(box)
            inside = (
                rasterize(
                    ((g, 1) for g in geoms[near]), out_shape=(height, width), fill=0, transform=window, dtype="uint8"
                )  # fmt: skip
                if len(near)
                else np.zeros((height, width), dtype=np.uint8)
            )
            out[inside == 0] = IGNORE_INDEX
        return out


def grid_of(path: Path, ds: Any) -> ImageGrid:
    """An open raster's :class:`ImageGrid`; one line when it has no CRS or no geotransform."""
    if ds.crs is None or ds.transform.is_identity:
        raise CtsegError(
            f"{path} has no georeference ({'no CRS' if ds.crs is None else 'no geotransform'}); vector labels are "
            "placed on an image by its CRS and geotransform: give it both (e.g. gdal_edit.py -a_srs EPSG:32633 "
            "-a_ullr ...), or use ctseg prepare folder with masks"
        )
    return ImageGrid(Path(path), ds.crs.to_wkt(), tuple(ds.transform)[:6], ds.width, ds.height)
