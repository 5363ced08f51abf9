"""Georeferenced images with polygons as labels: ``ctseg prepare vector`` (a public contract; docs/vector-labels.md).

::

    ctseg prepare vector --src IMAGES --labels LABELS --class-field FIELD --classes classes.yaml --dst DIR
        [--crop N] [--val-fraction F | --split NAME=PATTERN] [--all-touched] [--extent FILE] [--seed S]

**IMAGES**: a folder of georeferenced rasters (its files of the suffixes :data:`~ctseg.data.pairs.IMAGE_SUFFIXES`,
not its sub-folders; a folder holding a VRT beside other rasters is refused, as the VRT most likely mosaics them),
a ``.txt`` list of them (:mod:`ctseg.safety.path_lists`: one path a line, relative to the list) or one raster / VRT.
Bands and bit depth as for a folder data set (``--bands``, ``--nodata``; every image alike). Every image needs a
CRS and a geotransform; ``--crop`` is in each image's own pixels whatever its CRS (a geographic CRS too: crops
are cut and labels rasterised on the image's grid, so there is no metric size to refuse).

**LABELS**: a GeoPackage, GeoJSON, Shapefile or FlatGeobuf file of one layer (:mod:`ctseg.safety.vector_files`) in any
CRS; each polygon's class is its ``--class-field`` value, mapped through ``--classes``
(:mod:`ctseg.data.vector_classes`: ``value:`` a string or a number per class, later classes winning where polygons
overlap, ``background:`` the class of pixels no polygon covers — without it they are ignore). The polygons are
reprojected to each image's CRS and rasterised on its grid one window at a time (:mod:`ctseg.data.vector_labels`);
``--all-touched`` burns every pixel a polygon touches, ``--extent FILE`` (polygons, any CRS) makes pixels outside
it ignore.

**Refused**, one line each, before any crop is written: a ``--class-field`` the file does not have (the fields
listed), a class value the classes file does not list (the feature id, the value and the listed values), a
feature that is not a polygon, labels (or an ``--extent``) that overlap none of the images, labels or an extent
without a CRS, an image without georeference. **Repaired**: invalid polygons (self-intersecting rings …) go through
``shapely.make_valid``, and one note line says how many (with their first feature ids).

**Splits** by image, as for a flat folder: ``--val-fraction`` (default 0.2) of the images drawn with ``--seed``,
or ``--split NAME=PATTERN`` by file stem or glob. Tile ids are the stems (``parent/stem`` when stems repeat in a
list). The output is a prepared folder like ``ctseg prepare folder``'s (train it with ``FolderDataModule``); its
manifest records the labels file, class field, extent and ``--all-touched`` (``settings.options``), and each tile's
``label`` is the labels file (``label_kind``: ``"vector"``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ctseg.data.crops import CropWriter, scored_start
from ctseg.data.definitions import DatasetInfo
from ctseg.data.pairs import IMAGE_SUFFIXES, Pair, assign_patterns, shown
from ctseg.data.raster import nodata_mask, open_raster, reading
from ctseg.data.registry import CropSettings, DatasetSpec, PrepareOptions, SourceTile, register_dataset
from ctseg.data.sets.folder import dataset_info, hold_out
from ctseg.data.splits import TRAIN_SPLIT, natural_key
from ctseg.data.vector_classes import read_vector_classes
from ctseg.data.vector_labels import ImageGrid, TileLabels, VectorConfig, check_extent, grid_of, scan_labels
from ctseg.errors import CtsegError

LAYOUT = "a folder of georeferenced rasters, a .txt list of them (one path a line) or one raster / VRT"
_FLAGS = "--labels FILE --class-field FIELD --classes classes.yaml"


# ------------------------------------------------------------------------------------------------------- sources
def list_images(src: Path) -> list[Path]:
    """The images ``--src`` names (module docstring), in natural order of their names (a list: in its order)."""
    if src.is_file():
        if src.suffix.lower() == ".txt":
            from ctseg.safety.path_lists import read_path_list

            return [Path(p) for p in read_path_list(src)]
        return [src]
    found = sorted((p for p in src.iterdir() if p.is_file() and not p.name.startswith(".")
                    and p.suffix.lower() in IMAGE_SUFFIXES), key=lambda p: natural_key(p.name))  # fmt: skip
    if not found:
        raise CtsegError(f"{src} holds no images: expected {LAYOUT}")
    vrts = [p for p in found if p.suffix.lower() == ".vrt"]
    if vrts and len(vrts) < len(found):
        raise CtsegError(
            f"{src} holds a VRT ({vrts[0].name}) beside other rasters, which it most likely mosaics: give the VRT "
            f"itself (--src {vrts[0]}) or move it out of the folder"
        )
    return found


def _tile_ids(images: list[Path]) -> list[str]:
    stems = [p.stem for p in images]
    ids = stems if len(set(stems)) == len(stems) else [f"{p.parent.name}/{p.stem}" for p in images]
    from ctseg.data.crops import safe_name

    names: dict[str, Path] = {}
    for tile, path in zip(ids, images, strict=True):
        other = names.setdefault(safe_name(tile), path)
        if other != path:
            raise CtsegError(f"{path}: its crops would have the file names of {other}'s ({safe_name(tile)}_r…); "
                             "rename one of the two")  # fmt: skip
    return ids


def _config(options: PrepareOptions) -> tuple[VectorConfig, dict[str, Any]]:
    """The labels' :class:`VectorConfig` and the classes file's description, checked (one line each)."""
    from ctseg.safety.vector_files import layer_info

    missing = [flag for flag, value in (("--labels FILE", options.labels), ("--class-field FIELD",
               options.class_field), ("--classes classes.yaml", options.classes)) if value is None]  # fmt: skip
    if missing:
        raise CtsegError(f"ctseg prepare vector needs {' and '.join(missing)} ({_FLAGS}; see docs/vector-labels.md)")
    assert options.labels is not None and options.classes is not None and options.class_field is not None
    spec = read_vector_classes(options.classes)
    info = layer_info(options.labels)
    fields = [str(f) for f in info["fields"]]
    if options.class_field not in fields:
        raise CtsegError(
            f"--class-field {options.class_field}: labels file {options.labels} has no such field (its fields: "
            f"{', '.join(fields) or 'none'}); name the one holding each polygon's class"
        )
    if not info.get("crs"):
        raise CtsegError(
            f"labels file {options.labels} declares no CRS, so it cannot be placed on the images; set it (e.g. "
            "ogr2ogr -a_srs EPSG:4326 out.gpkg IN)"
        )
    extent = {}
    if options.extent is not None:
        found = layer_info(options.extent, "extent file")
        if not found.get("crs"):
            raise CtsegError(f"extent file {options.extent} declares no CRS; set it (ogr2ogr -a_srs EPSG:…)")
        extent = {"extent": options.extent, "extent_layer": found["layer"], "extent_crs": _wkt(found["crs"])}
    indexed = bool((info.get("capabilities") or {}).get("fast_spatial_filter"))
    cfg = VectorConfig(labels=options.labels, layer=info["layer"], field=options.class_field, crs=_wkt(info["crs"]),
                       lookup=spec["lookup"], background=spec["background"], num_classes=len(spec["classes"]),
                       all_touched=options.all_touched, indexed=indexed, **extent)  # fmt: skip
    return cfg, spec


def _wkt(crs: str) -> str:
    from rasterio.crs import CRS

    return CRS.from_user_input(crs).to_wkt()


def vector_info(src: Path, options: PrepareOptions) -> DatasetInfo:
    """The data set's :class:`DatasetInfo`: classes from ``--classes``, bands and dtype from the first image, the
    labels' :class:`VectorConfig` in ``extra["vector"]``."""
    cfg, spec = _config(options)
    info = dataset_info(spec, list_images(src)[0], options)
    return replace(info, extra={**info.extra, "vector": cfg})


