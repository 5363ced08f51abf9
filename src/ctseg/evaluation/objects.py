"""Object-level scores of predicted footprints against reference footprints (``ctseg evaluate PRED.gpkg --truth
TRUTH.gpkg``; the files: :mod:`ctseg.evaluation.footprints`).

**Matching** (the SpaceNet rule). Candidate pairs are the (truth, prediction) pairs whose geometries intersect,
found with an STRtree over the predictions; each gets its exact IoU (intersection area over
``area(T) + area(P) − intersection``). A pair can match when its IoU is at least the threshold (``≥``, compared
as computed, no slack; an IoU of 0 never matches). Matches are one-to-one and greedy: the candidates are taken
in order of IoU, highest first, and a pair is kept when neither its truth nor its prediction is matched yet. Ties
of IoU are broken by the lower truth index, then the lower prediction index (the features' order in their files,
after the ``--class`` filter), so the result never depends on the tree or the platform's sort.

**Scores.** ``tp`` = matches, ``fp`` = unmatched predictions, ``fn`` = unmatched truths; precision =
tp / (tp + fp) (``None`` without predictions), recall = tp / (tp + fn) (``None`` without truths), F1 =
2tp / (2tp + fp + fn) (= 2PR / (P + R); 0 when nothing matches), ``mean_iou`` the mean IoU of the matches.
Over the matches only: ``polis`` (the mean PoLiS distance, map units) and the boundary F1 at a tolerance in map
units (:mod:`ctseg.evaluation.polis`) — ``boundary_f1`` the mean of the per-match F1, ``boundary_f1_micro``
from the boundary lengths summed over all matches (``boundary_precision`` / ``boundary_recall``). Scores that
need a match are ``None`` without one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ctseg.evaluation.polis import boundary_match, polis, sampling_step

__all__ = ["candidate_pairs", "match_objects", "object_scores"]


def candidate_pairs(truth: Any, pred: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(truth index, prediction index, IoU)`` of every intersecting pair with IoU > 0 (STRtree query)."""
    import shapely

    truth = np.asarray(truth, dtype=object)
    pred = np.asarray(pred, dtype=object)
    if len(truth) == 0 or len(pred) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    ti, pi = shapely.STRtree(pred).query(truth, predicate="intersects")
    inter = shapely.area(shapely.intersection(truth[ti], pred[pi]))
    union = shapely.area(truth)[ti] + shapely.area(pred)[pi] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    keep = iou > 0
    return ti[keep].astype(np.int64), pi[keep].astype(np.int64), iou[keep]


def match_objects(truth: Any, pred: Any, iou: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one greedy matches ``(truth index, prediction index, IoU)``, highest IoU first (module
    docstring: ties by lower truth index, then lower prediction index)."""
    if not 0.0 < iou <= 1.0:
        raise ValueError(f"iou threshold must be in (0, 1], got {iou}")
    ti, pi, val = candidate_pairs(truth, pred)
    ok = val >= iou
    ti, pi, val = ti[ok], pi[ok], val[ok]
    order = np.lexsort((pi, ti, -val))  # last key first: IoU descending, then truth, then prediction
    used_t = np.zeros(len(truth), bool)
    used_p = np.zeros(len(pred), bool)
    keep = []
    for k in order.tolist():
        t, p = ti[k], pi[k]
        if not used_t[t] and not used_p[p]:
            used_t[t] = used_p[p] = True
            keep.append(k)
    keep = np.asarray(keep, np.int64)
    return ti[keep], pi[keep], val[keep]


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den > 0 else None


def _mean(values: np.ndarray) -> float | None:
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else None


def object_scores(truth: Any, pred: Any, iou: float = 0.5, tolerance: float = 1.0) -> dict[str, Any]:
    """The object scores of ``pred`` against ``truth`` (sequences of polygonal shapely geometries in one
    projected CRS): ``precision``, ``recall``, ``f1``, ``tp``, ``fp``, ``fn``, ``mean_iou``, ``polis``,
    ``boundary_f1``, ``boundary_f1_micro``, ``boundary_precision``, ``boundary_recall`` (module docstring),
    with the settings (``iou_threshold``, ``boundary_tolerance``, ``boundary_step``) and ``matches``
    (``[truth index, prediction index, IoU]`` of each)."""
    if not tolerance > 0:
        raise ValueError(f"boundary tolerance must be > 0, got {tolerance}")
    truth = np.asarray(truth, dtype=object)
    pred = np.asarray(pred, dtype=object)
    ti, pi, val = match_objects(truth, pred, iou)
    tp = len(ti)
    fp, fn = len(pred) - tp, len(truth) - tp
    step = sampling_step(tolerance)
    scores: dict[str, Any] = {
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "mean_iou": _mean(val),
        "polis": None,
        "boundary_f1": None,
        "boundary_f1_micro": None,
        "boundary_precision": None,
        "boundary_recall": None,
        "iou_threshold": float(iou),
        "boundary_tolerance": float(tolerance),
        "boundary_step": step,
        "truth_count": len(truth),
        "pred_count": len(pred),
    }
    if tp:
        scores["polis"] = _mean(polis(truth[ti], pred[pi]))
        bm = boundary_match(truth[ti], pred[pi], tolerance, step)
        bp = _ratio(bm["pred_near"].sum(), bm["pred_length"].sum())
        br = _ratio(bm["truth_near"].sum(), bm["truth_length"].sum())
        scores["boundary_f1"] = _mean(bm["f1"])
        scores["boundary_precision"], scores["boundary_recall"] = bp, br
        if bp is not None and br is not None:
            scores["boundary_f1_micro"] = 2 * bp * br / (bp + br) if bp + br > 0 else 0.0
    scores["matches"] = [[int(t), int(p), float(v)] for t, p, v in zip(ti, pi, val, strict=True)]
    return scores
