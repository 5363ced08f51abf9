"""Training augmentation and normalisation on tensors: the basics and ctseg's own recipe, per sample and batched.

Presets (``augment: paper | ctseg | none`` in the data modules, :mod:`ctseg.data.datamodules`):

``ctseg`` — **ctseg's own recipe** (the default, not the paper's): random scale (factor uniform in
``scale_range``, default 0.75–1.5), plain random crop of ``crop_size`` (default: the training size; where the
scaled image is smaller the window overhangs and is padded, image black, mask ``ignore_index``), resize to the
training ``size`` when the crop size differs, a random 90° rotation (``k`` uniform), random horizontal and
vertical flips, then normalisation; :class:`TrainTransform` (per sample) and :class:`BatchTrainTransform`
(batched).

``paper`` — **the authors' training augmentation** (their ``train_aug``, docs/design.md §1.12):
:class:`PaperTrainTransform` and :class:`PaperBatchTransform`, defined in :mod:`ctseg.data.paper_transforms`
(which describes the recipe) and re-exported here (imported on first use: that module builds on this one).

``none`` only normalises. In every preset images are interpolated bilinearly and masks always with nearest
neighbour (no invented labels; the authors' Pillow default filter for masks is not repeated). Validation,
every preset: normalisation only (:class:`Normalize`) — the authors' "resize to 512" is done once, when the
data are prepared (the ISPRS 500 px crops are stored at 512, :mod:`ctseg.data.prepare`).

Where things run:

- the per-sample classes work on one sample dict ``{"image": (C, H, W), "mask": (H, W), ...}`` on the CPU, as
  the training transform inside DataLoader workers;
- the batched classes work on a whole batch on whatever device it is on: scale, crop, resize and rotation (and
  flips for ``ctseg``) are folded into one affine map per sample, applied with one ``grid_sample`` for the
  images (bilinear) and one for the masks (nearest). Every random draw is a device tensor, shapes are fixed:
  no host–device sync.

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

from ctseg.data.definitions import DTYPES, IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD, DatasetInfo
from ctseg.data.definitions import value_scale as _named_scale
from ctseg.errors import CtsegError

#: Public names of :mod:`ctseg.data.paper_transforms`, re-exported here on first use (no import cycle: that
#: module imports this one).
_PAPER_NAMES = (
    "PAPER_CROP", "PAPER_CROP_TRIES", "PAPER_MAX_RATIO", "PAPER_MOSAIC_RATIO", "PAPER_ROTATE_P", "PAPER_SCALES",
    "PAPER_SIZE", "PaperBatchTransform", "PaperTrainTransform", "balanced",
)  # fmt: skip

__all__ = [
    "BatchTrainTransform", "Normalize", "TrainTransform", "normalize", "to_float_image", "value_scale",
    *_PAPER_NAMES,
]  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _PAPER_NAMES:
        from ctseg.data import paper_transforms

        return getattr(paper_transforms, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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


def _uniform(generator: torch.Generator | None, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


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


class _Recipe:
    """Parameters shared by :class:`TrainTransform` and :class:`BatchTrainTransform`."""

    def __init__(
        self,
        size: int = 512,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        *,
        scale_range: tuple[float, float] = (0.75, 1.5),
        crop_size: int | None = None,
        rotate: bool = True,
        flip: bool = True,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        if size < 1 or (crop_size is not None and crop_size < 1):
            raise ValueError("size and crop_size must be positive")
        if not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
        self.size = int(size)
        self.crop_size = int(crop_size or size)
        self.mean, self.std = check_band_stats(mean, std)
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.rotate, self.flip = rotate, flip
        self.ignore_index = ignore_index

    @classmethod
    def from_info(cls, info: DatasetInfo, size: int = 512, **kwargs: Any):
        """The recipe with ``info``'s normalisation statistics and ignore index."""
        return cls(size, info.mean, info.std, ignore_index=info.ignore_index, **kwargs)


class TrainTransform(_Recipe):
    """ctseg's own training augmentation (preset ``ctseg``) on one sample (CPU, DataLoader workers).

    Input: a dict with ``"image"`` (C, H, W) uint8, uint16 or 0–1 float (any number of bands ``C``) and
    ``"mask"`` (H, W) integer; other keys are passed through. Output: ``"image"`` float32 (C, size, size)
    normalised, ``"mask"`` int64 (size, size).

    Args:
        size: output side (the training size).
        mean, std: normalisation statistics, ``C`` values each, on the ``x / value_scale`` scale.
        scale_range: range of the uniform random scale factor (default 0.75–1.5).
        crop_size: side of the random crop taken from the scaled image (default ``size``); resized to ``size``.
        rotate: random multiples of 90°.
        flip: random horizontal and vertical flips.
        ignore_index: mask value of padded pixels.

    Random numbers come from ``generator`` when given (the data modules pass one seeded per sample and epoch),
    else from torch's global generator.
    """

    def __call__(self, sample: dict[str, Any], generator: torch.Generator | None = None) -> dict[str, Any]:
        image = to_float_image(sample["image"])
        mask = sample["mask"].to(torch.int64)
        height, width = image.shape[-2:]
        scale = _uniform(generator, *self.scale_range)
        scaled = (max(1, round(height * scale)), max(1, round(width * scale)))
        if scaled != (height, width):
            image, mask = resize_pair(image, mask, scaled)
        crop = self.crop_size
        top = draw_int(generator, min(0, scaled[0] - crop), max(0, scaled[0] - crop))
        left = draw_int(generator, min(0, scaled[1] - crop), max(0, scaled[1] - crop))
        image = crop_window(image, top, left, crop, 0.0)
        mask = crop_window(mask, top, left, crop, self.ignore_index)
        if crop != self.size:
            image, mask = resize_pair(image, mask, (self.size, self.size))
        if self.rotate:
            k = draw_int(generator, 0, 3)
            image, mask = torch.rot90(image, k, (-2, -1)), torch.rot90(mask, k, (-2, -1))
        if self.flip:
            if draw_int(generator, 0, 1):
                image, mask = image.flip(-1), mask.flip(-1)
            if draw_int(generator, 0, 1):
                image, mask = image.flip(-2), mask.flip(-2)
        out = dict(sample)
        out["image"] = normalize(image.contiguous(), self.mean, self.std)
        out["mask"] = mask.contiguous()
        return out


