"""Supervised InfoNCE among views with labels (Khosla et al., NeurIPS 2020, in the form Pissas et al. use):
:func:`supervised_info_nce`, the loss of each scale and cross-scale term of
:class:`~ctseg.contrastive.multiscale.MultiScaleContrastiveLoss`; its positive-term sum has a hand-written,
chunked backward (:class:`_PositiveTermSum`) so that memory stays linear in the number of views."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor

from ctseg.contrastive.losses import masked_logsumexp, masked_mean

#: Pair-matrix elements computed at once (rows are processed in chunks of ``CHUNK_ELEMENTS // M``): 64 MB fp32.
CHUNK_ELEMENTS = 2**24


def _full_precision(device: torch.device) -> contextlib.AbstractContextManager:
    """Disable autocast on ``device`` (similarities at τ = 0.1 need fp32); no-op where autocast does not exist."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def _pair_block(
    za: Tensor, zc: Tensor, la: Tensor, lc: Tensor, contrast_valid: Tensor, row0: int | None
) -> tuple[Tensor, Tensor, Tensor]:
    """Logits, positive mask and not-negative mask of a block of anchor rows (``row0``: drop the diagonal)."""
    logits = za @ zc.T
    same = la[:, None] == lc[None, :]
    if row0 is not None:
        rows = torch.arange(row0, row0 + za.shape[0], device=za.device)
        cols = torch.arange(zc.shape[0], device=za.device)
        self_pair = rows[:, None] == cols[None, :]
        return logits, same & ~self_pair, same | self_pair | ~contrast_valid[None, :]
    return logits, same, same | ~contrast_valid[None, :]


class _PositiveTermSum(torch.autograd.Function):
    """``Σ_{p∈P(i)} softplus(LSE_{n∈N(i)} s_in − s_ip)`` per anchor, in row chunks, with a hand-written backward.

    Memory stays ``O(chunk · M)``: the forward keeps only the per-anchor log-sum over negatives; the backward
    recomputes each block of logits (one extra matmul) and uses, with ``q_ip = σ(LSE_i − s_ip)`` and ``π_in`` the
    softmax of ``s_i·`` over ``N(i)``: ``∂/∂s_ij = −q_ij [j∈P(i)] + (Σ_p q_ip) · π_ij [j∈N(i)]``.
    Inputs: ``za`` ``(A, D)`` anchors already divided by ``τ``, ``zc`` ``(M, D)``, labels with invalid contrast
    vectors relabelled to a value no anchor has. Outputs ``(A,)`` sums and ``(A,)`` int64 positive counts.
    """

    @staticmethod
    def forward(ctx, za, zc, la, lc, contrast_valid, exclude_self: bool, chunk: int):
        a = za.shape[0]
        lse = za.new_empty(a)
        positive_sum = za.new_empty(a)
        n_positive = torch.empty(a, dtype=torch.int64, device=za.device)
        for start in range(0, a, chunk):
            rows = slice(start, min(a, start + chunk))
            logits, positive, not_negative = _pair_block(
                za[rows], zc, la[rows], lc, contrast_valid, start if exclude_self else None
            )
            block_lse = masked_logsumexp(logits, ~not_negative, dim=1)
            terms = F.softplus(block_lse[:, None] - logits)
            positive_sum[rows] = torch.where(positive, terms, 0.0).sum(1)
            n_positive[rows] = positive.sum(1)
            lse[rows] = block_lse
        ctx.save_for_backward(za, zc, la, lc, contrast_valid, lse)
        ctx.exclude_self, ctx.chunk = exclude_self, chunk
        ctx.mark_non_differentiable(n_positive)
        return positive_sum, n_positive

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_sum, grad_count):
        del grad_count
        za, zc, la, lc, contrast_valid, lse = ctx.saved_tensors
        grad_za, grad_zc = torch.zeros_like(za), torch.zeros_like(zc)
        a = za.shape[0]
        with _full_precision(za.device):
            for start in range(0, a, ctx.chunk):
                rows = slice(start, min(a, start + ctx.chunk))
                logits, positive, not_negative = _pair_block(
                    za[rows], zc, la[rows], lc, contrast_valid, start if ctx.exclude_self else None
                )
                block_lse = lse[rows, None]
                q = torch.where(positive, torch.sigmoid(block_lse - logits), 0.0)
                pi = torch.where(not_negative, 0.0, torch.exp(logits - block_lse))
                d = grad_sum[rows, None] * (pi * q.sum(1, keepdim=True) - q)
                grad_za[rows] = d @ zc
                grad_zc += d.T @ za[rows]
        return grad_za, grad_zc, None, None, None, None, None


