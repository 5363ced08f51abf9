"""A tiny finished ``ctseg grid`` run (pf-tiny, synthetic 64² scenes, CT-CL, 2 steps) shared by several test files.

Each test file wraps :func:`tiny_run` in its own session fixture; the run is made once per pytest session
(under the session's base temp folder) and reused by the others.
"""

from __future__ import annotations

from pathlib import Path

from ctseg.cli import main

TINY_CONFIG = """
seed_everything: 0
trainer:
  max_steps: 2
  limit_val_batches: 1
  limit_test_batches: 1
  val_check_interval: 2
  check_val_every_n_epoch: null
  log_every_n_steps: 1
  enable_progress_bar: false
  enable_model_summary: false
model:
  model: pf-tiny
  img_size: 64
  scheme: ct-cl
data:
  class_path: ctseg.data.SyntheticDataModule
  init_args:
    train_samples: 4
    val_samples: 2
    image_size: 64
    batch_size: 2
"""


def tiny_run(base: Path) -> Path:
    """The run folder (``results.json``, checkpoints, CSV log) of a 1 config × 1 seed grid under ``base``."""
    run = base / "tiny-ct-cl" / "seed0"
    if not (run / "results.json").is_file():
        base.mkdir(parents=True, exist_ok=True)
        cfg = base / "tiny-ct-cl.yaml"
        cfg.write_text(TINY_CONFIG)
        assert main(["grid", "--configs", str(cfg), "--seeds", "1", "--out", str(base)]) == 0
    return run
