"""More bands, more bits, nodata: a 4-band uint16 model through checkpoints, export and ``ctseg predict``.

The models are untrained ``pf-tiny`` networks built through :class:`~ctseg.training.SegmentationTask` (with
``in_chans`` and ``data_info`` as the CLI links them) and saved as Lightning-like checkpoints.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from helpers.tiny import RGBN, save_task_checkpoint
from PIL import Image
from rasterio.crs import CRS
from rasterio.transform import from_origin

from ctseg.checkpoints.files import load_model, read_checkpoint
from ctseg.cli.entry import main
from ctseg.data.definitions import DatasetInfo, generic_colors, info_from_json, info_to_json
from ctseg.inference.tile import predict_tile
from ctseg.training.task import SegmentationTask

TRANSFORM = from_origin(300_000.0, 4_600_000.0, 0.5, 0.5)
RGB8 = DatasetInfo(name="rgb8-test", classes=("a", "b", "c"), colors=generic_colors(3))


def _save_task(path: Path, info: DatasetInfo, seed: int = 0, **extra) -> Path:
    return save_task_checkpoint(path, info, seed=seed, **extra)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("band-models")
    return {
        "rgbn": _save_task(root / "rgbn.ckpt", RGBN),
        "rgb8": _save_task(root / "rgb8.ckpt", RGB8, seed=1),
        "bands2345": _save_task(root / "b2345.ckpt", replace(RGBN, band_indices=(2, 3, 4, 5))),
        "float32": _save_task(root / "f32.ckpt", replace(RGBN, name="f32-test", dtype="float32", nodata=float("nan"))),
    }


def _uint16(bands: int, h: int = 64, w: int = 96, seed: int = 0, border: bool = True) -> np.ndarray:
    data = np.random.default_rng(seed).integers(1, 65536, (bands, h, w), dtype=np.uint16)
    if border:  # nodata (0 in every band) in the first 5 rows and the last 7 columns
        data[:, :5] = 0
        data[:, :, -7:] = 0
    return data


def _geotiff(path: Path, data: np.ndarray, nodata: float | None = 0) -> Path:
    with rasterio.open(
        path, "w", driver="GTiff", height=data.shape[1], width=data.shape[2], count=data.shape[0],
        dtype=data.dtype, crs="EPSG:32632", transform=TRANSFORM, nodata=nodata,
    ) as dst:  # fmt: skip
        dst.write(data)
    return path


def _normalised(data: np.ndarray, info: DatasetInfo) -> torch.Tensor:
    x = torch.from_numpy(data.astype(np.float32))[None] / info.scale
    mean = torch.tensor(info.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(info.std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x - mean) / std


def _predict(ckpt: Path, inputs, out: Path, *extra: str) -> int:
    return main(["predict", "--ckpt", str(ckpt), *map(str, inputs), "--out", str(out), "--device", "cpu", *extra])


# ------------------------------------------------------------------------------------------------- checkpoints
def test_task_checkpoint_carries_bands_and_info(models):
    loaded = load_model(models["rgbn"])
    assert loaded.in_chans == 4 and loaded.model.config["in_chans"] == 4
    assert loaded.info == RGBN and loaded.info.band_layout() == "4 bands uint16"
    with torch.no_grad():
        assert loaded.model(torch.zeros(1, 4, 64, 64)).shape == (1, 3, 64, 64)


def test_checkpoint_without_bands_or_info_loads_as_three_band(models, tmp_path):
    """Checkpoints of earlier ctseg have neither ``in_chans`` nor ``data_info``."""
    ckpt = torch.load(models["rgb8"], map_location="cpu", weights_only=True)
    for key in ("in_chans", "data_info"):
        del ckpt["hyper_parameters"][key]
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    loaded = load_model(old)
    assert loaded.info is None and loaded.in_chans == 3 and "in_chans" not in loaded.model.config
    src = _geotiff(tmp_path / "t.tif", np.random.default_rng(0).integers(0, 256, (3, 64, 64), dtype=np.uint8), None)
    assert _predict(old, [src], tmp_path / "o") == 0
    with rasterio.open(tmp_path / "o" / "t_pred.tif") as pred:  # a class map was written, of the 3-band model
        assert pred.shape == (64, 64) and pred.read(1).max() < 3


def test_export_round_trip_keeps_data_info(models, tmp_path):
    out = tmp_path / "rgbn.safetensors"
    assert main(["export", str(models["rgbn"]), str(out)]) == 0
    exported = read_checkpoint(out)
    assert exported["data_info"] == info_to_json(RGBN) and exported["config"]["in_chans"] == 4
    assert info_from_json(exported["data_info"]) == RGBN
    loaded = load_model(out)
    assert loaded.info == RGBN and loaded.in_chans == 4
    again = tmp_path / "again.safetensors"
    assert main(["export", str(models["rgbn"]), str(again)]) == 0
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(again.read_bytes()).digest()
    # the export predicts as the checkpoint
    src = _geotiff(tmp_path / "t.tif", _uint16(4))
    assert _predict(models["rgbn"], [src], tmp_path / "a", "--no-color") == 0
    assert _predict(out, [src], tmp_path / "b", "--no-color") == 0
    with rasterio.open(tmp_path / "a" / "t_pred.tif") as a, rasterio.open(tmp_path / "b" / "t_pred.tif") as b:
        np.testing.assert_array_equal(a.read(1), b.read(1))


def test_task_refuses_data_info_of_another_band_count():
    from ctseg.errors import CtsegError

    needle = r"in_chans=3 but data_info \(data set 'rgbn-test'\) has 4 bands uint16; pass in_chans=4"
    with pytest.raises(CtsegError, match=needle):
        SegmentationTask(model="pf-tiny", num_classes=3, img_size=64, data_info=info_to_json(RGBN))


# ------------------------------------------------------------------------------------------------- predict
def test_four_band_uint16_geotiff_with_nodata(models, tmp_path):
    data = _uint16(4)
    src = _geotiff(tmp_path / "scene.tif", data)
    out = tmp_path / "out"
    assert _predict(models["rgbn"], [src], out, "--window", "128") == 0
    with rasterio.open(out / "scene_pred.tif") as pred:
        assert pred.count == 1 and pred.dtypes[0] == "uint8" and pred.nodata == 255
        assert pred.crs == CRS.from_epsg(32632) and pred.transform.almost_equals(TRANSFORM)
        classes = pred.read(1)
        assert pred.colormap(1)[2][:3] == RGBN.colors[2]
    nodata = (data == 0).all(0)
    assert nodata.sum() == 5 * 96 + 7 * 59
    assert (classes[nodata] == 255).all() and (classes[~nodata] < 3).all()
    loaded = load_model(models["rgbn"])
    expected = predict_tile(loaded.model, data, window=128, mean=RGBN.mean, std=RGBN.std, scale=65535)
    expected[nodata] = 255
    np.testing.assert_array_equal(classes, expected)
    # one 64 × 96 window: the same as one forward pass on (x / 65535 − mean) / std
    with torch.no_grad():
        probs = loaded.model(_normalised(data, RGBN)).softmax(1)[0]
    top2 = probs.topk(2, dim=0).values
    clear = ((top2[0] - top2[1]) > 1e-4).numpy() & ~nodata
    assert clear.mean() > 0.5
    np.testing.assert_array_equal(classes[clear], probs.argmax(0).numpy()[clear])
    png = np.asarray(Image.open(out / "scene_pred.png").convert("RGB"))
    np.testing.assert_array_equal(png, RGBN.colorize(classes))


def test_sliding_windows_and_nodata_options(models, tmp_path):
    data = _uint16(4, 100, 90, seed=3)
    src = _geotiff(tmp_path / "s.tif", data, nodata=None)  # no nodata tag: the data set's (0) applies
    assert _predict(models["rgbn"], [src], tmp_path / "a", "--window", "64", "--no-color") == 0
    loaded = load_model(models["rgbn"])
    expected = predict_tile(loaded.model, data, window=64, mean=RGBN.mean, std=RGBN.std)
    nodata = (data == 0).all(0)
    with rasterio.open(tmp_path / "a" / "s_pred.tif") as pred:
        assert pred.nodata == 255
        np.testing.assert_array_equal(pred.read(1), np.where(nodata, 255, expected))
    assert _predict(models["rgbn"], [src], tmp_path / "b", "--window", "64", "--nodata", "none") == 0
    with rasterio.open(tmp_path / "b" / "s_pred.tif") as pred:
        assert pred.nodata is None
        np.testing.assert_array_equal(pred.read(1), expected)
    value = int(data[0, 50, 10])
    data2 = data.copy()
    data2[:, 50, 10] = value  # one pixel whose every band equals --nodata
    src2 = _geotiff(tmp_path / "s2.tif", data2)
    assert _predict(models["rgbn"], [src2], tmp_path / "c", "--window", "64", "--nodata", str(value)) == 0
    with rasterio.open(tmp_path / "c" / "s2_pred.tif") as pred:
        classes = pred.read(1)
    assert pred.nodata == 255 and classes[50, 10] == 255 and (classes[:5] < 255).all()  # 0 is data now


def test_float32_with_nan_nodata(models, tmp_path):
    """NaN nodata: those pixels are 255, and they are fed as the band means (no NaN spreads to their neighbours)."""
    data = np.random.default_rng(7).random((4, 64, 96)).astype(np.float32)
    data[:, 10:20, 30:40] = np.nan
    src = _geotiff(tmp_path / "f.tif", data, nodata=float("nan"))
    assert _predict(models["float32"], [src], tmp_path / "out", "--window", "64", "--no-color") == 0
    with rasterio.open(tmp_path / "out" / "f_pred.tif") as pred:
        classes = pred.read(1)
        assert pred.nodata == 255
    nodata = np.isnan(data).all(0)
    assert (classes[nodata] == 255).all() and (classes[~nodata] < 3).all()
    filled = np.where(np.isnan(data), np.asarray(RGBN.mean, np.float32).reshape(4, 1, 1), data)
    loaded = load_model(models["float32"])
    expected = predict_tile(loaded.model, filled, window=64, mean=RGBN.mean, std=RGBN.std, scale=1.0)
    np.testing.assert_array_equal(classes[~nodata], expected[~nodata])


def test_band_selection(models, tmp_path):
    five = _uint16(5, seed=4)
    src = _geotiff(tmp_path / "five.tif", five)
    first4 = _geotiff(tmp_path / "first4.tif", five[:4])
    last4 = _geotiff(tmp_path / "last4.tif", five[[1, 2, 3, 4]])
    out = tmp_path / "out"
    assert _predict(models["rgbn"], [first4, last4], out, "--no-color") == 0
    assert _predict(models["rgbn"], [src], tmp_path / "sel", "--bands", "1,2,3,4", "--no-color") == 0
    # the checkpoint's band_indices (2, 3, 4, 5) are read from a 5-band file without --bands
    assert _predict(models["bands2345"], [src], tmp_path / "idx", "--no-color") == 0
    assert _predict(models["rgbn"], [src], tmp_path / "bands", "--bands", "2,3,4,5", "--no-color") == 0

    def read(path):
        with rasterio.open(path) as f:
            return f.read(1)

    np.testing.assert_array_equal(read(tmp_path / "sel" / "five_pred.tif"), read(out / "first4_pred.tif"))
    np.testing.assert_array_equal(read(tmp_path / "bands" / "five_pred.tif"), read(out / "last4_pred.tif"))
    np.testing.assert_array_equal(read(tmp_path / "idx" / "five_pred.tif"), read(out / "last4_pred.tif"))
    # the selection matters: bands 1–4 and 2–5 of this raster predict differently
    assert (read(out / "first4_pred.tif") != read(out / "last4_pred.tif")).any()


def test_index_png_format(models, tmp_path):
    data = _uint16(4, seed=5, border=False)
    src = _geotiff(tmp_path / "1366.tif", data, nodata=None)
    out = tmp_path / "out"
    assert _predict(models["rgbn"], [src], out, "--nodata", "none") == 0
    assert _predict(models["rgbn"], [src], tmp_path / "idx", "--format", "index-png", "--nodata", "none") == 0
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == ["1366.png"]
    img = Image.open(tmp_path / "idx" / "1366.png")
    assert img.mode == "L" and img.size == (96, 64)
    with rasterio.open(out / "1366_pred.tif") as pred:
        np.testing.assert_array_equal(np.asarray(img), pred.read(1))


def test_index_png_of_rgb_pngs_keeps_file_names(models, tmp_path, capsys):
    """LoveDA's test server: <name>.png of class indices for every <name>.png image; an RGBA PNG counts as RGB."""
    rgb = np.random.default_rng(6).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "2522.png")
    Image.fromarray(np.dstack([rgb, np.full((64, 64), 255, np.uint8)])).save(tmp_path / "2523.png")
    out = tmp_path / "out"
    inputs = [tmp_path / "2522.png", tmp_path / "2523.png"]
    assert _predict(models["rgb8"], inputs, out, "--format", "index-png") == 0
    a, b = (np.asarray(Image.open(out / f"{n}.png")) for n in ("2522", "2523"))
    np.testing.assert_array_equal(a, b)
    loaded = load_model(models["rgb8"])
    np.testing.assert_array_equal(a, predict_tile(loaded.model, rgb, mean=RGB8.mean, std=RGB8.std))
    capsys.readouterr()
    before = (out / "2522.png").read_bytes()
    assert _predict(models["rgb8"], inputs, out, "--format", "index-png") == 2
    err = capsys.readouterr().err.strip()
    assert "--overwrite" in err and len(err.splitlines()) == 1
    assert (out / "2522.png").read_bytes() == before
    # an output that would replace its input is refused, whatever --overwrite says
    assert _predict(models["rgb8"], inputs, tmp_path, "--format", "index-png", "--overwrite") == 2
    assert "would replace an input image" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------- bad input
