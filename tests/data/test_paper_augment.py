"""The ``paper`` augmentation preset (the authors' train_aug, docs/design.md §1.12): per sample (CPU) and batched
(device).

Tiny generated images: a coordinate image (channel 0 = source x, channel 1 = source y, linear ramps) lets each
output tell its scale and rotation (the Jacobian of output → source coordinates); constant per-sample images
tell which sample a mosaic quadrant came from.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch

from ctseg.configs import CONFIG_DIR
from ctseg.data.datamodules import AUGMENT_PRESETS, PotsdamDataModule, PreparedDataModule, check_augment
from ctseg.data.definitions import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD
from ctseg.data.transforms import (
    PAPER_SCALES,
    BatchTrainTransform,
    Normalize,
    PaperBatchTransform,
    PaperTrainTransform,
    TrainTransform,
    balanced,
)
from ctseg.errors import CtsegError

MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)
K = 6  # ISPRS classes
CONFIG = CONFIG_DIR / "potsdam" / "ds-cl.yaml"


def _blocks(size: int = 64, seed: int = 0, block: int = 8) -> torch.Tensor:
    """(size, size) int64 mask of random classes 0…5 in ``block`` px squares."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, K, (size // block, size // block), generator=g)
    return coarse.repeat_interleave(block, 0).repeat_interleave(block, 1)


def _coordinate_image(height: int, width: int) -> torch.Tensor:
    """(3, H, W) float 0–1: channel 0 = 0.25 + 0.5 (x + ½) / W, channel 1 = 0.25 + 0.5 (y + ½) / H."""
    xs = (torch.arange(width, dtype=torch.float32) + 0.5) / width
    ys = (torch.arange(height, dtype=torch.float32) + 0.5) / height
    return torch.stack([0.25 + 0.5 * xs.expand(height, width), 0.25 + 0.5 * ys[:, None].expand(height, width),
                        torch.full((height, width), 0.5)])  # fmt: skip


def _geometry(image: torch.Tensor, height: int, width: int) -> tuple[float, int, float]:
    """(magnification, rotation class, det) of one normalised output of a :func:`_coordinate_image`.

    ``J`` = median d(source x, y) / d(output x, y) in the interior; ``m = √|det J|`` source px per output px;
    ``R = J / m`` ≈ a rotation: class 0 (identity), 2 (180°), 1 / 3 (the quarter turns).
    """
    raw = image * STD + MEAN
    src_x, src_y = (raw[0] - 0.25) * 2 * width, (raw[1] - 0.25) * 2 * height
    inner = (slice(4, -4), slice(4, -4))

    def grad(v: torch.Tensor) -> tuple[float, float]:
        return float(v.diff(dim=1)[inner].median()), float(v.diff(dim=0)[inner].median())

    (a, b), (c, d) = grad(src_x), grad(src_y)
    det = a * d - b * c
    m = abs(det) ** 0.5
    r00, r01 = a / m, b / m
    kind = 0 if r00 > 0.5 else 2 if r00 < -0.5 else 1 if r01 > 0 else 3
    return m, kind, det


def _run_cpu(t: PaperTrainTransform, image, mask, n: int, seed: int = 0, partner=None):
    outs = [t({"image": image, "mask": mask}, torch.Generator().manual_seed(seed + i), partner) for i in range(n)]
    return torch.stack([o["image"] for o in outs]), torch.stack([o["mask"] for o in outs])


def _run_device(t: PaperBatchTransform, image, mask, n: int, seed: int = 0):
    images, masks = image.expand(n, *image.shape).contiguous(), mask.expand(n, *mask.shape).contiguous()
    return t(images, masks, torch.Generator().manual_seed(seed))


def _run(kind: str, image, mask, n: int, seed: int = 0, **kwargs):
    cls = PaperTrainTransform if kind == "cpu" else PaperBatchTransform
    t = cls(kwargs.pop("size", 48), num_classes=K, **kwargs)
    return (_run_cpu if kind == "cpu" else _run_device)(t, image, mask, n, seed)


