"""glibc's allocator tuned for ctseg's commands: large tensors reused from the heap instead of fresh mappings.

A batch of 512² windows allocates and frees activation tensors of a few MiB to tens of MiB many times a second.
glibc serves a request above ``M_MMAP_THRESHOLD`` with a fresh ``mmap`` (every page faulted in anew) and returns
heap memory above ``M_TRIM_THRESHOLD`` to the system at once, so the same memory is faulted in again and again:
~180,000 minor page faults per batch-8 forward, and system time 18 % of the CPU time of a prediction (issue 33).
:func:`tune_allocator` raises both thresholds with ``mallopt`` at start-up:

* ``M_MMAP_THRESHOLD`` (−3) = 32 MiB, glibc's largest allowed value on 64-bit (requests below it come from the heap);
* ``M_TRIM_THRESHOLD`` (−1) = 2 GiB − 1 (free heap memory is kept for the next batch rather than unmapped).

The same as ``GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=…``, but done for the
user. Linux with glibc only (a no-op elsewhere, e.g. musl or macOS); ``CTSEG_MALLOC_TUNING=0`` turns it off; an
explicit ``GLIBC_TUNABLES`` malloc setting is left as the user set it. Child processes forked by the command
(prepare's workers, the data loaders) inherit it.
"""

from __future__ import annotations

import ctypes
import os
import platform

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "tune_allocator"]

#: ``mallopt`` parameter numbers (glibc's malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: Requests below this many bytes come from the heap (glibc's maximum on 64-bit: 4 MiB × sizeof(long)).
MMAP_THRESHOLD = 32 * 1024 * 1024
#: Free heap memory above this many bytes is returned to the system (mallopt takes an int).
TRIM_THRESHOLD = 2**31 - 1

_done: bool | None = None


def tune_allocator() -> bool:
    """Raise glibc's mmap and trim thresholds once per process; ``True`` when both were set."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if os.environ.get("CTSEG_MALLOC_TUNING", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False  # the user's own setting wins
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _done
