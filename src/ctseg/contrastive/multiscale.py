"""MultiScaleContrastiveLoss: multi-scale and cross-scale supervised pixel contrast on the encoder stages.

Reference: T. Pissas, C. S. Ravasio, L. Da Cruz, C. Bergeles, "Multi-scale and Cross-scale Contrastive
Learning for Semantic Segmentation", ECCV 2022, arXiv:2203.13409. Decisions where the paper is vague or where
the project departs from it: ``docs/design.md`` §5 and the list below.

Per scale ``s`` with features ``F_s: (B, C_s, H_s, W_s)`` and stride ``r_s = H // H_s``:

1. **labels** — the mask nearest-downsampled by slicing: feature pixel ``(i, j)`` takes the label of input pixel
   ``(i·r + r//2, j·r + r//2)``, the centre of its ``r×r`` block (for even ``r`` the lower-right of the four
   central pixels). This is what ``F.interpolate(mode="nearest-exact")`` picks; torch's legacy ``"nearest"`` takes
   the top-left pixel ``(i·r, j·r)``, which shifts every label by half a block. Values outside
   ``[0, num_classes)`` count as ignore.
2. **groups** — every (image, class) pair with at least ``min_group_size`` (5) pixels at that scale is an anchor
   group. Pixels of smaller groups and ignore pixels are not sampled at all (neither anchors nor negatives).
3. **balanced sampling** — with ``G`` groups whose smallest has ``m`` pixels, every group gets exactly
   ``n = min(m, max_views_per_group, max_features // G)`` views, uniformly at random without replacement within
   the group. ``n`` and ``G`` are device tensors; the views live in one flat buffer of static capacity
   ``A = min(max_features, B·H_s·W_s, B·K·max_views_per_group)`` whose slot ``t`` belongs to the
   ``(t // n)``-th group (in ``b·K + c`` order) and is valid when ``t < G·n``. Randomness: one sort of all pixels
   by the key ``group · 2⁴⁰ + U`` with ``U`` uniform in ``[0, 2⁴⁰)`` puts every group's pixels in a contiguous,
   randomly ordered run; the first ``n`` of the run are taken.
4. **projector** — ``Conv1×1(C_s→C_s) → ReLU → BN → Conv1×1(C_s→256)`` then L2, applied only to the gathered
   views (see :class:`ScaleProjector` for the equivalence and the BN-statistics difference).
5. **loss** — :func:`supervised_info_nce` among the valid views of the scale (self-pairs excluded).

Total: ``Σ_s w_s · L_s`` (weights finest first) plus, when ``cross_scale``, ``L(finest → deepest)`` and
``L(finest → second deepest)`` with weight 1 each. A cross-scale term takes its anchors from the finest scale and
its positives **and** negatives only from the other scale: anchors do not contrast with their own scale there
(that is the within-scale term's job). It is one-directional (finest anchors only). With 2 stages there is one
cross term (finest → deepest), with 1 stage none. The ``0.1 ×`` of ``seg + 0.1 × contrastive`` (docs/design.md §5)
is the caller's ``contrastive_weight``: this module returns the unweighted sum.

No step synchronises with the host: every shape is fixed by the configuration and the input shapes; what varies
with the data is carried by validity masks and device-side counts.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ctseg.contrastive.patches import stage_strides
from ctseg.contrastive.stats import SchemeStats
from ctseg.contrastive.supcon import supervised_info_nce

#: A (image, class) pair is an anchor group when it has at least this many pixels at the scale.
MIN_GROUP_SIZE = 5
#: Random part of the sort key (the group id is shifted above it).
_RANDOM_BITS = 40


def downsample_labels(mask: Tensor, stride: int) -> Tensor:
    """Nearest-downsample ``(B, H, W)`` labels by ``stride`` taking each block's centre pixel.

    Output pixel ``(i, j)`` is ``mask[:, i·r + r//2, j·r + r//2]`` (``F.interpolate(mode="nearest-exact")``).
    A view of ``mask``, ``(B, H // r, W // r)``; ``r`` must divide ``H`` and ``W``.
    """
    if mask.dim() != 3:
        raise ValueError(f"mask must be (B, H, W), got shape {tuple(mask.shape)}")
    if stride < 1 or mask.shape[-2] % stride or mask.shape[-1] % stride:
        raise ValueError(f"stride {stride} does not divide the mask size {mask.shape[-2]}×{mask.shape[-1]}")
    o = stride // 2
    return mask[:, o::stride, o::stride]


def balanced_views(
    labels: Tensor,
    num_classes: int,
    max_views_per_group: int,
    max_features: int,
    min_group_size: int = MIN_GROUP_SIZE,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Class- and image-balanced sampling of pixel views at one scale, with static shapes.

    Args:
        labels: ``(B, h, w)`` integer labels at the scale; values outside ``[0, K)`` are ignore.
        num_classes: ``K``.
        max_views_per_group: cap on the views of one (image, class) group.
        max_features: cap on the total number of views.
        min_group_size: a group needs at least this many pixels.
        generator: optional RNG on ``labels.device`` (default: the global one).

    Returns:
        A dict of tensors, ``A = min(max_features, B·h·w, B·K·max_views_per_group)``:

        * ``index`` ``(A,)`` int64 flat pixel index ``b·h·w + i·w + j``;
        * ``label`` ``(A,)`` int64 class of the view; ``image`` ``(A,)`` int64 image of the view (these three are
          in range but meaningless where ``valid`` is false: they need not even agree with each other);
        * ``valid`` ``(A,)`` bool, a prefix of the buffer (``G·n`` entries);
        * ``views`` ``()`` int64 ``n``, views per group; ``groups`` ``()`` int64 ``G``;
        * ``group_size`` ``(B, K)`` int64 pixels per (image, class); ``group_valid`` ``(B, K)`` bool.
    """
    b, h, w = labels.shape
    k = num_classes
    device = labels.device
    n_pix, n_groups = b * h * w, b * k
    lab = labels.reshape(b, h * w).long()
    in_range = (lab >= 0) & (lab < k)
    group = torch.where(in_range, lab + k * torch.arange(b, device=device)[:, None], n_groups).reshape(-1)
    size = torch.zeros(n_groups + 1, dtype=torch.int64, device=device)
    size.scatter_add_(0, group, torch.ones(1, dtype=torch.int64, device=device).expand(n_pix))
    offset = size.cumsum(0) - size  # start of each group's run in the sorted order
    size = size[:n_groups]
    group_valid = size >= min_group_size

    # Pixels sorted by (group, random key): each group is a contiguous run in uniformly random order.
    noise = torch.randint(0, 2**_RANDOM_BITS, (n_pix,), device=device, generator=generator)
    by_group = ((group << _RANDOM_BITS) | noise).argsort()

    n_valid = group_valid.sum()
    smallest = torch.where(group_valid, size, torch.iinfo(torch.int64).max).amin()
    per_group = torch.minimum(smallest, max_features // n_valid.clamp(min=1))
    views = torch.where(n_valid > 0, per_group.clamp(max=max_views_per_group), 0)

    capacity = min(max_features, n_pix, n_groups * max_views_per_group)
    slot = torch.arange(capacity, device=device)
    rank = torch.div(slot, views.clamp(min=1), rounding_mode="floor")
    within = slot - rank * views.clamp(min=1)
    valid = slot < n_valid * views
    ranked_groups = (~group_valid).to(torch.int8).argsort(stable=True)  # valid group ids first, ascending
    gid = ranked_groups[rank.clamp(max=n_groups - 1)]
    position = (offset[gid] + within).clamp(max=n_pix - 1)
    index = by_group[position]
    return {
        "index": index,
        "label": gid % k,
        "image": torch.div(gid, k, rounding_mode="floor"),
        "valid": valid,
        "views": views,
        "groups": n_valid,
        "group_size": size.view(b, k),
        "group_valid": group_valid.view(b, k),
    }


def _stack_or_empty(values: list[Tensor], dtype: torch.dtype, device: torch.device) -> Tensor:
    return torch.stack(values).detach() if values else torch.zeros(0, dtype=dtype, device=device)


class ScaleProjector(nn.Module):
    """Per-scale projector ``Conv1×1(C→C) → ReLU → BN → Conv1×1(C→D)`` applied to gathered vectors.

    A 1×1 convolution on a map followed by gathering positions equals gathering first and applying a Linear layer
    with the same weights (``weight[:, :, 0, 0]``); ReLU is pointwise. So projecting only the sampled views costs
    ``O(A·C)`` memory instead of ``O(B·H·W·C)``. **BN-statistics decision:** in training the batch statistics are
    computed over the *valid sampled vectors* of the scale (masked mean and biased variance; running statistics
    updated with the unbiased variance, skipped when fewer than 2 vectors are valid), not over the full map as a
    ``BatchNorm2d`` would. The sample is class-balanced, so rare classes weigh more in the statistics than they
    would in the full map. In eval mode BN is a pointwise affine map and the equivalence is exact
    (:meth:`to_conv` builds the convolutional form). Statistics are per process (no SyncBN).

    Input ``(A, C)`` and ``valid`` ``(A,)``; output ``(A, D)`` float32, not normalised.
    """

    def __init__(self, in_channels: int, proj_dim: int = 256) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_channels, in_channels)
        self.bn = nn.BatchNorm1d(in_channels)
        self.fc2 = nn.Linear(in_channels, proj_dim)

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        if x.dim() != 2 or valid.shape != x.shape[:1]:
            raise ValueError(f"expected x (A, C) and valid (A,), got {tuple(x.shape)} and {tuple(valid.shape)}")
        h = F.relu(self.fc1(x)).float()
        return self.fc2(self._masked_bn(h, valid)).float()

    def _masked_bn(self, h: Tensor, valid: Tensor) -> Tensor:
        bn = self.bn
        use_batch = bn.training or bn.running_mean is None
        if not use_batch:
            return F.batch_norm(h, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
        m = valid.to(h.dtype)[:, None]
        count = m.sum()
        mean = (h * m).sum(0) / count.clamp(min=1.0)
        var = ((h - mean).square() * m).sum(0) / count.clamp(min=1.0)
        out = (h - mean) * torch.rsqrt(var + bn.eps)
        if bn.affine:
            out = out * bn.weight + bn.bias
        if bn.training and bn.track_running_stats and bn.running_mean is not None:
            with torch.no_grad():
                update = count > 1
                bn.num_batches_tracked.add_(update.long())
                if bn.momentum is None:  # cumulative average
                    factor = update.to(h.dtype) / bn.num_batches_tracked.clamp(min=1).to(h.dtype)
                else:
                    factor = update.to(h.dtype) * bn.momentum
                unbiased = var * count / (count - 1).clamp(min=1.0)
                bn.running_mean.lerp_(mean.detach().to(bn.running_mean.dtype), factor)
                bn.running_var.lerp_(unbiased.detach().to(bn.running_var.dtype), factor)
        return out

    def to_conv(self) -> nn.Sequential:
        """The equivalent convolutional projector (shared copies of the weights; exact in eval mode)."""
        c, d = self.fc1.in_features, self.fc2.out_features
        conv1, conv2 = nn.Conv2d(c, c, 1), nn.Conv2d(c, d, 1)
        bn = nn.BatchNorm2d(c, eps=self.bn.eps, momentum=self.bn.momentum)
        with torch.no_grad():
            conv1.weight.copy_(self.fc1.weight[:, :, None, None])
            conv1.bias.copy_(self.fc1.bias)
            conv2.weight.copy_(self.fc2.weight[:, :, None, None])
            conv2.bias.copy_(self.fc2.bias)
        bn.load_state_dict(self.bn.state_dict())
        return nn.Sequential(conv1, nn.ReLU(), bn, conv2).to(self.fc1.weight.device)


class MultiScaleContrastiveLoss(nn.Module):
    """Multi-scale and cross-scale supervised pixel contrast (Pissas et al., ECCV 2022) on the encoder stages.

    Args:
        in_channels: channels ``C_s`` of each encoder stage, finest first, e.g. ``[64, 128, 320, 512]``.
        num_classes: ``K``.
        ignore_index: label of unlabelled pixels (any value outside ``[0, K)`` is ignored as well).
        cross_scale: add the finest → deepest and finest → second-deepest terms (weight 1 each).
        temperature: ``τ``.
        scale_weights: weight of each scale's loss, finest first; the first ``len(in_channels)`` are used.
        max_views_per_group: cap on the views of one (image, class) group.
        max_features: cap on the views of one scale (and the static buffer size).
        proj_dim: projection size ``D`` (shared by all scales so that cross-scale similarities are defined).

    Shapes:
        ``features``: sequence of ``(B, C_s, H_s, W_s)``, finest first; ``mask``: ``(B, H, W)`` integer;
        output: 0-dim float32.

    After each call, ``stats`` holds detached tensors ``groups``, ``views``, ``anchors``, ``scale_loss`` (one entry
    per scale) and ``cross_loss``, ``cross_anchors`` (one per cross term), and ``details`` (when ``keep_details``
    is set) one dict per scale from :func:`balanced_views` plus its ``stride``. Set ``min_group_size`` on the
    instance to change the 5-pixel threshold.

    Cost: per scale the pair matrix is ``A × A`` with ``A = min(max_features, B·H_s·W_s, B·K·max_views_per_group)``
    slots, valid or not (static shapes), i.e. ``O(A²·D)`` compute; it is processed in row blocks of
    ``CHUNK_ELEMENTS`` with a hand-written backward, so its memory is ``O(CHUNK_ELEMENTS)`` (64 MB) plus the
    ``(A, D)`` embeddings, not ``O(A²)`` (400 MB per matrix at 10,000).

    Example:
        >>> loss_fn = MultiScaleContrastiveLoss([64, 128, 320, 512], num_classes=6)
        >>> loss = loss_fn(model.encode(images), masks)  # doctest: +SKIP
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        *,
        ignore_index: int = 255,
        cross_scale: bool = True,
        temperature: float = 0.1,
        scale_weights: Sequence[float] = (1.0, 0.7, 0.4, 0.1),
        max_views_per_group: int = 2500,
        max_features: int = 10000,
        proj_dim: int = 256,
    ) -> None:
        super().__init__()
        self.in_channels = [int(c) for c in in_channels]
        self.scale_weights = [float(w) for w in scale_weights]
        if not self.in_channels:
            raise ValueError("in_channels must name at least one stage")
        if len(self.in_channels) > len(self.scale_weights):
            raise ValueError(f"{len(self.in_channels)} stages but only {len(self.scale_weights)} scale weights")
        if num_classes < 1 or temperature <= 0 or max_views_per_group < 1 or max_features < 1 or proj_dim < 1:
            raise ValueError(
                "num_classes, temperature, max_views_per_group, max_features and proj_dim must be positive"
            )
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.cross_scale = cross_scale
        self.temperature = temperature
        self.max_views_per_group = max_views_per_group
        self.max_features = max_features
        self.min_group_size = MIN_GROUP_SIZE
        self.projectors = nn.ModuleList(ScaleProjector(c, proj_dim) for c in self.in_channels)
        self.keep_details = False
        self.stats: SchemeStats = SchemeStats()
        self.details: list[dict[str, Tensor]] = []

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, cross_scale={self.cross_scale}, temperature={self.temperature}, "
            f"scale_weights={self.scale_weights[: len(self.in_channels)]}, "
            f"max_views_per_group={self.max_views_per_group}, max_features={self.max_features}"
        )

    def cross_pairs(self) -> list[tuple[int, int]]:
        """``(anchor scale, contrast scale)`` of the cross-scale terms: finest → deepest, → second deepest."""
        if not self.cross_scale:
            return []
        last = len(self.in_channels) - 1
        return [(0, d) for d in (last, last - 1) if d >= 1]

    # ------------------------------------------------------------------ checks
    def _strides(self, features: Sequence[Tensor], mask: Tensor) -> list[int]:
        return stage_strides(features, mask, self.in_channels)

    # ------------------------------------------------------------------ forward
    def forward(self, features: Sequence[Tensor], mask: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Weighted multi-scale plus cross-scale contrastive loss of one batch (0-dim float32 tensor)."""
        strides = self._strides(features, mask)
        embeddings, views = [], []
        for s, (feat, stride) in enumerate(zip(features, strides, strict=True)):
            labels = downsample_labels(mask, stride)
            v = balanced_views(
                labels, self.num_classes, self.max_views_per_group, self.max_features, self.min_group_size, generator
            )
            hw = feat.shape[-2] * feat.shape[-1]
            image, pixel = torch.div(v["index"], hw, rounding_mode="floor"), v["index"] % hw
            row, col = torch.div(pixel, feat.shape[-1], rounding_mode="floor"), pixel % feat.shape[-1]
            vectors = feat[image, :, row, col]  # (A, C_s): gather first, then project
            z = F.normalize(self.projectors[s](vectors, v["valid"]), dim=-1)
            v["stride"] = torch.tensor(stride)
            embeddings.append(z)
            views.append(v)

        scale_losses, scale_anchors = [], []
        for z, v in zip(embeddings, views, strict=True):
            loss_s, n_s = supervised_info_nce(
                z, v["label"], v["valid"], z, v["label"], v["valid"], self.temperature, exclude_self=True
            )
            scale_losses.append(loss_s)
            scale_anchors.append(n_s)
        total = sum(w * loss_s for w, loss_s in zip(self.scale_weights, scale_losses, strict=False))
        scale_losses_t = torch.stack(scale_losses)

        cross_losses, cross_anchors = [], []
        for a, c in self.cross_pairs():
            loss_x, n_x = supervised_info_nce(
                embeddings[a], views[a]["label"], views[a]["valid"],
                embeddings[c], views[c]["label"], views[c]["valid"],
                self.temperature, exclude_self=False,
            )  # fmt: skip
            cross_losses.append(loss_x)
            cross_anchors.append(n_x)
        if cross_losses:
            total = total + torch.stack(cross_losses).sum()

        device = total.device
        self.stats = SchemeStats(
            per_stage={
                "groups": torch.stack([v["groups"] for v in views]).detach(),
                "views": torch.stack([v["views"] for v in views]).detach(),
                "anchors": torch.stack(scale_anchors).detach(),
            },
            extra={
                "scale_loss": scale_losses_t.detach(),
                "cross_loss": _stack_or_empty(cross_losses, torch.float32, device),
                "cross_anchors": _stack_or_empty(cross_anchors, torch.int64, device),
            },
        )
        self.details = views if self.keep_details else []
        return total
