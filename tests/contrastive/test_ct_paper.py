"""``reduction="paper"``: the authors' CT loss, against a slow loop reference written from their code's rules.

The rules (docs/design.md §1.7, the authors' GeoSeg fork at commit 71f35b9), per stage and class ``c``:

* skip the class unless it has ≥ 5 positive and ≥ 5 negative patches;
* CL: ``term_neg`` = mean CL over the ``int(n · hf)`` most similar of the ``n = min(#pos, #neg)`` negative pairs;
  ``term_pos`` = mean CL over the ``int(h · hf)`` least similar of the ``h = #pos // 2`` positive pairs, only
  with ≥ 10 positives; class loss = ``term_neg + term_pos``;
* InfoNCE: needs ≥ 10 positives and negatives; ``n = min(#pos, #neg, 2000)`` pairs ranked by the negative's
  similarity, the top ``m = int(n · hf)`` kept; their positives in rank order split in halves (query, key);
  the ``m`` kept negatives shared; mean over queries of ``−log softmax([q·k, q·n…] / τ)[0]``;
* total = Σ over stages and classes / (#stages × #classes in the batch's mask, ignore excluded); then the clip.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from helpers.loss_inputs import CHANNELS, IGN, assert_same_gradients, blocky_mask, make_features

from ctseg.cli.entry import main
from ctseg.contrastive import PatchContrastiveLoss


def _cl(cos, target, eps):
    sim = (cos + 1) / 2
    t = target * (1 - eps) + eps / 2
    logp = torch.log_softmax(torch.stack([1 - sim, sim]), 0)
    return -((1 - t) * logp[0] + t * logp[1])


def paper_reference(fn: PatchContrastiveLoss, features, mask, clip: bool = True):
    k = fn.num_classes
    classes_in_batch = {int(v) for v in mask.unique()} - {IGN}
    total = torch.zeros(())
    for detail, s in zip(fn.details, fn.stages, strict=True):
        feat = features[s]
        b, _, hs, ws = feat.shape
        stride = mask.shape[-1] // ws

        def patch_is(n, i, j, c, kind):
            patch = mask[n, i * stride : (i + 1) * stride, j * stride : (j + 1) * stride].flatten().tolist()
            if kind == "pos":
                return all(v == c for v in patch)
            labelled = [v for v in patch if v != IGN]
            return len(labelled) > 0 and c not in labelled

        def embed(p):
            v = feat[p // (hs * ws), :, (p % (hs * ws)) // ws, p % ws]
            return F.normalize(fn.heads[str(s)](v[None]).float(), dim=-1)[0]

        index, valid = detail["index"], detail["valid"]
        for c in range(k):
            cells = [(n, i, j) for n in range(b) for i in range(hs) for j in range(ws)]
            n_pos = sum(patch_is(*cell, c, "pos") for cell in cells)
            n_neg = sum(patch_is(*cell, c, "neg") for cell in cells)
            if n_pos < 5 or n_neg < 5:
                continue
            zp = [embed(int(index[c, t])) for t in range(index.shape[1]) if valid[c, t]]
            zn = [embed(int(index[k + c, t])) for t in range(index.shape[1]) if valid[k + c, t]]
            if fn.loss == "cl":
                n = min(len(zp), len(zn))
                neg = sorted([torch.dot(zp[i], zn[i]) for i in range(n)], key=lambda v: -float(v))
                neg = neg[: int(n * fn.hard_fraction)]
                term_neg = torch.stack([_cl(v, 0.0, fn.smoothing) for v in neg]).mean() if neg else 0.0
                term_pos = 0.0
                if n_pos >= 10:
                    h = len(zp) // 2
                    pos = sorted([torch.dot(zp[i], zp[i + h]) for i in range(h)], key=lambda v: float(v))
                    pos = pos[: int(h * fn.hard_fraction)]
                    if pos:
                        term_pos = torch.stack([_cl(v, 1.0, fn.smoothing) for v in pos]).mean()
                total = total + term_neg + term_pos
            else:
                if n_pos < 10 or n_neg < 10:
                    continue
                n = min(len(zp), len(zn), 2000)
                ranked = sorted(range(n), key=lambda i: -float(torch.dot(zp[i], zn[i])))
                kept = ranked[: int(n * fn.hard_fraction)]
                h = len(kept) // 2
                if h == 0:
                    continue
                negs = [zn[i] for i in kept]
                terms = []
                for r in range(h):
                    q, key = zp[kept[r]], zp[kept[r + h]]
                    logits = torch.stack([torch.dot(q, key)] + [torch.dot(q, m) for m in negs]) / fn.temperature
                    terms.append(-torch.log_softmax(logits, 0)[0])
                total = total + torch.stack(terms).mean()
    loss = total / (len(fn.stages) * max(len(classes_in_batch), 1))
    if clip and fn.clip_mode == "value":
        loss = loss.clamp(0, fn.clip_value)
    return loss


def run(seed=0, b=2, size=64, k=4, block=8, ignore=0.02, **kwargs):
    mask = blocky_mask(b, size, k, block, seed, ignore_frac=ignore)
    feats = make_features(b, size, seed)
    torch.manual_seed(seed)
    fn = PatchContrastiveLoss(CHANNELS, k, reduction="paper", **kwargs)
    fn.keep_details = True
    return fn, feats, mask, fn(feats, mask)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(loss="cl", clip_mode=None),
        dict(loss="cl", clip_mode=None, hard_fraction=1.0, samples_per_class=7),
        dict(loss="cl", clip_mode=None, stages=[0, 1], hard_fraction=0.3),
        dict(loss="infonce", clip_mode=None),
        dict(loss="infonce", clip_mode=None, hard_fraction=0.25, samples_per_class=40),
        dict(loss="cl"),  # value clip: below 1 here, so unchanged
    ],
)
def test_matches_the_authors_reduction(kwargs):
    fn, feats, mask, loss = run(**kwargs)
    ref = paper_reference(fn, feats, mask)
    assert float(fn.stats["classes"].sum()) > 0, "the example must exercise the loss"
    torch.testing.assert_close(loss, ref, rtol=1e-4, atol=1e-6)
    assert_same_gradients(loss, ref, feats)


def test_skipped_classes_still_count_in_the_divisor():
    """Class 3 appears only as scattered pixels (never 5 pure patches): it adds nothing and still divides."""
    mask = blocky_mask(2, 64, 3, 8, 0)
    mask[:, ::9, ::9] = 3
    feats = make_features(2, 64, 0)
    torch.manual_seed(0)
    fn = PatchContrastiveLoss(CHANNELS, 4, reduction="paper", clip_mode=None, stages=[0])
    fn.keep_details = True
    loss = fn(feats, mask)
    active = fn.details[0]["active"]
    assert active[:3].all() and not bool(active[3])
    ref = paper_reference(fn, feats, mask)  # divides by 1 stage × 4 classes in the batch
    torch.testing.assert_close(loss, ref)
    assert not math.isclose(float(loss), float(ref) * 4 / 3, rel_tol=1e-3)  # not by the 3 that took part


def test_value_can_exceed_one_and_a_clipped_step_has_no_gradient():
    """At initialisation the authors' per-class CL loss is ≈ 2·log 2 ≈ 1.39: with big pure blocks every class
    takes part on the fine stages and the total passes 1; the value clip then passes exactly zero gradient."""
    mask = blocky_mask(2, 128, 2, 32, 1)
    feats = make_features(2, 128, 1)
    torch.manual_seed(0)
    raw = PatchContrastiveLoss(CHANNELS, 2, reduction="paper", clip_mode=None, stages=[0, 1])(feats, mask)
    assert float(raw) > 1.0
    torch.manual_seed(0)
    fn = PatchContrastiveLoss(CHANNELS, 2, reduction="paper", stages=[0, 1])
    clipped = fn(feats, mask)
    assert float(clipped) == 1.0 and float(fn.stats["contrastive_clipped"]) == 1.0
    assert float(fn.stats["contrastive_unclipped"]) == pytest.approx(float(raw))
    clipped.backward()
    assert all(f.grad is None or float(f.grad.abs().sum()) == 0 for f in feats)
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in fn.parameters())
    # ctseg's reduction on the same batch stays below the clip and trains
    mean = PatchContrastiveLoss(CHANNELS, 2, reduction="mean", stages=[0, 1])
    assert float(mean(feats, mask)) < 0.963 and float(mean.stats["contrastive_clipped"]) == 0.0


def test_unknown_reduction_is_one_cli_line(tmp_path, capsys):
    from helpers.tiny import TINY_CONFIG

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY_CONFIG)
    argv = ["fit", "--config", str(cfg), "--model.scheme_options", "{reduction: sum}",
            "--trainer.default_root_dir", str(tmp_path / "run")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["ctseg: error: --model.scheme_options: reduction must be 'paper' or 'mean', got 'sum'"]
    assert not (tmp_path / "run").exists()
