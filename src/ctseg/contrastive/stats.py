"""Named statistics of a contrastive scheme's last call, for logging without knowing the scheme."""

from __future__ import annotations

from torch import Tensor


class SchemeStats(dict[str, Tensor]):
    """Detached tensors of the last forward, by name (a ``dict``), split into two kinds:

    * ``per_stage``: ``(S,)`` tensors, one value per encoder stage (or scale); logged as ``<name>_s<i>``;
    * ``scalars``: 0-dim tensors; logged as ``<name>``;
    * ``epoch_means``: 0-dim tensors logged at every step and averaged over the epoch (e.g. the fraction of
      steps whose contrastive term was clipped);
    * ``extra``: kept for inspection, not logged.

    ``loggable()`` flattens ``per_stage`` and ``scalars`` into ``{log name: 0-dim tensor}``; the training loop
    logs that as it is on its logging steps, and ``epoch_means`` on every step.
    """

    def __init__(
        self,
        per_stage: dict[str, Tensor] | None = None,
        scalars: dict[str, Tensor] | None = None,
        epoch_means: dict[str, Tensor] | None = None,
        extra: dict[str, Tensor] | None = None,
    ) -> None:
        per_stage, scalars, epoch_means = dict(per_stage or {}), dict(scalars or {}), dict(epoch_means or {})
        super().__init__({**per_stage, **scalars, **epoch_means, **(extra or {})})
        self.per_stage_keys = list(per_stage)
        self.scalar_keys = list(scalars)
        self.epoch_mean_keys = list(epoch_means)

    def epoch_loggable(self) -> dict[str, Tensor]:
        return {name: self[name].float() for name in self.epoch_mean_keys}

    def loggable(self) -> dict[str, Tensor]:
        out = {name: self[name].float() for name in self.scalar_keys}
        for name in self.per_stage_keys:
            for i, value in enumerate(self[name].float().reshape(-1).unbind(0)):
                out[f"{name}_s{i}"] = value
        return out
