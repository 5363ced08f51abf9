"""Private working folders, and telling the ones a killed process left behind from those of live processes.

A :class:`LockedFolder` is a hidden folder ``<parent>/<prefix><8 random characters>`` whose ``lock`` file its
process holds an exclusive :func:`fcntl.flock` on for as long as it works there. The kernel drops the lock when
the process ends, however it ends (SIGKILL included), so a folder whose lock can be taken without waiting is
*dead*: :func:`dead_folders` yields those (with their lock held, so that two cleaning processes never handle the
same folder), and never touches a live one.

A folder is made (``mkdtemp``, ``lock`` written and locked) and folders are judged while holding a short
``flock`` on ``parent`` itself (:func:`folder_lock`), so no process ever sees a folder between its creation and
its lock. Where ``flock`` does not work (no :mod:`fcntl`; a network file system that refuses it), the ``lock``
file's process id and host decide, as for ``ctseg prepare``'s temporary folders
(:mod:`ctseg.data.atomic_folder`): dead when it names a process of this machine that is gone; a folder without
a readable ``lock`` file is dead when over a minute old. Folders owned by another user are never touched.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["LOCK_FILE", "LockedFolder", "dead_folders", "folder_lock", "low_on_space", "pid_alive", "remove_tree"]

#: The file inside a :class:`LockedFolder` that its process holds locked.
LOCK_FILE = "lock"
#: Age (seconds) after which a folder without a readable lock file counts as dead.
ORPHAN_AGE = 60.0
_BUSY = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]


def _flock(fd: int, blocking: bool) -> bool | None:
    """Take an exclusive lock: ``True`` taken, ``False`` held by another open file, ``None`` unsupported here."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except OSError as err:
        return False if err.errno in _BUSY and not blocking else None
    return True


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``folder`` (a directory) for the block; yields whether it is held (``False``
    where the file system or the platform has none: the block then runs unlocked)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        yield False
        return
    try:
        yield bool(_flock(fd, blocking=True))
    finally:
        os.close(fd)  # releases the lock


def _owned(st: os.stat_result) -> bool:
    return not hasattr(os, "getuid") or st.st_uid == os.getuid()


def low_on_space(folder: str | os.PathLike) -> bool:
    """Less than 1 MiB free where ``folder`` is: a failed write there was the disk filling up, whatever the library
    said (GDAL: "IO error writing tag data", SQLite: "Failed to commit transaction")."""
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):
        return False
    return st.f_bavail * st.f_frsize < (1 << 20)


def remove_tree(path: Path) -> None:
    """Remove a folder and everything in it (never following a link); what cannot be removed stays."""
    shutil.rmtree(path, ignore_errors=True)


class LockedFolder:
    """A private folder in ``parent`` that this process holds locked until :meth:`release` / :meth:`remove`
    (module docstring). ``owner``: extra JSON-able facts written into the lock file (e.g. which input)."""

    def __init__(self, parent: str | os.PathLike, prefix: str, owner: dict | None = None):
        parent = Path(parent)
        self._fd: int | None = None
        with folder_lock(parent):
            self.path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
            try:
                self._fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
                os.write(self._fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), **(owner or {})})
                         .encode())  # fmt: skip
                _flock(self._fd, blocking=True)  # None (unsupported): the pid and host in the file decide
            except BaseException:
                self.remove()
                raise

    def release(self) -> None:
        """Drop the lock (the folder stays: a later process finds it dead)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def remove(self) -> None:
        """Delete the folder, then drop the lock."""
        remove_tree(self.path)
        self.release()


def _alive(owner: object, age: float) -> bool:
    """Whether the process a lock file names may still run (no ``flock`` to ask)."""
    try:
        pid, host = int(owner["pid"]), owner.get("host")  # type: ignore[index, union-attr]
    except (KeyError, TypeError, ValueError, AttributeError):
        return age <= ORPHAN_AGE  # being written, or not ours: dead only when old
    if host != socket.gethostname():
        return True  # another machine's process: cannot tell, keep it
    return pid_alive(pid)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine exists (one of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _judge(folder: Path, age: float, locked: bool) -> int | None:
    """An open fd holding ``folder``'s lock when the folder is dead (``-1``: dead, no lock file to hold), else
    ``None``. ``locked``: whether this process holds the parent's lock (then a folder without a lock file is one
    whose process died while making it)."""
    try:
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return -1 if locked or age > ORPHAN_AGE else None
    except OSError:
        return None
    taken = _flock(fd, blocking=False)
    if taken:
        return fd
    if taken is None:  # no flock here: the process id decides
        try:
            owner = json.loads(os.read(fd, 4096) or b"null")
        except (OSError, ValueError):
            owner = None
        if not _alive(owner, age):
            return fd
    os.close(fd)
    return None


def dead_folders(parent: str | os.PathLike, prefix: str) -> Iterator[Path]:
    """The folders ``<parent>/<prefix>*`` of this user whose process is gone (module docstring), one at a time,
    each with its lock held by this process while the caller handles it (and deletes it, or not)."""
    parent = Path(parent)
    if not parent.is_dir():
        return
    with folder_lock(parent) as locked:
        try:
            names = sorted(n for n in os.listdir(parent) if n.startswith(prefix))
        except OSError:
            return
        for name in names:
            folder = parent / name
            try:
                st = folder.lstat()
            except OSError:
                continue
            if not stat.S_ISDIR(st.st_mode) or not _owned(st):
                continue
            fd = _judge(folder, time.time() - st.st_mtime, locked)
            if fd is None:
                continue
            try:
                yield folder
            finally:
                if fd >= 0:
                    os.close(fd)
