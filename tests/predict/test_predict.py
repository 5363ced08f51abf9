"""``ctseg predict`` and ``ctseg export`` end to end on a tiny trained checkpoint."""

import numpy as np
import pytest
import rasterio
import torch
from helpers.tiny import tiny_run
from PIL import Image
from rasterio.crs import CRS
from rasterio.transform import from_origin

from ctseg.checkpoints.files import load_model, read_checkpoint
from ctseg.cli.entry import main
from ctseg.data.definitions import SYNTHETIC
from ctseg.inference.tile import predict_tile

TRANSFORM = from_origin(500_000.0, 5_800_000.0, 0.05, 0.05)


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory):
    run = tiny_run(tmp_path_factory.getbasetemp() / "tiny-grid")
    return next(run.rglob("last.ckpt"))


def _rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (3, h, w), dtype=np.uint8)


def _geotiff(path, data, crs="EPSG:32633"):
    with rasterio.open(
        path, "w", driver="GTiff", height=data.shape[1], width=data.shape[2], count=data.shape[0],
        dtype=data.dtype, crs=crs, transform=TRANSFORM,
    ) as dst:  # fmt: skip
        dst.write(data)
    return path


def _one_line_error(capsys, needle):
    err = capsys.readouterr().err.strip()
    assert needle in err, err
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err


def _no_outputs(folder):
    return not folder.exists() or not [p for p in folder.iterdir() if "_pred" in p.name or ".tmp" in p.name]


def test_geotiff_georeference_round_trips(tmp_path, ckpt):
    data = _rgb(70, 90)
    src = _geotiff(tmp_path / "tile.tif", data)
    out = tmp_path / "out"
    args = ["predict", "--ckpt", str(ckpt), str(src), "--out", str(out), "--window", "64", "--device", "cpu"]
    assert main(args) == 0
    with rasterio.open(out / "tile_pred.tif") as pred:
        assert pred.count == 1 and pred.dtypes[0] == "uint8"
        assert (pred.height, pred.width) == (70, 90)
        assert pred.crs == CRS.from_epsg(32633)
        assert pred.transform.almost_equals(TRANSFORM)
        classes = pred.read(1)
        cmap = pred.colormap(1)
    assert cmap[1][:3] == SYNTHETIC.colors[1]
    assert classes.max() < 6
    loaded = load_model(ckpt)
    expected = predict_tile(loaded.model, data, window=64, mean=SYNTHETIC.mean, std=SYNTHETIC.std)
    np.testing.assert_array_equal(classes, expected)
    png = np.asarray(Image.open(out / "tile_pred.png").convert("RGB"))
    np.testing.assert_array_equal(png, SYNTHETIC.colorize(classes))
    assert not [p for p in out.iterdir() if ".tmp" in p.name]


def test_png_and_jpeg_inputs(tmp_path, ckpt):
    Image.fromarray(_rgb(40, 50, 1).transpose(1, 2, 0)).save(tmp_path / "a.png")
    Image.fromarray(_rgb(64, 33, 2).transpose(1, 2, 0)).save(tmp_path / "b.jpg")
    out = tmp_path / "out"
    argv = ["predict", "--ckpt", str(ckpt), str(tmp_path / "a.png"), str(tmp_path / "b.jpg"), "--out", str(out)]
    assert main([*argv, "--tta", "--no-color", "--batch-size", "2"]) == 0
    for stem, shape in (("a", (40, 50)), ("b", (64, 33))):
        with rasterio.open(out / f"{stem}_pred.tif") as pred:
            assert pred.read(1).shape == shape and pred.crs is None
        assert not (out / f"{stem}_pred.png").exists()


def test_existing_output_needs_overwrite(tmp_path, ckpt, capsys):
    src = _geotiff(tmp_path / "t.tif", _rgb(64, 64))
    argv = ["predict", "--ckpt", str(ckpt), str(src), "--out", str(tmp_path / "o")]
    assert main(argv) == 0
    before = (tmp_path / "o" / "t_pred.tif").stat().st_mtime_ns
    capsys.readouterr()
    assert main(argv) == 2
    _one_line_error(capsys, "--overwrite")
    assert (tmp_path / "o" / "t_pred.tif").stat().st_mtime_ns == before
    assert main([*argv, "--overwrite"]) == 0


