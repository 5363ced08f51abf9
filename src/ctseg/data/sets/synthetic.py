"""The built-in synthetic scenes (:mod:`ctseg.data.synthetic`): six ISPRS classes, same palette and protocol as
Potsdam, generated on the fly — nothing to prepare (``ctseg demo`` and the tests train on them)."""

from __future__ import annotations

from ctseg.data.definitions import DatasetInfo
from ctseg.data.registry import DatasetSpec, register_dataset
from ctseg.data.sets.isprs import ISPRS_CLASSES, ISPRS_COLORS

#: Procedural scenes with the six ISPRS classes (same palette and protocol as Potsdam).
SYNTHETIC = DatasetInfo(name="synthetic", classes=ISPRS_CLASSES, colors=ISPRS_COLORS, eval_classes=(0, 1, 2, 3, 4))

register_dataset(
    DatasetSpec(
        name="synthetic",
        summary="procedural aerial scenes generated on the fly (ctseg demo)",
        info=SYNTHETIC,
        datamodule="ctseg.data.SyntheticDataModule",
    )
)
