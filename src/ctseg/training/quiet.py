"""What a normal ``ctseg`` training run keeps off the terminal: third-party tips and deprecation notices about
the libraries' own internals, which the user can do nothing about.

Each filter names one known message (never a whole category or module), so a new warning still shows:

* Lightning's "💡 Tip … litlogger" advert, logged at INFO on every Trainer;
* Lightning's ``isinstance(treespec, LeafSpec)`` deprecation (its own use of torch's pytree API);
* jsonargparse's ``skip_none`` deprecation (LightningCLI's own call);
* "does not have many workers" for the data loaders (ctseg chooses ``num_workers`` on purpose).
"""

from __future__ import annotations

import logging
import warnings

__all__ = ["quiet_third_party"]

_MESSAGES = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"\s*skip_none parameter was deprecated",
    r".*does not have many workers",
)
_RANK_ZERO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class _DropTips(logging.Filter):
    """Drops Lightning's advertising tips (records whose message starts with "💡 Tip")."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


def quiet_third_party() -> None:
    """Install the filters (idempotent)."""
    for message in _MESSAGES:
        warnings.filterwarnings("ignore", message=message)
    for name in _RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropTips) for f in logger.filters):
            logger.addFilter(_DropTips())
