"""Areas of interest handed to ctseg (``ctseg predict --aoi``): polygons and their CRS from a vector file, nothing else.

**What is read.** The format is taken from the file's first bytes, never its suffix:

* GeoJSON (text starting with ``{``) is parsed by ctseg itself within the bounds of
  :func:`ctseg.safety.documents.parse_json` — a ``FeatureCollection``, a ``Feature`` or a bare geometry — and
  its geometries built with shapely; its CRS is the legacy ``crs`` member where there is one, else WGS 84
  longitude / latitude (RFC 7946);
* a GeoPackage (``SQLite format 3``), an ESRI Shapefile (``.shp`` magic; its ``.shx`` / ``.dbf`` / ``.prj``
  beside it) or a FlatGeobuf file is read with pyogrio (GDAL's driver for that format only), geometries only,
  first layer; its CRS is the layer's.

Polygons and multipolygons are kept (other geometries are ignored; a file with none is refused). Anything else
(XML — KML, GML, an OGR VRT that names other files —, CSV, a service description) is refused in one line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ctseg.errors import CtsegError
from ctseg.safety.documents import MAX_BYTES, parse_json
from ctseg.safety.raster_formats import is_regular_file, printable, read_head

__all__ = ["AOI_FORMATS", "Aoi", "read_aoi"]

#: The formats :func:`read_aoi` reads, as messages name them.
AOI_FORMATS = "GeoJSON, GeoPackage, Shapefile or FlatGeobuf"
_MAGIC = ((b"SQLite format 3\x00", "GeoPackage"), (b"\x00\x00\x27\x0a", "Shapefile"), (b"fgb\x03", "FlatGeobuf"))


@dataclass(frozen=True)
class Aoi:
    """Polygons (shapely) of an area of interest and their CRS (``None``: the file records none)."""

    polygons: tuple
    crs: str | None
    path: Path


def _polygons(geoms, path: Path) -> tuple:
    from shapely.geometry import MultiPolygon, Polygon

    found = []
    for geom in geoms:
        parts = getattr(geom, "geoms", None)
        for part in [geom] if parts is None or isinstance(geom, MultiPolygon) else list(parts):
            if isinstance(part, (Polygon, MultiPolygon)) and not part.is_empty:
                found.append(part if part.is_valid else part.buffer(0))
    if not found:
        raise CtsegError(f"--aoi {path} holds no polygon; give the area of interest as (multi)polygons")
    return tuple(found)


def _geojson(path: Path) -> Aoi:
    from shapely.geometry import shape

    with open(path, "rb") as fh:
        data = fh.read(MAX_BYTES + 1)
    doc = parse_json(data, f"--aoi {path}", fix="give GeoJSON")
    if not isinstance(doc, dict):
        raise CtsegError(f"--aoi {path} is JSON but not GeoJSON (no object at its top)")
    kind = doc.get("type")
    if kind == "FeatureCollection":
        objects = [f.get("geometry") for f in doc.get("features") or [] if isinstance(f, dict)]
    elif kind == "Feature":
        objects = [doc.get("geometry")]
    else:
        objects = [doc]
    geoms = []
    for obj in objects:
        if obj is None:
            continue
        try:
            geoms.append(shape(obj))
        except Exception as err:  # shapely raises several kinds for a malformed geometry
            raise CtsegError(f"--aoi {path}: a geometry cannot be read ({printable(str(err), 100)})") from None
    crs = "EPSG:4326"
    member = doc.get("crs")
    if isinstance(member, dict) and isinstance(member.get("properties"), dict):
        name = member["properties"].get("name")
        crs = str(name) if name else crs
    return Aoi(_polygons(geoms, path), crs, path)


def _ogr(path: Path, kind: str) -> Aoi:
    import pyogrio
    import shapely

    try:
        meta, _, wkb, _ = pyogrio.raw.read(path, read_geometry=True, columns=[])
    except Exception as err:  # pyogrio's errors (DataSourceError, ...) and GDAL's
        raise CtsegError(f"--aoi {path} cannot be read as a {kind} ({printable(str(err), 120)})") from None
    geoms = [g for g in shapely.from_wkb(wkb) if g is not None] if wkb is not None else []
    return Aoi(_polygons(geoms, path), meta.get("crs") or None, path)


def read_aoi(path: str | os.PathLike) -> Aoi:
    """The polygons and CRS of the vector file ``path`` (module docstring); one line for what is refused."""
    path = Path(path)
    if not is_regular_file(path):
        raise CtsegError(f"--aoi {path} does not exist or is not a file")
    head = read_head(path, 64)
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if start.startswith(b"{"):
        return _geojson(path)
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return _ogr(path, kind)
    raise CtsegError(f"--aoi {path} is not a {AOI_FORMATS} file (by its first bytes); convert it, e.g. with "
                     "ogr2ogr -f GPKG aoi.gpkg FILE")  # fmt: skip
