"""GIS-friendly outputs: the sidecars of a class map ``<stem>_pred.tif`` (what QGIS, ArcGIS and GDAL read beside
it), and the frame of the outputs of an input without georeference.

* ``<stem>_pred.tif.aux.xml`` — GDAL's PAM file (Persistent Auxiliary Metadata), where its GeoTIFF driver keeps
  what a TIFF tag cannot hold: the **category names** of band 1 (pixel value ``v`` is named by the ``v``-th entry;
  the values between the last class and the nodata value have empty names) and a thematic **raster attribute
  table** (``Value`` / ``Class_Name`` / ``Red`` / ``Green`` / ``Blue`` / ``Alpha``, with GDAL's field usages), one
  row per class and one named ``nodata`` (alpha 0) when the map has nodata. ``gdalinfo`` lists both; QGIS
  names the classes in its identify tool and, from the table, in its legend; ArcGIS reads the table.
* ``<stem>_pred.qml`` — a QGIS layer style, loaded automatically by QGIS for the raster of the same stem: a
  paletted renderer with every class's colour and name (the nodata value transparent).

An input without georeference (a PNG / JPEG, a GeoTIFF with neither CRS nor geotransform) is drawn by QGIS with
pixel row ``r`` at ``y = −r``; its outputs get that frame as their geotransform (:func:`output_georef`, no CRS),
so that class map, probabilities, confidence and ``--vector`` polygons lie upright on the image.

Both sidecars are XML built with :mod:`xml.etree.ElementTree` (names escaped; characters XML 1.0 cannot hold become
U+FFFD) and written into the caller's staging folder, like every output of ``ctseg predict``, or atomically.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from ctseg.data.definitions import DatasetInfo
from ctseg.io import atomic_path
from ctseg.predict.failures import write_error

__all__ = [
    "GFT",
    "GFU",
    "NODATA_NAME",
    "QGIS_VERSION",
    "aux_xml",
    "category_names",
    "georef_warning",
    "output_georef",
    "qml",
    "sidecar_paths",
    "upright_transform",
    "write_class_sidecars",
]

#: GDAL's ``GDALRATFieldUsage`` codes used by the attribute table.
GFU = {"Generic": 0, "PixelCount": 1, "Name": 2, "Min": 3, "Max": 4, "MinMax": 5, "Red": 6, "Green": 7,
       "Blue": 8, "Alpha": 9}  # fmt: skip
#: GDAL's ``GDALRATFieldType`` codes.
GFT = {"Integer": 0, "Real": 1, "String": 2}
#: The QGIS version the style file declares (any QGIS 3 reads it).
QGIS_VERSION = "3.28.0-Firenze"
#: Name of the nodata value's category, table row and palette entry.
NODATA_NAME = "nodata"
#: The attribute table's columns: (name, type, usage).
_COLUMNS = (("Value", "Integer", "MinMax"), ("Class_Name", "String", "Name"), ("Red", "Integer", "Red"),
            ("Green", "Integer", "Green"), ("Blue", "Integer", "Blue"), ("Alpha", "Integer", "Alpha"))  # fmt: skip
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _text(name: str) -> str:
    """``name`` with the characters XML 1.0 cannot hold replaced by U+FFFD."""
    return _NOT_XML.sub("\ufffd", str(name))


def _entries(info: DatasetInfo, nodata: int | None) -> list[tuple[int, str, tuple[int, int, int], int]]:
    """(value, name, (r, g, b), alpha) of every class, and of the nodata value (``nodata``, transparent)."""
    lut = info.palette()
    rows = [(i, _text(name), tuple(int(c) for c in lut[i]), 255) for i, name in enumerate(info.classes)]
    if nodata is not None:
        rows.append((int(nodata), NODATA_NAME, (0, 0, 0), 0))
    return rows


def category_names(info: DatasetInfo, nodata: int | None) -> list[str]:
    """GDAL's category names of the class map: entry ``v`` names pixel value ``v``."""
    names = [_text(n) for n in info.classes]
    if nodata is not None:
        names += [""] * (int(nodata) - len(names)) + [NODATA_NAME]
    return names


def _sub(parent: ET.Element, tag: str, text: object = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrs)
    if text is not None:
        element.text = str(text)
    return element


