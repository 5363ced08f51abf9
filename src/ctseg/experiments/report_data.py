"""``ctseg report``'s data: the data module a run records, rebuilt for **reading** its validation split only.

A run's record (a ``results.json``'s ``data`` block, a fit run's ``config.yaml``) may come from someone else
(:mod:`ctseg.safety`), and what it records is data, never directions:

* the class is one of :data:`DATA_MODULES` (ctseg's own, spelled ``ctseg.data.<Name>`` or
  ``ctseg.data.datamodules.<Name>`` / ``ctseg.data.synthetic.<Name>``); for any other ``class_path`` nothing is
  imported (:func:`import_data_module`) and the caller skips what needed the data with a note;
* of the recorded ``init_args`` only these are taken, type-checked: ``root`` (an existing prepared ctseg folder:
  its ``manifest.json`` read within bounds) and ``val_split`` (a plain split name) for the prepared-folder
  modules; ``train_samples``, ``val_samples``, ``image_size``, ``seed`` (bounded integers) for the synthetic
  one. Everything else is fixed by the report — no worker processes, small batches and **no decoded cache**
  (a recorded ``decoded_cache`` would build and replace ``.npy`` files in a folder the file names) — and any
  other recorded argument is ignored.

:func:`build_datamodule` builds it; :func:`val_batches` reads its validation split batch by batch,
:func:`val_samples` the first few crops.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ctseg.data import EXPORTS as DATA_EXPORTS
from ctseg.errors import CtsegError
from ctseg.safety.documents import read_json

__all__ = ["DATA_MODULES", "build_datamodule", "import_data_module", "val_batches", "val_samples"]

#: The data modules a run's record may name — those ``ctseg.data`` exports (docs/datasets.md), taken from its
#: export table: class name → the module defining it. A ``class_path`` is accepted as ``ctseg.data.<Name>`` or
#: ``<module>.<Name>``.
DATA_MODULES: dict[str, str] = {name: module for name, module in DATA_EXPORTS.items() if name.endswith("DataModule")}
#: ``init_args`` of the synthetic data module taken from a run's record: name → (lowest, highest) integer.
_SYNTHETIC_ARGS = {
    "train_samples": (1, 1_000_000),
    "val_samples": (1, 1_000_000),
    "image_size": (32, 2048),
    "seed": (0, 2**63 - 1),
}
#: What the report builds every data module with: read in this process, in small batches, nothing written.
_FIXED_ARGS = {"batch_size": 4, "num_workers": 0, "pin_memory": False}
_PREPARED_FIXED = {**_FIXED_ARGS, "persistent_workers": False, "decoded_cache": False}
_SPLIT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_MANIFEST_BYTES = 256 * 1024 * 1024  # a prepared folder's manifest lists every crop


def import_data_module(class_path: Any):
    """The data module class a run's record names — only one of :data:`DATA_MODULES`: the file may come from
    someone else, and the class is called. For any other name nothing is imported."""
    name = class_path.rpartition(".")[2] if isinstance(class_path, str) else ""
    module = DATA_MODULES.get(name)
    if module is None or class_path not in (f"ctseg.data.{name}", f"{module}.{name}"):
        shown = class_path[:200] if isinstance(class_path, str) else type(class_path).__name__
        raise CtsegError(
            f"the run's data module {shown!r} is not one of ctseg's; only its data modules are rebuilt "
            f"({', '.join(DATA_MODULES)})"
        )
    return getattr(importlib.import_module(module), name)


def _int_arg(key: str, value: Any, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise CtsegError(f"the run's data argument {key} = {str(value)[:80]!r} is not an integer in [{low}, {high}]")
    return value


def _data_root(value: Any, cwd: Any) -> str:
    """The recorded ``root`` when it is a prepared ctseg folder here (relative: from this process's working
    folder, else from the run's recorded one, ``cwd``); read only."""
    from ctseg.data.manifest import FORMAT, MANIFEST

    if not isinstance(value, str) or not value:
        raise CtsegError("the run records no data folder (data.init_args.root)")
    root = Path(value).expanduser()
    if not root.exists() and not root.is_absolute() and isinstance(cwd, str) and cwd and (Path(cwd) / root).exists():
        root = Path(cwd) / root
    manifest = root / MANIFEST
    if not root.is_dir() or not manifest.is_file():
        raise CtsegError(f"the run's data folder {value[:300]!r} is not a prepared ctseg folder here (no {MANIFEST})")
    doc = read_json(manifest, "prepared data manifest", max_bytes=_MANIFEST_BYTES)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CtsegError(f'{manifest} is not a ctseg manifest (expected "format": "{FORMAT}")')
    return str(root)


def _data_args(name: str, init_args: Any, cwd: Any) -> dict[str, Any]:
    """The keyword arguments the report builds data module ``name`` with: the few recorded ones it needs,
    checked, and :data:`_FIXED_ARGS` (no decoded cache: nothing is written); the rest are ignored."""
    if not isinstance(init_args, dict):
        raise CtsegError("the run's data.init_args is not a mapping")
    if name == "SyntheticDataModule":
        kwargs = {k: _int_arg(k, init_args[k], *bounds) for k, bounds in _SYNTHETIC_ARGS.items() if k in init_args}
        return {**kwargs, **_FIXED_ARGS}
    kwargs = {"root": _data_root(init_args.get("root"), cwd), **_PREPARED_FIXED}
    split = init_args.get("val_split")
    if split is not None:
        if not (isinstance(split, str) and _SPLIT_NAME.fullmatch(split)):
            raise CtsegError(f"the run's data argument val_split = {str(split)[:80]!r} is not a split name")
        kwargs["val_split"] = split
    return kwargs


def build_datamodule(spec: Any, cwd: Any = None):
    """The data module of a run's ``data`` block (``{"class_path": …, "init_args": {…}}``), built for reading only
    (module docstring); ``cwd``: the working folder the run recorded, for a relative ``root``."""
    if not isinstance(spec, dict) or not spec.get("class_path"):
        raise CtsegError("the run records no data module")
    cls = import_data_module(spec["class_path"])
    return cls(**_data_args(cls.__name__, spec.get("init_args") or {}, cwd))


def val_batches(dm) -> Iterator[dict[str, Any]]:
    """The validation batches of data module ``dm`` (set up here), as the task sees them: ``image`` float
    ``(B, C, H, W)`` normalised, ``mask`` ``(B, H, W)`` class indices (a device transform applied on the CPU)."""
    dm.setup("validate")
    for batch in dm.val_dataloader():
        if getattr(dm, "augment_on_device", False) and hasattr(dm, "device_transform"):  # stored dtype
            batch = dm.device_transform(batch, training=False)
        yield {**batch, "image": batch["image"].float()}


def val_samples(dm, limit: int) -> tuple[list[np.ndarray], list[np.ndarray], Any]:
    """Up to ``limit`` validation ``(images (C, H, W) normalised float, masks (H, W))`` and the batches' source."""
    images: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    for batch in val_batches(dm):
        images += list(batch["image"].numpy())
        masks += list(batch["mask"].numpy())
        if len(images) >= limit:
            break
    if not images:
        raise CtsegError("the data module has no validation samples")
    return images[:limit], masks[:limit], dm