def _rule(mask: np.ndarray) -> bool:
    """The crop rule by brute force: ≥ 2 labelled classes, the most frequent < 75 % of the labelled pixels."""
    values, counts = np.unique(mask[mask != IGNORE_INDEX], return_counts=True)
    return len(values) >= 2 and counts.max() < 0.75 * counts.sum()


def test_defaults_are_the_authors():
    t = PaperTrainTransform(num_classes=K)
    assert t.size == 512 and t.crop_size == 375 and t.crop_tries == 10 and t.max_ratio == 0.75
    assert t.scales == PAPER_SCALES == (0.75, 1.0, 1.25, 1.5)
    assert t.rotate_p == 0.5 and t.mosaic_ratio == 0.25 and t.split_bounds() == (128, 384)
    assert PaperTrainTransform(48, num_classes=K).crop_size == 35  # 375 / 512 of the training size
    counts = torch.tensor([[3, 1, 0], [4, 0, 0], [3, 2, 0], [2, 2, 0], [0, 0, 0]])
    assert balanced(counts).tolist() == [False, False, True, True, False]  # 3/4 is not < 0.75


@pytest.mark.parametrize("kind", ["cpu", "device"])
def test_scales_rotations_and_no_flips(kind):
    """Scales exactly {0.75, 1, 1.25, 1.5}, rotations by multiples of 90° applied with p = 0.5, never a flip."""
    image, mask, n = _coordinate_image(64, 64), _blocks(), 160
    images, masks = _run(kind, image, mask, n, mosaic_ratio=0.0)
    assert images.shape == (n, 3, 48, 48) and images.dtype == torch.float32
    assert masks.shape == (n, 48, 48) and masks.dtype == torch.int64
    scales, kinds = [], []
    for b in range(n):
        m, rotation, det = _geometry(images[b], 64, 64)
        assert det > 0  # a rotation, not a reflection
        scales.append(35 / (48 * m))
        kinds.append(rotation)
    nearest = [min(PAPER_SCALES, key=lambda s, v=v: abs(s - v)) for v in scales]
    assert max(abs(v - s) / s for v, s in zip(scales, nearest, strict=True)) < 0.03
    for s in PAPER_SCALES:
        assert 0.12 < nearest.count(s) / n < 0.4, (s, nearest.count(s))
    assert 0.5 < kinds.count(0) / n < 0.75  # P(no turn) = 1/2 + 1/2 · 1/4
    assert all(kinds.count(k) > 5 for k in (1, 2, 3))


@pytest.mark.parametrize("kind", ["cpu", "device"])
def test_exact_rotations_only(kind):
    """Scale 1 and a full-size crop: every output mask is exactly a rot90 of the input, never a flip of one."""
    mask = _blocks(seed=4)
    image = (mask * 40).to(torch.uint8).expand(3, -1, -1)
    _, masks = _run(kind, image, mask, 48, size=64, crop_size=64, scales=(1.0,), mosaic_ratio=0.0)
    rotations = [torch.rot90(mask, k, (-2, -1)) for k in range(4)]
    flips = [torch.rot90(mask.flip(-1), k, (-2, -1)) for k in range(4)]
    found = []
    for out in masks:
        match = [k for k, r in enumerate(rotations) if torch.equal(out, r)]
        assert match and not any(torch.equal(out, f) for f in flips)
        found.append(match[0])
    assert found.count(0) > 18 and len(set(found)) == 4


@pytest.mark.parametrize("kind", ["cpu", "device"])
def test_masks_nearest_and_padding(kind):
    """A 1 px checkerboard of classes 0 and 5 stays {0, 5} (any linear/cubic filter would invent 1…4); an image
    smaller than the crop is padded with ignore (mask) and black (image)."""
    board = (torch.arange(20)[:, None] + torch.arange(20)[None, :]) % 2 * 5
    image = (board * 50).to(torch.uint8).expand(3, -1, -1)
    images, masks = _run(kind, image, board, 24, mosaic_ratio=0.0)  # 20 · 1.5 = 30 < 35: always padded
    assert set(masks.unique().tolist()) == {0, 5, IGNORE_INDEX}
    assert ((masks == IGNORE_INDEX).flatten(1).float().mean(1) > 0.1).all()
    black = (-MEAN / STD).view(1, 3)
    padded = images.permute(0, 2, 3, 1)[masks == IGNORE_INDEX]  # (P, 3); bilinear blends the border row
    assert ((padded - black).abs().amax(1) < 1e-4).float().mean() > 0.8


