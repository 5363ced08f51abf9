"""The inputs of ``ctseg predict`` as given on the command line: local paths, rasters by address, STAC items.

* ``https://…`` / ``http://…`` / ``s3://…`` / ``gs://…`` / ``az://…`` (or GDAL's ``/vsicurl/`` … spelling): a raster
  read over the network, window by window (:mod:`ctseg.safety.remote`); its outputs are named by the address's
  last path component without its suffix;
* a local file or an address whose path ends in ``.json`` / ``.geojson``: a STAC item, whose asset ``--asset``
  (default: the first GeoTIFF of ``visual``, ``image``, ``data``) is the raster (:mod:`ctseg.safety.stac`); its
  outputs are named by the item's id;
* anything else: a local path.

What the user names here is the user's choice: an address needs no ``--allow-remote``, nor an item's asset. What
a file names in turn (a VRT's sources) follows :mod:`ctseg.safety.rasters`. Paths in an ``--inputs`` list are
local files.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ctseg.errors import CtsegError
from ctseg.safety.remote import RasterSource, is_address, remote_raster
from ctseg.safety.stac import is_item_name, item_raster

__all__ = ["resolve_inputs"]


def resolve_inputs(inputs: Sequence[str | os.PathLike | RasterSource], asset: str | None = None) -> list:
    """Each input as a :class:`~pathlib.Path` (local) or a :class:`~ctseg.safety.remote.RasterSource` (by
    address, a STAC item's asset); STAC items are read here. ``asset``: ``--asset``, for the STAC items."""
    resolved: list[Path | RasterSource] = []
    items = 0
    for given in inputs:
        if isinstance(given, RasterSource):
            resolved.append(given)
            continue
        text = os.fspath(given)
        if is_item_name(text):
            resolved.append(item_raster(text, asset))
            items += 1
        elif is_address(text):
            resolved.append(remote_raster(text))
        else:
            resolved.append(Path(text))
    if asset is not None and not items:
        raise CtsegError(f"--asset {asset} picks an asset of a STAC item, and no input is one (a .json file or "
                         "address); drop --asset, or give the item")  # fmt: skip
    return resolved
