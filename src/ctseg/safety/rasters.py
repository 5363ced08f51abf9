"""Raster inputs: a handed raster is pixels, never a list of other places to read.

**What it guards.** GDAL opens far more than pixels. A VRT is an XML list of other datasets to read — any file
on the machine (``/etc/passwd``, ``~/.ssh/…``), any address (``/vsicurl/http://…``, ``/vsis3/…``, ``WMS:…``) —
and GDAL recognises it by its bytes, not its suffix, so a ``scene.tif`` may be one. Other GDAL formats are
service or file descriptions too (``<GDAL_WMS>``, ``<GDAL_WMTS>``, ``<WCS_GDAL>``, tile indexes, STAC JSON), a
VRT band may run Python (a pixel function) or read any file's raw bytes (``VRTRawRasterBand``), and GDAL opens
sidecar files (``x.tif.ovr``, ``x.tif.msk``, ``x.aux``) with any driver. A crafted raster handed to
``ctseg predict`` / ``vectorize`` / ``evaluate`` / ``prepare`` could thus make ctseg contact the network or
read files outside what the user named.

**What it does.** :func:`open_raster` is the only place ctseg opens a raster it reads. Before GDAL sees the file:

* its first bytes pick the format from an allow-list (GeoTIFF / COG, JPEG 2000, PNG, JPEG, BMP, GIF, WebP and
  VRT, :data:`READ_DRIVERS`), and the file is opened with exactly that GDAL driver (``rasterio.open(path,
  driver=…)``: rasterio 1.4 takes one name there, not a list); XML or JSON that is not a VRT (a service or
  tile-index description) and anything unrecognised are refused;
* a VRT — recognised by ``<VRTDataset`` in its first bytes whatever its suffix, possibly after a BOM or
  whitespace — is parsed with :mod:`xml.etree.ElementTree` from at most :data:`MAX_VRT_BYTES` (no DOCTYPE or
  entity declaration allowed, so nothing is expanded), and every place it names a dataset is checked,
  recursively through nested VRTs (:data:`MAX_DEPTH` deep; inline ``<VRTDataset>`` strings and ``vrt://``
  too): ``SourceFilename`` in every source kind (simple, complex, averaged, kernel-filtered, no-data-from-mask,
  multidimensional), ``<Overview>`` and ``<MaskBand>`` sources, a warped VRT's ``SourceDataset``, pansharpened
  and processed inputs, and metadata / option values whose key names a dataset (``X_DATASET``, ``RPC_DEM`` …);
  the ``relativeToVRT`` attribute is honoured as GDAL reads it (relative to the VRT's folder, else to the
  current folder). Element and attribute names are compared without case, as GDAL does;
* a source on the network (a ``/vsicurl/``, ``/vsis3/``, ``/vsigs/``, ``/vsiaz/``, ``/vsiadls/``,
  ``/vsioss/``, ``/vsiswift/``, ``/vsihdfs/``, ``/vsiwebhdfs/`` path, a URL, a network connection string such
  as ``WMS:`` / ``WCS:`` / ``PG:``) is refused unless the user allows it (``--allow-remote``); a network
  marker anywhere in the VRT's text is refused the same way;
* a local source must resolve (symbolic links followed) inside the folder of the VRT the user named; other
  local forms that cannot be confined (``/vsizip/``, ``/vsimem/``, driver connection strings such as
  ``NETCDF:``) count as outside. Both are refused unless the user allows it (``--allow-outside``);
* each local source must itself be one of the allowed formats (a nested VRT is walked); a Python pixel
  function and a raw band are refused whatever the flags (ctseg runs no code from a file);
* sidecars GDAL would open with a raster (``.ovr`` / ``.msk`` must be TIFFs, ``.aux`` an HFA file) are checked.

Each refusal is one :class:`~ctseg.errors.CtsegError` line naming the VRT, the source and the way to allow it.

The format sniffing and the sidecar check live in :mod:`ctseg.safety.raster_formats`, what the user allows and
GDAL's own guards in :mod:`ctseg.safety.raster_policy`; their public names are importable from here too.

Not covered: a raster path named on the command line itself (``/vsicurl/…``, a URL): that is the user's choice;
with ``--allow-remote`` a remote source is not read before GDAL opens it, so what it names in turn is allowed
with it.
"""

from __future__ import annotations

