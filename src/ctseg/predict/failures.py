"""A failed write of ``ctseg predict`` in one line: what GDAL / libtiff raise and print, and a full disk.

GDAL and libtiff print some of their errors straight to the process's stderr (libtiff's ``_tiffWriteProc: No
space left on device.``); :func:`native_stderr` catches that text while a write runs, so that a failure is the
one line of :func:`write_error` instead, naming the output (whose partial files the caller has removed).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ctseg.errors import CtsegError
from ctseg.io import is_disk_full
from ctseg.predict.inputs import error_text

__all__ = ["gdal_errors", "native_stderr", "no_space", "write_error"]


def no_space(err: BaseException, printed: str = "") -> bool:
    """A full disk, from the exception (:func:`ctseg.io.is_disk_full`), GDAL's own words, or what libtiff printed."""
    text = f"{error_text(err)} {printed}".lower()
    return is_disk_full(err) or "no space left" in text or "free disk space" in text or "quota exceeded" in text


def write_error(target: Path, err: BaseException, printed: str = "", full: bool = False) -> CtsegError:
    """The one-line error of a failed write of ``target`` (whose partial files are gone); ``printed``: what GDAL
    printed meanwhile; ``full``: the disk is known to be full."""
    if full or no_space(err, printed):
        return CtsegError(
            f"cannot write {target}: no space left on device; the partial output was removed (free some space or "
            "choose another --out)"
        )
    return CtsegError(f"cannot write {target} ({error_text(err)}); the partial output was removed")


def gdal_errors() -> tuple[type[BaseException], ...]:
    """What a failed GDAL write raises: rasterio's errors, ``OSError`` and GDAL's ``CPLE_*`` errors (which
    ``rasterio.shutil.copy`` lets through as they are)."""
    from rasterio.errors import RasterioError

    try:
        from rasterio._err import CPLE_BaseError
    except ImportError:  # pragma: no cover - another rasterio layout
        return (RasterioError, OSError)
    return (RasterioError, OSError, CPLE_BaseError)


@contextlib.contextmanager
def native_stderr(echo: bool = True) -> Iterator[list[str]]:
    """Point file descriptor 2 at a temporary file for the block: what C libraries print straight to stderr
    (libtiff: ``_tiffWriteProc: No space left on device.``) lands in the yielded list (one string) instead. When
    the block succeeds (and ``echo``), the text is printed to stderr after all; when it fails, the caller's
    one-line error replaces it."""
    printed: list[str] = []
    try:
        sys.stderr.flush()
    except (AttributeError, ValueError, OSError):
        pass
    try:
        sink = tempfile.TemporaryFile()
    except OSError:
        yield printed
        return
    with sink:
        try:
            saved = os.dup(2)
        except OSError:
            yield printed
            return
        ok = False
        try:
            os.dup2(sink.fileno(), 2)
            try:
                yield printed
                ok = True
            finally:
                os.dup2(saved, 2)
                sink.seek(0)
                text = sink.read(1 << 16)
                printed.append(text.decode(errors="replace"))
                if ok and echo and text:
                    os.write(2, text)
        finally:
            os.close(saved)
