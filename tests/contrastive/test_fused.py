"""The hand-written backward passes of ``ctseg.contrastive.fused`` against autograd and finite differences."""

import pytest
import torch
import torch.nn.functional as F

from ctseg.contrastive.fused import l2_normalize, normalized_pair_cosines, take_rows
from ctseg.contrastive.sampling import split_halves


def reference_pair_cosines(u, second):
    z = F.normalize(u, dim=-1)
    k = z.shape[0] // 2
    z_pos, z_neg = z[:k], z[k:]
    z_b = z_pos.gather(1, second.unsqueeze(-1).expand(-1, -1, z.shape[-1]))
    return (z_pos * z_neg).sum(-1), (z_pos[:, : second.shape[1]] * z_b).sum(-1)


def _inputs(k=3, n=9, d=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(2 * k, n, d, generator=g, dtype=dtype)
    valid = torch.arange(n)[None, :] < torch.randint(0, n + 1, (k, 1), generator=g)
    _, second, _ = split_halves(torch.cat([valid], 0))
    return u.requires_grad_(), second


@pytest.mark.parametrize("seed", range(4))
def test_pair_cosines_gradcheck(seed):
    u, second = _inputs(seed=seed)
    assert torch.autograd.gradcheck(lambda x: normalized_pair_cosines(x, second), (u,))


@pytest.mark.parametrize("seed", range(3))
def test_pair_cosines_match_autograd(seed):
    u, second = _inputs(k=4, n=16, d=8, seed=seed, dtype=torch.float32)
    got, want = normalized_pair_cosines(u, second), reference_pair_cosines(u, second)
    weights = [torch.randn_like(t) for t in want]
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)
    g1 = torch.autograd.grad(sum((w * t).sum() for w, t in zip(weights, got, strict=True)), u)[0]
    g2 = torch.autograd.grad(sum((w * t).sum() for w, t in zip(weights, want, strict=True)), u)[0]
    torch.testing.assert_close(g1, g2)


def test_pair_cosines_odd_and_tiny_shapes():
    for k, n in ((1, 1), (2, 2), (1, 3)):
        u, second = _inputs(k=k, n=n, d=3)
        assert second.shape == (k, n // 2)
        assert torch.autograd.gradcheck(lambda x, s=second: normalized_pair_cosines(x, s), (u,))


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


def test_take_rows_matches_gather_values_and_gradients():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(3, 11, 5, generator=g, dtype=torch.float64, requires_grad=True)
    positions = torch.randint(0, 11, (3, 7), generator=g)  # repeated positions: gradients must add up
    want = z.gather(1, positions.unsqueeze(-1).expand(-1, -1, 5))
    got = take_rows(z, positions)
    assert torch.equal(got, want)
    w = torch.randn(3, 7, 5, generator=g, dtype=torch.float64)
    g1 = torch.autograd.grad((got * w).sum(), z)[0]
    g2 = torch.autograd.grad((want * w).sum(), z)[0]
    torch.testing.assert_close(g1, g2)
    assert take_rows(z, positions[:, :0]).shape == (3, 0, 5)


def test_take_unit_rows_matches_gathers_of_l2_normalize():
    """Several gathers of the normalised rows at once: the values and the gradient of separate ``take_rows`` of
    slices of ``l2_normalize(u)``, with repeated rows and a zero row."""
    from ctseg.contrastive.fused import inverse_norms, take_unit_rows

    torch.manual_seed(0)
    u = torch.randn(6, 9, 5, dtype=torch.float64)
    u[4, 2] = 0.0  # a zero row: the normalisation's ε branch
    k = 3
    a = torch.randint(0, 9, (3, 4))
    b = torch.randint(0, 9, (3, 7))
    c = torch.randint(0, 9, (3, 4))
    weights = [torch.randn(3, 4, 5, dtype=torch.float64), torch.randn(3, 7, 5, dtype=torch.float64),
               torch.randn(3, 4, 5, dtype=torch.float64)]  # fmt: skip

    ref_u = u.clone().requires_grad_()
    z = l2_normalize(ref_u)
    ref = [take_rows(z[:k], a), take_rows(z[k:], b), take_rows(z[:k], c)]
    sum((r * w).sum() for r, w in zip(ref, weights, strict=True)).backward()

    got_u = u.clone().requires_grad_()
    inv = inverse_norms(got_u)
    assert not inv.requires_grad
    got = take_unit_rows(got_u, inv, [(0, a), (k, b), (0, c)])
    sum((g * w).sum() for g, w in zip(got, weights, strict=True)).backward()
    for g, r in zip(got, ref, strict=True):
        torch.testing.assert_close(g, r, rtol=0, atol=0)
    torch.testing.assert_close(got_u.grad, ref_u.grad, rtol=1e-12, atol=1e-12)
