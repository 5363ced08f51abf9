"""The CT patch rule: exact pixel counts per feature patch and class, and the pure / none / mixed labels.

Feature patch ``(b, i, j)`` of a stage with stride ``r`` covers the input pixels
``[i·r, (i+1)·r) × [j·r, (j+1)·r)`` of image ``b``. For class ``c`` a patch is

* **positive** when every one of its ``r²`` pixels is ``c`` (no ignore pixel),
* **negative** when none of its pixels is ``c`` and at least one pixel is labelled,
* **discarded** otherwise (mixed with ``c``, or entirely ignore).

Counting is one ``scatter_add`` at the finest stride followed by exact integer sum-pooling for the coarser
strides — no full-resolution one-hot and no host–device synchronisation.

Label values outside ``[0, num_classes)`` that are not ``ignore_index`` are counted as ignore. Rejecting them
is the data pipeline's job: checking them here would force a device → host sync.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def infer_stride(mask_hw: Sequence[int], feature_hw: Sequence[int], stage: int | None = None) -> int:
    """Stride of a feature map relative to the mask: ``H_mask // H_feat``, which must divide exactly.

    Raises:
        ValueError: when the stride does not divide the mask size or differs between height and width.
    """
    where = f"stage {stage}: " if stage is not None else ""
    (mh, mw), (fh, fw) = tuple(mask_hw), tuple(feature_hw)
    if fh <= 0 or fw <= 0 or mh % fh or mw % fw or mh // fh != mw // fw:
        raise ValueError(
            f"{where}feature size {fh}×{fw} does not tile the mask size {mh}×{mw} with one integer stride "
            "(the stride mask.shape[-1] // features.shape[-1] must divide the mask exactly)"
        )
    return mh // fh


def stage_strides(features: Sequence[Tensor], mask: Tensor, in_channels: Sequence[int]) -> list[int]:
    """Validate a contrastive loss's inputs and return each stage's stride (Python ints only, no sync).

    Args:
        features: one ``(B, C_s, H_s, W_s)`` map per stage; mask: ``(B, H, W)`` integer labels;
        in_channels: the ``C_s`` the loss was built for.

    Raises:
        ValueError: naming the offending stage — wrong number of stages, channels, batch size, or a feature size
            whose stride does not divide the mask exactly.
    """
    if mask.dim() != 3:
        raise ValueError(f"mask must be (B, H, W), got shape {tuple(mask.shape)}")
    if mask.dtype.is_floating_point or mask.dtype.is_complex or mask.dtype == torch.bool:
        raise ValueError(f"mask must hold integer labels, got {mask.dtype}")
    if len(features) != len(in_channels):
        raise ValueError(f"got {len(features)} feature maps but the loss was built for {len(in_channels)} stages")
    strides = []
    for s, f in enumerate(features):
        if f.dim() != 4:
            raise ValueError(f"stage {s}: features must be (B, C, H, W), got shape {tuple(f.shape)}")
        if f.shape[1] != in_channels[s]:
            raise ValueError(f"stage {s}: expected {in_channels[s]} channels, got {f.shape[1]}")
        if f.shape[0] != mask.shape[0]:
            raise ValueError(f"stage {s}: batch size {f.shape[0]} differs from the mask's {mask.shape[0]}")
        strides.append(infer_stride(mask.shape[-2:], f.shape[-2:], stage=s))
    return strides


def _check_stride(mask: Tensor, stride: int) -> None:
    if mask.dim() != 3:
        raise ValueError(f"mask must be (B, H, W), got shape {tuple(mask.shape)}")
    if stride < 1 or mask.shape[-2] % stride or mask.shape[-1] % stride:
        raise ValueError(f"stride {stride} does not divide the mask size {mask.shape[-2]}×{mask.shape[-1]}")


def _class_index(mask: Tensor, num_classes: int) -> Tensor:
    """int64 copy of ``mask`` with everything outside ``[0, num_classes)`` mapped to ``num_classes`` (three passes:
    a clamp from above, then the negative values)."""
    index = mask.long().clamp(max=num_classes)  # a new tensor, whatever the mask's dtype
    return index.masked_fill_(index < 0, num_classes)


def patch_class_counts(mask: Tensor, stride: int, num_classes: int, ignore_index: int = 255) -> Tensor:
    """Exact pixel counts per patch and class.

    Args:
        mask: ``(B, H, W)`` integer labels.
        stride: patch side ``r``; must divide ``H`` and ``W``.
        num_classes: ``K``.
        ignore_index: label of unlabelled pixels (any other out-of-range value counts as ignore too).

    Returns:
        ``(B, K + 1, H // r, W // r)`` int32 tensor; channel ``K`` counts ignored pixels, so every patch's
        counts sum to ``r²``.

    Raises:
        ValueError: if ``stride`` does not divide ``H`` and ``W``.
    """
    del ignore_index  # every value outside [0, K) is ignore; the argument documents the convention
    _check_stride(mask, stride)
    b, h, w = mask.shape
    hs, ws = h // stride, w // stride
    cells = hs * ws
    # Flat target cell of each pixel: ((b·(K+1) + class)·hs + i // r)·ws + j // r = base + class·cells, with
    # base = b·(K+1)·cells + (i // r)·ws + j // r: one pass over the pixels for base, one for the sum.
    rows = torch.arange(h, device=mask.device) // stride
    cols = torch.arange(w, device=mask.device) // stride
    cell = (rows[:, None] * ws + cols[None, :]).unsqueeze(0)
    batch_offset = (torch.arange(b, device=mask.device) * ((num_classes + 1) * cells)).view(b, 1, 1)
    flat = torch.add(cell + batch_offset, _class_index(mask, num_classes), alpha=cells)
    counts = torch.zeros(b * (num_classes + 1) * cells, dtype=torch.int32, device=mask.device)
    ones = torch.ones(1, dtype=torch.int32, device=mask.device).expand(flat.numel())
    counts.scatter_add_(0, flat.view(-1), ones)
    return counts.view(b, num_classes + 1, hs, ws)


def pool_counts(counts: Tensor, factor: int) -> Tensor:
    """Sum-pool ``(B, K+1, h, w)`` counts by an integer ``factor`` (exact; ``h`` and ``w`` divisible).

    Two one-axis sums — over the innermost axis first, then over the rows of each block — give the same integers
    as one sum over both block axes of a ``(B, K+1, h/f, f, w/f, f)`` view, which walks the counts with a stride
    and is several times slower on the CPU.
    """
    if factor == 1:
        return counts
    b, k, h, w = counts.shape
    columns = counts.reshape(b, k, h, w // factor, factor).sum(-1, dtype=torch.int32)
    return columns.view(b, k, h // factor, factor, w // factor).sum(3, dtype=torch.int32)


def multi_stride_counts(mask: Tensor, strides: Sequence[int], num_classes: int) -> list[Tensor]:
    """:func:`patch_class_counts` for several strides: one scatter at the finest, pooling for the rest.

    Returns one ``(B, K+1, H/r_s, W/r_s)`` int32 tensor per entry of ``strides`` (in the given order).
    """
    for s in strides:
        _check_stride(mask, s)
    order = sorted(set(strides))
    done: dict[int, Tensor] = {}
    for s in order:
        # Pool from the coarsest already-counted stride that divides this one; else count from the mask.
        base = max((d for d in done if s % d == 0), default=None)
        if base is None:
            done[s] = patch_class_counts(mask, s, num_classes)
        else:
            done[s] = pool_counts(done[base], s // base)
    return [done[s] for s in strides]


def eligibility(counts: Tensor, stride: int, num_classes: int) -> tuple[Tensor, Tensor]:
    """Positive and negative patch masks per class from counts.

    Args:
        counts: ``(B, K+1, h, w)`` from :func:`patch_class_counts`.

    Returns:
        ``(positive, negative)``, each ``(K, B·h·w)`` bool, patches flattened in ``(b, i, j)`` order.
    """
    area = stride * stride
    per_class = counts[:, :num_classes]
    labelled = counts[:, num_classes : num_classes + 1] < area
    positive = per_class == area
    negative = (per_class == 0) & labelled
    k = num_classes
    return positive.transpose(0, 1).reshape(k, -1), negative.transpose(0, 1).reshape(k, -1)


def patch_labels(mask: Tensor, stride: int, num_classes: int, ignore_index: int = 255) -> Tensor:
    """``(B, H/r, W/r)`` int64: ``c`` where every pixel of the patch is class ``c``, else ``-1``."""
    counts = patch_class_counts(mask, stride, num_classes, ignore_index)
    full = counts[:, :num_classes] == stride * stride
    label = full.to(torch.int64).argmax(1)
    return torch.where(full.any(1), label, torch.full_like(label, -1))
