"""Boundary IoU / boundary F1 against a slow, loop-by-loop reference on hand-made masks with known answers."""

import math

import numpy as np
import pytest
import torch

from ctseg.errors import CtsegError
from ctseg.evaluation.metrics import BoundaryMetrics, boundary_scores

IGNORE = 255


# ------------------------------------------------------------------------------------------- the reference
def ref_distance_to_other(m: np.ndarray, c: int) -> np.ndarray:
    """For each pixel of class c: the Chebyshev distance to the nearest pixel of m (inside the image) that is not
    c; inf where none exists or the pixel is not c. Plain loops over every pair of pixels."""
    h, w = m.shape
    out = np.full((h, w), np.inf)
    others = [(y, x) for y in range(h) for x in range(w) if m[y, x] != c]
    for i in range(h):
        for j in range(w):
            if m[i, j] == c:
                for y, x in others:
                    out[i, j] = min(out[i, j], max(abs(i - y), abs(j - x)))
    return out


def ref_band(m, c, d):
    return ref_distance_to_other(m, c) <= d


def ref_within(a: np.ndarray, b: np.ndarray, d: int) -> np.ndarray:
    """Pixels of a within Chebyshev distance d of some pixel of b."""
    pts = list(zip(*np.nonzero(b), strict=True))
    out = np.zeros_like(a)
    for i, j in zip(*np.nonzero(a), strict=True):
        out[i, j] = any(max(abs(i - y), abs(j - x)) <= d for y, x in pts)
    return out


def ref_scores(pred, target, k, d, ignore=IGNORE, truth_ignore_in_pred=False):
    """Per-class (biou, bf1), sums over every image of the batch before the ratios; truth-ignore pixels never
    counted; with ``truth_ignore_in_pred`` they are ignore in the prediction's map too."""
    pred, target = np.asarray(pred), np.asarray(target)
    if truth_ignore_in_pred:
        pred = np.where(target == ignore, ignore, pred)
    sums = np.zeros((k, 6))
    for p, t in zip(pred, target, strict=True):
        valid = t != ignore
        for c in range(k):
            bt, bp = ref_band(t, c, d), ref_band(p, c, d)
            ct, cp = ref_band(t, c, 1), ref_band(p, c, 1)
            sums[c] += [
                (bt & bp & valid).sum(),
                ((bt | bp) & valid).sum(),
                (ref_within(cp, ct, d) & valid).sum(),
                (cp & valid).sum(),
                (ref_within(ct, cp, d) & valid).sum(),
                (ct & valid).sum(),
            ]
    biou, bf1 = [], []
    for inter, union, ph, pa, rh, ra in sums:
        biou.append(inter / union if union else math.nan)
        if pa == 0 and ra == 0:
            bf1.append(math.nan)
            continue
        prec, rec = (ph / pa if pa else 0.0), (rh / ra if ra else 0.0)
        bf1.append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
    return biou, bf1


def _scores(pred, target, k, d, ignore=IGNORE, truth_ignore_in_pred=False):
    pred, target = torch.as_tensor(np.asarray(pred)), torch.as_tensor(np.asarray(target))
    out = boundary_scores(pred, target, k, tolerance=d, ignore_index=ignore, truth_ignore_in_pred=truth_ignore_in_pred)
    return out["biou"].tolist(), out["bf1"].tolist()


def _close(a, b):
    return np.allclose(np.asarray(a, float), np.asarray(b, float), atol=1e-6, equal_nan=True)


def _square(h, w, top, left, size, c=1, bg=0):
    m = np.full((h, w), bg, dtype=np.int64)
    m[top : top + size, left : left + size] = c
    return m


