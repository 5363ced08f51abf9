"""SegmentationTask: losses, non-finite stop, export without projection heads."""

import lightning as L
import pytest
import torch

from ctseg.checkpoints.files import export_model, load_model, read_checkpoint
from ctseg.errors import CtsegError
from ctseg.training.task import SegmentationTask


def batch(b=2, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, 6, (b, size // 16, size // 16), generator=g)
    return {
        "image": torch.randn(b, 3, size, size, generator=g),
        "mask": coarse.repeat_interleave(16, 1).repeat_interleave(16, 2),
    }


@pytest.mark.parametrize("scheme", ["none", "ct-cl", "ct-infonce", "ms", "mscs"])
def test_losses_and_weights(scheme):
    task = SegmentationTask(model="pf-tiny", img_size=64, scheme=scheme)
    out = task.compute_losses(batch())
    assert torch.isfinite(out["loss"])
    if scheme == "none":
        assert task.contrastive is None and "contrastive" not in out
    else:
        expected = 0.1 if scheme.startswith("ms") else 1.0
        assert task.contrastive_weight == expected
        torch.testing.assert_close(out["loss"], out["seg"] + expected * out["contrastive"])
        out["loss"].backward()
        heads = [p for p in task.contrastive.parameters() if p.requires_grad]
        assert heads and all(p.grad is not None for p in heads)


def test_unknown_scheme_is_one_line_error():
    with pytest.raises(CtsegError, match="unknown scheme 'magic'.*ct-cl"):
        SegmentationTask(model="pf-tiny", scheme="magic")


def test_non_finite_loss_names_step_and_term():
    task = SegmentationTask(model="pf-tiny", img_size=64, scheme="ct-cl")
    bad = batch()
    bad["image"][0, 0, 0, 0] = float("nan")
    with pytest.raises(CtsegError, match=r"non-finite segmentation loss .* at step 0"):
        task.training_step(bad, 0)


def test_export_has_no_heads_and_same_logits(tmp_path):
    task = SegmentationTask(model="pf-tiny", img_size=64, scheme="ct-cl", dataset="synthetic")
    trainer = L.Trainer(logger=False, enable_checkpointing=False, max_steps=0, enable_progress_bar=False)
    trainer.strategy.connect(task)
    ckpt = tmp_path / "train.ckpt"
    trainer.save_checkpoint(ckpt)
    raw = torch.load(ckpt, weights_only=True)
    assert any(k.startswith("contrastive.") for k in raw["state_dict"])
    out = export_model(ckpt, tmp_path / "model.safetensors")
    exported = read_checkpoint(out)
    assert not any("contrastive" in k or "heads" in k for k in exported["state_dict"])
    n_model = sum(p.numel() for p in task.net.parameters())
    assert sum(v.numel() for k, v in exported["state_dict"].items() if "num_batches" not in k) >= n_model
    x = batch()["image"]
    task.eval()
    with torch.no_grad():
        ref = task(x)
        a = load_model(ckpt).model(x)
        b = load_model(out).model(x)
    assert torch.equal(a, ref) and torch.equal(b, ref)
    assert load_model(out).dataset == "synthetic"


def test_load_model_refuses_foreign_files(tmp_path):
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CtsegError, match="junk.ckpt"):
        load_model(junk)
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CtsegError, match="not a ctseg checkpoint"):
        load_model(tmp_path / "other.pt")
    with pytest.raises(CtsegError, match="does not exist"):
        load_model(tmp_path / "missing.ckpt")


def test_scheme_stats_are_logged_on_lightning_logging_steps(tmp_path):
    """With log_every_n_steps 2 Lightning writes steps 1 and 3; the CT stats must be among what it writes."""
    import csv

    from helpers.tiny import TINY_CONFIG

    from ctseg.cli.entry import main

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY_CONFIG)
    argv = ["fit", "--config", str(cfg), "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.max_steps",
            "4", "--trainer.val_check_interval", "4", "--trainer.log_every_n_steps", "2"]  # fmt: skip
    assert main(argv) == 0
    with open(next((tmp_path / "run").rglob("metrics.csv")), newline="") as fh:
        rows = list(csv.DictReader(fh))
    logged = {int(r["step"]) for r in rows if r.get("train/pos_pairs_s0")}
    assert logged == {1, 3}
    assert {int(r["step"]) for r in rows if r.get("train/contrastive_unclipped")} == {1, 3}
    classes = [float(r["train/classes_s0"]) for r in rows if r.get("train/classes_s0")]
    assert classes and all(c >= 0 for c in classes)


