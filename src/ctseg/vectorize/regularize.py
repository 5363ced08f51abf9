"""Outline clean-up: exact removal of collinear vertices on the pixel grid, and regularised building footprints
(``ctseg vectorize --regularize``: straight walls, right angles where the building has them).

**Collinear vertices** (:func:`drop_collinear`). Polygons merged across block seams keep the vertices where the
seam crossed a straight edge. In pixel coordinates every vertex is an integer point, so the test is exact: vertex
``p`` with neighbours ``a`` (before) and ``b`` (after) is dropped when the cross product
``(p − a) × (b − p) = 0`` in integer arithmetic and the ring goes on forward (``(p − a) · (b − p) ≥ 0``; a
repeated point has both zero). Dropping such a vertex changes neither the point set nor, on integer
coordinates, the shoelace area by a single bit. Coordinates that are not all integers are left alone.
:func:`collinear_keep` applies the same rule to many rings laid end to end in one coordinate array (how
:mod:`ctseg.vectorize.blocks` cleans a whole block's polygons at once; integers below 2²⁵ are tested in float64,
exact because their products stay below 2⁵³), :func:`drop_collinear_all` to an array of polygons.

**Regularisation** (:func:`regularize_polygon`, in map units, each polygon on its own). With tolerance ``t``:

1. *Simplify.* ``S`` = Douglas–Peucker of the outline ``P`` with tolerance ``t``, topology kept
   (:func:`shapely.simplify`); ``S``'s vertices are a subset of ``P``'s, so each edge ``j`` of ``S`` stands for
   the run of ``P``'s pixel edges between its two vertices (its *support*).
2. *Dominant direction* ``θ`` (candidates, both tried): (a) the length²-weighted circular mean of the edge angles
   of ``S`` modulo 90°, ``θ = ¼ atan2(Σ wᵢ sin 4φᵢ, Σ wᵢ cos 4φᵢ)`` with ``wᵢ = ℓᵢ²`` (the factor 4 makes
   directions 90° apart the same, so the walls and their perpendiculars vote together; long walls dominate);
   (b) the direction of the longest side of the minimum rotated rectangle of ``P`` (tried only when it differs
   from (a) by more than 0.25°).
3. *Snap.* In the frame rotated by ``−θ``, each edge of ``S`` is horizontal (``|Δx| ≥ |Δy|``) or vertical.
   Consecutive edges of one kind form a run (a wall); its line is ``y = c`` (or ``x = c``) with ``c`` the
   length-weighted mean of the support's pixel-edge midpoints (``Σ ℓₖ mₖ / Σ ℓₖ``: the stair of a rasterised
   wall lies evenly on both sides of the wall). Runs alternate horizontal / vertical around the ring; the
   vertices are the crossings of consecutive lines, so every angle is 90°.
4. *Merge short steps.* An edge shorter than ``t`` (a step between two parallel walls) is removed and its two
   neighbouring walls become one, at their support-weighted mean offset; repeated from the shortest edge while
   the ring has more than 4 edges. Holes are snapped with the same ``θ``.
5. *Check the fit.* The result is kept when it is a valid polygon and ``IoU(snapped, P) ≥ min_iou``
   (default :data:`MIN_IOU`); of the two candidate directions the better IoU wins. Otherwise — a round tank, a
   curved or many-angled building — the outline is ``S``: simplified, never forced into a box.

A rotated rectangle comes back as 4 corners (5 coordinates with the closing one), an L as 6, each within about a
quarter pixel of the true walls. Each polygon is regularised alone, so two buildings that touch may overlap or
part by up to about ``t`` after it.
"""

from __future__ import annotations

import math

import numpy as np

#: Default smallest IoU of the snapped outline with the pixel outline for it to be kept.
MIN_IOU = 0.86
#: Default tolerance in pixels (times the pixel size in map units).
TOLERANCE_PIXELS = 1.5
#: Candidate directions closer than this (radians, 0.25°) are tried once.
SAME_DIRECTION = math.radians(0.25)