def aux_xml(info: DatasetInfo, nodata: int | None) -> bytes:
    """The PAM document of the class map (module docstring), UTF-8."""
    root = ET.Element("PAMDataset")
    band = _sub(root, "PAMRasterBand", band="1")
    categories = _sub(band, "CategoryNames")
    for name in category_names(info, nodata):
        _sub(categories, "Category", name)
    table = _sub(band, "GDALRasterAttributeTable", tableType="thematic")
    for i, (name, kind, usage) in enumerate(_COLUMNS):
        field = _sub(table, "FieldDefn", index=str(i))
        _sub(field, "Name", name)
        _sub(field, "Type", GFT[kind])
        _sub(field, "Usage", GFU[usage])
    for row, (value, name, (r, g, b), alpha) in enumerate(_entries(info, nodata)):
        element = _sub(table, "Row", index=str(row))
        for cell in (value, name, r, g, b, alpha):
            _sub(element, "F", cell)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=False) + b"\n"


def qml(info: DatasetInfo, nodata: int | None) -> bytes:
    """The QGIS style of the class map (module docstring), UTF-8."""
    root = ET.Element("qgis", version=QGIS_VERSION, styleCategories="Symbology")
    pipe = _sub(root, "pipe")
    renderer = _sub(pipe, "rasterrenderer", type="paletted", band="1", opacity="1", alphaBand="-1", nodataColor="")
    _sub(renderer, "rasterTransparency")
    palette = _sub(renderer, "colorPalette")
    for value, name, (r, g, b), alpha in _entries(info, nodata):
        _sub(palette, "paletteEntry", value=str(value), color=f"#{r:02x}{g:02x}{b:02x}", alpha=str(alpha), label=name)
    _sub(root, "blendMode", 0)
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    return ("<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + body + "\n").encode()


def upright_transform():
    """The geotransform of the outputs of an input without georeference: pixel ``(row r, column c)`` at
    ``x = c, y = −r`` (no CRS) — where QGIS draws the input itself, so outputs and input coincide, upright."""
    from affine import Affine

    return Affine(1.0, 0.0, 0.0, 0.0, -1.0, 0.0)


def output_georef(georef: dict) -> dict:
    """``georef`` (of :func:`ctseg.predict.inputs.raster_georef` / ``read_image``) for the outputs: without a CRS
    and a transform, the transform is :func:`upright_transform`; anything else as it is."""
    if georef.get("crs") or georef.get("transform") is not None:
        return georef
    return {**georef, "transform": upright_transform()}


def georef_warning(paths: Sequence[Path], shown: int = 3) -> str | None:
    """The one warning line for the inputs ``paths`` without georeference (``None`` when there are none)."""
    if not paths:
        return None
    names = ", ".join(str(p) for p in paths[:shown]) + (f" and {len(paths) - shown} more" if len(paths) > shown else "")
    many = len(paths) != 1
    return (
        f"ctseg: warning: {len(paths) if many else 'an'} input{'s' if many else ''} with no georeference ({names}): "
        f"{'their' if many else 'its'} outputs are in pixel units, row r at y = -r, with no CRS - where a GIS draws "
        "such an image, so maps, polygons and image coincide, upright"
    )


def sidecar_paths(tif: Path) -> tuple[Path, Path]:
    """``(<stem>_pred.tif.aux.xml, <stem>_pred.qml)`` of the class map ``tif``."""
    tif = Path(tif)
    return tif.with_name(tif.name + ".aux.xml"), tif.with_suffix(".qml")


def write_class_sidecars(
    aux: Path, style: Path, info: DatasetInfo, nodata: int | None, workdir: Path | None = None
) -> list[Path]:
    """Write the PAM file ``aux`` and the QGIS style ``style`` of a class map whose nodata value is ``nodata``
    (``None``: none): into ``workdir`` under their names (for the caller to move), or each atomically."""
    for path, data in ((aux, aux_xml(info, nodata)), (style, qml(info, nodata))):
        _write(Path(path), data, workdir)
    return [Path(aux), Path(style)]


def _write(path: Path, data: bytes, workdir: Path | None) -> None:
    if workdir is not None:
        staged = Path(workdir) / path.name
        try:
            staged.write_bytes(data)
        except OSError as err:
            staged.unlink(missing_ok=True)
            raise write_error(path, err) from None
        return
    try:
        with atomic_path(path) as tmp:
            Path(tmp).write_bytes(data)
    except OSError as err:
        raise write_error(path, err) from None
