"""PatchContrastiveLoss against a slow, loop-based reference on the same sampled indices."""

import math

import pytest
import torch
import torch.nn.functional as F
from helpers.loss_inputs import CHANNELS, IGN, STRIDES, assert_same_gradients, blocky_mask, make_features  # noqa: E402
from hypothesis import given, settings
from hypothesis import strategies as st

from ctseg.contrastive import PatchContrastiveLoss


def reference_loss(fn: PatchContrastiveLoss, features, mask):
    """``reduction="mean"``: loops over stages, classes, samples and pairs; uses the sampled indices recorded
    by ``fn``. (The authors' reduction has its own reference in test_ct_paper.py.)"""
    assert fn.reduction == "mean"
    k = fn.num_classes
    stage_losses = []
    for detail, s in zip(fn.details, fn.stages, strict=True):
        feat = features[s]
        b, _, hs, ws = feat.shape
        stride = mask.shape[-1] // ws
        index, valid = detail["index"], detail["valid"]

        def patch_is(n, i, j, c, kind):
            patch = mask[n, i * stride : (i + 1) * stride, j * stride : (j + 1) * stride].flatten().tolist()
            labelled = [v for v in patch if v != IGN]
            if kind == "pos":
                return all(v == c for v in patch)
            return len(labelled) > 0 and c not in labelled

        class_losses = []
        for c in range(k):
            n_pos = sum(patch_is(n, i, j, c, "pos") for n in range(b) for i in range(hs) for j in range(ws))
            n_neg = sum(patch_is(n, i, j, c, "neg") for n in range(b) for i in range(hs) for j in range(ws))
            pos_ids = [int(index[c, t]) for t in range(index.shape[1]) if valid[c, t]]
            neg_ids = [int(index[k + c, t]) for t in range(index.shape[1]) if valid[k + c, t]]
            assert len(pos_ids) == min(n_pos, fn.samples_per_class, b * hs * ws)
            assert len(neg_ids) == min(n_neg, fn.samples_per_class, b * hs * ws)
            for kind, ids in (("pos", pos_ids), ("neg", neg_ids)):
                for p in ids:
                    assert patch_is(p // (hs * ws), (p % (hs * ws)) // ws, p % ws, c, kind)
            if n_pos < fn.min_samples or n_neg < fn.min_samples:
                continue

            def embed(p):
                v = feat[p // (hs * ws), :, (p % (hs * ws)) // ws, p % ws]
                return F.normalize(fn.heads[str(s)](v[None]).float(), dim=-1)[0]

            zp = [embed(p) for p in pos_ids]
            zn = [embed(p) for p in neg_ids]
            neg_pairs = [(zp[i], zn[i], torch.dot(zp[i], zn[i])) for i in range(min(len(zp), len(zn)))]
            neg_pairs.sort(key=lambda t: -float(t[2].detach()))
            neg_pairs = neg_pairs[: math.ceil(fn.hard_fraction * len(neg_pairs))]
            h = len(zp) // 2
            pos_pairs = [(zp[i], zp[i + h], torch.dot(zp[i], zp[i + h])) for i in range(h)]
            pos_pairs.sort(key=lambda t: float(t[2].detach()))
            pos_pairs = pos_pairs[: math.ceil(fn.hard_fraction * len(pos_pairs))]
            if fn.loss == "cl":
                terms = []
                for pairs, target in ((pos_pairs, 1.0), (neg_pairs, 0.0)):
                    for _, _, cos in pairs:
                        sim = (cos + 1) / 2
                        t = target * (1 - fn.smoothing) + fn.smoothing / 2
                        if fn.cl_form == "logits":
                            logp = torch.log_softmax(torch.stack([1 - sim, sim]), 0)
                            terms.append(-((1 - t) * logp[0] + t * logp[1]))
                        else:
                            terms.append(-(t * torch.log(sim) + (1 - t) * torch.log(1 - sim)))
                if terms:
                    class_losses.append(torch.stack(terms).mean())
            else:
                if not pos_pairs or not neg_pairs:
                    continue
                negs = [n for _, n, _ in neg_pairs]
                terms = []
                for q, key, _ in pos_pairs:
                    logits = torch.stack([torch.dot(q, key)] + [torch.dot(q, n) for n in negs]) / fn.temperature
                    terms.append(-torch.log_softmax(logits, 0)[0])
                class_losses.append(torch.stack(terms).mean())
        if class_losses:
            stage_losses.append(torch.stack(class_losses).mean())
    loss = torch.stack(stage_losses).mean() if stage_losses else torch.zeros(())
    if fn.clip_mode == "value":
        loss = loss.clamp(0, fn.clip_value)
    elif fn.clip_mode == "scale":
        loss = loss * min(1.0, fn.clip_value / float(loss.detach()))
    return loss


def run_both(seed=0, b=2, size=64, k=4, block=8, **kwargs):
    mask = blocky_mask(b, size, k, block, seed, ignore_frac=0.02)
    feats = make_features(b, size, seed)
    torch.manual_seed(seed)
    fn = PatchContrastiveLoss(CHANNELS, k, **{"reduction": "mean", **kwargs})
    fn.keep_details = True
    loss = fn(feats, mask)
    ref = reference_loss(fn, feats, mask)
    return fn, feats, mask, loss, ref


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(loss="cl"),
        dict(loss="cl", cl_form="probability", clip_mode=None),
        dict(loss="cl", hard_fraction=1.0, samples_per_class=7),
        dict(loss="infonce", clip_mode=None),
        dict(loss="infonce", hard_fraction=0.25, clip_mode="scale", clip_value=0.5),
        dict(loss="cl", stages=[0, 2], samples_per_class=16),
    ],
)
def test_matches_loop_reference(kwargs):
    fn, feats, mask, loss, ref = run_both(**kwargs)
    assert torch.isfinite(loss)
    assert float(fn.stats["classes"].sum()) > 0, "the example must exercise the loss"
    torch.testing.assert_close(loss, ref, rtol=1e-4, atol=1e-5)
    assert_same_gradients(loss, ref, feats)


