"""The authors' training augmentation, on tensors: per sample (DataLoader workers) and batched (on the device).

Training, in this order: random scale (factor uniform in ``scale_range``, default 0.75–1.5), random crop of
``crop_size`` (default: the training size; where the scaled image is smaller the crop is padded, image with
black, mask with ``ignore_index``), resize to the training ``size`` when the crop size differs, a random
90° rotation, random horizontal and vertical flips, then normalisation ``(x / 255 - mean) / std``.
Images are interpolated bilinearly, masks always with nearest neighbour (no invented labels).
Validation: normalisation only.

Two implementations of the same recipe:

- :class:`TrainTransform` works on one sample dict ``{"image": (3, H, W), "mask": (H, W), ...}`` on the CPU, as a
  ``PreparedDataset`` transform inside DataLoader workers;
- :class:`BatchTrainTransform` works on a whole batch on whatever device it is on: scale, crop, resize, rotation
  and flip are folded into one affine map per sample, applied with one ``grid_sample`` for the images (bilinear)
  and one for the masks (nearest). Every random draw is a device tensor, shapes are fixed: no host–device sync.

Images may be uint8 (0–255) or float (0–1); outputs are float32 normalised images and int64 masks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ctseg.data.definitions import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD, DatasetInfo

_STATS_CACHE: dict[tuple, Tensor] = {}


def _stats(values: Sequence[float], device: torch.device) -> Tensor:
    """(3, 1, 1) float32 tensor on ``device``, cached so that no host-to-device copy happens per batch."""
    key = (tuple(float(v) for v in values), str(device))
    if key not in _STATS_CACHE:
        _STATS_CACHE[key] = torch.tensor(key[0], dtype=torch.float32, device=device).view(-1, 1, 1)
    return _STATS_CACHE[key]


def to_float_image(image: Tensor) -> Tensor:
    """uint8 0–255 → float32 0–1; floating images are taken as 0–1 already (cast to float32)."""
    if image.dtype == torch.uint8:
        return image.to(torch.float32).div_(255.0)
    return image.to(torch.float32)


def normalize(image: Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> Tensor:
    """(…, 3, H, W) uint8 or 0–1 float → float32 ``(x - mean) / std`` per channel."""
    image = to_float_image(image)
    return (image - _stats(mean, image.device)) / _stats(std, image.device)


class Normalize:
    """Validation transform on a sample dict (or a batch dict): normalised float32 image, int64 mask.

    Args:
        mean, std: per-channel statistics on the 0–1 scale (default ImageNet, as the authors).
    """

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        self.mean, self.std = tuple(mean), tuple(std)

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


def _randint(generator: torch.Generator | None, low: int, high: int) -> int:
    """Uniform integer in [low, high] (both included)."""
    return int(torch.randint(low, high + 1, (), generator=generator))


def _window(x: Tensor, top: int, left: int, size: int, fill: float) -> Tensor:
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


def _resize_pair(image: Tensor, mask: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """(3, H, W) float image bilinear, (H, W) int64 mask nearest (pixel centres), to ``size``."""
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
        self.mean, self.std = tuple(mean), tuple(std)
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.rotate, self.flip = rotate, flip
        self.ignore_index = ignore_index

    @classmethod
    def from_info(cls, info: DatasetInfo, size: int = 512, **kwargs: Any):
        """The recipe with ``info``'s normalisation statistics and ignore index."""
        return cls(size, info.mean, info.std, ignore_index=info.ignore_index, **kwargs)


class TrainTransform(_Recipe):
    """The training augmentation on one sample (CPU, DataLoader workers).

    Input: a dict with ``"image"`` (3, H, W) uint8 or 0–1 float and ``"mask"`` (H, W) integer; other keys are
    passed through. Output: ``"image"`` float32 (3, size, size) normalised, ``"mask"`` int64 (size, size).

    Args:
        size: output side (the training size).
        mean, std: normalisation statistics on the 0–1 scale.
        scale_range: random scale factor range (the authors: 0.75–1.5).
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
            image, mask = _resize_pair(image, mask, scaled)
        crop = self.crop_size
        top = _randint(generator, min(0, scaled[0] - crop), max(0, scaled[0] - crop))
        left = _randint(generator, min(0, scaled[1] - crop), max(0, scaled[1] - crop))
        image = _window(image, top, left, crop, 0.0)
        mask = _window(mask, top, left, crop, self.ignore_index)
        if crop != self.size:
            image, mask = _resize_pair(image, mask, (self.size, self.size))
        if self.rotate:
            k = _randint(generator, 0, 3)
            image, mask = torch.rot90(image, k, (-2, -1)), torch.rot90(mask, k, (-2, -1))
        if self.flip:
            if _randint(generator, 0, 1):
                image, mask = image.flip(-1), mask.flip(-1)
            if _randint(generator, 0, 1):
                image, mask = image.flip(-2), mask.flip(-2)
        out = dict(sample)
        out["image"] = normalize(image.contiguous(), self.mean, self.std)
        out["mask"] = mask.contiguous()
        return out


#: The four rotations by 90° as 2 × 2 matrices acting on (x, y) output coordinates.
_ROTATIONS = ((1, 0, 0, 1), (0, -1, 1, 0), (-1, 0, 0, -1), (0, 1, -1, 0))
_ROT_CACHE: dict[str, Tensor] = {}


def _rotations(device: torch.device) -> Tensor:
    key = str(device)
    if key not in _ROT_CACHE:
        _ROT_CACHE[key] = torch.tensor(_ROTATIONS, dtype=torch.float32, device=device).view(4, 2, 2)
    return _ROT_CACHE[key]


class BatchTrainTransform(_Recipe):
    """The training augmentation on a batch, on its device, without host–device syncs.

    ``transform(image, mask, generator=None) -> (image, mask)`` with ``image`` (B, 3, H, W) uint8 or 0–1 float
    and ``mask`` (B, H, W) integer on the same device; returns float32 (B, 3, size, size) normalised and int64
    (B, size, size). Each sample gets its own scale, crop position, rotation and flips (same ranges as
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
            dihedral = _rotations(device)[k]
        if self.flip:
            signs = torch.stack([rand[:, 3] < 0.5, rand[:, 4] < 0.5], dim=1).to(torch.float32) * -2.0 + 1.0
            dihedral = dihedral * signs[:, None, :]  # flip the output x and/or y before rotating
        linear = torch.stack([ax, ay], dim=1)[:, :, None] * dihedral
        return torch.cat([linear, torch.stack([bx, by], dim=1)[:, :, None]], dim=2)

    def __call__(self, image: Tensor, mask: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        if image.dim() != 4 or mask.dim() != 3 or image.shape[0] != mask.shape[0]:
            raise ValueError(
                f"expected image (B, 3, H, W) and mask (B, H, W), got {tuple(image.shape)}, {tuple(mask.shape)}"
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
