"""The generic folder data set (``ctseg prepare folder``): pairing, splits, classes file, bands, 16 bits, nodata."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from helpers.make_folder import make_color_folder, make_jpeg_folder, make_uint16_folder
from PIL import Image

from ctseg.data import PreparedDataset
from ctseg.data.prepare import prepare_dataset
from ctseg.data.sets.folder import read_classes
from ctseg.errors import CtsegError


def _prepare(src: Path, dst: Path, **kwargs) -> dict:
    kwargs.setdefault("classes", src / "classes.yaml")
    prepare_dataset("folder", src, dst, workers=1, progress=False, **kwargs)
    return json.loads((dst / "manifest.json").read_text())


def test_uint16_four_bands_with_nodata(tmp_path):
    scenes = make_uint16_folder(tmp_path / "src")
    manifest = _prepare(tmp_path / "src", tmp_path / "out", crop=64)
    info = manifest["dataset"]
    assert info["name"] == "mine" and info["classes"] == ["building", "road", "water"]
    assert info["bands"] == 4 and info["dtype"] == "uint16" and info["nodata"] == 0.0 and info["band_indices"] is None
    assert info["label_values"] == [1, 2, 3] and info["ignore_values"] == [0] and info["eval_classes"] == [0, 1]
    assert info["colors"][2] == [0x33, 0xA0, 0x2C]  # a display colour given in the classes file
    # split by source image, 20 % (one of five) to val, seeded
    splits = manifest["settings"]["splits"]
    assert sorted(splits) == ["train", "val"] and len(splits["val"]) == 1 and len(splits["train"]) == 4
    assert set(splits["val"]) | set(splits["train"]) == set(scenes)
    # statistics over the training images' valid (non-nodata) pixels, on the x / 65535 scale
    valid = (
        np.concatenate(
            [img[~(img == 0).all(-1)] for stem, (img, _) in scenes.items() if stem in splits["train"]]
        ).astype(np.float64)
        / 65535
    )
    np.testing.assert_allclose(info["mean"], valid.mean(0), rtol=1e-9)
    np.testing.assert_allclose(info["std"], valid.std(0), rtol=1e-9)
    assert manifest["statistics"]["split"] == "train" and manifest["statistics"]["pixels"] == valid.shape[0]
    # crops: GeoTIFF (C, H, W) uint16, exact; the all-nodata crop of scene_0 (columns 0-63) is not written
    records = manifest["crops"]
    assert all(r["image"].endswith(".tif") for r in records)
    offsets0 = {tuple(r["offset"]) for r in records if r["tile"] == "scene_0"}
    assert offsets0 == {(0, 46), (26, 46)}  # column offsets 0 and 46: the first is entirely nodata
    for split in ("train", "val"):
        ds = PreparedDataset(tmp_path / "out", split)
        assert ds.info.bands == 4 and ds.info.dtype == "uint16"
        for i, record in enumerate(ds.records):
            image, values = scenes[record["tile"]]
            r, c = record["offset"]
            sample = ds[i]
            assert sample["image"].dtype.is_floating_point and sample["image"].shape == (4, 64, 64)
            expected = np.moveaxis(image[r : r + 64, c : c + 64], -1, 0).astype(np.float32) / 65535
            np.testing.assert_array_equal(sample["image"].numpy(), expected)
            raw, _ = ds.read_uint8(i)
            assert str(raw.dtype) == "torch.uint16"
            classes = np.where(values == 0, 255, values.astype(np.int64) - 1)[r : r + 64, c : c + 64]
            nodata = (image[r : r + 64, c : c + 64] == 0).all(-1)
            classes[nodata] = 255
            mask = sample["mask"].numpy()
            if "scored" in record:
                t, lft, b, rt = record["scored"]
                assert (mask[:t] == 255).all() and (mask[:, :lft] == 255).all()
                np.testing.assert_array_equal(mask[t:b, lft:rt], classes[t:b, lft:rt])
            else:
                np.testing.assert_array_equal(mask, classes)


def test_val_split_is_seeded_and_whole_images(tmp_path):
    make_uint16_folder(tmp_path / "src", count=10, h=40, w=40)
    a = _prepare(tmp_path / "src", tmp_path / "a", crop=32, val_fraction=0.3, seed=1)["settings"]["splits"]
    b = _prepare(tmp_path / "src", tmp_path / "b", crop=32, val_fraction=0.3, seed=1)["settings"]["splits"]
    c = _prepare(tmp_path / "src", tmp_path / "c", crop=32, val_fraction=0.3, seed=2)["settings"]["splits"]
    assert a == b and len(a["val"]) == 3 and len(a["train"]) == 7 and a != c
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    split_of = {}
    for record in manifest["crops"]:
        assert split_of.setdefault(record["tile"], record["split"]) == record["split"]  # never split one image


def test_given_split_folders_name_the_splits(tmp_path):
    make_uint16_folder(tmp_path / "src", count=6, h=40, w=40, split_folders=("train", "val", "test"))
    manifest = _prepare(tmp_path / "src", tmp_path / "out", crop=32)
    assert manifest["settings"]["splits"] == {
        "test": ["scene_2", "scene_5"], "train": ["scene_0", "scene_3"], "val": ["scene_1", "scene_4"],
    }  # fmt: skip
    assert len(PreparedDataset(tmp_path / "out", "test")) > 0


def test_band_selection_is_recorded_and_applied(tmp_path):
    scenes = make_uint16_folder(tmp_path / "src", count=2, h=40, w=40)
    manifest = _prepare(tmp_path / "src", tmp_path / "out", crop=32, bands=(4, 1), val_fraction=0)
    assert manifest["dataset"]["bands"] == 2 and manifest["dataset"]["band_indices"] == [4, 1]
    assert manifest["settings"]["options"]["bands"] == [4, 1]
    ds = PreparedDataset(tmp_path / "out", "train")
    record = ds.records[-1]
    image, _ = scenes[record["tile"]]
    r, c = record["offset"]
    raw, _ = ds.read_uint8(len(ds) - 1)
    np.testing.assert_array_equal(raw.numpy(), np.moveaxis(image[r : r + 32, c : c + 32][..., [3, 0]], -1, 0))


def test_jpeg_images_with_index_png_masks(tmp_path):
    labels = make_jpeg_folder(tmp_path / "src")
    manifest = _prepare(tmp_path / "src", tmp_path / "out", crop=48)
    assert manifest["dataset"]["bands"] == 3 and manifest["dataset"]["dtype"] == "uint8"
    assert all(r["image"].endswith(".tif") for r in manifest["crops"])  # 3 × uint8 too: TIFF crops (issue 33)
    ds = PreparedDataset(tmp_path / "out", "train")
    record = ds.records[0]
    jpeg = np.asarray(Image.open(tmp_path / "src" / "images" / f"{record['tile']}.jpg"))
    r, c = record["offset"]
    raw, mask = ds.read_uint8(0)
    np.testing.assert_array_equal(raw.numpy(), np.moveaxis(jpeg[r : r + 48, c : c + 48], -1, 0))
    values = labels[record["tile"]][r : r + 48, c : c + 48]
    np.testing.assert_array_equal(mask.numpy(), np.where(values == 0, 255, values - 1))


def test_colour_masks(tmp_path):
    classes = make_color_folder(tmp_path / "src")
    manifest = _prepare(tmp_path / "src", tmp_path / "out", crop=64, val_fraction=0)
    assert manifest["dataset"]["label_values"] is None and manifest["dataset"]["ignore_colors"] == [[0, 0, 0]]
    ds = PreparedDataset(tmp_path / "out", "train")
    for i, record in enumerate(ds.records):
        r, c = record["offset"]
        np.testing.assert_array_equal(ds[i]["mask"].numpy(), classes[record["tile"]][r : r + 64, c : c + 64])


def test_explicit_nodata_and_prepared_again_is_a_no_op(tmp_path):
    make_uint16_folder(tmp_path / "src", count=2, h=40, w=40, nodata=0)
    first = _prepare(tmp_path / "src", tmp_path / "out", crop=32, nodata=7, val_fraction=0)
    assert first["dataset"]["nodata"] == 7.0 and first["settings"]["options"]["nodata"] == 7.0
    stamp = (tmp_path / "out" / "manifest.json").stat().st_mtime_ns
    _prepare(tmp_path / "src", tmp_path / "out", crop=32, nodata=7, val_fraction=0)
    assert (tmp_path / "out" / "manifest.json").stat().st_mtime_ns == stamp
    with pytest.raises(CtsegError, match="different settings"):
        _prepare(tmp_path / "src", tmp_path / "out", crop=32, nodata=8, val_fraction=0)


def test_nodata_the_images_cannot_hold_is_refused(tmp_path):
    """uint16 images: NaN, a fraction, a number out of 0 … 65535 would mark nothing; infinity is never a nodata."""
    make_uint16_folder(tmp_path / "src", count=2, h=40, w=40)
    for value in (float("nan"), 1.5, 70000, -1):
        with pytest.raises(CtsegError, match=r"--nodata .*scene_0\.tif holds uint16 pixels, whole numbers 0 … 65535"):
            _prepare(tmp_path / "src", tmp_path / "out", crop=32, nodata=value)
    with pytest.raises(CtsegError, match="--nodata inf: must be a finite number"):
        _prepare(tmp_path / "src", tmp_path / "out", crop=32, nodata=float("inf"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


# ------------------------------------------------------------------------------------------------ bad input
def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, needle",
    [
        ("classes:\n  - {name: a, value: 1}\n  - {name: b, value: 1}\n", "value 1 is used by both 'a' and 'b'"),
        ("classes:\n  - {name: a, color: '#ff0000'}\n  - {name: b, color: [255, 0, 0]}\n", "used by both"),
        ("classes:\n  - {name: a, value: 1}\n  - {name: b, color: '#ff0000'}\n", "every class a 'value'"),
        ("classes:\n  - {name: a, value: 1}\nignore: [1]\n", "ignore 1 is also"),
        ("classes:\n  - {name: a, value: 1}\neval_classes: [b]\n", "eval_classes names 'b'"),
        ("classes:\n  - {name: a, value: 1}\n  - {name: a, value: 2}\n", "class name 'a' appears twice"),
        ("classes:\n  - {name: a, value: 70000}\n", "not an integer 0–65535"),
        ("classes:\n  - {name: a, color: '#ff00'}\n", 'is not "#rrggbb"'),
        ("classes: []\n", "non-empty 'classes' list"),
        ("classes:\n  - {name: a, value: 1}\npalette: x\n", "unknown key 'palette'"),
        ("classes:\n  - {name: a, value: 1}\nmean: [0.5]\n", "both mean and std"),
        ("classes: [\n", "cannot be read"),
    ],
)
def test_classes_file_errors_name_the_file(tmp_path, text, needle):
    path = _write(tmp_path / "classes.yaml", text)
    with pytest.raises(CtsegError) as err:
        read_classes(path)
    assert needle in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _fails(tmp_path: Path, src: Path, needle: str, **kwargs) -> None:
    before = _tree(tmp_path)
    with pytest.raises(CtsegError) as err:
        _prepare(src, tmp_path / "out", crop=32, **kwargs)
    assert needle in str(err.value), str(err.value)
    assert "\n" not in str(err.value) and _tree(tmp_path) == before  # nothing half-written


def test_image_without_mask_and_mask_without_image(tmp_path):
    make_uint16_folder(tmp_path / "src", count=2, h=40, w=40)
    (tmp_path / "src" / "masks" / "scene_1.png").rename(tmp_path / "scene_1.png")
    _fails(tmp_path, tmp_path / "src", "scene_1.tif has no mask")
    (tmp_path / "scene_1.png").rename(tmp_path / "src" / "masks" / "scene_1.png")
    Image.fromarray(np.ones((40, 40), np.uint8)).save(tmp_path / "src" / "masks" / "extra.png")
    _fails(tmp_path, tmp_path / "src", "extra.png has no image")


def test_band_count_and_dtype_must_agree_between_files(tmp_path):
    make_uint16_folder(tmp_path / "src", count=2, h=40, w=40)
    with rasterio.open(
        tmp_path / "src" / "images" / "scene_1.tif", "w", driver="GTiff", height=40, width=40, count=3, dtype="uint16"
    ) as dst:
        dst.write(np.ones((3, 40, 40), np.uint16))
    _fails(tmp_path, tmp_path / "src", "scene_1.tif has 3 band(s)")
    with rasterio.open(
        tmp_path / "src" / "images" / "scene_1.tif", "w", driver="GTiff", height=40, width=40, count=4, dtype="uint8"
    ) as dst:
        dst.write(np.ones((4, 40, 40), np.uint8))
    _fails(tmp_path, tmp_path / "src", "scene_1.tif holds uint8 pixels")


def test_undeclared_mask_value_names_file_pixel_and_value(tmp_path):
    scenes = make_uint16_folder(tmp_path / "src", count=2, h=40, w=40)
    labels = scenes["scene_1"][1].copy()
    labels[5, 9] = 9
    Image.fromarray(labels).save(tmp_path / "src" / "masks" / "scene_1.png")
    _fails(tmp_path, tmp_path / "src", "scene_1.png: label value 9 at pixel (row 5, col 9) is not declared")


def test_options_of_other_data_sets_are_refused(tmp_path):
    make_uint16_folder(tmp_path / "src", count=2, h=40, w=40)
    _fails(tmp_path, tmp_path / "src", "needs --classes", classes=None)
    with pytest.raises(CtsegError, match="--classes does not apply to data set 'dubai'"):
        prepare_dataset("dubai", tmp_path / "src", tmp_path / "d", classes=tmp_path / "src" / "classes.yaml")
    _fails(tmp_path, tmp_path / "src", "--bands 5,1: ", bands=(5, 1))


def test_float32_images_with_nan_nodata(tmp_path):
    """Float products (reflectance, heights): NaN pixels are nodata — ignore in labels, out of the statistics,
    stored as 0 so training never sees a NaN."""
    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    (src / "masks").mkdir()
    rng = np.random.default_rng(3)
    image = rng.normal(100.0, 20.0, (2, 48, 48)).astype(np.float32)
    image[:, :10, :10] = np.nan
    image[1, 20, 30] = np.inf  # one band broken: the pixel is nodata too
    with rasterio.open(src / "images" / "dsm.tif", "w", driver="GTiff", height=48, width=48, count=2,
                       dtype="float32", nodata=float("nan")) as dst:  # fmt: skip
        dst.write(image)
    Image.fromarray(np.ones((48, 48), np.uint8)).save(src / "masks" / "dsm.png")
    (src / "classes.yaml").write_text("classes:\n  - {name: ground, value: 1}\n")
    manifest = _prepare(src, tmp_path / "out", crop=48, val_fraction=0)
    assert manifest["dataset"]["dtype"] == "float32" and np.isnan(manifest["dataset"]["nodata"])
    again = _prepare(src, tmp_path / "nan", crop=48, val_fraction=0, nodata=float("nan"))  # float: NaN is a value
    assert np.isnan(again["dataset"]["nodata"]) and again["dataset"]["mean"] == manifest["dataset"]["mean"]
    valid = np.isfinite(image).all(0)
    np.testing.assert_allclose(manifest["dataset"]["mean"], image[:, valid].mean(1, dtype=np.float64), rtol=1e-6)
    sample = PreparedDataset(tmp_path / "out", "train")[0]
    assert torch_isfinite(sample["image"]) and (sample["image"][:, ~valid] == 0).all()
    mask = sample["mask"].numpy()
    assert (mask[~valid] == 255).all() and (mask[valid] == 0).all()


def torch_isfinite(tensor) -> bool:
    import torch

    return bool(torch.isfinite(tensor).all())
