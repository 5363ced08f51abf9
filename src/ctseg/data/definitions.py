"""What a labelled data set is: :class:`DatasetInfo` (classes, colours, label values, bands, normalisation).

A ``DatasetInfo`` travels with every prepared folder (its manifest) and every checkpoint, so that predictions
can be coloured back to the original palette, inputs checked for the band layout the model was trained on,
and scores computed with the right protocol (docs/design.md §4: ISPRS scores mIoU / mean F1 over the five classes
without clutter, OA over all six).

Each data set defines its ``DatasetInfo`` in its own file under :mod:`ctseg.data.sets` and registers it
(:mod:`ctseg.data.registry`); ``POTSDAM``, ``VAIHINGEN``, ``DUBAI``, ``SYNTHETIC``, ``ISPRS_CLASSES`` and
``ISPRS_COLORS`` are still importable from here (looked up lazily), and :data:`DATASETS` is a live view of
the registry.

**Values and normalisation.** Images are stored with their source dtype (``uint8``, ``uint16`` or
``float32``). Models see ``(x / s − mean) / std`` per band, with ``s`` = 255 for uint8, 65535 for uint16 and 1
for float32 (:func:`value_scale`); ``mean`` / ``std`` are on that ``x / s`` scale (ImageNet statistics for the
RGB data sets, as the authors; statistics of the training split for a folder data set).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

#: The class index of unlabelled pixels in prepared masks and losses (:class:`DatasetInfo`'s default ``ignore_index``).
IGNORE_INDEX = 255
#: ImageNet statistics (RGB, 0-1 scale); the authors' pipeline normalises with these.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Sample dtypes a prepared data set may hold.
DTYPES = ("uint8", "uint16", "float32")
#: Generic colours for data sets with index masks and checkpoints without a palette (cycled with darker shades
#: beyond 12 classes).
GENERIC_COLORS = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
    (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207), (255, 255, 255), (0, 0, 0),
)  # fmt: skip


def value_scale(dtype: str) -> float:
    """``s`` of the module docstring: 255 for ``"uint8"``, 65535 for ``"uint16"``, 1 for ``"float32"``."""
    scales = {"uint8": 255.0, "uint16": 65535.0, "float32": 1.0}
    try:
        return scales[str(dtype)]
    except KeyError:
        raise ValueError(f"unsupported sample dtype {dtype!r}; one of {', '.join(DTYPES)}") from None


def generic_colors(count: int) -> tuple[tuple[int, int, int], ...]:
    """``count`` distinct display colours (:data:`GENERIC_COLORS`, darker shades after the first 12)."""
    colors = []
    for i in range(count):
        r, g, b = GENERIC_COLORS[i % len(GENERIC_COLORS)]
        shade = 1.0 / (1 + i // len(GENERIC_COLORS))
        colors.append((int(r * shade), int(g * shade), int(b * shade)))
    return tuple(colors)


@dataclass(frozen=True)
class DatasetInfo:
    """Static description of a labelled data set.

    Attributes:
        name: short name (``"potsdam"``, ``"dubai"``, ``"loveda"``, a folder data set's name …).
        classes: class names in index order (index ``k`` = ``classes[k]``).
        colors: RGB colour of each class, same order: the colour-coded labels' colours, and the palette of
            predictions (data sets with index masks get :func:`generic_colors` unless they name colours).
        ignore_colors: colour-coded labels: colours that map to ``ignore_index``.
        eval_classes: indices averaged into mIoU / mean F1 (``None``: all classes).
        mean, std: per-band normalisation on the ``x / value_scale(dtype)`` scale (module docstring); one value
            per band.
        ignore_index: the class index of unlabelled pixels in prepared masks and losses (255).
        label_values: index masks: the label value of each class (``classes`` order); ``None``: colour masks.
        ignore_values: index masks: label values that mean "no label".
        bands: number of image bands the model takes (``in_chans``).
        dtype: sample dtype of the images (``"uint8"``, ``"uint16"``, ``"float32"``).
        band_indices: the source bands (1-based, as GDAL numbers them) the images were made of at preparation;
            ``None``: the first ``bands`` bands (all of them for a folder data set). Predict reads the same ones.
        nodata: the source images' nodata value (pixels where every band equals it are ignore in labels, never
            trained on, and nodata in predicted maps); ``None``: no nodata.
    """

    name: str
    classes: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    ignore_colors: tuple[tuple[int, int, int], ...] = ()
    eval_classes: tuple[int, ...] | None = None
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    ignore_index: int = IGNORE_INDEX
    label_values: tuple[int, ...] | None = None
    ignore_values: tuple[int, ...] = ()
    bands: int = 3
    dtype: str = "uint8"
    band_indices: tuple[int, ...] | None = None
    nodata: float | None = None
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def scale(self) -> float:
        """``value_scale(dtype)``: raw sample values are divided by this before ``mean`` / ``std``."""
        return value_scale(self.dtype)

    @property
    def label_kind(self) -> str:
        """``"index"`` (masks hold label values) or ``"color"`` (masks are colour-coded RGB)."""
        return "color" if self.label_values is None else "index"

    def palette(self) -> np.ndarray:
        """(256, 3) uint8 lookup table: class index → colour; ignore → black."""
        lut = np.zeros((256, 3), dtype=np.uint8)
        lut[: self.num_classes] = np.asarray(self.colors, dtype=np.uint8).reshape(-1, 3)
        return lut

    def colorize(self, mask: np.ndarray) -> np.ndarray:
        """(H, W) class indices → (H, W, 3) uint8 RGB in the data set's palette (ignore is black)."""
        return self.palette()[np.asarray(mask, dtype=np.uint8)]

    def band_layout(self) -> str:
        """Human-readable band layout, e.g. ``"3 bands uint8"`` or ``"4 bands uint16 (source bands 1,2,3,4)"``."""
        text = f"{self.bands} band{'s' if self.bands != 1 else ''} {self.dtype}"
        if self.band_indices is not None:
            text += f" (source bands {','.join(map(str, self.band_indices))})"
        return text

    def with_stats(self, mean: Sequence[float], std: Sequence[float]) -> DatasetInfo:
        """A copy with other per-band statistics."""
        return replace(self, mean=tuple(float(v) for v in mean), std=tuple(float(v) for v in std))


