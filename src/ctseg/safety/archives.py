"""Release archives (``.zip``) read in place: a member is data, its name never a place to write or follow.

**What it guards.** A zip is a list of names, types and sizes its maker chose. Unpacked, a member named
``../x`` or ``/home/you/.bashrc`` lands outside the folder (zip slip), a symbolic-link member points anywhere,
and a member may declare — or inflate to — far more bytes than the archive holds (a zip bomb).

**What it does.** ctseg never unpacks an archive, not even into a temporary folder: :func:`list_archive` reads
its central directory and refuses the whole archive, in one :class:`~ctseg.errors.CtsegError` line naming it and
the member, before any member is read, when a member

* has an absolute name (``/x``, ``\\x``, ``C:x``), a ``..`` component, an empty one or a NUL, or the name of
  another member (twice, or both a file and a folder);
* is a symbolic link or another special file (the Unix type in its external attributes), or is encrypted;
* declares more than :data:`MAX_MEMBER_BYTES` uncompressed, or (above :data:`RATIO_FROM_BYTES`) more than
  :data:`MAX_RATIO` times its compressed size — beyond what deflate can produce (about 1032 : 1); a stored
  member whose two sizes differ counts the same;

and it refuses archives of more than :data:`MAX_MEMBERS` members or folders nested more than :data:`MAX_DEPTH`
deep. :func:`read_member` then reads one member into memory: Python's ``zipfile`` stops at the declared size
and checks the CRC, so what an archive can make ctseg hold is bounded by these limits.

**Paths.** A member is named by the archive's path followed by the member's (``…/5_Labels_all.zip/
top_potsdam_2_10_label.tif``): the archive stands for the folder its members would be unpacked into, which
:func:`archive_member` recognises (the nearest existing part of the path is a ``.zip`` file). Such a path
comes from the folder the user named (``ctseg prepare --src``); a VRT naming a member, or ``/vsizip/``, is still
refused by :mod:`ctseg.safety.rasters` (GDAL is never handed an archive).

**Rasters.** :func:`open_member_raster` sniffs a member's first bytes like any raster
(:mod:`ctseg.safety.raster_formats`) and opens it from memory with that one driver, so GDAL sees neither the
archive nor any sidecar; a VRT member (a list of other files to read) is refused. For a header alone, a TIFF
whose one directory lies in its first :data:`HEADER_BYTES` is opened from those (:func:`tiff_header_size`).
"""

from __future__ import annotations

import functools
import os
import re
import stat
import struct
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from ctseg.errors import CtsegError
from ctseg.safety.raster_formats import FORMAT_NAMES, HEAD_BYTES, printable, raster_driver

if TYPE_CHECKING:
    from rasterio.io import DatasetReader

__all__ = [
    "ARCHIVE_SUFFIXES",
    "MAX_DEPTH",
    "MAX_MEMBERS",
    "MAX_MEMBER_BYTES",
    "MAX_RATIO",
    "HEADER_BYTES",
    "RATIO_FROM_BYTES",
    "ArchiveIndex",
    "archive_member",
    "is_archive",
    "list_archive",
    "open_member",
    "open_member_raster",
    "read_member",
    "tiff_header_size",
]

#: File name endings read as archives (any letter case).
ARCHIVE_SUFFIXES = (".zip",)
#: Largest member read, uncompressed (a 6000² Potsdam RGBIR tile is 144 MB, a 4K UAVid frame a few tens of MB).
MAX_MEMBER_BYTES = 2 << 30
#: Largest uncompressed : compressed ratio of a member (deflate's own limit is about 1032 : 1) …
MAX_RATIO = 1100
#: … checked for members that declare more than this many bytes (tiny members may have any ratio).
RATIO_FROM_BYTES = 1 << 20
#: Most members of one archive (LoveDA's Train.zip has about 5,000, a release rarely more than 100,000).
MAX_MEMBERS = 1_000_000
#: Most folder levels of a member's name.
MAX_DEPTH = 64
#: Bytes of a TIFF member a header is taken from when they hold its one directory and all the tag data it points
#: to (GDAL writes the directory first); otherwise the whole member is read.
HEADER_BYTES = 1 << 20
#: Bytes per value of each TIFF field type (TIFF 6.0 and BigTIFF).
_TIFF_TYPES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8}
_DRIVE = re.compile(r"^[A-Za-z]:")
_REMEDY = "download the release again from its publisher, or remove the archive from --src"


def is_archive(path: Path) -> bool:
    """Whether ``path`` is a regular file (symbolic links followed) whose name ends in :data:`ARCHIVE_SUFFIXES`."""
    if not path.name.lower().endswith(ARCHIVE_SUFFIXES):
        return False
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def archive_member(path: str | os.PathLike) -> tuple[Path, str] | None:
    """``(archive, member)`` when ``path`` is an archive (member ``""``) or lies inside one (member: the rest of the
    path, ``/``-separated); ``None`` for anything else — an existing file or folder, or nothing there."""
    path = Path(path)
    if is_archive(path):
        return path, ""
    if os.path.lexists(path):
        return None
    for above in path.parents:
        if os.path.lexists(above):
            if not is_archive(above):
                return None
            return above, path.relative_to(above).as_posix()
    return None


