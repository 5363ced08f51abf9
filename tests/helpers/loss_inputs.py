"""Inputs shared by the contrastive-loss tests: blocky label masks and random stage features."""

import torch

IGN = 255
CHANNELS = [8, 12, 16, 20]
STRIDES = [4, 8, 16, 32]


def blocky_mask(b, size, k, block, seed, ignore_frac=0.0):
    """(b, size, size) labels in ``block``-pixel squares of random classes, a fraction set to ignore."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, k, (b, size // block, size // block), generator=g)
    m = coarse.repeat_interleave(block, 1).repeat_interleave(block, 2)
    if ignore_frac:
        m[torch.rand(m.shape, generator=g) < ignore_frac] = IGN
    return m


def make_features(b, size, seed, channels=CHANNELS, strides=STRIDES):
    """One random (b, C_s, size / r_s, size / r_s) leaf tensor per stage."""
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(b, c, size // s, size // s, generator=g).requires_grad_()
        for c, s in zip(channels, strides, strict=True)
    ]


def assert_same_gradients(loss, ref, feats):
    """The gradients of ``loss`` and of the reference ``ref`` with respect to every stage feature agree."""
    g1 = torch.autograd.grad(loss, feats, allow_unused=True)
    g2 = torch.autograd.grad(ref, feats, allow_unused=True)
    for a, r in zip(g1, g2, strict=True):
        if r is None:
            assert a is None or float(a.abs().sum()) == 0
        else:
            torch.testing.assert_close(a, r, rtol=1e-3, atol=1e-6)
