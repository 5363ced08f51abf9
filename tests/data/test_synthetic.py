"""Procedural aerial scenes: determinism, content (every class, car share), dataset and datamodule, speed."""

import time

import numpy as np
import pytest
import torch

from ctseg.data.definitions import SYNTHETIC
from ctseg.data.synthetic import (
    SyntheticAerialDataset,
    SyntheticDataModule,
    generate_scene,
    scene_seed,
)
from ctseg.errors import CtsegError


@pytest.fixture(scope="module")
def scenes_256():
    """96 scenes of 256² (12 batches of 8), generated once for the content tests."""
    return [generate_scene(seed, 256) for seed in range(96)]


def test_shapes_and_dtypes():
    for size in (64, 96, 256):
        img, mask = generate_scene(3, size)
        assert img.shape == (size, size, 3) and img.dtype == np.uint8
        assert mask.shape == (size, size) and mask.dtype == np.uint8
        assert mask.max() < 6
        assert img.flags.c_contiguous and mask.flags.c_contiguous
    with pytest.raises(CtsegError):
        generate_scene(0, 16)
    with pytest.raises(CtsegError):
        generate_scene(-1)


def test_deterministic_per_seed_and_seeds_differ():
    a_img, a_mask = generate_scene(7, 128)
    b_img, b_mask = generate_scene(7, 128)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_mask, b_mask)
    c_img, c_mask = generate_scene(8, 128)
    assert not np.array_equal(a_img, c_img) and not np.array_equal(a_mask, c_mask)


def test_every_class_in_every_batch_of_8(scenes_256):
    present = np.array([np.bincount(m.ravel(), minlength=6) > 0 for _, m in scenes_256])  # (96, 6)
    for b in range(0, len(present), 8):
        assert present[b : b + 8].any(0).all(), f"batch of seeds {b}..{b + 7} misses a class"
    assert (present.mean(0) >= 0.9).all(), f"share of scenes with each class: {present.mean(0)}"


def test_class_shares(scenes_256):
    counts = sum(np.bincount(m.ravel(), minlength=6) for _, m in scenes_256)
    share = counts / counts.sum()
    assert 0.005 <= share[4] <= 0.03, f"car share {share[4]:.4f}"
    assert 0.005 <= share[5] <= 0.08, f"clutter share {share[5]:.4f}"
    for c in range(4):  # the large classes each cover a sizeable part
        assert 0.05 <= share[c] <= 0.6, f"{SYNTHETIC.classes[c]} share {share[c]:.3f}"


def test_trees_look_like_grass_by_colour(scenes_256):
    # Most tree pixels fall inside the same scene's grass colour range (5th-95th percentile per channel):
    # telling them apart takes texture, shadows and shape. The scenes are textured, not flat colours.
    inside = []
    for img, m in scenes_256[:24]:
        if (m == 3).sum() > 100:
            lo, hi = np.percentile(img[m == 2], [5, 95], axis=0)
            inside.append(((img[m == 3] >= lo) & (img[m == 3] <= hi)).all(1).mean())
        assert img[m == 2].std(0).min() > 3
    assert np.mean(inside) > 0.4, np.round(inside, 2)


def test_generation_speed():
    generate_scene(0)
    per_scene = []
    for seed in range(10):
        best = float("inf")
        for _ in range(3):
            t = time.process_time()
            generate_scene(seed)
            best = min(best, time.process_time() - t)
        per_scene.append(best)
    # 20 ms held on the EPYC CI machine; the Xeon one (2.5× slower per step) measured 20–27 ms, over the bound
    # whenever another process shared its 2 cores. 40 ms still catches a generator that became several × slower.
    assert np.mean(per_scene) < 0.040, f"{np.mean(per_scene) * 1e3:.1f} ms per 256² scene"


def test_dataset_items_and_determinism():
    ds = SyntheticAerialDataset(4, size=64, seed=5, split="val")
    item = ds[1]
    assert set(item) == {"image", "mask"}
    assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.float32
    assert item["mask"].shape == (64, 64) and item["mask"].dtype == torch.int64
    img, mask = generate_scene(scene_seed(5, "val", 1), 64)
    mean, std = torch.tensor(SYNTHETIC.mean)[:, None, None], torch.tensor(SYNTHETIC.std)[:, None, None]
    restored = (item["image"] * std + mean) * 255
    assert torch.allclose(restored, torch.from_numpy(img).permute(2, 0, 1).float(), atol=1e-3)
    assert torch.equal(item["mask"], torch.from_numpy(mask).long())
    again = SyntheticAerialDataset(4, size=64, seed=5, split="val")[1]
    assert torch.equal(again["image"], item["image"])
    assert ds.scene(1)[0] is ds.scene(-3)[0]  # cached, negative indices work
    assert len(ds) == 4
    with pytest.raises(IndexError):
        ds[4]
    with pytest.raises(CtsegError):
        SyntheticAerialDataset(4, split="holdout")


def test_train_val_test_disjoint():
    seeds = {s: {scene_seed(0, s, i) for i in range(200)} for s in ("train", "val", "test")}
    assert all(len(v) == 200 for v in seeds.values())
    assert not (seeds["train"] & seeds["val"]) and not (seeds["train"] & seeds["test"])
    assert not (seeds["val"] & seeds["test"])
    train = SyntheticAerialDataset(8, size=64, split="train")
    val = SyntheticAerialDataset(8, size=64, split="val")
    train_masks = {train.scene(i)[1].tobytes() for i in range(8)}
    assert not train_masks & {val.scene(i)[1].tobytes() for i in range(8)}
    assert scene_seed(1, "train", 0) != scene_seed(0, "train", 0)


def test_datamodule_batches_and_shuffling():
    dm = SyntheticDataModule(train_samples=12, val_samples=6, image_size=64, batch_size=4, seed=3)
    assert dm.info is SYNTHETIC and dm.num_classes == 6
    batches = list(dm.train_dataloader())
    assert len(batches) == 3
    b = batches[0]
    assert b["image"].shape == (4, 3, 64, 64) and b["image"].dtype == torch.float32
    assert b["mask"].shape == (4, 64, 64) and b["mask"].dtype == torch.int64
    val = list(dm.val_dataloader())
    assert [v["mask"].shape[0] for v in val] == [4, 2]
    assert torch.equal(val[0]["mask"][0], dm.val_set[0]["mask"])  # in order
    assert dm.test_dataloader() is not None
    # same seed → same order; the next epoch is shuffled differently
    again = SyntheticDataModule(train_samples=12, val_samples=6, image_size=64, batch_size=4, seed=3)
    loader = again.train_dataloader()
    first = next(iter(loader))
    assert torch.equal(first["mask"], b["mask"])
    loader.batch_sampler.sampler.set_epoch(1)  # Lightning does this at each epoch start
    second_epoch = next(iter(loader))
    assert not torch.equal(second_epoch["mask"], first["mask"])
    # resuming mid-epoch: the loader can start k batches in and then yields exactly the remaining batches
    loader.batch_sampler.sampler.set_epoch(0)
    loader.batch_sampler.sampler.skip_samples(2 * 4)  # 2 batches of 4
    rest = list(loader)
    assert len(rest) == 1 and torch.equal(rest[0]["mask"], batches[2]["mask"])
    assert len(list(loader)) == 3  # the skip applies once
    assert len(dm.train_set._cache) == 12  # scenes generated once, kept as uint8


def test_datamodule_rejects_bad_sizes():
    with pytest.raises(CtsegError, match="multiple of 32"):
        SyntheticDataModule(image_size=100)
    with pytest.raises(CtsegError):
        SyntheticDataModule(batch_size=0)