def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
    }


def _case(tmp_path: Path, name: str) -> tuple[str, list[str], list[str]]:
    """(model, argv tail, needles) of a bad-input case; the files are made under ``tmp_path``."""
    good = _geotiff(tmp_path / "good.tif", _uint16(4))  # listed first: must not be written either
    if name == "8bit-to-16bit-model":
        bad = _geotiff(tmp_path / "eight.tif", np.ones((4, 64, 64), np.uint8))
        return "rgbn", [good, bad], [str(bad), "uint8", "4 bands uint16", "16-bit source image"]
    if name == "16bit-to-8bit-model":
        good = _geotiff(tmp_path / "good.tif", np.ones((3, 64, 64), np.uint8))
        bad = _geotiff(tmp_path / "sixteen.tif", np.ones((3, 64, 64), np.uint16))
        return "rgb8", [good, bad], [str(bad), "uint16", "3 bands uint8", "gdal_translate -ot Byte"]
    if name == "3-bands-to-4-band-model":
        bad = _geotiff(tmp_path / "rgb.tif", _uint16(3))
        return "rgbn", [good, bad], [str(bad), "holds 3 bands uint16", "takes 4 bands uint16"]
    if name == "5-bands-without-bands":
        bad = _geotiff(tmp_path / "five.tif", _uint16(5))
        return "rgbn", [good, bad], [str(bad), "holds 5 bands", "--bands 1,2,3,4"]
    if name == "bands-out-of-range":
        bad = _geotiff(tmp_path / "five.tif", _uint16(5))
        return "rgbn", [bad, "--bands", "1,2,3,6"], [str(bad), "--bands 1,2,3,6", "band 6 does not exist"]
    if name == "bands-wrong-count":
        return "rgbn", [good, "--bands", "1,2,3"], ["--bands 1,2,3", "selects 3 bands", "4 bands uint16"]
    if name == "bands-not-numbers":
        return "rgbn", [good, "--bands", "red,nir"], ["--bands red,nir", "e.g. --bands 1,2,3,4"]
    if name == "band-indices-missing":
        return "bands2345", [good], [str(good), "source bands 2,3,4,5", "--bands"]
    if name == "nodata-not-a-number":
        return "rgbn", [good, "--nodata", "zero"], ["--nodata zero", "none"]
    if name == "rgb-dataset-for-4-band-model":
        return "rgbn", [good, "--dataset", "synthetic"], ["synthetic"]
    raise AssertionError(name)


