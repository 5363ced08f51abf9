"""MultiScaleContrastiveLoss against a slow, loop-based reference on the same sampled views, plus properties."""

import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from helpers.loss_inputs import CHANNELS, IGN, STRIDES, blocky_mask, make_features  # noqa: E402
from hypothesis import given, settings
from hypothesis import strategies as st

from ctseg.contrastive import MultiScaleContrastiveLoss
from ctseg.contrastive.multiscale import ScaleProjector, balanced_views, downsample_labels, supervised_info_nce


# ---------------------------------------------------------------------------------------------- reference
def reference_views(fn, mask, feat, detail):
    """Checks the recorded views of one scale by loops; returns their (b, i, j) positions and labels."""
    b, _, hs, ws = feat.shape
    r = mask.shape[-1] // ws
    k = fn.num_classes
    lab = [[[int(mask[n, i * r + r // 2, j * r + r // 2]) for j in range(ws)] for i in range(hs)] for n in range(b)]
    sizes = Counter((n, c) for n in range(b) for row in lab[n] for c in row if 0 <= c < k)
    groups = {g: m for g, m in sizes.items() if m >= fn.min_group_size}
    n_expected = min([*groups.values(), fn.max_views_per_group, fn.max_features // len(groups)]) if groups else 0
    assert int(detail["views"]) == n_expected
    assert int(detail["groups"]) == len(groups)
    positions, labels, per_group = [], [], Counter()
    valid = detail["valid"].tolist()
    assert valid == sorted(valid, reverse=True), "valid views form a prefix"
    for t, ok in enumerate(valid):
        if not ok:
            continue
        p = int(detail["index"][t])
        n, i, j = p // (hs * ws), (p % (hs * ws)) // ws, p % ws
        c = lab[n][i][j]
        assert c == int(detail["label"][t]) and (n, c) in groups
        positions.append((n, i, j))
        labels.append(c)
        per_group[(n, c)] += 1
    assert len(set(positions)) == len(positions), "without replacement"
    assert dict(per_group) == {g: n_expected for g in groups} if n_expected else not per_group
    return positions, labels


def reference_embed(proj: ScaleProjector, feat, positions):
    x = torch.stack([feat[n, :, i, j] for n, i, j in positions])
    h = F.relu(proj.fc1(x))
    h = F.batch_norm(h, None, None, proj.bn.weight, proj.bn.bias, True, 0.0, proj.bn.eps)
    return F.normalize(proj.fc2(h), dim=-1)


def reference_info_nce(za, la, zc, lc, tau, same_set):
    anchor_losses = []
    for i in range(len(la)):
        pos = [p for p in range(len(lc)) if lc[p] == la[i] and not (same_set and p == i)]
        neg = [n for n in range(len(lc)) if lc[n] != la[i]]
        if not pos:
            continue
        terms = []
        for p in pos:
            s_ip = torch.dot(za[i], zc[p]) / tau
            logits = torch.stack([s_ip] + [torch.dot(za[i], zc[n]) / tau for n in neg])
            terms.append(-(s_ip - torch.logsumexp(logits, 0)))
        anchor_losses.append(torch.stack(terms).mean())
    return torch.stack(anchor_losses).mean() if anchor_losses else torch.zeros(())


def reference_loss(fn, features, mask):
    embedded = []
    for s, (feat, detail) in enumerate(zip(features, fn.details, strict=True)):
        positions, labels = reference_views(fn, mask, feat, detail)
        z = reference_embed(fn.projectors[s], feat, positions) if len(positions) > 1 else None
        embedded.append((z, labels))
    total = torch.zeros(())
    for s, (z, labels) in enumerate(embedded):
        if z is not None:
            total = total + fn.scale_weights[s] * reference_info_nce(z, labels, z, labels, fn.temperature, True)
    if fn.cross_scale:
        last = len(features) - 1
        for d in sorted({last, last - 1} - {0, -1}, reverse=True):  # finest → deepest, → second deepest
            (za, la), (zc, lc) = embedded[0], embedded[d]
            if za is not None and zc is not None:
                total = total + reference_info_nce(za, la, zc, lc, fn.temperature, False)
    return total


@pytest.mark.parametrize(
    "case",
    [
        dict(),
        dict(min_group_size=2),  # every scale (even the 2×2 deepest) takes part
        dict(cross_scale=False, min_group_size=2),
        dict(stages=2, max_views_per_group=3),
        dict(stages=3, max_features=13, min_group_size=2),  # max_features // G binds
        dict(stages=1, temperature=0.5),
    ],
)
def test_matches_loop_reference(case):
    case = dict(case)
    n_stages = case.pop("stages", 4)
    min_group = case.pop("min_group_size", 5)
    kwargs = dict(max_views_per_group=6, max_features=40) | case
    mask = blocky_mask(2, 64, 4, 8, 0, ignore_frac=0.05)
    feats = make_features(2, 64, 0)[:n_stages]
    torch.manual_seed(0)
    fn = MultiScaleContrastiveLoss(CHANNELS[:n_stages], 4, **kwargs)
    fn.min_group_size = min_group
    fn.keep_details = True
    loss = fn(feats, mask)
    ref = reference_loss(fn, feats, mask)
    assert loss.dtype == torch.float32 and loss.shape == ()
    assert float(fn.stats["anchors"][0]) > 0, "the example must exercise the loss"
    torch.testing.assert_close(loss, ref, rtol=1e-4, atol=1e-5)
    expected = sum(w * float(v) for w, v in zip(fn.scale_weights, fn.stats["scale_loss"], strict=False))
    expected += float(fn.stats["cross_loss"].sum())
    assert math.isclose(float(loss.detach()), expected, rel_tol=1e-5)
    g1 = torch.autograd.grad(loss, feats, retain_graph=True)
    g2 = torch.autograd.grad(ref, feats, allow_unused=True)
    for a, r in zip(g1, g2, strict=True):
        if r is None:
            assert float(a.abs().sum()) == 0
        else:
            torch.testing.assert_close(a, r, rtol=1e-3, atol=1e-6)


# ---------------------------------------------------------------------------------------------- sampling
def test_downsample_takes_the_block_centre():
    mask = torch.randint(0, 50, (2, 24, 24))
    for r in (1, 2, 3, 4, 8):
        got = downsample_labels(mask, r)
        exact = F.interpolate(mask[:, None].float(), scale_factor=1 / r, mode="nearest-exact")[:, 0].long()
        assert torch.equal(got, exact)
        assert int(got[1, 2, 1]) == int(mask[1, 2 * r + r // 2, r + r // 2])
    with pytest.raises(ValueError, match="does not divide"):
        downsample_labels(mask, 5)


def check_balanced(labels, k, cap, max_features, min_group=5):
    out = balanced_views(labels, k, cap, max_features, min_group)
    b, h, w = labels.shape
    flat = labels.reshape(-1)
    size = torch.stack([((labels[n] == c).sum()) for n in range(b) for c in range(k)]).view(b, k)
    group_valid = size >= min_group
    n_groups = int(group_valid.sum())
    views = min([int(size[group_valid].min()), cap, max_features // n_groups]) if n_groups else 0
    assert int(out["views"]) == views and int(out["groups"]) == n_groups
    assert torch.equal(out["group_size"], size) and torch.equal(out["group_valid"], group_valid)
    valid = out["valid"]
    assert out["index"].shape[0] == min(max_features, b * h * w, b * k * cap)
    assert int(valid.sum()) == n_groups * views <= max_features
    idx = out["index"][valid]
    assert idx.unique().numel() == idx.numel()
    assert torch.equal(flat[idx], out["label"][valid])
    assert torch.equal(idx // (h * w), out["image"][valid])
    got = torch.zeros(b, k, dtype=torch.long)
    got.index_put_((out["image"][valid], out["label"][valid]), torch.ones_like(idx), accumulate=True)
    assert torch.equal(got, torch.where(group_valid, views, 0)), "every valid group gets exactly n views"
    return out


def test_balanced_sampling_counts():
    g = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 4, (3, 16, 16), generator=g)
    labels[0, :8] = 0  # a big group
    labels[2, 0, :6] = 3  # and some small ones
    labels[1, 5:9] = IGN
    for cap, max_features in [(2500, 10000), (7, 10000), (2500, 50), (1, 3)]:
        check_balanced(labels, 5, cap, max_features)
    check_balanced(torch.full((2, 8, 8), IGN), 3, 10, 100)  # nothing eligible
    out = check_balanced(torch.zeros(1, 2, 2, dtype=torch.long), 2, 10, 100)  # 4 pixels: below 5
    assert int(out["views"]) == 0


def test_sampling_is_uniform_within_a_group():
    labels = torch.ones(1, 4, 4, dtype=torch.long)
    labels[0, 0, :] = 0
    labels[0, 1, :2] = 0  # group (0, 0): 6 pixels; group (0, 1): 10 pixels -> 6 views of each
    torch.manual_seed(0)
    hits = torch.zeros(16)
    draws = 300
    for _ in range(draws):
        out = balanced_views(labels, 2, 100, 100)
        assert int(out["views"]) == 6
        hits.index_add_(0, out["index"][out["valid"]], torch.ones(12))
    ones = labels.reshape(-1) == 1
    assert torch.all(hits[~ones] == draws)  # the smallest group is always taken whole
    freq = hits[ones] / draws  # 6 of 10: 0.6 each, binomial sd ≈ 0.028
    assert torch.all((freq - 0.6).abs() < 0.12), freq


def dense_info_nce(za, la, va, zc, lc, vc, tau, exclude_self):
    """Plain-autograd, full-matrix form of the same loss."""
    s = za @ zc.T / tau
    valid = va[:, None] & vc[None, :]
    same = la[:, None] == lc[None, :]
    pos = same & valid
    if exclude_self:
        pos = pos & ~torch.eye(len(la), dtype=torch.bool)
    neg = ~same & valid
    lse = s.masked_fill(~neg, -1e9).logsumexp(1, keepdim=True)
    per_anchor = torch.where(pos, F.softplus(lse - s), 0.0).sum(1) / pos.sum(1).clamp(min=1)
    active = va & pos.any(1)
    return (per_anchor * active).sum() / active.sum().clamp(min=1)


@pytest.mark.parametrize("exclude_self", [True, False])
@pytest.mark.parametrize("chunk_elements", [1, 40, 10**6])
def test_chunked_loss_and_backward_match_dense(exclude_self, chunk_elements):
    g = torch.Generator().manual_seed(7)
    a = 13
    m = a if exclude_self else 9
    za = F.normalize(torch.randn(a, 5, generator=g, dtype=torch.float64), dim=-1).requires_grad_()
    zc = za if exclude_self else F.normalize(torch.randn(m, 5, generator=g, dtype=torch.float64), dim=-1)
    zc = zc if exclude_self else zc.requires_grad_()
    la, lc = torch.randint(0, 3, (a,), generator=g), torch.randint(0, 3, (m,), generator=g)
    lc = la if exclude_self else lc
    va, vc = torch.rand(a, generator=g) < 0.8, torch.rand(m, generator=g) < 0.8
    vc = va if exclude_self else vc
    args = (za, la, va, zc, lc, vc, 0.1, exclude_self)
    got, n = supervised_info_nce(za, la, va, zc, lc, vc, 0.1, exclude_self, chunk_elements=chunk_elements)
    ref = dense_info_nce(*args)
    assert int(n) > 0
    torch.testing.assert_close(got, ref)
    inputs = [za] if exclude_self else [za, zc]
    for a_grad, r_grad in zip(torch.autograd.grad(got, inputs), torch.autograd.grad(ref, inputs), strict=True):
        torch.testing.assert_close(a_grad, r_grad)
    if chunk_elements == 40:
        assert torch.autograd.gradcheck(
            lambda x, y: supervised_info_nce(x, la, va, y, lc, vc, 0.1, False, chunk_elements=40)[0],
            (za.detach().clone().requires_grad_(), zc.detach().clone().requires_grad_()),
        )


def test_info_nce_without_negatives_is_exactly_zero():
    z = F.normalize(torch.randn(6, 4), dim=-1).requires_grad_()
    labels, valid = torch.zeros(6, dtype=torch.long), torch.ones(6, dtype=torch.bool)
    loss, n = supervised_info_nce(z, labels, valid, z, labels, valid, 0.1, True)
    loss.backward()
    assert float(loss.detach()) == 0.0 and int(n) == 6 and torch.isfinite(z.grad).all()
    with pytest.raises(ValueError, match="exclude_self"):
        supervised_info_nce(z, labels, labels.bool(), z[:3], labels[:3], labels[:3].bool(), 0.1, True)
    with pytest.raises(ValueError, match="contrast labels"):
        supervised_info_nce(z, labels, labels.bool(), z, labels[:3], labels.bool(), 0.1, False)


# ---------------------------------------------------------------------------------------------- projector
def test_projector_gather_first_equals_conv_on_the_map_in_eval():
    torch.manual_seed(0)
    proj = ScaleProjector(6, 10)
    proj.bn.running_mean.uniform_(-1, 1)
    proj.bn.running_var.uniform_(0.5, 2)
    proj.eval()
    x = torch.randn(2, 6, 5, 7)
    full = proj.to_conv().eval()(x)
    idx = torch.tensor([0, 3, 17, 34, 69])
    n, p = idx // 35, idx % 35
    gathered = proj(x[n, :, p // 7, p % 7], torch.ones(5, dtype=torch.bool))
    torch.testing.assert_close(gathered, full[n, :, p // 7, p % 7])


def test_projector_bn_statistics_use_valid_vectors_only():
    torch.manual_seed(0)
    proj = ScaleProjector(4, 3)
    x = torch.randn(9, 4)
    valid = torch.tensor([1, 1, 0, 1, 1, 0, 0, 1, 1], dtype=torch.bool)
    x_bad = x.clone()
    x_bad[~valid] = 1e6  # garbage in invalid slots changes nothing
    out = proj(x_bad, valid)
    h = F.relu(proj.fc1(x[valid]))
    torch.testing.assert_close(out[valid], proj.fc2(F.batch_norm(h, None, None, proj.bn.weight, proj.bn.bias, True)))
    expected_mean = 0.1 * h.detach().mean(0)
    expected_var = 0.9 + 0.1 * h.detach().var(0, unbiased=True)
    torch.testing.assert_close(proj.bn.running_mean, expected_mean)
    torch.testing.assert_close(proj.bn.running_var, expected_var)
    before = proj.bn.running_mean.clone()
    proj(x, torch.zeros(9, dtype=torch.bool) | (torch.arange(9) == 0))  # one valid vector: no update
    assert torch.equal(proj.bn.running_mean, before) and int(proj.bn.num_batches_tracked) == 1


# ---------------------------------------------------------------------------------------------- loss
def test_gradient_reaches_every_stage():
    mask = blocky_mask(2, 128, 3, 32, 1)  # 32-px blocks: groups of ≥ 5 pixels exist even at stride 32
    feats = make_features(2, 128, 1)
    fn = MultiScaleContrastiveLoss(CHANNELS, 3, max_views_per_group=20, max_features=200)
    fn(feats, mask).backward()
    assert (fn.stats["anchors"] > 0).all() and (fn.stats["cross_anchors"] > 0).all()
    for f in feats:
        assert f.grad is not None and float(f.grad.abs().sum()) > 0
    for p in fn.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


def test_fewer_stages_use_the_first_weights_and_one_cross_term():
    mask = blocky_mask(2, 64, 3, 16, 2)
    feats = make_features(2, 64, 2)[:2]
    fn = MultiScaleContrastiveLoss(CHANNELS[:2], 3, max_views_per_group=8, max_features=64)
    assert fn.cross_pairs() == [(0, 1)]
    loss = fn(feats, mask)
    s, x = fn.stats["scale_loss"], fn.stats["cross_loss"]
    assert x.shape == (1,) and float(x[0]) > 0
    torch.testing.assert_close(loss, 1.0 * s[0] + 0.7 * s[1] + x[0])
    assert MultiScaleContrastiveLoss(CHANNELS, 3).cross_pairs() == [(0, 3), (0, 2)]
    assert MultiScaleContrastiveLoss(CHANNELS[:1], 3).cross_pairs() == []
    assert MultiScaleContrastiveLoss(CHANNELS, 3, cross_scale=False).cross_pairs() == []


def test_edge_cases_finite():
    fn = MultiScaleContrastiveLoss(CHANNELS, 4, max_views_per_group=16, max_features=128)
    # entirely ignore: exactly zero, finite zero gradients
    feats = make_features(2, 64, 0)
    out = fn(feats, torch.full((2, 64, 64), IGN))
    assert float(out.detach()) == 0.0
    out.backward()
    assert all(torch.isfinite(f.grad).all() and float(f.grad.abs().sum()) == 0 for f in feats)
    # one class only (B = 1): no negatives anywhere -> exactly 0
    feats = make_features(1, 64, 0)
    out = fn(feats, torch.zeros(1, 64, 64, dtype=torch.long))
    out.backward()
    assert float(out.detach()) == 0.0 and all(torch.isfinite(f.grad).all() for f in feats)
    # 1-px checkerboard, B = 1, 1×1 deepest stage
    m = (torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2
    feats = make_features(1, 32, 0)
    out = fn(feats, m[None])
    out.backward()
    assert feats[-1].shape[-1] == 1
    assert torch.isfinite(out) and all(torch.isfinite(f.grad).all() for f in feats)
    # B = 1 and a single view per group: no positives within a scale
    fn1 = MultiScaleContrastiveLoss(CHANNELS, 4, max_views_per_group=1, cross_scale=False)
    assert float(fn1(make_features(1, 64, 0), blocky_mask(1, 64, 4, 8, 0)).detach()) == 0.0


def test_autocast_keeps_float32():
    fn = MultiScaleContrastiveLoss(CHANNELS, 4, max_views_per_group=8, max_features=64)
    feats = make_features(2, 64, 0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fn(feats, blocky_mask(2, 64, 4, 8, 0))
    assert out.dtype == torch.float32 and torch.isfinite(out)
    out.backward()
    assert all(torch.isfinite(f.grad).all() for f in feats)


def test_bad_shapes_raise():
    fn = MultiScaleContrastiveLoss(CHANNELS, 4)
    mask = torch.zeros(2, 64, 64, dtype=torch.long)
    feats = make_features(2, 64, 0)
    with pytest.raises(ValueError, match="3 feature maps"):
        fn(feats[:3], mask)
    bad = list(feats)
    bad[2] = torch.randn(2, 99, 4, 4)
    with pytest.raises(ValueError, match="stage 2: expected 16 channels"):
        fn(bad, mask)
    bad[2] = torch.randn(2, 16, 5, 5)
    with pytest.raises(ValueError, match="stage 2"):
        fn(bad, mask)
    bad[2] = torch.randn(2, 16, 4, 2)
    with pytest.raises(ValueError, match="stage 2"):
        fn(bad, mask)
    bad[2] = torch.randn(2, 16, 4)
    with pytest.raises(ValueError, match="stage 2"):
        fn(bad, mask)
    with pytest.raises(ValueError, match="batch size"):
        fn(feats, mask[:1])
    with pytest.raises(ValueError, match="mask"):
        fn(feats, mask[0])
    with pytest.raises(ValueError, match="integer"):
        fn(feats, mask.float())
    with pytest.raises(ValueError, match="5 stages but only 4 scale weights"):
        MultiScaleContrastiveLoss([*CHANNELS, 8], 4)
    with pytest.raises(ValueError):
        MultiScaleContrastiveLoss(CHANNELS, 4, temperature=0.0)
    with pytest.raises(ValueError):
        MultiScaleContrastiveLoss([], 4)


def test_parameters_are_the_projectors():
    fn = MultiScaleContrastiveLoss(CHANNELS, 4, proj_dim=32)
    expected = sum(c * c + c + 2 * c + c * 32 + 32 for c in CHANNELS)
    assert sum(p.numel() for p in fn.parameters()) == expected


def test_no_data_dependent_ops():
    """On the meta device any host sync (.item, nonzero, boolean-mask indexing) raises: none may be used."""
    fn = MultiScaleContrastiveLoss(CHANNELS, 6).to("meta")
    mask = torch.zeros(2, 64, 64, dtype=torch.long, device="meta")
    feats = [
        torch.empty(2, c, 64 // s, 64 // s, device="meta", requires_grad=True)
        for c, s in zip(CHANNELS, STRIDES, strict=True)
    ]
    out = fn(feats, mask)
    assert out.shape == () and out.dtype == torch.float32
    out.backward()
    assert all(f.grad.shape == f.shape for f in feats)


@pytest.mark.gpu
def test_sync_free_on_cuda():
    fn = MultiScaleContrastiveLoss(CHANNELS, 4).cuda()
    mask = blocky_mask(2, 64, 4, 8, 0).cuda()
    feats = [f.detach().cuda().requires_grad_() for f in make_features(2, 64, 0)]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        fn(feats, mask).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")


STRIDE_SETS = [(1, 2, 4, 8), (4, 8, 16, 32), (2, 4), (4,), (2, 6)]


@settings(max_examples=30, deadline=None)
@given(
    b=st.integers(1, 3),
    k=st.integers(1, 6),
    strides=st.sampled_from(STRIDE_SETS),
    size_mult=st.integers(1, 2),
    block=st.sampled_from([1, 2, 4, 8, 16]),
    ignore=st.sampled_from([0.0, 0.2, 1.0]),
    cap=st.sampled_from([1, 5, 100]),
    max_features=st.sampled_from([8, 60, 300]),
    cross=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_property_finite_and_balanced(b, k, strides, size_mult, block, ignore, cap, max_features, cross, seed):
    size = 32 * size_mult if max(strides) != 6 else 24 * size_mult
    block = min(block, size)
    while size % block:
        block //= 2
    mask = blocky_mask(b, size, k, block, seed, ignore_frac=ignore)
    channels = CHANNELS[: len(strides)]
    feats = make_features(b, size, seed, channels, strides)
    torch.manual_seed(seed)
    fn = MultiScaleContrastiveLoss(channels, k, cross_scale=cross, max_views_per_group=cap, max_features=max_features)
    fn.keep_details = True
    out = fn(feats, mask)
    out.backward()
    assert out.shape == () and out.dtype == torch.float32 and torch.isfinite(out) and float(out.detach()) >= 0
    assert all(torch.isfinite(f.grad).all() for f in feats)
    assert all(torch.isfinite(p.grad).all() for p in fn.parameters() if p.grad is not None)
    if ignore == 1.0:
        assert float(out.detach()) == 0.0
    for detail in fn.details:
        valid = detail["valid"]
        got = torch.zeros(b, k, dtype=torch.long)
        got.index_put_((detail["image"][valid], detail["label"][valid]), torch.ones(int(valid.sum()), dtype=torch.long),
                       accumulate=True)  # fmt: skip
        n = int(detail["views"])
        assert torch.equal(got, torch.where(detail["group_valid"], n, 0))
        if n:
            smallest = int(detail["group_size"][detail["group_valid"]].min())
            assert n == min(smallest, cap, max_features // int(detail["groups"]))
