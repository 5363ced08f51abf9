"""What GDAL itself reads of a raster's category names and raster attribute table (``gdalinfo`` lists both).

rasterio has no API for either, and neither ``osgeo`` nor ``gdalinfo`` is installed here, so this calls GDAL's C
API through ``ctypes`` on the very ``libgdal`` that rasterio loaded (its wheel's ``rasterio.libs``, or the system's
for a source build). :func:`read_categories` returns ``None`` when no such library can be found (the caller skips).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

import rasterio

_P = ctypes.c_void_p


def _library() -> ctypes.CDLL | None:
    libs = Path(rasterio.__file__).parent.parent / "rasterio.libs"
    found = sorted(libs.glob("libgdal*.so*")) if libs.is_dir() else []
    name = str(found[0]) if found else ctypes.util.find_library("gdal")
    if name is None:
        return None
    lib = ctypes.CDLL(name)
    signatures = {
        "GDALAllRegister": (None, []),
        "GDALOpen": (_P, [ctypes.c_char_p, ctypes.c_int]),
        "GDALClose": (None, [_P]),
        "GDALGetRasterBand": (_P, [_P, ctypes.c_int]),
        "GDALGetMetadata": (_P, [_P, ctypes.c_char_p]),
        "GDALGetRasterCategoryNames": (ctypes.POINTER(ctypes.c_char_p), [_P]),
        "GDALGetDefaultRAT": (_P, [_P]),
        "GDALRATGetRowCount": (ctypes.c_int, [_P]),
        "GDALRATGetColumnCount": (ctypes.c_int, [_P]),
        "GDALRATGetNameOfCol": (ctypes.c_char_p, [_P, ctypes.c_int]),
        "GDALRATGetUsageOfCol": (ctypes.c_int, [_P, ctypes.c_int]),
        "GDALRATGetTypeOfCol": (ctypes.c_int, [_P, ctypes.c_int]),
        "GDALRATGetValueAsString": (ctypes.c_char_p, [_P, ctypes.c_int, ctypes.c_int]),
        "GDALRATGetTableType": (ctypes.c_int, [_P]),
    }
    for function, (restype, argtypes) in signatures.items():
        getattr(lib, function).restype = restype
        getattr(lib, function).argtypes = argtypes
    return lib


def read_categories(path: str | os.PathLike) -> dict | None:
    """``{"names": [...], "columns": [(name, type, usage)], "rows": [[str, ...]], "thematic": bool}`` of band 1
    as GDAL reads them (``None`` without a GDAL library to call)."""
    lib = _library()
    if lib is None:
        return None
    lib.GDALAllRegister()
    handle = lib.GDALOpen(os.fsencode(str(path)), 0)
    assert handle, f"GDAL cannot open {path}"
    try:
        band = lib.GDALGetRasterBand(handle, 1)
        lib.GDALGetMetadata(band, None)  # the GeoTIFF driver reads its PAM file on the first such call
        names, found = [], lib.GDALGetRasterCategoryNames(band)
        while found and found[len(names)] is not None:
            names.append(found[len(names)].decode())
        rat = lib.GDALGetDefaultRAT(band)
        if not rat:
            return {"names": names, "columns": [], "rows": [], "thematic": False}
        columns = [
            (
                lib.GDALRATGetNameOfCol(rat, c).decode(),
                lib.GDALRATGetTypeOfCol(rat, c),
                lib.GDALRATGetUsageOfCol(rat, c),
            )
            for c in range(lib.GDALRATGetColumnCount(rat))
        ]
        rows = [
            [lib.GDALRATGetValueAsString(rat, r, c).decode() for c in range(len(columns))]
            for r in range(lib.GDALRATGetRowCount(rat))
        ]
        return {"names": names, "columns": columns, "rows": rows, "thematic": lib.GDALRATGetTableType(rat) == 0}
    finally:
        lib.GDALClose(handle)