@dataclass(frozen=True)
class ArchiveIndex:
    """A checked archive's tree. ``folders``: member folder (``""``: the archive's top) → (sub-folder names, file
    names), both sorted; ``sizes``: member file → declared uncompressed size."""

    folders: dict[str, tuple[tuple[str, ...], tuple[str, ...]]]
    sizes: dict[str, int]


def _refuse(archive: Path, name: str, why: str, fix: str = _REMEDY) -> CtsegError:
    return CtsegError(f"archive {archive}: member {printable(name)} {why}; refused ({fix})")


def _check(archive: Path, info: zipfile.ZipInfo) -> list[str]:
    """The checked parts of one member's name (module docstring); raises for what is refused."""
    name = info.filename
    body = name[:-1] if name.endswith("/") else name
    if "\x00" in name:
        raise _refuse(archive, name, "has a NUL character in its name")
    if body.startswith(("/", "\\")) or _DRIVE.match(body):
        raise _refuse(archive, name, "has an absolute name (unpacked, it would land outside the folder)")
    parts = body.split("/")
    if any(p == ".." for p in re.split(r"[/\\]", body)):
        raise _refuse(archive, name, "climbs out of the archive's folder ('..' in its name)")
    if any(p in ("", ".") for p in parts):
        raise _refuse(archive, name, "has an empty or '.' part in its name")
    if len(parts) > MAX_DEPTH:
        raise _refuse(archive, name, f"nests folders over {MAX_DEPTH} deep")
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind == stat.S_IFLNK:
        raise _refuse(archive, name, "is a symbolic link (it could point anywhere)",
                      "a release holds plain files; " + _REMEDY)  # fmt: skip
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise _refuse(archive, name, "is a special file (device, pipe or socket), not a plain file")
    if info.flag_bits & 0x1:
        raise _refuse(archive, name, "is encrypted", "ctseg reads unencrypted archives; extract it yourself")
    size, packed = info.file_size, info.compress_size
    if size > MAX_MEMBER_BYTES:
        raise _refuse(archive, name, f"declares {size:,} bytes uncompressed, over the {MAX_MEMBER_BYTES:,} ctseg "
                      "reads from an archive (a zip bomb?)")  # fmt: skip
    stored = info.compress_type == zipfile.ZIP_STORED and size != packed and not name.endswith("/")
    if stored or (size > RATIO_FROM_BYTES and size > MAX_RATIO * max(packed, 1)):
        raise _refuse(archive, name, f"declares {size:,} bytes uncompressed from {packed:,} compressed, more than "
                      f"compression can produce (over {MAX_RATIO:,}:1; a zip bomb?)")  # fmt: skip
    return parts


def _index(archive: Path, infos: list[zipfile.ZipInfo]) -> ArchiveIndex:
    if len(infos) > MAX_MEMBERS:
        raise CtsegError(f"archive {archive} lists {len(infos):,} members, over the {MAX_MEMBERS:,} ctseg reads; "
                         f"refused ({_REMEDY})")  # fmt: skip
    dirs: dict[str, set[str]] = {"": set()}
    files: dict[str, set[str]] = {"": set()}
    sizes: dict[str, int] = {}
    for info in infos:
        parts = _check(archive, info)
        is_dir = info.filename.endswith("/") or stat.S_IFMT(info.external_attr >> 16) == stat.S_IFDIR
        for depth in range(len(parts) - (0 if is_dir else 1)):
            parent, folder = "/".join(parts[:depth]), "/".join(parts[: depth + 1])
            if folder in sizes:
                raise _refuse(archive, info.filename, f"puts a file {folder} where it needs a folder")
            dirs.setdefault(parent, set()).add(parts[depth])
            dirs.setdefault(folder, set())
            files.setdefault(folder, set())
        if not is_dir:
            name = "/".join(parts)
            if name in sizes or name in dirs:
                raise _refuse(archive, info.filename, "is named twice (or is both a file and a folder)")
            sizes[name] = info.file_size
            files.setdefault("/".join(parts[:-1]), set()).add(parts[-1])
    folders = {key: (tuple(sorted(sub)), tuple(sorted(files.get(key, ())))) for key, sub in dirs.items()}
    return ArchiveIndex(folders, sizes)