# ------------------------------------------------------------------------------------------- known answers
def test_square_shifted_by_one_pixel():
    # 5×5 square at rows/cols 2–6, the prediction one column to the right. At d = 1 each band is the square's
    # 16-pixel ring; the rings share rows 2 and 6 at columns 3–6 (8 pixels): bIoU = 8 / (16 + 16 − 8) = 1/3.
    # Every predicted contour pixel lies within 1 of the true contour and vice versa: bF1 = 1.
    t = _square(10, 10, 2, 2, 5)[None]
    p = _square(10, 10, 2, 3, 5)[None]
    biou, bf1 = _scores(p, t, 2, 1)
    assert biou[1] == pytest.approx(1 / 3) and bf1[1] == pytest.approx(1.0)
    assert _close((biou, bf1), ref_scores(p, t, 2, 1))
    # Shifted by two columns, d = 1: the rings share rows 2 and 6 at columns 4–6 (6 pixels): bIoU = 6 / 26.
    # Of the true ring, column 2 (5 pixels) and (4, 6) are 2 away from the predicted ring: R = 10 / 16, and by
    # symmetry P = 10 / 16, so bF1 = 0.625.
    p2 = _square(10, 10, 2, 4, 5)[None]
    biou2, bf12 = _scores(p2, t, 2, 1)
    assert biou2[1] == pytest.approx(6 / 26) and bf12[1] == pytest.approx(0.625)
    assert _close((biou2, bf12), ref_scores(p2, t, 2, 1))
    # A wider tolerance forgives the two-pixel shift for F1.
    assert _scores(p2, t, 2, 2)[1][1] == pytest.approx(1.0)
    for d in (1, 2, 3):
        assert _close(_scores(p, t, 2, d), ref_scores(p, t, 2, d))


def test_thin_road():
    # A one-pixel road across the whole width: its band is the road itself at any d (no pixel of it is farther
    # than 1 from the land above and below; the left and right image borders are no boundary).
    t = np.zeros((1, 9, 12), dtype=np.int64)
    t[0, 4] = 1
    biou, bf1 = _scores(t, t, 2, 3)
    assert biou == [1.0, 1.0] and bf1 == [1.0, 1.0]
    p = np.roll(t, 1, axis=1)  # one row lower: no band pixel in common, every contour pixel within 1
    biou, bf1 = _scores(p, t, 2, 1)
    assert biou[1] == 0.0 and bf1[1] == pytest.approx(1.0)
    assert _close((biou, bf1), ref_scores(p, t, 2, 1))
    p3 = np.roll(t, 3, axis=1)  # three rows lower: outside d = 2 (contour F1 = 0), inside d = 3
    assert _scores(p3, t, 2, 2)[1][1] == 0.0 and _scores(p3, t, 2, 3)[1][1] == pytest.approx(1.0)
    assert _close(_scores(p3, t, 2, 2), ref_scores(p3, t, 2, 2))


def test_the_image_border_is_no_boundary():
    # Left half class 1, right half class 0: class 1's d-band is d columns left of the split, never the image's
    # top, bottom or left edge.
    t = np.zeros((1, 8, 8), dtype=np.int64)
    t[0, :, :4] = 1
    metric = BoundaryMetrics(2, tolerance=[1, 2])
    metric.update(torch.as_tensor(t), torch.as_tensor(t))
    inter, union = metric.counts[0], metric.counts[1]
    assert inter.tolist() == [[8, 8], [16, 16]] and union.tolist() == inter.tolist()
    # A class filling the whole image has no boundary at all: NaN (nothing to score), not 1 or 0.
    full = np.ones((1, 6, 6), dtype=np.int64)
    biou, bf1 = _scores(full, full, 2, 3)
    assert all(math.isnan(v) for v in biou + bf1)


def test_empty_and_one_sided_classes():
    t = _square(8, 8, 1, 1, 4)[None]
    p = t.copy()
    p[0, 6, 6] = 2  # class 2 predicted, absent from the truth; class 3 absent from both
    biou, bf1 = _scores(p, t, 4, 1)
    assert math.isnan(biou[3]) and math.isnan(bf1[3])
    assert biou[2] == 0.0 and bf1[2] == 0.0
    assert biou[1] == 1.0 and bf1[1] == 1.0
    assert _close((biou, bf1), ref_scores(p, t, 4, 1))
    # a class only in the truth: recall 0, no predicted contour → bF1 0
    biou, bf1 = _scores(np.zeros_like(t), t, 2, 1)
    assert biou[1] == 0.0 and bf1[1] == 0.0


