"""Hand-written autograd for the hot path of the CT loss: L2 normalisation and the pair cosines.

Autograd's generic graph for ``F.normalize`` followed by the CT pairing (two slices, a gather, two products)
allocates about a dozen full ``(2K, k, D)`` temporaries in the backward pass (zero-filled slice and gather
gradients, the broadcast division's two gradients, ...). On a CPU these memory-bound passes cost more than
the projection heads' matmuls; on a GPU each is a kernel launch. The two functions here compute the same
values with one saved tensor and a handful of in-place passes.

Math. With ``u`` one unnormalised embedding, ``z = u · ρ`` and ``ρ = 1 / max(‖u‖, ε)``; for an upstream
gradient ``g`` on ``z`` the gradient on ``u`` is ``(g − z (z·g)) · ρ`` (exact where ``‖u‖ > ε``; at ``u = 0``
it is ``g / ε`` like ``F.normalize``'s).

For CT with ``z_pos = z[:K]`` and ``z_neg = z[K:]`` (each ``(K, k, D)``) and the positive partner index
``second (K, h)``:

* ``neg_cos[r, i] = z_pos[r, i] · z_neg[r, i]``  (negative pair ``i``),
* ``pos_cos[r, j] = z_pos[r, j] · z_pos[r, second[r, j]]``  (positive pair ``j < h``),

so ``∂/∂z_pos[r, i] = g_neg[r, i] z_neg[r, i] + g_pos[r, i] z_pos[r, second[r, i]] (i < h)
+ Σ_{j: second[r, j] = i} g_pos[r, j] z_pos[r, j]`` and ``∂/∂z_neg[r, i] = g_neg[r, i] z_pos[r, i]``.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: ``F.normalize``'s default ``eps``; the clamp is applied to the squared norm as ``EPS ** 2``.
EPS = 1e-12


def _inverse_norm(u: Tensor) -> Tensor:
    """``(..., 1)``: ``1 / max(‖u‖, EPS)`` along the last dim."""
    return torch.rsqrt((u * u).sum(-1, keepdim=True).clamp_min_(EPS * EPS))


def _normalize_backward(grad: Tensor, z: Tensor, inv: Tensor) -> Tensor:
    """``(g − z (z·g)) · ρ``, computed in place in ``grad`` (which must be a fresh tensor)."""
    dot = (z * grad).sum(-1, keepdim=True)
    return grad.addcmul_(z, dot, value=-1.0).mul_(inv)


class _L2Normalize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u: Tensor) -> Tensor:
        inv = _inverse_norm(u)
        z = u * inv
        ctx.save_for_backward(z, inv)
        return z

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        z, inv = ctx.saved_tensors
        return _normalize_backward(grad.clone(memory_format=torch.contiguous_format), z, inv)


def l2_normalize(u: Tensor) -> Tensor:
    """``F.normalize(u, dim=-1)`` with a three-pass backward. ``u``: ``(..., D)`` float."""
    return _L2Normalize.apply(u)


class _PairCosines(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u: Tensor, second: Tensor) -> tuple[Tensor, Tensor]:
        inv = _inverse_norm(u)
        z = u * inv
        k = z.shape[0] // 2
        z_pos, z_neg = z[:k], z[k:]
        h = second.shape[1]
        index = second.unsqueeze(-1).expand(-1, -1, z.shape[-1])
        neg_cos = (z_pos * z_neg).sum(-1)
        pos_cos = (z_pos[:, :h] * z_pos.gather(1, index)).sum(-1)
        ctx.save_for_backward(z, inv, second)
        return neg_cos, pos_cos

    @staticmethod
    def backward(ctx, g_neg: Tensor, g_pos: Tensor) -> tuple[Tensor, None]:
        z, inv, second = ctx.saved_tensors
        k = z.shape[0] // 2
        h = second.shape[1]
        z_pos, z_neg = z[:k], z[k:]
        grad = torch.empty_like(z)
        gn = g_neg.unsqueeze(-1)
        torch.mul(z_neg, gn, out=grad[:k])
        torch.mul(z_pos, gn, out=grad[k:])
        if h > 0:
            gp = g_pos.unsqueeze(-1)
            index = second.unsqueeze(-1).expand(-1, -1, z.shape[-1])
            grad_pos = grad[:k]
            grad_pos[:, :h].addcmul_(z_pos.gather(1, index), gp)
            grad_pos.scatter_add_(1, index, z_pos[:, :h] * gp)
        return _normalize_backward(grad, z, inv), None


def normalized_pair_cosines(u: Tensor, second: Tensor) -> tuple[Tensor, Tensor]:
    """L2-normalise the sampled embeddings and return the CT pair cosines.

    Args:
        u: ``(2K, k, D)`` float, unnormalised projections; rows ``0..K-1`` the sampled positives of each
            class, rows ``K..2K-1`` its negatives.
        second: ``(K, h)`` int64, ``h ≤ k``: the partner of positive ``j`` (positive pair ``(j, second[r, j])``).

    Returns:
        ``(neg_cos, pos_cos)``: ``(K, k)`` cosines of the negative pairs ``(pos_i, neg_i)`` and ``(K, h)`` of the
        positive pairs; differentiable with respect to ``u``.
    """
    return _PairCosines.apply(u, second)
