"""Reading prepared crops back (the folders written by :func:`ctseg.data.prepare.prepare_dataset`)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ctseg.data.crops import read_crop_image
from ctseg.data.decoded import DecodedCrops, ensure_decoded
from ctseg.data.definitions import DatasetInfo
from ctseg.data.manifest import MIN_EVAL_VERSION, info_from_manifest, load_manifest
from ctseg.data.splits import is_eval_split
from ctseg.errors import CtsegError

__all__ = ["PreparedDataset", "info_from_manifest", "load_manifest"]


def _read(path: Path, what: str) -> np.ndarray:
    """An image crop (C, H, W) or a mask crop (H, W) uint8; missing or broken files are a one-line error."""
    try:
        if what == "mask":
            with Image.open(path) as im:
                if im.mode != "L":
                    raise CtsegError(f"{path}: expected a L PNG, found mode {im.mode}; prepare the data again")
                return np.array(im)
        return read_crop_image(path)
    except CtsegError:
        raise
    except FileNotFoundError:
        raise CtsegError(f"{path} is missing; prepare the data again (with --overwrite)") from None
    except Exception as err:
        if not path.exists():
            raise CtsegError(f"{path} is missing; prepare the data again (with --overwrite)") from None
        raise CtsegError(f"cannot read {path}: {str(err).splitlines()[0]}") from None


class PreparedDataset(Dataset):
    """The crops of one split of a prepared folder.

    ``ds[i]`` is a dict:

    - ``"image"``: float32 (C, H, W) = stored values / ``info.scale`` (0–1 for uint8 and uint16; C =
      ``info.bands``) — *not* normalised: normalisation (``info.mean`` / ``info.std``) is the transform's job
      (:mod:`ctseg.data.transforms`, done by the data modules);
    - ``"mask"``: int64 (H', W') class indices, ``info.ignore_index`` (255) = ignore. Training crops: the image's
      size. Evaluation splits (all but ``"train"``): the label's native crop size (ISPRS: 500 × 500 beside a
      512 × 512 image; the manifest's ``mask_size``), with the pixels an earlier crop already holds set to
      ignore, so that every source pixel is scored once (:mod:`ctseg.data.prepare`);
    - ``"meta"``: ``{"tile": str, "offset": (row, col)}`` — the source tile and the crop's top-left corner in it
      (source pixels, before the resize done at preparation).

    With ``as_uint8=True`` (the fast pipeline: decode only, augment batched on the device) ``"image"`` keeps
    the stored dtype (uint8 (C, H, W) in 0–255 for RGB data sets; uint16 / float32 otherwise — the name is
    historical) and ``"mask"`` is uint8 (H, W). ``transform``, if given, maps that dict to a new one.
    No augmentation happens here.

    With ``decoded_cache`` set, crops are read from the split's decoded uint8 cache
    (:mod:`ctseg.data.decoded`; built on first use, then a memory-mapped copy per crop instead of decoding
    two files); the values are identical. Image crops are TIFFs, or RGB PNGs in folders prepared before issue 33
    (:mod:`ctseg.data.crops`): both are read.

    Args:
        root: folder written by :func:`ctseg.data.prepare_dataset`.
        split: ``"train"`` or ``"test"`` (or another split name given at preparation).
        transform: callable on the sample dict.
        as_uint8: return uint8 tensors (see above).
        decoded_cache: ``True`` (cache in ``<root>/decoded``), a cache folder, or ``None`` / ``False`` (read
            the crop files).

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
        if is_eval_split(split) and version < MIN_EVAL_VERSION:
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
        """Fast path: (image (C, H, W) in the stored dtype, mask uint8 (H, W)) of crop ``index``, nothing else."""
        if self.decoded is not None:
            return self.decoded[index]
        return self.read_png(index)

    def read_png(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(image (C, H, W) in the stored dtype, mask uint8 (H, W)) of crop ``index`` decoded from its files
        (whatever their format: TIFF or PNG images; the name is historical)."""
        record = self.records[index]
        image = _read(self.root / record["image"], "image")
        mask = _read(self.root / record["mask"], "mask")
        if image.shape[0] != self.info.bands or image.dtype.name != self.info.dtype:
            raise CtsegError(
                f"{self.root / record['image']}: {image.shape[0]} band(s) {image.dtype.name}, but the manifest says "
                f"{self.info.band_layout()}; prepare the data again"
            )
        expected = self.mask_size or image.shape[1:]
        if mask.shape != tuple(expected):
            raise CtsegError(
                f"{self.root / record['mask']}: mask is {mask.shape[0]}×{mask.shape[1]}, expected "
                f"{expected[0]}×{expected[1]}; prepare the data again"
            )
        return torch.from_numpy(np.ascontiguousarray(image)), torch.from_numpy(mask)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        image, mask = self.read_uint8(index)
        if not self.as_uint8:
            image = image.to(torch.float32).div_(self.info.scale)
            mask = mask.to(torch.int64)
        sample = {"image": image, "mask": mask, "meta": {"tile": record["tile"], "offset": tuple(record["offset"])}}
        return self.transform(sample) if self.transform is not None else sample

    def __repr__(self) -> str:
        return f"PreparedDataset({str(self.root)!r}, split={self.split!r}, {len(self)} crops, {self.info.name})"