BAD = [
    "8bit-to-16bit-model",
    "16bit-to-8bit-model",
    "3-bands-to-4-band-model",
    "5-bands-without-bands",
    "bands-out-of-range",
    "bands-wrong-count",
    "bands-not-numbers",
    "band-indices-missing",
    "nodata-not-a-number",
    "rgb-dataset-for-4-band-model",
]


@pytest.mark.parametrize("name", BAD)
def test_bad_band_layout_is_one_line_and_writes_nothing(name, models, tmp_path, capsys):
    model, tail, needles = _case(tmp_path, name)
    capsys.readouterr()
    before = _snapshot(tmp_path)
    code = _predict(models[model], [str(t) for t in tail], tmp_path / "out")
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [seg.strip() for seg in re.split(r"[\r\n]+", err) if seg.strip()]
    assert len(lines) == 1 and lines[0].startswith("ctseg: error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in: {lines[0]}"
    assert _snapshot(tmp_path) == before


# ------------------------------------------------------------------------------------------------- end to end
FIT_CONFIG = """
seed_everything: 0
trainer:
  max_steps: 1
  limit_val_batches: 1
  val_check_interval: 1
  check_val_every_n_epoch: null
  enable_progress_bar: false
  enable_model_summary: false
  logger: false
model:
  model: pf-tiny
  img_size: 64
data:
  class_path: ctseg.data.FolderDataModule
  init_args:
    root: {root}
    batch_size: 1
    image_size: 64
    num_workers: 0
    persistent_workers: false
    pin_memory: false
"""


def test_prepare_fit_predict_a_four_band_uint16_folder(tmp_path):
    """``ctseg fit`` on a prepared 4-band uint16 folder links ``in_chans`` and ``data_info``; the checkpoint alone
    then predicts a source scene (nodata border → 255)."""

    from helpers.make_folder import make_uint16_folder

    from ctseg.data.prepare import prepare_dataset

    scenes = make_uint16_folder(tmp_path / "src", count=3, h=64, w=96)
    src = tmp_path / "src"
    prepare_dataset("folder", src, tmp_path / "mine", classes=src / "classes.yaml", crop=64, workers=1, progress=False)
    cfg = tmp_path / "fit.yaml"
    cfg.write_text(FIT_CONFIG.format(root=tmp_path / "mine"))
    assert main(["fit", "--config", str(cfg), "--trainer.default_root_dir", str(tmp_path / "runs")]) == 0
    ckpt = tmp_path / "runs" / "checkpoints" / "last.ckpt"
    hp = torch.load(ckpt, map_location="cpu", weights_only=True)["hyper_parameters"]
    assert hp["in_chans"] == 4 and hp["data_info"]["bands"] == 4 and hp["data_info"]["dtype"] == "uint16"
    loaded = load_model(ckpt)
    assert loaded.info.name == "mine" and loaded.info.nodata == 0.0 and loaded.in_chans == 4
    scene = src / "images" / "scene_0.tif"
    assert _predict(ckpt, [scene], tmp_path / "pred", "--window", "64") == 0
    image = scenes["scene_0"][0]
    with rasterio.open(tmp_path / "pred" / "scene_0_pred.tif") as pred:
        classes = pred.read(1)
        assert pred.nodata == 255 and pred.crs == CRS.from_epsg(32633)
    nodata = (image == 0).all(-1)
    assert nodata[:, :70].all() and (classes[nodata] == 255).all() and (classes[~nodata] < 3).all()
    expected = predict_tile(loaded.model, image, window=64, mean=loaded.info.mean, std=loaded.info.std)
    np.testing.assert_array_equal(classes[~nodata], expected[~nodata])
