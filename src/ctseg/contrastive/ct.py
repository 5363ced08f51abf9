"""PatchContrastiveLoss: the Contrastive Transformer scheme on every encoder stage.

Reference: S. R. Jyhne, P.-A. Andersen, M. Goodwin, "Contrastive Transformer: Contrastive Learning Scheme with
Transformer innate Patches", arXiv:2303.14806. Decisions where the paper is vague: ``docs/design.md`` §1.

Per stage ``s`` with features ``F_s: (B, C_s, H_s, W_s)`` and stride ``r_s = H // H_s``:

1. count pixels per patch and class (:mod:`ctseg.contrastive.patches`); per class ``c`` the pure patches are
   positives, patches without ``c`` (and with some label) are negatives;
2. sample up to ``P = samples_per_class`` positives and ``P`` negatives per class from the whole batch,
   uniformly without replacement (fixed shapes, validity masks);
3. gather only those feature vectors, then project them: ``Linear(C_s→128) → GELU → Linear(128→128) → L2``
   (on the CPU each distinct sampled patch once);
4. negative pairs ``(pos_i, neg_i)`` keep the ``hard_fraction`` most similar; positive pairs
   ``(pos_i, pos_{i+n/2})`` keep the ``hard_fraction`` least similar;
5. loss per class: CL or InfoNCE under one of two reductions (:mod:`ctseg.contrastive.ct_paths`):

   * ``reduction="paper"`` (default; the authors' code): class loss ``term_neg + term_pos`` (CL) or the
     authors' InfoNCE pair choice; ``total = Σ_stages Σ_classes loss / (#stages × #classes in the batch)`` —
     classes present in the batch's mask (ignore excluded) that were skipped still count in the divisor;
   * ``reduction="mean"`` (ctseg's own): one mean over the kept pairs of a class, mean over the classes that
     take part, mean over the stages where any class takes part;

   then the clip (``clip_mode="value"``: ``clamp(total, 0, 1)``, no gradient above 1).

No step synchronises with the host: every shape is fixed by the configuration and input shapes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ctseg.contrastive.ct_paths import PATHS, ClassLosses, StageSamples
from ctseg.contrastive.distributed import all_reduce_sum, gather_samples
from ctseg.contrastive.losses import masked_mean
from ctseg.contrastive.patches import eligibility, multi_stride_counts, stage_strides
from ctseg.contrastive.sampling import distinct_indices, sample_eligible
from ctseg.contrastive.stats import SchemeStats

REDUCTIONS = ("paper", "mean")


def projects_distinct(device: torch.device) -> bool:
    """Whether the heads project each distinct sampled patch once on ``device`` (a data-dependent row count): on the
    CPU only, where reading that count costs nothing; elsewhere it would make the step wait for the device."""
    return device.type == "cpu"


class ProjectionHead(nn.Sequential):
    """``Linear(C → D) → GELU → Linear(D → D)``; the caller L2-normalises. Input ``(M, C)``, output ``(M, D)``."""

    def __init__(self, in_channels: int, proj_dim: int = 128) -> None:
        super().__init__(nn.Linear(in_channels, proj_dim), nn.GELU(), nn.Linear(proj_dim, proj_dim))


class PatchContrastiveLoss(nn.Module):
    """Supervised patch-level contrastive loss on the encoder stages (the CT scheme).

    Args:
        in_channels: channels ``C_s`` of each encoder stage, e.g. ``[64, 128, 256, 512]``.
        num_classes: ``K``.
        ignore_index: label of unlabelled pixels.
        loss: ``"cl"`` (the paper's custom loss) or ``"infonce"``.
        reduction: ``"paper"`` (the authors' code: per-class ``term_neg + term_pos``, total over
            ``#stages × #classes in the batch``) or ``"mean"`` (ctseg's: means over pairs, classes, stages).
            Public contract.
        samples_per_class: ``P``, positives (and negatives) sampled per class and stage.
        hard_fraction: fraction of valid pairs kept by hard mining (``1.0`` keeps all).
        min_samples: a class takes part in a stage with at least this many positives and negatives.
        temperature: InfoNCE ``τ``.
        smoothing: CL label smoothing ``ε`` (targets ``1 − ε/2`` and ``ε/2``).
        proj_dim: projection size ``D``.
        cl_form: ``"logits"`` (authors' code) or ``"probability"``; see :func:`~ctseg.contrastive.losses.cl_pair_loss`.
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

    After each call, ``stats`` (a :class:`~ctseg.contrastive.stats.SchemeStats`) holds detached per-stage
    tensors ``classes``, ``pos_pairs``, ``neg_pairs`` (classes that took part, pairs kept) and the scalars
    ``contrastive_unclipped`` (the loss before the clip) and ``contrastive_clipped`` (1.0 when the clip passed no
    gradient: ``clip_mode="value"`` and the loss above ``clip_value``); ``details`` (when ``keep_details`` is
    set) holds the sampled indices for inspection and tests.

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
        reduction: str = "paper",
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
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be 'paper' or 'mean', got {reduction!r}")
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
        self.reduction = reduction
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
        self.stats: SchemeStats = SchemeStats()
        self.details: list[dict[str, Tensor]] = []

    def extra_repr(self) -> str:
        return (
            f"loss={self.loss!r}, reduction={self.reduction!r}, stages={self.stages}, "
            f"samples_per_class={self.samples_per_class}, hard_fraction={self.hard_fraction}, "
            f"clip_mode={self.clip_mode!r}"
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
        results: list[ClassLosses] = []
        details = []
        for s, stride, count in zip(self.stages, used, counts, strict=True):
            result, detail = self._stage(s, features[s], count, stride, generator)
            results.append(result)
            details.append(detail)
        loss = self._reduce(results, counts[0])
        unclipped = loss.detach()
        clipped = (unclipped > self.clip_value) if self.clip_mode == "value" else torch.zeros_like(unclipped)
        self.stats = SchemeStats(
            per_stage={
                "classes": torch.stack([r.active.sum() for r in results]).detach(),
                "pos_pairs": torch.stack([r.pos_pairs.sum() for r in results]).detach(),
                "neg_pairs": torch.stack([r.neg_pairs.sum() for r in results]).detach(),
            },
            scalars={"contrastive_unclipped": unclipped},
            epoch_means={"contrastive_clipped": clipped.float()},
        )
        self.details = details if self.keep_details else []
        return self._clip(loss)

    def _reduce(self, results: list[ClassLosses], count: Tensor) -> Tensor:
        """Per-class losses of every stage → the total (before the clip); ``count``: a stage's ``(B, K+1, h, w)``
        patch-class pixel counts (any stage: every pixel is in one patch)."""
        if self.reduction == "mean":
            stage_losses = torch.stack([masked_mean(r.loss, r.active, dim=0) for r in results])
            stage_active = torch.stack([r.active.any() for r in results])
            return masked_mean(stage_losses, stage_active, dim=0)
        pixels = count[:, : self.num_classes].sum((0, 2, 3))  # (K,) labelled pixels per class in the batch
        if self.gather_across_ranks:
            pixels = all_reduce_sum(pixels)
        n_classes = (pixels > 0).sum().clamp(min=1)  # classes in the batch, ignore excluded, skipped ones too
        total = torch.stack([(r.loss * r.active).sum() for r in results]).sum()
        return total / (len(results) * n_classes)

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
    ) -> tuple[ClassLosses, dict[str, Tensor]]:
        """Sample, embed (and under DDP gather) one stage, then run the (loss, reduction) path on it."""
        eligible = self._eligible(count, stride)
        index, valid, n_eligible = self._sample(eligible, generator)
        rows, where = self._embed(s, feat, index)
        detail = {"index": index, "valid": valid} if self.keep_details else {}
        samples = StageSamples(rows, where, valid, n_eligible)
        if self.gather_across_ranks:
            u, valid, n_eligible = gather_samples(samples.gathered(), valid, n_eligible)
            samples = StageSamples.dense(u, valid, n_eligible)
        path = PATHS[(self.loss, self.reduction)]
        if self.loss == "cl":
            opts = {"smoothing": self.smoothing, "cl_form": self.cl_form}
        else:
            opts = {"temperature": self.temperature}
        result = path(samples, hard_fraction=self.hard_fraction, min_samples=self.min_samples, **opts)
        if self.keep_details:
            k = self.num_classes
            detail["present"] = (n_eligible[:k] >= self.min_samples) & (n_eligible[k:] >= self.min_samples)
            detail["active"] = result.active
        return result, detail

    def _sample(self, eligible: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor]:
        """Sampling step (``(2K, N)`` eligibility → index, validity, eligible counts); a hook for tests."""
        return sample_eligible(eligible, self.samples_per_class, generator)

    def _embed(self, s: int, feat: Tensor, index: Tensor) -> tuple[Tensor, Tensor | None]:
        """Unnormalised float32 projections of the sampled patches ``index (2K, k)``: ``(rows (U, D), where)`` with
        sample ``(r, j)`` the row ``where[r, j]``, or ``where = None`` when the rows are the ``2K·k`` samples in
        order (:class:`~ctseg.contrastive.ct_paths.StageSamples`).

        The head is applied row by row, so each patch needs projecting once however often it was sampled (a
        patch is a negative of several classes, and a positive of one): on the CPU the distinct sampled patches
        are projected (:func:`~ctseg.contrastive.sampling.distinct_indices`; stage 0 of a 4 × 256² batch: about
        9,500 distinct of 12,288 samples, a quarter of the heads' work), and the paths take the rows they need
        from them, so no ``(2K, k, D)`` copy of the projections is differentiated. Their number depends on the
        data, which costs nothing on the CPU; on an accelerator it would make the step wait for the device, so
        there the fixed shapes are kept: the sampled rows are gathered first and projected (``2K·k`` rows instead
        of the whole map), or, on coarse stages whose map holds fewer patches than there are samples, every patch
        is projected once and ``where`` is ``index``. All give identical values per row. The caller L2-normalises
        (:mod:`ctseg.contrastive.fused`).

        Rows of channels-last features are a free view of the map. NCHW features are not transposed element by
        element (a slow strided copy on the CPU): the map is copied in ``H·W``-long runs to ``(C, B·H·W)``, whose
        columns are the patches, and the heads take the transposed view, which the matrix product reads as it is.
        (Indexing the NCHW map directly avoids any copy, but its backward is an accumulating ``index_put``, which
        sorts the indices: 9 ms per step on the 2-core CPU; ``benchmarks/README.md``.)
        """
        head = self.heads[str(s)]
        b, c, h, w = feat.shape
        flat_index = index.reshape(-1)
        channels_last = feat.permute(0, 2, 3, 1).is_contiguous()
        if channels_last:
            rows = feat.permute(0, 2, 3, 1).reshape(b * h * w, c)  # a view
        else:
            columns = feat.reshape(b, c, h * w).transpose(0, 1).reshape(c, b * h * w)  # copied in H·W runs
            rows = columns.t()
        if projects_distinct(feat.device):
            distinct, where = distinct_indices(flat_index, b * h * w)
            if distinct.numel() == b * h * w:
                return head(rows).float(), index
            rows = rows.index_select(0, distinct) if channels_last else columns.index_select(1, distinct).t()
            return head(rows).float(), where.view(index.shape)
        if b * h * w < flat_index.numel():
            return head(rows).float(), index
        if channels_last:
            return head(rows.index_select(0, flat_index)).float(), None
        return head(columns.index_select(1, flat_index).t()).float(), None
