"""Your own data end to end (issue 16): ``ctseg prepare folder`` → ``fit`` a few steps → ``test`` → ``predict``,
on generated 4-band uint16 GeoTIFFs with nodata and on 3-band JPEGs with index PNG masks, through the README's
commands and ``folder/cpu-cl``."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from helpers.make_folder import make_jpeg_folder, make_uint16_folder
from helpers.tiny import tiny_config

from ctseg.cli.entry import main
from ctseg.configs import CONFIG_DIR

CONFIG = CONFIG_DIR / "folder" / "cpu-cl.yaml"
FAST = [
    "--trainer.max_steps", "4", "--trainer.val_check_interval", "4", "--trainer.limit_val_batches", "1",
    "--trainer.limit_test_batches", "2", "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false", "--model.img_size", "64", "--data.image_size", "64",
    "--data.batch_size", "2", "--data.num_workers", "0", "--data.persistent_workers", "false",
]  # fmt: skip


def _run(argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0, argv
    return out.getvalue()


def _fit_test(data: Path, runs: Path) -> Path:
    _run(["fit", "--config", str(CONFIG), "--data.root", str(data), "--trainer.default_root_dir", str(runs), *FAST])
    ckpts = sorted((runs / "checkpoints").glob("last*.ckpt"))
    assert ckpts, sorted(p.name for p in runs.rglob("*"))
    ckpt = torch.load(ckpts[-1], map_location="cpu", weights_only=True)
    hp = ckpt["hyper_parameters"]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        printed = _run(["test", "--config", str(CONFIG), "--data.root", str(data), "--ckpt_path", str(ckpts[-1]),
                        "--trainer.default_root_dir", str(runs), *FAST])  # fmt: skip
    assert "test/miou" in printed
    # test says which split it scores: the folder's val split, which also chose the best checkpoint
    said = err.getvalue().splitlines()
    assert any(line.startswith(f"ctseg test: scoring split 'val' of {data} (") and "--data.val_split" in line
               for line in said), said  # fmt: skip
    return ckpts[-1], hp


@pytest.fixture(scope="module")
def uint16_run(tmp_path_factory):
    """Generated 4-band uint16 GeoTIFFs with nodata, prepared, trained 4 steps and tested."""
    tmp = tmp_path_factory.mktemp("uint16")
    src, data = tmp / "tiles", tmp / "data" / "mine"
    scenes = make_uint16_folder(src, count=5, h=96, w=96)
    _run(["prepare", "folder", "--src", str(src), "--classes", str(src / "classes.yaml"), "--dst", str(data),
          "--crop", "64"])  # fmt: skip
    manifest = json.loads((data / "manifest.json").read_text())
    ckpt, hp = _fit_test(data, tmp / "runs")
    return src, scenes, manifest, ckpt, hp


def test_uint16_four_band_geotiffs_with_nodata(uint16_run, tmp_path):
    src, scenes, manifest, ckpt, hp = uint16_run
    # the band layout and the statistics travel with the checkpoint
    assert hp["in_chans"] == 4 and hp["data_info"]["bands"] == 4 and hp["data_info"]["dtype"] == "uint16"
    assert hp["data_info"]["mean"] == manifest["dataset"]["mean"] and hp["num_classes"] == 3
    out = tmp_path / "pred"
    _run(["predict", "--ckpt", str(ckpt), str(src / "images" / "scene_0.tif"), "--out", str(out)])
    with rasterio.open(out / "scene_0_pred.tif") as pred, rasterio.open(src / "images" / "scene_0.tif") as ref:
        classes = pred.read(1)
        assert pred.crs == ref.crs and pred.transform == ref.transform and pred.nodata == 255
    nodata = (scenes["scene_0"][0] == 0).all(-1)
    assert nodata.any() and (classes[nodata] == 255).all() and (classes[~nodata] < 3).all()


def test_jpeg_images_with_index_png_masks(tmp_path):
    src, data = tmp_path / "tiles", tmp_path / "data" / "jpeg"
    make_jpeg_folder(src, count=4, h=80, w=96)
    _run(["prepare", "folder", "--src", str(src), "--classes", str(src / "classes.yaml"), "--dst", str(data),
          "--crop", "64", "--val-fraction", "0.25"])  # fmt: skip
    ckpt, hp = _fit_test(data, tmp_path / "runs")
    assert hp["in_chans"] == 3 and hp["data_info"]["dtype"] == "uint8" and hp["data_info"]["name"] == "mine"
    out = tmp_path / "pred"
    _run(["predict", "--ckpt", str(ckpt), str(src / "images" / "tile_00.jpg"), "--out", str(out)])
    from PIL import Image

    png = np.asarray(Image.open(out / "tile_00_pred.png"))
    assert png.shape == (80, 96) and png.max() < 3


def test_a_16_bit_model_refuses_an_8_bit_raster(uint16_run, tmp_path, capsys):
    ckpt = uint16_run[3]
    with rasterio.open(tmp_path / "eight.tif", "w", driver="GTiff", height=64, width=64, count=4, dtype="uint8") as dst:
        dst.write(np.ones((4, 64, 64), np.uint8))
    capsys.readouterr()
    assert main(["predict", "--ckpt", str(ckpt), str(tmp_path / "eight.tif"), "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ctseg: error:") and "eight.tif" in err[0] and "uint16" in err[0]
    assert not (tmp_path / "p").exists()


def folder_data(root: Path) -> str:
    """The ``data:`` block of a :func:`helpers.tiny.tiny_config` run on the prepared folder ``root``."""
    return f"""\
