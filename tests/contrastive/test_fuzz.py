"""Fuzzing both contrastive losses over masks, stage shapes and batch sizes (issue 9).

Default run: a few hundred examples. ``pytest -m slow tests/contrastive/test_fuzz.py``: ≥ 10,000 per test.
Valid inputs never raise and always give a finite loss and finite gradients; invalid shapes always raise
``ValueError``.
"""

import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctseg.contrastive import MultiScaleContrastiveLoss, PatchContrastiveLoss

IGN = 255
SLOW_EXAMPLES = int(os.environ.get("CTSEG_FUZZ_EXAMPLES", "10000"))


@st.composite
def problems(draw):
    """A random (features, mask) problem: 1–4 stages with strides from a chain of ×2, any mask regime."""
    b = draw(st.integers(1, 3))
    k = draw(st.integers(1, 7))
    n_stages = draw(st.integers(1, 4))
    first = draw(st.sampled_from([1, 2, 4]))
    strides = [first * 2**i for i in range(n_stages)]
    size = strides[-1] * draw(st.integers(1, 3))
    regime = draw(st.sampled_from(["random", "blocks", "one-class", "all-ignore", "tiny-class", "huge-class"]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    if regime == "random":
        mask = torch.randint(0, k, (b, size, size), generator=g)
    elif regime == "blocks":
        block = draw(st.sampled_from([s for s in (1, 2, 4, 8, 16) if size % s == 0]))
        coarse = torch.randint(0, k, (b, size // block, size // block), generator=g)
        mask = coarse.repeat_interleave(block, 1).repeat_interleave(block, 2)
    elif regime == "one-class":
        mask = torch.full((b, size, size), draw(st.integers(0, k - 1)))
    elif regime == "all-ignore":
        mask = torch.full((b, size, size), IGN)
    else:
        major = draw(st.integers(0, k - 1))
        mask = torch.full((b, size, size), major)
        n_minor = 1 if regime == "tiny-class" else (size * size) // 2
        flat = mask.view(b, -1)
        flat[:, torch.randperm(size * size, generator=g)[:n_minor]] = (major + 1) % k
    if draw(st.booleans()):
        mask[torch.rand(mask.shape, generator=g) < draw(st.sampled_from([0.01, 0.3]))] = IGN
    channels = [draw(st.integers(1, 6)) for _ in strides]
    feats = [
        torch.randn(b, c, size // s, size // s, generator=g).requires_grad_()
        for c, s in zip(channels, strides, strict=True)
    ]
    return feats, mask, channels, k


def build(kind, channels, k, data):
    if kind == "ct":
        return PatchContrastiveLoss(
            channels,
            k,
            loss=data.draw(st.sampled_from(["cl", "infonce"])),
            samples_per_class=data.draw(st.sampled_from([1, 2, 7, 64])),
            hard_fraction=data.draw(st.sampled_from([0.1, 0.5, 1.0])),
            cl_form=data.draw(st.sampled_from(["logits", "probability"])),
            clip_mode=data.draw(st.sampled_from(["value", "scale", None])),
            edge_patches=data.draw(st.booleans()),
        )
    return MultiScaleContrastiveLoss(
        channels,
        k,
        cross_scale=data.draw(st.booleans()),
        max_views_per_group=data.draw(st.sampled_from([1, 5, 50])),
        max_features=data.draw(st.sampled_from([8, 100, 1000])),
        proj_dim=8,
    )


def check_valid(kind, problem, data):
    feats, mask, channels, k = problem
    fn = build(kind, channels, k, data)
    out = fn(feats, mask)
    out.backward()
    assert out.shape == () and torch.isfinite(out) and float(out.detach()) >= 0
    for f in feats:
        assert f.grad is None or torch.isfinite(f.grad).all()
    for p in fn.parameters():
        assert p.grad is None or torch.isfinite(p.grad).all()
    if (mask == IGN).all():
        assert float(out.detach()) == 0.0


def check_invalid(kind, problem, data):
    feats, mask, channels, k = problem
    fn = build(kind, channels, k, data)
    breakage = data.draw(st.sampled_from(["channels", "stages", "batch", "size", "mask-dims"]))
    feats = list(feats)
    if breakage == "channels":
        i = data.draw(st.integers(0, len(feats) - 1))
        f = feats[i]
        feats[i] = torch.randn(f.shape[0], f.shape[1] + 1, *f.shape[2:])
    elif breakage == "stages":
        feats = feats + [feats[-1]]
    elif breakage == "batch":
        mask = torch.cat([mask, mask])
    elif breakage == "size":
        i = data.draw(st.integers(0, len(feats) - 1))
        f = feats[i]
        feats[i] = torch.randn(f.shape[0], f.shape[1], mask.shape[-2] + 1, f.shape[3])
    else:
        mask = mask[0]
    with pytest.raises(ValueError):
        fn(feats, mask)


FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=SLOW_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("kind", ["ct", "ms"])
@FAST
@given(problem=problems(), data=st.data())
def test_fuzz_valid_inputs(kind, problem, data):
    check_valid(kind, problem, data)


@pytest.mark.parametrize("kind", ["ct", "ms"])
@settings(max_examples=60, deadline=None)
@given(problem=problems(), data=st.data())
def test_fuzz_invalid_shapes_raise_value_error(kind, problem, data):
    check_invalid(kind, problem, data)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ct", "ms"])
@SLOW
@given(problem=problems(), data=st.data())
def test_fuzz_valid_inputs_long(kind, problem, data):
    check_valid(kind, problem, data)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ct", "ms"])
@SLOW
@given(problem=problems(), data=st.data())
def test_fuzz_invalid_shapes_long(kind, problem, data):
    check_invalid(kind, problem, data)