__all__ = [
    "MIN_IOU",
    "TOLERANCE_PIXELS",
    "collinear_keep",
    "drop_collinear",
    "drop_collinear_all",
    "regularize_polygon",
]


# ----------------------------------------------------------------------------------------------- collinear
def _corners(xy: np.ndarray) -> np.ndarray | None:
    """Mask of the vertices of an open ring (n × 2, integer-valued) that are corners; ``None``: not integers."""
    p = xy.astype(np.int64)
    if not np.array_equal(p, xy):
        return None
    a = p - np.roll(p, 1, axis=0)
    b = np.roll(p, -1, axis=0) - p
    cross = a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]
    dot = a[:, 0] * b[:, 0] + a[:, 1] * b[:, 1]
    return (cross != 0) | (dot < 0)


def drop_collinear(poly):
    """``poly`` (a shapely Polygon on integer coordinates) without the vertices that lie on a straight line
    through their neighbours (module docstring); the same polygon when there are none."""
    import shapely

    rings = [poly.exterior, *poly.interiors]
    kept, changed = [], False
    for ring in rings:
        xy = shapely.get_coordinates(ring)[:-1]
        mask = _corners(xy)
        if mask is None or mask.all() or mask.sum() < 3:
            kept.append(xy)
            continue
        kept.append(xy[mask])
        changed = True
    return shapely.Polygon(kept[0], kept[1:]) if changed else poly


def collinear_keep(xy: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`drop_collinear`'s rule for many open rings at once. ``xy`` (n × 2): the rings' coordinates end to end
    (ring k has ``lengths[k]`` ≥ 1 vertices, no closing repeat). Returns (mask of the vertices to keep (n,), mask
    of the rings that lose vertices): a ring not all on integers, all corners, or with fewer than 3 corners is
    kept whole, as in :func:`drop_collinear`. Integers below 2²⁵ in magnitude are tested in float64 (their
    differences' products stay below 2⁵³, so exact), larger ones in int64."""
    lengths = np.asarray(lengths, dtype=np.intp)
    if not len(xy):
        return np.zeros(0, bool), np.zeros(len(lengths), bool)
    starts = np.cumsum(lengths) - lengths
    ends = starts + lengths - 1
    nxt = np.arange(1, len(xy) + 1)
    nxt[ends] = starts
    prev = np.arange(-1, len(xy) - 1)
    prev[starts] = ends
    p = xy if np.abs(xy).max() < 2**25 else xy.astype(np.int64)
    b = p[nxt] - p  # the edge leaving each vertex; the edge arriving is b[prev]
    a = b[prev]
    corner = (a[:, 0] * b[:, 1] != a[:, 1] * b[:, 0]) | (a[:, 0] * b[:, 0] + a[:, 1] * b[:, 1] < 0)
    integer = np.logical_and.reduceat((np.floor(xy) == xy).all(axis=1), starts)
    count = np.add.reduceat(corner, starts)
    changed = integer & (count < lengths) & (count >= 3)
    return corner | ~np.repeat(changed, lengths), changed


def drop_collinear_all(polys: np.ndarray) -> np.ndarray:
    """:func:`drop_collinear` of each polygon of the array ``polys`` (vectorised: one pass over all coordinates;
    only the polygons that lose vertices are rebuilt, the others are the same objects)."""
    import shapely

    polys = np.asarray(polys, dtype=object)
    if not len(polys):
        return polys
    rings, ring_poly = shapely.get_rings(polys, return_index=True)
    coords, coord_ring = shapely.get_coordinates(rings, return_index=True)
    closed = np.bincount(coord_ring, minlength=len(rings))
    is_open = np.ones(len(coords), bool)
    is_open[np.cumsum(closed) - 1] = False  # the closing repeat of each ring
    xy, xy_ring = coords[is_open], coord_ring[is_open]
    keep, changed = collinear_keep(xy, closed - 1)
    if not changed.any():
        return polys
    poly_changed = np.zeros(len(polys), bool)
    poly_changed[ring_poly[changed]] = True
    take = keep & poly_changed[ring_poly][xy_ring]
    ring_ids = xy_ring[take]
    new_rings = shapely.linearrings(xy[take], indices=_dense(ring_ids))
    out = polys.copy()
    out[poly_changed] = shapely.polygons(new_rings, indices=_dense(ring_poly[np.unique(ring_ids)]))
    return out


def _dense(ids: np.ndarray) -> np.ndarray:
    """Increasing ids renumbered 0, 1, 2, … (equal ids stay equal)."""
    return np.concatenate([[0], np.cumsum(ids[1:] != ids[:-1])]) if len(ids) else ids


# ------------------------------------------------------------------------------------------ regularisation
def _rotate(xy: np.ndarray, theta: float, origin: np.ndarray) -> np.ndarray:
    """Coordinates in the frame rotated by ``−theta`` about ``origin``."""
    c, s = math.cos(theta), math.sin(theta)
    d = xy - origin
    return np.column_stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]])


