"""Shape scores of matched polygon pairs (:mod:`ctseg.evaluation.objects`), vectorised over many pairs at once.

**PoLiS** (Avbelj, Müller, Bamler 2015). For polygons ``A`` and ``B`` with vertices ``a_1 … a_q`` and
``b_1 … b_r``::

    p(A, B) = 1/(2q) Σ_j d(a_j, ∂B) + 1/(2r) Σ_k d(b_k, ∂A)

where ``d(x, ∂P)`` is the distance from the point ``x`` to the *boundary* of ``P`` (the nearest point on any of
its edges, not the nearest vertex). Vertices are those of every ring (exterior and holes, of every part of a
MultiPolygon), each counted once (a ring's closing repeat of its first vertex is dropped). A unit square against
the same square shifted by 0.1 along x scores 0.05: two vertices of each lie on the other's edges, the other two
are 0.1 away, so each half is (0.1 + 0.1) / 8.

**Boundary F1 in map units.** For a pair (truth ``T``, prediction ``P``) and a tolerance ``τ``: precision is the
share of the length of ``∂P`` that lies within ``τ`` of ``∂T``, recall the share of ``∂T`` within ``τ`` of
``∂P``, F1 = 2PR / (P + R) (0 when both are 0). The lengths are measured by sampling: every boundary is cut into
pieces no longer than the step ``s`` (:func:`sampling_step`: ``τ / 10``; :func:`shapely.segmentize`), each
piece's midpoint is tested against the other boundary and the piece counts with its length — so a piece is
misjudged only where the distance crosses ``τ`` inside it, and the measured length is off by at most ``s`` per
crossing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["boundary_match", "polis", "sampling_step"]

#: Points measured at once (bounds the temporaries of :func:`_to_boundary`).
CHUNK = 1 << 16


def sampling_step(tolerance: float) -> float:
    """The longest boundary piece the boundary F1 samples at tolerance ``tolerance``: ``tolerance / 10``."""
    return float(tolerance) / 10.0


def _rings(geoms: Any) -> tuple[Any, np.ndarray]:
    """Every ring of ``geoms`` as LineStrings, with the index of the geometry each belongs to."""
    import shapely

    lines, owner = shapely.get_parts(shapely.boundary(np.asarray(geoms, dtype=object)), return_index=True)
    return lines, owner


def _pieces(lines: Any, owner: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The straight pieces of ``lines``: start (P, 2), end (P, 2) and the geometry each belongs to."""
    import shapely

    coords, line = shapely.get_coordinates(lines, return_index=True)
    same = line[1:] == line[:-1]  # consecutive coordinates of one ring
    return coords[:-1][same], coords[1:][same], owner[line[:-1][same]]


def _to_segment(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance from each point ``p[i]`` to the segment ``a[i]``–``b[i]``."""
    d = b - a
    length2 = np.einsum("ij,ij->i", d, d)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(length2 > 0, np.einsum("ij,ij->i", p - a, d) / length2, 0.0)
    nearest = a + np.clip(t, 0.0, 1.0)[:, None] * d
    return np.hypot(*(p - nearest).T)


def _to_boundary(points: np.ndarray, which: np.ndarray, geoms: np.ndarray) -> np.ndarray:
    """Distance from each point ``points[k]`` to the boundary of ``geoms[which[k]]`` (inf for an empty one).

    Plain numpy, no GEOS point objects (their creation dominated): every point meets every segment of its
    own geometry's rings — step ``j`` takes the ``j``-th segment of each geometry that has one, for the points
    (sorted by their geometry's segment count, most first) whose geometry has more than ``j``."""
    a, b, owner = _pieces(*_rings(geoms))
    order = np.argsort(owner, kind="stable")
    a, b, owner = a[order], b[order], owner[order]
    count = np.bincount(owner, minlength=len(geoms))
    first = np.concatenate(([0], np.cumsum(count)[:-1]))
    out = np.empty(len(points))
    for lo in range(0, len(points), CHUNK):  # bounded temporaries
        pts, own = points[lo : lo + CHUNK], which[lo : lo + CHUNK]
        m = count[own]
        by = np.argsort(-m, kind="stable")
        pts, own, neg = pts[by], own[by], -m[by]
        best = np.full(len(pts), np.inf)
        for j in range(int(m.max()) if len(m) else 0):
            c = int(np.searchsorted(neg, -j, side="left"))  # the points whose geometry has more than j segments
            seg = first[own[:c]] + j
            np.minimum(best[:c], _to_segment(pts[:c], a[seg], b[seg]), out=best[:c])
        out[lo + by] = best
    return out


def polis(truth: Any, pred: Any) -> np.ndarray:
    """PoLiS distance of each pair ``(truth[i], pred[i])`` (polygonal geometries; module docstring), in map
    units; NaN for a pair with an empty geometry."""
    import shapely

    truth = np.asarray(truth, dtype=object)
    pred = np.asarray(pred, dtype=object)
    n = len(truth)
    halves = []
    for own, other in ((truth, pred), (pred, truth)):
        lines, owner = _rings(own)
        coords, line = shapely.get_coordinates(lines, return_index=True)
        # drop each ring's closing vertex (the last coordinate of each line)
        last = np.r_[line[1:] != line[:-1], True] if len(line) else np.zeros(0, bool)
        coords, which = coords[~last], owner[line[~last]]
        dist = _to_boundary(coords, which, other)
        total = np.bincount(which, weights=dist, minlength=n)
        count = np.bincount(which, minlength=n)
        with np.errstate(invalid="ignore", divide="ignore"):
            halves.append(total / (2.0 * count))
    return halves[0] + halves[1]


def _near_length(own: np.ndarray, other: np.ndarray, tolerance: float, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Per pair: (length of ``∂own[i]`` within ``tolerance`` of ``∂other[i]``, length of ``∂own[i]``)."""
    import shapely

    n = len(own)
    lines, owner = _rings(own)
    start, end, which = _pieces(shapely.segmentize(lines, step), owner)
    length = np.hypot(*(end - start).T)
    near = _to_boundary((start + end) / 2.0, which, other) <= tolerance
    return (np.bincount(which, weights=length * near, minlength=n), np.bincount(which, weights=length, minlength=n))


def boundary_match(truth: Any, pred: Any, tolerance: float, step: float | None = None) -> dict[str, np.ndarray]:
    """Boundary lengths of each pair ``(truth[i], pred[i])`` within ``tolerance`` of the other's boundary
    (module docstring; ``step``: :func:`sampling_step` by default).

    Returns arrays ``pred_near``, ``pred_length``, ``truth_near``, ``truth_length`` and the per-pair
    ``precision``, ``recall``, ``f1``."""
    truth = np.asarray(truth, dtype=object)
    pred = np.asarray(pred, dtype=object)
    step = sampling_step(tolerance) if step is None else float(step)
    pred_near, pred_len = _near_length(pred, truth, tolerance, step)
    truth_near, truth_len = _near_length(truth, pred, tolerance, step)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = pred_near / pred_len
        recall = truth_near / truth_len
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return {"pred_near": pred_near, "pred_length": pred_len, "truth_near": truth_near, "truth_length": truth_len,
            "precision": precision, "recall": recall, "f1": f1}  # fmt: skip