def test_ignore_is_never_counted_and_bounds_the_truth():
    # Truth: all class 1 but one ignore pixel, which counts as "not 1" in the truth: its 8 neighbours form the
    # truth's band of class 1. The prediction's band is its own: empty when it predicts 1 there, the same 8 when
    # it predicts 0 (or nodata). The ignore pixel itself is never counted, whatever is predicted there.
    t = np.ones((1, 7, 7), dtype=np.int64)
    t[0, 3, 3] = IGNORE
    for under, expected in ((1, [0, 8]), (0, [8, 8]), (IGNORE, [8, 8])):
        p = np.ones_like(t)
        p[0, 3, 3] = under
        metric = BoundaryMetrics(2, tolerance=1)
        metric.update(torch.as_tensor(p), torch.as_tensor(t))
        assert metric.counts[:2, 0, 1].tolist() == expected, under
        assert _close(_scores(p, t, 2, 1), ref_scores(p, t, 2, 1))
        # ctseg's option: the ignore pixel bounds the prediction's band too, whatever is predicted there
        option = BoundaryMetrics(2, tolerance=1, truth_ignore_in_pred=True)
        option.update(torch.as_tensor(p), torch.as_tensor(t))
        assert option.counts[:2, 0, 1].tolist() == [8, 8]
        assert _close(_scores(p, t, 2, 1, truth_ignore_in_pred=True), ref_scores(p, t, 2, 1, truth_ignore_in_pred=True))


def test_with_the_option_a_prediction_right_on_every_labelled_pixel_scores_one():
    t2 = _square(10, 10, 2, 2, 5)
    t2[3:5, 5:8] = IGNORE  # touches the square
    p2 = t2.copy()
    p2[t2 == IGNORE] = 1  # a "wrong" prediction under ignore
    a, b = _scores(p2[None], t2[None], 2, 2, truth_ignore_in_pred=True)
    assert a == [1.0, 1.0] and b == [1.0, 1.0]
    a, _ = _scores(p2[None], t2[None], 2, 2)  # the contract's definition: the prediction's bands are its own
    assert a[1] < 1.0 and _close(_scores(p2[None], t2[None], 2, 2), ref_scores(p2[None], t2[None], 2, 2))


def test_with_the_option_predictions_under_ignore_change_nothing():
    g = np.random.default_rng(7)
    t = g.integers(0, 3, (2, 8, 9)).repeat(2, 1).repeat(2, 2)
    t[g.random(t.shape) < 0.1] = IGNORE
    p = np.where(g.random(t.shape) < 0.2, g.integers(0, 3, t.shape), t)
    q = np.where(t == IGNORE, g.integers(0, 3, t.shape), p)  # only the predictions under ignore differ
    assert (p != q).any()  # the two predictions do differ under ignore
    counts = []
    for pred in (p, q):
        metric = BoundaryMetrics(3, tolerance=[1, 3], truth_ignore_in_pred=True)
        metric.update(torch.as_tensor(pred), torch.as_tensor(t))
        counts.append(metric.counts)
    assert torch.equal(counts[0], counts[1])
    assert int(counts[0].sum()) > 0  # something was counted
    # without the option the prediction's bands are its own, so the same difference does change the counts
    plain = []
    for pred in (p, q):
        metric = BoundaryMetrics(3, tolerance=[1, 3])
        metric.update(torch.as_tensor(pred), torch.as_tensor(t))
        plain.append(metric.counts)
    assert not torch.equal(plain[0], plain[1])


@pytest.mark.parametrize("d", [1, 2, 3, 4])
def test_random_batches_match_the_reference(d):
    g = np.random.default_rng(d)
    k = 4
    # blocky random maps (2×2 cells) so that bands are neither empty nor everything; some ignore truth pixels and
    # some predicted nodata (255)
    t = g.integers(0, k, (3, 6, 7)).repeat(2, 1).repeat(2, 2)
    p = t.copy()
    flip = g.random(p.shape) < 0.15
    p[flip] = g.integers(0, k, flip.sum())
    t[g.random(t.shape) < 0.05] = IGNORE
    p[g.random(p.shape) < 0.02] = IGNORE
    assert _close(_scores(p, t, k, d), ref_scores(p, t, k, d))


@pytest.mark.parametrize("k", [12, 40, 70, 300])
def test_many_classes_match_the_reference(k):
    # the bit-set widths (uint8 up to 7 classes, int16, int32, int64 up to 62), the one-hot fallback beyond, and
    # the int32 encoding from 255 classes on
    g = np.random.default_rng(k)
    t = g.integers(0, k, (2, 5, 6)).repeat(2, 1).repeat(2, 2)
    t[:, :4, :4] = k - 1  # some larger regions, so that bands are not everything
    p = np.where(g.random(t.shape) < 0.2, g.integers(0, k, t.shape), t)
    t[:, 5, 5] = 255  # a class from 256 classes on
    ignore = IGNORE if k < IGNORE else -1
    t[0, 0, 5] = ignore
    assert _close(_scores(p, t, k, 2, ignore), ref_scores(p, t, k, 2, ignore=ignore))


