"""The published definitions: Cheng et al.'s Boundary IoU (zero padding, d from the image diagonal) against a
loop-by-loop copy of the API's semantics, and boundary F1 with a Euclidean disk against a DAVIS-style F measure."""

import importlib
import math
import warnings

import numpy as np
import pytest
import torch

from ctseg.errors import CtsegError
from ctseg.evaluation import boundary_iou_reference
from ctseg.evaluation.boundary import BoundaryMetrics, boundary_scores
from ctseg.evaluation.boundary_reference import dilation_pixels


# ------------------------------------------------------------------------------------------- the references
def api_boundary(mask, d):
    """The API's semantics by loops: a ring of zeros around the mask, d erosions with a 3 × 3 square (outside the
    padded array neutral), boundary = mask − eroded."""
    m = np.pad((np.asarray(mask) != 0).astype(np.uint8), 1)
    h, w = m.shape
    for _ in range(d):
        e = m.copy()
        for i in range(h):
            for j in range(w):
                e[i, j] = min(m[y, x] for y in range(max(0, i - 1), min(h, i + 2))
                              for x in range(max(0, j - 1), min(w, j + 2)))  # fmt: skip
        m = e
    return (np.asarray(mask) != 0) & (m[1:-1, 1:-1] == 0)


def api_boundary_iou(gt, dt, ratio):
    h, w = gt.shape
    d = max(1, int(round(ratio * math.sqrt(h * h + w * w))))
    g, p = api_boundary(gt, d), api_boundary(dt, d)
    return (g & p).sum() / (g | p).sum()


def davis_f(fg, gt, r):
    """DAVIS-style boundary F: one-sided contours (a pixel differing from its east / south / south-east
    neighbour), matched within a Euclidean disk of radius r."""

    def bmap(seg):
        seg = seg.astype(bool)
        e, s, se = np.zeros_like(seg), np.zeros_like(seg), np.zeros_like(seg)
        e[:, :-1], s[:-1, :], se[:-1, :-1] = seg[:, 1:], seg[1:, :], seg[1:, 1:]
        b = seg ^ e | seg ^ s | seg ^ se
        b[-1, :], b[:, -1] = seg[-1, :] ^ e[-1, :], seg[:, -1] ^ s[:, -1]
        b[-1, -1] = False
        return b

    def near(b):
        out, (h, w) = np.zeros_like(b), b.shape
        for y, x in zip(*np.nonzero(b), strict=True):
            for dy in range(-r, r + 1):
                for dx in range(-r, r + 1):
                    if dy * dy + dx * dx <= r * r and 0 <= y + dy < h and 0 <= x + dx < w:
                        out[y + dy, x + dx] = True
        return out

    fb, gb = bmap(fg), bmap(gt)
    p, rec = (fb & near(gb)).sum() / fb.sum(), (gb & near(fb)).sum() / gb.sum()
    return 2 * p * rec / (p + rec)


def _background_square(n, left, size=8):
    m = np.ones((n, n), dtype=np.int64)
    top = (n - size) // 2
    m[top : top + size, left : left + size] = 0
    return m


def _blobs(n, circles):
    yy, xx = np.mgrid[:n, :n]
    m = np.zeros((n, n), dtype=bool)
    for cy, cx, r in circles:
        m |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    return m.astype(np.int64)


# ------------------------------------------------------------------------------------------- Boundary IoU
def test_d_is_the_rounded_share_of_the_diagonal():
    assert dilation_pixels((512, 512), 0.02) == 14  # 14.48
    assert dilation_pixels((3, 4), 0.5) == 2 and dilation_pixels((3, 4), 0.7) == 4  # 2.5 → 2 (Python's round)
    assert dilation_pixels((10, 10), 0.001) == 1  # at least 1
    with pytest.raises(CtsegError):
        dilation_pixels((10, 10), -1)


