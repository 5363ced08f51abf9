"""Resume after SIGKILL: `ctseg fit ... --ckpt_path last` continues exactly like an uninterrupted run (CPU)."""

import subprocess
from pathlib import Path

import pytest
from helpers.paths import TESTS
from helpers.run_logs import run_fit, train_losses

CONFIG = """
seed_everything: 0
trainer:
  max_steps: 8
  limit_val_batches: 1
  val_check_interval: 100
  check_val_every_n_epoch: null
  log_every_n_steps: 1
  enable_progress_bar: false
  default_root_dir: {root}
  logger:
    class_path: lightning.pytorch.loggers.CSVLogger
    init_args: {{save_dir: {root}}}
{callbacks}
step_checkpoint:
  every_n_train_steps: 2
model:
  model: pf-tiny
  img_size: 64
  scheme: ct-cl
  lr: 0.002
data:
{data}
"""
SYNTHETIC = """  class_path: ctseg.data.SyntheticDataModule
  init_args:
    train_samples: 40
    val_samples: 2
    image_size: 64
    batch_size: 4"""
PREPARED = """  class_path: ctseg.data.PotsdamDataModule
  init_args:
    root: {root}
    image_size: 64
    batch_size: 4
    num_workers: 0
    persistent_workers: false"""
KILL = """  callbacks:
    - class_path: helpers.resume_kill.KillAtStep
      init_args: {step: 5}"""


def fit(tmp: Path, root: Path, data: str, kill: bool, *extra: str) -> subprocess.CompletedProcess:
    cfg = tmp / f"{root.name}-{'kill' if kill else 'run'}.yaml"
    cfg.write_text(CONFIG.format(root=root, callbacks=KILL if kill else "", data=data))
    return run_fit(cfg, *extra, env={"PYTHONPATH": str(TESTS)})


@pytest.fixture(params=["synthetic", "prepared-potsdam"])
def data_config(request, tmp_path) -> str:
    if request.param == "synthetic":
        return SYNTHETIC
    from helpers.make_isprs import make_potsdam

    from ctseg.data import prepare_dataset

    make_potsdam(tmp_path / "download", tiles=("2_10", "2_13"))
    dst = prepare_dataset(
        "potsdam", tmp_path / "download", tmp_path / "potsdam", crop=64, stride=64, resize=0, workers=1, progress=False
    )
    return PREPARED.format(root=dst)


def test_sigkill_then_resume_matches_uninterrupted(tmp_path, data_config):
    full = fit(tmp_path, tmp_path / "full", data_config, False)
    assert full.returncode == 0, full.stderr[-2000:]
    killed = fit(tmp_path, tmp_path / "killed", data_config, True)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert (tmp_path / "killed" / "checkpoints" / "last.ckpt").exists()
    before = train_losses(tmp_path / "killed")
    assert max(before) == 4  # steps 0–4 ran; the kill came as step 5 started; the last checkpoint holds 4 steps
    resumed = fit(tmp_path, tmp_path / "killed", data_config, False, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "cannot skip batches" not in resumed.stderr
    reference = train_losses(tmp_path / "full")
    after = train_losses(tmp_path / "killed")
    assert set(range(8)) <= set(reference)
    for step in range(4, 8):  # the resumed run re-does step 4 onwards from the step-4 checkpoint
        assert after[step] == reference[step], (step, after[step], reference[step])


def test_last_resumes_from_the_newest_checkpoint_written(tmp_path):
    """Killed after ``step-step=4.ckpt`` was written but before ``last.ckpt`` was refreshed (it still holds step 2):
    ``--ckpt_path last`` continues from step 4, the newest checkpoint, not from step 2."""
    import os
    import shutil

    raced = tmp_path / "raced"
    first = fit(tmp_path, raced, SYNTHETIC, False, "--trainer.max_steps", "4", "--step_checkpoint.save_top_k", "-1")
    assert first.returncode == 0, first.stderr[-2000:]
    step2, step4 = raced / "checkpoints" / "step-step=2.ckpt", raced / "checkpoints" / "step-step=4.ckpt"
    last = raced / "checkpoints" / "last.ckpt"
    shutil.copy(step2, last)  # the state a kill between writing step-step=4.ckpt and refreshing last.ckpt leaves
    os.utime(last, ns=(step4.stat().st_mtime_ns - 10**9,) * 2)
    for log in raced.rglob("metrics.csv"):
        log.unlink()
    resumed = fit(tmp_path, raced, SYNTHETIC, False, "--trainer.max_steps", "6", "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    after = train_losses(raced)
    assert sorted(after) == [4, 5]  # from step 4: the two steps after step 2 were not re-done