def _unrotate(xy: np.ndarray, theta: float, origin: np.ndarray) -> np.ndarray:
    c, s = math.cos(theta), math.sin(theta)
    return np.column_stack([c * xy[:, 0] - s * xy[:, 1], s * xy[:, 0] + c * xy[:, 1]]) + origin


def _directions(simple, poly) -> list[float]:
    """Candidate dominant directions θ (radians, in [−45°, 45°)): the edge-angle mean of ``simple`` modulo 90°
    and the minimum rotated rectangle's (module docstring, step 2)."""
    import shapely

    c = s = 0.0
    for ring in [simple.exterior, *simple.interiors]:
        d = np.diff(shapely.get_coordinates(ring), axis=0)
        w = (d * d).sum(axis=1)
        phi = np.arctan2(d[:, 1], d[:, 0])
        c += float((w * np.cos(4 * phi)).sum())
        s += float((w * np.sin(4 * phi)).sum())
    found = [math.atan2(s, c) / 4]
    box = shapely.get_coordinates(shapely.oriented_envelope(poly))
    if len(box) >= 4:
        sides = np.diff(box[:3], axis=0)
        side = sides[int(np.argmax((sides * sides).sum(axis=1)))]
        found.append(math.atan2(side[1], side[0]))
    out: list[float] = []
    for theta in found:
        theta = (theta + math.pi / 4) % (math.pi / 2) - math.pi / 4
        if all(abs((theta - t + math.pi / 4) % (math.pi / 2) - math.pi / 4) > SAME_DIRECTION for t in out):
            out.append(theta)
    return out


def _positions(xy: np.ndarray, simple_xy: np.ndarray) -> list[int] | None:
    """The sorted positions in the open ring ``xy`` of the vertices of its simplification ``simple_xy``."""
    key, skey = xy[:, 0] + 1j * xy[:, 1], simple_xy[:, 0] + 1j * simple_xy[:, 1]
    order = np.argsort(key)
    at = np.clip(np.searchsorted(key[order], skey), 0, len(xy) - 1)
    if not np.array_equal(key[order][at], skey):
        return None
    pos = sorted(set(order[at].tolist()))
    return pos if len(pos) >= 3 else None


