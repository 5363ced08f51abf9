"""The block engine of ``ctseg vectorize``: the class raster read by blocks, each block polygonised per class, and
the polygons cut by block edges merged exactly.

Each block window is polygonised per class with :func:`rasterio.features.shapes` (4-connectivity: pixels that
touch only at a corner are separate polygons), in global pixel coordinates (integers, so shared block edges match
exactly). A polygon that does not reach its block's inner border is final at once; one that does is kept aside
and merged with its neighbours from the adjacent blocks (:func:`shapely.unary_union` per connected group) once
the block row is done. After each block row only the merged polygons that still reach the next row stay in
memory, so memory is bounded by the border polygons of one block row (plus whatever spans several rows), not by
the raster. A building cut by block edges comes out as one polygon; its statistics rows
(:mod:`ctseg.vectorize.stats`) are combined.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain

import numpy as np

from ctseg.errors import CtsegError
from ctseg.vectorize.io import read_band
from ctseg.vectorize.regularize import collinear_keep, drop_collinear_all
from ctseg.vectorize.stats import COLUMNS, PixelStats, combine

#: Default block side in pixels (rounded to whole internal blocks of the file).
DEFAULT_BLOCK = 1024

__all__ = [
    "DEFAULT_BLOCK",
    "Part",
    "block_parts",
    "block_shape",
    "block_windows",
    "merge_parts",
    "polygonise",
    "stream_parts",
]


@dataclass
class Part:
    """A polygon in global pixel coordinates with its statistics row (:data:`ctseg.vectorize.stats.COLUMNS`)."""

    geom: object  # shapely Polygon
    stats: np.ndarray


def block_windows(height: int, width: int, block_h: int, block_w: int) -> Iterator[list[tuple[int, int, int, int]]]:
    """Block rows of (row_off, col_off, h, w) windows in row-major order."""
    for r in range(0, height, block_h):
        yield [(r, c, min(block_h, height - r), min(block_w, width - c)) for c in range(0, width, block_w)]


def block_shape(src, block_size: int | None) -> tuple[int, int]:
    """(rows, columns) of a block: ``block_size`` square, or whole internal blocks of ``src`` of about
    :data:`DEFAULT_BLOCK` pixels."""
    if block_size is not None:
        if isinstance(block_size, bool) or int(block_size) < 1:
            raise CtsegError(f"block size {block_size!r}: give a positive number of pixels")
        return int(block_size), int(block_size)
    bh, bw = src.block_shapes[0]
    return bh * max(1, DEFAULT_BLOCK // bh), bw * max(1, DEFAULT_BLOCK // bw)


def polygonise(mask: np.ndarray, row_off: int, col_off: int) -> tuple[np.ndarray, np.ndarray]:
    """Polygons (global pixel coordinates, valid) of the True pixels of ``mask``, 4-connected, in GDAL's order,
    and a mask of those that still need :func:`~ctseg.vectorize.regularize.drop_collinear` (those that reach the
    block's edge and the pieces of a pinched polygon; the others come without collinear vertices).

    Built as arrays (:func:`shapely.linearrings` / :func:`shapely.polygons` from the coordinates end to end). A
    ring can touch itself or another ring only at a pixel corner where the mask is diagonal (two pixels of the
    class at opposite corners, two not); only polygons with a vertex there are checked with
    :func:`shapely.is_valid`, and an invalid one (a ring pinched at the corner) is split into valid pieces by
    :func:`shapely.make_valid`."""
    import shapely
    from affine import Affine
    from rasterio.features import shapes

    found = [
        g["coordinates"]
        for g, _ in shapes(
            mask.view(np.uint8), mask=mask, connectivity=4, transform=Affine.translation(col_off, row_off)
        )
    ]
    if not found:
        return np.empty(0, dtype=object), np.zeros(0, bool)
    rings = list(chain.from_iterable(found))
    ring_count = np.fromiter(map(len, found), np.intp, len(found))
    closed = np.fromiter(map(len, rings), np.intp, len(rings))  # with the closing repeat
    coords = np.fromiter(chain.from_iterable(chain.from_iterable(rings)), np.float64, 2 * int(closed.sum()))
    coords = coords.reshape(-1, 2)
    ring_poly = np.repeat(np.arange(len(found)), ring_count)
    coord_ring = np.repeat(np.arange(len(rings)), closed)
    poly_start = np.concatenate([[0], np.cumsum(np.add.reduceat(closed, np.cumsum(ring_count) - ring_count))[:-1]])
    # vertices at diagonal corners: (x, y) is the corner between pixels (y-1, x-1), (y-1, x), (y, x-1), (y, x)
    pad = np.pad(mask, 1).view(np.uint8)
    x = coords[:, 0].astype(np.intp) - col_off
    y = coords[:, 1].astype(np.intp) - row_off
    at = y * pad.shape[1] + x
    flat = pad.ravel()
    code = flat[at] + 2 * flat[at + 1] + 4 * flat[at + pad.shape[1]] + 8 * flat[at + pad.shape[1] + 1]
    pinch = np.logical_or.reduceat((code == 6) | (code == 9), poly_start)
    # polygons that reach the block's edge may be merged: their vertices stay as GDAL gave them (so the merge is
    # that of the old one-at-a-time path); the collinear vertices of the others go now, on the integer coordinates
    edge = (x == 0) | (y == 0) | (x == mask.shape[1]) | (y == mask.shape[0])
    raw = pinch | np.logical_or.reduceat(edge, poly_start)
    is_open = np.ones(len(coords), bool)
    is_open[np.cumsum(closed) - 1] = False
    xy, xy_ring = coords[is_open], coord_ring[is_open]
    keep, _ = collinear_keep(xy, closed - 1)
    keep |= raw[ring_poly[xy_ring]]
    xy, xy_ring = xy[keep], xy_ring[keep]
    polys = shapely.polygons(shapely.linearrings(xy, indices=xy_ring), indices=ring_poly)
    if not pinch.any():
        return polys, raw
    pinched = np.flatnonzero(pinch)
    invalid = set(pinched[~shapely.is_valid(polys[pinched])].tolist())
    pieces = [polygons_of(shapely.make_valid(g)) if i in invalid else [g] for i, g in enumerate(polys.tolist())]
    out = np.empty(sum(map(len, pieces)), dtype=object)
    out[:] = list(chain.from_iterable(pieces))
    return out, np.repeat(raw, [len(p) for p in pieces])


def polygons_of(geom) -> list:
    """The non-empty polygons of ``geom`` (a Polygon, MultiPolygon or collection)."""
    from shapely.geometry import MultiPolygon, Polygon

    if isinstance(geom, Polygon):
        return [] if geom.is_empty else [geom]
    if isinstance(geom, MultiPolygon):
        return [g for g in geom.geoms if not g.is_empty]
    return [g for part in getattr(geom, "geoms", ()) for g in polygons_of(part)]


def merge_parts(parts: list[Part]) -> list[Part]:
    """Union the parts that touch each other (connected groups); each group may come back as several polygons
    (parts meeting only at a corner), its statistics combined over the members inside each."""
    import shapely

    if len(parts) < 2:
        return parts
    geoms = np.array([p.geom for p in parts], dtype=object)
    left, right = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    parent = list(range(len(parts)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(left.tolist(), right.tolist(), strict=True):
        if i != j:
            a, b = find(i), find(j)
            if a != b:
                parent[max(a, b)] = min(a, b)
    groups: dict[int, list[int]] = {}
    for i in range(len(parts)):
        groups.setdefault(find(i), []).append(i)
    merged: list[Part] = []
    for members in groups.values():
        if len(members) == 1:
            merged.append(parts[members[0]])
            continue
        polys = polygons_of(shapely.unary_union([parts[i].geom for i in members]))
        if len(polys) == 1:
            merged.append(Part(polys[0], combine(np.array([parts[i].stats for i in members]))))
            continue
        # several pieces: give each the statistics of the members inside it
        for poly in polys:
            inside = [parts[i].stats for i in members if poly.contains(parts[i].geom.representative_point())]
            merged.append(Part(poly, combine(np.array(inside).reshape(len(inside), len(COLUMNS)))))
    return merged


def block_parts(
    src, stats: PixelStats, indices: list[int], window: tuple[int, int, int, int]
) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """The work of one block ``window = (row_off, col_off, h, w)`` of the class raster ``src`` (band 1): per class
    of ``indices`` with pixels in it, ``(index, polygons, rows, border polygons, border rows)``. The polygons are
    final (they do not reach an inner block edge; collinear vertices gone), the border ones wait for the merge
    (:func:`stream_parts`). Independent of every other block, so blocks can run in worker processes
    (:mod:`ctseg.vectorize.workers`)."""
    import rasterio
    import shapely

    height, width = src.height, src.width
    row_off, col_off, h, w = window
    win = rasterio.windows.Window(col_off, row_off, w, h)
    data = read_band(src, 1, win, "class raster")
    stats.read(win)
    out = []
    for index in indices:
        mask = data == index
        if not mask.any():
            continue
        polys, redo = polygonise(mask, row_off, col_off)
        rows = stats.measure(polys, mask, row_off, col_off)
        x0, y0, x1, y1 = shapely.bounds(polys).T
        on_border = (
            ((x0 == col_off) & (col_off > 0))
            | ((x1 == col_off + w) & (col_off + w < width))
            | ((y0 == row_off) & (row_off > 0))
            | ((y1 == row_off + h) & (row_off + h < height))
        )
        final = ~on_border
        if redo.any():
            polys[final & redo] = drop_collinear_all(polys[final & redo])
        out.append((index, polys[final], rows[final], polys[on_border], rows[on_border]))
    return out


def stream_parts(
    src,
    indices: list[int],
    block_h: int,
    block_w: int,
    stats: PixelStats,
    blocks: Iterator[list[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]] | None = None,
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Batches (class index, polygons, statistics rows) of the final polygons of the classes ``indices`` in the
    class raster ``src`` (band 1), block by block (module docstring): global pixel coordinates, without collinear
    vertices (:func:`~ctseg.vectorize.regularize.drop_collinear`), in the order of one polygon at a time.

    ``blocks``: the :func:`block_parts` of every window of :func:`block_windows` in row-major order, computed
    elsewhere (:class:`ctseg.vectorize.workers.BlockPool`); by default each block is computed here. The merge and
    the order of the output are the same either way."""
    height, width = src.height, src.width
    rows_of_blocks = list(block_windows(height, width, block_h, block_w))
    if blocks is None:
        blocks = (block_parts(src, stats, indices, window) for row in rows_of_blocks for window in row)
    pending: dict[int, list[Part]] = {c: [] for c in indices}
    for block_row in rows_of_blocks:
        row_bottom = block_row[0][0] + block_row[0][2]
        for _ in block_row:
            for index, polys, rows, border_polys, border_rows in next(blocks):
                pending[index].extend(Part(g, r) for g, r in zip(border_polys, border_rows, strict=True))
                yield index, polys, rows
        for index in indices:
            merged = merge_parts(pending[index])
            go_on = np.array([p.geom.bounds[3] == row_bottom and row_bottom < height for p in merged], bool)
            pending[index] = [p for p, g in zip(merged, go_on, strict=True) if g]  # may continue in the next row
            yield index, *_batch([p for p, g in zip(merged, go_on, strict=True) if not g])
    for index in indices:
        yield index, *_batch(pending[index])


def _batch(parts: list[Part]) -> tuple[np.ndarray, np.ndarray]:
    """(polygons without collinear vertices, statistics rows) of ``parts``."""
    geoms = np.empty(len(parts), dtype=object)
    geoms[:] = [p.geom for p in parts]
    rows = np.array([p.stats for p in parts]).reshape(len(parts), len(COLUMNS))
    return drop_collinear_all(geoms), rows
