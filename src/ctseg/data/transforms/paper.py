"""The authors' training augmentation (preset ``paper``; their ``train_aug``), per sample and batched.

The recipe and why it is the authors': docs/design.md §1.12.

:class:`PaperTrainTransform` (one sample, CPU, DataLoader workers) and :class:`PaperBatchTransform` (a batch, on
its device). In this order:

1. scale ``s`` drawn uniformly from ``{0.75, 1.0, 1.25, 1.5}``;
2. class-balanced random crop of ``c`` px (375 at the 512 training size; ``c = round(375 · size / 512)``
   otherwise): up to 10 candidate windows, uniform over the positions of the scaled image (where it is smaller
   than ``c`` the window overhangs and is padded, image black, mask ``ignore_index``); the first candidate with
   ``≥ 2`` labelled classes whose most frequent class covers ``< 75 %`` of the labelled pixels is taken, the
   10th when none is (:func:`balanced`);
3. resize ``c → size`` (512);
4. with probability 0.5 a rotation by ``k · 90°``, ``k`` uniform in {0, 1, 2, 3} (``RandomRotate90(p=0.5)``
   semantics: ``P(k = 0) = 5/8``, ``1/8`` for each other ``k``); no flips;
5. mosaic on 25 % of the samples, built **before** steps 1–4 from raw crops (as the authors' data set does:
   ``load_mosaic_img_and_mask``, then ``train_aug`` on the result): four crops (the sample itself and three
   others) are combined into one of the sample's size, split at a random point ``(cy, cx)``, ``cy, cx`` uniform
   integers in ``[H/4, H − H/4]``; quadrant ``q`` (top-left = the sample itself, top-right, bottom-left,
   bottom-right) of size ``h_q × w_q`` takes a uniformly placed ``h_q × w_q`` crop of its crop; steps 1–4 then
   augment the mosaic as one image;
6. normalisation ``(x / value_scale − mean) / std`` (:func:`~ctseg.data.transforms.basics.normalize`).

The per-sample mosaic draws its three other samples from the data set with the sample's generator. The
batched class folds steps 1–4 into one affine map per sample (as
:class:`~ctseg.data.transforms.ctseg.BatchTrainTransform`), batches the class-balanced choice (per-class integral
images of the masks, all candidates' counts read with ``gather``, the first accepted one picked with ``argmax``)
and takes the mosaic's other samples from the same batch (a ``gather`` of pixels): no host–device sync. Bands,
dtypes, interpolation and the helpers: :mod:`ctseg.data.transforms.basics`; the presets side by side:
:mod:`ctseg.data.transforms`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ctseg.data.definitions import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD, DatasetInfo
from ctseg.data.transforms.basics import (
    band_stats,
    check_band_stats,
    crop_window,
    draw_int,
    normalize,
    resize_pair,
    rotations_of,
    to_float_image,
)

__all__ = [
    "PAPER_CROP", "PAPER_CROP_TRIES", "PAPER_MAX_RATIO", "PAPER_MOSAIC_RATIO", "PAPER_ROTATE_P", "PAPER_SCALES",
    "PAPER_SIZE", "PaperBatchTransform", "PaperTrainTransform", "balanced",
]  # fmt: skip

#: The authors' training augmentation (docs/design.md §1.12): scale set, crop side at the 512 training size, crop
#: re-draws, the class-balance bound, rotation probability and the mosaic ratio.
PAPER_SCALES: tuple[float, ...] = (0.75, 1.0, 1.25, 1.5)
PAPER_CROP = 375
PAPER_SIZE = 512
PAPER_CROP_TRIES = 10
PAPER_MAX_RATIO = 0.75
PAPER_ROTATE_P = 0.5
PAPER_MOSAIC_RATIO = 0.25


def balanced(counts: Tensor, max_ratio: float = PAPER_MAX_RATIO) -> Tensor:
    """The crop rule on per-class pixel counts ``(..., K)`` → bool ``(...)``.

    A window is accepted when at least two classes are present and the most frequent one covers less than
    ``max_ratio`` of the labelled pixels: ``#{k : n_k > 0} ≥ 2`` and ``max_k n_k < max_ratio · Σ_k n_k``
    (ignored pixels are not in ``counts``).
    """
    present = (counts > 0).sum(-1) >= 2
    return present & (counts.amax(-1).to(torch.float64) < max_ratio * counts.sum(-1).to(torch.float64))


class _PaperRecipe:
    """Parameters shared by :class:`PaperTrainTransform` and :class:`PaperBatchTransform` (module docstring).

    Args:
        size: output side (the training size; the authors: 512).
        mean, std: normalisation statistics, ``C`` values each, on the ``x / value_scale`` scale.
        num_classes: labelled classes ``0 … K−1`` counted by the crop rule (other mask values count as ignored).
        crop_size: side ``c`` of the class-balanced crop, resized to ``size`` (default ``round(375 · size / 512)``,
            the authors' 375 at 512).
        scales: the scale set, drawn uniformly (the authors: 0.75, 1.0, 1.25, 1.5).
        crop_tries: candidate windows per sample (the authors: 10).
        max_ratio: bound on the most frequent class's share of the labelled pixels (the authors: 0.75).
        rotate_p: probability of applying the random rotation by ``k · 90°``, ``k`` uniform in {0, 1, 2, 3}.
        mosaic_ratio: share of samples made into a four-sample mosaic (the authors: 0.25).
        ignore_index: mask value of padded pixels.
    """

    def __init__(
        self,
        size: int = PAPER_SIZE,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        *,
        num_classes: int,
        crop_size: int | None = None,
        scales: Sequence[float] = PAPER_SCALES,
        crop_tries: int = PAPER_CROP_TRIES,
        max_ratio: float = PAPER_MAX_RATIO,
        rotate_p: float = PAPER_ROTATE_P,
        mosaic_ratio: float = PAPER_MOSAIC_RATIO,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        if size < 1 or (crop_size is not None and crop_size < 1) or crop_tries < 1 or num_classes < 1:
            raise ValueError("size, crop_size, crop_tries and num_classes must be positive")
        if not scales or min(scales) <= 0:
            raise ValueError(f"scales must be a non-empty set of positive factors, got {tuple(scales)}")
        if not (0.0 <= rotate_p <= 1.0 and 0.0 <= mosaic_ratio <= 1.0 and 0.0 < max_ratio <= 1.0):
            raise ValueError("rotate_p and mosaic_ratio must lie in [0, 1], max_ratio in (0, 1]")
        self.size = int(size)
        self.crop_size = int(crop_size) if crop_size else max(1, round(PAPER_CROP * self.size / PAPER_SIZE))
        self.mean, self.std = check_band_stats(mean, std)
        self.num_classes = int(num_classes)
        self.scales = tuple(float(v) for v in scales)
        self.crop_tries, self.max_ratio = int(crop_tries), float(max_ratio)
        self.rotate_p, self.mosaic_ratio = float(rotate_p), float(mosaic_ratio)
        self.ignore_index = ignore_index

    @classmethod
    def from_info(cls, info: DatasetInfo, size: int = PAPER_SIZE, **kwargs: Any):
        """The preset with ``info``'s normalisation statistics, class count and ignore index."""
        return cls(size, info.mean, info.std, num_classes=info.num_classes, ignore_index=info.ignore_index, **kwargs)

    def split_bounds(self, size: int | None = None) -> tuple[int, int]:
        """Range ``[low, high]`` of the mosaic split point along an axis of ``size`` pixels (default: the output
        size): ``[size // 4, size − size // 4]``."""
        size = self.size if size is None else size
        return size // 4, size - size // 4


class PaperTrainTransform(_PaperRecipe):
    """The authors' training augmentation (preset ``paper``) on one sample (CPU, DataLoader workers).

    ``transform(sample, generator=None, partner=None)``: ``sample`` holds ``"image"`` (C, H, W) uint8, uint16
    or 0–1 float and ``"mask"`` (H, W) integer (other keys are passed through); returns ``"image"`` float32
    (C, size, size) normalised and ``"mask"`` int64 (size, size). ``partner(generator)`` returns another sample
    dict (the data modules: a uniformly drawn crop of the training set, drawn with ``generator``) for the
    mosaic; without it a mosaic is made of four independent augmentations of ``sample`` itself.

    Random numbers come from ``generator`` when given (the data modules pass one seeded per sample and epoch),
    else from torch's global generator. The draws, in order: the mosaic flag ``u < mosaic_ratio``; then per
    augmented sample the scale index, the candidate windows, the rotation flag and ``k``; with a mosaic, each
    partner (drawn by ``partner``) and its augmentation, then the split point and the four crop positions.
    """

    def crop_candidates(self, height: int, width: int, generator: torch.Generator | None = None) -> Tensor:
        """(crop_tries, 2) int64 top-left corners ``(top, left)`` of ``crop_size`` windows of an ``height`` ×
        ``width`` (scaled) image, uniform integers in ``[min(0, L − c), max(0, L − c)]`` per axis (negative or
        overhanging: the window is padded)."""
        c, n = self.crop_size, self.crop_tries
        tops = torch.randint(min(0, height - c), max(0, height - c) + 1, (n,), generator=generator)
        lefts = torch.randint(min(0, width - c), max(0, width - c) + 1, (n,), generator=generator)
        return torch.stack([tops, lefts], dim=1)

    def window_counts(self, mask: Tensor, top: int, left: int) -> Tensor:
        """(K,) int64 pixel count of each class ``0 … K−1`` in the ``crop_size`` window of (H, W) ``mask`` at
        ``(top, left)`` (the part outside ``mask`` is padding, i.e. ignored)."""
        c = self.crop_size
        window = mask[max(top, 0) : max(top + c, 0), max(left, 0) : max(left + c, 0)]
        return torch.bincount(window.reshape(-1).to(torch.int64), minlength=256)[: self.num_classes]

    def choose_crop(self, mask: Tensor, candidates: Tensor) -> int:
        """Index of the first candidate window of the (scaled) ``mask`` that :func:`balanced` accepts, else the
        last one (the authors' re-draw: up to ``crop_tries`` windows)."""
        for i, (top, left) in enumerate(candidates.tolist()):
            if bool(balanced(self.window_counts(mask, top, left), self.max_ratio)):
                return i
        return len(candidates) - 1

    def augment(self, image: Tensor, mask: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Steps 1–4 on one sample: (C, H, W) image, (H, W) mask → float32 (C, size, size) in 0–1 (not yet
        normalised), int64 (size, size)."""
        image = to_float_image(image)
        mask = mask.to(torch.int64)
        height, width = image.shape[-2:]
        scale = self.scales[draw_int(generator, 0, len(self.scales) - 1)]
        scaled = (max(1, round(height * scale)), max(1, round(width * scale)))
        if scaled != (height, width):
            image, mask = resize_pair(image, mask, scaled)
        candidates = self.crop_candidates(*scaled, generator=generator)
        top, left = candidates[self.choose_crop(mask, candidates)].tolist()
        crop = self.crop_size
        image = crop_window(image, top, left, crop, 0.0)
        mask = crop_window(mask, top, left, crop, self.ignore_index)
        if crop != self.size:
            image, mask = resize_pair(image, mask, (self.size, self.size))
        rotate = float(torch.rand((), generator=generator)) < self.rotate_p
        k = draw_int(generator, 0, 3)
        if rotate and k:
            image, mask = torch.rot90(image, k, (-2, -1)), torch.rot90(mask, k, (-2, -1))
        return image.contiguous(), mask.contiguous()

    def mosaic(
        self, parts: Sequence[tuple[Tensor, Tensor]], generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Four raw ``(image (C, H, W), mask (H, W))`` (the sample and three others, before any augmentation, as
        the authors' data set builds its mosaic) → one of the first's size: split at ``(cy, cx)`` (uniform integers
        in :meth:`split_bounds` of ``H`` and ``W``), quadrant ``q`` (TL, TR, BL, BR from ``parts[q]``) of size
        ``h_q × w_q`` is the ``h_q × w_q`` crop of ``parts[q]`` at a uniform position ``(oy, ox)``. A part of
        another size is resized to the first's first (all images then become float32 0–1)."""
        if len(parts) != 4:
            raise ValueError(f"a mosaic needs four samples, got {len(parts)}")
        height, width = parts[0][0].shape[-2:]
        if any(tuple(image.shape[-2:]) != (height, width) for image, _ in parts):  # resize in float, all alike
            parts = [(to_float_image(image), mask) for image, mask in parts]
        parts = [p if tuple(p[0].shape[-2:]) == (height, width) else resize_pair(*p, (height, width)) for p in parts]
        cy, cx = draw_int(generator, *self.split_bounds(height)), draw_int(generator, *self.split_bounds(width))
        shapes = ((cy, cx), (cy, width - cx), (height - cy, cx), (height - cy, width - cx))
        tiles = []
        for (image, mask), (h, w) in zip(parts, shapes, strict=True):
            oy, ox = draw_int(generator, 0, height - h), draw_int(generator, 0, width - w)
            tiles.append((image[..., oy : oy + h, ox : ox + w], mask[..., oy : oy + h, ox : ox + w]))
        image = torch.cat([torch.cat([tiles[0][0], tiles[1][0]], -1), torch.cat([tiles[2][0], tiles[3][0]], -1)], -2)
        mask = torch.cat([torch.cat([tiles[0][1], tiles[1][1]], -1), torch.cat([tiles[2][1], tiles[3][1]], -1)], -2)
        return image, mask

    def __call__(
        self,
        sample: dict[str, Any],
        generator: torch.Generator | None = None,
        partner: Callable[[torch.Generator | None], dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        image, mask = sample["image"], sample["mask"]
        if float(torch.rand((), generator=generator)) < self.mosaic_ratio:
            parts = [(image, mask)]
            for _ in range(3):
                other = partner(generator) if partner is not None else sample
                parts.append((other["image"], other["mask"]))
            image, mask = self.mosaic(parts, generator)
        image, mask = self.augment(image, mask, generator)  # the authors augment the mosaic as one image
        out = dict(sample)
        out["image"] = normalize(image.contiguous(), self.mean, self.std)
        out["mask"] = mask.contiguous()
        return out


class PaperBatchTransform(_PaperRecipe):
    """The authors' training augmentation (preset ``paper``) on a batch, on its device, without host–device syncs.

    ``transform(image, mask, generator=None) -> (image, mask)`` with ``image`` (B, C, H, W) uint8, uint16 or
    0–1 float and ``mask`` (B, H, W) integer on the same device; returns float32 (B, C, size, size) normalised
    and int64 (B, size, size). ``generator`` must live on the batch's device. Per sample: scale index, ``crop_tries``
    candidate windows, the class-balanced choice (:meth:`choose_crops`), rotation; then the mosaic
    (:meth:`mosaic`), whose three other samples are drawn uniformly from the same batch (the per-sample path
    draws them from the whole data set; the batch is itself a uniform draw, so the distribution is the same
    up to the reuse of a sample's augmented view in another sample's quadrant).

    Geometry as :class:`PaperTrainTransform` (the scaled extent is ``round(L · s)``, the window positions are
    the same uniform integers); only the crop rule counts differ slightly: the device counts the *source* pixels
    under a window (each once), the per-sample path counts the pixels of the nearest-resampled scaled mask
    (source pixels weighted by how often they are repeated) — the same at ``s = 1``.
    """

    def _positions(self, extent: Tensor, u: Tensor) -> Tensor:
        """(B, T) float integer-valued window corners: ``min(0, L − c) + ⌊u · (|L − c| + 1)⌋`` per candidate."""
        span = extent - self.crop_size
        levels = span.abs() + 1.0
        steps = torch.minimum(torch.floor(u * levels[:, None]), levels[:, None] - 1.0)
        return torch.clamp(span, max=0.0)[:, None] + steps

    def choose_crops(self, mask: Tensor, extent_y: Tensor, extent_x: Tensor, tops: Tensor, lefts: Tensor) -> Tensor:
        """(B,) int64 index of each sample's first accepted candidate (:func:`balanced`), else the last.

        ``mask`` (B, H, W); ``extent_y``, ``extent_x`` (B,) scaled sizes ``round(L · s)``; ``tops``, ``lefts``
        (B, T) candidate corners in scaled pixels. The scaled rows ``[t, t + c) ∩ [0, L_s)`` sample (nearest, at
        pixel centres) the source rows ``[r0, r1)``, ``r0 = ⌊(max(t, 0) + ½) H / L_s⌋``, ``r1 = ⌊(min(t + c, L_s) −
        ½) H / L_s⌋ + 1`` (columns alike); the class counts of those source windows are read from per-class
        integral images ``I_k[r, q] = Σ_{r' < r, q' < q} [mask = k]`` (B, K, H + 1, W + 1), four ``gather`` s each.
        """
        batch, height, width = mask.shape
        device, c, tries = mask.device, float(self.crop_size), tops.shape[1]
        classes = torch.arange(self.num_classes, device=device).view(1, -1, 1, 1)
        onehot = (mask[:, None].to(torch.int64) == classes).to(torch.int32)
        integral = onehot.cumsum(2, dtype=torch.int32).cumsum(3, dtype=torch.int32)
        integral = F.pad(integral, (1, 0, 1, 0)).flatten(2)  # (B, K, (H + 1)(W + 1))

        def bounds(start: Tensor, extent: Tensor, length: int) -> tuple[Tensor, Tensor]:
            ratio = (length / extent)[:, None]
            low = torch.floor((torch.clamp(start, min=0.0) + 0.5) * ratio)
            high = torch.floor((torch.minimum(start + c, extent[:, None]) - 0.5) * ratio) + 1.0
            low = low.clamp(0, length)
            return low.to(torch.int64), torch.maximum(high.clamp(0, length), low).to(torch.int64)

        r0, r1 = bounds(tops, extent_y, height)
        c0, c1 = bounds(lefts, extent_x, width)

        def corner(r: Tensor, q: Tensor) -> Tensor:
            index = (r * (width + 1) + q)[:, None, :].expand(batch, self.num_classes, tries)
            return integral.gather(2, index)

        counts = corner(r1, c1) - corner(r0, c1) - corner(r1, c0) + corner(r0, c0)  # (B, K, T)
        accept = balanced(counts.transpose(1, 2), self.max_ratio)  # (B, T)
        rank = accept.to(torch.int64) * (tries - torch.arange(tries, device=device))  # first accepted = largest
        return torch.where(accept.any(1), rank.argmax(1), torch.full_like(rank[:, 0], tries - 1))

    def theta(self, mask: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """(B, 2, 3) affine maps from normalised output coordinates to normalised input coordinates.

        Output ``o`` (after the rotation ``R_k``) sits at ``(R_k o + 1) / 2 · c`` in the chosen window, ``+ t`` in
        the image scaled to ``L_s = round(L · s)``, i.e. at ``(c / L_s) R_k o + (c + 2 t) / L_s − 1`` in normalised
        input coordinates (``grid_sample``, ``align_corners=False``).
        """
        batch, height, width = mask.shape
        device, c = mask.device, float(self.crop_size)
        pick = torch.randint(0, len(self.scales), (batch,), device=device, generator=generator)
        scale = band_stats(self.scales, device).view(-1)[pick]  # cached: no host-to-device copy per batch
        extent_y = torch.clamp(torch.round(height * scale), min=1.0)
        extent_x = torch.clamp(torch.round(width * scale), min=1.0)
        u = torch.rand(batch, self.crop_tries, 2, device=device, generator=generator)
        tops, lefts = self._positions(extent_y, u[..., 0]), self._positions(extent_x, u[..., 1])
        choice = self.choose_crops(mask, extent_y, extent_x, tops, lefts)[:, None]
        top, left = tops.gather(1, choice)[:, 0], lefts.gather(1, choice)[:, 0]
        rotate = torch.rand(batch, device=device, generator=generator) < self.rotate_p
        k = torch.randint(0, 4, (batch,), device=device, generator=generator)
        rotation = rotations_of(device)[torch.where(rotate, k, torch.zeros_like(k))]
        scale_xy = torch.stack([c / extent_x, c / extent_y], dim=1)
        shift_xy = torch.stack([(c + 2.0 * left) / extent_x, (c + 2.0 * top) / extent_y], dim=1) - 1.0
        return torch.cat([scale_xy[:, :, None] * rotation, shift_xy[:, :, None]], dim=2)

    def mosaic(self, image: Tensor, mask: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Batched mosaic of the raw (not yet augmented) ``image`` (B, C, S, S), ``mask`` (B, S, S) (same shapes
        back; square crops, as prepared).

        Sample ``b`` is a mosaic when ``u_b < mosaic_ratio``: split ``(cy, cx)`` uniform in :meth:`split_bounds`;
        quadrant ``q`` (TL, TR, BL, BR) with origin ``(y0_q, x0_q)`` and size ``h_q × w_q`` comes from sample
        ``src_q`` (``src_0 = b``, ``src_1…3`` uniform in the batch) at the uniform crop position ``(oy_q, ox_q)``:
        ``out[b, y, x] = in[src_q, y − y0_q + oy_q, x − x0_q + ox_q]`` — one pixel ``gather`` (identity for the
        other samples).
        """
        batch, channels, size, _ = image.shape
        device = image.device
        flag = torch.rand(batch, device=device, generator=generator) < self.mosaic_ratio
        low, high = self.split_bounds(size)
        split = torch.randint(low, high + 1, (batch, 2), device=device, generator=generator)
        partners = torch.randint(0, batch, (batch, 3), device=device, generator=generator)
        u = torch.rand(batch, 4, 2, device=device, generator=generator)
        cy, cx = split[:, 0:1], split[:, 1:2]
        zero = torch.zeros_like(cy)
        y0, x0 = torch.cat([zero, zero, cy, cy], 1), torch.cat([zero, cx, zero, cx], 1)  # (B, 4)
        h, w = torch.cat([cy, cy, size - cy, size - cy], 1), torch.cat([cx, size - cx, cx, size - cx], 1)
        oy = torch.minimum(torch.floor(u[..., 0] * (size - h + 1)).to(torch.int64), size - h)
        ox = torch.minimum(torch.floor(u[..., 1] * (size - w + 1)).to(torch.int64), size - w)
        own = torch.arange(batch, device=device)[:, None]
        src = torch.where(flag[:, None], torch.cat([own, partners], 1), own)
        dy = torch.where(flag[:, None], oy - y0, torch.zeros_like(oy))
        dx = torch.where(flag[:, None], ox - x0, torch.zeros_like(ox))
        ys = torch.arange(size, device=device).view(1, size, 1)
        xs = torch.arange(size, device=device).view(1, 1, size)
        quadrant = ((ys >= cy[:, :, None]).to(torch.int64) * 2 + (xs >= cx[:, :, None]).to(torch.int64)).flatten(1)
        pick = lambda table: table.gather(1, quadrant).view(batch, size, size)  # noqa: E731
        index = ((pick(src) * size + ys + pick(dy)) * size + xs + pick(dx)).flatten()
        image = image.transpose(0, 1).reshape(channels, -1)[:, index].view(channels, batch, size, size)
        return image.transpose(0, 1), mask.reshape(-1)[index].view(batch, size, size)

    def __call__(self, image: Tensor, mask: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        if image.dim() != 4 or mask.dim() != 3 or image.shape[0] != mask.shape[0]:
            raise ValueError(
                f"expected image (B, C, H, W) and mask (B, H, W), got {tuple(image.shape)}, {tuple(mask.shape)}"
            )
        batch = image.shape[0]
        if self.mosaic_ratio > 0:  # first, on the raw crops: the authors augment the mosaic as one image
            image, mask = self.mosaic(image, mask, generator)
        theta = self.theta(mask, generator)
        grid = F.affine_grid(theta, [batch, 1, self.size, self.size], align_corners=False)
        # Border-clamped bilinear inside the image (as the per-sample resize), black where the nearest source pixel
        # is outside it: shift labels by one so that the zero padding reads as -1, then make it ignore.
        image = F.grid_sample(to_float_image(image), grid, mode="bilinear", padding_mode="border", align_corners=False)
        shifted = (mask.to(torch.float32) + 1.0)[:, None]
        shifted = F.grid_sample(shifted, grid, mode="nearest", padding_mode="zeros", align_corners=False)[:, 0]
        labels = shifted.to(torch.int64) - 1
        outside = labels < 0
        labels = labels.masked_fill(outside, self.ignore_index)
        image = image.masked_fill(outside[:, None], 0.0)
        return normalize(image, self.mean, self.std), labels
