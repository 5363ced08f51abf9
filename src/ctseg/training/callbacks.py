"""ctseg's checkpoint callback: Lightning's ModelCheckpoint that never picks a "best" on a NaN score."""

from __future__ import annotations

import math

from lightning.pytorch.callbacks import ModelCheckpoint


class ScoreCheckpoint(ModelCheckpoint):
    """:class:`~lightning.pytorch.callbacks.ModelCheckpoint`, except that a NaN monitored value (e.g. ``val/miou``
    of a validation split with no labelled pixel) is not ranked: no best checkpoint is written or chosen from it
    (Lightning ranks NaN as the worst value, so the first NaN still filled a free top-k slot). ``last.ckpt`` and
    step checkpoints are written as usual."""

    def _save_topk_checkpoint(self, trainer, monitor_candidates) -> None:
        value = monitor_candidates.get(self.monitor) if self.monitor else None
        if value is not None and math.isnan(float(value)):
            return
        super()._save_topk_checkpoint(trainer, monitor_candidates)
