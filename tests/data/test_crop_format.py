"""The image crops' file format (issue 33): ZSTD TIFFs holding the pixels the PNG crops held; PNG folders still load."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image

from ctseg.data import PreparedDataset
from ctseg.data.crops import PNG_LEVEL, read_crop_image, save_image
from ctseg.data.prepare import prepare_dataset, read_rgb


def _png_folder(new: Path, old: Path) -> Path:
    """A copy of the prepared folder ``new`` as ctseg wrote it before issue 33: RGB image crops as level-1 PNGs,
    named so in the manifest (masks and everything else as they are)."""
    shutil.copytree(new, old)
    manifest = json.loads((old / "manifest.json").read_text())
    for record in manifest["crops"]:
        tif = old / record["image"]
        Image.fromarray(read_crop_image(tif).transpose(1, 2, 0)).save(tif.with_suffix(".png"), compress_level=PNG_LEVEL)
        tif.unlink()
        record["image"] = Path(record["image"]).with_suffix(".png").as_posix()
    (old / "manifest.json").write_text(json.dumps(manifest))
    return old


def _old_writer(window: np.ndarray, resize: int) -> np.ndarray:
    """The pixels ctseg's RGB crop PNG held before issue 33 (Pillow RGB bilinear resize, PNG level 1)."""
    buffer = io.BytesIO()
    Image.fromarray(window).resize((resize, resize), Image.Resampling.BILINEAR).save(
        buffer, format="PNG", compress_level=PNG_LEVEL
    )
    return np.asarray(Image.open(buffer))


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_rgb_crops_are_zstd_tiffs_with_the_pixels_of_the_old_png_crops(potsdam_src, tmp_path):
    src, tiles = potsdam_src
    dst = prepare_dataset("potsdam", src, tmp_path / "out", crop=100, resize=128, workers=1, progress=False)
    records = json.loads((dst / "manifest.json").read_text())["crops"]
    assert len(records) == 18 and all(r["image"].endswith(".tif") and r["mask"].endswith(".png") for r in records)
    for record in records:
        r, c = record["offset"]
        window = read_rgb(tiles[record["tile"]].image)[r : r + 100, c : c + 100]
        expected = _old_writer(window, 128)
        path = dst / record["image"]
        assert np.array_equal(read_crop_image(path).transpose(1, 2, 0), expected)
        with Image.open(path) as im:  # viewers that read TIFF through libtiff (Pillow here) see the same RGB image
            assert im.mode == "RGB" and np.array_equal(np.asarray(im), expected)
    with rasterio.open(dst / records[0]["image"]) as ds:
        structure = ds.tags(ns="IMAGE_STRUCTURE")
        assert (structure["COMPRESSION"], structure["PREDICTOR"], structure["INTERLEAVE"]) == ("ZSTD", "2", "PIXEL")
        assert [ci.name for ci in ds.colorinterp] == ["red", "green", "blue"] and ds.block_shapes[0] == (64, 128)


def test_png_folders_of_before_issue_33_still_load_and_count_as_prepared(potsdam_src, tmp_path, capsys):
    src, _ = potsdam_src
    new = prepare_dataset("potsdam", src, tmp_path / "new", crop=100, resize=64, workers=1, progress=False)
    old = _png_folder(new, tmp_path / "old")
    assert not list((old / "images").glob("*.tif")) and len(list((old / "images").glob("*.png"))) == 18
    for split in ("train", "test"):
        a, b = PreparedDataset(new, split, as_uint8=True), PreparedDataset(old, split, as_uint8=True)
        cached = PreparedDataset(old, split, as_uint8=True, decoded_cache=tmp_path / "cache")
        assert len(a) == len(b) == 9
        for i in range(len(a)):
            (ia, ma), (ib, mb), (ic, mc) = a.read_uint8(i), b.read_uint8(i), cached.read_uint8(i)
            assert ia.equal(ib) and ia.equal(ic) and ma.equal(mb) and ma.equal(mc)
    prepare_dataset("potsdam", src, old, crop=100, resize=64, workers=1)  # same settings: left as it is
    assert "already prepared" in capsys.readouterr().err and len(list((old / "images").glob("*.png"))) == 18


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [((40, 40, 4), "uint16"), ((70, 33, 2), "float32"), ((130, 64, 3), "uint8"), ((8, 8, 1), "int16")],
)
def test_any_band_layout_round_trips_exactly(tmp_path, shape, dtype):
    """Predictor 2 for integers, 3 for floats; images shorter or longer than one 64-row strip."""
    rng = np.random.default_rng(0)
    if dtype == "float32":
        array = (rng.standard_normal(shape) * 1e4).astype(dtype)
    else:
        info = np.iinfo(dtype)
        array = rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    path = tmp_path / "crop.tif"
    save_image(array, path, None)
    back = read_crop_image(path)
    assert back.dtype == array.dtype and np.array_equal(back, np.moveaxis(array, -1, 0))