import os
import re
import stat
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ctseg.errors import CtsegError
from ctseg.safety.raster_formats import (
    FORMAT_NAMES,
    READ_DRIVERS,
    check_sidecars,
    is_regular_file,
    printable,
    raster_driver,
)
from ctseg.safety.raster_formats import read_head as _head  # every sniff here goes through this one name
from ctseg.safety.raster_policy import (
    GDAL_GUARDS,
    SourcePolicy,
    allowing,
    apply_gdal_guards,
    current_policy,
    set_policy,
)

if TYPE_CHECKING:
    from rasterio.io import DatasetReader

__all__ = [
    "GDAL_GUARDS",
    "MAX_DEPTH",
    "MAX_VRT_BYTES",
    "READ_DRIVERS",
    "SourcePolicy",
    "allowing",
    "apply_gdal_guards",
    "check_raster",
    "current_policy",
    "open_raster",
    "raster_driver",
    "set_policy",
]

#: Largest VRT read (bytes); a mosaic of tens of thousands of tiles is a few MiB.
MAX_VRT_BYTES = 16 * 1024 * 1024
#: How deep VRTs may name VRTs.
MAX_DEPTH = 8
#: GDAL's virtual file systems that reach the network (prefixes; ``_streaming`` variants included).
_NETWORK_VSI = ("/vsicurl", "/vsis3", "/vsigs", "/vsiaz", "/vsiadls", "/vsioss", "/vsiswift", "/vsihdfs",
                "/vsiwebhdfs")  # fmt: skip
#: GDAL connection-string prefixes (``NAME:…``) of drivers that contact a server.
_NETWORK_PREFIXES = frozenset(
    "wms wmts wcs wfs csw pg postgresql eedai eeda daas ngw plscenes plmosaic ogcapi stacit stacta http https ftp "
    "georaster oci mysql mssql odbc mongodb mongodbv3 couchdb carto cartodb elastic es amigocloud gft sde ecwp "
    "jpip".split()
)
_CONNECTION = re.compile(r"^([A-Za-z][A-Za-z0-9_]+):")  # two letters or more: not a Windows drive
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
#: Elements whose text names a dataset (lower case, as compared).
_FILE_TAGS = frozenset({"sourcefilename", "sourcedataset"})
#: Metadata / option keys (``<MDI key=…>``, ``<Option name=…>``) whose value GDAL opens as a dataset: geolocation
#: arrays and the RPC transformer's elevation model.
_FILE_KEYS = frozenset({"x_dataset", "y_dataset", "rpc_dem", "geoloc_array", "src_geoloc_array", "dst_geoloc_array"})


# ------------------------------------------------------------------------------------------------ the walk
@dataclass
class _Walk:
    """One check: the VRT the user named, its folder (resolved) and the policy."""

    top: Path
    root: Path
    policy: SourcePolicy
    seen: set[Path] = field(default_factory=set)  # files already checked (resolved)
    named: set[tuple[Path, str]] = field(default_factory=set)  # (base, text) already checked: 10,000s of tiles

    def refuse(self, vrt: Path | str, source: str, why: str, allow: str) -> CtsegError:
        where = f"VRT {vrt}" if str(vrt) == str(self.top) else f"VRT {vrt} (inside {self.top})"
        return CtsegError(f"{where} names {printable(source)}, {why}; {allow}")


def _atoi(text: str | None) -> int:
    """C's ``atoi`` (how GDAL reads ``relativeToVRT``)."""
    found = re.match(r"\s*([+-]?\d+)", text or "")
    return int(found.group(1)) if found else 0


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1].lower() if isinstance(tag, str) else ""


def _attr(elem: ET.Element, name: str) -> str | None:
    for key, value in elem.attrib.items():
        if _local(key) == name:
            return value
    return None


def _parse_vrt(data: bytes, vrt: Path | str) -> ET.Element:
    low = data.lower()
    if b"<!doctype" in low or b"<!entity" in low:
        raise CtsegError(f"VRT {vrt} declares a DOCTYPE or entities, which a VRT never needs; refused")
    try:
        parser = ET.XMLParser()
        parser.feed(data)
        return parser.close()
    except ET.ParseError as err:
        raise CtsegError(f"VRT {vrt} is not well-formed XML ({err}); refused before GDAL reads it") from None