@pytest.mark.parametrize("case", ["four_bands", "grey_png", "garbage_tif", "garbage_png", "missing", "uint16"])
def test_bad_input_exit_2_and_no_file(tmp_path, ckpt, capsys, case):
    good = _geotiff(tmp_path / "good.tif", _rgb(64, 64))
    if case == "four_bands":
        bad, needle = _geotiff(tmp_path / "rgbi.tif", np.zeros((4, 64, 64), np.uint8)), "4 bands"
    elif case == "grey_png":
        bad, needle = tmp_path / "grey.png", "1 band"
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(bad)
    elif case == "garbage_tif":
        bad, needle = tmp_path / "junk.tif", "cannot be read"
        bad.write_bytes(b"not a tiff at all" * 10)
    elif case == "garbage_png":
        bad, needle = tmp_path / "junk.png", "cannot be read"
        bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    elif case == "missing":
        bad, needle = tmp_path / "nope.tif", "does not exist"
    else:
        bad, needle = _geotiff(tmp_path / "deep.tif", np.zeros((3, 64, 64), np.uint16)), "uint16"
    out = tmp_path / "out"
    assert main(["predict", "--ckpt", str(ckpt), str(good), str(bad), "--out", str(out)]) == 2
    _one_line_error(capsys, needle)
    assert _no_outputs(out)  # the good input listed first was not written either


def test_non_ctseg_checkpoint(tmp_path, capsys):
    fake = tmp_path / "fake.ckpt"
    torch.save({"weights": torch.zeros(3)}, fake)
    src = _geotiff(tmp_path / "t.tif", _rgb(64, 64))
    assert main(["predict", "--ckpt", str(fake), str(src), "--out", str(tmp_path / "o")]) == 2
    _one_line_error(capsys, "not a ctseg checkpoint")
    assert _no_outputs(tmp_path / "o")


def test_class_count_mismatch(tmp_path, ckpt, capsys):
    src = _geotiff(tmp_path / "t.tif", _rgb(64, 64))
    argv = ["predict", "--ckpt", str(ckpt), str(src), "--out", str(tmp_path / "o"), "--dataset", "dubai"]
    assert main(argv) == 2
    _one_line_error(capsys, "6 classes")
    assert _no_outputs(tmp_path / "o")


def test_export_drops_heads_and_keeps_logits(tmp_path, ckpt):
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert any(k.startswith("contrastive.") for k in raw["state_dict"]), "the tiny run trains CT heads"
    out = tmp_path / "model.safetensors"
    assert main(["export", str(ckpt), str(out)]) == 0
    exported = read_checkpoint(out)
    assert out.read_bytes()[8:9] == b"{"  # a safetensors file: header, then raw tensor bytes; no pickle
    keys = list(exported["state_dict"])
    assert keys and not [k for k in keys if k.startswith(("contrastive.", "net.", "seg_loss."))]
    assert set(keys) == set(load_model(ckpt).model.state_dict())  # the Segmentor only: no projection heads
    assert "optimizer_states" not in exported and exported["dataset"] == "synthetic"
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a = load_model(ckpt).model(x)
        b = load_model(out).model(x)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # the exported model predicts like the checkpoint
    src = _geotiff(tmp_path / "t.tif", _rgb(64, 64))
    assert main(["predict", "--ckpt", str(out), str(src), "--out", str(tmp_path / "o")]) == 0


def test_fit_links_bands_and_data_info_into_the_checkpoint(ckpt):
    """``ctseg fit`` links ``data.info`` to ``model.in_chans`` and ``model.data_info``: predict needs nothing else."""
    from ctseg.data.definitions import info_to_json

    hp = torch.load(ckpt, map_location="cpu", weights_only=True)["hyper_parameters"]
    assert hp["in_chans"] == SYNTHETIC.bands == 3
    assert hp["data_info"] == info_to_json(SYNTHETIC)
    loaded = load_model(ckpt)
    assert loaded.info == SYNTHETIC and loaded.in_chans == 3
