"""Segmentation loss of the paper's recipe: soft cross-entropy (smoothing 0.05) + Dice (smooth 0.05), 1 : 1.

Decisions (docs/design.md §1.10, §8):

* Cross-entropy is averaged over **labelled pixels only** (torch's ``ignore_index`` convention); the authors'
  soft cross-entropy averaged over all pixels, ignored ones included, which shrinks the loss of images with much
  ignore. A batch with no labelled pixel gives 0, not NaN.
* Dice, per class ``c`` over the labelled pixels of the whole batch, with softmax probabilities ``p``:
  ``dice_c = (2·Σ p_c·[y=c] + s) / (Σ p_c + Σ [y=c] + s)``; loss ``mean_c (1 − dice_c)·[c present]``
  (classes absent from the batch's labels contribute 0 but still count in the mean).
  Computed with scatter sums, never a full-resolution one-hot.
* Class weights (off by default and in the paper's configs; ``--model.class_weights``) weight the
  cross-entropy term only, as torch's ``weight`` does, and average by the weights of the labelled pixels::

      CE_w = Σ_i [(1 − ε) w_{y_i} (−log p_{i, y_i}) + (ε / K) Σ_c w_c (−log p_{i, c})] / Σ_i w_{y_i}

  (sums over labelled pixels ``i``; ``ε`` the smoothing; all ``w_c = 1`` gives the unweighted loss). Dice stays
  unweighted. :func:`inverse_frequency_weights` gives ``w_c ∝ 1 / f_c`` from pixel counts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ctseg.errors import CtsegError


def dice_loss(logits: Tensor, target: Tensor, ignore_index: int = 255, smooth: float = 0.05) -> Tensor:
    """Multi-class soft Dice. ``logits (B, K, H, W)``, ``target (B, H, W)`` int → 0-dim float32."""
    k = logits.shape[1]
    prob = logits.float().softmax(1)
    valid = (target >= 0) & (target < k) & (target != ignore_index)
    cls = torch.where(valid, target, torch.zeros_like(target)).long()
    validf = valid.unsqueeze(1).to(prob.dtype)
    p_true = prob.gather(1, cls.unsqueeze(1)) * validf  # (B, 1, H, W): p of the true class
    bins = torch.where(valid, cls, torch.full_like(cls, k)).flatten()
    intersection = torch.zeros(k + 1, device=prob.device, dtype=prob.dtype).index_add_(0, bins, p_true.flatten())
    target_count = torch.zeros(k + 1, device=prob.device, dtype=prob.dtype).index_add_(
        0, bins, torch.ones_like(bins, dtype=prob.dtype)
    )
    intersection, target_count = intersection[:k], target_count[:k]
    prob_sum = (prob * validf).sum((0, 2, 3))
    dice = (2.0 * intersection + smooth) / (prob_sum + target_count + smooth).clamp(min=1e-7)
    return ((1.0 - dice) * (target_count > 0)).mean()


def cross_entropy_loss(
    logits: Tensor, target: Tensor, ignore_index: int = 255, smoothing: float = 0.05, weight: Tensor | None = None
) -> Tensor:
    """Label-smoothed cross-entropy averaged over labelled pixels (0 when none is labelled); with ``weight``
    (``(K,)``) the weighted form of the module docstring."""
    k = logits.shape[1]
    valid = (target >= 0) & (target < k)
    tgt = torch.where(valid, target, torch.full_like(target, ignore_index)).long()
    if weight is not None:
        weight = weight.to(device=logits.device, dtype=torch.float32)
    total = F.cross_entropy(
        logits.float(), tgt, weight=weight, ignore_index=ignore_index, label_smoothing=smoothing, reduction="sum"
    )
    if weight is None:
        return total / valid.sum().clamp(min=1)
    pixel_weight = weight[torch.where(valid, tgt, torch.zeros_like(tgt))] * valid  # no boolean indexing: no sync
    return total / pixel_weight.sum().clamp(min=1e-12)


def inverse_frequency_weights(counts: Sequence[int | float]) -> list[float]:
    """Class weights from pixel counts ``n_c``: ``w_c = (1 / f_c) / mean_{c' present}(1 / f_c')`` with
    ``f_c = n_c / Σ n``, i.e. proportional to the inverse frequency and of mean 1 over the classes present
    (``n_c > 0``); a class with no pixel gets 1. All counts zero is an error."""
    n = [float(v) for v in counts]
    if any(v < 0 or v != v for v in n):
        raise CtsegError(f"pixel counts must be non-negative numbers, got {list(counts)}")
    total = sum(n)
    if total <= 0:
        raise CtsegError("no labelled pixel to compute inverse-frequency class weights from")
    inv = [total / v if v > 0 else 0.0 for v in n]
    present = [v for v in inv if v > 0]
    mean = sum(present) / len(present)
    return [v / mean if v > 0 else 1.0 for v in inv]


def check_class_weights(weights: Sequence[float], num_classes: int) -> list[float]:
    """``weights`` as floats, checked: one finite value ≥ 0 per class, not all zero."""
    try:
        out = [float(w) for w in weights]
    except (TypeError, ValueError):
        raise CtsegError(f"class_weights must be numbers, got {weights!r}") from None
    if len(out) != num_classes:
        raise CtsegError(f"class_weights has {len(out)} values for {num_classes} classes")
    if any(not math.isfinite(w) or w < 0 for w in out) or not any(out):
        raise CtsegError(f"class_weights must be finite, >= 0 and not all 0, got {out}")
    return out


class SegmentationLoss(nn.Module):
    """``CE(smoothing) + Dice(smooth)``, weights 1 : 1. ``logits (B, K, H, W)``, ``target (B, H, W)``.

    ``class_weights``: ``(K,)`` weights of the cross-entropy term (module docstring), ``None`` for none; kept in
    a non-persistent buffer (it follows the module's device, and checkpoints hold it only through the task's
    hyper-parameters); :meth:`set_class_weights` changes it later.
    """

    class_weights: Tensor | None

    def __init__(
        self,
        ignore_index: int = 255,
        ce_smoothing: float = 0.05,
        dice_smooth: float = 0.05,
        class_weights: Sequence[float] | Tensor | None = None,
    ) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.ce_smoothing = ce_smoothing
        self.dice_smooth = dice_smooth
        self.register_buffer("class_weights", None, persistent=False)
        self.set_class_weights(class_weights)

    def set_class_weights(self, weights: Sequence[float] | Tensor | None) -> None:
        device = next((b.device for b in self.buffers()), None)
        self.class_weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float32, device=device)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        logits = logits.float()  # one fp32 copy of (B, K, H, W) under bf16 autocast, shared by both terms
        ce = cross_entropy_loss(logits, target, self.ignore_index, self.ce_smoothing, self.class_weights)
        return ce + dice_loss(logits, target, self.ignore_index, self.dice_smooth)
