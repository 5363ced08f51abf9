"""The ISPRS metrics protocol: one confusion matrix over all classes, per-class IoU / F1, mIoU, mean F1 and OA.

Protocol (docs/design.md §4.6). With ``K`` classes, ignore pixels dropped, and the confusion matrix ``M`` (``K × K``,
rows = ground truth, columns = prediction, ``M[t, p]`` = number of pixels of true class ``t`` predicted ``p``)::

    TP_c = M[c, c]
    FP_c = Σ_t M[t, c] − TP_c          (column sum minus the diagonal)
    FN_c = Σ_p M[c, p] − TP_c          (row sum minus the diagonal)
    IoU_c = TP_c / (TP_c + FP_c + FN_c)
    F1_c  = 2 TP_c / (2 TP_c + FP_c + FN_c)      (= harmonic mean of precision and recall)
    OA    = Σ_c TP_c / Σ M                        (over *all* classes)
    mIoU  = nanmean_{c ∈ eval_classes} IoU_c
    mF1   = nanmean_{c ∈ eval_classes} F1_c

For Potsdam / Vaihingen ``eval_classes = (0, 1, 2, 3, 4)``: clutter (5) stays in the matrix — its pixels count
as false positives / negatives of the other classes and in OA — and is only left out of the two means. Do not
emulate that with torchmetrics' ``ignore_index=5``: that would drop the clutter pixels and change every other
class's score.

Test crops (:mod:`ctseg.data.prepare`): the prepared ISPRS test masks keep the label's native 500 × 500
resolution (the model's logits are resized to it, bilinear, before the argmax) and mark the pixels an earlier,
overlapping border crop already holds as ignore, so ``Σ M`` over the test crops is exactly the number of labelled
pixels of the test tiles: each source pixel is scored once.

Absent classes: a class with no pixel in the ground truth *and* none in the prediction has ``0 / 0`` for IoU
and F1; it is reported as NaN and left out of the means (``nanmean``). A class that is absent from the truth
but predicted somewhere scores 0 (only false positives), and so does one present but never predicted.
If every evaluated class is NaN (or nothing was counted) the means are NaN; OA is NaN when no pixel was
counted.

Boundary metrics (boundary IoU, Cheng et al., CVPR 2021, and boundary F1 with a distance tolerance) live in
:mod:`ctseg.evaluation.boundary` and are importable from here: :func:`boundary_scores` (one batch) and
:class:`BoundaryMetrics` (accumulated over an evaluation, beside :class:`SegmentationMetrics`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from ctseg.errors import CtsegError
from ctseg.evaluation.boundary import BoundaryMetrics, boundary_scores

__all__ = [
    "BoundaryMetrics",
    "SegmentationMetrics",
    "boundary_scores",
    "confusion_matrix_scores",
    "format_table",
    "normalise_rows",
]


def confusion_matrix_scores(confmat: Tensor, eval_classes: Sequence[int] | None = None) -> dict[str, Tensor]:
    """Scores of a ``(K, K)`` confusion matrix (rows = truth, columns = prediction); formulas in the module doc.

    Returns ``iou``, ``f1`` (``(K,)`` float32, NaN for classes absent from truth and prediction), ``miou``,
    ``mf1`` (nanmean over ``eval_classes``, all classes when ``None``), ``oa`` (scalar, all classes) and
    ``confmat`` (the input as int64).
    """
    cm = confmat.to(torch.float64)
    tp = cm.diagonal()
    fp = cm.sum(dim=0) - tp
    fn = cm.sum(dim=1) - tp
    nan = torch.tensor(float("nan"), dtype=torch.float64, device=cm.device)
    iou_den = tp + fp + fn
    f1_den = 2 * tp + fp + fn
    iou = torch.where(iou_den > 0, tp / iou_den.clamp_min(1), nan)
    f1 = torch.where(f1_den > 0, 2 * tp / f1_den.clamp_min(1), nan)
    total = cm.sum()
    oa = torch.where(total > 0, tp.sum() / total.clamp_min(1), nan)
    if eval_classes is None:
        sel = torch.arange(cm.shape[0], device=cm.device)
    else:
        sel = torch.as_tensor(list(eval_classes), dtype=torch.long, device=cm.device)
    return {
        "iou": iou.float(),
        "f1": f1.float(),
        "miou": iou[sel].nanmean().float(),
        "mf1": f1[sel].nanmean().float(),
        "oa": oa.float(),
        "confmat": confmat.to(torch.int64),
    }


def normalise_rows(confmat: Tensor) -> Tensor:
    """The confusion matrix ``M`` (rows = truth, columns = prediction) with each row divided by its sum::

        R[t, p] = M[t, p] / Σ_q M[t, q]

    so ``R[t, p]`` is the fraction of the pixels of true class ``t`` predicted ``p``; each row sums to 1, and the
    diagonal is the per-class recall ``TP_t / (TP_t + FN_t)`` (the producer's accuracy). A class with no pixel in
    the truth has an all-NaN row (``0 / 0``: nothing to distribute). Returns float64, same shape.
    """
    cm = confmat.to(torch.float64)
    rows = cm.sum(dim=1, keepdim=True)
    return torch.where(rows > 0, cm / rows.clamp_min(1), torch.full_like(cm, float("nan")))


class SegmentationMetrics(Metric):
    """Semantic segmentation scores by the ISPRS protocol, accumulated as one confusion matrix.

    Args:
        num_classes: ``K``, the number of classes (all of them, clutter included).
        ignore_index: target value whose pixels are dropped (never counted anywhere). Any other target value
            outside ``[0, K)`` is dropped too.
        eval_classes: class indices averaged into ``miou`` / ``mf1``; ``None`` averages all classes. ``oa`` is
            always over all classes.
        validate_args: check that predicted class indices lie in ``[0, K)`` (a host sync per update; off by
            default). Unchecked out-of-range predictions are dropped with their pixel.

    ``update(preds, target)``: ``target`` is ``(B, H, W)`` integer class indices; ``preds`` is either ``(B, H, W)``
    class indices or ``(B, K, H, W)`` scores / logits (reduced by ``argmax`` over dim 1). Any shape works as long
    as ``preds`` equals ``target``'s shape or adds the class dimension at dim 1. The update is a scatter-add into
    the ``(K, K)`` int64 state ``confmat`` (``dist_reduce_fx="sum"``, so DDP sums the matrices); it never
    synchronises with the host.

    ``compute()`` returns a dict: ``iou``, ``f1`` — ``(K,)`` float32 per class (NaN where a class is absent from
    truth and prediction); ``miou``, ``mf1`` — scalar nanmeans over ``eval_classes``; ``oa`` — scalar overall
    accuracy; ``confmat`` — ``(K, K)`` int64, rows = truth, columns = prediction. Formulas: module docstring.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    confmat: Tensor

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = 255,
        eval_classes: Sequence[int] | None = None,
        validate_args: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if int(num_classes) < 1:
            raise CtsegError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        if eval_classes is not None:
            eval_classes = tuple(int(c) for c in eval_classes)
            bad = [c for c in eval_classes if not 0 <= c < self.num_classes]
            if bad or not eval_classes:
                raise CtsegError(
                    f"eval_classes must be non-empty indices in [0, {self.num_classes}), got {eval_classes}"
                )
        self.eval_classes = eval_classes
        self.validate_args = validate_args
        k = self.num_classes
        self.add_state("confmat", default=torch.zeros(k, k, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add one batch to the confusion matrix (shapes in the class docstring)."""
        k = self.num_classes
        if preds.ndim == target.ndim + 1:
            if preds.shape[1] != k:
                raise CtsegError(f"score input has {preds.shape[1]} channels at dim 1, expected {k} classes")
            preds = preds.argmax(dim=1)
        if preds.shape != target.shape:
            raise CtsegError(
                f"preds {tuple(preds.shape)} and target {tuple(target.shape)} must have the same shape "
                "(or preds one extra class dimension at dim 1)"
            )
        preds = preds.reshape(-1).long()
        target = target.reshape(-1).long()
        if self.validate_args and preds.numel() and bool(((preds < 0) | (preds >= k)).any()):
            raise CtsegError(f"predicted class indices must lie in [0, {k})")
        valid = (target >= 0) & (target < k) & (preds >= 0) & (preds < k)
        if self.ignore_index is not None:
            valid &= target != self.ignore_index
        # Invalid pixels go to an extra bin k*k that is dropped: fixed shapes, no boolean indexing, no sync.
        flat = torch.where(valid, target * k + preds, torch.full_like(target, k * k))
        counts = torch.zeros(k * k + 1, dtype=torch.int64, device=flat.device)
        counts.scatter_add_(0, flat, torch.ones_like(flat))
        self.confmat += counts[: k * k].view(k, k)

    def compute(self) -> dict[str, Tensor]:
        """Per-class ``iou`` / ``f1``, ``miou``, ``mf1``, ``oa`` and ``confmat`` (see the class docstring)."""
        return confusion_matrix_scores(self.confmat, self.eval_classes)


def _as_list(value: Any) -> list[float]:
    if isinstance(value, Tensor):
        return [float(v) for v in value.detach().cpu().reshape(-1).tolist()]
    if isinstance(value, int | float):
        return [float(value)]
    return [float(v) for v in value]


def _fmt(value: Any, digits: int, percent: bool) -> str:
    if value is None:
        return "–"
    v = float(value.item() if isinstance(value, Tensor) else value)
    if math.isnan(v):
        return "n/a"
    return f"{v * 100:.{max(digits - 2, 0)}f}" if percent else f"{v:.{digits}f}"


def format_table(
    results: Mapping[str, Mapping[str, Any]],
    class_names: Sequence[str],
    eval_classes: Sequence[int] | None = None,
    digits: int = 3,
    percent: bool = False,
) -> str:
    """Render runs as a Markdown table: one row per run; columns per-class IoU, mIoU, mean F1, OA.

    Args:
        results: run name → a :meth:`SegmentationMetrics.compute` dict (or anything with ``iou`` (per-class
            sequence / tensor), ``miou``, ``mf1``, ``oa``; missing entries print as ``–``, NaN as ``n/a``).
        class_names: one name per class, in index order (``DatasetInfo.classes``).
        eval_classes: when given, the columns of classes *not* averaged into mIoU / mean F1 get a ``*`` and a
            footnote line follows the table.
        digits: decimals for fractions (``0.773``); with ``percent`` the values are ×100 with ``digits − 2``
            decimals (``77.3``).
    """
    names = [str(n) for n in class_names]
    excluded = set() if eval_classes is None else set(range(len(names))) - {int(c) for c in eval_classes}
    cols = [f"{n}*" if i in excluded else n for i, n in enumerate(names)]
    header = ["run", *(f"IoU {c}" for c in cols), "mIoU", "mean F1", "OA"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for run, res in results.items():
        iou = res.get("iou")
        per_class = _as_list(iou) if iou is not None else []
        if per_class and len(per_class) != len(names):
            raise CtsegError(f"run {run!r} has {len(per_class)} per-class IoUs for {len(names)} class names")
        cells = [_fmt(per_class[i] if per_class else None, digits, percent) for i in range(len(names))]
        cells += [_fmt(res.get(key), digits, percent) for key in ("miou", "mf1", "oa")]
        lines.append("| " + " | ".join([str(run).replace("|", "\\|"), *cells]) + " |")
    if excluded:
        lines.append("")
        lines.append("\\* kept in the confusion matrix and OA, not averaged into mIoU / mean F1.")
    return "\n".join(lines)
