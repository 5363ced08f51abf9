"""``--bbox`` / ``--aoi``: predict only a region of each input, on the input's own pixel grid.

**The region.** ``--bbox MINX,MINY,MAXX,MAXY`` in ``--bbox-crs`` (default: the raster's CRS), or ``--aoi FILE``
(:mod:`ctseg.safety.aoi`): the bounds of its polygons, in the file's CRS (else ``--bbox-crs``, else the raster's).
The box is brought into the raster's CRS (``transform_bounds``, edges densified; an AOI's polygons themselves
are transformed) and widened to whole pixels of the raster's grid: the window is every pixel the box touches,
clipped to the raster (a box reaching beyond it is cut, with a note; a box missing it is one error line giving
both extents). Nothing is resampled: the outputs have the raster's pixel size and its transform offset to the
window (``src.window_transform``), so they lie on the source pixel for pixel.

**What is read.** Only the window's rows and columns, window by window (:class:`WindowRows`; over the network
that is HTTP range requests for the tiles it covers, :mod:`ctseg.safety.remote`). The model sees the window as a
raster of its own: windows start at its top-left corner and an axis shorter than a window is reflect-padded, so
the class map inside equals a prediction of the whole raster wherever the window grids of the two coincide
(window offset and size multiples of the step) away from the region's edges (there the whole raster's
prediction sees pixels beyond the box).

**--aoi.** Pixels whose centres lie outside the polygons are written as nodata (class 255, probabilities /
confidence 0 or NaN), in every output; the model still sees them as context.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from ctseg.errors import CtsegError
from ctseg.predict.inputs import ImageHeader, error_text, open_raster, uses_pillow

__all__ = ["Region", "WindowRows", "crop_header", "outside_rows", "parse_bbox", "parse_region"]

_EPS = 1e-6  # pixels: a box edge this close to a pixel edge is on it


@dataclass(frozen=True)
class Region:
    """What ``--bbox`` / ``--aoi`` asked for: ``bounds`` (a box) or ``polygons`` (shapely), in ``crs``
    (``None``: the raster's own); ``text`` names it in messages."""

    text: str
    bounds: tuple[float, float, float, float] | None = None
    crs: str | None = None
    polygons: tuple | None = None


def parse_bbox(bbox: str | Sequence[float]) -> tuple[float, float, float, float]:
    """``"MINX,MINY,MAXX,MAXY"`` (or four numbers) → a tuple; one line unless four finite numbers, min < max."""
    text = bbox if isinstance(bbox, str) else ",".join(map(str, bbox))
    try:
        parts = [float(p) for p in str(text).split(",")]
    except ValueError:
        parts = []
    if len(parts) != 4 or not all(math.isfinite(v) for v in parts) or parts[0] >= parts[2] or parts[1] >= parts[3]:
        raise CtsegError(
            f"--bbox {text}: give MINX,MINY,MAXX,MAXY, four numbers with each minimum below its maximum (e.g. "
            "--bbox 500000,4100000,501000,4101000; write --bbox=-10.5,... when the first is negative)"
        )
    return parts[0], parts[1], parts[2], parts[3]


def _crs_text(crs: str, flag: str) -> str:
    import rasterio
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    try:
        with rasterio.Env():  # GDAL's messages as Python logging, not printed
            CRS.from_user_input(crs)
    except CRSError:
        raise CtsegError(f"{flag} {crs}: not a CRS GDAL knows; give e.g. EPSG:4326 or EPSG:32633") from None
    return crs


def parse_region(
    bbox: str | Sequence[float] | None, bbox_crs: str | None, aoi: str | os.PathLike | None
) -> Region | None:
    """The region of ``--bbox`` / ``--bbox-crs`` / ``--aoi`` (module docstring), checked before anything is read;
    ``None`` for the whole raster."""
    if bbox is not None and aoi is not None:
        raise CtsegError("--bbox and --aoi both give the region; pass one of them (an --aoi's region is the box "
                         "around its polygons)")  # fmt: skip
    if bbox is None and aoi is None:
        if bbox_crs is not None:
            raise CtsegError(f"--bbox-crs {bbox_crs} is the CRS of --bbox (or of an --aoi file without one); give "
                             "--bbox or --aoi too")  # fmt: skip
        return None
    crs = None if bbox_crs is None else _crs_text(str(bbox_crs), "--bbox-crs")
    if bbox is not None:
        bounds = parse_bbox(bbox)
        shown = bbox if isinstance(bbox, str) else ",".join(f"{v:g}" for v in bounds)
        return Region(f"--bbox {shown}", bounds=bounds, crs=crs)
    from ctseg.safety.aoi import read_aoi

    found = read_aoi(aoi)
    if found.crs is not None:
        crs = _crs_text(found.crs, f"--aoi {aoi}: its CRS")
    return Region(f"--aoi {aoi}", crs=crs, polygons=found.polygons)


def _num(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".") if abs(value) < 1e12 else f"{value:g}"


def _extent(left: float, bottom: float, right: float, top: float) -> str:
    return f"x {_num(left)} to {_num(right)}, y {_num(bottom)} to {_num(top)}"


def crop_header(header: ImageHeader, region: Region) -> tuple[ImageHeader, str | None]:
    """``header`` cut to ``region``'s window on the raster's grid (``window``, ``clip``, the window's size), and a
    note when the region reaches beyond the raster; one line for a region the raster cannot be cut to."""
    import rasterio
    from rasterio.crs import CRS
    from rasterio.warp import transform_bounds, transform_geom
    from rasterio.windows import from_bounds
    from shapely.geometry import mapping, shape

    path = header.path
    if uses_pillow(path) or not header.georeferenced:
        raise CtsegError(f"{region.text}: input {path} has no georeference (neither CRS nor geotransform) to place "
                         "the region on; cut it yourself, or give it a georeference (a GeoTIFF)")  # fmt: skip
    with open_raster(path) as src:
        transform, crs, height, width = src.transform, src.crs, src.height, src.width
    if transform.b or transform.d:
        raise CtsegError(f"{region.text}: input {path} has a rotated geotransform; warp it north-up first "
                         "(gdalwarp) to cut a region of it")  # fmt: skip
    target = CRS.from_user_input(region.crs) if region.crs is not None else crs
    if region.crs is not None and not crs:
        raise CtsegError(f"{region.text}: input {path} has no CRS to bring {region.crs} into; give the region in "
                         "the raster's own coordinates (without --bbox-crs)")  # fmt: skip
    moved = target is not None and crs and target != crs
    clip = None
    try:
        with rasterio.Env():  # GDAL's messages as Python logging, not printed
            if region.polygons is not None:
                clip = tuple(transform_geom(target, crs, mapping(p)) if moved else mapping(p)
                             for p in region.polygons)  # fmt: skip
                parts = [shape(g).bounds for g in clip]
                bounds = (min(b[0] for b in parts), min(b[1] for b in parts), max(b[2] for b in parts),
                          max(b[3] for b in parts))  # fmt: skip
            else:
                bounds = transform_bounds(target, crs, *region.bounds, densify_pts=21) if moved else region.bounds
    except Exception as err:  # PROJ / GDAL errors of a transformation that does not exist there
        raise CtsegError(f"{region.text} ({region.crs}) cannot be brought into the CRS of input {path} "
                         f"({error_text(err)}); check the coordinates and --bbox-crs") from None  # fmt: skip
    win = from_bounds(*bounds, transform=transform)
    col0, row0 = math.floor(win.col_off + _EPS), math.floor(win.row_off + _EPS)
    col1, row1 = math.ceil(win.col_off + win.width - _EPS), math.ceil(win.row_off + win.height - _EPS)
    c0, r0, c1, r1 = max(col0, 0), max(row0, 0), min(col1, width), min(row1, height)
    if c1 <= c0 or r1 <= r0 or not all(math.isfinite(v) for v in bounds):
        full = transform_bounds_of(transform, width, height)
        given = f" ({region.crs})" if region.crs is not None else ""
        where = f" (in its CRS, {crs.to_string()})" if crs else ""
        raise CtsegError(
            f"{region.text}{given} lies outside input {path}: the region is {_extent(*bounds)} and the raster "
            f"covers {_extent(*full)}{where}; check the coordinates, their order (MINX,MINY,MAXX,MAXY) and "
            "--bbox-crs"
        )
    note = None
    if (c0, r0, c1, r1) != (col0, row0, col1, row1):
        note = (f"note: {region.text} reaches beyond input {path}; predicting its part inside the raster (columns "
                f"{c0}-{c1 - 1}, rows {r0}-{r1 - 1})")  # fmt: skip
    cut = replace(header, height=r1 - r0, width=c1 - c0, window=(c0, r0, c1 - c0, r1 - r0), clip=clip)
    return cut, note


def transform_bounds_of(transform, width: int, height: int) -> tuple[float, float, float, float]:
    """``(left, bottom, right, top)`` of a north-up raster."""
    xs = (transform.c, transform.c + transform.a * width)
    ys = (transform.f, transform.f + transform.e * height)
    return min(xs), min(ys), max(xs), max(ys)


def outside_rows(clip: tuple, transform, top: int, rows: int, width: int) -> np.ndarray:
    """``(rows, width)`` bool, True where a pixel's centre lies outside every polygon of ``clip`` (GeoJSON-like,
    in the CRS of ``transform``: the output's), for rows ``top ..`` of the output."""
    from affine import Affine
    from rasterio.features import geometry_mask

    if rows == 0:
        return np.zeros((0, width), dtype=bool)
    return geometry_mask(clip, out_shape=(rows, width), transform=transform @ Affine.translation(0, top))


class WindowRows:
    """A :class:`~ctseg.inference.rows.RowSource` over the window ``(col, row, width, height)`` of an open dataset
    (bands ``indices``, 1-based): its row ``y`` is the dataset's row ``row + y``, columns ``col .. col + width``.
    ``label`` names the input in the one line of a failed read."""

    def __init__(self, dataset, indices: Sequence[int], label, window: tuple[int, int, int, int]):
        self.dataset, self.label = dataset, label
        self.indices = [int(i) for i in indices]
        self.col, self.row, self.width, self.height = (int(v) for v in window)
        self.count = len(self.indices)
        self.dtype = np.dtype(dataset.dtypes[self.indices[0] - 1])

    def read(self, y0: int, y1: int) -> np.ndarray:
        from rasterio.errors import RasterioError
        from rasterio.windows import Window

        top = self.row + y0
        try:
            return self.dataset.read(self.indices, window=Window(self.col, top, self.width, y1 - y0))
        except RasterioError as err:
            raise CtsegError(
                f"input {self.label} cannot be read at rows {top}-{top + y1 - y0 - 1}, columns {self.col}-"
                f"{self.col + self.width - 1}: {error_text(err)}; nothing was written for it"
            ) from None
