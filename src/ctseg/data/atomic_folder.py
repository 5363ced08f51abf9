"""Writing a folder atomically: build it as ``<dst>.tmp-XXXX`` beside ``dst``, rename it when complete, and clean up
after a process that was killed half-way.

The temporary folder holds an owner file (:data:`OWNER_FILE`: process id and host) until it is renamed;
:func:`clean_stale` deletes the temporary folders of ``dst`` whose process is gone.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

from ctseg.data.manifest import MANIFEST
from ctseg.staging import pid_alive

#: Marks a temporary folder with the process writing it.
OWNER_FILE = ".ctseg-owner"


def write_owner(tmp: Path) -> None:
    (tmp / OWNER_FILE).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))


def clean_stale(dst: Path) -> list[Path]:
    """Delete ``<dst>.tmp-*`` folders left by killed prepares of ``dst`` (returns them).

    A folder is stale when its owner file names a process of this machine that is gone, or when it has no owner
    file and is over a minute old (an older ctseg, or a kill before the file was written). Folders of another
    machine (a shared file system) and of live processes are kept. A ``<dst>.old-*`` folder is a previous
    ``dst`` that a kill caught mid-swap: it is moved back when ``dst`` is missing, else deleted.
    """
    removed: list[Path] = []
    if not dst.parent.is_dir():
        return removed
    host = socket.gethostname()
    for tmp in sorted(dst.parent.glob(f"{dst.name}.tmp-*")):
        if not tmp.is_dir():
            continue
        try:
            owner = json.loads((tmp / OWNER_FILE).read_text())
            stale = owner.get("host") == host and not pid_alive(int(owner["pid"]))
        except (OSError, ValueError, KeyError, TypeError):
            stale = time.time() - tmp.stat().st_mtime > 60
        if stale:
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    for old in sorted(dst.parent.glob(f"{dst.name}.old-*")):
        if old.is_dir() and not dst.exists() and (old / MANIFEST).is_file():
            os.replace(old, dst)
        else:
            shutil.rmtree(old, ignore_errors=True)
            removed.append(old)
    return removed


def replace_folder(tmp: Path, dst: Path) -> None:
    """Move the finished ``tmp`` to ``dst``; an existing ``dst`` is swapped out first, then deleted."""
    (tmp / OWNER_FILE).unlink(missing_ok=True)
    if not dst.exists():
        os.replace(tmp, dst)
        return
    old = Path(tempfile.mkdtemp(prefix=f"{dst.name}.old-", dir=dst.parent))
    old.rmdir()
    os.replace(dst, old)
    os.replace(tmp, dst)
    shutil.rmtree(old, ignore_errors=True)
