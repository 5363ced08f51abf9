"""The ISPRS test protocol end to end: test masks at the label's resolution, each source pixel scored once.

Tiny Vaihingen look-alikes whose sizes are not multiples of the crop (so the border crops overlap, as on the
real tiles), prepared with 100 px crops resized to 128 (the analogue of 500 → 512), then read back through the
data module and scored by :class:`~ctseg.training.SegmentationTask`'s validation step.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers.make_isprs import make_vaihingen
from PIL import Image

from ctseg.data import PreparedDataModule
from ctseg.data.definitions import IGNORE_INDEX
from ctseg.data.prepare import prepare_dataset
from ctseg.evaluation.metrics import SegmentationMetrics

CROP, SIZE = 100, 128


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """(prepared folder, test tiles): train area1, test areas 2 (230 × 170), 4 (120 × 260), 6 (80 × 90, padded)."""
    base = tmp_path_factory.mktemp("protocol")
    src = base / "download"
    tiles = make_vaihingen(src, areas=(1, 2), size=(230, 170), seed=1)
    tiles |= make_vaihingen(src, areas=(4,), size=(120, 260), seed=2)
    tiles |= make_vaihingen(src, areas=(6,), size=(80, 90), seed=3)
    dst = prepare_dataset("vaihingen", src, base / "out", crop=CROP, resize=SIZE, workers=1, progress=False)
    return dst, {k: v for k, v in tiles.items() if k != "area1"}


def _manifest(dst):
    import json

    return json.loads((dst / "manifest.json").read_text())


def _mask(path):
    return np.asarray(Image.open(path))


def test_scored_pixels_are_the_labelled_pixels_of_the_source_tiles(prepared):
    dst, tiles = prepared
    manifest = _manifest(dst)
    test = [c for c in manifest["crops"] if c["split"] == "test"]
    assert len(test) == 3 * 2 + 2 * 3 + 1  # rows × columns of windows per test tile
    masks = {c["mask"]: _mask(dst / c["mask"]) for c in test}
    assert {m.shape for m in masks.values()} == {(CROP, CROP)}  # never resized
    assert {_mask(dst / c["image"]).shape for c in test} == {(SIZE, SIZE, 3)}
    for tile_id, tile in tiles.items():
        crops = [c for c in test if c["tile"] == tile_id]
        truth = tile.eroded_classes
        # the scored boxes partition the tile
        assert sum((b - t) * (r - l) for t, l, b, r in (c["scored"] for c in crops)) == truth.size
        # labelled pixels over the crops = labelled pixels of the tile, class by class
        stacked = np.stack([masks[c["mask"]] for c in crops])
        for k in range(6):
            assert int((stacked == k).sum()) == int((truth == k).sum()), (tile_id, k)
        # every scored pixel is the tile's pixel at its place; the rest of the crop is ignore
        for c in crops:
            (r, col), (t, l, b, right) = c["offset"], c["scored"]
            mask = masks[c["mask"]]
            assert np.array_equal(mask[t:b, l:right], truth[r + t : r + b, col + l : col + right])
            outside = np.ones_like(mask, bool)
            outside[t:b, l:right] = False
            assert (mask[outside] == IGNORE_INDEX).all()
    labelled = sum(int((t.eroded_classes != IGNORE_INDEX).sum()) for t in tiles.values())
    counts = manifest["pixels"]["test"]
    assert sum(v for k, v in counts.items() if k != "ignore") == labelled
    # the metrics count exactly those pixels: the confusion matrix of a perfect prediction
    metrics = SegmentationMetrics(6, eval_classes=range(5))
    for mask in masks.values():
        target = torch.from_numpy(mask.astype(np.int64))[None]
        metrics.update(target.clamp_max(5), target)
    scores = metrics.compute()
    assert int(scores["confmat"].sum()) == labelled and float(scores["oa"]) == 1.0


def test_loader_batches_512_images_with_500_masks_and_the_task_scores_at_mask_size(prepared):
    """Default collation works (all test images SIZE², all test masks CROP²); the validation step resizes the
    logits (bilinear, align_corners=False) to the mask before the argmax, so it counts each labelled pixel once."""
    from ctseg.training.task import SegmentationTask

    dst, tiles = prepared
    dm = PreparedDataModule(str(dst), batch_size=2, val_batch_size=4, num_workers=0, image_size=SIZE)
    dm.setup("validate")
    batches = list(dm.val_dataloader())
    assert [tuple(b["image"].shape) for b in batches] == [(4, 3, SIZE, SIZE)] * 3 + [(1, 3, SIZE, SIZE)]
    assert [tuple(b["mask"].shape) for b in batches] == [(4, CROP, CROP)] * 3 + [(1, CROP, CROP)]
    assert all(b["mask"].dtype == torch.int64 for b in batches)

    task = SegmentationTask(model="pf-tiny", num_classes=6, img_size=SIZE, eval_classes=[0, 1, 2, 3, 4])
    task.eval()
    generator = torch.Generator().manual_seed(0)
    fixed = [torch.randn(b["image"].shape[0], 6, SIZE, SIZE, generator=generator) for b in batches]
    calls = iter(fixed)
    task.net.forward = lambda x: next(calls)  # known logits at the image's resolution
    reference = SegmentationMetrics(6, eval_classes=range(5))
    with torch.no_grad(), pytest.warns(UserWarning, match="log"):  # no trainer: self.log only warns
        for i, (batch, logits) in enumerate(zip(batches, fixed, strict=True)):
            task.validation_step(batch, i)
            resized = F.interpolate(logits, size=(CROP, CROP), mode="bilinear", align_corners=False)
            reference.update(resized.argmax(1), batch["mask"])
    assert torch.equal(task.val_metrics.confmat, reference.confmat)
    labelled = sum(int((t.eroded_classes != IGNORE_INDEX).sum()) for t in tiles.values())
    assert int(task.val_metrics.confmat.sum()) == labelled
    # nearest downsampling of the same logits would have given another matrix: the resize mode matters
    nearest = SegmentationMetrics(6)
    for batch, logits in zip(batches, fixed, strict=True):
        nearest.update(F.interpolate(logits, size=(CROP, CROP), mode="nearest").argmax(1), batch["mask"])
    assert not torch.equal(nearest.confmat, reference.confmat)
