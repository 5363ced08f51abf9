"""Hard mining by rank: the static-width ``hardest_first`` against ``keep_hardest`` and a sorted-list reference."""

import math

import pytest
import torch

from ctseg.contrastive.sampling import distinct_indices, hardest_first, keep_hardest, sample_eligible


def _case(seed: int, rows: int = 5, n: int = 37):
    g = torch.Generator().manual_seed(seed)
    sim = torch.randint(-4, 5, (rows, n), generator=g).float() / 4  # many ties: the tie rule matters
    valid = torch.rand(rows, n, generator=g) < 0.7
    valid[0] = False  # a row with nothing valid
    valid[1] = True
    return sim, valid


@pytest.mark.parametrize("rounding", ["ceil", "floor"])
@pytest.mark.parametrize("high", [True, False])
@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("seed", range(3))
def test_hardest_first_keeps_what_keep_hardest_keeps_in_rank_order(seed, fraction, high, rounding):
    sim, valid = _case(seed)
    order, keep = hardest_first(sim, valid, fraction, hardest_is_high=high, rounding=rounding)
    mask = keep_hardest(sim, valid, fraction, hardest_is_high=high, rounding=rounding)
    n = sim.shape[1]
    if fraction < 1.0:
        rounded = math.floor(n * fraction) if rounding == "floor" else math.ceil(n * fraction)
        assert order.shape == keep.shape == (sim.shape[0], min(n, rounded))
    for r in range(sim.shape[0]):
        kept = order[r][keep[r]].tolist()
        assert sorted(kept) == mask[r].nonzero().flatten().tolist()
        # reference: valid positions sorted by (hardness, position), the first ⌈f·n⌉ (or ⌊f·n⌋)
        cand = [i for i in range(n) if valid[r, i]]
        ranked = sorted(cand, key=lambda i: (-float(sim[r, i]) if high else float(sim[r, i]), i))
        count = len(cand) * fraction
        count = math.floor(count) if rounding == "floor" else math.ceil(count)
        assert kept == ranked[:count] if fraction < 1.0 else sorted(kept) == cand


def test_hardest_first_width_is_static():
    sim = torch.randn(3, 10, device="meta")
    valid = torch.ones(3, 10, dtype=torch.bool, device="meta")
    order, keep = hardest_first(sim, valid, 0.5, hardest_is_high=True, rounding="floor")
    assert order.shape == keep.shape == (3, 5)


@pytest.mark.parametrize("seed", range(4))
def test_distinct_indices_is_unique_with_inverse(seed):
    g = torch.Generator().manual_seed(seed)
    size = [1, 7, 50, 300][seed]
    index = torch.randint(0, size, (int(torch.randint(0, 200, (1,), generator=g)),), generator=g)
    distinct, where = distinct_indices(index, size)
    want, want_where = torch.unique(index, return_inverse=True)
    assert torch.equal(distinct, want)
    assert torch.equal(where, want_where)
    assert torch.equal(distinct[where], index)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("n", "k"), [(16384, 1024), (1024, 1024), (256, 1024), (37, 5)])
def test_sample_eligible_ranks_as_the_float_keys_do(seed, n, k):
    """The integer-bit ranking picks the samples of the float keys' ``topk``, in the same order, ties included."""
    eligible = torch.rand(12, n, generator=torch.Generator().manual_seed(100 + seed)) < [0.002, 0.3, 0.9][seed % 3]
    eligible[0] = False  # a row with no eligible patch: every slot invalid, all keys tied at −1
    index, valid, count = sample_eligible(eligible, k, torch.Generator().manual_seed(seed))
    keys = torch.rand(12, n, generator=torch.Generator().manual_seed(seed)).masked_fill_(~eligible, -1.0)
    values, reference = keys.topk(min(k, n), dim=1, sorted=True)
    assert torch.equal(index, reference) and torch.equal(valid, values >= 0)
    assert torch.equal(count, eligible.sum(1)) and torch.equal(valid.sum(1), count.clamp(max=min(k, n)))
    assert bool(eligible.gather(1, index)[valid].all()) and not bool(valid[0].any())
