"""Contrastive losses on sampled pairs (pure functions, batched over classes).

All inputs are L2-normalised float32 embeddings; validity and keep masks make every shape static.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ctseg.contrastive.fused import info_nce_shared

#: Logit given to masked-out entries: finite, so masked rows can never produce NaN values or gradients.
MASKED_LOGIT = -1e9


def masked_mean(values: Tensor, mask: Tensor, dim: int | tuple[int, ...] = -1) -> Tensor:
    """Mean of ``values`` over ``mask`` along ``dim``; 0 where nothing is selected (never NaN)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def masked_logsumexp(x: Tensor, keep: Tensor, dim: int = -1) -> Tensor:
    """``log Σ_{j: keep_j} exp(x_j)`` along ``dim``; ``MASKED_LOGIT`` where nothing is kept (never ``−inf``/NaN).

    The value of ``x.masked_fill(~keep, MASKED_LOGIT).logsumexp(dim)`` (to a relative ``e^-80``), but ``exp``
    only ever sees arguments in ``[−80, 0]``: with ``m`` the (detached) maximum over kept entries it takes
    ``x − m`` (floored at −80) where kept and 0 where masked, and its masked outputs are then zeroed, so masked
    entries can neither overflow nor leak NaN gradients. Feeding ``exp`` arguments below its fp32 underflow limit
    (≈ −87, e.g. a masked −1e9) sends some CPUs down a slow path: 20–64× slower on the 2-core Xeon CI machine
    (``python benchmarks/exp_underflow.py``).

    Args:
        x: logits ``(...)``, finite where kept; keep: bool, broadcastable to ``x``.
    """
    keep = keep.expand_as(x)
    m = x.detach().masked_fill(~keep, float("-inf")).amax(dim, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    shifted = torch.exp(torch.where(keep, (x - m).clamp_min(-80.0), zero))  # kept entries are ≤ 0 already
    total = torch.where(keep, shifted, zero).sum(dim)
    lse = torch.log(total.clamp_min(torch.finfo(x.dtype).tiny)) + m.squeeze(dim)
    return torch.where(total > 0, lse, torch.full_like(lse, MASKED_LOGIT))


def cl_pair_loss(cosine: Tensor, target: Tensor | float, smoothing: float = 0.1, form: str = "logits") -> Tensor:
    """The paper's CL loss per pair.

    With ``s = (cos + 1) / 2`` and smoothed targets ``t = 1 − ε/2`` (positive pair) or ``ε/2`` (negative):

    * ``form="logits"`` (the authors' code): soft cross-entropy of the two-vector ``[1 − s, s]`` used as
      logits, ``−[(1 − t)·log σ₀ + t·log σ₁]`` with ``σ = softmax([1 − s, s])``. Bounded to
      ``[0.363, 1.263]`` for ``ε = 0.1``.
    * ``form="probability"``: binary cross-entropy on ``s`` itself, ``−[t·log s + (1 − t)·log(1 − s)]``.

    The logits form needs no ``s``: ``log_softmax([1 − s, s]) = [−softplus(2s − 1), −softplus(1 − 2s)]`` with
    ``2s − 1 = cos``, and ``softplus(−x) = softplus(x) − x``, so the loss is ``softplus(cos) − t·cos`` and its
    derivative ``σ(cos) − t`` — two element-wise passes, whose backward autograd takes in two more.

    Args:
        cosine: ``(...)`` cosine similarities.
        target: 1 for positive pairs, 0 for negative pairs: a number, or a tensor broadcastable to ``cosine``.

    Returns:
        ``(...)`` per-pair loss.
    """
    if isinstance(target, Tensor):
        t = target.to(cosine.dtype) * (1.0 - smoothing) + 0.5 * smoothing
    else:
        t = float(target) * (1.0 - smoothing) + 0.5 * smoothing
    if form == "logits":
        return F.softplus(cosine) - t * cosine
    s = (cosine + 1.0) * 0.5
    if form == "probability":
        s = s.clamp(1e-6, 1.0 - 1e-6)
        return -(t * torch.log(s) + (1.0 - t) * torch.log1p(-s))
    raise ValueError(f"cl_form must be 'logits' or 'probability', got {form!r}")


def info_nce(
    queries: Tensor, keys: Tensor, query_valid: Tensor, negatives: Tensor, negative_valid: Tensor, temperature: float
) -> Tensor:
    """InfoNCE per query with a shared negative set per row.

    ``logits_i = [q_i·k_i, q_i·n_1, …, q_i·n_N] / τ``; loss ``−log softmax(logits_i)[0]``; invalid negatives
    are masked out. Computed by :func:`ctseg.contrastive.fused.info_nce_shared` (hand-written backward).

    Args:
        queries, keys: ``(R, Q, D)`` paired embeddings.
        query_valid: ``(R, Q)`` bool (only used by the caller's averaging; masked rows stay finite).
        negatives: ``(R, N, D)``; negative_valid: ``(R, N)`` bool.

    Returns:
        ``(R, Q)`` per-query loss (finite everywhere).
    """
    del query_valid
    return info_nce_shared(queries, keys, negatives, negative_valid, temperature)