def _fit_tiny(tmp_path, options: str, steps: int = 4):
    from helpers.tiny import TINY_CONFIG

    from ctseg.cli.entry import main

    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY_CONFIG)
    root = tmp_path / "run"
    argv = ["fit", "--config", str(cfg), "--trainer.default_root_dir", str(root), "--trainer.max_steps", str(steps),
            "--trainer.val_check_interval", str(steps), "--model.scheme_options", options]  # fmt: skip
    assert main(argv) == 0
    return root


def test_clipped_steps_are_logged_and_warned_about(tmp_path, capsys):
    """A clip below every loss: each step is clipped, the epoch fraction is 1 and one warning line per epoch
    (2 steps per epoch here) names the ways out; a clip above every loss logs 0 and warns about nothing."""
    import csv

    root = _fit_tiny(tmp_path / "a", "{clip_value: 0.001}")
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("ctseg: warning:")]
    assert len(warnings) == 2 and "clipped on 100% of steps (2/2)" in warnings[0]
    assert "{clip_mode: scale}" in warnings[0] and "{reduction: mean}" in warnings[0]
    with open(next(root.rglob("metrics.csv")), newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("train/contrastive_clipped")]
    assert [float(r["train/contrastive_clipped"]) for r in rows] == [1.0, 1.0]

    root = _fit_tiny(tmp_path / "b", "{clip_value: 100.0, reduction: mean}")
    assert "ctseg: warning:" not in capsys.readouterr().err
    with open(next(root.rglob("metrics.csv")), newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("train/contrastive_clipped")]
    assert rows and all(float(r["train/contrastive_clipped"]) == 0.0 for r in rows)


def test_clip_fraction_survives_a_resume(tmp_path):
    """The run's clipped-step count is kept in checkpoints: stop at 2 steps, extend to 4, fraction over all 4."""
    from ctseg.cli.entry import main

    root = _fit_tiny(tmp_path, "{clip_value: 0.001}", steps=2)
    ckpt = torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["ctseg_clip"][:2] == [2.0, 2]
    from helpers.tiny import TINY_CONFIG

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY_CONFIG)
    argv = ["fit", "--config", str(cfg), "--trainer.default_root_dir", str(root), "--trainer.max_steps", "4",
            "--trainer.val_check_interval", "2", "--model.scheme_options", "{clip_value: 0.001}",
            "--ckpt_path", "last"]  # fmt: skip
    assert main(argv) == 0
    ckpt = torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["ctseg_clip"][:2] == [4.0, 4]


def test_nan_validation_score_warns_and_picks_no_best(tmp_path, capsys):
    """A validation split without a labelled pixel: one warning line per validation, no "best" checkpoint."""
    from ctseg.data.synthetic import SyntheticDataModule
    from ctseg.training.callbacks import ScoreCheckpoint

    class UnlabelledVal(SyntheticDataModule):
        def val_dataloader(self):
            for batch in super().val_dataloader():
                yield {**batch, "mask": torch.full_like(batch["mask"], 255)}

    dm = UnlabelledVal(train_samples=4, val_samples=2, image_size=64, batch_size=2)
    task = SegmentationTask(model="pf-tiny", img_size=64, dataset="synthetic", eval_classes=[0, 1, 2, 3, 4])
    best = ScoreCheckpoint(dirpath=tmp_path, monitor="val/miou", mode="max", save_last=True, filename="best")
    trainer = L.Trainer(max_steps=4, val_check_interval=2, check_val_every_n_epoch=None, logger=False,
                        callbacks=[best], enable_progress_bar=False, num_sanity_val_steps=0)  # fmt: skip
    trainer.fit(task, datamodule=dm)
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("ctseg: warning: validation")]
    assert len(lines) == 2 and "val/miou is NaN; no best checkpoint is chosen" in lines[0]
    assert best.best_model_path == "" and sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