class_path: ctseg.data.FolderDataModule
init_args:
  root: {root}
  image_size: 64
  batch_size: 2
  num_workers: 0
  persistent_workers: false
"""


def test_grid_and_report_on_a_folder_data_set(uint16_run, tmp_path):
    """``ctseg grid`` and ``ctseg report`` on 4-band uint16 data: the table names the folder's classes and the
    prediction figure shows the first three bands."""
    src, _, manifest, _, _ = uint16_run
    data = Path(manifest["tiles"][0]["image"]).parents[2] / "data" / "mine"
    for scheme in ("none", "ct-cl"):
        (tmp_path / f"{scheme}.yaml").write_text(tiny_config(scheme, folder_data(data)))
    configs = [str(tmp_path / "none.yaml"), str(tmp_path / "ct-cl.yaml")]
    _run(["grid", "--configs", *configs, "--seeds", "1", "--out", str(tmp_path / "grid")])
    runs = sorted(str(p.parent) for p in (tmp_path / "grid").rglob("results.json"))
    assert len(runs) == 2
    _run(["report", *runs, "--out", str(tmp_path / "report"), "--device", "cpu"])
    table = (tmp_path / "report" / "table.md").read_text()
    assert "IoU building" in table and "IoU water" in table
    pngs = sorted(p.name for p in (tmp_path / "report").glob("*.png"))
    assert {"qualitative.png", "patch_sampling.png", "curves.png"} <= set(pngs), pngs


def test_mapping_a_city_readme_commands(uint16_run, tmp_path):
    """README "Mapping a city": tiles → VRT → predict (COG + confidence) → vectorize, with the folder model."""
    from helpers.make_city import make_city

    ckpt = uint16_run[3]
    vrt = make_city(tmp_path / "city", grid=2, size=128)
    maps = tmp_path / "maps"
    _run(["predict", "--ckpt", str(ckpt), str(vrt), "--out", str(maps), "--confidence", "--window", "64"])
    with rasterio.open(maps / "city_pred.tif") as pred:
        assert pred.shape == (256, 256) and pred.crs.to_epsg() == 32633
        assert pred.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert json.loads(pred.tags()["CTSEG_CLASSES"]) == ["building", "road", "water"]
        built = int((pred.read(1) == 0).sum())
    out = maps / "buildings.gpkg"
    _run(["vectorize", str(maps / "city_pred.tif"), "--classes", "building", "--confidence",
          str(maps / "city_conf.tif"), "--out", str(out)])  # fmt: skip
    import pyogrio

    info = pyogrio.read_info(out)
    assert info["features"] > 0 and "mean_confidence" in list(info["fields"])
    meta, _, _, fields = pyogrio.raw.read(out)
    areas = fields[list(meta["fields"]).index("area")]
    assert abs(float(np.sum(areas)) - built * 0.25) < 1e-6  # every building pixel (0.5 m²) in exactly one polygon
