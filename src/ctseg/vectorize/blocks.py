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

import numpy as np

from ctseg.errors import CtsegError
from ctseg.vectorize.io import read_band
from ctseg.vectorize.stats import COLUMNS, PixelStats, combine

#: Default block side in pixels (rounded to whole internal blocks of the file).
DEFAULT_BLOCK = 1024

__all__ = ["DEFAULT_BLOCK", "Part", "block_shape", "block_windows", "merge_parts", "polygonise", "stream_parts"]


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


def polygonise(mask: np.ndarray, row_off: int, col_off: int) -> list:
    """Polygons (global pixel coordinates, valid) of the True pixels of ``mask``, 4-connected."""
    import shapely
    from affine import Affine
    from rasterio.features import shapes
    from shapely.geometry import shape

    geoms = [
        shape(g)
        for g, _ in shapes(
            mask.view(np.uint8), mask=mask, connectivity=4, transform=Affine.translation(col_off, row_off)
        )
    ]
    out = []
    for geom in geoms:
        if not geom.is_valid:  # a ring pinched at a corner: split into valid pieces
            geom = shapely.make_valid(geom)
        out.extend(polygons_of(geom))
    return out


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


def stream_parts(src, indices: list[int], block_h: int, block_w: int, stats: PixelStats) -> Iterator[tuple[int, Part]]:
    """(class index, final part) of every polygon of the classes ``indices`` in the class raster ``src`` (band 1),
    block by block (module docstring)."""
    import rasterio

    height, width = src.height, src.width
    pending: dict[int, list[Part]] = {c: [] for c in indices}
    for block_row in block_windows(height, width, block_h, block_w):
        row_bottom = block_row[0][0] + block_row[0][2]
        for row_off, col_off, h, w in block_row:
            window = rasterio.windows.Window(col_off, row_off, w, h)
            data = read_band(src, 1, window, "class raster")
            stats.read(window)
            for index in indices:
                mask = data == index
                if not mask.any():
                    continue
                polys = polygonise(mask, row_off, col_off)
                rows = stats.measure(polys, mask, row_off, col_off)
                for poly, row in zip(polys, rows, strict=True):
                    x0, y0, x1, y1 = poly.bounds
                    on_border = (
                        (x0 == col_off and col_off > 0)
                        or (x1 == col_off + w and col_off + w < width)
                        or (y0 == row_off and row_off > 0)
                        or (y1 == row_off + h and row_off + h < height)
                    )
                    if on_border:
                        pending[index].append(Part(poly, row))
                    else:
                        yield index, Part(poly, row)
        for index in indices:
            keep: list[Part] = []
            for part in merge_parts(pending[index]):
                if part.geom.bounds[3] == row_bottom and row_bottom < height:
                    keep.append(part)  # may continue in the next block row
                else:
                    yield index, part
            pending[index] = keep
    for index in indices:
        for part in pending[index]:
            yield index, part
