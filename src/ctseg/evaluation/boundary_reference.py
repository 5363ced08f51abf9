"""The published Boundary IoU of two binary masks, as the Boundary IoU API of Cheng et al. (CVPR 2021) computes it.

Definition (one ``H × W`` image; ``G`` the true mask, ``D`` the detected one, nonzero = inside)::

    d             = max(1, round(dilation_ratio · √(H² + W²)))     (Python's round: halves to even)
    boundary(M)   = pixels of M whose Chebyshev distance to a pixel outside M is ≤ d, where every pixel outside
                    the image counts as outside M (the API pads the mask with a ring of zeros before eroding it
                    d times with a 3 × 3 square: a mask cut by the image border has a boundary there)
    bIoU(G, D)    = |boundary(G) ∩ boundary(D)| / |boundary(G) ∪ boundary(D)|     (NaN when both are empty)

ctseg's own boundary IoU (:mod:`ctseg.evaluation.boundary`) differs in two ways, both chosen for tiled aerial
scenes: the image border is no boundary (a tile's edge is not an object's), and ``d`` is a number of pixels, not a
share of the image diagonal (0.02 on a 512² tile is ``d = 14``). Its ``boundary_definition="reference"`` option
takes the first difference back (bands as here, with ``d`` in pixels), so a class's boundary IoU over a data set
is this one's sums, per class.

:func:`boundary_iou_reference` is the public contract ``ctseg.metrics.boundary_iou_reference`` (no deprecation
there: docs/design.md §13).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ctseg.errors import CtsegError

__all__ = ["boundary_iou_reference", "dilation_pixels", "mask_boundary"]


def dilation_pixels(shape: tuple[int, ...], dilation_ratio: float = 0.02) -> int:
    """The reference's ``d`` for an ``(H, W)`` image: ``max(1, round(dilation_ratio · √(H² + W²)))``."""
    if not math.isfinite(float(dilation_ratio)) or dilation_ratio < 0:
        raise CtsegError(f"dilation_ratio must be a finite number >= 0, got {dilation_ratio!r}")
    h, w = int(shape[0]), int(shape[1])
    return max(1, int(round(float(dilation_ratio) * math.sqrt(h * h + w * w))))


def mask_boundary(mask: np.ndarray, d: int) -> np.ndarray:
    """Boolean boundary of a binary ``(H, W)`` mask: its pixels within Chebyshev distance ``d`` of a pixel outside
    it, outside the image counting as outside (the reference's zero padding; module docstring)."""
    inside = np.asarray(mask) != 0
    if inside.ndim != 2:
        raise CtsegError(f"a mask must be 2-D (H, W), got shape {inside.shape}")
    if int(d) < 1:
        raise CtsegError(f"the boundary width d must be >= 1 pixel, got {d!r}")
    r = int(d)
    # a (2d + 1)² erosion with zeros beyond the border = the API's d 3 × 3 erosions of the zero-padded mask
    # (separable: rows, then columns)
    eroded = np.pad(inside, r, constant_values=False)
    eroded = sliding_window_view(eroded, 2 * r + 1, axis=1).all(axis=-1)
    eroded = sliding_window_view(eroded, 2 * r + 1, axis=0).all(axis=-1)
    return inside & ~eroded


def boundary_iou_reference(gt: np.ndarray, dt: np.ndarray, dilation_ratio: float = 0.02) -> float:
    """Boundary IoU of two binary masks of one shape, equal to the Boundary IoU API's ``boundary_iou(gt, dt,
    dilation_ratio)`` (zero padding, ``d = max(1, round(ratio × diagonal))``; module docstring). NaN when neither
    mask has a boundary (both empty)."""
    g, p = np.asarray(gt), np.asarray(dt)
    if g.shape != p.shape:
        raise CtsegError(f"gt {g.shape} and dt {p.shape} differ in shape")
    d = dilation_pixels(g.shape, dilation_ratio) if g.ndim == 2 else 1
    gb, pb = mask_boundary(g, d), mask_boundary(p, d)
    union = int(np.count_nonzero(gb | pb))
    return float(np.count_nonzero(gb & pb)) / union if union else math.nan
