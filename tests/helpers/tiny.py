"""A tiny finished ``ctseg grid`` run (pf-tiny, synthetic 64² scenes, CT-CL, 2 steps) shared by several test files.

Each test file wraps :func:`tiny_run` in its own session fixture; the run is made once per pytest session
(under the session's base temp folder) and reused by the others.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from ctseg.cli.entry import main
from ctseg.data.definitions import DatasetInfo, generic_colors, info_to_json

#: The ``data:`` block of :data:`TINY_CONFIG`: 4 training and 2 validation synthetic 64² scenes, batch 2.
SYNTHETIC_DATA = """\
class_path: ctseg.data.SyntheticDataModule
init_args:
  train_samples: 4
  val_samples: 2
  image_size: 64
  batch_size: 2
"""


def tiny_config(scheme: str = "ct-cl", data: str = SYNTHETIC_DATA) -> str:
    """A LightningCLI config of 2 steps of pf-tiny at 64² with one validation batch at step 2, under ``scheme``;
    ``data`` is the YAML of its ``data:`` block (unindented; indented here)."""
    return f"""
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
  scheme: {scheme}
data:
{textwrap.indent(data, "  ")}"""


TINY_CONFIG = tiny_config()


def tiny_run(base: Path) -> Path:
    """The run folder (``results.json``, checkpoints, CSV log) of a 1 config × 1 seed grid under ``base``."""
    run = base / "tiny-ct-cl" / "seed0"
    if not (run / "results.json").is_file():
        base.mkdir(parents=True, exist_ok=True)
        cfg = base / "tiny-ct-cl.yaml"
        cfg.write_text(TINY_CONFIG)
        assert main(["grid", "--configs", str(cfg), "--seeds", "1", "--out", str(base)]) == 0
    return run


#: A 4-band uint16 data set description with nodata 0 (RGB + near infrared), for band-layout tests.
RGBN = DatasetInfo(
    name="rgbn-test",
    classes=("ground", "roof", "tree"),
    colors=generic_colors(3),
    mean=(0.10, 0.12, 0.14, 0.30),
    std=(0.05, 0.06, 0.07, 0.10),
    bands=4,
    dtype="uint16",
    nodata=0.0,
)


def save_task_checkpoint(
    path: Path, info: DatasetInfo | None = None, *, model: str = "pf-tiny", img_size: int = 64, seed: int = 0,
    **extra,
) -> Path:  # fmt: skip
    """An untrained ``SegmentationTask`` saved as a Lightning-style checkpoint (what ``ctseg fit`` writes, minus
    the optimiser): with ``info`` it carries that band layout and description; without, 4 RGB classes."""
    import lightning
    import torch

    from ctseg.training.task import SegmentationTask

    torch.manual_seed(seed)
    if info is not None:
        extra = {"in_chans": info.bands, "data_info": info_to_json(info), "dataset": info.name, **extra}
    names = list(info.classes) if info is not None else ["ground", "building", "road", "tree"]
    task = SegmentationTask(model=model, num_classes=len(names), img_size=img_size, class_names=names, **extra)
    ckpt = {"pytorch-lightning_version": lightning.__version__, "state_dict": task.state_dict()}
    torch.save({**ckpt, "hyper_parameters": dict(task.hparams)}, path)
    return path
