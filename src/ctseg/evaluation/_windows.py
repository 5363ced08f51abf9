"""Window reductions over ``(..., H, W)`` tensors for :mod:`ctseg.evaluation.boundary`: a square (separable, O(log d)
shifted passes per axis) or a Euclidean disk (a union of one row window per row offset), with neutral padding so
the image border adds nothing."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor

#: Tolerance shapes: the Chebyshev square ``max(|dy|, |dx|) ≤ d`` and the Euclidean disk ``dy² + dx² ≤ d²``.
SHAPES = ("square", "disk")


def window(x: Tensor, k: int, dim: int, op) -> Tensor:
    """``op`` (OR / max / min) over every window of ``k`` consecutive entries along ``dim``, by O(log k) shifted
    passes (the length shrinks by ``k - 1``)."""
    span = 1
    while span * 2 <= k:
        n = x.shape[dim]
        x = op(x.narrow(dim, 0, n - span), x.narrow(dim, span, n - span))
        span *= 2
    rest = k - span
    if rest:
        n = x.shape[dim]
        x = op(x.narrow(dim, 0, n - rest), x.narrow(dim, rest, n - rest))
    return x


def square(x: Tensor, radius: int, op, fill: int | bool) -> Tensor:
    """``op`` over the ``(2r + 1)²`` square around each pixel of ``(..., H, W)``; outside the image is ``fill``
    (neutral for ``op``), so the image border adds nothing."""
    k = 2 * radius + 1
    padded = F.pad(x, (radius, radius, radius, radius), value=fill)
    return window(window(padded, k, -1, op), k, -2, op)


def disk(x: Tensor, radius: int, op, fill: int | bool) -> Tensor:
    """``op`` over the pixels ``(dy, dx)`` with ``dy² + dx² ≤ r²`` around each pixel (``skimage.morphology.disk``'s
    footprint): for each row offset ``dy`` a row window of half-width ``⌊√(r² − dy²)⌋``, shifted and combined."""
    r = int(radius)
    h, w = x.shape[-2:]
    padded = F.pad(x, (r, r, r, r), value=fill)
    rows: dict[int, Tensor] = {}
    out = None
    for dy in range(-r, r + 1):
        half = math.isqrt(r * r - dy * dy)
        if half not in rows:  # centres at padded columns r … r + W − 1
            rows[half] = window(padded, 2 * half + 1, -1, op).narrow(-1, r - half, w)
        part = rows[half].narrow(-2, r + dy, h)
        out = part if out is None else op(out, part)
    return out


def reduce(x: Tensor, radius: int, op, fill: int | bool, shape: str = "square") -> Tensor:
    """:func:`square` or :func:`disk` by ``shape``."""
    return disk(x, radius, op, fill) if shape == "disk" else square(x, radius, op, fill)
