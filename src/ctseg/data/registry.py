"""The data-set registry: one :class:`DatasetSpec` per data set, each defined in its own file.

Built-in data sets live one per file in :mod:`ctseg.data.sets` (``isprs.py``: Potsdam and Vaihingen,
``dubai.py``, ``loveda.py``, ``uavid.py``, ``folder.py``: any folder of image / label pairs,
``synthetic.py``); every module of that package is imported on first use of the registry, and each calls
:func:`register_dataset` at import. **Adding a data set is one new file there (plus its tests)**: define its
:class:`~ctseg.data.definitions.DatasetInfo`, a ``discover`` function that finds the source files and assigns
splits (:mod:`ctseg.data.walk` has the folder walks, and the pairing of image folders with label folders the
release-folder sets share; :func:`without_options` adapts a ``discover(src, split_tiles)``), default crop
settings, and register them. Other packages can register data sets too, by calling
:func:`register_dataset` or through the ``ctseg.datasets`` entry-point group (each entry point names a module,
imported with the built-ins).

The generic machinery (:mod:`ctseg.data.prepare`, readers, crop cutting, the manifest) only ever looks data
sets up here; it imports none of them by name.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctseg.data.definitions import DatasetInfo
from ctseg.errors import CtsegError


@dataclass(frozen=True)
class CropSettings:
    """Crop geometry: ``crop`` × ``crop`` windows every ``stride`` source pixels, resized to ``resize`` (or kept)."""

    crop: int
    stride: int
    resize: int | None

    @property
    def size(self) -> int:
        """Side of the stored crops."""
        return self.resize or self.crop


@dataclass(frozen=True)
class SourceTile:
    """One source image with the label used for its split.

    Attributes:
        tile: tile id, unique in the data set (``"2_10"``, ``"area1"``, ``"tile1/image_part_001"``).
        group: the unit the split is made of (the ISPRS tile itself; the Dubai ``"tileN"``; a UAVid sequence).
        split: ``"train"`` or ``"test"`` / ``"val"`` (or a user-given split name).
        image: path of the image (GeoTIFF, JPEG, PNG or any GDAL-readable raster).
        label: path of the label (colour-coded or index mask, per the data set's ``DatasetInfo``).
        label_kind: free text recorded in the manifest (``"full"``, ``"eroded"`` (ISPRS noBoundary), ``"mask"``).
    """

    tile: str
    group: str
    split: str
    image: Path
    label: Path
    label_kind: str


@dataclass(frozen=True)
class PrepareOptions:
    """Options of ``ctseg prepare`` that only some data sets take (:attr:`DatasetSpec.options` names which).

    Attributes:
        classes: folder data set: the ``classes.yaml`` file.
        val_fraction: folder data set without given splits: share of source images held out as ``val``.
        seed: seed of that split.
        bands: 1-based source bands to keep (``None``: the data set's default).
        nodata: nodata value of the source images (``None``: the raster's own, if any).
        labels, class_field: vector data set: the vector file of labelled polygons and its attribute naming
            each polygon's class.
        extent: vector data set: polygons where the labels are complete (outside them: ignore).
        all_touched: vector data set: burn every pixel a polygon touches, not only those whose centre it covers.
    """

    classes: Path | None = None
    val_fraction: float | None = None
    seed: int = 0
    bands: tuple[int, ...] | None = None
    nodata: float | None = None
    labels: Path | None = None
    class_field: str | None = None
    extent: Path | None = None
    all_touched: bool = False


#: ``discover(src, split_tiles, options) -> (tiles, notes)``: find a data set's files under ``src``.
Discover = Callable[[Path, Mapping[str, Iterable[str]] | None, PrepareOptions], tuple[list[SourceTile], list[str]]]


def without_options(
    discover: Callable[[Path, Mapping[str, Iterable[str]] | None], tuple[list[SourceTile], list[str]]],
) -> Discover:
    """The :data:`Discover` of a data set that takes no :class:`PrepareOptions`: ``discover(src, split_tiles)``."""

    def run(src: Path, split_tiles: Mapping[str, Iterable[str]] | None, options: PrepareOptions):
        return discover(src, split_tiles)

    return run


@dataclass(frozen=True)
class DatasetSpec:
    """A registered data set.

    Attributes:
        name: the name used on the command line (``ctseg prepare NAME``) and in manifests.
        summary: one line for ``ctseg prepare --list``.
        info: the data set's definition; ``None`` when it comes from the source (the folder data set builds it
            from its classes file with :attr:`make_info`).
        crop: default crop settings; ``None``: not prepared from files (the synthetic scenes).
        discover: finds the source files and assigns their splits (:data:`Discover`).
        make_info: ``make_info(src, options) -> DatasetInfo`` for data sets whose definition comes from the
            source; the default returns :attr:`info`.
        options: names of the :class:`PrepareOptions` fields this data set takes (others are an error).
        compute_stats: compute per-band mean / std over the training split during preparation (else the
            definition's are kept).
        datamodule: the LightningDataModule class path to train on it (for configs and messages).
        layout: the source layout expected, for messages (``"tileN/images/*.jpg with tileN/masks/*.png"``).
        cut: ``cut(tile, info, settings, out, with_stats)`` cuts one tile into crops and returns its record
            (``None``: :func:`ctseg.data.crops.cut_tile`, which reads an image and a label raster of its size). A
            data set with labels of another kind (vector polygons) cuts and checks its own.
        src_files: suffixes (lower case, with the dot) of files ``--src`` may name instead of a folder.
    """

    name: str
    summary: str
    info: DatasetInfo | None = None
    crop: CropSettings | None = None
    discover: Discover | None = None
    make_info: Callable[[Path, PrepareOptions], DatasetInfo] | None = None
    options: tuple[str, ...] = ()
    compute_stats: bool = False
    datamodule: str = "ctseg.data.PreparedDataModule"
    layout: str = ""
    cut: Callable[..., dict[str, Any]] | None = None
    src_files: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def preparable(self) -> bool:
        return self.crop is not None and self.discover is not None

    def build_info(self, src: Path, options: PrepareOptions) -> DatasetInfo:
        if self.make_info is not None:
            return self.make_info(src, options)
        if self.info is None:
            raise CtsegError(f"data set {self.name!r} defines neither info nor make_info")
        return self.info


_REGISTRY: dict[str, DatasetSpec] = {}
_LOADED = False
_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


def register_dataset(spec: DatasetSpec, *, replace: bool = False) -> DatasetSpec:
    """Add ``spec`` to the registry (returns it). A second data set of the same name is an error unless
    ``replace`` (the same object registered twice is fine: modules may be imported again)."""
    if not _NAME.match(spec.name):
        raise ValueError(f"data set name {spec.name!r}: use lower-case letters, digits, '-' and '_'")
    old = _REGISTRY.get(spec.name)
    if old is not None and old is not spec and not replace and old != spec:
        raise ValueError(f"data set {spec.name!r} is already registered (by {old.extra.get('module', '?')})")
    _REGISTRY[spec.name] = spec
    return spec


def unregister_dataset(name: str) -> None:
    """Remove a data set (tests use it to clean up after registering one)."""
    _REGISTRY.pop(name, None)


def _load_builtins() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    import ctseg.data.sets as sets

    for module in sorted(m.name for m in pkgutil.iter_modules(sets.__path__)):
        importlib.import_module(f"{sets.__name__}.{module}")
    from importlib.metadata import entry_points

    for ep in entry_points(group="ctseg.datasets"):
        try:
            importlib.import_module(ep.value.split(":")[0])
        except Exception as err:  # a broken plug-in must not break ctseg itself
            import warnings

            warnings.warn(f"ctseg.datasets entry point {ep.name!r} ({ep.value}) failed to import: {err}", stacklevel=2)


def list_datasets() -> list[DatasetSpec]:
    """Every registered data set, by name."""
    _load_builtins()
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]


def get_dataset(name: str) -> DatasetSpec:
    """The registered data set ``name`` (case-insensitive); unknown names are a one-line error with the choices."""
    _load_builtins()
    key = str(name).strip().lower()
    if key not in _REGISTRY:
        raise CtsegError(f"unknown data set {name!r}; choose one of: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[key]


def describe_datasets() -> list[str]:
    """One line per data set for ``ctseg prepare --list``: name, classes, bands, what it prepares from."""
    lines = []
    specs = list_datasets()
    width = max(len(s.name) for s in specs)
    for spec in specs:
        if spec.info is not None:
            what = f"{spec.info.num_classes} classes, {spec.info.band_layout()}"
        else:
            what = "classes from a classes file, any bands"
        how = "" if spec.preparable else " (built in; nothing to prepare)"
        lines.append(f"{spec.name:<{width}}  {spec.summary} [{what}]{how}")
    return lines
