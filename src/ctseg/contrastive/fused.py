"""Hand-written autograd for the hot path of the CT loss: L2 normalisation, the pair cosines (:func:`pair_cosines`
to rank every pair, :func:`cosines_at` to differentiate the kept ones), the InfoNCE paths' gathers of normalised
rows (:func:`take_unit_rows`) and InfoNCE itself.

Autograd's generic graph for ``F.normalize`` followed by the CT pairing (two slices, a gather, two products)
allocates about a dozen full ``(2K, k, D)`` temporaries in the backward pass (zero-filled slice and gather
gradients, the broadcast division's two gradients, ...); on a GPU each is a kernel launch and a pass over
memory. The functions here compute the same values with a few saved tensors and a handful of in-place passes:
the unit rows ``z`` are never written out (cosines are row-dots of ``u`` scaled by ``ρ_a ρ_b``, on the CPU in
blocks whose rows stay in the caches; the gathers scale only the rows they take); only the pairs hard mining can
keep are differentiated, taken straight from the projected rows by index (on the CPU one row per distinct sampled
patch, ``ctseg.contrastive.ct``), so no ``(2K, k, D)`` gradient is ever formed; and each backward ends in one
``index_add_`` of whole ``D``-rows. On the 2-core CPU the heads' matmuls and GELU dominate the CT time all the
same (``benchmarks/README.md``, issue 33).

Math. With ``u`` one unnormalised embedding, ``z = u · ρ`` and ``ρ = 1 / max(‖u‖, ε)``; for an upstream
gradient ``g`` on ``z`` the gradient on ``u`` is ``(g − z (z·g)) · ρ`` (exact where ``‖u‖ > ε``; at ``u = 0``
it is ``g / ε`` like ``F.normalize``'s). For a cosine ``c = (u_a·u_b) ρ_a ρ_b`` the same rule folds to
``∂c/∂u_a = ρ_a ρ_b u_b − c ρ_a² u_a``: per-pair scalars times the two rows, no row-dot in the backward.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

#: ``F.normalize``'s default ``eps``; the clamp is applied to the squared norm as ``EPS ** 2``.
EPS = 1e-12


def _inverse_norm(u: Tensor) -> Tensor:
    """``(..., 1)``: ``1 / max(‖u‖, EPS)`` along the last dim (one reduction pass, no ``u²`` temporary)."""
    return torch.linalg.vector_norm(u, dim=-1, keepdim=True).clamp_min_(EPS).reciprocal_()


def _normalize_backward(grad: Tensor, z: Tensor, inv: Tensor) -> Tensor:
    """``(g − z (z·g)) · ρ``, computed in place in ``grad`` (which must be a fresh tensor)."""
    dot = torch.linalg.vecdot(z, grad).unsqueeze(-1)
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


def inverse_norms(u: Tensor) -> Tensor:
    """``ρ = 1 / max(‖u‖, ε)`` of the rows of ``u`` ``(..., D)``, shape ``(..., 1)``, detached — the unit rows are
    ``z = u ρ`` (:func:`l2_normalize`'s values); used to rank pairs (``(u_a·u_b) ρ_a ρ_b``, no ``z`` written out)
    before :func:`take_unit_rows` gathers the ones that are kept."""
    with torch.no_grad():
        return _inverse_norm(u)


class _TakeUnitRows(torch.autograd.Function):
    """Forward: per take, rows ``index`` of ``rows (U, D)``, each scaled by its ``ρ`` — the rows of ``z = rows · ρ``
    bit for bit, without writing ``z`` for all rows. Backward: the normalisation's backward ``(g − z (z·g)) ρ`` on
    each taken row's gradient (it is linear in ``g``, so a row taken twice may be transformed per take), written
    take by take into one buffer, then one ``index_add_`` of all taken rows into a zeroed ``(U, D)`` buffer — the
    passes over ``D`` touch only the taken rows, and the takes' gradients are never concatenated."""

    @staticmethod
    def forward(ctx, rows: Tensor, inv: Tensor, *takes: Tensor) -> tuple[Tensor, ...]:
        index = torch.cat([t.reshape(-1) for t in takes])
        rho = inv.index_select(0, index)
        out, start = [], 0
        for t in takes:
            n = t.numel()
            out.append(rows.index_select(0, index[start : start + n]).mul_(rho[start : start + n]))
            start += n
        ctx.save_for_backward(rho, index, *out)
        ctx.shape = rows.shape
        return tuple(o.view(*t.shape, rows.shape[1]) for o, t in zip(out, takes, strict=True))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grads: Tensor) -> tuple[Tensor | None, ...]:
        rho, index, *taken = ctx.saved_tensors
        d = ctx.shape[1]
        g = torch.empty(index.shape[0], d, dtype=rho.dtype, device=rho.device)
        start = 0
        for z, grad in zip(taken, grads, strict=True):
            n = z.shape[0]
            grad = grad.reshape(n, d)
            dot = torch.linalg.vecdot(z, grad).unsqueeze(-1)
            torch.addcmul(grad, z, dot, value=-1.0, out=g[start : start + n])
            start += n
        g.mul_(rho)
        return (rho.new_zeros(ctx.shape).index_add_(0, index, g), None, *([None] * len(taken)))


