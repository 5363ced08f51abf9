"""The decoded-crop cache: identical values, keyed by the manifest, atomic, picklable, clear errors."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from ctseg.data import PreparedDataModule
from ctseg.data.decoded import DEFAULT_DIR, cache_paths, ensure_decoded, manifest_key
from ctseg.data.manifest import existing_state as _existing_state
from ctseg.data.prepared import PreparedDataset
from ctseg.errors import CtsegError


@pytest.fixture
def prepared_copy(prepared_potsdam, tmp_path):
    """A private copy of the session's prepared folder (the cache writes into it)."""
    return shutil.copytree(prepared_potsdam, tmp_path / "prepared")


def _files(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_cache_gives_the_png_values_and_default_folder(prepared_copy):
    png = PreparedDataset(prepared_copy, "train")
    cached = PreparedDataset(prepared_copy, "train", decoded_cache=True)
    assert cached.decoded is not None and len(cached.decoded) == len(png) == 9
    assert cached.decoded.size == (64, 64)
    key = manifest_key(prepared_copy)
    assert _files(prepared_copy / DEFAULT_DIR) == [f"train-{key}.images.npy", f"train-{key}.masks.npy"]
    for i in range(len(png)):
        a, b = png[i], cached[i]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
        assert a["meta"] == b["meta"]
        image, mask = cached.read_uint8(i)
        assert image.dtype == torch.uint8 and image.shape == (3, 64, 64) and image.is_contiguous()
        image[0, 0, 0] += 1  # a writable copy: the cache itself is untouched
    assert torch.equal(cached.read_uint8(0)[0], png.read_uint8(0)[0])
    # The folder with its cache still counts as a prepared folder (so `prepare --overwrite` may replace it).
    assert (
        _existing_state(prepared_copy, json.loads((prepared_copy / "manifest.json").read_text())["settings"])[0]
        == "complete"
    )


def test_cache_is_reused_and_rebuilt_for_a_new_preparation(prepared_copy, tmp_path):
    cache = tmp_path / "cache"
    first = PreparedDataset(prepared_copy, "test", decoded_cache=cache)
    images, _ = cache_paths(cache, "test", manifest_key(prepared_copy))
    stamp = images.stat().st_mtime_ns
    PreparedDataset(prepared_copy, "test", decoded_cache=cache)
    assert images.stat().st_mtime_ns == stamp  # opened, not rebuilt
    # Prepared again (here: one crop's PNG and the manifest change) → a new key, the stale cache removed.
    record = first.records[0]
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(prepared_copy / record["image"])
    manifest = json.loads((prepared_copy / "manifest.json").read_text())
    manifest["created"] = "later"
    (prepared_copy / "manifest.json").write_text(json.dumps(manifest))
    again = PreparedDataset(prepared_copy, "test", decoded_cache=cache)
    new_key = manifest_key(prepared_copy)
    assert _files(cache) == [f"test-{new_key}.images.npy", f"test-{new_key}.masks.npy"]
    assert int(again.read_uint8(0)[0].sum()) == 0


def test_interrupted_build_leaves_no_cache(prepared_copy, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    ds = PreparedDataset(prepared_copy, "train")
    real = ds.read_png

    def failing(i):
        if i == 5:
            raise KeyboardInterrupt
        return real(i)

    monkeypatch.setattr(ds, "read_png", failing)
    with pytest.raises(KeyboardInterrupt):
        ensure_decoded(ds, cache, workers=1)
    assert _files(cache) == []  # no finished-looking file, no temporary left behind
    monkeypatch.undo()
    assert len(ensure_decoded(ds, cache)) == 9


def test_pickle_carries_paths_not_pixels(prepared_copy):
    ds = PreparedDataset(prepared_copy, "train", as_uint8=True, decoded_cache=True)
    blob = pickle.dumps(ds)
    assert len(blob) < 64 * 64 * 4 * 9 / 4  # far below the cache's own size
    clone = pickle.loads(blob)
    assert torch.equal(clone[3]["image"], ds[3]["image"])


def test_unwritable_or_broken_cache_is_one_clear_error(prepared_copy, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    ds = PreparedDataset(prepared_copy, "train")
    with pytest.raises(CtsegError, match=r"cannot write the decoded-crop cache in .*a-file/cache.*decoded_cache"):
        ensure_decoded(ds, blocker / "cache")
    cache = tmp_path / "cache"
    ensure_decoded(ds, cache)
    images, _ = cache_paths(cache, "train", manifest_key(prepared_copy))
    images.write_bytes(images.read_bytes()[:1000])
    with pytest.raises(CtsegError, match=r"decoded cache .*images.npy .*delete it"):
        ensure_decoded(ds, cache)


def test_crops_of_different_sizes_are_refused(prepared_copy, tmp_path):
    ds = PreparedDataset(prepared_copy, "train")
    Image.fromarray(np.zeros((32, 64, 3), np.uint8)).save(prepared_copy / ds.records[4]["image"])
    with pytest.raises(CtsegError, match=r"crops of one size"):  # (a mask of another size: PreparedDataset refuses)
        ensure_decoded(ds, tmp_path / "cache", workers=1)
    assert _files(tmp_path / "cache") == []


@pytest.mark.parametrize("on_device", [False, True])
def test_datamodule_batches_are_identical_with_the_cache(prepared_copy, tmp_path, on_device):
    def batches(cache):
        dm = PreparedDataModule(
            str(prepared_copy), batch_size=3, num_workers=0, image_size=32, seed=4,
            augment_on_device=on_device, decoded_cache=cache,
        )  # fmt: skip
        dm.prepare_data()
        dm.setup("fit")
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(1)
        out = [dm.device_transform(b, training=True) if on_device else b for b in loader]
        out.append(next(iter(dm.val_dataloader())))
        return dm, out

    dm, cached = batches(str(tmp_path / "cache"))
    assert dm.train_dataset.decoded is not None and dm.val_dataset.decoded is not None
    assert len(_files(tmp_path / "cache")) == 4  # train and test, images and masks
    _, plain = batches(False)
    for a, b in zip(cached, plain, strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])


def test_datamodule_cache_with_worker_processes(prepared_copy):
    dm = PreparedDataModule(
        str(prepared_copy), batch_size=3, num_workers=2, image_size=32, augment_on_device=True,
        decoded_cache=True, persistent_workers=False,
    )  # fmt: skip
    dm.prepare_data()
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert len(batches) == 3 and all(b["image"].dtype == torch.uint8 for b in batches)
    seen = torch.cat([b["image"] for b in batches]).flatten(1)
    reference = torch.stack([dm.train_dataset.read_png(i)[0].flatten() for i in range(9)])
    assert all((reference == row).all(1).any() for row in seen)  # every batch row is one of the crops


def test_fit_with_an_unwritable_cache_folder_stops_with_one_line(prepared_copy, tmp_path, capsys):
    from ctseg.cli.entry import main

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    config = tmp_path / "fit.yaml"
    config.write_text(
        "trainer: {max_steps: 1, enable_progress_bar: false, enable_model_summary: false}\n"
        "model: {model: pf-tiny, img_size: 32, scheme: ct-cl}\n"
        "data:\n  class_path: ctseg.data.PotsdamDataModule\n"
        f"  init_args: {{root: {prepared_copy}, batch_size: 2, image_size: 32, num_workers: 0,"
        f" decoded_cache: {blocker / 'cache'}}}\n"
    )
    runs = tmp_path / "runs"
    capsys.readouterr()
    code = main(["fit", "--config", str(config), "--trainer.default_root_dir", str(runs)])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("ctseg: error: cannot write the decoded-crop cache in ") and str(blocker) in last
    assert "--data.decoded_cache false" in last
    assert not runs.exists() and not (prepared_copy / DEFAULT_DIR).exists()
