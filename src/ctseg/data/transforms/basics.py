"""The basics of every augmentation preset (:mod:`ctseg.data.transforms`): bands and values, normalisation, and
the crop / resize / random-draw / rotation helpers ctseg's recipe (:mod:`~ctseg.data.transforms.ctseg`) and the
paper's (:mod:`~ctseg.data.transforms.paper`) are built from.

**Bands and values.** Images may have any number of bands ``C`` and dtype uint8, uint16 or floating.
:func:`to_float_image` divides by :func:`value_scale` (255 for uint8, 65535 for uint16, 1 for floating
images, taken as 0–1 already); normalisation statistics ``mean`` / ``std`` have ``C`` values each, on that
``x / value_scale`` scale (a count that differs from the image's bands is a :class:`~ctseg.errors.CtsegError`).
Every step treats the bands alike (padding is 0 in every band; no colour operations), and the conversion comes
before any arithmetic, so a transform gives the same result on a uint16 image ``x`` as on the float image
``x / 65535`` with the same generator. Outputs are float32 normalised images and int64 masks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ctseg.data.definitions import DTYPES, IMAGENET_MEAN, IMAGENET_STD, DatasetInfo
from ctseg.data.definitions import value_scale as _named_scale
from ctseg.errors import CtsegError

__all__ = [
    "Normalize", "band_stats", "check_band_stats", "crop_window", "draw_int", "normalize", "resize_pair",
    "rotations_of", "to_float_image", "value_scale",
]  # fmt: skip


def _torch_dtype(dtype: Any) -> torch.dtype:
    """``dtype`` (a torch dtype, a numpy dtype or scalar type, or a name such as ``"uint16"``) as a torch dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    found = getattr(torch, dtype.removeprefix("torch."), None) if isinstance(dtype, str) else None
    if not isinstance(found, torch.dtype):
        try:
            found = getattr(torch, np.dtype(dtype).name, None)
        except TypeError:
            found = None
    if not isinstance(found, torch.dtype):
        raise CtsegError(f"unknown image dtype {dtype!r}; images must be uint8, uint16 or floating point")
    return found


def value_scale(dtype: Any) -> float:
    """The value that maps an image dtype's range onto 0–1: 255.0 for uint8, 65535.0 for uint16, 1.0 for floats.

    :func:`to_float_image` divides by it, so normalisation statistics (``mean`` / ``std``) are on the scale
    ``x / value_scale(dtype)`` (ImageNet's for 8-bit RGB). ``dtype``: a torch dtype, a numpy dtype or scalar
    type, or a name (``"uint8"``, ``"uint16"``, ``"float32"``). Other dtypes (signed or wider integers, bool,
    complex) raise :class:`~ctseg.errors.CtsegError`.
    """
    torch_dtype = _torch_dtype(dtype)
    name = "float32" if torch_dtype.is_floating_point else str(torch_dtype).removeprefix("torch.")
    if name not in DTYPES:
        raise CtsegError(f"unsupported image dtype {name}; images must be uint8, uint16 or floating point")
    return _named_scale(name)  # the one table of scales (floating images: float32's, 1)


_STATS_CACHE: dict[tuple, Tensor] = {}


def band_stats(values: Sequence[float], device: torch.device) -> Tensor:
    """(n, 1, 1) float32 tensor of ``values`` on ``device`` (the per-band statistics: (C, 1, 1)), cached so that
    no host-to-device copy happens per batch."""
    key = (tuple(float(v) for v in values), str(device))
    if key not in _STATS_CACHE:
        _STATS_CACHE[key] = torch.tensor(key[0], dtype=torch.float32, device=device).view(-1, 1, 1)
    return _STATS_CACHE[key]