def take_unit_rows(rows: Tensor, inv: Tensor, takes: list[Tensor]) -> list[Tensor]:
    """Rows of the L2-normalised ``rows`` ``(U, D)``, several gathers at once, differentiable with respect to
    ``rows``.

    Args:
        rows: ``(U, D)`` unnormalised embeddings; ``inv``: their :func:`inverse_norms`, ``(U, 1)``.
        takes: ``(R', W)`` int64 indices into ``rows``, one tensor per gather.

    Returns:
        One ``(R', W, D)`` tensor per take: ``l2_normalize(rows)[take]``, with one backward for all
        (:class:`_TakeUnitRows`).
    """
    return list(_TakeUnitRows.apply(rows, inv, *takes))


#: Pairs per block of :func:`row_cosines` on the CPU: a block's two gathers of rows and their product (3 × 512 KB
#: at ``D = 128``) are still in the caches when the row-dot reads them.
COSINE_BLOCK = 1024


def row_cosines(rows: Tensor, inv: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``(M,)`` cosines ``(r_a·r_b) ρ_a ρ_b`` of the index pairs ``a, b (M,)`` into ``rows (U, D)``, without gradient.

    On the CPU the pairs go in blocks of :data:`COSINE_BLOCK`: gathering all ``2M`` rows first writes them out
    and reads them back through memory (a CT stage ranks 6,144 negative pairs: 6 MB of rows at ``D = 128``),
    where a block's rows are still in the caches. The arithmetic of a pair (its row-dot, then ``× ρ_a × ρ_b``)
    is the same whatever the block, so every caller gets the same value for the same pair bit for bit. On an
    accelerator the pairs go in one block.
    """
    with torch.no_grad():
        m = a.numel()
        block = COSINE_BLOCK if rows.device.type == "cpu" else max(m, 1)
        out = rows.new_empty(m)
        for start in range(0, m, block):
            end = min(m, start + block)
            pair_rows = rows.index_select(0, a[start:end]), rows.index_select(0, b[start:end])
            torch.linalg.vecdot(*pair_rows, out=out[start:end])
        rho = inv.reshape(-1)
        return out.mul_(rho.index_select(0, a)).mul_(rho.index_select(0, b))


def pair_cosines(
    rows: Tensor, inv: Tensor, positives: Tensor, negatives: Tensor, second: Tensor | None
) -> tuple[Tensor, Tensor | None]:
    """The CT pair cosines of every sampled pair, to rank them (:func:`row_cosines`; the unit rows are never written
    out, nor the sampled rows gathered all at once).

    Args:
        rows: ``(U, D)`` unnormalised embeddings; inv: ``(U, 1)`` their :func:`inverse_norms`.
        positives, negatives: ``(K, k)`` int64 rows of each class's sampled positives and negatives.
        second: ``(K, h)`` positions of the positive partners (:func:`~ctseg.contrastive.sampling.split_halves`),
            or ``None`` for the negative pairs only.

    Returns:
        ``neg_cos (K, k)`` — pair ``j`` is (positive ``j``, negative ``j``) — and ``pos_cos (K, h)`` — pair ``i``
        is (positive ``i``, positive ``second[i]``) — (``None`` without ``second``); not differentiable (the
        caller ranks by them; :func:`cosines_at` differentiates the pairs that are kept, given these values).
    """
    neg_cos = row_cosines(rows, inv, positives.reshape(-1), negatives.reshape(-1)).view(positives.shape)
    if second is None:
        return neg_cos, None
    first = positives[:, : second.shape[1]]
    pos_cos = row_cosines(rows, inv, first.reshape(-1), positives.gather(1, second).reshape(-1))
    return neg_cos, pos_cos.view(first.shape)


class _CosinesAt(torch.autograd.Function):
    """Forward: ``cos_i = (r_{a_i}·r_{b_i}) ρ_{a_i} ρ_{b_i}`` for index pairs into ``rows (U, D)``
    (:func:`row_cosines`, the unit rows never written out) or, given ``values``, those (cosines of the same pairs
    computed before, e.g. by :func:`pair_cosines` to rank them): no pass over ``D`` at all.

    Backward, with ``g_i`` the pairs' gradients and ``c_i`` their cosines: per pair
    ``∂c/∂r_a = ρ_a ρ_b r_b − c ρ_a² r_a`` (and the same with ``a`` and ``b`` swapped); summed over the pairs a row
    ``u`` is in, ``∂L/∂r_u = Σ_i g_i ρ_a ρ_b r_{partner} − (ρ_u² Σ_i g_i c_i) r_u``. The second term is one scale of
    each row (the per-row sums are an ``index_add_`` of scalars); the first, one gather of the partners' rows scaled
    by a per-pair scalar and one ``index_add_`` into it. Only ``rows`` is saved, no gathered rows."""

    @staticmethod
    def forward(ctx, rows: Tensor, inv: Tensor, a: Tensor, b: Tensor, values: Tensor | None) -> Tensor:
        if values is None:
            cos = row_cosines(rows, inv, a, b)
        else:
            cos = values.detach().clone()
        ctx.save_for_backward(rows, inv, a, b, cos)
        return cos

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None, None]:
        rows, inv, a, b, cos = ctx.saved_tensors
        rho = inv.squeeze(1)
        members, partners = torch.cat([a, b]), torch.cat([b, a])
        cross = (grad * rho.index_select(0, a) * rho.index_select(0, b)).repeat(2)  # g ρ_a ρ_b, per member
        own = rho.new_zeros(rho.shape).index_add_(0, members, (grad * cos).repeat(2))  # Σ g c per row
        out = rows * own.mul_(rho).mul_(rho).neg_().unsqueeze(1)
        out.index_add_(0, members, rows.index_select(0, partners).mul_(cross.unsqueeze(1)))
        return out, None, None, None, None


def cosines_at(
    rows: Tensor, inv: Tensor, pairs: list[tuple[Tensor, Tensor]], values: list[Tensor] | None = None
) -> list[Tensor]:
    """Cosines of the pairs of rows ``(a_i, b_i)`` of ``rows (U, D)``, differentiable with respect to ``rows``.

    Args:
        rows: ``(U, D)`` unnormalised embeddings; ``inv``: their :func:`inverse_norms`, ``(U, 1)``.
        pairs: ``(a, b)`` int64 index tensors of one shape each, e.g. ``(K, W)`` for the kept pairs of ``K``
            classes.
        values: the same pairs' cosines, one tensor per pair set, when the caller has them already (the CT
            paths take them from the ranking's :func:`pair_cosines`, whose arithmetic per pair is this
            function's): the forward then reads no row. They are trusted, not checked.

    Returns:
        One tensor of cosines per ``(a, b)``, shaped like ``a``, with one backward for all (:class:`_CosinesAt`);
        the values of ``l2_normalize(rows)[a] · l2_normalize(rows)[b]``.
    """
    a = torch.cat([x.reshape(-1) for x, _ in pairs])
    b = torch.cat([y.reshape(-1) for _, y in pairs])
    given = None if values is None else torch.cat([v.reshape(-1) for v in values])
    cos = _CosinesAt.apply(rows, inv, a, b, given).split([x.numel() for x, _ in pairs])
    return [c.view(x.shape) for c, (x, _) in zip(cos, pairs, strict=True)]


def _no_autocast(device: torch.device):
    """Autocast off on ``device`` (a no-op context on devices without autocast, e.g. ``meta``)."""
    if device.type in ("cuda", "cpu", "xpu", "mps"):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def _info_nce_logits(queries: Tensor, negatives: Tensor, inv_t: float) -> Tensor:
    """``(R, Q, N)`` logits ``S_in = q_i·n_n / τ``."""
    return torch.bmm(queries, negatives.transpose(1, 2)).mul_(inv_t)


def _exp_weights_(logits: Tensor, keep: Tensor, shift: Tensor) -> Tensor:
    """In place: ``logits → keep_n · e^{S_in − c_i}``.

    Kept entries are ≤ 0 after the shift; masked ones are capped at 0 (no overflow) and everything is floored at
    −80 (no slow underflow path) before ``exp``; masked entries are then zeroed.
    """
    return logits.sub_(shift[..., None]).clamp_(-80.0, 0.0).exp_().mul_(keep[:, None, :])


class _InfoNCE(torch.autograd.Function):
    """InfoNCE with shared negatives per row; forward and backward in a few passes over ``(R, Q, N)``.

    With ``s_i = q_i·k_i / τ``, ``S_in = q_i·n_n / τ``, ``w_n = keep_n`` and a per-query shift ``c_i``:
    ``T_i = e^{s_i − c_i} + Σ_n w_n e^{S_in − c_i}``, ``ℓ_i = log T_i + c_i − s_i`` (exact for any ``c_i``).
    Gradients: ``∂ℓ_i/∂S_in = w_n e^{S_in − c_i} / T_i`` and ``∂ℓ_i/∂s_i = e^{s_i − c_i} / T_i − 1``, then through
    the bilinear forms to ``q``, ``k`` and ``n``.

    The shift is the row maximum over the positive and all negatives (one pass, no mask): with unit vectors every
    logit lies in ``[−1/τ, 1/τ]``, so kept terms have exponents ``≥ −4/τ`` and nothing underflows for
    ``τ ≥ 0.05``; below that the maximum is taken over the kept entries only (one more pass). The first backward
    reuses the forward's exponentials in place; a second one (``retain_graph``) recomputes them.
    """

    @staticmethod
    def forward(ctx, queries: Tensor, keys: Tensor, negatives: Tensor, keep: Tensor, temperature: float) -> Tensor:
        dtype = torch.promote_types(queries.dtype, torch.float32)
        with _no_autocast(queries.device):
            return _InfoNCE._forward(ctx, queries.to(dtype), keys.to(dtype), negatives.to(dtype), keep, temperature)

    @staticmethod
    def _forward(ctx, queries: Tensor, keys: Tensor, negatives: Tensor, keep: Tensor, temperature: float) -> Tensor:
        inv_t = 1.0 / temperature
        pos = (queries * keys).sum(-1).mul_(inv_t)  # (R, Q)
        logits = _info_nce_logits(queries, negatives, inv_t)  # (R, Q, N)
        if logits.shape[-1] == 0:
            shift = pos.clone()
        elif temperature < 0.05:
            kept = torch.where(keep[:, None, :], logits, torch.full((), float("-inf"), device=logits.device))
            shift = torch.maximum(kept.amax(-1), pos)
        else:
            shift = torch.maximum(logits.amax(-1), pos)
        weights = _exp_weights_(logits, keep, shift)
        p = torch.exp((pos - shift).clamp_min(-80.0))
        total = weights.sum(-1).add_(p)
        ctx.save_for_backward(queries, keys, negatives, keep, shift, total, p)
        # Kept on ctx, not saved: the first backward turns it into the logits' gradient in place.
        ctx.weights, ctx.inv_t = weights, inv_t
        return total.log().add_(shift).sub_(pos)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        with _no_autocast(grad.device):
            return _InfoNCE._backward(ctx, grad)

    @staticmethod
    def _backward(ctx, grad: Tensor):
        queries, keys, negatives, keep, shift, total, p = ctx.saved_tensors
        weights, ctx.weights = ctx.weights, None
        if weights is None:  # a second backward through the same graph: the buffer was used in place
            weights = _exp_weights_(_info_nce_logits(queries, negatives, ctx.inv_t), keep, shift)
        scale = grad / total
        d_logits = weights.mul_((scale * ctx.inv_t)[..., None])
        d_pos = (grad * (p / total - 1.0) * ctx.inv_t)[..., None]  # (R, Q, 1)
        d_queries = torch.bmm(d_logits, negatives).addcmul_(d_pos, keys)
        d_keys = d_pos * queries
        d_negatives = torch.bmm(d_logits.transpose(1, 2), queries)
        return d_queries, d_keys, d_negatives, None, None


def info_nce_shared(queries: Tensor, keys: Tensor, negatives: Tensor, keep: Tensor, temperature: float) -> Tensor:
    """Per-query InfoNCE ``−log softmax([q·k, q·n_1 … q·n_N] / τ)[0]`` over the kept negatives.

    Args:
        queries, keys: ``(R, Q, D)`` float32, L2-normalised and paired; negatives: ``(R, N, D)``;
        keep: ``(R, N)`` bool, the negatives of row ``r`` that take part.

    Returns:
        ``(R, Q)`` losses, finite everywhere (a query with no kept negative gets ``0``).
    """
    return _InfoNCE.apply(queries, keys, negatives, keep, temperature)
