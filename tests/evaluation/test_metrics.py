"""The ISPRS metrics protocol: hand-worked confusion matrices, ignore / clutter handling, accumulation."""

import math

import pytest
import torch
from torchmetrics.classification import MulticlassConfusionMatrix

from ctseg.errors import CtsegError
from ctseg.evaluation.metrics import SegmentationMetrics, confusion_matrix_scores, format_table

# Worked by hand, K = 3 (rows = truth, columns = prediction):
#   target  0 0 1 | 1 2 2        pairs (t, p): (0,0) (0,1) (1,1) (1,1) (2,2) (2,0)
#   preds   0 1 1 | 1 2 0
#   M = [[1, 1, 0],      TP = [1, 2, 1]   column sums [2, 3, 1] -> FP = [1, 1, 0]
#        [0, 2, 0],                       row sums    [2, 2, 2] -> FN = [1, 0, 1]
#        [1, 0, 1]]
#   IoU = TP / (TP + FP + FN)   = [1/3, 2/3, 1/2]
#   F1  = 2TP / (2TP + FP + FN) = [2/4, 4/5, 2/3]
#   OA  = 4 / 6
TARGET = torch.tensor([[[0, 0, 1], [1, 2, 2]]])
PREDS = torch.tensor([[[0, 1, 1], [1, 2, 0]]])
CONFMAT = torch.tensor([[1, 1, 0], [0, 2, 0], [1, 0, 1]])
IOU = [1 / 3, 2 / 3, 1 / 2]
F1 = [2 / 4, 4 / 5, 2 / 3]


def _close(a, b, tol=1e-6):
    return torch.allclose(
        torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64), atol=tol, equal_nan=True
    )


def test_hand_computed_example_all_classes():
    m = SegmentationMetrics(3)
    m.update(PREDS, TARGET)
    r = m.compute()
    assert r["confmat"].dtype == torch.int64
    assert torch.equal(r["confmat"], CONFMAT)
    assert _close(r["iou"], IOU) and _close(r["f1"], F1)
    assert _close(r["miou"], sum(IOU) / 3)
    assert _close(r["mf1"], sum(F1) / 3)
    assert _close(r["oa"], 4 / 6)
    assert r["iou"].shape == (3,) and r["miou"].ndim == 0


def test_ignore_pixels_are_dropped():
    target = torch.tensor([[[0, 0, 1, 255], [1, 2, 2, 255]]])
    preds = torch.tensor([[[0, 1, 1, 2], [1, 2, 0, 0]]])
    m = SegmentationMetrics(3, ignore_index=255)
    m.update(preds, target)
    r = m.compute()
    assert torch.equal(r["confmat"], CONFMAT)
    assert _close(r["oa"], 4 / 6)


def test_clutter_stays_in_matrix_but_not_in_means():
    # Class 2 plays clutter: its pixels still count (FN / FP of the others, OA), only the means skip it.
    m = SegmentationMetrics(3, eval_classes=(0, 1))
    m.update(PREDS, TARGET)
    r = m.compute()
    assert torch.equal(r["confmat"], CONFMAT)
    assert _close(r["iou"], IOU)  # clutter's IoU is still reported
    assert _close(r["miou"], (1 / 3 + 2 / 3) / 2)
    assert _close(r["mf1"], (2 / 4 + 4 / 5) / 2)
    assert _close(r["oa"], 4 / 6)  # OA over all classes
    # Dropping clutter with ignore_index would change class 0's IoU (1/3 -> 1/2): not the protocol.
    dropped = MulticlassConfusionMatrix(3, ignore_index=2)(PREDS, TARGET)
    assert not torch.equal(dropped, CONFMAT)
    assert not _close(confusion_matrix_scores(dropped)["iou"][0], IOU[0])