#: The four rotations by 90° as 2 × 2 matrices acting on (x, y) output coordinates.
_ROTATIONS = ((1, 0, 0, 1), (0, -1, 1, 0), (-1, 0, 0, -1), (0, 1, -1, 0))
_ROT_CACHE: dict[str, Tensor] = {}


def rotations_of(device: torch.device) -> Tensor:
    key = str(device)
    if key not in _ROT_CACHE:
        _ROT_CACHE[key] = torch.tensor(_ROTATIONS, dtype=torch.float32, device=device).view(4, 2, 2)
    return _ROT_CACHE[key]


class BatchTrainTransform(_Recipe):
    """ctseg's own training augmentation (preset ``ctseg``) on a batch, on its device, without host–device syncs.

    ``transform(image, mask, generator=None) -> (image, mask)`` with ``image`` (B, C, H, W) uint8, uint16 or
    0–1 float and ``mask`` (B, H, W) integer on the same device; returns float32 (B, C, size, size) normalised
    and int64 (B, size, size). Each sample gets its own scale, crop position, rotation and flips (same ranges as
    :class:`TrainTransform`, with a sub-pixel rather than rounded scaled size). ``generator`` must live on the
    batch's device.
    """

    def theta(self, batch: int, height: int, width: int, device: torch.device, generator=None) -> Tensor:
        """(B, 2, 3) affine maps from normalised output coordinates to normalised input coordinates.

        An output pixel at normalised ``o`` (after the random rotation / flip ``D``) sits at ``(D o + 1) / 2 · c``
        in the crop, ``+ offset`` in the image scaled by ``s``, i.e. at ``(c / (W s)) (D o) + (c + 2 offset) /
        (W s) - 1`` in normalised input coordinates (``grid_sample``, ``align_corners=False``).
        """
        low, high = self.scale_range
        crop = float(self.crop_size)
        rand = torch.rand(batch, 5, device=device, generator=generator)
        scale = low + (high - low) * rand[:, 0]

        def axis(length: int, u: Tensor) -> tuple[Tensor, Tensor]:
            extent = length * scale
            lo = torch.clamp(extent - crop, max=0.0)
            hi = torch.clamp(extent - crop, min=0.0)
            offset = torch.round(lo + u * (hi - lo))
            return crop / extent, (crop + 2.0 * offset) / extent - 1.0

        ax, bx = axis(width, rand[:, 1])
        ay, by = axis(height, rand[:, 2])
        dihedral = torch.eye(2, device=device).expand(batch, 2, 2)
        if self.rotate:
            k = torch.randint(0, 4, (batch,), device=device, generator=generator)
            dihedral = rotations_of(device)[k]
        if self.flip:
            signs = torch.stack([rand[:, 3] < 0.5, rand[:, 4] < 0.5], dim=1).to(torch.float32) * -2.0 + 1.0
            dihedral = dihedral * signs[:, None, :]  # flip the output x and/or y before rotating
        linear = torch.stack([ax, ay], dim=1)[:, :, None] * dihedral
        return torch.cat([linear, torch.stack([bx, by], dim=1)[:, :, None]], dim=2)

    def __call__(self, image: Tensor, mask: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        if image.dim() != 4 or mask.dim() != 3 or image.shape[0] != mask.shape[0]:
            raise ValueError(
                f"expected image (B, C, H, W) and mask (B, H, W), got {tuple(image.shape)}, {tuple(mask.shape)}"
            )
        batch, _, height, width = image.shape
        theta = self.theta(batch, height, width, image.device, generator)
        grid = F.affine_grid(theta, [batch, 1, self.size, self.size], align_corners=False)
        image = F.grid_sample(to_float_image(image), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        # Shift labels by one so that the zero padding reads as -1, then make it ignore.
        shifted = (mask.to(torch.float32) + 1.0)[:, None]
        shifted = F.grid_sample(shifted, grid, mode="nearest", padding_mode="zeros", align_corners=False)[:, 0]
        labels = shifted.to(torch.int64) - 1
        labels = labels.masked_fill(labels < 0, self.ignore_index)
        return normalize(image, self.mean, self.std), labels
