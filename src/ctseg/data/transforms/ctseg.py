"""ctseg's own training augmentation (preset ``ctseg``, the default; not the paper's), per sample and batched.

Random scale (factor uniform in ``scale_range``, default 0.75–1.5), plain random crop of ``crop_size`` (default:
the training size; where the scaled image is smaller the window overhangs and is padded, image black, mask
``ignore_index``), resize to the training ``size`` when the crop size differs, a random 90° rotation (``k``
uniform), random horizontal and vertical flips, then normalisation: :class:`TrainTransform` (one sample, CPU,
DataLoader workers) and :class:`BatchTrainTransform` (a batch on its device: scale, crop, resize, rotation and
flips folded into one affine map per sample, one ``grid_sample`` for the images (bilinear) and one for the masks
(nearest); every random draw a device tensor, shapes fixed: no host–device sync). Bands, dtypes and the helpers:
:mod:`ctseg.data.transforms.basics`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ctseg.data.definitions import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD, DatasetInfo
from ctseg.data.transforms.basics import (
    check_band_stats,
    crop_window,
    draw_int,
    normalize,
    resize_pair,
    rotations_of,
    to_float_image,
)

__all__ = ["BatchTrainTransform", "TrainTransform"]


def _uniform(generator: torch.Generator | None, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


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
