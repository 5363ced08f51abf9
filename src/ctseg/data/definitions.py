"""Data set definitions: class names, colours, ignore index, evaluated classes and normalisation.

They travel with every data set so that predictions can be coloured back to the original palette and scored
with the right protocol (SPEC §4: ISPRS scores mIoU / mean F1 over the five classes without clutter, OA over
all six).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

IGNORE_INDEX = 255
#: ImageNet statistics (RGB, 0-1 scale); the authors' pipeline normalises with these.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DatasetInfo:
    """Static description of a labelled data set.

    Attributes:
        name: short name (``"potsdam"``, ``"vaihingen"``, ``"dubai"``, ``"synthetic"``).
        classes: class names in index order.
        colors: RGB colour of each class in the label images / palette, same order.
        ignore_colors: label colours that map to ``ignore_index``.
        eval_classes: indices averaged into mIoU / mean F1 (``None``: all classes).
        mean, std: per-channel normalisation on 0-1 scaled images.
    """

    name: str
    classes: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    ignore_colors: tuple[tuple[int, int, int], ...] = ()
    eval_classes: tuple[int, ...] | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    ignore_index: int = IGNORE_INDEX
    extra: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def palette(self) -> np.ndarray:
        """(256, 3) uint8 lookup table: class index → colour; ignore → black."""
        lut = np.zeros((256, 3), dtype=np.uint8)
        lut[: self.num_classes] = np.asarray(self.colors, dtype=np.uint8)
        return lut

    def colorize(self, mask: np.ndarray) -> np.ndarray:
        """(H, W) class indices → (H, W, 3) uint8 RGB in the data set's palette (ignore is black)."""
        return self.palette()[np.asarray(mask, dtype=np.uint8)]


ISPRS_CLASSES = ("impervious_surface", "building", "low_vegetation", "tree", "car", "clutter")
ISPRS_COLORS = ((255, 255, 255), (0, 0, 255), (0, 255, 255), (0, 255, 0), (255, 255, 0), (255, 0, 0))

POTSDAM = DatasetInfo(
    name="potsdam",
    classes=ISPRS_CLASSES,
    colors=ISPRS_COLORS,
    ignore_colors=((0, 0, 0),),
    eval_classes=(0, 1, 2, 3, 4),
)
VAIHINGEN = DatasetInfo(
    name="vaihingen",
    classes=ISPRS_CLASSES,
    colors=ISPRS_COLORS,
    ignore_colors=((0, 0, 0),),
    eval_classes=(0, 1, 2, 3, 4),
)
#: Built-in procedural scenes with the six ISPRS classes (same palette and protocol as Potsdam).
SYNTHETIC = DatasetInfo(
    name="synthetic",
    classes=ISPRS_CLASSES,
    colors=ISPRS_COLORS,
    eval_classes=(0, 1, 2, 3, 4),
)
#: Dubai aerial set (Humans in the Loop, CC0); colours as actually used in the masks (its README).
DUBAI = DatasetInfo(
    name="dubai",
    classes=("building", "land", "road", "vegetation", "water"),
    colors=((0x3C, 0x10, 0x98), (0x84, 0x29, 0xF6), (0x6E, 0xC1, 0xE4), (0xFE, 0xDD, 0x3A), (0xE2, 0xA9, 0x29)),
    ignore_colors=((0x9B, 0x9B, 0x9B), (0, 0, 0)),
    eval_classes=None,
)

DATASETS: dict[str, DatasetInfo] = {d.name: d for d in (POTSDAM, VAIHINGEN, DUBAI, SYNTHETIC)}


def get_dataset_info(name: str) -> DatasetInfo:
    """Look up a data set definition by name; unknown names raise a one-line error listing the choices."""
    from ctseg.errors import CtsegError

    try:
        return DATASETS[name]
    except KeyError:
        raise CtsegError(f"unknown data set {name!r}; choose one of: {', '.join(sorted(DATASETS))}") from None
