"""Vector files (``ctseg prepare vector``'s labels and ``--extent``): polygons and attributes, never directions.

GDAL reads far more vector formats than polygons in a file: an OGR VRT (``<OGRVRTDataSource>``) names other
datasets, a ``.json`` may be a service description, a connection string (``PG:``, ``WFS:``) contacts a server.
ctseg reads labels only from the four file formats people hand around, picked by the file's first bytes
(:func:`vector_driver`) before GDAL (through pyogrio) opens it, and checks GDAL chose that same driver:

* **GeoPackage** — an SQLite file (``SQLite format 3``) whose application id is ``GPKG`` (or a ``.gpkg`` name);
* **GeoJSON** — a ``.geojson`` / ``.json`` text starting with ``{``;
* **Shapefile** — a ``.shp`` starting with the file code 9994 (GDAL reads its ``.shx`` / ``.dbf`` / ``.prj``
  sidecars of the same name beside it);
* **FlatGeobuf** — a file starting with ``fgb``.

A path that is not a local regular file (a URL, ``/vsicurl/``, a folder of Shapefiles) is refused. A file must
hold exactly one layer with geometries. Every refusal, and every read error, is one :class:`CtsegError` line
naming the file. (``ctseg predict --aoi`` reads its polygons through :mod:`ctseg.safety.aoi`.)
"""

from __future__ import annotations

import os
import stat
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ctseg.errors import CtsegError

__all__ = ["VECTOR_FORMATS", "layer_info", "read_features", "vector_driver"]

#: GDAL driver → what messages call it: the vector formats ctseg reads labels from.
VECTOR_FORMATS = {"GPKG": "GeoPackage", "GeoJSON": "GeoJSON", "ESRI Shapefile": "Shapefile", "FlatGeobuf": "FlatGeobuf"}
_NAMES = "a GeoPackage, GeoJSON, Shapefile (.shp) or FlatGeobuf file"
_CONVERT = "convert it with ogr2ogr (e.g. ogr2ogr labels.gpkg INPUT)"


def _head(path: Path, size: int = 100) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(size)


def vector_driver(path: str | os.PathLike, what: str = "labels file") -> str:
    """The GDAL driver :data:`VECTOR_FORMATS` names for ``path``'s first bytes, or one line saying why not."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except OSError:
        raise CtsegError(f"{what} {path} does not exist; give {_NAMES}") from None
    if not stat.S_ISREG(mode):
        raise CtsegError(f"{what} {path} is not a file; give {_NAMES} (a Shapefile as its .shp)")
    try:
        head = _head(path)
    except OSError as err:
        raise CtsegError(f"cannot read {what} {path}: {err.strerror or err}") from None
    suffix = path.suffix.lower()
    if head.startswith(b"SQLite format 3\x00"):
        if head[68:72] in (b"GPKG", b"GP10", b"GP11") or suffix == ".gpkg":
            return "GPKG"
        raise CtsegError(f"{what} {path} is an SQLite database but not a GeoPackage; {_CONVERT}")
    if head[:3] == b"fgb" and head[4:7] == b"fgb":
        return "FlatGeobuf"
    if head[:4] == b"\x00\x00\x27\x0a" and suffix == ".shp":
        return "ESRI Shapefile"
    if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{") and suffix in (".geojson", ".json"):
        return "GeoJSON"
    raise CtsegError(f"{what} {path} is not {_NAMES} (by its first bytes and name); {_CONVERT}")


def _reading(path: Path, what: str, err: Exception) -> CtsegError:
    text = " ".join(str(err).split()) or type(err).__name__
    return CtsegError(f"cannot read {what} {path}: {text[:300]}")


def layer_info(path: str | os.PathLike, what: str = "labels file") -> dict[str, Any]:
    """pyogrio's ``read_info`` of the file's one layer with geometries (``layer`` added), after
    :func:`vector_driver`; the driver GDAL chose must be the sniffed one."""
    import pyogrio

    path = Path(path)
    driver = vector_driver(path, what)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            layers = [str(name) for name, kind in pyogrio.list_layers(path) if kind is not None]
            if len(layers) != 1:
                found = ", ".join(layers) if layers else "none"
                raise CtsegError(
                    f"{what} {path} holds {len(layers)} layers with geometries ({found}); ctseg reads a file of one "
                    "layer: write the one you mean into a file of its own (ogr2ogr out.gpkg IN LAYER)"
                )
            info = dict(pyogrio.read_info(path, layer=layers[0]))
    except CtsegError:
        raise
    except Exception as err:  # the user's file is at fault
        raise _reading(path, what, err) from None
    if info.get("driver") != driver:
        raise CtsegError(
            f"{what} {path} looks like a {VECTOR_FORMATS[driver]} file but GDAL reads it as {info.get('driver')}; "
            f"{_CONVERT}"
        )
    info["layer"] = layers[0]
    return info


def read_features(
    path: str | os.PathLike,
    layer: str,
    columns: Sequence[str],
    *,
    bbox: tuple[float, float, float, float] | None = None,
    skip: int = 0,
    count: int | None = None,
    geometry: bool = True,
    what: str = "labels file",
) -> tuple[Any, Any, list[Any]]:
    """(feature ids, WKB geometries or ``None``, one array per column) of the features of ``layer`` whose
    envelope meets ``bbox`` (in the layer's CRS; ``None``: all), ``skip`` / ``count`` of them; read errors are
    one line naming the file."""
    import pyogrio.raw

    path = Path(path)
    vector_driver(path, what)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, fids, wkb, fields = pyogrio.raw.read(
                path, layer=layer, columns=list(columns), read_geometry=geometry, bbox=bbox,
                skip_features=skip, max_features=count, return_fids=True,
            )  # fmt: skip
    except Exception as err:  # the user's file is at fault
        raise _reading(path, what, err) from None
    return fids, wkb, list(fields)
