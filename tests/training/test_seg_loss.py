import pytest
import torch
import torch.nn.functional as F

from ctseg.configs import CONFIG_DIR
from ctseg.errors import CtsegError
from ctseg.training.seg_loss import (
    SegmentationLoss,
    check_class_weights,
    cross_entropy_loss,
    dice_loss,
    inverse_frequency_weights,
)


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


# ------------------------------------------------------------------------------------------- class weights
def reference_weighted_ce(logits, target, weight, eps=0.05, ignore=255):
    """The module docstring's formula, pixel by pixel."""
    k = logits.shape[1]
    logp = logits.log_softmax(1).permute(0, 2, 3, 1).reshape(-1, k)
    num, den = 0.0, 0.0
    for lp, y in zip(logp, target.reshape(-1).tolist(), strict=True):
        if y == ignore:
            continue
        num += (1 - eps) * weight[y] * -lp[y] + eps / k * sum(weight[c] * -lp[c] for c in range(k))
        den += weight[y]
    return num / den


def test_class_weights_change_the_cross_entropy_as_the_formula_says():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 3, 4, 5, generator=g)
    target = torch.randint(0, 3, (2, 4, 5), generator=g)
    target[0, 0] = 255
    weight = [0.5, 2.0, 1.0]
    got = cross_entropy_loss(logits, target, weight=torch.tensor(weight))
    torch.testing.assert_close(got, reference_weighted_ce(logits, target, weight).float())
    ones = cross_entropy_loss(logits, target, weight=torch.ones(3))
    torch.testing.assert_close(ones, cross_entropy_loss(logits, target))
    # the full loss adds the (unweighted) Dice term
    loss = SegmentationLoss(class_weights=weight)(logits, target)
    torch.testing.assert_close(loss, got + dice_loss(logits, target))
    # up-weighting the class the model gets most wrong raises the loss
    per_class = [cross_entropy_loss(logits, torch.where(target == c, target, 255)) for c in range(3)]
    worst = int(torch.stack(per_class).argmax())
    up = [1.0, 1.0, 1.0]
    up[worst] = 5.0
    assert SegmentationLoss(class_weights=up)(logits, target) > SegmentationLoss()(logits, target)


def test_inverse_frequency_formula_and_checks():
    # f = [0.1, 0.3, 0, 0.6] → 1/f = [10, 3.33, –, 1.67], mean over present 5 → [2, 0.667, 1 (absent), 0.333]
    w = inverse_frequency_weights([100, 300, 0, 600])
    assert w == pytest.approx([2.0, 2 / 3, 1.0, 1 / 3])
    assert inverse_frequency_weights([7, 7]) == pytest.approx([1.0, 1.0])
    with pytest.raises(CtsegError, match="no labelled pixel"):
        inverse_frequency_weights([0, 0])
    assert check_class_weights([1, 2], 2) == [1.0, 2.0]
    for bad, needle in (([1.0], "1 values for 2"), ([1.0, -1.0], ">= 0"), ([0, 0], "not all 0"), (["a", 1], "numbers")):
        with pytest.raises(CtsegError, match=needle):
            check_class_weights(bad, 2)


def test_task_class_weights_list_and_inverse_frequency_from_a_prepared_folder(tmp_path, capsys):
    """``--model.class_weights [..]`` is used as given; ``inverse_frequency`` is computed at setup from the
    prepared folder's manifest (``pixels.train``), here a generated folder data set."""
    import json

    from helpers.make_folder import make_jpeg_folder

    from ctseg.data.prepare import prepare_dataset
    from ctseg.training.lightning_cli import build_cli

    make_jpeg_folder(tmp_path / "src", count=3, h=64, w=64)
    data = tmp_path / "data"
    prepare_dataset("folder", tmp_path / "src", data, classes=tmp_path / "src" / "classes.yaml", crop=64,
                    val_fraction=0.34, workers=1, progress=False)  # fmt: skip
    base = ["--model.model", "pf-tiny", "--model.img_size", "64", "--data.class_path", "ctseg.data.FolderDataModule",
            "--data.root", str(data), "--data.image_size", "64", "--data.batch_size", "1", "--data.num_workers", "0",
            "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false",
            "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path / "runs")]  # fmt: skip
    cli = build_cli([*base, "--model.class_weights", "[1, 2.5, 0.5]"], run=False)
    assert cli.model.seg_loss.class_weights.tolist() == [1.0, 2.5, 0.5]
    assert build_cli(base, run=False).model.seg_loss.class_weights is None  # off by default
    cli = build_cli([*base, "--model.class_weights", "inverse_frequency"], run=False)
    assert cli.model.seg_loss.class_weights is None  # not known before setup
    capsys.readouterr()
    cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)
    pixels = json.loads((data / "manifest.json").read_text())["pixels"]["train"]
    counts = [pixels[n] for n in ("building", "road", "water")]
    expected = inverse_frequency_weights(counts)
    assert cli.model.seg_loss.class_weights.tolist() == pytest.approx(expected)
    assert "class weights (inverse frequency, training split): building" in capsys.readouterr().err
    with pytest.raises(CtsegError, match="inverse_frequency"):
        from ctseg.training.task import SegmentationTask

        SegmentationTask(num_classes=3, class_weights="inverse_freq")


def test_class_weights_are_off_in_every_config():

    import yaml

    configs = sorted((CONFIG_DIR).rglob("*.yaml"))
    assert configs
    for path in configs:
        model = (yaml.safe_load(path.read_text()) or {}).get("model") or {}
        assert model.get("class_weights") is None, path
