"""The hand-written backward passes of ``ctseg.contrastive.fused`` against autograd and finite differences."""

import pytest
import torch
import torch.nn.functional as F

from ctseg.contrastive.fused import COSINE_BLOCK, cosines_at, inverse_norms, l2_normalize, pair_cosines, row_cosines
from ctseg.contrastive.sampling import split_halves


def _pairs(n_rows=9, m=7, seed=0):
    """Index pairs into ``n_rows`` rows, with repeats (a row in several pairs) and self-pairs (``a == b``)."""
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randint(0, n_rows, (2, m), generator=g)
    b[0] = a[0]
    return a.view(m, 1).expand(m, 2).reshape(-1), b.view(m, 1).expand(m, 2).reshape(-1)


def _cosines(rows, pairs):
    return cosines_at(rows, inverse_norms(rows), pairs)


@pytest.mark.parametrize("seed", range(4))
def test_cosines_at_gradcheck(seed):
    rows = torch.randn(9, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)).requires_grad_()
    a, b = _pairs(seed=seed)
    pairs = [(a[:6].view(2, 3), b[:6].view(2, 3)), (a[6:], b[6:])]
    assert torch.autograd.gradcheck(lambda x: tuple(_cosines(x, pairs)), (rows,))
    # given values (recomputed from x, so the finite differences see them move): the same backward
    given = lambda x: tuple(cosines_at(x, inverse_norms(x), pairs, [c.detach() for c in _cosines(x, pairs)]))  # noqa: E731
    assert torch.autograd.gradcheck(given, (rows,))