def _snap_ring(full: np.ndarray, pos: list[int], tol: float) -> np.ndarray | None:
    """Steps 3-4 for one ring: ``full`` the rotated pixel outline (open, n × 2), ``pos`` the positions of the
    simplified ring's vertices in it. The snapped ring's vertices in the rotated frame, or ``None`` when it cannot
    be snapped."""
    n = len(full)
    seg = np.roll(full, -1, axis=0) - full  # pixel edge k: full[k] → full[k + 1]
    seg_len = np.hypot(seg[:, 0], seg[:, 1])
    mid = full + seg / 2
    csum_len = np.concatenate([[0.0], np.cumsum(np.concatenate([seg_len, seg_len]))])
    csum_mx = np.concatenate([[0.0], np.cumsum(np.concatenate([seg_len * mid[:, 0]] * 2))])
    csum_my = np.concatenate([[0.0], np.cumsum(np.concatenate([seg_len * mid[:, 1]] * 2))])
    kinds, offsets, weights = [], [], []
    for j, start in enumerate(pos):
        end = pos[(j + 1) % len(pos)] + (n if j + 1 == len(pos) else 0)
        d = full[end % n] - full[start]
        horizontal = abs(d[0]) >= abs(d[1])
        w = csum_len[end] - csum_len[start]
        m = (csum_my if horizontal else csum_mx)[end] - (csum_my if horizontal else csum_mx)[start]
        if kinds and kinds[-1] == horizontal:
            offsets[-1] += m
            weights[-1] += w
        else:
            kinds.append(horizontal)
            offsets.append(m)
            weights.append(w)
    if len(kinds) > 1 and kinds[0] == kinds[-1]:  # the run that wraps around the ring's start
        offsets[0] += offsets.pop()
        weights[0] += weights.pop()
        kinds.pop()
    if len(kinds) < 4 or len(kinds) % 2 or min(weights) <= 0:
        return None
    kind = np.array(kinds)
    w = np.array(weights)
    c = np.array(offsets) / w
    while len(c) > 4:  # step 4: the shortest edge, if shorter than tol, goes and its neighbours merge
        length = np.abs(np.roll(c, -1) - np.roll(c, 1))
        i = int(np.argmin(length))
        if length[i] >= tol:
            break
        r = len(c)
        a, b = (i - 1) % r, (i + 1) % r
        merged_w = w[a] + w[b]
        merged_c = (c[a] * w[a] + c[b] * w[b]) / merged_w
        keep = np.ones(r, bool)
        keep[[i, b]] = False
        c[a], w[a] = merged_c, merged_w + w[i]
        c, w, kind = c[keep], w[keep], kind[keep]
    nxt_c = np.roll(c, -1)
    # vertex i: crossing of line i and line i + 1 (one horizontal y = c, one vertical x = c)
    return np.column_stack([np.where(kind, nxt_c, c), np.where(kind, c, nxt_c)])


def _snap(rings_pos: list, theta: float, tol: float):
    """The polygon of ``rings_pos`` (per ring: its open coordinates and ``_positions``) snapped to ``theta``
    and its perpendicular, or ``None``."""
    import shapely

    origin = rings_pos[0][0][0]
    rings = []
    for xy, pos in rings_pos:
        snapped = _snap_ring(_rotate(xy, theta, origin), pos, tol)
        if snapped is None:
            return None
        rings.append(_unrotate(snapped, theta, origin))
    try:
        out = shapely.Polygon(rings[0], rings[1:])
    except (ValueError, shapely.errors.GEOSException):
        return None
    return out if out.is_valid and not out.is_empty else None


def regularize_polygon(poly, tolerance: float, *, min_iou: float = MIN_IOU):
    """``poly`` (a shapely Polygon in map units) with straight, right-angled walls, or simplified with
    ``tolerance`` when it does not fit that well (module docstring). Sizes in ``poly``'s units."""
    import shapely

    if not tolerance > 0:
        raise ValueError(f"tolerance {tolerance!r}: give a size > 0")
    simple = shapely.simplify(poly, tolerance, preserve_topology=True)
    if simple.is_empty or simple.geom_type != "Polygon" or len(simple.interiors) != len(poly.interiors):
        return simple
    rings_pos = []
    for ring, sring in zip([poly.exterior, *poly.interiors], [simple.exterior, *simple.interiors], strict=True):
        xy = shapely.get_coordinates(ring)[:-1]
        pos = _positions(xy, shapely.get_coordinates(sring)[:-1])
        if pos is None:
            return simple
        rings_pos.append((xy, pos))
    best, best_iou = simple, min_iou
    for theta in _directions(simple, poly):
        snapped = _snap(rings_pos, theta, tolerance)
        if snapped is not None and (iou := _iou(snapped, poly)) >= best_iou:
            best, best_iou = snapped, iou
    return best


def _iou(a, b) -> float:
    import shapely

    inter = shapely.intersection(a, b).area
    return inter / (a.area + b.area - inter)
