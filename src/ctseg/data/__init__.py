"""Data sets, preparation and LightningDataModules.

Names are imported lazily so that ``import ctseg.data`` stays cheap (rasterio, matplotlib are heavy).
"""

from __future__ import annotations

import importlib
from typing import Any

from ctseg.data.definitions import DATASETS, DatasetInfo, get_dataset_info

#: ``ctseg.data``'s public names imported on first use: name → the module defining it.
EXPORTS = {
    "PreparedDataset": "ctseg.data.prepared",
    "PreparedDataModule": "ctseg.data.datamodules",
    "PotsdamDataModule": "ctseg.data.datamodules",
    "VaihingenDataModule": "ctseg.data.datamodules",
    "DubaiDataModule": "ctseg.data.datamodules",
    "FolderDataModule": "ctseg.data.datamodules",
    "LoveDADataModule": "ctseg.data.datamodules",
    "UAVidDataModule": "ctseg.data.datamodules",
    "DatasetSpec": "ctseg.data.registry",
    "register_dataset": "ctseg.data.registry",
    "list_datasets": "ctseg.data.registry",
    "get_dataset": "ctseg.data.registry",
    "SyntheticAerialDataset": "ctseg.data.synthetic",
    "SyntheticDataModule": "ctseg.data.synthetic",
    "generate_scene": "ctseg.data.synthetic",
    "prepare_dataset": "ctseg.data.prepare",
}

__all__ = ["DATASETS", "DatasetInfo", "EXPORTS", "get_dataset_info", *EXPORTS]


def __getattr__(name: str) -> Any:
    if name in EXPORTS:
        return getattr(importlib.import_module(EXPORTS[name]), name)
    raise AttributeError(f"module 'ctseg.data' has no attribute {name!r}")
