"""Polygons from a class map: ``ctseg vectorize PRED.tif --classes building --out buildings.gpkg``.

The class raster (band 1, an integer class index per pixel, as ``ctseg predict`` writes it) is read by blocks,
polygonised per class and the polygons cut by block edges merged exactly (:mod:`ctseg.vectorize.blocks`: memory
is bounded by the border polygons of one block row, not by the raster; a building cut by block edges comes out
as one polygon).

Polygonisation and merging run in pixel coordinates (integers, so shared block edges match exactly); the
final polygons are mapped by the raster's transform. Before that, the vertices that seams left on straight edges
are dropped exactly on the pixel grid (:func:`ctseg.vectorize.regularize.drop_collinear`), so a polygon has the
vertices of one whole-raster polygonisation whatever the blocks. ``regularize`` straightens building outlines
in map units (:func:`~ctseg.vectorize.regularize.regularize_polygon`; its module docstring has the maths).
Sizes are in map units (the CRS's): ``min_area`` in units², ``simplify`` (:func:`shapely.simplify` with
``preserve_topology=True``) and ``regularize_tolerance`` in units. A raster that is not
georeferenced (no CRS, and the identity transform or the flipped one ``ctseg predict`` gives an image without
georeference: row r at y = −r) is handled in pixel units (one warning line); a geographic CRS (degrees) with
``min_area`` or ``simplify`` is refused in one line.

Classes are given by index or by name; names are looked up in the raster's ``CTSEG_CLASSES`` tag (a JSON list
of class names in index order, which ``ctseg predict`` writes). Each polygon's attributes: ``class`` (name),
``class_index``, ``area`` (map units², of the written geometry); when a confidence raster is given (or the
class raster has a band described ``confidence``), ``mean_confidence`` and ``min_confidence``: the mean and the
smallest confidence (0–1) over the polygon's class pixels; when an entropy raster is given (``ctseg predict
--uncertainty``'s), ``mean_entropy`` over them (:mod:`ctseg.vectorize.stats`: exact across block seams).
Output: GeoPackage (``.gpkg``) or GeoJSON (``.geojson`` / ``.json``) in the raster's CRS, written in a private
locked folder beside it and renamed into place; a kill leaves the old file or the new one, and the next vectorize
into that folder deletes the work folders of killed runs (:mod:`ctseg.vectorize.io`).
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ctseg.errors import CtsegError
from ctseg.safety.documents import parse_json
from ctseg.vectorize.blocks import block_shape, block_windows, stream_parts
from ctseg.vectorize.io import VectorizeWarning, output_driver, write_polygons
from ctseg.vectorize.io import warn as _warn
from ctseg.vectorize.regularize import MIN_IOU, TOLERANCE_PIXELS, regularize_polygon
from ctseg.vectorize.stats import PixelStats
from ctseg.vectorize.workers import BlockPool, resolve_workers

#: Raster tag (default namespace) holding the class names as a JSON list in index order.
CLASSES_TAG = "CTSEG_CLASSES"

__all__ = ["CLASSES_TAG", "VectorizeWarning", "parse_classes", "vectorize_raster"]


# ------------------------------------------------------------------------------------------------ classes
def parse_classes(classes: str | int | Iterable[str | int]) -> list[str | int]:
    """``"building,road"`` / ``"1,2"`` / ``["building", 2]`` → tokens; digit strings become indices."""
    if isinstance(classes, (str, int)):
        classes = [classes] if isinstance(classes, int) else classes.split(",")
    tokens: list[str | int] = []
    for item in classes:
        if isinstance(item, bool):
            raise CtsegError(f"class {item!r}: give class names or indices")
        if isinstance(item, (int, np.integer)):
            tokens.append(int(item))
            continue
        text = str(item).strip()
        if text:
            tokens.append(int(text) if text.isdigit() else text)
    if not tokens:
        raise CtsegError("no classes given; pass class names or indices, e.g. --classes building or --classes 1")
    return tokens


def _stored_names(src) -> tuple[list[str] | None, str]:
    """(class names or ``None``, why there are none)."""
    text = src.tags().get(CLASSES_TAG)
    if text is None:
        return None, f"no {CLASSES_TAG} tag, which ctseg predict writes"
    try:
        names = parse_json(text, f"its {CLASSES_TAG} tag", max_bytes=256 * 1024, max_depth=2)
    except CtsegError:  # not JSON, nested, huge: the names are not used
        names = None
    if not isinstance(names, list) or len(names) > 256 or not all(isinstance(n, str) for n in names):
        return None, f"its {CLASSES_TAG} tag is not a JSON list of names"
    return names, ""


def _resolve_classes(tokens: Sequence[str | int], names: list[str] | None, why: str, path: Path, nodata) -> list[int]:
    indices: list[int] = []
    for token in tokens:
        if isinstance(token, int):
            index = token
            if not 0 <= index <= 255:
                raise CtsegError(f"class index {index}: class rasters hold indices 0-255")
            if names is not None and index >= len(names):
                raise CtsegError(f"class index {index}: {path.name} has {len(names)} classes (0-{len(names) - 1})")
        elif names is None:
            raise CtsegError(
                f"class {token!r}: {path.name} has no class names ({why}); pass class indices, e.g. --classes 1"
            )
        else:
            folded = [n.casefold() for n in names]
            if token in names:
                index = names.index(token)
            elif folded.count(str(token).casefold()) == 1:
                index = folded.index(str(token).casefold())
            else:
                raise CtsegError(f"class {token!r} is not in {path.name}; its classes: {', '.join(names)}")
        if nodata is not None and not math.isnan(nodata) and index == nodata:
            raise CtsegError(f"class {index} is the nodata value of {path.name} (pixels without a prediction)")
        if index not in indices:
            indices.append(index)
    return indices


# ----------------------------------------------------------------------------------------------- the API
def vectorize_raster(
    class_tif: str | os.PathLike,
    out_path: str | os.PathLike,
    classes: str | int | Iterable[str | int],
    *,
    min_area: float = 0.0,
    simplify: float = 0.0,
    fill_holes: bool = False,
    confidence_tif: str | os.PathLike | None = None,
    entropy_tif: str | os.PathLike | None = None,
    block_size: int | None = None,
    layer: str | None = None,
    overwrite: bool = False,
    regularize: bool = False,
    regularize_tolerance: float | None = None,
    regularize_min_iou: float | None = None,
    workers: int | None = None,
) -> Path:
    """Write one polygon per connected region of each of ``classes`` in ``class_tif`` to ``out_path``.

    Args:
        class_tif: a single-band integer class map (``ctseg predict``'s ``<stem>_pred.tif``).
        out_path: ``*.gpkg`` or ``*.geojson`` / ``*.json``; refused when it exists unless ``overwrite``.
        classes: class names (from the raster's ``CTSEG_CLASSES`` tag) or indices: ``"building,road"``,
            ``[1, 2]``, ``"1"``.
        min_area: drop polygons smaller than this, in map units² (after hole filling, before simplification).
        simplify: Douglas-Peucker tolerance in map units, topology preserved (0: exact pixel outlines).
        fill_holes: drop the polygons' interior rings (courtyards) and count them in the area.
        confidence_tif: a raster on the same grid (band 1; uint8 0-255, uint16 or float 0-1) whose mean and
            minimum over each polygon's valid pixels become ``mean_confidence`` and ``min_confidence``; default:
            the class raster's band described ``confidence``, if any (else no such attributes).
        entropy_tif: the normalised entropy on the same grid (float in [0, 1], NaN at nodata: ``ctseg predict
            --uncertainty``'s ``<stem>_entropy.tif``) whose mean over each polygon's valid pixels becomes
            ``mean_entropy``; default: none.
        block_size: block side in pixels (default: whole internal blocks, about 1024 pixels).
        layer: layer name (default: the output's stem).
        regularize: straight walls and right angles where the outline fits them (IoU of the snapped outline
            with the pixel outline at least ``regularize_min_iou``), else the outline simplified with
            ``regularize_tolerance`` (:mod:`ctseg.vectorize.regularize`); after ``min_area``, before ``simplify``.
        regularize_tolerance: in map units (default 1.5 × the pixel size): walls closer than this merge, steps
            shorter than this go.
        regularize_min_iou: default :data:`ctseg.vectorize.regularize.MIN_IOU`.
        workers: processes that polygonise blocks (:mod:`ctseg.vectorize.workers`; the same output for any
            number): default the CPUs available (at most 8) from 16 blocks on; ``0`` or ``1``: none.

    Returns the output path. Raises :class:`CtsegError` (one line) for problems with the inputs.
    """
    import shapely
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    from ctseg.safety.rasters import open_raster as open_checked

    path, out = Path(class_tif), Path(out_path)
    tokens = parse_classes(classes)
    min_area, simplify = float(min_area), float(simplify)
    if not (min_area >= 0 and math.isfinite(min_area)) or not (simplify >= 0 and math.isfinite(simplify)):
        raise CtsegError(f"--min-area {min_area:g} / --simplify {simplify:g}: give sizes >= 0 (map units)")
    tol_given = None if regularize_tolerance is None else float(regularize_tolerance)
    if tol_given is not None and not 0 < tol_given < math.inf:
        raise CtsegError(f"--regularize-tolerance {regularize_tolerance:g}: give a size > 0 (map units)")
    regularize_min_iou = MIN_IOU if regularize_min_iou is None else float(regularize_min_iou)
    if not 0 < regularize_min_iou <= 1:
        raise CtsegError(f"--regularize-min-iou {regularize_min_iou:g}: give a fraction in (0, 1]")
    driver = output_driver(out, overwrite)
    if not path.is_file():
        raise CtsegError(f"class raster {path} does not exist; pass the <stem>_pred.tif that ctseg predict wrote")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # said once below, in ctseg's words
        try:
            src = open_checked(path)  # a VRT's sources checked first (ctseg.safety.rasters)
        except RasterioIOError as err:
            raise CtsegError(f"class raster {path} cannot be read ({str(err).splitlines()[0]})") from None
    with src:
        if not np.issubdtype(np.dtype(src.dtypes[0]), np.integer):
            raise CtsegError(f"{path.name} is {src.dtypes[0]}, not a class map; pass an integer (uint8) class raster")
        names, why = _stored_names(src)
        indices = _resolve_classes(tokens, names, why, path, src.nodata)
        transform, crs = src.transform, src.crs
        # the pixel frame: the identity, or (no CRS) its flip that ctseg predict gives an image without georeference
        georeferenced = not (transform.is_identity or (crs is None and tuple(transform)[:6] == (1, 0, 0, 0, -1, 0)))
        if not georeferenced:
            _warn(
                f"{path.name} is not georeferenced: polygons, areas, --min-area and --simplify are in pixels; "
                "georeference the raster (or predict from a georeferenced GeoTIFF) for map units"
            )
        elif crs is None:
            _warn(f"{path.name} has no CRS: polygons are in its transform's units and the output has no CRS")
        elif crs.is_geographic:
            if min_area > 0 or simplify > 0 or regularize:
                raise CtsegError(
                    f"{path.name}: CRS {crs.to_string()} is geographic (degrees), so --min-area / --simplify / "
                    "--regularize in metres cannot be applied; reproject it to a projected CRS first, e.g. "
                    "gdalwarp -t_srs EPSG:32633 (your UTM zone) -r near"
                )
            _warn(f"{path.name}: CRS {crs.to_string()} is geographic: the area attribute is in square degrees")
        pixel_area = abs(transform.a * transform.e - transform.b * transform.d)
        tolerance = TOLERANCE_PIXELS * math.sqrt(pixel_area) if tol_given is None else tol_given
        coeffs = np.array([[transform.a, transform.b], [transform.d, transform.e]])
        offset = np.array([transform.c, transform.f])
        block_h, block_w = block_shape(src, block_size)
        n_workers = resolve_workers(workers, math.ceil(src.height / block_h) * math.ceil(src.width / block_w))
        stats = PixelStats(src, path, confidence_tif, entropy_tif)
        fields = ["class", "class_index", "area", *stats.fields]
        rows: dict[str, list] = {f: [] for f in fields}
        geoms: list = []

        def finish(index: int, polys: np.ndarray, stat_rows: np.ndarray) -> None:
            """Holes, ``min_area``, the map's coordinates, regularisation, simplification and orientation of a
            batch of final polygons of class ``index`` (pixel coordinates, collinear vertices gone), as arrays."""
            if fill_holes:
                holed = shapely.get_num_interior_rings(polys) > 0
                polys[holed] = shapely.polygons(shapely.get_exterior_ring(polys[holed]))
            keep = ~(shapely.area(polys) * pixel_area < min_area)
            polys, stat_rows = polys[keep], stat_rows[keep]
            polys = shapely.transform(polys, lambda xy: xy @ coeffs.T + offset)
            if regularize:
                polys = _each(polys, lambda g: regularize_polygon(g, tolerance, min_iou=regularize_min_iou))
            if simplify > 0:
                polys = shapely.simplify(polys, simplify, preserve_topology=True)
            keep = ~shapely.is_empty(polys)
            # exterior counter-clockwise, holes clockwise (as RFC 7946 asks)
            polys, stat_rows = shapely.orient_polygons(polys[keep], exterior_cw=False), stat_rows[keep]
            geoms.append(polys)
            rows["class"].append(np.full(len(polys), names[index] if names is not None else str(index), object))
            rows["class_index"].append(np.full(len(polys), index, np.int32))
            rows["area"].append(shapely.area(polys))
            for field, values in stats.attributes(stat_rows).items():
                rows[field].append(values)

        try:
            with contextlib.ExitStack() as stack:
                blocks = None
                if n_workers > 1:
                    pool = stack.enter_context(BlockPool(path, confidence_tif, entropy_tif, indices, n_workers))
                    blocks = pool.map(w for row in block_windows(src.height, src.width, block_h, block_w) for w in row)
                for index, polys, stat_rows in stream_parts(src, indices, block_h, block_w, stats, blocks):
                    if len(polys):
                        finish(index, polys, stat_rows)
        finally:
            stats.close()
    columns = {f: np.concatenate(rows[f]) if rows[f] else np.empty(0) for f in fields}
    write_polygons(out, driver, layer or out.stem, crs, columns, np.concatenate(geoms) if geoms else [], fields)
    return out


def _each(polys: np.ndarray, fn) -> np.ndarray:
    """``fn`` of each geometry of ``polys``, as an object array."""
    out = np.empty(len(polys), dtype=object)
    out[:] = [fn(g) for g in polys]
    return out
