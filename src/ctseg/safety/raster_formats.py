"""A raster's format by its first bytes: the allow-list of GDAL drivers ctseg reads with (:data:`READ_DRIVERS`:
GeoTIFF / COG, JPEG 2000, PNG, JPEG, BMP, GIF, WebP and VRT), the sniffing that picks one of them from a file's
first bytes (:func:`raster_driver`; XML or JSON that is not a VRT — a service or tile-index description — and a
binary file carrying a GDAL XML root are refused), and the check of the sidecar files GDAL opens with a raster
(:func:`check_sidecars`: ``.ovr`` / ``.msk`` must be TIFFs, ``.aux`` an HFA file). :mod:`ctseg.safety.rasters`
applies them to the raster handed to ctseg and to every local source a VRT names.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from ctseg.errors import CtsegError

__all__ = [
    "FORMAT_NAMES",
    "HEAD_BYTES",
    "READ_DRIVERS",
    "check_sidecars",
    "is_regular_file",
    "printable",
    "raster_driver",
    "read_head",
]

#: The GDAL drivers ctseg reads rasters with, by the format's first bytes (COGs are GeoTIFFs).
READ_DRIVERS = ("GTiff", "VRT", "JP2OpenJPEG", "PNG", "JPEG", "BMP", "GIF", "WEBP")
#: Bytes sniffed at a file's start (GDAL identifies formats from its first 1024).
HEAD_BYTES = 4096
#: The formats of :data:`READ_DRIVERS`, as messages name them.
FORMAT_NAMES = "GeoTIFF, JPEG 2000, PNG, JPEG, BMP, GIF, WebP or VRT"
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"II*\x00", "GTiff"),
    (b"MM\x00*", "GTiff"),
    (b"II+\x00", "GTiff"),  # BigTIFF
    (b"MM\x00+", "GTiff"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JP2OpenJPEG"),
    (b"\xffO\xffQ", "JP2OpenJPEG"),  # a raw JPEG 2000 codestream (.j2k)
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
)
#: Roots of GDAL's XML formats that GDAL may find anywhere in a file's first bytes: never inside a raster.
_POINTER_MARKERS = (
    b"<vrtdataset", b"<gdal_wms", b"<gdal_wmts", b"<wcs_gdal", b"<gdaltileindexdataset", b"<ogrvrtdatasource",
    b"<wmt_ms_capabilities", b"<wms_capabilities", b"<mrf_meta", b"<table_of_contents", b"<dimap_document",
)  # fmt: skip
_SIDECARS: tuple[tuple[str, tuple[str, ...]], ...] = ((".ovr", ("GTiff",)), (".OVR", ("GTiff",)),
                                                      (".msk", ("GTiff",)), (".MSK", ("GTiff",)))  # fmt: skip


def printable(text: str, limit: int = 200) -> str:
    """A source as one printable line (control characters escaped, long ones cut)."""
    text = text.strip()
    shown = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def read_head(path: Path, size: int = HEAD_BYTES) -> bytes:
    """The first ``size`` bytes of ``path``, which tell its format."""
    with open(path, "rb") as fh:
        return fh.read(size)


def _text_start(head: bytes) -> bytes:
    """The bytes after a UTF-8 BOM and leading whitespace."""
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:]
    return head.lstrip(b" \t\r\n\f\v")


def _xml_root(head: bytes) -> str:
    """The root element's name of XML starting in ``head`` (after prolog and comments), or ``?``."""
    found = re.search(rb"<([A-Za-z_][\w.:\-]*)", re.sub(rb"<[?!][^>]*>", b"", head))
    return found.group(1).decode("ascii", "replace") if found else "?"


def raster_driver(path: Path, head: bytes | None = None) -> str | None:
    """The allow-listed GDAL driver for ``path`` by its first bytes; ``None`` for anything else.

    Raises :class:`CtsegError` for a service, tile-index or other description (XML or JSON that is not a VRT)
    and for a binary file that carries a GDAL XML root in its first bytes (GDAL could take it for that).
    """
    head = read_head(path) if head is None else head
    start = _text_start(head)
    low = head.lower()
    if start.startswith(b"<"):
        root = _xml_root(start)
        if root.lower() == "vrtdataset":
            return "VRT"
        raise CtsegError(
            f"{path} is a <{printable(root, 40)}> XML description, not a raster: ctseg follows no service, tile "
            "index or file list from a handed file; download or convert the data and pass the raster itself"
        )
    if start.startswith((b"{", b"[")):
        raise CtsegError(
            f"{path} is JSON (a STAC item, tile index or service description?), not a raster: ctseg follows no "
            "address or file list from a handed file; download or convert the data and pass the raster itself"
        )
    marker = next((m for m in _POINTER_MARKERS if m in low), None)
    if marker is not None:
        raise CtsegError(
            f"{path} holds a GDAL description ({marker.decode()}…) inside its first bytes, which GDAL could "
            "follow instead of reading pixels; refused (re-save the raster with gdal_translate)"
        )
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    for magic, driver in _MAGIC:
        if head.startswith(magic):
            return driver
    return None


def is_regular_file(path: Path) -> bool:
    """True for a regular file (symbolic links followed); ``False`` for anything else, or nothing there."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def check_sidecars(path: Path, what: str) -> None:
    """The overview / mask / .aux files GDAL opens with ``path`` (with any driver) must be what GDAL writes."""
    name = os.fspath(path)
    candidates = [(Path(name + suffix), drivers) for suffix, drivers in _SIDECARS]
    candidates += [(Path(name + ".aux"), ()), (path.with_suffix(".aux"), ())]
    for sidecar, drivers in candidates:
        try:
            head = read_head(sidecar) if is_regular_file(sidecar) else None
        except OSError:  # unreadable for GDAL too
            head = None
        if not head:  # none, or empty: nothing for GDAL to open
            continue
        if not drivers:  # .aux: an HFA (Erdas Imagine) file
            if head.startswith(b"EHFA_HEADER_TAG"):
                continue
        else:
            try:
                if raster_driver(sidecar, head) in drivers:
                    continue
            except CtsegError:
                pass
        raise CtsegError(
            f"{sidecar}, beside {what} {path}, is not the TIFF overview / mask or HFA .aux GDAL writes, and "
            "GDAL would open it with the raster; remove it (or rebuild overviews with gdaladdo)"
        )
