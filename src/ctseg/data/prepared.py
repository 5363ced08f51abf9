"""Reading prepared crops back (the folders written by :func:`ctseg.data.prepare.prepare_dataset`)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ctseg.data.decoded import DecodedCrops, ensure_decoded
from ctseg.data.definitions import DATASETS, DatasetInfo
from ctseg.data.prepare import FORMAT, FORMAT_VERSION, MANIFEST, is_eval_split
from ctseg.errors import CtsegError

_HINT = "prepare it first with `ctseg prepare <dataset> --src DOWNLOAD --dst FOLDER`"


def load_manifest(root: str | os.PathLike) -> dict[str, Any]:
    """Read and check ``root/manifest.json``; a missing or garbled one raises :class:`CtsegError`."""
    root = Path(root).expanduser()
    path = root / MANIFEST
    if not root.is_dir():
        raise CtsegError(f"prepared data folder {root} does not exist; {_HINT}")
    if not path.is_file():
        raise CtsegError(f"{root} is not a prepared data folder (no {MANIFEST}); {_HINT}")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CtsegError(f"{path} is unreadable ({str(err).splitlines()[0]}); prepare the data again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CtsegError(f'{path} is not a ctseg manifest (expected "format": "{FORMAT}")')
    if int(manifest.get("version", 0)) > FORMAT_VERSION:
        raise CtsegError(f"{path} was written by a newer ctseg (format version {manifest['version']})")
    try:
        for key in ("name", "classes", "colors"):
            manifest["dataset"][key]
        for record in manifest["crops"]:
            record["image"], record["mask"], record["tile"], record["offset"], record["split"]
    except (KeyError, TypeError):
        raise CtsegError(f"{path} is garbled (missing dataset or crop fields); prepare the data again") from None
    return manifest


def info_from_manifest(manifest: dict[str, Any]) -> DatasetInfo:
    """The :class:`DatasetInfo` stored in a manifest (the registered object when it is the same)."""
    d = manifest["dataset"]
    defaults = DatasetInfo(name="_", classes=(), colors=())
    info = DatasetInfo(
        name=d["name"],
        classes=tuple(d["classes"]),
        colors=tuple(tuple(int(v) for v in c) for c in d["colors"]),
        ignore_colors=tuple(tuple(int(v) for v in c) for c in d.get("ignore_colors", ())),
        eval_classes=None if d.get("eval_classes") is None else tuple(d["eval_classes"]),
        mean=tuple(d.get("mean", defaults.mean)),
        std=tuple(d.get("std", defaults.std)),
        ignore_index=int(d.get("ignore_index", defaults.ignore_index)),
    )
    known = DATASETS.get(info.name)
    return known if known == info else info


def _read_png(path: Path, mode: str) -> np.ndarray:
    try:
        with Image.open(path) as im:
            if im.mode != mode:
                raise CtsegError(f"{path}: expected a {mode} PNG, found mode {im.mode}; prepare the data again")
            return np.array(im)
    except CtsegError:
        raise
    except FileNotFoundError:
        raise CtsegError(f"{path} is missing; prepare the data again (with --overwrite)") from None
    except Exception as err:
        raise CtsegError(f"cannot read {path}: {str(err).splitlines()[0]}") from None


class PreparedDataset(Dataset):
    """The crops of one split of a prepared folder.

    ``ds[i]`` is a dict:

    - ``"image"``: float32 (3, H, W) in 0–1 — *not* normalised: normalisation (``info.mean`` / ``info.std``)
      is the transform's job (:mod:`ctseg.data.transforms`, done by the data modules);
    - ``"mask"``: int64 (H', W') class indices, ``info.ignore_index`` (255) = ignore. Training crops: the image's
      size. Evaluation splits (all but ``"train"``): the label's native crop size (ISPRS: 500 × 500 beside a
      512 × 512 image; the manifest's ``mask_size``), with the pixels an earlier crop already holds set to
      ignore, so that every source pixel is scored once (:mod:`ctseg.data.prepare`);
    - ``"meta"``: ``{"tile": str, "offset": (row, col)}`` — the source tile and the crop's top-left corner in it
      (source pixels, before the resize done at preparation).

    With ``as_uint8=True`` (the fast pipeline: decode only, augment batched on the device) ``"image"`` is uint8
    (3, H, W) in 0–255 and ``"mask"`` uint8 (H, W). ``transform``, if given, maps that dict to a new one.
    No augmentation happens here.

    With ``decoded_cache`` set, crops are read from the split's decoded uint8 cache
    (:mod:`ctseg.data.decoded`; built on first use, then a memory-mapped copy per crop instead of two PNG
    decodes); the values are identical.

    Args:
        root: folder written by :func:`ctseg.data.prepare_dataset`.
        split: ``"train"`` or ``"test"`` (or another split name given at preparation).
        transform: callable on the sample dict.
        as_uint8: return uint8 tensors (see above).
        decoded_cache: ``True`` (cache in ``<root>/decoded``), a cache folder, or ``None`` / ``False`` (read
            the PNGs).

    Raises:
        CtsegError: missing or garbled folder / manifest, unknown or empty split, a missing or broken crop file,
            an evaluation split of a folder prepared by format version 1 (resized test masks, overlaps counted
            twice: prepare it again).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        *,
        as_uint8: bool = False,
        decoded_cache: bool | str | os.PathLike | None = None,
    ) -> None:
        self.root = Path(root).expanduser()
        self.manifest = load_manifest(self.root)
        self.info: DatasetInfo = info_from_manifest(self.manifest)
        self.split = split
        self.transform = transform
        self.as_uint8 = as_uint8
        self.records = [r for r in self.manifest["crops"] if r["split"] == split]
        if not self.records:
            present = sorted({r["split"] for r in self.manifest["crops"]})
            raise CtsegError(
                f"{self.root} has no crops in split {split!r} (splits present: {', '.join(present) or 'none'})"
            )
        version = int(self.manifest.get("version", 0))
        if is_eval_split(split) and version < 2:
            raise CtsegError(
                f"{self.root} was prepared by an older ctseg (format version {version}), whose {split!r} masks are "
                "resized and count overlapping border pixels twice; prepare it again: ctseg prepare "
                f"{self.info.name} --src DOWNLOAD --dst {self.root} --overwrite"
            )
        size = (self.manifest.get("mask_size") or {}).get(split)
        #: (H', W') of every mask of the split, or None: the mask has its image's size.
        self.mask_size: tuple[int, int] | None = None if size is None else (int(size), int(size))
        self.decoded: DecodedCrops | None = None
        if decoded_cache:
            self.use_decoded_cache(None if decoded_cache is True else decoded_cache)

    def use_decoded_cache(self, cache_dir: str | os.PathLike | None = None) -> None:
        """Read crops from the decoded cache in ``cache_dir`` (default ``<root>/decoded``), building it if absent."""
        self.decoded = ensure_decoded(self, cache_dir)

    @property
    def classes(self) -> list[str]:
        """Class names in index order."""
        return list(self.info.classes)

    @property
    def splits(self) -> list[str]:
        """Split names present in the folder."""
        return sorted({r["split"] for r in self.manifest["crops"]})

    def __len__(self) -> int:
        return len(self.records)

    def read_uint8(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Fast path: (image uint8 (3, H, W), mask uint8 (H, W)) of crop ``index``, nothing else."""
        if self.decoded is not None:
            return self.decoded[index]
        return self.read_png(index)

    def read_png(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(image uint8 (3, H, W), mask uint8 (H, W)) of crop ``index`` decoded from its PNG files."""
        record = self.records[index]
        image = _read_png(self.root / record["image"], "RGB")
        mask = _read_png(self.root / record["mask"], "L")
        expected = self.mask_size or image.shape[:2]
        if mask.shape != tuple(expected):
            raise CtsegError(
                f"{self.root / record['mask']}: mask is {mask.shape[0]}×{mask.shape[1]}, expected "
                f"{expected[0]}×{expected[1]}; prepare the data again"
            )
        return torch.from_numpy(image).permute(2, 0, 1).contiguous(), torch.from_numpy(mask)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        image, mask = self.read_uint8(index)
        if not self.as_uint8:
            image = image.to(torch.float32).div_(255.0)
            mask = mask.to(torch.int64)
        sample = {"image": image, "mask": mask, "meta": {"tile": record["tile"], "offset": tuple(record["offset"])}}
        return self.transform(sample) if self.transform is not None else sample

    def __repr__(self) -> str:
        return f"PreparedDataset({str(self.root)!r}, split={self.split!r}, {len(self)} crops, {self.info.name})"
