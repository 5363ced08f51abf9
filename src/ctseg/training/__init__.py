"""Training: the LightningModule and what it is made of.

* :mod:`ctseg.training.task` — :class:`SegmentationTask` (model + losses + metrics + logging), the class every
  ``ctseg fit`` checkpoint names as ``ctseg.training.SegmentationTask``;
* :mod:`ctseg.training.seg_loss` — cross-entropy + Dice with optional class weights;
* :mod:`ctseg.training.resume` — :class:`~ctseg.training.resume.ExactResume`, the callback that makes a killed
  run continue exactly;
* :mod:`ctseg.training.callbacks` — the checkpoint callback that never ranks a NaN score;
* :mod:`ctseg.training.lightning_cli` — the LightningCLI that configures and runs a fit (``ctseg fit | validate |
  test``, each run of ``ctseg grid``), with the checks it makes first (:mod:`ctseg.training.config_checks`).

``SegmentationTask`` is imported on first use, so that ``ctseg.training.resume`` stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SegmentationTask"]


def __getattr__(name: str) -> Any:
    if name == "SegmentationTask":
        from ctseg.training.task import SegmentationTask

        return SegmentationTask
    raise AttributeError(f"module 'ctseg.training' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, "task", "seg_loss", "resume", "callbacks", "lightning_cli", "config_checks"})
