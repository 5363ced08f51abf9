"""Per-pixel uncertainty of blended class probabilities (``ctseg predict --uncertainty``).

For probabilities ``p_1 … p_K`` of a pixel (the blended, TTA-averaged softmax, summing to 1) the normalised
entropy is

    H = −Σ_k p_k log p_k / log K,   with 0 log 0 = 0,

which lies in [0, 1]: 0 for a one-hot pixel (the model is sure), 1 for the uniform p_k = 1/K (it has no idea).
Dividing by log K makes maps of models with different class counts comparable. (K = 1 has no uncertainty: H = 0.)
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = ["band_rows", "entropy_rows", "normalised_entropy"]


def normalised_entropy(probs: Tensor) -> Tensor:
    """``(K, …)`` probabilities → ``(…)`` float32 H = −Σ p log p / log K in [0, 1] (module docstring)."""
    k = probs.shape[0]
    p = probs.float()
    if k < 2:
        return torch.zeros(p.shape[1:], dtype=torch.float32, device=p.device)
    h = -(p * torch.log(p.clamp_min(1e-30))).sum(0)  # p = 0 contributes 0 (0 log 0 = 0)
    return h.div_(math.log(k)).clamp_(0.0, 1.0)


def entropy_rows(probs: Tensor, mask: np.ndarray | None) -> np.ndarray:
    """``(rows, width)`` normalised entropy as float16 values held in float32 (the file stores 16 bits), NaN at
    nodata (``mask``)."""
    return band_rows(normalised_entropy(probs), mask)


def band_rows(values: Tensor, mask: np.ndarray | None) -> np.ndarray:
    """``(rows, width)`` ``values`` as float16 values held in float32 (the file stores 16 bits), NaN at nodata."""
    out = values.to(torch.float16).cpu().numpy().astype(np.float32)
    if mask is not None:
        out[mask] = np.nan
    return out
