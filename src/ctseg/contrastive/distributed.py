"""DDP helpers of the CT loss: all-gather sampled embeddings with gradient, sum counts over ranks.

Every helper is the identity when no process group with more than one rank is initialised, so the loss runs
unchanged on one device. Only public ``torch.distributed`` calls are used.
"""

from __future__ import annotations

import torch
from torch import Tensor


def is_distributed() -> bool:
    """True inside an initialised process group of more than one rank."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _AllGatherDim1(torch.autograd.Function):
    """Concatenate every rank's tensor along dim 1; backward sums the incoming gradients over ranks
    (every rank computes the same global loss) and returns this rank's slice."""

    @staticmethod
    def forward(ctx, t: Tensor) -> Tensor:
        import torch.distributed as dist

        ctx.rank, ctx.width = dist.get_rank(), t.shape[1]
        return gather_no_grad(t)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        import torch.distributed as dist

        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad.narrow(1, ctx.rank * ctx.width, ctx.width)


def gather_no_grad(t: Tensor) -> Tensor:
    """``(R, k, ...)`` on each of W ranks → ``(R, W·k, ...)``, rank order, no gradient."""
    import torch.distributed as dist

    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts, dim=1)


def gather_global(tensors: list[Tensor]) -> list[Tensor]:
    """All-gather along dim 1 across ranks, with gradient for tensors that require it."""
    if not is_distributed():
        return tensors
    return [_AllGatherDim1.apply(t) if t.requires_grad else gather_no_grad(t) for t in tensors]


def all_reduce_sum(t: Tensor) -> Tensor:
    """Sum of ``t`` over ranks (a new tensor; ``t`` itself when not distributed)."""
    if not is_distributed():
        return t
    import torch.distributed as dist

    t = t.clone()
    dist.all_reduce(t)
    return t


def gather_samples(u: Tensor, valid: Tensor, n_eligible: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Every rank's samples per row, valid ones moved to the front (stable), and the global eligible counts.

    Args:
        u: ``(2K, k, D)`` projections (with gradient); valid: ``(2K, k)`` bool; n_eligible: ``(2K,)`` int64.

    Returns:
        ``(2K, W·k, D)``, ``(2K, W·k)``, ``(2K,)``: a valid prefix per row, as
        :func:`~ctseg.contrastive.sampling.sample_eligible` gives.
    """
    u, valid = gather_global([u, valid])
    n_eligible = all_reduce_sum(n_eligible)
    order = (~valid).to(torch.int8).argsort(dim=1, stable=True)
    valid = valid.gather(1, order)
    u = u.gather(1, order.unsqueeze(-1).expand(-1, -1, u.shape[-1]))
    return u, valid, n_eligible