def _grids(images: list[Path], options: PrepareOptions) -> list[ImageGrid]:
    """Each image's grid; one line for an image without georeference, or of other bands / type than the first."""
    from ctseg.data.raster import read_header

    first = read_header(images[0])
    need = max(options.bands) if options.bands else first.bands
    grids = []
    for path in images:
        with reading(path), open_raster(path) as ds:
            grid = grid_of(path, ds)
            dtype = str(ds.dtypes[0])
            if ds.count < need or dtype != first.dtype or len(set(ds.dtypes)) > 1:
                raise CtsegError(
                    f"{path} has {ds.count} band(s) of {', '.join(sorted(set(ds.dtypes)))}, but {images[0].name} "
                    f"has {first.bands} of {first.dtype}; give every image the same bands and type (or choose bands "
                    "with --bands)"
                )
        grids.append(grid)
    return grids


def discover_vector(
    src: Path, split_tiles: Mapping[str, Iterable[str]] | None, options: PrepareOptions
) -> tuple[list[SourceTile], list[str]]:
    """List and check the images, scan the labels (:func:`~ctseg.data.vector_labels.scan_labels`), split by image."""
    cfg, _ = _config(options)
    assert options.classes is not None
    images = list_images(src)
    ids = _tile_ids(images)
    grids = _grids(images, options)
    scan = scan_labels(cfg, options.classes, grids)
    check_extent(cfg, grids)
    items = [Pair(tile, tile, path.stem, path, cfg.labels) for tile, path in zip(ids, images, strict=True)]
    notes = []
    if split_tiles is not None:
        if options.val_fraction is not None:
            raise CtsegError("--val-fraction and --split both choose the held-out images; give one of them")
        assignment, skipped = assign_patterns(items, split_tiles, src, grouped=False)
        if skipped:
            notes.append(f"vector: skipping {len(skipped)} image(s) in no split: {shown(skipped)}")
    else:
        held = hold_out(ids, options)
        assignment = {tile: "val" if tile in held else TRAIN_SPLIT for tile in ids}
        if len(ids) == 1:
            notes.append("vector: one image, all of it train: hold images out with more images (gdal_retile.py cuts "
                         "a scene into tiles) and --val-fraction or --split")  # fmt: skip
    empty = [ids[i] for i in range(len(ids)) if i not in scan.hit]
    if empty:
        what = "background" if cfg.background is not None else "ignore"
        notes.append(f"vector: no polygon overlaps {len(empty)} image(s) ({shown(empty)}); their pixels are {what}")
    if scan.invalid:
        ids_text = ", ".join(map(str, scan.invalid_ids)) + (", …" if scan.invalid > len(scan.invalid_ids) else "")
        notes.append(f"vector: repaired {scan.invalid} invalid polygon(s) of {cfg.labels} with shapely.make_valid "
                     f"(feature ids {ids_text}); fix them in the file to see this no more")  # fmt: skip
    tiles = [SourceTile(item.tile, item.group, assignment[item.tile], item.image, cfg.labels, label_kind="vector")
             for item in items if item.tile in assignment]  # fmt: skip
    return tiles, notes


