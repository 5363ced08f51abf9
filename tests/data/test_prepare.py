"""prepare_dataset on tiny ISPRS look-alikes: crops, splits, labels, resize, idempotency, atomicity, bad inputs."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from helpers.make_isprs import PALETTE, expected_eval_masks, make_potsdam, write_geotiff
from PIL import Image

from ctseg.data.definitions import IGNORE_INDEX, ISPRS_CLASSES
from ctseg.data.prepare import FORMAT_VERSION, crop_offsets, prepare_dataset, read_rgb, scored_start
from ctseg.errors import CtsegError


def _manifest(dst):
    return json.loads((dst / "manifest.json").read_text())


def _png(path):
    return np.asarray(Image.open(path))


def _leftovers(parent):
    return [p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_crop_offsets_cover_with_border_aligned_last_crop():
    assert crop_offsets(6000, 500, 500) == list(range(0, 6000, 500))
    assert crop_offsets(1100, 500, 500) == [0, 500, 600]
    assert crop_offsets(300, 100, 50) == [0, 50, 100, 150, 200]
    assert crop_offsets(90, 100, 100) == [0]
    for length in range(100, 400, 7):
        offsets = crop_offsets(length, 100, 100)
        covered = np.zeros(length, bool)
        for o in offsets:
            covered[o : o + 100] = True
        assert covered.all() and offsets[-1] == length - 100


def test_scored_start_is_the_first_pixel_no_earlier_window_covers():
    assert [scored_start([0, 500, 600], i, 500) for i in range(3)] == [0, 0, 400]
    assert [scored_start([0, 50, 100, 150, 200], i, 100) for i in range(5)] == [0, 50, 50, 50, 50]
    for length, crop, stride in [(1100, 500, 500), (2336, 500, 500), (90, 100, 100), (377, 64, 40), (300, 100, 30)]:
        offsets = crop_offsets(length, crop, stride)
        covered = np.zeros(max(length, crop), bool)
        for i, o in enumerate(offsets):
            fresh = np.flatnonzero(~covered[o : o + crop])
            assert fresh.size == 0 or (fresh[0] == scored_start(offsets, i, crop) and np.all(np.diff(fresh) == 1))
            covered[o : o + crop] = True


def test_prepare_potsdam_crops_match_sources(potsdam_src, tmp_path):
    src, tiles = potsdam_src
    dst = prepare_dataset("potsdam", src, tmp_path / "out", crop=100, resize=0, workers=1, progress=False)
    manifest = _manifest(dst)
    assert manifest["dataset"]["name"] == "potsdam" and manifest["dataset"]["classes"] == list(ISPRS_CLASSES)
    assert manifest["dataset"]["colors"][1] == [0, 0, 255]
    assert manifest["settings"]["crop"] == 100 and manifest["settings"]["stride"] == 100
    assert manifest["settings"]["resize"] is None and manifest["size"] == 100
    assert manifest["settings"]["splits"] == {"test": ["2_13"], "train": ["2_10"]}
    assert manifest["settings"]["labels"] == {"test": "eroded", "train": "full"}
    crops = manifest["crops"]
    assert len(crops) == 2 * 9  # 260 × 300 → rows 0, 100, 160 × cols 0, 100, 200
    assert {tuple(c["offset"]) for c in crops if c["tile"] == "2_10"} == {
        (r, c) for r in (0, 100, 160) for c in (0, 100, 200)
    }
    test_expected = expected_eval_masks([c for c in crops if c["split"] == "test"], tiles["2_13"].eroded_classes, 100)
    for record in crops:
        tile = tiles[record["tile"]]
        assert record["split"] == ("test" if record["tile"] == "2_13" else "train")
        r, c = record["offset"]
        window = (slice(r, r + 100), slice(c, c + 100))
        source_image = read_rgb(tile.image)[window]
        assert np.array_equal(_png(dst / record["image"]), source_image)
        if record["split"] == "train":  # the whole window, overlaps included
            assert np.array_equal(_png(dst / record["mask"]), tile.classes[window]) and "scored" not in record
        else:  # eroded labels; the part an earlier crop holds is ignore, the box says which part is scored
            mask = _png(dst / record["mask"])
            assert np.array_equal(mask, test_expected[record["mask"]])
            top, left, bottom, right = record["scored"]
            assert np.array_equal(mask[top:bottom, left:right], tile.eroded_classes[window][top:bottom, left:right])
            # 260 rows → windows at 0, 100, 160: the last one's first 40 rows are window 100's; 300 columns tile
            assert (top, left, bottom, right) == ((40 if r == 160 else 0), 0, 100, 100)
    # test crops use the eroded labels (boundaries → ignore), train crops the full ones
    test_masks = np.stack([_png(dst / c["mask"]) for c in crops if c["split"] == "test"])
    train_masks = np.stack([_png(dst / c["mask"]) for c in crops if c["split"] == "train"])
    assert (test_masks == IGNORE_INDEX).mean() > 0.02 and not (train_masks == IGNORE_INDEX).any()
    pixels = manifest["pixels"]["train"]
    assert sum(pixels.values()) == train_masks.size
    assert pixels["building"] == int((train_masks == 1).sum())
    scored = manifest["pixels"]["test"]  # each source pixel once: the eroded tile's own counts
    assert scored["building"] == int((tiles["2_13"].eroded_classes == 1).sum())
    assert sum(v for k, v in scored.items() if k != "ignore") == int((tiles["2_13"].eroded_classes != 255).sum())
    assert manifest["mask_size"] == {"test": 100, "train": 100} and manifest["version"] == FORMAT_VERSION == 3
    assert [t["tile"] for t in manifest["tiles"]] == ["2_10", "2_13"] and manifest["tiles"][0]["height"] == 260


def test_resize_uses_nearest_for_masks_and_keeps_test_masks_native(potsdam_src, tmp_path):
    src, tiles = potsdam_src
    dst = prepare_dataset("potsdam", src, tmp_path / "out", crop=100, resize=128, workers=1, progress=False)
    manifest = _manifest(dst)
    assert manifest["mask_size"] == {"test": 100, "train": 128} and manifest["size"] == 128
    test_expected = expected_eval_masks(
        [c for c in manifest["crops"] if c["split"] == "test"], tiles["2_13"].eroded_classes, 100
    )
    for record in manifest["crops"]:
        tile = tiles[record["tile"]]
        r, c = record["offset"]
        mask = _png(dst / record["mask"])
        assert _png(dst / record["image"]).shape == (128, 128, 3)
        if record["split"] == "test":  # scored at the label's resolution: never resized
            assert mask.shape == (100, 100) and np.array_equal(mask, test_expected[record["mask"]])
            continue
        classes = tile.classes[r : r + 100, c : c + 100]
        assert mask.shape == (128, 128)
        assert set(np.unique(mask)) <= set(np.unique(classes))  # no invented labels
        expected = np.asarray(Image.fromarray(classes).resize((128, 128), Image.Resampling.NEAREST))
        assert np.array_equal(mask, expected)


def test_default_isprs_settings_are_500_crops_resized_to_512(tmp_path):
    make_potsdam(tmp_path / "src", tiles=("2_10", "2_13"), size=(600, 550))
    dst = prepare_dataset("potsdam", tmp_path / "src", tmp_path / "out", workers=1, progress=False)
    manifest = _manifest(dst)
    assert (manifest["settings"]["crop"], manifest["settings"]["stride"], manifest["settings"]["resize"]) == (
        500,
        500,
        512,
    )
    train = [c for c in manifest["crops"] if c["split"] == "train"]
    test = [c for c in manifest["crops"] if c["split"] == "test"]
    assert sorted(tuple(c["offset"]) for c in train) == [(0, 0), (0, 50), (100, 0), (100, 50)]
    assert _png(dst / train[0]["mask"]).shape == (512, 512)
    # test crops: image resized to 512 for the model, mask kept at 500 × 500 for scoring
    assert {_png(dst / c["image"]).shape for c in test} == {(512, 512, 3)}
    assert {_png(dst / c["mask"]).shape for c in test} == {(500, 500)}
    assert manifest["mask_size"] == {"test": 500, "train": 512}
    boxes = {tuple(c["offset"]): c["scored"] for c in test}
    assert boxes == {(0, 0): [0, 0, 500, 500], (0, 50): [0, 450, 500, 500],
                     (100, 0): [400, 0, 500, 500], (100, 50): [400, 450, 500, 500]}  # fmt: skip


def test_small_tile_is_padded_with_ignore(tmp_path):
    tiles = make_potsdam(tmp_path / "src", tiles=("2_10",), size=(80, 90))
    dst = prepare_dataset("potsdam", tmp_path / "src", tmp_path / "out", crop=100, resize=0, progress=False)
    (record,) = _manifest(dst)["crops"]
    mask, image = _png(dst / record["mask"]), _png(dst / record["image"])
    assert np.array_equal(mask[:80, :90], tiles["2_10"].classes)
    assert (mask[80:] == IGNORE_INDEX).all() and (mask[:, 90:] == IGNORE_INDEX).all()
    assert (image[80:] == 0).all()


def test_band_statistics_are_computed_only_for_data_sets_that_store_them(potsdam_src, tmp_path, monkeypatch):
    """Potsdam keeps ImageNet statistics: no tile pays for the float64 sums; a folder data set needs them."""
    from helpers.make_folder import make_jpeg_folder

    import ctseg.data.prepare as prepare

    asked = []

    def cut_tile(tile, info, settings, out, with_stats=True):
        asked.append(with_stats)
        return original(tile, info, settings, out, with_stats)

    original = prepare.cut_tile
    monkeypatch.setattr(prepare, "cut_tile", cut_tile)
    prepare_dataset("potsdam", potsdam_src[0], tmp_path / "p", crop=100, workers=1, progress=False)
    assert asked == [False, False]
    asked.clear()
    make_jpeg_folder(tmp_path / "mine", count=2)
    dst = prepare_dataset("folder", tmp_path / "mine", tmp_path / "f", classes=tmp_path / "mine/classes.yaml",
                          crop=32, workers=1, progress=False)  # fmt: skip
    assert asked == [True, True] and _manifest(dst)["statistics"]["pixels"] > 0


def test_rerun_is_a_no_op_and_other_settings_need_overwrite(potsdam_src, tmp_path, capsys):
    src, _ = potsdam_src
    dst = prepare_dataset("potsdam", src, tmp_path / "out", crop=100, resize=64, workers=1)
    before = (dst / "manifest.json").stat().st_mtime_ns
    capsys.readouterr()
    assert prepare_dataset("potsdam", src, dst, crop=100, resize=64, workers=1) == dst
    assert "nothing to do" in capsys.readouterr().err
    assert (dst / "manifest.json").stat().st_mtime_ns == before
    with pytest.raises(CtsegError, match=r"different settings \(crop.*overwrite"):
        prepare_dataset("potsdam", src, dst, crop=120, resize=64, workers=1, progress=False)
    prepare_dataset("potsdam", src, dst, crop=120, resize=64, workers=1, overwrite=True, progress=False)
    assert _manifest(dst)["settings"]["crop"] == 120
    assert _leftovers(tmp_path) == []


def test_folder_of_an_older_format_is_detected(prepared_potsdam, tmp_path):
    """A version-1 folder (test masks resized, overlaps scored twice) is not "already prepared": it needs
    --overwrite, and its test split is not read; its train split still is."""
    import shutil

    from ctseg.data.prepared import PreparedDataset

    dst = tmp_path / "old"
    shutil.copytree(prepared_potsdam, dst)
    manifest = _manifest(dst)
    manifest["version"] = manifest["settings"]["version"] = 1
    del manifest["mask_size"]
    (dst / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CtsegError, match=r"older ctseg \(format version 1: test masks resized .*overwrite") as info:
        prepare_dataset("potsdam", manifest["source"], dst, crop=100, resize=64, workers=1, progress=False)
    assert "\n" not in str(info.value)
    with pytest.raises(CtsegError, match=r"format version 1.*'test' masks .*ctseg prepare potsdam .*--overwrite"):
        PreparedDataset(dst, "test")
    assert len(PreparedDataset(dst, "train")) == 9
    prepare_dataset("potsdam", manifest["source"], dst, crop=100, resize=64, workers=1, overwrite=True, progress=False)
    assert _manifest(dst)["version"] == FORMAT_VERSION and len(PreparedDataset(dst, "test")) == 9


def test_version_2_folders_still_load_and_count_as_prepared(prepared_potsdam, tmp_path):
    """Format 3 added the band layout and index labels; a version-2 folder (3-band uint8 PNGs, none of the new
    fields) reads as before and is "already prepared" for the same settings (no --overwrite needed)."""
    import shutil

    from ctseg.data.definitions import POTSDAM
    from ctseg.data.prepared import PreparedDataset

    dst = tmp_path / "v2"
    shutil.copytree(prepared_potsdam, dst)
    manifest = _manifest(dst)
    manifest["version"] = manifest["settings"]["version"] = 2
    for key in ("label_values", "ignore_values", "bands", "dtype", "band_indices", "nodata"):
        del manifest["dataset"][key]
    (dst / "manifest.json").write_text(json.dumps(manifest))
    stamp = (dst / "manifest.json").stat().st_mtime_ns
    ds = PreparedDataset(dst, "test")
    assert ds.info is POTSDAM and len(ds) == 9 and ds[0]["image"].shape == (3, 64, 64)
    prepare_dataset("potsdam", manifest["source"], dst, crop=100, resize=64, workers=1, progress=False)
    assert (dst / "manifest.json").stat().st_mtime_ns == stamp  # nothing to do


def test_partial_destination_needs_overwrite(prepared_potsdam, tmp_path):
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(prepared_potsdam, dst)
    manifest = _manifest(dst)
    (dst / manifest["crops"][3]["mask"]).unlink()
    src = manifest["source"]
    with pytest.raises(CtsegError, match=r"incomplete .*masks/.*overwrite"):
        prepare_dataset("potsdam", src, dst, crop=100, resize=64, progress=False)
    prepare_dataset("potsdam", src, dst, crop=100, resize=64, workers=1, overwrite=True, progress=False)
    assert (dst / manifest["crops"][3]["mask"]).is_file()


def test_foreign_destination_is_never_deleted(potsdam_src, tmp_path):
    src, _ = potsdam_src
    dst = tmp_path / "mine"
    dst.mkdir()
    (dst / "notes.txt").write_text("keep me")
    with pytest.raises(CtsegError, match="notes.txt"):
        prepare_dataset("potsdam", src, dst, overwrite=True, progress=False)
    assert (dst / "notes.txt").read_text() == "keep me"


def test_bad_colour_leaves_no_destination(potsdam_src, tmp_path):
    src, tiles = potsdam_src
    label = read_rgb(tiles["2_13"].eroded)
    label[12, 34] = (10, 200, 30)
    write_geotiff(tiles["2_13"].eroded, label)
    dst = tmp_path / "out"
    message = re.escape(f"{tiles['2_13'].eroded}: colour (10, 200, 30)") + r".*\(row 12, col 34\)"
    with pytest.raises(CtsegError, match=message):
        prepare_dataset("potsdam", src, dst, crop=100, workers=2, progress=False)  # through the process pool
    assert not dst.exists() and _leftovers(tmp_path) == []


def test_a_failed_prepare_removes_the_folders_it_made_above_dst(potsdam_src, tmp_path):
    src, tiles = potsdam_src
    label = read_rgb(tiles["2_13"].eroded)
    label[12, 34] = (10, 200, 30)  # found while cutting, after the folders are made
    write_geotiff(tiles["2_13"].eroded, label)
    with pytest.raises(CtsegError, match=r"colour \(10, 200, 30\)"):
        prepare_dataset("potsdam", src, tmp_path / "new" / "deeper" / "out", crop=100, workers=1, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [src.name]


def test_destination_and_source_must_not_nest(potsdam_src, tmp_path):
    """Every data set: a dst inside src would be read as source data by the next prepare (symbolic links too)."""
    src, _ = potsdam_src
    (tmp_path / "link").symlink_to(src)
    cases = {
        src / "prepared": "inside the source folder",
        tmp_path / "link" / "prepared": "inside the source folder",
        src: "is the source folder",
        tmp_path / "link": "is the source folder",
        tmp_path: "would contain the source folder",
    }
    for dst, message in cases.items():
        with pytest.raises(CtsegError, match=message):
            prepare_dataset("potsdam", src, dst, crop=100, workers=1, progress=False)
    assert sorted(p.name for p in src.iterdir()) == sorted(p.name for p in (tmp_path / "link").iterdir())
    assert not (src / "prepared").exists() and _leftovers(tmp_path) == [] and _leftovers(src) == []


def test_numbers_out_of_bounds_are_refused_before_any_work(potsdam_src, tmp_path):
    src, _ = potsdam_src
    for kwargs, message in (
        ({"crop": 100_000}, "--crop 100000: crops are at most 8192"),
        ({"crop": 100, "resize": 9000}, "--resize 9000: .* at most 8192"),
        ({"crop": 100, "workers": 100_000}, "--workers 100000: at most 256"),
        ({"crop": 100, "seed": -1}, "--seed -1: must be zero or positive"),
        ({"crop": 100, "nodata": float("inf")}, "--nodata inf: must be a finite number"),
        ({"crop": 100, "nodata": float("-inf")}, "--nodata -inf: must be a finite number"),
    ):
        with pytest.raises(CtsegError, match=message):
            prepare_dataset("potsdam", src, tmp_path / "out", progress=False, **kwargs)
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path) == []


def test_a_full_disk_crosses_the_process_pool_as_one_line(potsdam_src, tmp_path, monkeypatch):
    """A worker's write error comes back as a picklable CropWriteError; the driver names dst and "no space left"
    (the real full disk: the bad-input matrix, ``prepare-folder-disk-full``)."""
    import errno
    import pickle

    from ctseg.data import crops

    err = pickle.loads(pickle.dumps(crops.CropWriteError(errno.ENOSPC, "No space left on device", "a.png")))
    assert (err.errno, err.crop) == (errno.ENOSPC, "a.png")
    assert str(err) == "crop a.png cannot be written (No space left on device)"

    def full(array, path, resize):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(crops, "save_image", full)  # in this process: workers=1
    src, _ = potsdam_src
    dst = tmp_path / "out"
    with pytest.raises(CtsegError, match=re.escape(f"output {dst} cannot be written: no space left")) as info:
        prepare_dataset("potsdam", src, dst, crop=100, workers=1, progress=False)
    assert "\n" not in str(info.value) and not dst.exists() and _leftovers(tmp_path) == []


def test_failed_overwrite_keeps_the_previous_destination(prepared_potsdam, tmp_path):
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(prepared_potsdam, dst)
    before = (dst / "manifest.json").read_text()
    src = tmp_path / "broken"
    tiles = make_potsdam(src, tiles=("2_10",))
    label = read_rgb(tiles["2_10"].label)
    label[0, 0] = (1, 2, 3)
    write_geotiff(tiles["2_10"].label, label)
    with pytest.raises(CtsegError, match=r"\(1, 2, 3\)"):
        prepare_dataset("potsdam", src, dst, crop=90, overwrite=True, workers=1, progress=False)
    assert (dst / "manifest.json").read_text() == before and _leftovers(tmp_path) == []


def test_image_and_label_of_different_sizes(potsdam_src, tmp_path):
    src, tiles = potsdam_src
    write_geotiff(tiles["2_10"].label, PALETTE[tiles["2_10"].classes[:-5]])
    with pytest.raises(CtsegError, match=r"top_potsdam_2_10_label\.tif: label is 255×300 .* is 260×300"):
        prepare_dataset("potsdam", src, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_truncated_file(potsdam_src, tmp_path):
    src, tiles = potsdam_src
    data = tiles["2_10"].image.read_bytes()
    tiles["2_10"].image.write_bytes(data[: len(data) // 2])
    with pytest.raises(CtsegError, match=r"cannot read .*top_potsdam_2_10_RGB\.tif: "):
        prepare_dataset("potsdam", src, tmp_path / "out", crop=100, workers=1, progress=False)
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path) == []


def test_bad_arguments(potsdam_src, tmp_path):
    src, _ = potsdam_src
    with pytest.raises(CtsegError, match="stride"):
        prepare_dataset("potsdam", src, tmp_path / "out", crop=100, stride=150, progress=False)
    with pytest.raises(CtsegError, match="synthetic"):
        prepare_dataset("synthetic", src, tmp_path / "out", progress=False)
    with pytest.raises(CtsegError, match="unknown data set"):
        prepare_dataset("cityscapes", src, tmp_path / "out", progress=False)
    with pytest.raises(CtsegError, match="does not exist"):
        prepare_dataset("potsdam", tmp_path / "nowhere", tmp_path / "out", progress=False)
    (tmp_path / "a_file").touch()
    with pytest.raises(CtsegError, match="a_file is not a folder"):
        prepare_dataset("potsdam", tmp_path / "a_file", tmp_path / "out", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CtsegError, match="top_potsdam_X_Y_RGB.tif"):
        prepare_dataset("potsdam", tmp_path / "empty", tmp_path / "out", progress=False)


def test_vaihingen_test_crops_use_eroded_labels(vaihingen_src, tmp_path):
    src, tiles = vaihingen_src
    dst = prepare_dataset("vaihingen", src, tmp_path / "out", crop=100, resize=0, workers=1, progress=False)
    crops = _manifest(dst)["crops"]
    expected = expected_eval_masks([c for c in crops if c["split"] == "test"], tiles["area2"].eroded_classes, 100)
    for record in crops:
        tile = tiles[record["tile"]]
        r, c = record["offset"]
        if record["split"] == "test":
            assert np.array_equal(_png(dst / record["mask"]), expected[record["mask"]])
        else:
            assert np.array_equal(_png(dst / record["mask"]), tile.classes[r : r + 100, c : c + 100])
    assert {c["tile"]: c["split"] for c in _manifest(dst)["crops"]} == {"area1": "train", "area2": "test"}
