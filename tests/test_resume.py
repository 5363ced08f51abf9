"""Resume after SIGKILL: `ctseg fit ... --ckpt_path last` continues exactly like an uninterrupted run (CPU)."""

import csv
import os
import subprocess
import sys
from pathlib import Path

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
  class_path: ctseg.data.SyntheticDataModule
  init_args:
    train_samples: 40
    val_samples: 2
    image_size: 64
    batch_size: 4
"""
KILL = """  callbacks:
    - class_path: resume_kill.KillAtStep
      init_args: {step: 5}"""


def fit(tmp: Path, root: Path, kill: bool, *extra: str) -> subprocess.CompletedProcess:
    cfg = tmp / f"{root.name}-{'kill' if kill else 'run'}.yaml"
    cfg.write_text(CONFIG.format(root=root, callbacks=KILL if kill else ""))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "ctseg.cli", "fit", "--config", str(cfg), *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def train_losses(root: Path) -> dict[int, float]:
    losses = {}
    for path in sorted(root.rglob("metrics.csv")):
        with open(path) as fh:
            for row in csv.DictReader(fh):
                if row.get("train/loss"):
                    losses[int(row["step"])] = float(row["train/loss"])
    return losses


def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    full = fit(tmp_path, tmp_path / "full", kill=False)
    assert full.returncode == 0, full.stderr[-2000:]
    killed = fit(tmp_path, tmp_path / "killed", kill=True)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert (tmp_path / "killed" / "checkpoints" / "last.ckpt").exists()
    before = train_losses(tmp_path / "killed")
    assert max(before) == 4  # steps 0–4 ran; the kill came as step 5 started; the last checkpoint holds 4 steps
    resumed = fit(tmp_path, tmp_path / "killed", False, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    reference = train_losses(tmp_path / "full")
    after = {s: v for s, v in train_losses(tmp_path / "killed").items()}
    assert set(range(8)) <= set(reference)
    for step in range(4, 8):  # the resumed run re-does step 4 onwards from the step-4 checkpoint
        assert after[step] == reference[step], (step, after[step], reference[step])
