"""Training augmentation (per sample and batched) and normalisation."""

from __future__ import annotations

import pytest
import torch

from ctseg.data.definitions import DUBAI, IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD
from ctseg.data.transforms import BatchTrainTransform, Normalize, TrainTransform, normalize

MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


def _blocks(size: int = 64, seed: int = 0, block: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 image (3, H, W) whose first channel encodes the mask (class × 40), mask (H, W) in 8 px blocks."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, 6, (size // block, size // block), generator=g)
    mask = coarse.repeat_interleave(block, 0).repeat_interleave(block, 1)
    image = torch.stack([mask * 40, mask * 0 + 100, 255 - mask * 40]).to(torch.uint8)
    return image, mask


def _denormalized_class(image: torch.Tensor) -> torch.Tensor:
    """Recover the class encoded in channel 0 of a normalised image (nearest multiple of 40)."""
    channel = image[..., 0, :, :] * STD[0] + MEAN[0]
    return torch.round(channel * 255 / 40).to(torch.int64)


def _check_aligned(image: torch.Tensor, mask: torch.Tensor) -> None:
    """Where the mask is labelled, the image (bilinear) shows the same class except near block edges."""
    labelled = mask != IGNORE_INDEX
    agree = (_denormalized_class(image) == mask) & labelled
    assert agree.sum() >= 0.8 * labelled.sum()


def test_normalize_values():
    image = torch.randint(0, 256, (3, 5, 7), dtype=torch.uint8)
    expected = (image.float() / 255 - MEAN) / STD
    assert torch.allclose(normalize(image), expected)
    assert torch.allclose(normalize(image.float() / 255), expected)
    batch = Normalize.from_info(DUBAI)({"image": image[None], "mask": torch.zeros(1, 5, 7, dtype=torch.uint8)})
    assert torch.allclose(batch["image"][0], expected) and batch["mask"].dtype == torch.int64


def test_per_sample_shapes_labels_alignment_and_determinism():
    image, mask = _blocks()
    t = TrainTransform(48)
    seen_padding = False
    for seed in range(30):
        out = t({"image": image, "mask": mask, "meta": "kept"}, generator=torch.Generator().manual_seed(seed))
        assert out["image"].shape == (3, 48, 48) and out["image"].dtype == torch.float32
        assert out["mask"].shape == (48, 48) and out["mask"].dtype == torch.int64 and out["meta"] == "kept"
        assert set(out["mask"].unique().tolist()) <= set(mask.unique().tolist()) | {IGNORE_INDEX}
        _check_aligned(out["image"], out["mask"])
        seen_padding |= bool((out["mask"] == IGNORE_INDEX).any())
    assert not seen_padding  # 64 px scaled by ≥ 0.75 still covers a 48 px crop
    a = t({"image": image, "mask": mask}, generator=torch.Generator().manual_seed(3))
    b = t({"image": image.float() / 255, "mask": mask}, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(a["image"], b["image"], atol=1e-6) and torch.equal(a["mask"], b["mask"])


def test_per_sample_identity_and_padding():
    image, mask = _blocks()
    plain = TrainTransform(64, scale_range=(1.0, 1.0), rotate=False, flip=False)
    out = plain({"image": image, "mask": mask})
    assert torch.allclose(out["image"], normalize(image)) and torch.equal(out["mask"], mask)
    small = TrainTransform(64, scale_range=(0.5, 0.5), rotate=False, flip=False)
    out = small({"image": image, "mask": mask}, generator=torch.Generator().manual_seed(0))
    assert (out["mask"] == IGNORE_INDEX).float().mean() == pytest.approx(0.75)
    _check_aligned(out["image"], out["mask"])
    resized = TrainTransform(32, crop_size=64, scale_range=(1.0, 1.0), rotate=False, flip=False)
    out = resized({"image": image, "mask": mask})
    assert torch.equal(out["mask"], mask[1::2, 1::2])  # nearest at pixel centres


def test_batched_identity_rotations_and_flips():
    image, mask = _blocks(seed=1)
    images, masks = image.expand(16, -1, -1, -1), mask.expand(16, -1, -1)
    plain = BatchTrainTransform(64, scale_range=(1.0, 1.0), rotate=False, flip=False)
    out_image, out_mask = plain(images, masks)
    assert torch.allclose(out_image, normalize(images), atol=1e-5) and torch.equal(out_mask, masks.long())
    dihedral = [torch.rot90(m, k, (-2, -1)) for k in range(4) for m in (mask, mask.flip(-1))]
    out_image, out_mask = BatchTrainTransform(64, scale_range=(1.0, 1.0))(
        images, masks, torch.Generator().manual_seed(0)
    )
    kinds = set()
    for b in range(16):
        match = [i for i, d in enumerate(dihedral) if torch.equal(out_mask[b], d)]
        assert match, "each output is a rotation / flip of the input"
        kinds.add(match[0])
        _check_aligned(out_image[b], out_mask[b])
    assert len(kinds) >= 4


def test_batched_scale_crop_and_padding():
    image, mask = _blocks(seed=2)
    images, masks = image.expand(32, -1, -1, -1).contiguous(), mask.expand(32, -1, -1).to(torch.uint8)
    t = BatchTrainTransform(48, scale_range=(0.5, 1.5))
    out_image, out_mask = t(images, masks, torch.Generator().manual_seed(1))
    assert out_image.shape == (32, 3, 48, 48) and out_image.dtype == torch.float32
    assert out_mask.shape == (32, 48, 48) and out_mask.dtype == torch.int64
    assert set(out_mask.unique().tolist()) <= set(mask.unique().tolist()) | {IGNORE_INDEX}
    assert (out_mask == IGNORE_INDEX).any()  # scales below 0.75 pad
    for b in range(32):
        _check_aligned(out_image[b], out_mask[b])
    again = t(images, masks, torch.Generator().manual_seed(1))
    assert torch.equal(again[0], out_image) and torch.equal(again[1], out_mask)
    other = t(images, masks, torch.Generator().manual_seed(2))
    assert not torch.equal(other[1], out_mask)


def test_batched_upscale_is_nearest_for_masks():
    image, mask = _blocks(seed=3)
    t = BatchTrainTransform(32, scale_range=(2.0, 2.0), rotate=False, flip=False)
    # a 32 px window of the source with every pixel doubled (the window may start on either half of a pixel)
    doubled = mask.repeat_interleave(2, 0).repeat_interleave(2, 1)
    windows = doubled.unfold(0, 32, 1).unfold(1, 32, 1)  # (97, 97, 32, 32)
    for seed in range(6):
        _, out = t(image[None], mask[None], torch.Generator().manual_seed(seed))
        assert (windows == out[0]).flatten(2).all(-1).any()


def test_bad_shapes():
    with pytest.raises(ValueError):
        BatchTrainTransform(32)(torch.zeros(3, 8, 8), torch.zeros(8, 8))
    with pytest.raises(ValueError):
        TrainTransform(32, scale_range=(1.5, 0.5))


def test_batched_runs_on_meta_tensors():
    """No step reads tensor values on the host (a sync on CUDA would fail on the meta device)."""
    image = torch.empty(4, 3, 64, 64, dtype=torch.uint8, device="meta")
    mask = torch.empty(4, 64, 64, dtype=torch.uint8, device="meta")
    out_image, out_mask = BatchTrainTransform(48)(image, mask)
    assert out_image.shape == (4, 3, 48, 48) and out_mask.shape == (4, 48, 48) and out_mask.device.type == "meta"
    assert normalize(image).device.type == "meta"
