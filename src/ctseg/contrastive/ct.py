"""PatchContrastiveLoss: the Contrastive Transformer scheme on every encoder stage.

Reference: S. R. Jyhne, P.-A. Andersen, M. Goodwin, "Contrastive Transformer: Contrastive Learning Scheme with
Transformer innate Patches", arXiv:2303.14806. Decisions where the paper is vague: ``SPEC.md`` §1.

Per stage ``s`` with features ``F_s: (B, C_s, H_s, W_s)`` and stride ``r_s = H // H_s``:

1. count pixels per patch and class (:mod:`ctseg.contrastive.patches`); per class ``c`` the pure patches are
   positives, patches without ``c`` (and with some label) are negatives;
2. sample up to ``P = samples_per_class`` positives and ``P`` negatives per class from the whole batch,
   uniformly without replacement (fixed shapes, validity masks);
3. gather only those feature vectors, then project them: ``Linear(C_s→128) → GELU → Linear(128→128) → L2``;
4. negative pairs ``(pos_i, neg_i)`` keep the ``hard_fraction`` most similar; positive pairs
   ``(pos_i, pos_{i+n/2})`` keep the ``hard_fraction`` least similar;
5. loss per class (CL or InfoNCE, :mod:`ctseg.contrastive.losses`), mean over the classes that take part
   (≥ ``min_samples`` positives and negatives), mean over the stages where any class takes part; then the clip.

No step synchronises with the host: every shape is fixed by the configuration and input shapes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ctseg.contrastive.fused import l2_normalize, normalized_pair_cosines
from ctseg.contrastive.losses import cl_pair_loss, info_nce, masked_mean
from ctseg.contrastive.patches import eligibility, multi_stride_counts, stage_strides
from ctseg.contrastive.sampling import keep_hardest, sample_eligible, split_halves


class ProjectionHead(nn.Sequential):
    """``Linear(C → D) → GELU → Linear(D → D)``; the caller L2-normalises. Input ``(M, C)``, output ``(M, D)``."""

    def __init__(self, in_channels: int, proj_dim: int = 128) -> None:
        super().__init__(nn.Linear(in_channels, proj_dim), nn.GELU(), nn.Linear(proj_dim, proj_dim))


class _AllGatherDim1(torch.autograd.Function):
    """Concatenate every rank's tensor along dim 1; backward sums the incoming gradients over ranks
    (every rank computes the same global loss) and returns this rank's slice."""

    @staticmethod
    def forward(ctx, t: Tensor) -> Tensor:
        import torch.distributed as dist

        ctx.rank, ctx.width = dist.get_rank(), t.shape[1]
        return _gather_no_grad(t)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        import torch.distributed as dist

        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad.narrow(1, ctx.rank * ctx.width, ctx.width)


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _gather_global(tensors: list[Tensor]) -> list[Tensor]:
    """All-gather along dim 1 across DDP ranks, with gradient where needed (identity when not distributed)."""
    if not _distributed():
        return tensors
    out = []
    for t in tensors:
        if t.requires_grad:
            out.append(_AllGatherDim1.apply(t))
        else:
            out.append(_gather_no_grad(t))
    return out


def _gather_no_grad(t: Tensor) -> Tensor:
    import torch.distributed as dist

    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts, dim=1)