@functools.lru_cache(maxsize=8)
def _open(name: str, size: int, mtime: int, pid: int) -> tuple[zipfile.ZipFile, ArchiveIndex]:
    """The open archive and its index, per process (a forked child never shares the parent's file offset) and
    per version of the file (its size and time)."""
    path = Path(name)
    try:
        handle = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise CtsegError(f"archive {path} is not a readable zip file ({err}); {_REMEDY}") from None
    try:
        return handle, _index(path, handle.infolist())
    except BaseException:
        handle.close()
        raise


def _archive(archive: Path) -> tuple[zipfile.ZipFile, ArchiveIndex]:
    try:
        st = os.stat(archive)
    except OSError as err:
        raise CtsegError(f"cannot read archive {archive}: {err.strerror or err}") from None
    return _open(os.fspath(archive), st.st_size, st.st_mtime_ns, os.getpid())


def list_archive(archive: str | os.PathLike) -> ArchiveIndex:
    """The checked tree of ``archive`` (module docstring; kept open per process for the reads that follow).

    Raises:
        CtsegError: not a readable zip file, or a member that is refused (naming the archive and the member).
    """
    return _archive(Path(archive))[1]


@contextmanager
def open_member(archive: str | os.PathLike, name: str) -> Iterator[IO[bytes]]:
    """A binary stream of member ``name`` of ``archive`` (checked with :func:`list_archive`); a failure while
    reading it is one line naming ``archive/name``."""
    archive = Path(archive)
    handle, index = _archive(archive)
    where = f"{archive}/{name}"
    if name not in index.sizes:
        raise CtsegError(f"{where}: no such file in the archive")
    try:
        with handle.open(name) as stream:
            yield stream
    except NotImplementedError as err:  # Deflate64, and other methods Python's zipfile lacks
        raise CtsegError(f"cannot read {where}: {err}; extract the archive (unzip, 7-Zip) and pass the folder as "
                         "--src") from None  # fmt: skip
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:
        raise CtsegError(f"cannot read {where}: {err} (a damaged download?); {_REMEDY}") from None


def read_member(archive: str | os.PathLike, name: str) -> bytes:
    """All bytes of member ``name`` (at most its declared size, CRC checked)."""
    with open_member(archive, name) as stream:
        return stream.read()


def tiff_header_size(head: bytes) -> int | None:
    """How many of the first bytes of a TIFF hold its only directory and all the tag data it points to, when
    ``head`` holds them; ``None`` otherwise (not a TIFF, a second directory, data further on, a type not known)."""
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        size, count_format, offset_format = 12, "H", "I"
    elif head[:4] in (b"II+\x00", b"MM\x00+"):
        size, count_format, offset_format = 20, "Q", "Q"
    else:
        return None
    order = "<" if head[:1] == b"I" else ">"
    inline = struct.calcsize(offset_format)
    first = 4 if size == 12 else 8
    try:
        directory = struct.unpack_from(order + offset_format, head, first)[0]
        count = struct.unpack_from(order + count_format, head, directory)[0]
        start = directory + struct.calcsize(count_format)
        end = start + count * size + inline
        if end > len(head) or struct.unpack_from(order + offset_format, head, end - inline)[0] != 0:
            return None
        for entry in range(start, start + count * size, size):
            kind, values = struct.unpack_from(order + "H" + offset_format, head, entry + 2)
            if kind not in _TIFF_TYPES:
                return None
            length = _TIFF_TYPES[kind] * values
            if length > inline:
                end = max(end, struct.unpack_from(order + offset_format, head, entry + 4 + inline)[0] + length)
    except struct.error:
        return None
    return end if end <= len(head) else None


@contextmanager
def open_member_raster(archive: str | os.PathLike, name: str, *, header_only: bool = False) -> Iterator[DatasetReader]:
    """A rasterio dataset of member ``name``, read into memory and opened with the one allow-listed driver its
    first bytes name; a VRT or any other format is refused before GDAL sees a byte of it. ``header_only``: the
    dataset is for its size, bands, type and nodata only — a TIFF whose one directory lies in its first
    :data:`HEADER_BYTES` (:func:`tiff_header_size`) is opened from those, not decompressed whole."""
    from rasterio.errors import RasterioIOError
    from rasterio.io import MemoryFile

    from ctseg.safety.raster_policy import apply_gdal_guards

    where = Path(f"{Path(archive)}/{name}")
    with open_member(archive, name) as stream:
        data = stream.read(HEADER_BYTES)
        if not header_only or tiff_header_size(data) is None:
            data += stream.read()
    driver = raster_driver(where, data[:HEAD_BYTES])
    if driver == "VRT":
        raise CtsegError(f"{where} is a VRT, a list of other files to read; ctseg reads no VRT from an archive "
                         "(extract the archive and check the VRT's sources if you trust it)")  # fmt: skip
    if driver is None:
        raise RasterioIOError(f"'{where}' is not a {FORMAT_NAMES} file (the formats ctseg reads)")
    apply_gdal_guards()
    with MemoryFile(data) as memory, memory.open(driver=driver) as dataset:
        yield dataset
