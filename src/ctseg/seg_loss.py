"""Segmentation loss of the paper's recipe: soft cross-entropy (smoothing 0.05) + Dice (smooth 0.05), 1 : 1.

Decisions (SPEC §1, §8):

* Cross-entropy is averaged over **labelled pixels only** (torch's ``ignore_index`` convention); the authors'
  soft cross-entropy averaged over all pixels, ignored ones included, which shrinks the loss of images with much
  ignore. A batch with no labelled pixel gives 0, not NaN.
* Dice, per class ``c`` over the labelled pixels of the whole batch, with softmax probabilities ``p``:
  ``dice_c = (2·Σ p_c·[y=c] + s) / (Σ p_c + Σ [y=c] + s)``; loss ``mean_c (1 − dice_c)·[c present]``
  (classes absent from the batch's labels contribute 0 but still count in the mean).
  Computed with scatter sums, never a full-resolution one-hot.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


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


def cross_entropy_loss(logits: Tensor, target: Tensor, ignore_index: int = 255, smoothing: float = 0.05) -> Tensor:
    """Label-smoothed cross-entropy averaged over labelled pixels (0 when none is labelled)."""
    k = logits.shape[1]
    valid = (target >= 0) & (target < k)
    tgt = torch.where(valid, target, torch.full_like(target, ignore_index)).long()
    total = F.cross_entropy(logits.float(), tgt, ignore_index=ignore_index, label_smoothing=smoothing, reduction="sum")
    return total / valid.sum().clamp(min=1)


class SegmentationLoss(nn.Module):
    """``CE(smoothing) + Dice(smooth)``, weights 1 : 1. ``logits (B, K, H, W)``, ``target (B, H, W)``."""

    def __init__(self, ignore_index: int = 255, ce_smoothing: float = 0.05, dice_smooth: float = 0.05) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.ce_smoothing = ce_smoothing
        self.dice_smooth = dice_smooth

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        logits = logits.float()  # one fp32 copy of (B, K, H, W) under bf16 autocast, shared by both terms
        return cross_entropy_loss(logits, target, self.ignore_index, self.ce_smoothing) + dice_loss(
            logits, target, self.ignore_index, self.dice_smooth
        )
