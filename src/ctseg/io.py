"""Atomic file output: write to a temporary sibling, then rename, so a kill leaves the old file or the new one.
Also the SHA-256 of a file's bytes (:func:`sha256_file`), which results, checkpoints and caches are keyed by."""

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


#: Name prefix of the private folders :func:`atomic_path` writes in (beside the target).
ATOMIC_PREFIX = ".ctseg-write-"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path for ``path`` (same name, in a private locked folder beside it:
    :class:`ctseg.staging.LockedFolder`); on success rename it onto ``path``, so a reader sees the old file or the
    new one. A failure removes the folder; a kill leaves it, and the next ``atomic_path`` into the same folder
    removes the folders of processes that are gone (never a live one's)."""
    from ctseg.staging import LockedFolder, dead_folders, remove_tree

    path = Path(path)
    for dead in dead_folders(path.parent, ATOMIC_PREFIX):
        remove_tree(dead)
    work = LockedFolder(path.parent, ATOMIC_PREFIX)
    tmp_path = work.path / path.name
    try:
        yield tmp_path
        if tmp_path.exists():
            set_default_mode(tmp_path)
        os.replace(tmp_path, path)
    finally:
        work.remove()


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


def check_writable_root(folder, option: str, *, beside: bool = False) -> None:
    """One line when ``folder`` (or the nearest folder above it that exists) cannot be written: a read-only
    mount or a folder of another user, found before any work is done.

    ``beside``: ``folder`` is built beside itself and renamed into place (``ctseg prepare``), so the folder
    above it must be writable, whether or not ``folder`` exists."""
    path = Path(str(folder)).expanduser().absolute()
    existing = next((p for p in (path.parents if beside else (path, *path.parents)) if p.exists()), None)
    if existing is None:
        return
    if not existing.is_dir():
        raise CtsegError(f"{option} {folder}: {existing} exists and is not a folder; choose another folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        why = "is on a read-only file system" if _read_only(existing) else "is not writable by this user"
        raise CtsegError(f"{option} {folder}: {existing} {why}; choose a writable folder")


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


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


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 of the file's bytes, hex (read in 4 MiB chunks)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()