def _read_vrt(path: Path, walk: _Walk) -> ET.Element:
    with open(path, "rb") as fh:
        data = fh.read(MAX_VRT_BYTES + 1)
    if len(data) > MAX_VRT_BYTES:
        raise CtsegError(
            f"VRT {path} is over {MAX_VRT_BYTES >> 20} MiB; ctseg reads VRTs up to that size (split the mosaic, "
            "or build a GeoTIFF / COG of it with gdal_translate)"
        )
    return _parse_vrt(data, path)


def _walk_tree(root: ET.Element, vrt: Path | str, base: Path, walk: _Walk, depth: int) -> None:
    """Check every element of a parsed VRT; ``base``: the folder ``relativeToVRT`` sources are relative to."""
    if _local(root.tag) != "vrtdataset":
        raise CtsegError(f"{vrt}: root element <{_local(root.tag)}>, not <VRTDataset>; refused")
    for elem in root.iter():
        tag = _local(elem.tag)
        texts = [elem.text or ""] + [child.tail or "" for child in elem]
        for value in [*texts, *elem.attrib.values()]:
            low = value.lower()
            hit = next((m for m in _NETWORK_VSI if m in low), None)
            if hit is not None and not walk.policy.allow_remote:
                raise walk.refuse(vrt, value, "a network source", "pass --allow-remote if you trust it")
        if _local(_attr(elem, "subclass") or "") == "vrtrawrasterband":
            raise CtsegError(
                f"VRT {vrt} has a raw band (VRTRawRasterBand), which reads any file's bytes as pixels; ctseg "
                "reads no raw band from a VRT (make a GeoTIFF of it with gdal_translate where you trust it)"
            )
        if tag == "pixelfunctioncode" or (tag == "pixelfunctionlanguage" and (elem.text or "").strip().lower()
                                          not in ("", "c")):  # fmt: skip
            raise CtsegError(
                f"VRT {vrt} has a Python pixel function; ctseg never runs code from a file (compute the band "
                "yourself, or make a GeoTIFF of the VRT with gdal_translate where you trust it)"
            )
        key = _attr(elem, "key") or _attr(elem, "name")
        if tag in _FILE_TAGS or (tag in ("mdi", "option") and (key or "").strip().lower() in _FILE_KEYS):
            if len(elem):
                raise CtsegError(f"VRT {vrt}: <{tag}> holds elements, not a file name; refused")
            relative = _atoi(_attr(elem, "relativetovrt")) != 0
            text = "".join(texts)
            for value in {text, text.strip()}:
                if value.strip():
                    _check_source(value, vrt, base if relative else Path.cwd(), walk, depth)


def _check_source(value: str, vrt: Path | str, base: Path, walk: _Walk, depth: int) -> None:
    """One named dataset: network, other GDAL forms, or a local path under the top VRT's folder."""
    text = value.strip()
    low = text.lower()
    policy = walk.policy
    remote = any(m in low for m in _NETWORK_VSI)
    if low.startswith("vrt://"):
        remote = remote or bool(_URL.search(text[6:]))
    else:
        remote = remote or bool(_URL.search(text))
    found = _CONNECTION.match(text)
    if found and found.group(1).lower() in _NETWORK_PREFIXES:
        remote = True
    if remote:
        if not policy.allow_remote:
            raise walk.refuse(vrt, value, "a network source", "pass --allow-remote if you trust it")
        if "header_file" in low and not policy.allow_outside:
            raise walk.refuse(vrt, value, "which reads HTTP headers from a local file",
                              "pass --allow-outside too if you trust it")  # fmt: skip
        return
    # vrt://PATH?… and inline <VRTDataset> XML: relative paths inside may be taken from the VRT's folder or
    # from the current one, depending on the GDAL version; both must pass.
    if low.startswith("vrt://"):
        inner = text[6:].split("?", 1)[0]
        for folder in {base, Path.cwd()} if inner else ():
            _check_source(inner, vrt, folder, walk, depth)
        return
    if text.startswith("<"):
        if depth >= MAX_DEPTH:
            raise walk.refuse(vrt, value, f"VRTs nested more than {MAX_DEPTH} deep", "flatten the mosaic")
        tree = _parse_vrt(text.encode("utf-8"), vrt)
        for folder in {base, Path.cwd()}:
            _walk_tree(tree, vrt, folder, walk, depth + 1)
        return
    if low.startswith("/vsi") or found is not None:
        kind = "a GDAL virtual file path" if low.startswith("/vsi") else "a GDAL connection string"
        if not policy.allow_outside:
            raise walk.refuse(vrt, value, f"{kind} that ctseg cannot confine to the VRT's folder {walk.root}",
                              "pass --allow-outside if you trust it")  # fmt: skip
        return
    for variant in {value, text, text.replace("\\", "/")}:
        _check_path(variant, vrt, base, walk, depth)


