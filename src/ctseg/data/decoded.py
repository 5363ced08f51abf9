"""Decoded-crop cache: one split's crops as uint8 arrays on disk, memory-mapped, so loading costs a copy.

Prepared crops are compressed files (ZSTD TIFF images, PNG masks; PNG images in folders prepared before issue
33: :mod:`ctseg.data.crops`); decoding a 512² image + mask pair of PNGs takes 14–18 ms of one core of the 2-core
CI machine (``python benchmarks/loader_bench.py``), with the TIFF image ~3× less (``benchmarks/crop_format.py``).
At the 500 images/s a GPU trains at, that is several such cores doing nothing but decode — per GPU. The cache
decodes every crop once and keeps the result as two ``.npy`` files::

    CACHE/<split>-<key>.images.npy   (N, C, H, W) in the stored dtype (uint8 for RGB data sets), channels
                                     first: a crop is one contiguous block
    CACHE/<split>-<key>.masks.npy    uint8 (N, H, W)      class indices, 255 = ignore

``key`` is the first 16 hex digits of the SHA-256 of the folder's ``manifest.json``, so a folder prepared again
gets a new cache and a stale one is never read (older caches of the split are deleted when a new one is
written). Reading crop ``i`` is ``mmap[i]``: a ~1 MiB copy out of the page cache, shared by every DataLoader
worker and DDP process on the machine. Size: ``N · H · W · 4`` bytes (Potsdam at 512² crops, stride 512: ~3.6 GB).

Size: ``N · H · W · (C · itemsize + 1)`` bytes for other band layouts.

Both files are written to temporary names and renamed when complete (images last), so a killed build leaves
no cache that looks finished. All crops of a split must have one size (true of every prepared folder).
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ctseg.errors import CtsegError
from ctseg.io import atomic_path

if TYPE_CHECKING:
    from ctseg.data.prepared import PreparedDataset

#: Default cache folder inside a prepared folder (``ctseg prepare --overwrite`` replaces it with the crops).
DEFAULT_DIR = "decoded"

_FIX = "pass another folder (--data.decoded_cache DIR) or turn the cache off (--data.decoded_cache false)"


def manifest_key(root: str | os.PathLike) -> str:
    """First 16 hex digits of the SHA-256 of ``root/manifest.json`` (identifies one preparation)."""
    from ctseg.data.manifest import MANIFEST

    return hashlib.sha256((Path(root) / MANIFEST).read_bytes()).hexdigest()[:16]


def cache_paths(cache_dir: str | os.PathLike, split: str, key: str) -> tuple[Path, Path]:
    """``(images, masks)`` file paths of one split's cache."""
    base = Path(cache_dir) / f"{split}-{key}"
    return base.with_name(base.name + ".images.npy"), base.with_name(base.name + ".masks.npy")


