"""The four per-stage paths of the CT loss: (CL | InfoNCE) × (``reduction="paper"`` | ``"mean"``).

Each path takes one stage's fixed-size samples (:class:`StageSamples`) and returns per-class losses and
counts (:class:`ClassLosses`); :class:`~ctseg.contrastive.ct.PatchContrastiveLoss` reduces them over classes
and stages. Notation, per stage: ``K`` classes, ``P`` sampled positives (and negatives) per class, ``D`` the
projection size; row ``c`` of the samples holds class ``c``'s positives, row ``K + c`` its negatives.
Pairs: negative pair ``j`` is (positive ``j``, negative ``j``); positive pair ``i`` is (positive ``i``,
positive ``i + n/2``) with ``n`` the number of sampled positives (:func:`split_halves`).

* ``cl_mean`` / ``infonce_mean`` — ctseg's own reduction: one mean over all kept pairs (or queries) of a class.
* ``cl_paper`` / ``infonce_paper`` — what the authors' code (GeoSeg fork, commit 71f35b9) computes, docs/design.md §1.7:
  a class's CL loss is ``mean(kept negative pairs) + mean(kept positive pairs)``; InfoNCE picks its pairs by
  ranking the negative pairs. Hard mining keeps ``floor(fraction · n)`` pairs there (``int(n · take_top)``).

No path synchronises with the host: every shape is fixed; what depends on the data is a mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ctseg.contrastive.fused import cosines_at, inverse_norms, pair_cosines, take_unit_rows
from ctseg.contrastive.losses import cl_pair_loss, info_nce, masked_mean
from ctseg.contrastive.sampling import hardest_first, keep_count, split_halves

#: The authors' InfoNCE uses at most this many (positive, negative) pairs per class.
PAPER_INFONCE_MAX_PAIRS = 2000


@dataclass
class StageSamples:
    """One stage's samples: the projections of the sampled patches, and which projection each sample is.

    Attributes:
        rows: ``(U, D)`` float32 projections, not yet L2-normalised (the paths normalise, fused), with gradient.
        where: ``(2K, P)`` int64, sample ``(r, j)`` is ``rows[where[r, j]]`` — on the CPU each distinct sampled
            patch is projected once, so a patch sampled twice is one row —, or ``None`` when ``rows`` are the
            samples themselves in order (``U = 2K·P``; :meth:`dense`).
        valid: ``(2K, P)`` bool, a prefix of each row.
        n_eligible: ``(2K,)`` int64 eligible patches per row (may exceed ``P``).
    """

    rows: Tensor
    where: Tensor | None
    valid: Tensor
    n_eligible: Tensor

    @classmethod
    def dense(cls, u: Tensor, valid: Tensor, n_eligible: Tensor) -> StageSamples:
        """Samples given as ``u (2K, P, D)``, one row per sample."""
        return cls(u.reshape(-1, u.shape[-1]), None, valid, n_eligible)

    @property
    def k(self) -> int:
        return self.valid.shape[0] // 2

    def index(self, first: int, positions: Tensor) -> Tensor:
        """``(R', W)`` indices into :attr:`rows` of the samples ``(first + r, positions[r, j])``."""
        if self.where is None:
            p = self.valid.shape[1]
            sample_rows = torch.arange(first, first + positions.shape[0], device=positions.device).unsqueeze(1)
            return positions + sample_rows * p
        return self.where[first : first + positions.shape[0]].gather(1, positions)

    def gathered(self) -> Tensor:
        """``(2K, P, D)``: every sample's projection, with gradient (what the cross-rank gather sends)."""
        if self.where is None:
            return self.rows.view(*self.valid.shape, -1)
        return self.rows.index_select(0, self.where.reshape(-1)).view(*self.valid.shape, -1)

    def ranking(self, second: Tensor | None) -> tuple[Tensor, Tensor | None, Tensor]:
        """The cosines of every sampled pair, to rank them — ``neg_cos (K, P)`` and ``pos_cos (K, h)`` (``None``
        without ``second``; :func:`~ctseg.contrastive.fused.pair_cosines`, taken from :attr:`rows` by index, no
        gradient) — and ``ρ (U, 1)`` of :attr:`rows` (:func:`~ctseg.contrastive.fused.inverse_norms`)."""
        inv = inverse_norms(self.rows)
        k, p = self.k, self.valid.shape[1]
        if self.where is None:  # rows in sample order: the positives are rows 0 … K·P − 1, then the negatives
            every = torch.arange(2 * k * p, device=self.rows.device).view(2 * k, p)
        else:
            every = self.where
        neg_cos, pos_cos = pair_cosines(self.rows, inv, every[:k], every[k:], second)
        return neg_cos, pos_cos, inv


@dataclass
class ClassLosses:
    """Per-class result of one stage: ``loss (K,)`` (0 where not active), ``active (K,)`` bool (the class
    contributes), ``pos_pairs`` / ``neg_pairs (K,)`` int64 kept pairs (InfoNCE: queries / negatives)."""

    loss: Tensor
    active: Tensor
    pos_pairs: Tensor
    neg_pairs: Tensor


def _counts(samples: StageSamples) -> tuple[Tensor, Tensor]:
    k = samples.k
    return samples.n_eligible[:k], samples.n_eligible[k:]


def _cl_pair_terms(
    samples: StageSamples, hard_fraction: float, smoothing: float, cl_form: str, rounding: str
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-pair CL losses of the pairs hard mining may keep, in rank order, and which it keeps:
    ``pos_loss, pos_keep (K, W_pos)``, ``neg_loss, neg_keep (K, W_neg)`` (``W`` the static bound of what it keeps).

    Every pair's cosine is computed to rank them (no gradient); only the pairs that can be kept are differentiated
    (:func:`~ctseg.contrastive.fused.cosines_at`, given the ranking's values of those pairs, so the forward reads no
    row twice), and the backward works on about ``hard_fraction`` of the pairs.
    """
    k = samples.k
    v_pos, v_neg = samples.valid[:k], samples.valid[k:]
    _, second, pair_valid = split_halves(v_pos)
    neg_cos, pos_cos, inv_rows = samples.ranking(second)
    neg_order, neg_keep = hardest_first(neg_cos, v_pos & v_neg, hard_fraction, hardest_is_high=True, rounding=rounding)
    pos_order, pos_keep = hardest_first(pos_cos, pair_valid, hard_fraction, hardest_is_high=False, rounding=rounding)
    neg_pairs = (samples.index(0, neg_order), samples.index(k, neg_order))
    pos_pairs = (samples.index(0, pos_order), samples.index(0, second.gather(1, pos_order)))
    values = [neg_cos.gather(1, neg_order), pos_cos.gather(1, pos_order)]
    neg_cos, pos_cos = cosines_at(samples.rows, inv_rows, [neg_pairs, pos_pairs], values)
    pos_loss = cl_pair_loss(pos_cos, 1.0, smoothing, cl_form)
    neg_loss = cl_pair_loss(neg_cos, 0.0, smoothing, cl_form)
    return pos_loss, pos_keep, neg_loss, neg_keep


def cl_mean(
    samples: StageSamples, *, hard_fraction: float, min_samples: int, smoothing: float, cl_form: str
) -> ClassLosses:
    """ctseg's CL reduction: ``loss_c = Σ kept pair losses / #kept pairs`` (positive and negative pairs pooled).

    A class takes part with ``≥ min_samples`` eligible positives and negatives. For ``cl_form="logits"``,
    ``ε = 0.1``, a mean of per-pair losses in ``[0.363, 1.263]``: at most 0.963 while every kept pair has the same
    cosine and there are about twice as many kept negative as positive pairs, so the value clip rarely acts;
    above 1 only with opposed positive and aligned negative pairs, or very few positives (docs/design.md §1.7).
    """
    n_pos, n_neg = _counts(samples)
    present = (n_pos >= min_samples) & (n_neg >= min_samples)
    pos_loss, pos_keep, neg_loss, neg_keep = _cl_pair_terms(samples, hard_fraction, smoothing, cl_form, "ceil")
    pos_keep, neg_keep = pos_keep & present[:, None], neg_keep & present[:, None]
    total = (pos_loss * pos_keep).sum(-1) + (neg_loss * neg_keep).sum(-1)
    n_kept = pos_keep.sum(-1) + neg_keep.sum(-1)
    return ClassLosses(total / n_kept.clamp(min=1), present & (n_kept > 0), pos_keep.sum(-1), neg_keep.sum(-1))


def cl_paper(
    samples: StageSamples, *, hard_fraction: float, min_samples: int, smoothing: float, cl_form: str
) -> ClassLosses:
    """The authors' CL reduction: ``loss_c = term_neg + term_pos``.

    * a class takes part with ``≥ min_samples`` (5) eligible positives and negatives;
    * ``term_neg`` = mean CL over the kept (``floor(fraction · n)`` most similar) negative pairs;
    * ``term_pos`` = mean CL over the kept (least similar) positive pairs, only with ``≥ 2 · min_samples`` (10)
      eligible positives, else 0.

    At initialisation ``loss_c ≈ 2 log 2 ≈ 1.39`` (each mean ≈ log 2), so totals near or above the clip are
    common. The caller divides the sum over stages and classes by ``#stages × #classes in the batch``.
    """
    n_pos, n_neg = _counts(samples)
    present = (n_pos >= min_samples) & (n_neg >= min_samples)
    pos_loss, pos_keep, neg_loss, neg_keep = _cl_pair_terms(samples, hard_fraction, smoothing, cl_form, "floor")
    neg_keep = neg_keep & present[:, None]
    pos_keep = pos_keep & (present & (n_pos >= 2 * min_samples))[:, None]
    loss = masked_mean(neg_loss, neg_keep) + masked_mean(pos_loss, pos_keep)
    return ClassLosses(loss, present & (neg_keep.any(-1) | pos_keep.any(-1)), pos_keep.sum(-1), neg_keep.sum(-1))


def infonce_mean(samples: StageSamples, *, hard_fraction: float, min_samples: int, temperature: float) -> ClassLosses:
    """ctseg's InfoNCE: queries = first half of the sampled positives, keys = the paired second half, kept by
    hard mining (least similar pairs); negatives = the kept (most similar) negatives of the class, shared by all
    queries. ``loss_c`` = mean over kept queries of ``−log softmax([q·k, q·n_1 … q·n_N] / τ)[0]``.

    Only the kept pairs enter the logits: queries and negatives are gathered in rank order, to the static bound
    ``⌈f · P⌉`` of what hard mining keeps (:func:`~ctseg.contrastive.sampling.hardest_first`), so the
    ``(K, Q, N)`` logits are ``1/f²`` times smaller than over all sampled pairs; the value is the same sum.
    """
    k = samples.k
    n_pos, n_neg = _counts(samples)
    present = (n_pos >= min_samples) & (n_neg >= min_samples)
    v_pos, v_neg = samples.valid[:k], samples.valid[k:]
    _, second, pair_valid = split_halves(v_pos)
    neg_cos, pos_cos, inv_rows = samples.ranking(second)
    neg_order, neg_keep = hardest_first(neg_cos, v_pos & v_neg, hard_fraction, hardest_is_high=True)
    pos_order, pos_keep = hardest_first(pos_cos, pair_valid, hard_fraction, hardest_is_high=False)
    neg_keep, pos_keep = neg_keep & present[:, None], pos_keep & present[:, None]
    queries, keys, negatives = take_unit_rows(
        samples.rows,
        inv_rows,
        [samples.index(0, pos_order), samples.index(0, second.gather(1, pos_order)), samples.index(k, neg_order)],
    )
    per_query = info_nce(queries, keys, pos_keep, negatives, neg_keep, temperature)
    active = present & pos_keep.any(-1) & neg_keep.any(-1)
    return ClassLosses(masked_mean(per_query, pos_keep), active, pos_keep.sum(-1), neg_keep.sum(-1))


def infonce_paper(samples: StageSamples, *, hard_fraction: float, min_samples: int, temperature: float) -> ClassLosses:
    """The authors' InfoNCE pair choice.

    1. a class takes part with ``≥ 2 · min_samples`` (10) eligible positives and negatives (else it is
       skipped — the authors' fallback computes a loss and returns 0; not repeated);
    2. ``n = min(#positives, #negatives, 2000)`` pairs (positive ``j``, negative ``j``);
    3. keep the ``m = floor(fraction · n)`` pairs with the most similar negative, ranked by that similarity;
    4. the kept pairs' positives, in rank order, are split in halves: query ``r`` = rank ``r``, key = rank
       ``r + ⌊m/2⌋`` (``r < ⌊m/2⌋``); the ``m`` kept negatives are shared by all queries;
    5. ``loss_c`` = mean over queries of ``−log softmax([q·k, q·n_1 … q·n_m] / τ)[0]``.

    Shapes: with ``W = floor(fraction · min(P, 2000))``, the static bound of ``m``, negatives in rank order
    ``(K, W, D)`` and queries / keys ``(K, W//2, D)`` — only what can be kept enters the logits.
    """
    k = samples.k
    n_pos, n_neg = _counts(samples)
    present = (n_pos >= 2 * min_samples) & (n_neg >= 2 * min_samples)
    v_pos, v_neg = samples.valid[:k], samples.valid[k:]
    neg_cos, _, inv_rows = samples.ranking(None)
    positions = torch.arange(neg_cos.shape[1], device=neg_cos.device)
    pair_valid = v_pos & v_neg & (positions < PAPER_INFONCE_MAX_PAIRS)
    # order: positions by rank (0 = most similar negative); kept: rank < m, as a prefix of the ranking.
    order, kept = hardest_first(neg_cos, pair_valid, hard_fraction, hardest_is_high=True, rounding="floor")
    kept = kept & present[:, None]
    half = keep_count(pair_valid, hard_fraction, "floor").long() // 2  # (K, 1): ⌊m/2⌋
    ranks = positions[: order.shape[1] // 2].expand(k, -1)
    query_valid = (ranks < half) & present[:, None]
    key_rank = (ranks + half).clamp(max=max(order.shape[1] - 1, 0))
    queries, keys, negatives = take_unit_rows(
        samples.rows,
        inv_rows,
        [
            samples.index(0, order[:, : ranks.shape[1]]),
            samples.index(0, order.gather(1, key_rank)),
            samples.index(k, order),
        ],
    )
    per_query = info_nce(queries, keys, query_valid, negatives, kept, temperature)
    active = present & query_valid.any(-1)
    return ClassLosses(masked_mean(per_query, query_valid), active, query_valid.sum(-1), kept.sum(-1))


PATHS = {
    ("cl", "mean"): cl_mean,
    ("cl", "paper"): cl_paper,
    ("infonce", "mean"): infonce_mean,
    ("infonce", "paper"): infonce_paper,
}