def test_accumulation_sums_before_the_ratio():
    # Image A: bIoU 1/3 over 24 union pixels (the shifted square); image B: perfect, 16 union pixels. The
    # evaluation's bIoU is (8 + 16) / (24 + 16) = 0.6, not the mean of the two ratios (2/3).
    ta, pa = _square(10, 10, 2, 2, 5), _square(10, 10, 2, 3, 5)
    tb = _square(10, 10, 4, 4, 5)
    metric = BoundaryMetrics(2, tolerance=1, eval_classes=[1])
    metric.update(torch.as_tensor(pa[None]), torch.as_tensor(ta[None]))
    metric.update(torch.as_tensor(tb[None]), torch.as_tensor(tb[None]))
    res = metric.compute()
    assert res["biou"][1].item() == pytest.approx(0.6)
    assert res["mbiou"].item() == pytest.approx(0.6)  # eval_classes: only class 1 averaged
    both = boundary_scores(torch.as_tensor(np.stack([pa, tb])), torch.as_tensor(np.stack([ta, tb])), 2, 1)
    assert both["biou"][1].item() == pytest.approx(0.6)
    metric.reset()
    assert int(metric.counts.sum()) == 0


def test_several_tolerances_and_logits():
    t = _square(12, 12, 3, 3, 6)[None]
    p = _square(12, 12, 3, 5, 6)[None]
    out = boundary_scores(torch.as_tensor(p), torch.as_tensor(t), 2, tolerance=[3, 1])
    assert set(out) == {"biou", "bf1", "biou@3", "bf1@3", "biou@1", "bf1@1"}
    assert torch.equal(out["biou"], out["biou@3"]) and out["biou"].shape == (2,)
    assert _close(out["bf1@1"].tolist(), ref_scores(p, t, 2, 1)[1])
    metric = BoundaryMetrics(2, tolerance=[3, 1])
    logits = torch.nn.functional.one_hot(torch.as_tensor(p), 2).permute(0, 3, 1, 2).float()
    metric.update(logits, torch.as_tensor(t))
    res = metric.compute()
    assert res["tolerances"] == (3, 1)
    assert torch.allclose(res["biou@1"], out["biou@1"], equal_nan=True)
    assert torch.allclose(res["bf1"], out["bf1"], equal_nan=True)


@pytest.mark.parametrize("bad", [0, -1, 1.5, "x", [], True])
def test_bad_tolerance(bad):
    t = torch.zeros(1, 4, 4, dtype=torch.long)
    with pytest.raises(CtsegError, match="tolerance"):
        boundary_scores(t, t, 2, tolerance=bad)


def test_bad_shapes_and_values():
    t = torch.zeros(1, 4, 4, dtype=torch.long)
    with pytest.raises(CtsegError, match="differ in size"):
        boundary_scores(torch.zeros(1, 4, 5, dtype=torch.long), t, 2)
    with pytest.raises(CtsegError, match="predicted value 7"):
        boundary_scores(torch.full((1, 4, 4), 7), t, 2)
    assert math.isnan(boundary_scores(torch.full((1, 4, 4), IGNORE), t, 2)["biou"][1])  # nodata is allowed


@pytest.mark.gpu
def test_on_the_gpu_equals_the_cpu():
    g = torch.Generator().manual_seed(0)
    t = torch.randint(0, 6, (4, 32, 32), generator=g).repeat_interleave(4, 1).repeat_interleave(4, 2)
    p = torch.where(torch.rand(t.shape, generator=g) < 0.1, torch.randint(0, 6, t.shape, generator=g), t)
    cpu = BoundaryMetrics(6, tolerance=[3, 1])
    gpu = BoundaryMetrics(6, tolerance=[3, 1]).cuda()
    cpu.update(p, t)
    gpu.update(p.cuda(), t.cuda())
    assert torch.equal(cpu.counts, gpu.counts.cpu())
