"""Atomic file output: write to a temporary sibling, then rename, so a kill leaves the old file or the new one."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ctseg.errors import CtsegError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def set_default_mode(path: str | os.PathLike) -> None:
    """Give a file made by ``mkstemp`` / ``mkdtemp`` (mode 0600 / 0700) the usual mode under the umask."""
    base = 0o777 if Path(path).is_dir() else 0o666
    os.chmod(path, base & ~_umask())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix); on success rename it onto ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f"{path.suffix}.tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        set_default_mode(tmp_path)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def is_disk_full(err: BaseException) -> bool:
    """True for "no space left on device" however it arrives: ``OSError`` ENOSPC / EDQUOT, or a library's own
    exception that carries the OS message (safetensors' ``SafetensorError``, GDAL's ``CPLE_*`` errors)."""
    import errno

    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(err).lower()
    return "no space left" in text or "os error 28" in text or "disk quota exceeded" in text


def write_error(path: str | os.PathLike, err: BaseException) -> str:
    """The one line of a failed write of ``path``: "no space left" said as such, anything else by its reason."""
    if is_disk_full(err):
        return f"output {path} cannot be written: no space left on the device; free some space or choose another folder"
    reason = err.strerror if isinstance(err, OSError) and err.strerror else " ".join(str(err).split())[:160]
    return f"output {path} cannot be written ({reason or type(err).__name__}); choose a writable path"


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def ensure_writable_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Create ``path`` if needed and check that files can be written there (one-line error otherwise)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CtsegError(f"{what} {path} exists and is not a folder; choose another path")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as err:
        raise CtsegError(f"{what} {path} cannot be written ({err.strerror}); choose a writable path") from None
    return path
