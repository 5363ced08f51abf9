import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ctseg.contrastive import patch_class_counts, patch_labels
from ctseg.contrastive.patches import eligibility, multi_stride_counts

IGN = 255


def loop_counts(mask, stride, k):
    b, h, w = mask.shape
    out = torch.zeros(b, k + 1, h // stride, w // stride, dtype=torch.int64)
    for n in range(b):
        for i in range(h // stride):
            for j in range(w // stride):
                patch = mask[n, i * stride : (i + 1) * stride, j * stride : (j + 1) * stride].flatten()
                for v in patch.tolist():
                    out[n, v if 0 <= v < k else k, i, j] += 1
    return out


def test_hand_made_mask_known_answer():
    # 8×8 mask, K=3; four 4×4 quadrants: pure 0, pure 1, mixed 0/2, all ignore.
    m = torch.zeros(1, 8, 8, dtype=torch.long)
    m[0, :4, 4:] = 1
    m[0, 4:, :4] = 2
    m[0, 4:, :2] = 0
    m[0, 4:, 4:] = IGN
    labels = patch_labels(m, 4, 3, IGN)
    assert labels.tolist() == [[[0, 1], [-1, -1]]]
    counts = patch_class_counts(m, 4, 3, IGN)
    assert counts[0, :, 1, 0].tolist() == [8, 0, 8, 0]
    assert counts[0, :, 1, 1].tolist() == [0, 0, 0, 16]
    pos, neg = eligibility(counts, 4, 3)
    # patches flattened (b, i, j): TL, TR, BL, BR
    assert pos.tolist() == [[True, False, False, False], [False, True, False, False], [False] * 4]
    # class 0: negative only TR (BL contains 0, BR is all ignore); class 1: TL and BL; class 2: TL and TR
    assert neg.tolist() == [[False, True, False, False], [True, False, True, False], [True, True, False, False]]
    # stride 2: the mixed quadrant splits into pure 0 and pure 2 patches
    assert patch_labels(m, 2, 3, IGN)[0, 2:, :2].tolist() == [[0, 2], [0, 2]]


def test_counts_match_loop_and_sum_to_area():
    g = torch.Generator().manual_seed(0)
    m = torch.randint(0, 5, (2, 16, 24), generator=g)
    m[0, :5, :7] = IGN
    m[1, 3, 3] = 17  # out of range counts as ignore
    m[1, 9, 2:5] = -2  # so do negative labels
    m[0, 12, 20] = 4  # the value K itself
    for stride in (1, 2, 4, 8):
        c = patch_class_counts(m, stride, 4, IGN)
        assert c.shape == (2, 5, 16 // stride, 24 // stride)
        assert torch.equal(c.long(), loop_counts(m, stride, 4))
        assert (c.sum(1) == stride * stride).all()
        small = m.clamp(0, 255).to(torch.uint8)  # an 8-bit mask, as a data loader may give
        assert torch.equal(patch_class_counts(small, stride, 4, IGN).long(), loop_counts(small.long(), stride, 4))


def test_pooled_pyramid_equals_direct_counts():
    m = torch.randint(0, 3, (3, 64, 64))
    strides = [4, 8, 16, 32, 64, 2]
    for s, c in zip(strides, multi_stride_counts(m, strides, 3), strict=True):
        assert torch.equal(c, patch_class_counts(m, s, 3))
    odd = [2, 6, 8, 24]  # pooled by 3 (6 from 2), 4 (8 from 2) and 3 (24 from 8)
    for s, c in zip(odd, multi_stride_counts(m[:, :48, :48], odd, 3), strict=True):
        assert c.dtype == torch.int32 and torch.equal(c, patch_class_counts(m[:, :48, :48], s, 3))


def test_stride_must_divide():
    with pytest.raises(ValueError, match="stride 3"):
        patch_class_counts(torch.zeros(1, 8, 8, dtype=torch.long), 3, 2, IGN)


@settings(max_examples=60, deadline=None)
@given(
    b=st.integers(1, 3),
    k=st.integers(1, 6),
    cells=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    stride=st.sampled_from([1, 2, 4]),
    seed=st.integers(0, 2**16),
)
def test_property_labels_consistent_with_counts(b, k, cells, stride, seed):
    g = torch.Generator().manual_seed(seed)
    h, w = cells[0] * stride * 2, cells[1] * stride * 2
    # block-structured labels so that pure patches exist, plus random ignore
    coarse = torch.randint(0, k, (b, h // (2 * stride), w // (2 * stride)), generator=g)
    m = coarse.repeat_interleave(2 * stride, 1).repeat_interleave(2 * stride, 2)
    m[torch.rand(m.shape, generator=g) < 0.05] = IGN
    counts = patch_class_counts(m, stride, k, IGN)
    assert (counts.sum(1) == stride**2).all()
    labels = patch_labels(m, stride, k, IGN)
    pos, neg = eligibility(counts, stride, k)
    for c in range(k):
        assert torch.equal(pos[c], (labels == c).flatten())
        # a patch is never both positive and negative, and negatives contain no pixel of c
        assert not (pos[c] & neg[c]).any()
        has_c = (counts[:, c] > 0).flatten()
        assert not (neg[c] & has_c).any()
