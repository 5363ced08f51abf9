"""A list of files in a text file (``ctseg prepare vector --src images.txt``): names the user chose, read as a VRT's
sources are (:mod:`ctseg.safety.rasters`).

One path a line; blank lines and lines starting with ``#`` are skipped; a relative path is relative to the list's
folder. A path outside that folder (symbolic links followed) is refused unless the user allows it
(``--allow-outside``), a network one (a URL, ``/vsicurl/`` …) unless ``--allow-remote``; a path named twice, a
list over :data:`MAX_LIST_BYTES` or not UTF-8 text is one line too. Each refusal names the list and the line.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ctseg.errors import CtsegError

__all__ = ["MAX_LIST_BYTES", "read_path_list"]

#: Largest list read: a million paths of 60 characters.
MAX_LIST_BYTES = 64 * 1024 * 1024
_REMOTE = re.compile(r"^(/vsi(curl|s3|gs|az|adls|oss|swift|hdfs|webhdfs)|[A-Za-z][A-Za-z0-9+.\-]*://)", re.IGNORECASE)


def read_path_list(path: str | os.PathLike, what: str = "image list") -> list[str | Path]:
    """The paths ``path`` lists (module docstring): local ones as :class:`Path` (made absolute), network ones as
    the text given (only under ``--allow-remote``)."""
    from ctseg.safety.raster_policy import current_policy

    path = Path(path)
    policy = current_policy()
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_LIST_BYTES + 1)
    except OSError as err:
        raise CtsegError(f"cannot read {what} {path}: {err.strerror or err}") from None
    if len(data) > MAX_LIST_BYTES:
        raise CtsegError(f"{what} {path} is over {MAX_LIST_BYTES >> 20} MiB; split it, or give a folder")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CtsegError(f"{what} {path} is not UTF-8 text (one path a line)") from None
    root = Path(os.path.realpath(path.absolute().parent))
    out: list[str | Path] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        where = f"{what} {path}, line {number}"
        if "\x00" in entry:
            raise CtsegError(f"{where}: not a file name")
        if _REMOTE.match(entry):
            if not policy.allow_remote:
                raise CtsegError(f"{where} names {entry[:200]}, a network source; pass --allow-remote if you trust it")
            key: str | Path = entry
        else:
            named = Path(os.path.normpath(path.absolute().parent / entry))
            key = Path(os.path.realpath(named))
            if key != root and root not in key.parents and not policy.allow_outside:
                raise CtsegError(
                    f"{where} names {entry[:200]}, outside the list's folder {root}; pass --allow-outside if you "
                    "trust it (or move the list beside the files)"
                )
            if not key.is_file():
                raise CtsegError(f"{where} names {entry[:200]}, which does not exist (relative to {root})")
        if str(key) in seen:
            raise CtsegError(f"{where} names {entry[:200]} again (line {seen[str(key)]}); list each file once")
        seen[str(key)] = number
        out.append(key if isinstance(key, str) else named)
    if not out:
        raise CtsegError(f"{what} {path} names no file (one path a line; # starts a comment)")
    return out