def test_gradient_reaches_every_stage():
    mask = blocky_mask(2, 128, 3, 32, 1)  # blocks of 32 px: pure patches exist even at stride 32
    feats = make_features(2, 128, 1)
    fn = PatchContrastiveLoss(CHANNELS, 3, clip_mode=None, min_samples=2)
    fn(feats, mask).backward()
    assert (fn.stats["classes"] > 0).all()
    for f in feats:
        assert f.grad is not None and float(f.grad.abs().sum()) > 0
    for p in fn.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


@pytest.mark.parametrize("loss", ["cl", "infonce"])
def test_edge_cases_finite(loss):
    fn = PatchContrastiveLoss(CHANNELS, 4, loss=loss)
    # entirely ignore: exactly zero, finite zero gradients
    feats = make_features(2, 64, 0)
    out = fn(feats, torch.full((2, 64, 64), IGN))
    assert float(out) == 0.0
    out.backward()
    assert all(torch.isfinite(f.grad).all() for f in feats)
    # one class only: no negatives anywhere -> 0
    feats = make_features(1, 64, 0)
    out = fn(feats, torch.zeros(1, 64, 64, dtype=torch.long))
    out.backward()
    assert float(out) == 0.0 and all(torch.isfinite(f.grad).all() for f in feats)
    # a class with no pure patch (checkerboard of 1 px) plus B = 1 and 1×1 features at the last stage
    m = (torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2
    feats = make_features(1, 32, 0)
    out = fn(feats, m[None])
    out.backward()
    assert torch.isfinite(out) and all(torch.isfinite(f.grad).all() for f in feats)
    assert feats[-1].shape[-1] == 1


def test_clip_modes():
    base = dict(loss="infonce", temperature=0.05)
    _, _, _, raw, _ = run_both(clip_mode=None, **base)
    assert float(raw) > 1.0, "the example must exceed the clip"
    _, feats, _, clipped, _ = run_both(clip_mode="value", **base)
    assert float(clipped) == 1.0
    clipped.backward()
    assert all(f.grad is None or float(f.grad.abs().sum()) == 0 for f in feats)  # no gradient above the clip
    _, feats, _, scaled, _ = run_both(clip_mode="scale", **base)
    torch.testing.assert_close(scaled, torch.tensor(1.0))
    scaled.backward()
    assert float(feats[0].grad.abs().sum()) > 0  # gradient kept


def test_bad_shapes_raise_with_stage():
    fn = PatchContrastiveLoss(CHANNELS, 4)
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
    with pytest.raises(ValueError, match="batch size"):
        fn(feats, mask[:1])
    with pytest.raises(ValueError):
        PatchContrastiveLoss(CHANNELS, 4, loss="triplet")
    with pytest.raises(ValueError, match="reduction must be 'paper' or 'mean', got 'sum'"):
        PatchContrastiveLoss(CHANNELS, 4, reduction="sum")


def test_heads_are_the_only_parameters():
    fn = PatchContrastiveLoss(CHANNELS, 4, proj_dim=32)
    expected = sum(c * 32 + 32 + 32 * 32 + 32 for c in CHANNELS)
    assert sum(p.numel() for p in fn.parameters()) == expected


@pytest.mark.parametrize("reduction", ["paper", "mean"])
@pytest.mark.parametrize("loss", ["cl", "infonce"])
def test_no_data_dependent_ops(loss, reduction):
    """On the meta device any host sync (.item, nonzero, boolean-mask indexing) raises: none may be used."""
    fn = PatchContrastiveLoss(CHANNELS, 6, loss=loss, reduction=reduction, edge_patches=True).to("meta")
    mask = torch.zeros(2, 64, 64, dtype=torch.long, device="meta")
    feats = [
        torch.empty(2, c, 64 // s, 64 // s, device="meta", requires_grad=True)
        for c, s in zip(CHANNELS, STRIDES, strict=True)
    ]
    fn(feats, mask).backward()
    assert feats[0].grad.shape == feats[0].shape


@pytest.mark.gpu
def test_sync_free_on_cuda():
    fn = PatchContrastiveLoss(CHANNELS, 4).cuda()
    mask = blocky_mask(2, 64, 4, 8, 0).cuda()
    feats = [f.detach().cuda().requires_grad_() for f in make_features(2, 64, 0)]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        fn(feats, mask).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")


@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(1, 3),
    k=st.integers(1, 6),
    size=st.sampled_from([32, 64, 96]),
    block=st.sampled_from([1, 4, 8, 16, 32]),
    ignore=st.sampled_from([0.0, 0.1, 1.0]),
    loss=st.sampled_from(["cl", "infonce"]),
    hard=st.sampled_from([0.25, 0.5, 1.0]),
    spc=st.sampled_from([1, 3, 64]),
    seed=st.integers(0, 2**16),
    reduction=st.sampled_from(["paper", "mean"]),
)
def test_property_finite_loss_and_gradients(b, k, size, block, ignore, loss, hard, spc, seed, reduction):
    block = min(block, size)
    mask = blocky_mask(b, size, k, block, seed, ignore_frac=ignore)
    feats = make_features(b, size, seed)
    fn = PatchContrastiveLoss(
        CHANNELS, k, loss=loss, reduction=reduction, hard_fraction=hard, samples_per_class=spc, clip_mode=None
    )
    out = fn(feats, mask)
    out.backward()
    assert out.shape == () and torch.isfinite(out) and float(out) >= 0
    assert all(torch.isfinite(f.grad).all() for f in feats)
    if ignore == 1.0:
        assert float(out) == 0.0


@pytest.mark.parametrize("loss", ["cl", "infonce"])
def test_channels_last_features_give_the_same_loss_and_gradients(loss):
    """Both feature layouts and both row paths (stage 0 gathers the sampled rows first, stage 3 has fewer patches
    than samples and projects the whole map) give the same loss and gradients."""
    mask = blocky_mask(2, 64, 4, 32, seed=5)  # pure patches at every stride
    hard = 0.5 if loss == "cl" else 1.0  # InfoNCE: ≥ 1 query on the 8-patch stage 3
    fn = PatchContrastiveLoss(
        CHANNELS, 4, loss=loss, samples_per_class=20, min_samples=1, hard_fraction=hard, clip_mode=None
    )
    results = []
    for layout in (torch.contiguous_format, torch.channels_last):
        feats = [f.detach().contiguous(memory_format=layout).requires_grad_() for f in make_features(2, 64, 5)]
        torch.manual_seed(0)
        value = fn(feats, mask)
        value.backward()
        results.append((value.detach(), [f.grad for f in feats]))
    (v1, g1), (v2, g2) = results
    assert float(fn.stats["classes"].sum()) > 0
    torch.testing.assert_close(v1, v2)
    for a, b in zip(g1, g2, strict=True):
        assert a.abs().sum() > 0
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("loss", ["cl", "infonce"])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_distinct_patches_projected_once_give_the_fixed_shape_result(monkeypatch, loss, layout):
    """On the CPU the heads project each distinct sampled patch once (stage 0 here samples patches as negatives of
    several classes, stage 3 holds fewer patches than samples); the accelerators' fixed-shape rows give the same
    loss and gradients, heads' included."""
    import ctseg.contrastive.ct as ct_module

    mask = blocky_mask(2, 64, 4, 32, seed=5)
    hard = 0.5 if loss == "cl" else 1.0
    fn = PatchContrastiveLoss(
        CHANNELS, 4, loss=loss, samples_per_class=20, min_samples=1, hard_fraction=hard, clip_mode=None
    )
    fn.keep_details = True
    results = []
    for distinct in (True, False):
        monkeypatch.setattr(ct_module, "projects_distinct", lambda device, _d=distinct: _d)
        feats = [f.detach().contiguous(memory_format=layout).requires_grad_() for f in make_features(2, 64, 5)]
        fn.zero_grad()
        torch.manual_seed(0)
        value = fn(feats, mask)
        value.backward()
        results.append((value.detach(), [f.grad for f in feats], [q.grad.clone() for q in fn.parameters()]))
        index, valid = fn.details[0]["index"], fn.details[0]["valid"]
    assert index[valid].unique().numel() < int(valid.sum())  # stage 0 did sample some patch twice
    assert float(fn.stats["classes"].sum()) > 0
    (v1, g1, p1), (v2, g2, p2) = results
    torch.testing.assert_close(v1, v2)
    for a, b in zip(g1 + p1, g2 + p2, strict=True):
        assert a.abs().sum() > 0
        torch.testing.assert_close(a, b)