def check_band_stats(mean: Sequence[float], std: Sequence[float]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``mean``, ``std`` as tuples of floats; one value per band each (same count, at least one)."""
    mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    if not mean or len(mean) != len(std):
        raise CtsegError(f"normalisation mean and std need one value per band each, got {len(mean)} and {len(std)}")
    return mean, std


def to_float_image(image: Tensor) -> Tensor:
    """uint8 → float32 ``x / 255``, uint16 → ``x / 65535`` (:func:`value_scale`); floating images are taken as
    0–1 already (cast to float32); other dtypes raise :class:`~ctseg.errors.CtsegError`."""
    scale = value_scale(image.dtype)
    if image.dtype.is_floating_point:
        return image.to(torch.float32)
    return image.to(torch.float32).div_(scale)


def normalize(image: Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> Tensor:
    """(…, C, H, W) uint8, uint16 or float → float32 ``(x / value_scale − mean) / std`` per band.

    ``mean`` and ``std`` have ``C`` values each (on the ``x / value_scale`` scale); another count raises
    :class:`~ctseg.errors.CtsegError`.
    """
    if image.dim() < 3:
        raise CtsegError(f"expected an image (..., C, H, W), got shape {tuple(image.shape)}")
    for name, values in (("mean", mean), ("std", std)):
        if len(values) != image.shape[-3]:
            raise CtsegError(f"normalisation {name} has {len(values)} values but the image has {image.shape[-3]} bands")
    image = to_float_image(image)
    return (image - band_stats(mean, image.device)) / band_stats(std, image.device)


class Normalize:
    """Validation transform on a sample dict (or a batch dict): normalised float32 image, int64 mask.

    Args:
        mean, std: per-band statistics on the ``x / value_scale`` scale (default ImageNet, as the authors).
    """

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        self.mean, self.std = check_band_stats(mean, std)

    @classmethod
    def from_info(cls, info: DatasetInfo) -> Normalize:
        return cls(info.mean, info.std)

    def __call__(self, sample: dict[str, Any], generator: torch.Generator | None = None) -> dict[str, Any]:
        out = dict(sample)
        out["image"] = normalize(sample["image"], self.mean, self.std)
        if "mask" in sample:
            out["mask"] = sample["mask"].to(torch.int64)
        return out


def draw_int(generator: torch.Generator | None, low: int, high: int) -> int:
    """Uniform integer in [low, high] (both included)."""
    return int(torch.randint(low, high + 1, (), generator=generator))


def crop_window(x: Tensor, top: int, left: int, size: int, fill: float) -> Tensor:
    """``size`` × ``size`` window of (…, H, W) at (top, left); the part outside ``x`` is ``fill``."""
    height, width = x.shape[-2:]
    if 0 <= top and 0 <= left and top + size <= height and left + size <= width:
        return x[..., top : top + size, left : left + size]
    out = x.new_full((*x.shape[:-2], size, size), fill)
    r0, c0 = max(top, 0), max(left, 0)
    r1, c1 = min(top + size, height), min(left + size, width)
    if r1 > r0 and c1 > c0:
        out[..., r0 - top : r1 - top, c0 - left : c1 - left] = x[..., r0:r1, c0:c1]
    return out


def resize_pair(image: Tensor, mask: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """(C, H, W) float image bilinear, (H, W) int64 mask nearest (pixel centres), to ``size``."""
    image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
    mask = F.interpolate(mask[None, None].to(torch.float32), size=size, mode="nearest-exact")[0, 0]
    return image, mask.to(torch.int64)


#: The four rotations by 90° as 2 × 2 matrices acting on (x, y) output coordinates.
_ROTATIONS = ((1, 0, 0, 1), (0, -1, 1, 0), (-1, 0, 0, -1), (0, 1, -1, 0))
_ROT_CACHE: dict[str, Tensor] = {}


def rotations_of(device: torch.device) -> Tensor:
    key = str(device)
    if key not in _ROT_CACHE:
        _ROT_CACHE[key] = torch.tensor(_ROTATIONS, dtype=torch.float32, device=device).view(4, 2, 2)
    return _ROT_CACHE[key]