def test_logits_input_equals_indices():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 6, 16, 16, generator=g)
    target = torch.randint(0, 6, (2, 16, 16), generator=g)
    target[0, :4] = 255
    a, b = SegmentationMetrics(6, eval_classes=range(5)), SegmentationMetrics(6, eval_classes=range(5))
    a.update(logits, target)
    b.update(logits.argmax(1), target)
    ra, rb = a.compute(), b.compute()
    for key in ("confmat", "iou", "f1", "miou", "mf1", "oa"):
        assert _close(ra[key], rb[key]), key


def test_accumulation_equals_one_update_and_torchmetrics():
    g = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(4):
        t = torch.randint(0, 6, (3, 20, 24), generator=g)
        t[torch.rand(t.shape, generator=g) < 0.1] = 255
        p = torch.where(
            torch.rand(t.shape, generator=g) < 0.7, t.clamp(max=5), torch.randint(0, 6, t.shape, generator=g)
        )
        batches.append((p, t))
    acc = SegmentationMetrics(6, eval_classes=(0, 1, 2, 3, 4))
    for p, t in batches:
        acc.update(p, t)
    once = SegmentationMetrics(6, eval_classes=(0, 1, 2, 3, 4))
    once.update(torch.cat([p for p, _ in batches]), torch.cat([t for _, t in batches]))
    ra, ro = acc.compute(), once.compute()
    for key in ("confmat", "iou", "f1", "miou", "mf1", "oa"):
        assert _close(ra[key], ro[key]), key
    ref = MulticlassConfusionMatrix(6, ignore_index=255)
    for p, t in batches:
        ref.update(p, t)
    assert torch.equal(ra["confmat"], ref.compute())
    acc.reset()
    assert int(acc.confmat.sum()) == 0


def test_absent_classes_are_nan_and_skipped():
    # K = 4: class 3 in neither truth nor prediction -> NaN, left out of the means.
    # Class 2 absent from the truth but predicted once -> IoU 0, F1 0 (it counts).
    target = torch.tensor([[0, 0, 1, 1]])
    preds = torch.tensor([[0, 0, 1, 2]])
    m = SegmentationMetrics(4)
    m.update(preds, target)
    r = m.compute()
    assert math.isnan(r["iou"][3]) and math.isnan(r["f1"][3])
    assert _close(r["iou"][:3], [1.0, 0.5, 0.0]) and _close(r["f1"][:3], [1.0, 2 / 3, 0.0])
    assert _close(r["miou"], 0.5) and _close(r["mf1"], (1 + 2 / 3) / 3)
    assert _close(r["oa"], 0.75)
    # Nothing counted at all: everything NaN, no exception.
    empty = SegmentationMetrics(4)
    empty.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), 255))
    re = empty.compute()
    assert math.isnan(re["miou"]) and math.isnan(re["oa"]) and int(re["confmat"].sum()) == 0


def test_bad_inputs():
    with pytest.raises(CtsegError):
        SegmentationMetrics(3, eval_classes=(0, 3))
    m = SegmentationMetrics(3)
    with pytest.raises(CtsegError):
        m.update(torch.zeros(1, 4, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(CtsegError):
        m.update(torch.zeros(1, 2, 3, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long))
    checked = SegmentationMetrics(3, validate_args=True)
    with pytest.raises(CtsegError):
        checked.update(torch.full((1, 2, 2), 3), torch.zeros(1, 2, 2, dtype=torch.long))


def test_format_table():
    m = SegmentationMetrics(3, eval_classes=(0, 1))
    m.update(PREDS, TARGET)
    table = format_table({"baseline": m.compute(), "empty": {}}, ["road", "house", "clutter"], eval_classes=(0, 1))
    lines = table.splitlines()
    assert lines[0] == "| run | IoU road | IoU house | IoU clutter* | mIoU | mean F1 | OA |"
    assert lines[2] == "| baseline | 0.333 | 0.667 | 0.500 | 0.500 | 0.650 | 0.667 |"
    assert lines[3].startswith("| empty | – |")
    assert lines[-1].startswith("\\*")
    pct = format_table({"a": m.compute()}, ["road", "house", "clutter"], percent=True)
    assert "| a | 33.3 | 66.7 | 50.0 | 50.0 | 65.0 | 66.7 |" in pct
