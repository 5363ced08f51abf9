"""Fixed-size random sampling with validity masks, and hard-pair mining by rank.

Everything here has static output shapes: what varies with the data is carried by boolean validity masks and
integer counts held on the device, so a training step never waits for the host.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def sample_eligible(
    eligible: Tensor, num_samples: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Uniform sampling without replacement of up to ``num_samples`` eligible items per row.

    Each row gets i.i.d. uniform keys; ineligible items get key ``-1``; the ``k = min(num_samples, N)`` largest
    keys are taken. The eligible items among them are a uniformly random subset, in random order, and come
    first (``sorted=True``): valid entries form a prefix of every row.

    Args:
        eligible: ``(R, N)`` bool.
        num_samples: samples per row (upper bound).
        generator: optional RNG on ``eligible.device`` (default: the global one, so ``seed_everything`` works).

    Returns:
        ``(index, valid, count)``: ``(R, k)`` int64 indices into ``N``, ``(R, k)`` bool, and ``(R,)`` int64
        number of eligible items in the row (which may exceed ``k``).
    """
    rows, n = eligible.shape
    k = min(num_samples, n)
    keys = torch.rand(rows, n, device=eligible.device, generator=generator, dtype=torch.float32)
    keys.masked_fill_(~eligible, -1.0)
    # Ranked by their bits read as int32: non-negative float32 values order as their bit patterns do (equal keys stay
    # equal), and −1.0 reads as a negative integer, so the ranking is the float one; the integer topk is the faster
    # on the CPU (its sorted topk of 1,024 among 1,024 keys especially). A test checks the samples are the same.
    values, index = keys.view(torch.int32).topk(k, dim=1, sorted=True)
    return index, values >= 0, eligible.sum(1)


def distinct_indices(index: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """The distinct values of ``index`` and where each entry is among them, for integers in ``[0, size)``.

    Args:
        index: ``(M,)`` int64, values in ``[0, size)``.
        size: the number of possible values.

    Returns:
        ``(distinct, where)``: ``(U,)`` int64 the distinct values in increasing order and ``(M,)`` int64 with
        ``distinct[where] == index`` — what ``torch.unique(index, return_inverse=True)`` returns, by marking the
        values in a ``(size,)`` table and counting (no sort). ``U`` depends on the data: on an accelerator,
        reading it makes the host wait for the device (CPU use only in a training step).
    """
    mark = torch.zeros(size, dtype=torch.int64, device=index.device).index_fill_(0, index, 1)
    distinct = mark.nonzero().squeeze(1)
    return distinct, mark.cumsum_(0).sub_(1).index_select(0, index)


def rank_along_last(values: Tensor, descending: bool) -> Tensor:
    """Rank (0 = first) of each entry along the last dim under the given order; ties broken by position."""
    order = values.argsort(dim=-1, descending=descending, stable=True)
    ranks = torch.empty_like(order)
    positions = torch.arange(values.shape[-1], device=values.device).expand_as(order)
    return ranks.scatter_(-1, order, positions)


def keep_hardest(
    similarity: Tensor, valid: Tensor, fraction: float, hardest_is_high: bool, rounding: str = "ceil"
) -> Tensor:
    """Mask of the hardest ``ceil(fraction · n_valid)`` (``rounding="floor"``: ``floor``, as the authors' code
    takes ``int(n · fraction)``) valid pairs of each row.

    Args:
        similarity: ``(R, P)`` pair similarities (only their order matters; not differentiated).
        valid: ``(R, P)`` bool.
        fraction: in ``(0, 1]``; ``1.0`` keeps every valid pair.
        hardest_is_high: ``True`` for negative pairs (most similar is hardest), ``False`` for positive pairs.

    Returns:
        ``(R, P)`` bool, a subset of ``valid``.
    """
    if fraction >= 1.0:
        return valid
    fill = float("-inf") if hardest_is_high else float("inf")
    key = similarity.detach().masked_fill(~valid, fill)
    ranks = rank_along_last(key, descending=hardest_is_high)
    return valid & (ranks < keep_count(valid, fraction, rounding))


def hardest_first(
    similarity: Tensor, valid: Tensor, fraction: float, hardest_is_high: bool, rounding: str = "ceil"
) -> tuple[Tensor, Tensor]:
    """The pairs :func:`keep_hardest` keeps, as positions in rank order: a static-width prefix of the ranking.

    Hard mining keeps at most ``w = min(P, ⌈fraction · P⌉)`` (``floor`` for ``rounding="floor"``) of ``P`` pairs,
    whatever the data, so a loss over the kept pairs only needs the first ``w`` ranks: gathering them shrinks
    the work that follows by ``P / w`` with static shapes and no host sync.

    Args:
        similarity, valid, fraction, hardest_is_high, rounding: as for :func:`keep_hardest`.

    Returns:
        ``(order, keep)``: ``(R, w)`` int64 positions into ``P``, hardest first (ties by position), and ``(R, w)``
        bool, true for the pairs :func:`keep_hardest` keeps. With ``fraction ≥ 1`` (every valid pair kept) the
        positions are ``0 … P-1`` in order and ``keep`` is ``valid``.
    """
    rows, n = similarity.shape
    positions = torch.arange(n, device=similarity.device)
    if fraction >= 1.0:
        return positions.expand(rows, n), valid
    scaled = float(n) * fraction  # float64, as in keep_count: the bound is the count of a row with n valid pairs
    width = min(n, math.floor(scaled) if rounding == "floor" else math.ceil(scaled))
    fill = float("-inf") if hardest_is_high else float("inf")
    key = similarity.detach().masked_fill(~valid, fill)
    order = key.argsort(dim=-1, descending=hardest_is_high, stable=True)[:, :width]
    return order, positions[:width] < keep_count(valid, fraction, rounding)


def keep_count(valid: Tensor, fraction: float, rounding: str = "ceil") -> Tensor:
    """``(R, 1)`` number of pairs hard mining keeps: ``ceil`` or ``floor`` of ``fraction · n_valid``."""
    scaled = valid.sum(-1, keepdim=True).double() * fraction  # float64: the same rounding as Python's floats
    return torch.floor(scaled) if rounding == "floor" else torch.ceil(scaled)


def split_halves(index_valid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Pair the sampled positives: the first half with the second half (``i`` with ``i + n // 2``).

    Args:
        index_valid: ``(R, k)`` bool validity of sampled items (a prefix of each row, as from
            :func:`sample_eligible`).

    Returns:
        ``(first, second, valid)``: ``(R, k // 2)`` int64 positions into ``k`` of each pair's members and the
        pairs' validity (``i < n // 2`` with ``n`` the row's number of valid samples).
    """
    rows, k = index_valid.shape
    half = k // 2
    n_half = index_valid.sum(-1, keepdim=True) // 2
    first = torch.arange(half, device=index_valid.device).expand(rows, half)
    second = (first + n_half).clamp(max=max(k - 1, 0))
    return first, second, first < n_half
