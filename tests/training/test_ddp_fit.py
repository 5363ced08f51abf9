"""`ctseg fit` under Lightning DDP on CPU (2 processes, gloo), CT samples gathered across ranks, and exact resume.

An uninterrupted 8-step run and a run stopped by ``max_steps`` after 4 steps (mid-epoch: 5 batches per epoch
and rank), then extended with ``--trainer.max_steps 8 --ckpt_path last``, must log the same training losses step
for step: the checkpoint has to carry every rank's RNG state, each rank's sampler has to skip the batches it
already consumed, and the epoch Lightning's end-of-fit checkpoint counts as finished has to be reopened.
Also run single-process (the same resume logic without DDP).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from helpers.run_logs import run_fit, train_losses

CONFIG = """
seed_everything: 0
trainer:
  accelerator: cpu
  devices: 2
  strategy: ddp
  max_steps: {steps}
  limit_val_batches: 1
  val_check_interval: 100
  check_val_every_n_epoch: null
  log_every_n_steps: 1
  enable_progress_bar: false
  enable_model_summary: false
  default_root_dir: {root}
  logger:
    class_path: lightning.pytorch.loggers.CSVLogger
    init_args: {{save_dir: {root}}}
step_checkpoint:
  every_n_train_steps: 2
model:
  model: pf-tiny
  img_size: 64
  scheme: ct-cl
  lr: 0.002
  scheme_options: {{gather_across_ranks: true, samples_per_class: 64}}
data:
  class_path: ctseg.data.SyntheticDataModule
  init_args:
    train_samples: 40
    val_samples: 4
    image_size: 64
    batch_size: 4
"""


def fit(tmp: Path, root: Path, steps: int, *extra: str, devices: int = 2) -> subprocess.CompletedProcess:
    cfg = tmp / f"{root.name}-{steps}.yaml"
    text = CONFIG.format(root=root, steps=steps)
    if devices == 1:
        text = text.replace("  devices: 2\n  strategy: ddp\n", "  devices: 1\n")
    cfg.write_text(text)
    return run_fit(cfg, *extra, env={"OMP_NUM_THREADS": "1"}, timeout=400)


@pytest.mark.parametrize("devices", [2, 1], ids=["ddp-2-processes", "single-process"])
def test_fit_stop_and_extend_is_exact(tmp_path, devices):
    if devices > len(os.sched_getaffinity(0)):
        pytest.skip("needs a CPU core per DDP process")
    full = fit(tmp_path, tmp_path / "full", 8, devices=devices)
    assert full.returncode == 0, full.stderr[-3000:]
    if devices == 2:
        assert "GLOBAL_RANK: 1, MEMBER: 2/2" in full.stderr + full.stdout
    reference = train_losses(tmp_path / "full")
    assert set(range(8)) <= set(reference)

    first = fit(tmp_path, tmp_path / "split", 4, devices=devices)
    assert first.returncode == 0, first.stderr[-3000:]
    assert (tmp_path / "split" / "checkpoints" / "last.ckpt").exists()
    resumed = fit(tmp_path, tmp_path / "split", 8, "--ckpt_path", "last", devices=devices)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "cannot skip batches" not in resumed.stderr and "counts as finished" not in resumed.stderr
    assert "RNG states of" not in resumed.stderr
    after = train_losses(tmp_path / "split")
    for step in range(8):
        assert after[step] == reference[step], (step, after[step], reference[step])


def _loops(epoch: int, batch_completed: int, batches: int = 4) -> dict:
    progress = {"ready": batches, "started": batches, "processed": batches, "completed": batch_completed}
    return {
        "epoch": epoch,
        "loops": {
            "fit_loop": {
                "epoch_progress": {
                    s: {"ready": 1, "started": 1, "processed": epoch, "completed": epoch} for s in ("current", "total")
                },  # fmt: skip
                "epoch_loop.batch_progress": {"current": dict(progress), "total": dict(progress)},
                "epoch_loop.state_dict": {"_batches_that_stepped": batch_completed},
            }
        },
    }


def test_cut_short_epoch_checkpoint_is_reopened_to_the_step_checkpoint_state():
    from ctseg.training.resume import epoch_counted_done as _epoch_counted_done
    from ctseg.training.resume import reopen_epoch as _reopen_epoch

    end_of_fit, step_ckpt = _loops(epoch=1, batch_completed=4), _loops(epoch=0, batch_completed=3)
    assert _epoch_counted_done(end_of_fit, 4)
    assert not _epoch_counted_done(step_ckpt, 4)  # a mid-epoch step checkpoint is left alone
    assert not _epoch_counted_done(end_of_fit, 3) and not _epoch_counted_done({"loops": {}}, 4)
    _reopen_epoch(end_of_fit)
    assert end_of_fit == step_ckpt
