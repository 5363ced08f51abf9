"""What a handed VRT may name beyond its own folder, and GDAL's own guards: the :class:`SourcePolicy` in force
(``--allow-remote`` / ``--allow-outside``, deny both by default) that :mod:`ctseg.safety.rasters`'s walk of a
VRT's sources obeys, and the GDAL configuration (:data:`GDAL_GUARDS`) forced into the environment for every
ctseg reader.

**The policy.** What the user allows is a :class:`SourcePolicy` held in a context variable: deny both by
default; ``ctseg.cli.entry.main`` installs the command's ``--allow-remote`` / ``--allow-outside`` with
:func:`allowing` around the command, and ``prepare`` hands it to its worker processes (:func:`set_policy` as
their initializer). Library users call ``with allowing(remote=True): run_predict(…)``. Threads started inside
see the default (deny), never more than was allowed.

**GDAL's own guards** (:data:`GDAL_GUARDS`: no Python pixel functions, no raw bands, no ``MEM:::`` pointers)
are forced into the environment, where GDAL reads them on every use, when this module is imported (as
:mod:`ctseg.safety.rasters` does) — so they hold for library users too, as soon as any ctseg reader is used — and
again at the start of every ``ctseg`` command (:func:`apply_gdal_guards`). GDAL 3.10 (rasterio 1.4.4's) knows
``GDAL_VRT_ENABLE_PYTHON``, ``GDAL_MEM_ENABLE_OPEN`` and ``VRT_ALLOW_MEM_DRIVER``;
``GDAL_VRT_ENABLE_RAWRASTERBAND`` takes effect from GDAL 3.12 (until then the walk of
:mod:`ctseg.safety.rasters` refuses raw bands).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

__all__ = ["GDAL_GUARDS", "SourcePolicy", "allowing", "apply_gdal_guards", "current_policy", "set_policy"]

#: GDAL configuration forced for every ctseg command and at this module's import (GDAL reads the environment
#: each time it needs an option). The raw-band options take effect from GDAL 3.12; unknown ones are ignored.
GDAL_GUARDS: dict[str, str] = {
    "GDAL_VRT_ENABLE_PYTHON": "NO",  # Python pixel functions in a VRT never run
    "GDAL_VRT_ENABLE_RAWRASTERBAND": "NO",  # VRTRawRasterBand (any file's bytes as pixels), GDAL >= 3.12
    "GDAL_VRT_RAWRASTERBAND_ALLOWED_SOURCE": "SIBLING_OR_CHILD_OF_VRT_PATH",  # should it be re-enabled
    "GDAL_MEM_ENABLE_OPEN": "NO",  # "MEM:::DATAPOINTER=…" (reads process memory) cannot be opened
    "VRT_ALLOW_MEM_DRIVER": "NO",  # nor named as a VRT source
}


# ------------------------------------------------------------------------------------------------ the policy
@dataclass(frozen=True)
class SourcePolicy:
    """What a VRT may name beyond local files under its own folder (both off by default)."""

    allow_remote: bool = False
    allow_outside: bool = False


_DENY = SourcePolicy()
_POLICY: ContextVar[SourcePolicy | None] = ContextVar("ctseg_raster_sources", default=None)


def current_policy() -> SourcePolicy:
    """The policy in force here (the default denies both)."""
    return _POLICY.get() or _DENY


def set_policy(policy: SourcePolicy) -> None:
    """Install ``policy`` for the rest of this context (a worker process's initializer)."""
    _POLICY.set(policy)


@contextmanager
def allowing(*, remote: bool = False, outside: bool = False) -> Iterator[SourcePolicy]:
    """Within the block, VRT sources on the network (``remote``) / outside the VRT's folder (``outside``) are
    allowed — what ``--allow-remote`` / ``--allow-outside`` do."""
    policy = SourcePolicy(bool(remote), bool(outside))
    token = _POLICY.set(policy)
    try:
        yield policy
    finally:
        _POLICY.reset(token)


def apply_gdal_guards() -> None:
    """Force :data:`GDAL_GUARDS` into the environment (replacing what was there)."""
    os.environ.update(GDAL_GUARDS)


apply_gdal_guards()