class PatchContrastiveLoss(nn.Module):
    """Supervised patch-level contrastive loss on the encoder stages (the CT scheme).

    Args:
        in_channels: channels ``C_s`` of each encoder stage, e.g. ``[64, 128, 256, 512]``.
        num_classes: ``K``.
        ignore_index: label of unlabelled pixels.
        loss: ``"cl"`` (the paper's custom loss) or ``"infonce"``.
        samples_per_class: ``P``, positives (and negatives) sampled per class and stage.
        hard_fraction: fraction of valid pairs kept by hard mining (``1.0`` keeps all).
        min_samples: a class takes part in a stage with at least this many positives and negatives.
        temperature: InfoNCE ``τ``.
        smoothing: CL label smoothing ``ε`` (targets ``1 − ε/2`` and ``ε/2``).
        proj_dim: projection size ``D``.
        cl_form: ``"logits"`` (authors' code) or ``"probability"``; see :func:`cl_pair_loss`.
        clip_mode: ``"value"`` (``clamp(loss, 0, clip_value)``, no gradient above), ``"scale"``
            (``loss · min(1, clip_value / loss.detach())``, gradient kept) or ``None``.
        clip_value: the clip threshold.
        stages: indices of the stages that take part (default: all); heads exist only for these.
        edge_patches: also use mixed patches whose labelled pixels are mostly ``c`` as positives for ``c``
            (hard anchors at class borders; paper §6). Off by default.
        gather_across_ranks: under DDP, all-gather the sampled embeddings (with gradient) so each class's
            pairs and negatives come from the global batch.

    Shapes:
        ``features``: sequence of ``(B, C_s, H_s, W_s)``; ``mask``: ``(B, H, W)`` integer; output: 0-dim.

    After each call, ``stats`` holds detached per-stage tensors ``classes``, ``pos_pairs``, ``neg_pairs``
    (how many classes took part and how many pairs were kept) and the 0-dim ``unclipped`` loss; ``details``
    (when ``keep_details`` is set) holds the sampled indices for inspection and tests.

    Example:
        >>> loss_fn = PatchContrastiveLoss([64, 128, 256, 512], num_classes=6)
        >>> loss = loss_fn(model.encode(images), masks)  # doctest: +SKIP
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        *,
        ignore_index: int = 255,
        loss: str = "cl",
        samples_per_class: int = 1024,
        hard_fraction: float = 0.5,
        min_samples: int = 5,
        temperature: float = 0.1,
        smoothing: float = 0.1,
        proj_dim: int = 128,
        cl_form: str = "logits",
        clip_mode: str | None = "value",
        clip_value: float = 1.0,
        stages: Sequence[int] | None = None,
        edge_patches: bool = False,
        gather_across_ranks: bool = False,
    ) -> None:
        super().__init__()
        if loss not in ("cl", "infonce"):
            raise ValueError(f"loss must be 'cl' or 'infonce', got {loss!r}")
        if cl_form not in ("logits", "probability"):
            raise ValueError(f"cl_form must be 'logits' or 'probability', got {cl_form!r}")
        if clip_mode not in ("value", "scale", None):
            raise ValueError(f"clip_mode must be 'value', 'scale' or None, got {clip_mode!r}")
        if not 0.0 < hard_fraction <= 1.0:
            raise ValueError(f"hard_fraction must be in (0, 1], got {hard_fraction}")
        if samples_per_class < 1 or min_samples < 1 or num_classes < 1 or temperature <= 0:
            raise ValueError("samples_per_class, min_samples, num_classes and temperature must be positive")
        self.in_channels = [int(c) for c in in_channels]
        n_stages = len(self.in_channels)
        self.stages = list(range(n_stages)) if stages is None else sorted({int(s) for s in stages})
        if not self.stages or any(s < 0 or s >= n_stages for s in self.stages):
            raise ValueError(f"stages must be indices in [0, {n_stages}), got {stages}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.loss = loss
        self.samples_per_class = samples_per_class
        self.hard_fraction = hard_fraction
        self.min_samples = min_samples
        self.temperature = temperature
        self.smoothing = smoothing
        self.cl_form = cl_form
        self.clip_mode = clip_mode
        self.clip_value = clip_value
        self.edge_patches = edge_patches
        self.gather_across_ranks = gather_across_ranks
        self.heads = nn.ModuleDict({str(s): ProjectionHead(self.in_channels[s], proj_dim) for s in self.stages})
        self.keep_details = False
        self.stats: dict[str, Tensor] = {}
        self.details: list[dict[str, Tensor]] = []

    def extra_repr(self) -> str:
        return (
            f"loss={self.loss!r}, stages={self.stages}, samples_per_class={self.samples_per_class}, "
            f"hard_fraction={self.hard_fraction}, clip_mode={self.clip_mode!r}"
        )

    # ------------------------------------------------------------------ checks
    def _strides(self, features: Sequence[Tensor], mask: Tensor) -> list[int]:
        return stage_strides(features, mask, self.in_channels)

    # ------------------------------------------------------------------ forward
    def forward(self, features: Sequence[Tensor], mask: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Contrastive loss of one batch (0-dim float32 tensor, clipped per ``clip_mode``)."""
        strides = self._strides(features, mask)
        used = [strides[s] for s in self.stages]
        counts = multi_stride_counts(mask, used, self.num_classes)
        stage_losses, stage_active, stats, details = [], [], [], []
        for s, stride, count in zip(self.stages, used, counts, strict=True):
            loss_s, active_s, stat_s, detail_s = self._stage(s, features[s], count, stride, generator)
            stage_losses.append(loss_s)
            stage_active.append(active_s)
            stats.append(stat_s)
            details.append(detail_s)
        losses, active = torch.stack(stage_losses), torch.stack(stage_active)
        loss = masked_mean(losses, active, dim=0)
        stat = torch.stack(stats).detach()
        self.stats = {
            "classes": stat[:, 0],
            "pos_pairs": stat[:, 1],
            "neg_pairs": stat[:, 2],
            "unclipped": loss.detach(),  # before the clip: above clip_value, "value" clipping passes no gradient
        }
        self.details = details if self.keep_details else []
        return self._clip(loss)

    def _clip(self, loss: Tensor) -> Tensor:
        if self.clip_mode == "value":
            return loss.clamp(0.0, self.clip_value)
        if self.clip_mode == "scale":
            return loss * (self.clip_value / loss.detach().clamp(min=self.clip_value))
        return loss

    def _eligible(self, count: Tensor, stride: int) -> Tensor:
        """``(2K, N)`` bool: rows ``0..K-1`` positives, ``K..2K-1`` negatives."""
        positive, negative = eligibility(count, stride, self.num_classes)
        if self.edge_patches:
            k = self.num_classes
            per_class = count[:, :k]
            labelled = (stride * stride - count[:, k : k + 1]).clamp(min=1)
            majority = (2 * per_class > labelled).transpose(0, 1).reshape(k, -1)
            positive = positive | majority
        return torch.cat([positive, negative], dim=0)

    def _stage(
        self, s: int, feat: Tensor, count: Tensor, stride: int, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        k = self.num_classes
        eligible = self._eligible(count, stride)
        index, valid, n_eligible = self._sample(eligible, generator)
        u = self._embed(s, feat, index)
        detail = {"index": index, "valid": valid} if self.keep_details else {}
        if self.gather_across_ranks:
            u, valid, n_eligible = self._gather(u, valid, n_eligible)
        present = (n_eligible[:k] >= self.min_samples) & (n_eligible[k:] >= self.min_samples)
        v_pos, v_neg = valid[:k], valid[k:]

        # Positive pairs: i with i + n/2 (second[r, i] = i + n/2, i < h); negative pairs: positive i with negative i.
        _, second, pair_valid = split_halves(v_pos)
        if self.loss == "cl":
            neg_cos, pos_cos = normalized_pair_cosines(u, second)
        else:
            # Queries z_pos[:, :h], keys z_pos[second]; negatives shared per class. The cosines only rank pairs.
            z = l2_normalize(u)
            z_pos, z_neg = z[:k], z[k:]
            z_a = z_pos[:, : second.shape[1]]
            z_b = z_pos.gather(1, second.unsqueeze(-1).expand(-1, -1, z.shape[-1]))
            with torch.no_grad():
                neg_cos, pos_cos = (z_pos * z_neg).sum(-1), (z_a * z_b).sum(-1)
        # Keep the most similar negative pairs and the least similar positive pairs.
        neg_keep = keep_hardest(neg_cos, v_pos & v_neg, self.hard_fraction, hardest_is_high=True)
        pos_keep = keep_hardest(pos_cos, pair_valid, self.hard_fraction, hardest_is_high=False)
        neg_keep = neg_keep & present[:, None]
        pos_keep = pos_keep & present[:, None]

        if self.loss == "cl":
            pos_loss = cl_pair_loss(pos_cos, torch.ones_like(pos_cos), self.smoothing, self.cl_form)
            neg_loss = cl_pair_loss(neg_cos, torch.zeros_like(neg_cos), self.smoothing, self.cl_form)
            total = (pos_loss * pos_keep).sum(-1) + (neg_loss * neg_keep).sum(-1)
            n_kept = pos_keep.sum(-1) + neg_keep.sum(-1)
            per_class = total / n_kept.clamp(min=1)
            class_active = present & (n_kept > 0)
        else:
            per_query = info_nce(z_a, z_b, pos_keep, z_neg, neg_keep, self.temperature)
            per_class = masked_mean(per_query, pos_keep)
            class_active = present & pos_keep.any(-1) & neg_keep.any(-1)
        stage_loss = masked_mean(per_class, class_active, dim=0)
        stat = torch.stack([class_active.sum(), pos_keep.sum(), neg_keep.sum()])
        if self.keep_details:
            detail["present"] = present
        return stage_loss, class_active.any(), stat, detail

    def _sample(self, eligible: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor]:
        """Sampling step (``(2K, N)`` eligibility → index, validity, eligible counts); a hook for tests."""
        return sample_eligible(eligible, self.samples_per_class, generator)

    def _embed(self, s: int, feat: Tensor, index: Tensor) -> Tensor:
        """Unnormalised float32 projections of the sampled patches: ``index (2K, k)`` → ``(2K, k, D)``.

        Normally the sampled rows are gathered first and only they are projected (``2K·k`` rows instead of the
        whole map): from the ``(B·H·W, C)`` row view when the features are channels-last (a free view), else by
        indexing the NCHW map directly (no full-size copy). On coarse stages the map can hold fewer patches than
        there are samples (classes share patches as negatives); then projecting every patch once and gathering
        the projections is cheaper and gives identical values. The caller L2-normalises
        (:mod:`ctseg.contrastive.fused`).
        """
        head = self.heads[str(s)]
        b, c, h, w = feat.shape
        flat_index = index.reshape(-1)
        rows = feat.permute(0, 2, 3, 1)  # (B, H, W, C); contiguous for channels-last features
        if b * h * w < flat_index.numel():
            u = head(rows.reshape(b * h * w, c)).float().index_select(0, flat_index)
        elif rows.is_contiguous():
            u = head(rows.reshape(b * h * w, c).index_select(0, flat_index)).float()
        else:
            u = head(feat.flatten(2)[flat_index // (h * w), :, flat_index % (h * w)]).float()
        return u.view(*index.shape, -1)

    def _gather(self, u: Tensor, valid: Tensor, n_eligible: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Concatenate every rank's samples per class and move the valid ones to the front (stable)."""
        u, valid = _gather_global([u, valid])
        if _distributed():
            import torch.distributed as dist

            n_eligible = n_eligible.clone()
            dist.all_reduce(n_eligible)
        order = (~valid).to(torch.int8).argsort(dim=1, stable=True)
        valid = valid.gather(1, order)
        u = u.gather(1, order.unsqueeze(-1).expand(-1, -1, u.shape[-1]))
        return u, valid, n_eligible