def supervised_info_nce(
    anchors: Tensor,
    anchor_labels: Tensor,
    anchor_valid: Tensor,
    contrast: Tensor,
    contrast_labels: Tensor,
    contrast_valid: Tensor,
    temperature: float,
    exclude_self: bool,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> tuple[Tensor, Tensor]:
    """Supervised InfoNCE with one denominator per positive.

    With ``s_ij = z_i·z_j / τ``, positives ``P(i)`` (valid, same class, ``j ≠ i`` when ``exclude_self``) and
    negatives ``N(i)`` (valid, other class), each positive has its own term

    ``ℓ_ip = −log( exp(s_ip) / (exp(s_ip) + Σ_{n∈N(i)} exp(s_in)) ) = softplus(LSE_{n∈N(i)} s_in − s_ip)``,

    ``L_i = mean_{p∈P(i)} ℓ_ip`` and the loss is the mean of ``L_i`` over the valid anchors with ``|P(i)| ≥ 1``
    (each such anchor weighs the same, however many positives it has). An anchor without negatives contributes
    exactly 0 (its negatives' log-sum is the finite ``MASKED_LOGIT``, never ``−inf``).

    Computed in (at least) fp32 with autocast off, in blocks of ``chunk_elements // M`` anchor rows with a
    hand-written backward, so memory is ``O(chunk_elements)`` rather than ``O(A·M)`` (no double backward).

    Args:
        anchors: ``(A, D)`` L2-normalised; anchor_labels ``(A,)`` integer; anchor_valid ``(A,)`` bool.
        contrast: ``(M, D)`` L2-normalised; contrast_labels ``(M,)`` integer; contrast_valid ``(M,)`` bool.
        temperature: ``τ``.
        exclude_self: drop the diagonal (``contrast`` is ``anchors``; requires ``A == M``).
        chunk_elements: pair-matrix elements per block.

    Returns:
        ``(loss, n_anchors)``: 0-dim (0 when no anchor has a positive) and the number of anchors used.

    Raises:
        ValueError: on mismatched shapes.
    """
    if anchors.dim() != 2 or contrast.dim() != 2 or anchors.shape[1] != contrast.shape[1]:
        raise ValueError(
            f"anchors (A, D) and contrast (M, D) expected, got {tuple(anchors.shape)}, {tuple(contrast.shape)}"
        )
    a, m = anchors.shape[0], contrast.shape[0]
    if anchor_labels.shape != (a,) or anchor_valid.shape != (a,):
        raise ValueError(f"anchor labels and validity must be ({a},)")
    if contrast_labels.shape != (m,) or contrast_valid.shape != (m,):
        raise ValueError(f"contrast labels and validity must be ({m},)")
    if exclude_self and a != m:
        raise ValueError(f"exclude_self needs as many anchors as contrast vectors, got {a} and {m}")
    dtype = torch.promote_types(anchors.dtype, torch.float32)
    if a == 0 or m == 0:
        zero = 0.0 * (anchors.sum() + contrast.sum())
        return zero.to(dtype), anchor_valid.new_zeros((), dtype=torch.int64)
    with _full_precision(anchors.device):
        # Invalid contrast vectors get a label no anchor has, so they are never positives.
        outside = torch.minimum(anchor_labels.min(), contrast_labels.min()) - 1
        lc = torch.where(contrast_valid, contrast_labels, outside)
        chunk = max(1, chunk_elements // m)
        positive_sum, n_positive = _PositiveTermSum.apply(
            anchors.to(dtype) / temperature, contrast.to(dtype), anchor_labels, lc, contrast_valid, exclude_self, chunk
        )
        per_anchor = positive_sum / n_positive.clamp(min=1)
        active = anchor_valid & (n_positive > 0)
        return masked_mean(per_anchor, active, dim=0), active.sum()
