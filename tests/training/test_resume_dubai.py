"""Exact resume on the shipped Dubai CPU config (dubai/cpu/cl) at toy size, on the real Dubai crops.

For each pipeline the shipped configs use — per-sample augmentation in the loader (worker processes 0 or 2) and
the fast pipeline (on-device augmentation from the decoded-crop cache) — an uninterrupted 8-step run is the
reference and every logged training loss of the other runs must equal it:

* extend: stop at 4 steps, then ``--trainer.max_steps 8 --ckpt_path last``;
* kill: SIGKILL as step 5 starts (step checkpoints every 2 steps), then the same command with
  ``--ckpt_path last``.

The default suite runs the extension on the fast pipeline with 2 workers (the case that was broken); the rest is
marked slow: ``pytest -m slow tests/training/test_resume_dubai.py`` (all six passed, 2026-12-02).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.paths import DUBAI_DIR, TESTS
from helpers.run_logs import run_fit, train_losses

from ctseg.configs import CONFIG_DIR

CONFIG = CONFIG_DIR / "dubai" / "cpu" / "cl.yaml"
VARIANTS = {
    "cpu-w0": ["--data.init_args.num_workers", "0"],
    "cpu-w2": ["--data.init_args.num_workers", "2"],
    "device-cache-w0": [
        "--data.init_args.num_workers",
        "0",
        "--data.init_args.augment_on_device",
        "true",
        "--data.init_args.decoded_cache",
        "true",
    ],  # fmt: skip
    "device-cache-w2": [
        "--data.init_args.num_workers",
        "2",
        "--data.init_args.augment_on_device",
        "true",
        "--data.init_args.decoded_cache",
        "true",
    ],  # fmt: skip
}
KILL = """trainer:
  callbacks:
    - class_path: helpers.resume_kill.KillAtStep
      init_args: {step: 5}
"""


@pytest.fixture(scope="module")
def prepared_dubai(tmp_path_factory) -> Path:
    if not DUBAI_DIR.is_dir():
        pytest.skip("../shared/data/dubai-aerial is absent")
    from ctseg.data import prepare_dataset

    return prepare_dataset("dubai", DUBAI_DIR, tmp_path_factory.mktemp("dubai") / "prepared", workers=2, progress=False)


def _fit(root: Path, data: Path, variant: str, *extra: str, kill: Path | None = None):
    args = ["--data.init_args.root", str(data), "--data.init_args.batch_size", "2", "--data.init_args.image_size",
            "64", "--model.img_size", "64", "--trainer.max_steps", "8", "--trainer.log_every_n_steps", "1",
            "--trainer.val_check_interval", "1000", "--trainer.limit_val_batches", "1",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.default_root_dir", str(root), "--step_checkpoint.every_n_train_steps", "2",
            *VARIANTS[variant], *(["--config", str(kill)] if kill else []), *extra]  # fmt: skip
    return run_fit(CONFIG, *args, env={"PYTHONPATH": str(TESTS), "OMP_NUM_THREADS": "1"})


def _reference(tmp_path: Path, data: Path, variant: str) -> dict[int, float]:
    full = _fit(tmp_path / "full", data, variant)
    assert full.returncode == 0, full.stderr[-2000:]
    losses = train_losses(tmp_path / "full")
    assert sorted(losses) == list(range(8))
    return losses


@pytest.mark.parametrize(
    "variant",
    [pytest.param("device-cache-w2"), pytest.param("cpu-w0", marks=pytest.mark.slow),
     pytest.param("cpu-w2", marks=pytest.mark.slow), pytest.param("device-cache-w0", marks=pytest.mark.slow)],
)  # fmt: skip
def test_extend_a_finished_run_is_exact(tmp_path, prepared_dubai, variant):
    reference = _reference(tmp_path, prepared_dubai, variant)
    short = _fit(tmp_path / "run", prepared_dubai, variant, "--trainer.max_steps", "4")
    assert short.returncode == 0, short.stderr[-2000:]
    extended = _fit(tmp_path / "run", prepared_dubai, variant, "--ckpt_path", "last")
    assert extended.returncode == 0, extended.stderr[-2000:]
    losses = train_losses(tmp_path / "run")
    assert sorted(losses) == list(range(8))
    assert losses == reference


@pytest.mark.parametrize(
    "variant",
    [pytest.param("device-cache-w0", marks=pytest.mark.slow), pytest.param("cpu-w2", marks=pytest.mark.slow)],
)
def test_sigkill_then_resume_is_exact(tmp_path, prepared_dubai, variant):
    reference = _reference(tmp_path, prepared_dubai, variant)
    kill = tmp_path / "kill.yaml"
    kill.write_text(KILL)
    killed = _fit(tmp_path / "run", prepared_dubai, variant, kill=kill)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert max(train_losses(tmp_path / "run")) == 4
    resumed = _fit(tmp_path / "run", prepared_dubai, variant, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    losses = train_losses(tmp_path / "run")
    for step in range(4, 8):  # re-done from the step-4 checkpoint
        assert losses[step] == reference[step], (step, losses[step], reference[step])
