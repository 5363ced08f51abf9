"""Training augmentation (per sample and batched) and normalisation; any number of bands, uint8 / uint16 / float."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ctseg.data.definitions import DUBAI, IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD
from ctseg.data.transforms import (
    BatchTrainTransform,
    Normalize,
    PaperBatchTransform,
    PaperTrainTransform,
    TrainTransform,
    normalize,
    to_float_image,
    value_scale,
)
from ctseg.errors import CtsegError

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


# ------------------------------------------------------------------------------------ any number of bands, uint16
def _stats_for(bands: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    return tuple(0.2 + 0.1 * i for i in range(bands)), tuple(0.15 + 0.05 * i for i in range(bands))


def _raw(bands: int, dtype: torch.dtype, size: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (bands, size, size) image of ``dtype`` over its whole range, and its float image ``x / scale``."""
    g = torch.Generator().manual_seed(seed)
    top = 65535 if dtype == torch.uint16 else 255
    image = torch.randint(0, top + 1, (bands, size, size), generator=g).to(dtype)
    return image, image.to(torch.float32) / top


def _recipes(bands: int) -> dict[str, object]:
    mean, std = _stats_for(bands)
    return {
        "ctseg": TrainTransform(32, mean, std),
        "ctseg-batch": BatchTrainTransform(32, mean, std),
        "paper": PaperTrainTransform(32, mean, std, num_classes=6, mosaic_ratio=0.5),
        "paper-batch": PaperBatchTransform(32, mean, std, num_classes=6, mosaic_ratio=0.5),
    }


@pytest.mark.parametrize("dtype", [torch.uint16, torch.uint8])
@pytest.mark.parametrize("bands", [4, 1, 5])
@pytest.mark.parametrize("recipe", ["ctseg", "ctseg-batch", "paper", "paper-batch"])
def test_every_recipe_takes_any_bands_and_integer_dtypes_exactly(recipe, bands, dtype):
    """A C-band uint16 (or uint8) image gives the same result as its float image x / value_scale, same seed."""
    t = _recipes(bands)[recipe]
    mask = _blocks(64, seed=bands)[1]
    if recipe.endswith("batch"):
        pairs = [_raw(bands, dtype, seed=i) for i in range(4)]
        raw, flt = torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
        masks = torch.stack([torch.rot90(mask, i, (-2, -1)) for i in range(4)]).to(torch.uint8)
        for seed in range(3):
            a_image, a_mask = t(raw, masks, torch.Generator().manual_seed(seed))
            b_image, b_mask = t(flt, masks, torch.Generator().manual_seed(seed))
            assert a_image.shape == (4, bands, 32, 32) and a_image.dtype == torch.float32
            assert torch.equal(a_image, b_image) and torch.equal(a_mask, b_mask) and a_mask.shape == (4, 32, 32)
        return
    raw, flt = _raw(bands, dtype)
    other_raw, other_flt = _raw(bands, dtype, size=48, seed=9)  # a mosaic partner of another size (resized)
    other_mask = _blocks(48, seed=9, block=6)[1]
    for seed in range(4):
        kwargs = [{}, {}]
        if recipe == "paper":
            kwargs = [{"partner": lambda g, x=x: {"image": x, "mask": other_mask}} for x in (other_raw, other_flt)]
        a = t({"image": raw, "mask": mask}, torch.Generator().manual_seed(seed), **kwargs[0])
        b = t({"image": flt, "mask": mask}, torch.Generator().manual_seed(seed), **kwargs[1])
        assert a["image"].shape == (bands, 32, 32) and a["image"].dtype == torch.float32
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])


def test_uint16_bands_are_normalised_with_their_own_stats():
    raw, flt = _raw(4, torch.uint16)
    mean, std = _stats_for(4)
    expected = (flt - torch.tensor(mean).view(4, 1, 1)) / torch.tensor(std).view(4, 1, 1)
    assert torch.allclose(normalize(raw, mean, std), expected, atol=1e-6)
    assert torch.allclose(Normalize(mean, std)({"image": raw})["image"], expected, atol=1e-6)
    plain = TrainTransform(64, mean, std, scale_range=(1.0, 1.0), rotate=False, flip=False)
    out = plain({"image": raw, "mask": _blocks()[1]})
    assert torch.allclose(out["image"], expected, atol=1e-6)
    out_image, _ = BatchTrainTransform(64, mean, std, scale_range=(1.0, 1.0), rotate=False, flip=False)(
        raw[None], _blocks()[1][None]
    )
    assert torch.allclose(out_image[0], expected, atol=1e-4)  # grid_sample at pixel centres: float rounding
    assert torch.equal(to_float_image(raw), flt) and to_float_image(flt) is flt  # float32 is taken as it is


def test_value_scale():
    assert value_scale(torch.uint8) == 255.0 and value_scale(torch.uint16) == 65535.0
    assert value_scale("uint8") == 255.0 and value_scale("uint16") == 65535.0 and value_scale("torch.uint16") == 65535.0
    assert value_scale(np.dtype("uint16")) == 65535.0 and value_scale(np.uint8) == 255.0
    for floating in (torch.float32, torch.float16, torch.bfloat16, torch.float64, "float32", "bfloat16", np.float64):
        assert value_scale(floating) == 1.0
    for bad in (torch.int16, torch.int64, torch.bool, "int32", "uint32", np.int8, "nonsense"):
        with pytest.raises(CtsegError):
            value_scale(bad)
    with pytest.raises(CtsegError, match="int64"):
        to_float_image(torch.zeros(3, 4, 4, dtype=torch.int64))


def test_stats_of_the_wrong_length_are_one_line_errors():
    raw, _ = _raw(4, torch.uint16, size=16)
    with pytest.raises(CtsegError) as info:
        normalize(raw)  # ImageNet statistics: 3 values
    assert "3" in str(info.value) and "4" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(CtsegError, match="4 bands"):
        TrainTransform(16)({"image": raw, "mask": torch.zeros(16, 16, dtype=torch.int64)})
    with pytest.raises(CtsegError, match="4 bands"):
        PaperBatchTransform(16, num_classes=6)(raw[None], torch.zeros(1, 16, 16, dtype=torch.int64))
    with pytest.raises(CtsegError, match="3 and 4"):
        Normalize((0.5,) * 3, (0.2,) * 4)
    with pytest.raises(CtsegError):
        BatchTrainTransform(16, (0.5,) * 4, (0.2,) * 5)


@pytest.mark.parametrize("kind", [BatchTrainTransform, PaperBatchTransform])
def test_batched_multiband_uint16_runs_on_meta_tensors(kind):
    mean, std = _stats_for(5)
    t = kind(48, mean, std, num_classes=6) if kind is PaperBatchTransform else kind(48, mean, std)
    image = torch.empty(2, 5, 64, 64, dtype=torch.uint16, device="meta")
    out_image, out_mask = t(image, torch.empty(2, 64, 64, dtype=torch.uint8, device="meta"))
    assert out_image.shape == (2, 5, 48, 48) and out_image.dtype == torch.float32 and out_mask.shape == (2, 48, 48)
