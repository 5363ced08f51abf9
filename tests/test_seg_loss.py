import torch
import torch.nn.functional as F

from ctseg.seg_loss import SegmentationLoss, cross_entropy_loss, dice_loss


def reference_dice(logits, target, ignore=255, smooth=0.05):
    k = logits.shape[1]
    p = logits.softmax(1)
    valid = target != ignore
    losses = []
    for c in range(k):
        t = ((target == c) & valid).float()
        pc = p[:, c] * valid
        dice = (2 * (pc * t).sum() + smooth) / (pc.sum() + t.sum() + smooth)
        losses.append((1 - dice) * (t.sum() > 0))
    return torch.stack(losses).mean()


def test_dice_matches_one_hot_reference():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 8, 8, generator=g, requires_grad=True)
    target = torch.randint(0, 3, (2, 8, 8), generator=g)  # class 3 absent
    target[0, :2] = 255
    torch.testing.assert_close(dice_loss(logits, target), reference_dice(logits, target))


def test_cross_entropy_over_labelled_pixels_only():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 4, 4, generator=g)
    target = torch.randint(0, 3, (2, 4, 4), generator=g)
    target[1] = 255
    expected = F.cross_entropy(logits[:1], target[:1], label_smoothing=0.05)
    torch.testing.assert_close(cross_entropy_loss(logits, target), expected)


def test_all_ignore_is_finite_and_perfect_prediction_is_small():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    loss = SegmentationLoss()(logits, torch.full((1, 4, 4), 255))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    target = torch.randint(0, 3, (1, 4, 4))
    perfect = F.one_hot(target, 3).permute(0, 3, 1, 2).float() * 4
    bad = -perfect
    assert SegmentationLoss()(perfect, target) < 0.3 < SegmentationLoss()(bad, target)