# ------------------------------------------------------------------------------------------------------- cutting
def _valid(image: np.ndarray, nodata: float | None) -> tuple[np.ndarray, np.ndarray | None]:
    """(image, valid pixels or ``None``): nodata as :func:`ctseg.data.crops.read_tile` (non-finite pixels → 0)."""
    invalid = nodata_mask(image, nodata)
    if np.issubdtype(image.dtype, np.floating):
        broken = ~np.isfinite(image).all(axis=-1)
        if broken.any():
            image = image.copy()
            image[broken] = 0
            invalid = broken if invalid is None else (invalid | broken)
    return image, None if invalid is None else ~invalid


def cut_vector_tile(
    tile: SourceTile, info: DatasetInfo, settings: CropSettings, out: Path, with_stats: bool = True
) -> dict[str, Any]:
    """:func:`ctseg.data.crops.cut_tile` for vector labels: each window's pixels read from the image and its mask
    rasterised (:class:`~ctseg.data.vector_labels.TileLabels`); the statistics over each pixel once."""
    from rasterio.windows import Window

    cfg: VectorConfig = info.extra["vector"]
    bands = list(info.band_indices or range(1, info.bands + 1))
    with reading(tile.image):
        ds = open_raster(tile.image)
    with ds:
        grid = grid_of(tile.image, ds)
        labels = TileLabels(cfg, grid)
        writer = CropWriter(tile, info, settings, out, ds.height, ds.width)
        nodata = info.nodata if info.nodata is not None else ds.nodata
        sums = [0, np.zeros(len(bands)), np.zeros(len(bands))]
        crop = settings.crop
        for i, row in enumerate(writer.rows):
            height = min(crop, ds.height - row)
            band = labels.band(row, row + height)
            for j, col in enumerate(writer.cols):
                width = min(crop, ds.width - col)
                with reading(tile.image):
                    image = np.moveaxis(ds.read(bands, window=Window(col, row, width, height)), 0, -1)
                image, valid = _valid(image, nodata)
                mask = band.mask(row, col, height, width)
                if valid is not None:
                    mask[~valid] = info.ignore_index
                if with_stats:  # the part no earlier window holds: every pixel once
                    top, left = scored_start(writer.rows, i, crop), scored_start(writer.cols, j, crop)
                    part = image[top:, left:]
                    pixels = part.reshape(-1, part.shape[2]) if valid is None else part[valid[top:, left:]]
                    scaled = pixels.astype(np.float64) / info.scale
                    sums[0] += scaled.shape[0]
                    sums[1] += scaled.sum(axis=0)
                    sums[2] += np.square(scaled).sum(axis=0)
                writer.add(i, j, image, mask, valid)
    return writer.result((int(sums[0]), sums[1], sums[2]) if with_stats else None)


register_dataset(
    DatasetSpec(
        name="vector",
        summary="georeferenced images (folder, .txt list or VRT) with polygons as labels: --labels, --class-field",
        crop=CropSettings(512, 512, None),
        discover=discover_vector,
        make_info=vector_info,
        options=("classes", "val_fraction", "bands", "nodata", "labels", "class_field", "extent", "all_touched"),
        compute_stats=True,
        datamodule="ctseg.data.FolderDataModule",
        layout=LAYOUT,
        cut=cut_vector_tile,
        src_files=(".txt", *sorted(IMAGE_SUFFIXES)),
    )
)