def _check_path(value: str, vrt: Path | str, base: Path, walk: _Walk, depth: int) -> None:
    if not value or "\x00" in value:
        raise walk.refuse(vrt, value, "not a file name", "fix the VRT")
    if (base, value) in walk.named:
        return
    walk.named.add((base, value))
    path = Path(base, value)
    real = Path(os.path.realpath(path))
    if real != walk.root and walk.root not in real.parents and not walk.policy.allow_outside:
        how = "" if Path(value).is_absolute() or base != Path.cwd() else " (relativeToVRT=0: the current folder's)"
        raise walk.refuse(vrt, value, f"outside the VRT's folder {walk.root}{how}",
                          "pass --allow-outside if you trust it (or move the file under that folder)")  # fmt: skip
    try:
        mode = os.stat(real).st_mode
    except OSError:
        return  # nothing there: GDAL cannot open it either (and says so when it reads)
    if not stat.S_ISREG(mode):
        raise walk.refuse(vrt, value, "which is not a regular file", "name raster files only")
    if real in walk.seen:
        return
    walk.seen.add(real)
    try:
        driver = raster_driver(real, _head(real))
        tree = _read_vrt(real, walk) if driver == "VRT" and depth < MAX_DEPTH else None
    except OSError:
        return  # unreadable: GDAL cannot read it either
    except CtsegError as err:
        raise CtsegError(f"VRT {vrt} names {printable(value)}: {err}") from None
    if driver == "VRT":
        if tree is None:
            raise walk.refuse(vrt, value, f"VRTs nested more than {MAX_DEPTH} deep", "flatten the mosaic")
        _walk_tree(tree, path, path.parent, walk, depth + 1)
    elif driver is None:
        raise walk.refuse(vrt, value, f"which is not a {FORMAT_NAMES} file",
                          "convert it to a GeoTIFF with gdal_translate")  # fmt: skip
    check_sidecars(real, "source")


# ---------------------------------------------------------------------------------------------- public API
def check_raster(path: str | os.PathLike, policy: SourcePolicy | None = None) -> str | None:
    """Check a raster file before GDAL opens it; returns its GDAL driver (``None``: not an allowed format).

    A VRT's sources are walked (see the module's docstring) under ``policy`` (default: the current one).
    Raises :class:`CtsegError` (one line) for what is refused. A path that is not a local regular file is not
    checked (``None``): GDAL gets it as named.
    """
    path = Path(path)
    if not is_regular_file(path):
        return None
    head = _head(path)
    driver = raster_driver(path, head)
    if driver == "VRT":
        walk = _Walk(path, Path(os.path.realpath(path.absolute().parent)), policy or current_policy())
        walk.seen.add(Path(os.path.realpath(path)))
        _walk_tree(_read_vrt(path, walk), path, path.absolute().parent, walk, 0)
    if driver is not None:
        check_sidecars(path, "raster")
    return driver


def open_raster(path: str | os.PathLike, policy: SourcePolicy | None = None) -> DatasetReader:
    """``rasterio.open`` for reading, after :func:`check_raster`, with the one driver the file's bytes name.

    A file in no allowed format raises ``rasterio.errors.RasterioIOError`` (as GDAL's "not recognized" would),
    so callers report it like any unreadable raster; a path that is not a local file is opened as named.
    """
    import rasterio
    from rasterio.errors import RasterioIOError

    apply_gdal_guards()
    try:
        driver = check_raster(path, policy)
    except OSError as err:  # reported like GDAL's own "cannot open"
        raise RasterioIOError(f"{os.fspath(path)}: {err.strerror or err}") from None
    if driver is None:
        if is_regular_file(Path(path)):
            raise RasterioIOError(f"'{os.fspath(path)}' is not a {FORMAT_NAMES} file (the formats ctseg reads)")
        return rasterio.open(path)
    return rasterio.open(path, driver=driver)
