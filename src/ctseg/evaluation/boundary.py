"""Boundary metrics: per-class boundary IoU and boundary F1, batched on the device, accumulated over a data set.

Definitions (``d`` = the tolerance in pixels, an integer ≥ 1; distances are Chebyshev distances, i.e. a pixel's
``(2d + 1) × (2d + 1)`` window; pixels whose *truth* is ignore are never counted in any sum)::

    band_c(m, d)  = pixels of class c in the map m whose distance to the nearest pixel of m that is not c is ≤ d
                    — only pixels inside the image count as "not c" (the image border is no boundary); an
                    ignore pixel (or any other value) does count as "not c", in both maps
    bIoU_c        = |band_c(truth, d) ∩ band_c(pred, d)| / |band_c(truth, d) ∪ band_c(pred, d)|
    contour_c(m)  = band_c(m, 1)    (the class's pixels that touch another value, 8-neighbourhood)
    P_c           = share of contour_c(pred) within distance d of contour_c(truth)
    R_c           = share of contour_c(truth) within distance d of contour_c(pred)
    bF1_c         = 2 P_c R_c / (P_c + R_c)

Boundary IoU is that of Cheng, Girshick, Dollár, Berg and Kirillov, "Boundary IoU: Improving Object-Centric Image
Segmentation Evaluation", CVPR 2021: the IoU of the ground-truth and predicted masks restricted to the bands of
width ``d`` inside each mask's contour. Boundary F1 is the contour precision / recall measure with a distance
tolerance (Csurka et al., "What is a good evaluation measure for semantic segmentation?", BMVC 2013).

**Ignore.** A pixel whose truth is ignore is never counted, in any sum. The bands are those of each map as it
is (the contract of :func:`boundary_scores`): the truth's ignore pixels bound the truth's bands, and the
prediction's bands are bounded by its own class changes (a predicted nodata value, 255, is "no class" and bounds
them too). So with labels whose boundaries are ignore strips (the ISPRS eroded labels) a prediction equal to the
truth on every labelled pixel can score below 1: the truth's bands sit at the strip, the prediction's at its own
class change inside it. ``truth_ignore_in_pred=True`` (ctseg's option) makes the truth's ignore pixels ignore in
the prediction too: then both maps' bands stop at the strip, such a prediction scores 1, and nothing predicted
under ignore changes any score.

**Published definitions.** ``definition="reference"`` takes Cheng et al.'s bands instead (their Boundary IoU
API pads each class mask with zeros: outside the image is "not c", so a class cut by the image border has a band
there); ``d`` stays in pixels (the API's is ``round(0.02 × diagonal)``; :mod:`~ctseg.evaluation.boundary_reference`
has the API's function for two masks). ``tolerance_shape="disk"`` matches contours within the Euclidean distance
``d`` (``dy² + dx² ≤ d²``, Csurka et al.'s and DAVIS's disk) instead of the square; contours are unchanged.

**Accumulation.** Over an evaluation, the numerators and denominators are *summed* over all images before the
ratios are taken (``Σ |∩| / Σ |∪|``; ``P = Σ matched / Σ contour``), like the confusion matrix of
:mod:`ctseg.evaluation.metrics` — not a mean of per-image ratios. A class with no band pixel in either map over
the whole evaluation (in particular one absent from both) scores NaN and is left out of the means (``nanmean``); one
whose contour exists in only one of the two maps scores bF1 = 0.

**Computation.** Batched on the device: no loop over images or pixels, no host synchronisation. A pixel holds
one value per map, so each map is one ``(B, H, W)`` small-integer map (classes ``0 … K−1``, ``K`` = ignore /
no class) and the bands of all classes are one map too: a pixel is in its class's band when the
``(2d + 1)²`` window's maximum differs from its minimum. Contour matching turns the other map's contour into
class bit sets (bit c for class c; up to 62 classes, else a ``(B, K, H, W)`` one-hot) and ORs them over the
window. Every window is a running max / min / OR along rows, then columns, with O(log d) shifted passes and
neutral padding (so the image border adds no "not c" pixel); the per-class sums are one joint histogram per
quantity (a scatter-add; ``bincount`` on the CPU). Cost: ``benchmarks/boundary_cost.py``
(docs/boundary-metrics.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from ctseg.errors import CtsegError
from ctseg.evaluation._windows import SHAPES, reduce, square

__all__ = [
    "DEFINITIONS",
    "SHAPES",
    "BoundaryMetrics",
    "boundary_counts",
    "boundary_scores",
    "check_options",
    "counts_to_scores",
    "parse_tolerances",
]

#: Boundary IoU definitions: ctseg's (the image border is no boundary) and Cheng et al.'s API (it is one).
DEFINITIONS = ("ctseg", "reference")

#: Sums kept per (tolerance, class), in this order, by :func:`boundary_counts` and :class:`BoundaryMetrics`.
COUNTS = ("band_inter", "band_union", "pred_matched", "pred_contour", "truth_matched", "truth_contour")


def parse_tolerances(tolerance: int | Sequence[int]) -> tuple[int, ...]:
    """``3`` or ``[3, 1, 5]`` → a tuple of distinct positive ints (order kept: the first is the main one)."""
    values = [tolerance] if isinstance(tolerance, int | float | str) else list(tolerance)
    if not values:
        raise CtsegError("give at least one boundary tolerance (pixels, e.g. 3)")
    out: list[int] = []
    for v in values:
        try:
            ok = not isinstance(v, bool) and float(v) == int(float(v)) and int(float(v)) >= 1
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise CtsegError(f"boundary tolerance must be a whole number of pixels >= 1, got {v!r}")
        if int(float(v)) not in out:
            out.append(int(float(v)))
    return tuple(out)


def dilate(mask: Tensor, radius: int, shape: str = "square") -> Tensor:
    """Boolean ``(..., H, W)`` mask dilated by a ``(2r + 1)²`` square (or a radius-``r`` disk); outside the image
    counts as ``False``."""
    return reduce(mask, radius, torch.logical_or, False, shape)


def _fill(m: Tensor, where: Tensor, value: int) -> Tensor:
    """``m`` with ``value`` where ``where`` (bool, or 0 / 1 of ``m``'s dtype) is set — as integer arithmetic
    ``m + (value − m)·where``, exact also when it wraps around, and several times faster on the CPU than
    ``masked_fill``."""
    return m + (value - m) * where.to(m.dtype)


def _bands(m: Tensor, radius: int, none: int, top: int, border: bool = False) -> Tensor:
    """For an encoded map (class values, ``none`` for "no class"): the class of each pixel that lies in its class's
    ``radius``-band — some pixel of another value within the square, inside the image — else ``none``.
    "Another value in the window" is "window max ≠ window min" (the pixel itself is in the window; padding 0
    for the max and ``top`` for the min, both neutral; with ``border``, ``none`` for the max: outside the image is
    "not c", the reference's zero padding)."""
    high = square(m, radius, torch.maximum, none if border else 0)
    differs = (high - square(m, radius, torch.minimum, top)).clamp_(max=1)
    return _fill(m, 1 - differs, none)


def _joint_hist(a: Tensor, b: Tensor, k: int, b_values: int) -> Tensor:
    """``(K + 1, b_values)`` int64: pixels of each pair of values ``(a, b)`` (``a`` in ``0 … K``, ``b`` in
    ``0 … b_values − 1``), from one histogram of the code ``a·b_values + b``; a scatter-add on the GPU (no host
    sync), ``bincount`` on the CPU."""
    bins = (k + 1) * b_values
    code_dtype = next(dt for limit, dt in ((256, torch.uint8), (2**15, torch.int16), (2**31, torch.int32),
                                           (2**62, torch.int64)) if bins <= limit)  # fmt: skip
    code = (a.to(code_dtype) * b_values + b.to(code_dtype)).reshape(-1)
    if code.device.type == "cpu":
        counts = torch.bincount(code, minlength=bins).to(torch.int64)
    else:
        idx = code.long()
        counts = torch.zeros(bins, dtype=torch.int64, device=code.device).scatter_add_(0, idx, torch.ones_like(idx))
    return counts.view(k + 1, b_values)


#: Bit-set dtypes by the number of classes they hold (bit c for class c, bit K for "no class").
_BITS = ((7, torch.uint8), (14, torch.int16), (30, torch.int32), (62, torch.int64))


def _matched(contour: Tensor, other_contour: Tensor, radius: int, k: int, shape: str = "square") -> Tensor:
    """1 (``contour``'s dtype) where a pixel of ``contour`` (class values, ``k`` = none) has a pixel of the same
    class in ``other_contour`` within the square (or disk, ``shape``) of ``radius``, else 0 (also at ``k`` pixels,
    never counted).

    Up to 62 classes, each pixel of ``other_contour`` becomes a bit set (bit c for class c), OR-ed over the square
    (a separable window on one ``(B, H, W)`` integer map) and tested at the pixel's own class bit; beyond, the
    ``(B, K, H, W)`` one-hot contours are dilated instead.
    """
    dtype = next((dt for limit, dt in _BITS if k <= limit), None)
    if dtype is not None:
        own, theirs = contour.to(dtype), other_contour.to(dtype)
        seen = reduce(torch.bitwise_left_shift(torch.ones_like(theirs), theirs), radius, torch.bitwise_or, 0, shape)
        return (torch.bitwise_right_shift(seen, own) & 1).to(contour.dtype)
    classes = torch.arange(k, device=contour.device, dtype=other_contour.dtype).view(1, k, 1, 1)
    near = dilate(other_contour.unsqueeze(1) == classes, radius, shape)  # (B, K, H, W)
    return near.gather(1, contour.long().clamp(max=k - 1).unsqueeze(1)).squeeze(1).to(contour.dtype)


def check_options(definition: str = "ctseg", tolerance_shape: str = "square") -> tuple[str, str]:
    """``(definition, tolerance_shape)`` checked: one of :data:`DEFINITIONS` and one of ``SHAPES``."""
    if definition not in DEFINITIONS:
        raise CtsegError(f"boundary definition must be one of {', '.join(DEFINITIONS)}, got {definition!r}")
    if tolerance_shape not in SHAPES:
        raise CtsegError(f"boundary tolerance shape must be one of {', '.join(SHAPES)}, got {tolerance_shape!r}")
    return definition, tolerance_shape


def boundary_counts(
    pred: Tensor,
    target: Tensor,
    num_classes: int,
    tolerances: Sequence[int],
    ignore_index: int | None = 255,
    count_mask: Tensor | None = None,
    truth_ignore_in_pred: bool = False,
    definition: str = "ctseg",
    tolerance_shape: str = "square",
) -> Tensor:
    """The sums of :data:`COUNTS` for one batch: ``(6, T, K)`` int64 (``T`` tolerances, ``K`` classes).

    ``pred`` and ``target`` are ``(B, H, W)`` (or ``(H, W)``) integer class maps of equal shape; definitions in
    the module docstring. Target values outside ``[0, K)`` (the ignore index among them) are never counted.
    ``truth_ignore_in_pred``: the truth's ignore pixels are ignore in the prediction too (module docstring).
    ``definition`` / ``tolerance_shape``: :func:`check_options` (module docstring, "Published definitions").
    ``count_mask`` (boolean, ``target``'s shape): count only these pixels, the others still shape the bands and
    contours — a large image scored in strips of rows passes each strip with ``max(tolerances) + 1`` rows of
    context on either side and counts only the strip's own rows, which sums to the same as the whole image.

    Both maps are encoded as one small-integer map each (classes ``0 … K−1``, ``K`` = ignore / no class): a
    pixel belongs to at most one class, so the bands of all classes are one map, found with window max / min,
    and a contour's matches one map, found with a window OR of class bit sets.
    """
    if pred.shape != target.shape:
        raise CtsegError(f"prediction {tuple(pred.shape)} and truth {tuple(target.shape)} differ in size")
    if count_mask is not None and count_mask.shape != target.shape:
        raise CtsegError(f"count_mask {tuple(count_mask.shape)} must have the truth's shape {tuple(target.shape)}")
    if target.ndim == 2:
        pred, target = pred[None], target[None]
        count_mask = None if count_mask is None else count_mask[None]
    if target.ndim != 3:
        raise CtsegError(f"class maps must be (B, H, W), got {tuple(target.shape)}")
    border = check_options(definition, tolerance_shape)[0] == "reference"
    k = int(num_classes)
    dtype, top = (torch.uint8, 255) if k < 255 else (torch.int32, 2**31 - 1)
    invalid = (target < 0) | (target >= k)
    if ignore_index is not None and 0 <= ignore_index < k:
        invalid |= target == ignore_index
    # classes as they are (exact: 0 ≤ value < K), everything else "no class" (K): a truth-ignore pixel in the
    # truth (and, with truth_ignore_in_pred, in the prediction), a predicted nodata value in the prediction
    truth = _fill(target.to(dtype), invalid, k)  # out of place: never the caller's tensor
    no_class = (pred < 0) | (pred >= k)
    pred = _fill(pred.to(dtype), (invalid | no_class) if truth_ignore_in_pred else no_class, k)
    skip = invalid if count_mask is None else (invalid | ~count_mask.bool())  # never counted

    def counted(m: Tensor) -> Tensor:
        return _fill(m, skip, k)

    c_truth, c_pred = _bands(truth, 1, k, top), _bands(pred, 1, k, top)  # contours: never the image border
    rows = []
    for d in tolerances:
        if d == 1 and not border:
            b_truth, b_pred = c_truth, c_pred
        else:
            b_truth, b_pred = _bands(truth, d, k, top, border), _bands(pred, d, k, top, border)
        bands = _joint_hist(counted(b_truth), counted(b_pred), k, k + 1)  # [truth band value, predicted one]
        inter = bands.diagonal()[:k]
        union = bands[:k].sum(1) + bands[:, :k].sum(0) - inter
        pm = _joint_hist(counted(c_pred), _matched(c_pred, c_truth, d, k, tolerance_shape), k, 2)[:k]  # [class, hit]
        tm = _joint_hist(counted(c_truth), _matched(c_truth, c_pred, d, k, tolerance_shape), k, 2)[:k]
        rows.append(torch.stack([inter, union, pm[:, 1], pm.sum(1), tm[:, 1], tm.sum(1)]))
    return torch.stack(rows, 1)


def counts_to_scores(counts: Tensor) -> dict[str, Tensor]:
    """``(6, T, K)`` sums → ``biou``, ``bf1``, ``bprecision``, ``brecall``: ``(T, K)`` float32 (NaN: nothing to
    score, see the module docstring)."""
    c = counts.to(torch.float64)
    inter, union, p_hit, p_all, r_hit, r_all = c.unbind(0)
    nan = torch.full_like(inter, float("nan"))
    biou = torch.where(union > 0, inter / union.clamp_min(1), nan)
    precision = torch.where(p_all > 0, p_hit / p_all.clamp_min(1), torch.zeros_like(p_all))
    recall = torch.where(r_all > 0, r_hit / r_all.clamp_min(1), torch.zeros_like(r_all))
    pr = precision + recall
    bf1 = torch.where(pr > 0, 2 * precision * recall / pr.clamp_min(1e-12), torch.zeros_like(pr))
    none = (p_all == 0) & (r_all == 0)
    bf1 = torch.where(none, nan, bf1)
    return {
        "biou": biou.float(),
        "bf1": bf1.float(),
        "bprecision": torch.where(p_all > 0, precision, nan).float(),
        "brecall": torch.where(r_all > 0, recall, nan).float(),
    }


def _check_preds(pred: Tensor, num_classes: int, ignore_index: int | None) -> None:
    bad = (pred < 0) | (pred >= num_classes)
    if ignore_index is not None:
        bad &= pred != ignore_index
    if pred.numel() and bool(bad.any()):
        value = int(pred[bad][0])
        allowed = f"0..{num_classes - 1}" + ("" if ignore_index is None else f" or {ignore_index}")
        raise CtsegError(f"predicted value {value} is not a class ({allowed})")


def boundary_scores(
    pred: Tensor,
    target: Tensor,
    num_classes: int,
    tolerance: int | Sequence[int] = 3,
    ignore_index: int | None = 255,
    *,
    truth_ignore_in_pred: bool = False,
    definition: str = "ctseg",
    tolerance_shape: str = "square",
) -> dict[str, Tensor]:
    """Per-class boundary IoU and boundary F1 of one batch (definitions in the module docstring).

    Args:
        pred, target: ``(B, H, W)`` integer class maps (same shape). Predicted values must be classes
            ``0 … K−1`` or ``ignore_index`` (nodata); truth pixels equal to ``ignore_index`` are not counted.
        num_classes: ``K``.
        tolerance: ``d`` in pixels (≥ 1), or several: the first gives ``biou`` / ``bf1``, each gives
            ``biou@d`` / ``bf1@d``.
        truth_ignore_in_pred: ctseg's option (module docstring, "Ignore"); off: the contract's definition.
        definition: ``"ctseg"`` (the image border is no boundary) or ``"reference"`` (Cheng et al.'s: it is).
        tolerance_shape: boundary F1's tolerance, ``"square"`` (Chebyshev) or ``"disk"`` (Euclidean).
    Returns:
        ``{"biou": (K,), "bf1": (K,)}`` float32 tensors (NaN for a class with no boundary in either map, e.g.
        absent from both), plus ``biou@d`` / ``bf1@d`` for every tolerance when a list is given.
    """
    tolerances = parse_tolerances(tolerance)
    if int(num_classes) < 1:
        raise CtsegError(f"num_classes must be at least 1, got {num_classes}")
    if pred.shape != target.shape:
        raise CtsegError(f"prediction {tuple(pred.shape)} and truth {tuple(target.shape)} differ in size")
    _check_preds(pred, int(num_classes), ignore_index)
    counts = boundary_counts(pred.long(), target.long(), num_classes, tolerances, ignore_index,
                             truth_ignore_in_pred=truth_ignore_in_pred, definition=definition,
                             tolerance_shape=tolerance_shape)  # fmt: skip
    scores = counts_to_scores(counts)
    out = {"biou": scores["biou"][0], "bf1": scores["bf1"][0]}
    if not isinstance(tolerance, int | float | str):
        for i, d in enumerate(tolerances):
            out[f"biou@{d}"], out[f"bf1@{d}"] = scores["biou"][i], scores["bf1"][i]
    return out


class BoundaryMetrics(Metric):
    """Boundary IoU / boundary F1 per class, accumulated over an evaluation (module docstring).

    Args:
        num_classes: ``K``.
        tolerance: ``d`` in pixels, or a list (the first is the main one; default 3).
        ignore_index: truth value never counted.
        eval_classes: classes averaged into ``mbiou`` / ``mbf1`` (``None``: all), as for mIoU.
        truth_ignore_in_pred: ctseg's option (module docstring, "Ignore"); off: the contract's definition.
        definition, tolerance_shape: :func:`boundary_scores` (``"ctseg"`` / ``"square"`` by default).

    ``update(preds, target)``: ``(B, H, W)`` class maps, or ``preds`` ``(B, K, H, W)`` scores (argmax over dim
    1). The state is one ``(6, T, K)`` int64 tensor of sums (``dist_reduce_fx="sum"``: DDP adds them); no host
    sync. ``compute()``: ``biou``, ``bf1``, ``bprecision``, ``brecall`` ``(K,)`` and ``mbiou``, ``mbf1`` (nanmean
    over ``eval_classes``) at the first tolerance; the same with ``@d`` appended for every tolerance ``d``;
    ``tolerances``.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    counts: Tensor

    def __init__(
        self,
        num_classes: int,
        tolerance: int | Sequence[int] = 3,
        ignore_index: int | None = 255,
        eval_classes: Sequence[int] | None = None,
        truth_ignore_in_pred: bool = False,
        definition: str = "ctseg",
        tolerance_shape: str = "square",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if int(num_classes) < 1:
            raise CtsegError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.tolerances = parse_tolerances(tolerance)
        self.ignore_index = ignore_index
        self.eval_classes = None if eval_classes is None else tuple(int(c) for c in eval_classes)
        self.truth_ignore_in_pred = bool(truth_ignore_in_pred)
        self.definition, self.tolerance_shape = check_options(definition, tolerance_shape)
        shape = (len(COUNTS), len(self.tolerances), self.num_classes)
        self.add_state("counts", default=torch.zeros(shape, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor, count_mask: Tensor | None = None) -> None:
        """Add one batch (shapes in the class docstring; ``count_mask``: :func:`boundary_counts`)."""
        if preds.ndim == target.ndim + 1:
            if preds.shape[1] != self.num_classes:
                raise CtsegError(f"score input has {preds.shape[1]} channels, expected {self.num_classes} classes")
            preds = preds.argmax(dim=1)
        self.counts += boundary_counts(
            preds.long(),
            target.long(),
            self.num_classes,
            self.tolerances,
            self.ignore_index,
            count_mask,
            truth_ignore_in_pred=self.truth_ignore_in_pred,
            definition=self.definition,
            tolerance_shape=self.tolerance_shape,
        )

    def compute(self) -> dict[str, Any]:
        scores = counts_to_scores(self.counts)
        sel = list(range(self.num_classes)) if self.eval_classes is None else list(self.eval_classes)
        out: dict[str, Any] = {"tolerances": self.tolerances}
        for i, d in enumerate(self.tolerances):
            for key, value in scores.items():
                out[f"{key}@{d}"] = value[i]
            out[f"mbiou@{d}"] = scores["biou"][i][sel].nanmean()
            out[f"mbf1@{d}"] = scores["bf1"][i][sel].nanmean()
        main = self.tolerances[0]
        for key in ("biou", "bf1", "bprecision", "brecall", "mbiou", "mbf1"):
            out[key] = out[f"{key}@{main}"]
        return out
