"""``ctseg vectorize``'s input notes (:class:`VectorizeWarning`), reading a raster block, and writing the polygon
file (GeoPackage / GeoJSON with pyogrio).

The file is written into a private folder beside the output, ``.ctseg-vectorize-<random>/``, which the process
holds locked while it lives (:class:`ctseg.staging.LockedFolder`), then renamed onto the output and the folder
removed: a kill leaves the old output or the new one, never part of one. A kill can leave the folder; every
vectorize into the same folder first deletes the folders of processes that are gone (a live one's is locked and
kept), and the ``.<stem>.XXXXXXXX/`` folders older versions used, once over a minute old.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ctseg.errors import CtsegError
from ctseg.io import is_disk_full, set_default_mode, write_error
from ctseg.staging import ORPHAN_AGE, LockedFolder, dead_folders, low_on_space, remove_tree

#: Output drivers by file suffix.
DRIVERS = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".json": "GeoJSON"}
#: Name prefix of the private folders the output is written in before its rename.
WORK_PREFIX = ".ctseg-vectorize-"


class VectorizeWarning(UserWarning):
    """A one-line note about the input (pixel units, no CRS, square degrees); the CLI prints it as one line."""


def warn(message: str) -> None:
    """Emit a :class:`VectorizeWarning` at the caller's caller."""
    warnings.warn(message, VectorizeWarning, stacklevel=3)


@contextlib.contextmanager
def notes_as_lines() -> Iterator[None]:
    """Print the :class:`VectorizeWarning` notes raised inside the block as one ``ctseg: warning:`` line each on
    stderr (also when the block fails); any other warning is re-issued as usual."""
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", VectorizeWarning)
            yield
    finally:
        for w in caught:
            if issubclass(w.category, VectorizeWarning):
                print(f"ctseg: warning: {w.message}", file=sys.stderr, flush=True)
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


# ------------------------------------------------------------------------------------------------ reading
def read_band(dataset, band: int, window, what: str):
    """``dataset.read(band, window=window)``; a damaged block is a one-line error naming the file."""
    from rasterio.errors import RasterioError

    from ctseg.data.raster import error_text

    try:
        return dataset.read(band, window=window)
    except RasterioError as err:
        raise CtsegError(f"{what} {dataset.name} cannot be read ({error_text(err)}); is the file complete?") from None


# ------------------------------------------------------------------------------------------------- output
def output_driver(out: Path, overwrite: bool) -> str:
    driver = DRIVERS.get(out.suffix.lower())
    if driver is None:
        raise CtsegError(f"output {out}: name it *.gpkg (GeoPackage) or *.geojson (GeoJSON)")
    if out.is_dir():
        raise CtsegError(f"output {out} is a folder; name a file")
    if out.exists() and not overwrite:
        raise CtsegError(f"output {out} already exists; pass --overwrite to replace it")
    if not out.parent.is_dir():
        raise CtsegError(f"output folder {out.parent} does not exist; create it first")
    return driver


def clean_stale(folder: Path, out: Path | None = None) -> int:
    """Delete the work folders of killed vectorize runs in ``folder`` (module docstring); ``out``: this run's
    output, whose older-version ``.<stem>.XXXXXXXX/`` folders go too once over a minute old. Returns how many."""
    removed = 0
    for dead in dead_folders(folder, WORK_PREFIX):
        remove_tree(dead)
        removed += 1
    if out is None:
        return removed
    legacy = re.compile(rf"^\.{re.escape(out.stem)}\.[a-z0-9_]{{8}}$")
    try:
        names = [n for n in os.listdir(folder) if legacy.match(n)]
    except OSError:
        return removed
    for name in names:
        path = folder / name
        try:
            st = path.lstat()
            inside = os.listdir(path)
        except OSError:
            continue
        if (
            stat.S_ISDIR(st.st_mode)
            and time.time() - st.st_mtime > ORPHAN_AGE
            and all(n.startswith(out.name) for n in inside)  # the output, and GDAL's -journal / -wal beside it
        ):
            remove_tree(path)
            removed += 1
    return removed


def write_polygons(out: Path, driver: str, layer: str, crs, rows: dict, geoms, fields: list[str]) -> None:
    """Write the polygons ``geoms`` (a sequence or object array) with the attribute columns ``rows[f]`` of
    ``fields`` to ``out`` (module docstring)."""
    import pyogrio.raw
    import shapely

    wkb = shapely.to_wkb(np.asarray(geoms, dtype=object)) if len(geoms) else np.array([], dtype=object)
    dtypes = {"class": object, "class_index": np.int32}
    data = [np.array(rows[f], dtype=dtypes.get(f, np.float64)) for f in fields]
    clean_stale(out.parent, out)
    try:
        work = LockedFolder(out.parent, WORK_PREFIX)
    except OSError as err:
        raise CtsegError(write_error(out, err)) from None
    try:
        tmp = work.path / out.name
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*crs.* was not provided")  # said once, in ctseg's words
            pyogrio.raw.write(
                str(tmp),
                wkb,
                data,
                fields,
                layer=layer,
                driver=driver,
                geometry_type="Polygon",
                crs=crs.to_wkt() if crs is not None else None,
                promote_to_multi=False,
            )
        set_default_mode(tmp)
        os.replace(tmp, out)
    except Exception as err:  # OSError, pyogrio's DataSourceError / FieldError …: GDAL refused the file
        if is_disk_full(err) or low_on_space(work.path):  # SQLite says only "Failed to commit transaction"
            raise CtsegError(write_error(out, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))) from None
        if isinstance(err, OSError):
            raise CtsegError(write_error(out, err)) from None
        raise CtsegError(f"output {out} cannot be written ({str(err).splitlines()[0]})") from None
    finally:
        work.remove()