def test_full_size_cpu_and_device():
    mask = _blocks(512, seed=5, block=64)
    image = (mask * 40).to(torch.uint8).expand(3, -1, -1)
    cpu = PaperTrainTransform(num_classes=K)({"image": image, "mask": mask}, torch.Generator().manual_seed(0))
    assert cpu["image"].shape == (3, 512, 512) and cpu["mask"].shape == (512, 512)
    images, masks = PaperBatchTransform(num_classes=K)(image[None].expand(2, -1, -1, -1), mask[None].expand(2, -1, -1))
    assert images.shape == (2, 3, 512, 512) and masks.shape == (2, 512, 512)
    for m in (cpu["mask"], *masks):
        assert set(m.unique().tolist()) <= set(range(K))  # 512 · 0.75 = 384 ≥ 375: no padding


def _half_split(size: int = 128) -> torch.Tensor:
    """Left half class 0, right half class 1: at scale 1 only 18 of the 94 positions of a 35 px window pass."""
    mask = torch.zeros(size, size, dtype=torch.int64)
    mask[:, size // 2 :] = 1
    return mask


def test_crop_redraw_rule_cpu_matches_brute_force():
    mask = _half_split()
    t = PaperTrainTransform(48, num_classes=K, scales=(1.0,))
    firsts = 0
    for seed in range(60):
        candidates = t.crop_candidates(128, 128, torch.Generator().manual_seed(seed))
        assert candidates.shape == (10, 2) and candidates.min() >= 0 and candidates.max() <= 128 - 35
        ok = [_rule(mask[r : r + 35, c : c + 35].numpy()) for r, c in candidates.tolist()]
        chosen = t.choose_crop(mask, candidates)
        assert chosen == (ok.index(True) if any(ok) else 9)
        firsts += ok[0]
    assert firsts < 0.4 * 60  # most single draws fail the rule ...


def test_crop_redraw_rule_device_matches_brute_force():
    mask = _half_split()
    t = PaperBatchTransform(48, num_classes=K, scales=(1.0,))
    g = torch.Generator().manual_seed(0)
    tops = torch.randint(0, 94, (40, 10), generator=g).float()
    lefts = torch.randint(0, 94, (40, 10), generator=g).float()
    extent = torch.full((40,), 128.0)
    chosen = t.choose_crops(mask.expand(40, -1, -1), extent, extent, tops, lefts)
    for b in range(40):
        ok = [
            _rule(mask[int(r) : int(r) + 35, int(c) : int(c) + 35].numpy())
            for r, c in zip(tops[b], lefts[b], strict=True)
        ]
        assert int(chosen[b]) == (ok.index(True) if any(ok) else 9)


@pytest.mark.parametrize("kind", ["cpu", "device"])
def test_redraw_makes_balanced_crops_likely(kind):
    """... but with 10 re-draws most accepted crops pass it (checked on the output mask, all scales)."""
    mask = _half_split()
    image = (mask * 200).to(torch.uint8).expand(3, -1, -1)
    rate = {}
    for tries in (1, 10):
        _, masks = _run(kind, image, mask, 100, crop_tries=tries, mosaic_ratio=0.0)
        rate[tries] = sum(_rule(m.numpy()) for m in masks) / len(masks)
    assert rate[1] < 0.35 and rate[10] > 0.6 and rate[10] > rate[1] + 0.35, rate  # expected ≈ 0.15 and ≈ 0.8


def _constant(cls: int, size: int = 64) -> dict[str, torch.Tensor]:
    return {"image": torch.full((3, size, size), cls * 40, dtype=torch.uint8), "mask": torch.full((size, size), cls)}


def test_mosaic_cpu_quadrants_frequency_and_order():
    """The mosaic is made of the raw crops (TL the sample, TR / BL / BR three partners, split inside
    [H/4, 3 H/4]) on 25 % of the samples, and only then augmented as one image (the authors' order)."""
    t = PaperTrainTransform(48, num_classes=K)
    parts = [(_constant(c)["image"], _constant(c)["mask"]) for c in (1, 2, 3, 4)]
    for seed in range(50):
        image, out = t.mosaic(parts, torch.Generator().manual_seed(seed))
        assert out.shape == (64, 64) and image.shape == (3, 64, 64)
        cy, cx = int((out[:, 0] == 1).sum()), int((out[0] == 1).sum())
        assert 16 <= cy <= 48 and 16 <= cx <= 48
        assert (out[:cy, :cx] == 1).all() and (out[:cy, cx:] == 2).all()
        assert (out[cy:, :cx] == 3).all() and (out[cy:, cx:] == 4).all()
        assert torch.equal(image[0].to(torch.int64), out * 40)
    seen = []
    augment = t.augment

    def recording(image, mask, generator=None):
        seen.append(mask.unique().tolist())
        return augment(image, mask, generator)

    t.augment = recording
    n, calls = 400, []

    def partner(generator):
        calls.append(1)
        return _constant(2 + len(calls) % 3)

    for i in range(n):
        before = len(calls)
        t(_constant(1), torch.Generator().manual_seed(i), partner)
        assert len(calls) - before in (0, 3)
        assert (len(seen[-1]) > 1) == (len(calls) > before)  # augment saw the mosaic, not the parts
    assert 0.18 < len(calls) / 3 / n < 0.32


def test_mosaic_device_quadrants_frequency_alignment_and_order(monkeypatch):
    n = 256
    ids = torch.arange(n)
    image = ids.to(torch.uint8).view(n, 1, 1, 1).expand(n, 3, 64, 64).contiguous()
    mask = (ids % K).view(n, 1, 1).expand(n, 64, 64).contiguous()
    t = PaperBatchTransform(48, num_classes=K)
    mixed, mixed_mask = t.mosaic(image, mask, torch.Generator().manual_seed(0))
    source = mixed[:, 0].to(torch.int64)  # (B, S, S): the sample each pixel came from
    assert torch.equal(mixed_mask, source % K)  # image and mask travel together
    mosaic = (source != ids.view(n, 1, 1)).flatten(1).any(1)
    assert 0.17 < mosaic.float().mean() < 0.33
    for b in torch.nonzero(mosaic)[:, 0].tolist():
        src = source[b]
        cy, cx = int((src[:, 0] == b).cumprod(0).sum()), int((src[0] == b).cumprod(0).sum())
        assert 16 <= cy <= 48 and 16 <= cx <= 48
        for block in (src[:cy, :cx], src[:cy, cx:], src[cy:, :cx], src[cy:, cx:]):
            assert block.unique().numel() == 1
        assert (src[:cy, :cx] == b).all()
    # __call__ builds the mosaic first and computes the augmentation (theta) on it
    captured = {}
    theta = t.theta
    monkeypatch.setattr(t, "theta", lambda m, g=None: (captured.setdefault("mask", m.clone()), theta(m, g))[1])
    t(image, mask, torch.Generator().manual_seed(0))
    assert torch.equal(captured["mask"], mixed_mask)


def test_cpu_and_device_agree_in_distribution():
    image, mask, n = _coordinate_image(64, 64), _blocks(seed=7), 160
    summary = {}
    for kind in ("cpu", "device"):
        images, masks = _run(kind, image, mask, n, seed=11, mosaic_ratio=0.0)
        geometry = [_geometry(x, 64, 64) for x in images]
        scales = torch.tensor([35 / (48 * m) for m, _, _ in geometry])
        summary[kind] = {
            "scale": torch.tensor([(scales - s).abs().lt(0.05).float().mean() for s in PAPER_SCALES]),
            "turned": sum(k != 0 for _, k, _ in geometry) / n,
            "balanced": sum(_rule(m.numpy()) for m in masks) / n,
        }
    cpu, dev = summary["cpu"], summary["device"]
    assert cpu["scale"].sum() == dev["scale"].sum() == 1  # every output at one of the four scales
    assert (cpu["scale"] - dev["scale"]).abs().max() < 0.15
    assert abs(cpu["turned"] - dev["turned"]) < 0.15 and abs(cpu["balanced"] - dev["balanced"]) < 0.15


@pytest.mark.parametrize("kind", ["cpu", "device"])
def test_deterministic_for_a_fixed_generator(kind):
    mask = _blocks(seed=8)
    image = (mask * 40).to(torch.uint8).expand(3, -1, -1)
    a, b, c = (_run(kind, image, mask, 16, seed=s, mosaic_ratio=0.5) for s in (3, 3, 4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_batched_runs_on_meta_tensors():
    """No step of the batched preset reads tensor values on the host (it would fail on the meta device)."""
    image = torch.empty(4, 3, 64, 64, dtype=torch.uint8, device="meta")
    mask = torch.empty(4, 64, 64, dtype=torch.uint8, device="meta")
    out_image, out_mask = PaperBatchTransform(48, num_classes=K)(image, mask)
    assert out_image.shape == (4, 3, 48, 48) and out_mask.shape == (4, 48, 48) and out_mask.device.type == "meta"


# ------------------------------------------------------------------------------------------ the data modules
def test_augment_option_selects_the_preset(prepared_potsdam):
    root = str(prepared_potsdam)
    dm = PreparedDataModule(root, image_size=48)
    assert dm.augment == "ctseg" and isinstance(dm.train_transform(), TrainTransform)
    assert isinstance(dm.batch_transform(), BatchTrainTransform)
    paper = PotsdamDataModule(root, image_size=48, augment="paper")
    assert isinstance(paper.train_transform(), PaperTrainTransform) and paper.hparams["augment"] == "paper"
    assert isinstance(paper.batch_transform(), PaperBatchTransform) and paper.batch_transform().num_classes == 6
    assert isinstance(PreparedDataModule(root, augment="none").train_transform(), Normalize)
    assert check_augment(True) == "ctseg" and check_augment(False) == "none" and check_augment("Paper") == "paper"
    assert check_augment("true") == "ctseg" and check_augment("False") == "none"  # configs of earlier runs
    assert AUGMENT_PRESETS == ("paper", "ctseg", "none")


def test_unknown_augment_is_one_line():
    with pytest.raises(CtsegError) as info:
        PotsdamDataModule("anywhere", augment="foo")
    assert str(info.value) == "--data.augment 'foo': choose one of paper, ctseg, none"


def test_unknown_augment_reaches_the_cli_as_one_line(tmp_path):
    from ctseg.cli.entry import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["fit", "--config", str(CONFIG), "--data.augment", "foo", "--data.root", str(tmp_path / "data"),
                     "--trainer.default_root_dir", str(tmp_path / "runs")])  # fmt: skip
    lines = [line for line in err.getvalue().splitlines() if line.startswith("ctseg: error:")]
    assert code == 2 and lines == ["ctseg: error: --data.augment 'foo': choose one of paper, ctseg, none"]


def _epoch(dm, epoch: int):
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(epoch)
    return list(loader)


@pytest.mark.parametrize("on_device", [False, True])
def test_paper_batches_and_exact_restart(prepared_potsdam, on_device):
    def run(workers: int = 0, seed: int = 0):
        dm = PotsdamDataModule(str(prepared_potsdam), batch_size=4, num_workers=workers, image_size=48,
                               augment="paper", augment_on_device=on_device, seed=seed)  # fmt: skip
        batches = _epoch(dm, 1)
        return [dm.device_transform(b, training=True) for b in batches] if on_device else batches

    first = run()
    assert len(first) == 2
    for batch in first:
        assert batch["image"].shape == (4, 3, 48, 48) and batch["image"].dtype == torch.float32
        assert batch["mask"].shape == (4, 48, 48) and batch["mask"].dtype == torch.int64
        assert set(batch["mask"].unique().tolist()) <= set(range(6)) | {IGNORE_INDEX}
    for a, b in zip(first, run(), strict=True):  # a fresh module, as after resuming at epoch 1
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    assert not torch.equal(run(seed=1)[0]["mask"], first[0]["mask"])
    if not on_device:  # seeds (mosaic partners included) do not depend on the worker
        for a, b in zip(first, run(workers=2), strict=True):
            assert torch.allclose(a["image"], b["image"], atol=1e-5) and torch.equal(a["mask"], b["mask"])