@pytest.mark.parametrize(("shape", "ratio"), [((14, 11), 0.02), ((14, 11), 0.1), ((9, 16), 0.15), ((12, 12), 0.3)])
def test_equals_the_api_on_random_masks(shape, ratio):
    g = np.random.default_rng(sum(shape))
    gt = g.random((shape[0] // 2 + 1, shape[1] // 2 + 1)).repeat(2, 0).repeat(2, 1)[: shape[0], : shape[1]] < 0.5
    dt = np.where(g.random(shape) < 0.15, ~gt, gt)
    assert boundary_iou_reference(gt, dt, ratio) == pytest.approx(api_boundary_iou(gt, dt, ratio))
    assert boundary_iou_reference(gt.astype(np.uint8), dt.astype(np.uint8) * 255, ratio) == pytest.approx(
        api_boundary_iou(gt, dt, ratio)
    )


def test_a_square_of_background_the_border_counts():
    # class 1 fills a 24² image but for an 8² square of background, shifted 2 columns in the prediction; d = 3.
    # ctseg: class 1's band is only around the square (0.5); the reference also has the 3-pixel frame along the
    # image border, which both maps share (0.794)
    t, p = _background_square(24, 8), _background_square(24, 10)
    ratio = 3 / math.hypot(24, 24)  # d = round(3.0) = 3
    reference = boundary_iou_reference(t == 1, p == 1, ratio)
    assert reference == pytest.approx(api_boundary_iou(t == 1, p == 1, ratio)) == pytest.approx(85 / 107)
    ours = boundary_scores(torch.as_tensor(p)[None], torch.as_tensor(t)[None], 2, 3)["biou"]
    theirs = boundary_scores(torch.as_tensor(p)[None], torch.as_tensor(t)[None], 2, 3, definition="reference")["biou"]
    assert ours[1].item() == pytest.approx(0.5)
    assert theirs[1].item() == pytest.approx(reference)
    # class 0 (the square, away from the border) is the same in both definitions
    assert theirs[0].item() == pytest.approx(ours[0].item())
    assert theirs[0].item() == pytest.approx(boundary_iou_reference(t == 0, p == 0, ratio))


def test_the_reference_definition_sums_the_api_per_class_over_images():
    g = np.random.default_rng(7)
    t = g.integers(0, 3, (2, 6, 7)).repeat(2, 1).repeat(2, 2)
    p = np.where(g.random(t.shape) < 0.2, g.integers(0, 3, t.shape), t)
    metric = BoundaryMetrics(3, tolerance=2, definition="reference")
    metric.update(torch.as_tensor(p), torch.as_tensor(t))
    for c in range(3):
        bt = [api_boundary(t[i] == c, 2) for i in range(2)]
        bp = [api_boundary(p[i] == c, 2) for i in range(2)]
        inter = sum((a & b).sum() for a, b in zip(bt, bp, strict=True))
        union = sum((a | b).sum() for a, b in zip(bt, bp, strict=True))
        assert metric.compute()["biou"][c].item() == pytest.approx(inter / union)


def test_empty_masks_and_bad_input():
    assert math.isnan(boundary_iou_reference(np.zeros((5, 5)), np.zeros((5, 5))))
    with pytest.raises(CtsegError):
        boundary_iou_reference(np.zeros((5, 5)), np.zeros((5, 6)))
    with pytest.raises(CtsegError):
        BoundaryMetrics(2, definition="cheng")
    with pytest.raises(CtsegError):
        boundary_scores(torch.zeros(1, 4, 4, dtype=torch.long), torch.zeros(1, 4, 4, dtype=torch.long), 2,
                        tolerance_shape="circle")  # fmt: skip


def test_the_contract_path_imports_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        from ctseg.metrics import boundary_iou_reference as contract
    assert contract is boundary_iou_reference
    with pytest.warns(DeprecationWarning):
        importlib.import_module("ctseg.metrics").SegmentationMetrics  # noqa: B018


# ------------------------------------------------------------------------------------------- boundary F1, disk
def test_blobs_with_a_disk_agree_with_the_davis_measure():
    # five discs, each moved and resized in the prediction; d = 3: the square tolerance is more lenient along the
    # diagonals (0.811) than DAVIS's disk (0.693); ctseg's disk is within 0.02 of it
    g = np.random.default_rng(226)
    circles = [(g.integers(10, 54), g.integers(10, 54), g.integers(4, 10)) for _ in range(5)]
    t = _blobs(64, circles)
    p = _blobs(64, [(cy + g.integers(-5, 6), cx + g.integers(-5, 6), max(2, r + g.integers(-3, 4)))
                    for cy, cx, r in circles])  # fmt: skip
    pt, tt = torch.as_tensor(p)[None], torch.as_tensor(t)[None]
    square = boundary_scores(pt, tt, 2, 3)["bf1"][1].item()
    disk = boundary_scores(pt, tt, 2, 3, tolerance_shape="disk")["bf1"][1].item()
    davis = davis_f(p, t, 3)
    assert square == pytest.approx(0.811, abs=1e-3) and davis == pytest.approx(0.693, abs=1e-3)
    assert abs(disk - davis) < 0.02
    # at d = 1 the disk and the square differ only at the corners; the boundary IoU never depends on the shape
    assert (
        boundary_scores(pt, tt, 2, 3, tolerance_shape="disk")["biou"].tolist()
        == boundary_scores(pt, tt, 2, 3)["biou"].tolist()
    )


@pytest.mark.parametrize("k", [3, 70])
def test_the_disk_window_matches_a_loop(k):
    # the bit-set path (3 classes) and the one-hot fallback (70): a contour pixel is matched when a contour pixel of
    # its class lies within dy² + dx² ≤ d²
    g = np.random.default_rng(k)
    t = g.integers(0, min(k, 4), (1, 8, 9)).repeat(2, 1).repeat(2, 2)
    p = np.where(g.random(t.shape) < 0.2, g.integers(0, min(k, 4), t.shape), t)
    metric = BoundaryMetrics(k, tolerance=[2, 3], tolerance_shape="disk")
    metric.update(torch.as_tensor(p), torch.as_tensor(t))
    square = BoundaryMetrics(k, tolerance=[2, 3])
    square.update(torch.as_tensor(p), torch.as_tensor(t))
    for i, d in enumerate((2, 3)):
        for c in range(min(k, 4)):

            def contour_of(m, c=c):
                pad = np.pad(m, 1, constant_values=-1)
                win = np.stack([pad[1 + dy : 1 + dy + m.shape[0], 1 + dx : 1 + dx + m.shape[1]]
                                for dy in (-1, 0, 1) for dx in (-1, 0, 1)])  # fmt: skip
                return (m == c) & ((win != c) & (win != -1)).any(0)

            cp, ct = contour_of(p[0]), contour_of(t[0])
            pts = list(zip(*np.nonzero(ct), strict=True))
            hits = sum(
                any((y - a) ** 2 + (x - b) ** 2 <= d * d for a, b in pts) for y, x in zip(*np.nonzero(cp), strict=True)
            )
            assert int(metric.counts[2, i, c]) == hits
            assert int(metric.counts[3, i, c]) == int(cp.sum())
            assert int(square.counts[2, i, c]) >= hits