@pytest.mark.parametrize("seed", range(3))
def test_cosines_at_match_autograd_of_normalised_gathers(seed):
    """Values and gradients of ``F.normalize(rows)[a] · F.normalize(rows)[b]``, with repeated rows, self-pairs,
    a zero row (the normalisation's ε branch) and an empty set of pairs."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.randn(12, 8, generator=g)
    rows[3] = 0.0
    a, b = _pairs(12, 10, seed)
    a[1] = 3
    pairs = [(a.view(4, 5), b.view(4, 5)), (a[:0], b[:0])]
    got_rows, want_rows = rows.clone().requires_grad_(), rows.clone().requires_grad_()
    got = _cosines(got_rows, pairs)
    z = F.normalize(want_rows, dim=-1)
    want = [(z[x] * z[y]).sum(-1) for x, y in pairs]
    weights = [torch.randn(t.shape, generator=g) for t in want]
    for x, y in zip(got, want, strict=True):
        assert x.shape == y.shape
        torch.testing.assert_close(x, y)
    sum((w * t).sum() for w, t in zip(weights, got, strict=True)).backward()
    sum((w * t).sum() for w, t in zip(weights, want, strict=True)).backward()
    assert got_rows.grad.abs().sum() > 0
    torch.testing.assert_close(got_rows.grad, want_rows.grad)


def test_pair_cosines_rank_the_pairs_cosines_at_differentiates():
    """The no-gradient ranking cosines of every CT pair equal :func:`cosines_at` on the same pairs, and the
    normalised rows' dot products."""
    g = torch.Generator().manual_seed(1)
    k, n, d = 3, 9, 5
    rows = torch.randn(2 * k * n, d, generator=g, dtype=torch.float64)
    valid = torch.arange(n)[None, :] < torch.randint(0, n + 1, (k, 1), generator=g)
    _, second, _ = split_halves(valid)
    pos = torch.arange(k * n).view(k, n)
    neg, partner = pos + k * n, pos.gather(1, second)
    neg_cos, pos_cos = pair_cosines(rows, inverse_norms(rows), pos, neg, second)
    want_neg, want_pos = cosines_at(rows, inverse_norms(rows), [(pos, neg), (pos[:, : second.shape[1]], partner)])
    torch.testing.assert_close(neg_cos, want_neg, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(pos_cos, want_pos, rtol=1e-12, atol=1e-12)
    z = F.normalize(rows, dim=-1)
    torch.testing.assert_close(neg_cos, (z[pos] * z[neg]).sum(-1))
    assert pair_cosines(rows, inverse_norms(rows), pos, neg, None)[1] is None


def test_row_cosines_in_blocks_are_the_one_pass_values_bit_for_bit():
    """On the CPU :func:`row_cosines` works in blocks of pairs; each pair's value must not depend on its block."""
    g = torch.Generator().manual_seed(6)
    rows = torch.randn(500, 128, generator=g)
    inv = inverse_norms(rows)
    m = 2 * COSINE_BLOCK + 37  # two whole blocks and a part
    a, b = torch.randint(0, 500, (2, m), generator=g)
    blocked = row_cosines(rows, inv, a, b)
    one_pass = torch.linalg.vecdot(rows[a], rows[b]).mul_(inv[a, 0]).mul_(inv[b, 0])
    assert blocked.shape == (m,) and torch.equal(blocked, one_pass)
    assert row_cosines(rows, inv, a[:0], b[:0]).shape == (0,)


def test_cosines_at_given_values_reads_no_row_and_has_the_same_backward():
    """Given the pairs' cosines, the forward returns them and the backward is the one it would have had."""
    g = torch.Generator().manual_seed(4)
    rows = torch.randn(12, 8, generator=g)
    a, b = _pairs(12, 10, 4)
    pairs = [(a.view(4, 5), b.view(4, 5)), (a[:6], b[:6])]
    weights = [torch.randn(x.shape, generator=g) for x, _ in pairs]
    computed_rows, given_rows = rows.clone().requires_grad_(), rows.clone().requires_grad_()
    computed = _cosines(computed_rows, pairs)
    given = cosines_at(given_rows, inverse_norms(given_rows), pairs, [c.detach() for c in computed])
    for x, y in zip(computed, given, strict=True):
        assert torch.equal(x, y) and y.requires_grad
    shifted = cosines_at(rows, inverse_norms(rows), pairs, [c.detach() + 1.0 for c in computed])
    for x, y in zip(computed, shifted, strict=True):  # the values given are what comes out: no row was read
        assert torch.equal(y, x.detach() + 1.0)
    for out in (computed, given):
        sum((w * t).sum() for w, t in zip(weights, out, strict=True)).backward()
    assert given_rows.grad.abs().sum() > 0
    assert torch.equal(computed_rows.grad, given_rows.grad)


def test_ranking_cosines_are_bit_for_bit_those_of_the_gathered_samples():
    """The CT paths hand the ranking's cosines to :func:`cosines_at` instead of recomputing them, and the ranking
    takes them from the rows by index in blocks: in float32, at the CT's sizes, they must be bit for bit the values
    of the plain formulation — every sample's row gathered to ``(2K, P, D)``, one row-dot over the classes'
    positives and negatives (the positives' first half a slice), then ``× ρ_a × ρ_b``."""
    g = torch.Generator().manual_seed(2)
    k, p, d, n_rows = 4, 3 * COSINE_BLOCK // 4, 128, 900  # K·P spans several blocks
    rows = torch.randn(n_rows, d, generator=g) * torch.rand(n_rows, 1, generator=g)
    where = torch.randint(0, n_rows, (2 * k, p), generator=g)
    valid = torch.arange(p)[None, :] < torch.randint(p // 2, p + 1, (k, 1), generator=g)
    _, second, _ = split_halves(valid)
    inv_rows = inverse_norms(rows)
    neg_cos, pos_cos = pair_cosines(rows, inv_rows, where[:k], where[k:], second)
    u, rho = rows[where], inv_rows[where].squeeze(-1)  # (2K, P, D), (2K, P)
    h = second.shape[1]
    want_neg = torch.linalg.vecdot(u[:k], u[k:]).mul_(rho[:k]).mul_(rho[k:])
    partner = u[:k].gather(1, second.unsqueeze(-1).expand(-1, -1, d))
    want_pos = torch.linalg.vecdot(u[:k, :h], partner).mul_(rho[:k, :h]).mul_(rho[:k].gather(1, second))
    assert torch.equal(neg_cos, want_neg) and torch.equal(pos_cos, want_pos)
    kept = [(where[:k], where[k:]), (where[:k, :h], where[:k].gather(1, second))]
    got_neg, got_pos = cosines_at(rows, inv_rows, kept)  # and cosines_at computes the same values itself
    assert torch.equal(got_neg, want_neg) and torch.equal(got_pos, want_pos)


def test_l2_normalize_gradcheck_and_values():
    u = torch.randn(4, 6, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(l2_normalize, (u,))
    torch.testing.assert_close(l2_normalize(u), F.normalize(u, dim=-1))
    zero = torch.zeros(2, 3, requires_grad=True)
    out = l2_normalize(zero)
    out.sum().backward()
    assert torch.equal(out, torch.zeros(2, 3)) and torch.isfinite(zero.grad).all()


def test_masked_logsumexp_matches_masked_fill_reference():
    from ctseg.contrastive.losses import MASKED_LOGIT, masked_logsumexp

    g = torch.Generator().manual_seed(0)
    x = (torch.randn(4, 3, 9, generator=g, dtype=torch.float64) * 5).requires_grad_()
    keep = torch.rand(4, 1, 9, generator=g) > 0.4
    keep[0] = False  # a row with nothing kept
    keep[1, :, 0] = True
    got = masked_logsumexp(x, keep)
    want = x.masked_fill(~keep, MASKED_LOGIT).logsumexp(-1)
    torch.testing.assert_close(got, want)
    assert torch.all(got[0] == MASKED_LOGIT)
    w = torch.randn_like(got)
    g1 = torch.autograd.grad((w * got).sum(), x)[0]
    g2 = torch.autograd.grad((w * want).sum(), x)[0]
    torch.testing.assert_close(g1, g2)
    assert torch.isfinite(g1).all() and torch.all(g1[~keep.expand_as(x)] == 0)
    # huge masked logits (small temperature) neither overflow nor give NaN gradients
    big = (x.detach() * 100).requires_grad_()
    out = masked_logsumexp(big, keep)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(big.grad).all()


def _reference_info_nce(q, k, n, keep, t):
    from ctseg.contrastive.losses import MASKED_LOGIT

    pos = (q * k).sum(-1, keepdim=True)
    neg = torch.einsum("rqd,rnd->rqn", q, n).masked_fill(~keep[:, None, :], MASKED_LOGIT * t)
    logits = torch.cat([pos, neg], -1) / t
    return logits.logsumexp(-1) - logits[..., 0]


@pytest.mark.parametrize("seed, temperature", [(0, 0.1), (1, 0.5), (2, 0.05)])
def test_info_nce_shared_matches_reference_and_gradcheck(seed, temperature):
    from ctseg.contrastive.fused import info_nce_shared

    g = torch.Generator().manual_seed(seed)
    r, q_n, n_n, d = 3, 5, 7, 4

    def unit(*shape):
        return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1).requires_grad_()

    q, k, n = unit(r, q_n, d), unit(r, q_n, d), unit(r, n_n, d)
    keep = torch.rand(r, n_n, generator=g) > 0.4
    keep[0] = False  # a row without negatives: loss 0
    got = info_nce_shared(q, k, n, keep, temperature)
    want = _reference_info_nce(q, k, n, keep, temperature)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got[0], torch.zeros_like(got[0]), rtol=0, atol=1e-12)  # no negatives: 0
    assert torch.autograd.gradcheck(lambda *x: info_nce_shared(*x, keep, temperature), (q, k, n))
    empty = info_nce_shared(q, k, n[:, :0], keep[:, :0], temperature)
    assert torch.all(empty == 0)
    # a second backward through the same graph (retain_graph) gives the same gradients as the first
    loss = info_nce_shared(q, k, n, keep, temperature).sum()
    first = torch.autograd.grad(loss, (q, k, n), retain_graph=True)
    second = torch.autograd.grad(loss, (q, k, n))
    for a, b in zip(first, second, strict=True):
        torch.testing.assert_close(a, b)


def test_take_unit_rows_matches_gathers_of_l2_normalize():
    """Several gathers of the normalised rows at once: the values and the gradient of separate gathers of
    ``l2_normalize(rows)``, with repeated rows and a zero row."""
    from ctseg.contrastive.fused import take_unit_rows

    torch.manual_seed(0)
    rows = torch.randn(14, 5, dtype=torch.float64)
    rows[4] = 0.0  # a zero row: the normalisation's ε branch
    a = torch.randint(0, 14, (3, 4))
    b = torch.randint(0, 14, (3, 7))
    c = torch.randint(0, 14, (2, 4))
    b[0, 0] = 4
    weights = [torch.randn(*t.shape, 5, dtype=torch.float64) for t in (a, b, c)]

    ref_rows = rows.clone().requires_grad_()
    z = l2_normalize(ref_rows)
    ref = [z[t] for t in (a, b, c)]
    sum((r * w).sum() for r, w in zip(ref, weights, strict=True)).backward()

    got_rows = rows.clone().requires_grad_()
    inv = inverse_norms(got_rows)
    assert not inv.requires_grad
    got = take_unit_rows(got_rows, inv, [a, b, c])
    sum((g * w).sum() for g, w in zip(got, weights, strict=True)).backward()
    for g, r in zip(got, ref, strict=True):
        torch.testing.assert_close(g, r, rtol=0, atol=0)
    torch.testing.assert_close(got_rows.grad, ref_rows.grad, rtol=1e-12, atol=1e-12)