class DecodedCrops:
    """Read-only, memory-mapped decoded crops of one split; picklable (workers re-open the maps lazily).

    Args:
        images, masks: the two ``.npy`` files (see module docstring).
        count: expected number of crops (a mismatch means a broken cache).

    ``crops[i]`` → ``(image (C, H, W) in the stored dtype, mask uint8 (H, W))``, fresh writable tensors.
    """

    def __init__(self, images: Path, masks: Path, count: int, bands: int = 3, dtype: str = "uint8") -> None:
        self.images_path, self.masks_path = Path(images), Path(masks)
        self._images: np.ndarray | None = None
        self._masks: np.ndarray | None = None
        self.bands, self.dtype = int(bands), str(dtype)
        self._open()
        assert self._images is not None and self._masks is not None
        im, mk = self._images.shape, self._masks.shape
        if len(im) != 4 or im[1] != self.bands or len(mk) != 3 or mk[0] != im[0] or im[0] != count:
            raise CtsegError(
                f"decoded cache {self.images_path} does not match its split ({im} / {mk} for {count} crops); "
                "delete it and it is rebuilt"
            )

    def _open(self) -> None:
        try:
            # allow_pickle=False: an object array (a pickle inside the .npy) is refused, never unpickled
            self._images = np.load(self.images_path, mmap_mode="r", allow_pickle=False)
            self._masks = np.load(self.masks_path, mmap_mode="r", allow_pickle=False)
            if self._images.dtype != np.dtype(self.dtype) or self._masks.dtype != np.uint8:
                raise ValueError(f"holds {self._images.dtype} / {self._masks.dtype} arrays, not {self.dtype} / uint8")
        except (OSError, ValueError) as err:
            raise CtsegError(
                f"decoded cache {self.images_path} is unreadable ({str(err).splitlines()[0]}); "
                "delete it and it is rebuilt"
            ) from None

    def __len__(self) -> int:
        assert self._images is not None
        return int(self._images.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)`` of every crop."""
        assert self._images is not None
        return int(self._images.shape[2]), int(self._images.shape[3])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._images is None or self._masks is None:
            self._open()
        assert self._images is not None and self._masks is not None
        return torch.from_numpy(np.array(self._images[index])), torch.from_numpy(np.array(self._masks[index]))

    def __getstate__(self) -> dict[str, Any]:
        # A pickled memmap would carry its whole content into every worker; send the paths only.
        return {**self.__dict__, "_images": None, "_masks": None}


def _write_split(dataset: PreparedDataset, images_path: Path, masks_path: Path, workers: int) -> None:
    n = len(dataset)
    first_image, first_mask = dataset.read_png(0)
    h, w = first_image.shape[-2:]
    mh, mw = first_mask.shape[-2:]  # evaluation splits: the label's native size, not the image's
    with atomic_path(images_path) as tmp_images, atomic_path(masks_path) as tmp_masks:
        bands, dtype = first_image.shape[0], first_image.numpy().dtype
        images = np.lib.format.open_memmap(tmp_images, mode="w+", dtype=dtype, shape=(n, bands, h, w))
        masks = np.lib.format.open_memmap(tmp_masks, mode="w+", dtype=np.uint8, shape=(n, mh, mw))

        def fill(i: int, images: np.ndarray = images, masks: np.ndarray = masks) -> None:
            image, mask = dataset.read_png(i)
            if tuple(image.shape[-2:]) != (h, w) or tuple(mask.shape[-2:]) != (mh, mw):
                record = dataset.records[i]["image"]
                raise CtsegError(
                    f"{dataset.root / record} is {tuple(image.shape[-2:])}, not {(h, w)} like the split's first "
                    "crop; the decoded cache needs crops of one size (prepare the data again)"
                )
            images[i] = image.numpy()
            masks[i] = mask.numpy()

        # Pillow and rasterio release the GIL while decoding: threads scale over the cores without pickling arrays.
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for _ in pool.map(fill, range(n)):
                pass
        images.flush()
        masks.flush()
        del images, masks
    # atomic_path renames on exit: the masks' file first, the images' last (the images' name marks completion).


def ensure_decoded(
    dataset: PreparedDataset, cache_dir: str | os.PathLike | None = None, workers: int | None = None
) -> DecodedCrops:
    """Open the decoded cache of ``dataset``'s split, building it first when absent.

    Args:
        dataset: a :class:`~ctseg.data.prepared.PreparedDataset` (its crop files are read when building).
        cache_dir: the cache folder (default ``<prepared folder>/decoded``).
        workers: decoding threads when building (default: the CPU count).

    Raises:
        CtsegError: the folder cannot be written (read-only, disk full), a crop has another size, or an
            existing cache is broken — one line naming the folder and the fix.
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else dataset.root / DEFAULT_DIR
    key = manifest_key(dataset.root)
    images_path, masks_path = cache_paths(cache, dataset.split, key)
    if not (images_path.is_file() and masks_path.is_file()):
        try:
            cache.mkdir(parents=True, exist_ok=True)
            _write_split(dataset, images_path, masks_path, workers or os.cpu_count() or 1)
        except OSError as err:
            raise CtsegError(
                f"cannot write the decoded-crop cache in {cache} ({err.strerror or err}); {_FIX}"
            ) from None
        for old in cache.glob(f"{dataset.split}-*.npy"):
            if old not in (images_path, masks_path):
                old.unlink(missing_ok=True)
    return DecodedCrops(images_path, masks_path, len(dataset), dataset.info.bands, dataset.info.dtype)