def info_to_json(info: DatasetInfo) -> dict[str, Any]:
    """The JSON form stored in manifests and checkpoints (read back by :func:`info_from_json`)."""
    return {
        "name": info.name,
        "classes": list(info.classes),
        "colors": [list(c) for c in info.colors],
        "ignore_colors": [list(c) for c in info.ignore_colors],
        "eval_classes": None if info.eval_classes is None else list(info.eval_classes),
        "mean": list(info.mean),
        "std": list(info.std),
        "ignore_index": info.ignore_index,
        "label_values": None if info.label_values is None else list(info.label_values),
        "ignore_values": list(info.ignore_values),
        "bands": info.bands,
        "dtype": info.dtype,
        "band_indices": None if info.band_indices is None else list(info.band_indices),
        "nodata": info.nodata,
    }


def info_from_json(d: Mapping[str, Any]) -> DatasetInfo:
    """:class:`DatasetInfo` from :func:`info_to_json` output; fields written by older ctseg default (3 × uint8).

    The registered object is returned when it is equal (so ``info is POTSDAM`` holds for a Potsdam folder).
    """
    info = DatasetInfo(
        name=str(d["name"]),
        classes=tuple(d["classes"]),
        colors=tuple(tuple(int(v) for v in c) for c in d["colors"]),
        ignore_colors=tuple(tuple(int(v) for v in c) for c in d.get("ignore_colors") or ()),
        eval_classes=None if d.get("eval_classes") is None else tuple(int(v) for v in d["eval_classes"]),
        mean=tuple(float(v) for v in d.get("mean", IMAGENET_MEAN)),
        std=tuple(float(v) for v in d.get("std", IMAGENET_STD)),
        ignore_index=int(d.get("ignore_index", IGNORE_INDEX)),
        label_values=None if d.get("label_values") is None else tuple(int(v) for v in d["label_values"]),
        ignore_values=tuple(int(v) for v in d.get("ignore_values") or ()),
        bands=int(d.get("bands", 3)),
        dtype=str(d.get("dtype", "uint8")),
        band_indices=None if d.get("band_indices") is None else tuple(int(v) for v in d["band_indices"]),
        nodata=None if d.get("nodata") is None else float(d["nodata"]),
    )
    known = DATASETS.get(info.name)
    return known if known == info else info


class _RegistryView(Mapping[str, DatasetInfo]):
    """``DATASETS``: name → :class:`DatasetInfo` of every registered data set that has a fixed definition."""

    def _infos(self) -> dict[str, DatasetInfo]:
        from ctseg.data.registry import list_datasets

        return {spec.name: spec.info for spec in list_datasets() if spec.info is not None}

    def __getitem__(self, name: str) -> DatasetInfo:
        return self._infos()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._infos())

    def __len__(self) -> int:
        return len(self._infos())


#: name → :class:`DatasetInfo` of every registered data set that has a fixed definition (a live view of the registry).
DATASETS: Mapping[str, DatasetInfo] = _RegistryView()


def get_dataset_info(name: str) -> DatasetInfo:
    """Look up a registered data set definition by name; unknown names raise a one-line error listing the choices."""
    from ctseg.data.registry import get_dataset

    spec = get_dataset(name)
    if spec.info is None:
        from ctseg.errors import CtsegError

        raise CtsegError(
            f"data set {name!r} has no fixed definition (its classes come from a classes file); use the prepared "
            "folder's manifest instead"
        )
    return spec.info


#: Names that moved into their data set's file (``ctseg.data.sets.*``), still importable from here.
_MOVED = {
    "POTSDAM": "ctseg.data.sets.isprs",
    "VAIHINGEN": "ctseg.data.sets.isprs",
    "ISPRS_CLASSES": "ctseg.data.sets.isprs",
    "ISPRS_COLORS": "ctseg.data.sets.isprs",
    "DUBAI": "ctseg.data.sets.dubai",
    "SYNTHETIC": "ctseg.data.sets.synthetic",
}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module 'ctseg.data.definitions' has no attribute {name!r}")
