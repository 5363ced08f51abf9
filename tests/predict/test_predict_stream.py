"""Out-of-core ``ctseg predict``: streamed = in-memory ``predict_tile`` pixel for pixel, COG outputs, GDAL inputs
(VRT mosaics, JPEG 2000, file lists), bounded memory, and failures mid-raster that leave nothing behind.

Models are untrained ``pf-tiny`` networks (the class maps only have to agree, not to be good).
"""

from __future__ import annotations

import errno
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import lightning
import numpy as np
import pytest
import rasterio
import torch
from helpers.paths import REPO
from PIL import Image
from rasterio.crs import CRS
from rasterio.enums import MaskFlags
from rasterio.transform import from_origin

from ctseg.cli.entry import main
from ctseg.data.definitions import DatasetInfo, generic_colors, info_to_json
from ctseg.inference.rows import RasterRows, class_rows, predict_rows, prob_rows
from ctseg.inference.tile import predict_tile
from ctseg.models import build_model
from ctseg.training.task import SegmentationTask

TRANSFORM = from_origin(400_000.0, 5_000_000.0, 0.25, 0.25)
RGB = DatasetInfo(name="rgb-stream", classes=("ground", "roof", "tree", "water"), colors=generic_colors(4))
RGBN = DatasetInfo(
    name="rgbn-stream", classes=("ground", "roof", "tree"), colors=generic_colors(3),
    mean=(0.1, 0.12, 0.14, 0.3), std=(0.05, 0.06, 0.07, 0.1), bands=4, dtype="uint16", nodata=0.0,
)  # fmt: skip


def save_checkpoint(path: Path, info: DatasetInfo, seed: int = 0) -> Path:
    """An untrained pf-tiny checkpoint as ``ctseg fit`` writes it (with the data set description)."""
    torch.manual_seed(seed)
    task = SegmentationTask(
        model="pf-tiny", num_classes=info.num_classes, img_size=64, class_names=list(info.classes),
        dataset=info.name, in_chans=info.bands, data_info=info_to_json(info),
    )  # fmt: skip
    ckpt = {"pytorch-lightning_version": lightning.__version__, "state_dict": task.state_dict()}
    torch.save({**ckpt, "hyper_parameters": dict(task.hparams)}, path)
    return path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("stream-models")
    return {"rgb": save_checkpoint(root / "rgb.ckpt", RGB), "rgbn": save_checkpoint(root / "rgbn.ckpt", RGBN, 1)}


@pytest.fixture(scope="module")
def models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    rgb = build_model("pf-tiny", 4, img_size=64).eval()
    torch.manual_seed(1)
    return {"rgb": rgb, "rgbn": build_model("pf-tiny", 3, in_chans=4, img_size=64).eval()}


def geotiff(path: Path, data: np.ndarray, nodata=None, block: int | None = 64, **extra) -> Path:
    profile = {"driver": "GTiff", "height": data.shape[1], "width": data.shape[2], "count": data.shape[0],
               "dtype": data.dtype, "crs": "EPSG:32632", "transform": TRANSFORM, "nodata": nodata, **extra}  # fmt: skip
    if block and data.shape[1] >= block and data.shape[2] >= block:
        profile.update(tiled=True, blockxsize=block, blockysize=block, compress="deflate")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (3, h, w), dtype=np.uint8)


def _rgbn(h: int, w: int, seed: int = 0) -> np.ndarray:
    data = np.random.default_rng(seed).integers(1, 65536, (4, h, w), dtype=np.uint16)
    data[:, :3] = 0  # nodata border: the first 3 rows and the last 5 columns
    data[:, :, -5:] = 0
    return data


def _stream(model, path: Path, info: DatasetInfo, nodata=None, probs: str | None = None, **kw):
    """Classes (and probabilities) of ``path`` by predict_rows over windowed reads."""
    with rasterio.open(path) as src:
        source = RasterRows(src, range(1, src.count + 1), path)
        classes = np.full((src.height, src.width), 77, np.uint8)
        out_p = np.zeros((info.num_classes, src.height, src.width), np.float32) if probs else None
        tops = []

        def emit(top, p, mask):
            tops.append(top)
            classes[top : top + p.shape[1]] = class_rows(p, mask)
            if out_p is not None:
                out_p[:, top : top + p.shape[1]] = prob_rows(p, mask, probs)

        predict_rows(model, source, emit, mean=info.mean, std=info.std, nodata=nodata, **kw)
    assert tops == sorted(tops)
    return classes, out_p, len(tops)


CASES = {  # name: (height, width, window, batch, 4-band uint16 with nodata)
    "one-window-row": (70, 90, 64, 8, False),
    "many-rows-batches-cross-rows": (300, 200, 64, 3, False),
    "not-multiples-uint16-nodata": (257, 130, 128, 5, True),
    "shorter-than-window": (40, 300, 64, 4, False),
    "narrower-than-window": (300, 40, 64, 4, True),
    "single-row": (1, 90, 32, 2, False),
}


@pytest.mark.parametrize("name", CASES)
def test_streamed_equals_predict_tile(name, models, tmp_path):
    h, w, window, batch, four = CASES[name]
    info = RGBN if four else RGB
    data = _rgbn(h, w, len(name)) if four else _rgb(h, w, len(name))
    path = geotiff(tmp_path / "s.tif", data, nodata=0 if four else None)
    model = models["rgbn" if four else "rgb"]
    kw = {"window": window, "batch_size": batch, "overlap": 0.25}
    classes, _, blocks = _stream(model, path, info, nodata=0 if four else None, **kw)
    expected = predict_tile(model, data, mean=info.mean, std=info.std, **kw)
    if four:
        expected[(data == 0).all(0)] = 255
    np.testing.assert_array_equal(classes, expected)
    assert blocks > 1 or h <= 2 * window  # a tall raster is emitted in several row blocks


def test_streamed_probs_and_tta_equal_predict_tile(models, tmp_path):
    data = _rgb(150, 110, 9)
    path = geotiff(tmp_path / "p.tif", data)
    kw = {"window": 64, "batch_size": 4, "overlap": 0.5, "tta": True}
    classes, probs, _ = _stream(models["rgb"], path, RGB, probs="float16", **kw)
    ref_classes, ref_probs = predict_tile(models["rgb"], data, mean=RGB.mean, std=RGB.std, return_probs=True, **kw)
    np.testing.assert_array_equal(classes, ref_classes)
    np.testing.assert_array_equal(probs, ref_probs.astype(np.float32))


def test_float32_nan_is_filled_by_rows(tmp_path):
    info = DatasetInfo(name="f", classes=("a", "b"), colors=generic_colors(2), mean=(0.4,), std=(0.2,), bands=1,
                       dtype="float32", nodata=float("nan"))  # fmt: skip
    torch.manual_seed(3)
    model = build_model("pf-tiny", 2, in_chans=1, img_size=64).eval()
    data = np.random.default_rng(1).random((1, 200, 90)).astype(np.float32)
    data[:, 60:130, 10:30] = np.nan
    path = geotiff(tmp_path / "f.tif", data, nodata=float("nan"))
    classes, _, _ = _stream(model, path, info, nodata=float("nan"), fill=[0.4], window=64, batch_size=4)
    filled = np.where(np.isnan(data), np.float32(0.4), data)
    expected = predict_tile(model, filled, window=64, batch_size=4, mean=info.mean, std=info.std)
    expected[np.isnan(data[0])] = 255
    np.testing.assert_array_equal(classes, expected)


# ------------------------------------------------------------------------------------------------- CLI, COG
def _predict(ckpt: Path, inputs, out: Path, *extra: str) -> int:
    return main(["predict", "--ckpt", str(ckpt), *map(str, inputs), "--out", str(out), "--device", "cpu", *extra])


def test_cli_writes_cloud_optimized_geotiffs(ckpts, tmp_path, capsys):
    data = _rgbn(700, 1100, 5)
    src = geotiff(tmp_path / "scene.tif", data, nodata=0, block=256)
    out = tmp_path / "out"
    argv = ["--window", "256", "--batch-size", "4", "--probs", "float16", "--confidence"]
    assert _predict(ckpts["rgbn"], [src], out, *argv) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "scene_conf.tif", "scene_legend.png", "scene_pred.png", "scene_pred.qml", "scene_pred.tif",
        "scene_pred.tif.aux.xml", "scene_probs.tif",
    ]  # fmt: skip
    assert re.search(r"ctseg predict: 1 file, 0\.770 Mpx in [\d.]+ s \([\d.]+ Mpx/s\)", capsys.readouterr().err)
    nodata = (data == 0).all(0)
    from ctseg.checkpoints.files import load_model

    model = load_model(ckpts["rgbn"]).model
    ref, ref_p = predict_tile(model, data, window=256, batch_size=4, mean=RGBN.mean, std=RGBN.std, return_probs=True)
    ref[nodata] = 255
    with rasterio.open(out / "scene_pred.tif") as pred:
        assert pred.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert pred.profile["tiled"] and pred.block_shapes == [(512, 512)] and pred.compression.name == "deflate"
        assert pred.overviews(1) == [2, 4] and pred.dtypes[0] == "uint8" and pred.nodata == 255
        assert pred.crs == CRS.from_epsg(32632) and pred.transform.almost_equals(TRANSFORM)
        assert json.loads(pred.tags()["CTSEG_CLASSES"]) == list(RGBN.classes)
        assert pred.colormap(1)[1][:3] == RGBN.colors[1]
        classes = pred.read(1)
        overview = pred.read(1, out_shape=(350, 550))  # the internal overview, nearest: class values only
    np.testing.assert_array_equal(classes, ref)
    assert set(np.unique(overview)) <= set(np.unique(classes))
    with rasterio.open(out / "scene_probs.tif") as probs:
        assert probs.count == 3 and probs.tags(1, ns="IMAGE_STRUCTURE").get("NBITS") == "16"
        assert probs.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and probs.overviews(1) == [2, 4]
        assert probs.descriptions == RGBN.classes
        assert probs.mask_flag_enums[0] == [MaskFlags.nodata]  # NaN nodata, no mask band: unchanged
        p = probs.read()
    assert np.isnan(p[:, nodata]).all()
    np.testing.assert_array_equal(p[:, ~nodata], ref_p.astype(np.float32)[:, ~nodata])
    with rasterio.open(out / "scene_conf.tif") as conf:
        assert conf.nodata == 0 and conf.dtypes[0] == "uint8" and conf.overviews(1) == [2, 4]
        c = conf.read(1)
    assert (c[nodata] == 0).all() and (c[~nodata] >= 255 // 3).all()
    assert np.abs(c[~nodata].astype(int) - np.round(255 * p[:, ~nodata].max(0))).max() <= 1
    png = np.asarray(Image.open(out / "scene_pred.png").convert("RGB"))
    np.testing.assert_array_equal(png, RGBN.colorize(classes))


def test_probs_uint8_of_an_input_with_nodata_have_a_validity_mask(ckpts, tmp_path):
    data = _rgbn(200, 150, 6)
    src = geotiff(tmp_path / "n.tif", data, nodata=0)
    out = tmp_path / "out"
    assert _predict(ckpts["rgbn"], [src], out, "--window", "64", "--probs", "uint8", "--no-color") == 0
    nodata = (data == 0).all(0)
    assert not list(out.glob("*.msk"))  # the mask is inside the COG
    with rasterio.open(out / "n_probs.tif") as probs:
        assert probs.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and probs.dtypes[0] == "uint8"
        assert probs.nodata is None  # every byte value is a probability
        assert probs.mask_flag_enums == ([MaskFlags.per_dataset],) * 3
        mask = probs.dataset_mask()
        p = probs.read()
        small = probs.read(1, out_shape=(50, 38), masked=True)  # an overview keeps its mask
    np.testing.assert_array_equal(mask, np.where(nodata, 0, 255))
    assert (p[:, nodata] == 0).all() and (p[:, ~nodata].astype(int).sum(0) >= 250).all()
    assert small.mask.any() and not small.mask.all()


def test_probs_uint8_and_png_limit(ckpts, tmp_path, capsys):
    data = _rgb(120, 200, 4)
    src = geotiff(tmp_path / "t.tif", data)
    out = tmp_path / "out"
    assert _predict(ckpts["rgb"], [src], out, "--window", "64", "--probs", "uint8", "--png-max-mpx", "0.01") == 0
    err = capsys.readouterr().err
    assert "no colour PNG above --png-max-mpx 0.01" in err
    assert sorted(p.name for p in out.iterdir()) == ["t_pred.qml", "t_pred.tif", "t_pred.tif.aux.xml", "t_probs.tif"]
    with rasterio.open(out / "t_probs.tif") as probs, rasterio.open(out / "t_pred.tif") as pred:
        p, classes = probs.read(), pred.read(1)
        assert probs.dtypes[0] == "uint8" and probs.nodata is None and pred.nodata is None
        assert probs.mask_flag_enums == ([MaskFlags.all_valid],) * 4  # no nodata: no mask (and no alpha band)
    assert (np.abs(p.astype(int).sum(0) - 255) <= 2).all()
    assert (p.argmax(0) == classes).mean() > 0.99  # ties after rounding to 1/255 may differ
    assert _predict(ckpts["rgb"], [src], tmp_path / "idx", "--format", "index-png", "--png-max-mpx", "0.01") == 2
    assert "index-png holds the whole class map" in capsys.readouterr().err


def _vrt(path: Path, tiles: list[tuple[Path, int, int]], height: int, width: int, bands: int) -> Path:
    """A VRT mosaic of ``tiles`` (path, row, col offsets) as gdalbuildvrt writes it (simple sources)."""
    parts = [f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">',
             f"<SRS>{CRS.from_epsg(32632).to_wkt()}</SRS>",
             f"<GeoTransform>{', '.join(map(str, TRANSFORM.to_gdal()))}</GeoTransform>"]  # fmt: skip
    for b in range(1, bands + 1):
        parts.append(f'<VRTRasterBand dataType="Byte" band="{b}">')
        for tile, row, col in tiles:
            with rasterio.open(tile) as t:
                h, w = t.height, t.width
            parts.append(
                f'<SimpleSource><SourceFilename relativeToVRT="1">{tile.name}</SourceFilename>'
                f'<SourceBand>{b}</SourceBand><SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>'
                f'<DstRect xOff="{col}" yOff="{row}" xSize="{w}" ySize="{h}"/></SimpleSource>'
            )
        parts.append("</VRTRasterBand>")
    parts.append("</VRTDataset>")
    path.write_text("\n".join(parts))
    return path


def test_vrt_mosaic_jp2_and_input_list(ckpts, tmp_path):
    mosaic = _rgb(200, 260, 8)
    tiles_dir = tmp_path / "tiles"
    tiles_dir.mkdir()
    tiles = []
    for r, c in ((0, 0), (0, 130), (100, 0), (100, 130)):
        tiles.append(
            (geotiff(tiles_dir / f"t_{r}_{c}.tif", np.ascontiguousarray(mosaic[:, r : r + 100, c : c + 130])), r, c)
        )
    _vrt(tiles_dir / "city.vrt", tiles, 200, 260, 3)
    jp2 = tmp_path / "scene.jp2"
    with rasterio.open(jp2, "w", driver="JP2OpenJPEG", height=96, width=80, count=3, dtype="uint8",
                       crs="EPSG:32632", transform=TRANSFORM, QUALITY=100, REVERSIBLE="YES") as dst:  # fmt: skip
        dst.write(mosaic[:, :96, :80])
    listing = tmp_path / "inputs.txt"
    listing.write_text("# a city and a scene\ntiles/city.vrt\n\n" + f"{jp2}\n")
    out = tmp_path / "out"
    assert _predict(ckpts["rgb"], [], out, "--inputs", str(listing), "--window", "64", "--no-color") == 0
    from ctseg.checkpoints.files import load_model

    model = load_model(ckpts["rgb"]).model
    with rasterio.open(out / "city_pred.tif") as pred:
        assert pred.crs == CRS.from_epsg(32632) and (pred.height, pred.width) == (200, 260)
        np.testing.assert_array_equal(pred.read(1), predict_tile(model, mosaic, window=64, mean=RGB.mean, std=RGB.std))
    with rasterio.open(jp2) as src:
        decoded = src.read()
    np.testing.assert_array_equal(decoded, mosaic[:, :96, :80])  # lossless
    with rasterio.open(out / "scene_pred.tif") as pred:
        np.testing.assert_array_equal(pred.read(1), predict_tile(model, decoded, window=64, mean=RGB.mean, std=RGB.std))


# ------------------------------------------------------------------------------------------------- failures
def _one_line(err: str, *needles: str) -> str:
    lines = [seg.strip() for seg in re.split(r"[\r\n]+", err) if seg.strip()]
    assert len(lines) == 1 and lines[0].startswith("ctseg: error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]}"
    return lines[0]


@pytest.mark.parametrize("where", ["rows", "cog-layout", "colour-png"])
def test_disk_full_removes_the_partial_output(where, ckpts, tmp_path, capsys, monkeypatch):
    import ctseg.predict.write as pw

    src = geotiff(tmp_path / "t.tif", _rgb(300, 100, 2))
    out = tmp_path / "out"
    assert _predict(ckpts["rgb"], [src], out, "--window", "64") == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    calls = []

    def full(*args, **kwargs):
        calls.append(1)
        if where != "rows" or len(calls) == 2:  # rows: the second row band, mid-way through the raster
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    if where == "rows":
        real = pw._write_block
        monkeypatch.setattr(pw, "_write_block", full)
    elif where == "colour-png":  # the last file written: the GeoTIFFs are done but not yet in place
        real = Image.Image.save
        monkeypatch.setattr(Image.Image, "save", full)
    else:
        import rasterio.shutil

        real = rasterio.shutil.copy
        monkeypatch.setattr(rasterio.shutil, "copy", full)
    capsys.readouterr()
    assert _predict(ckpts["rgb"], [src], out, "--window", "64", "--overwrite", "--probs", "uint8") == 2
    _one_line(capsys.readouterr().err, str(out / "t_"), "no space left on device", "partial output was removed")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the earlier outputs are untouched


def corrupt_middle_tile(path: Path) -> tuple[int, int]:
    """Overwrite the compressed bytes of one tile in the middle of a tiled GeoTIFF; its (row, col) offsets."""
    with rasterio.open(path) as src:
        bh, bw = src.block_shapes[0]
        bx, by = src.width // bw // 2, src.height // bh // 2
        offset = int(src.get_tag_item(f"BLOCK_OFFSET_{bx}_{by}", "TIFF", bidx=1))
        size = int(src.get_tag_item(f"BLOCK_SIZE_{bx}_{by}", "TIFF", bidx=1))
    raw = bytearray(path.read_bytes())
    raw[offset : offset + size] = b"\xff" * size
    path.write_bytes(bytes(raw))
    return by * bh, bx * bw


def test_unreadable_window_is_one_line_and_leaves_nothing(ckpts, tmp_path, capsys):
    good = geotiff(tmp_path / "a.tif", _rgb(64, 64, 1))
    bad = geotiff(tmp_path / "b.tif", _rgb(512, 256, 3), block=128)
    row, _ = corrupt_middle_tile(bad)
    out = tmp_path / "out"
    assert _predict(ckpts["rgb"], [good, bad], out, "--window", "64") == 2
    line = _one_line(capsys.readouterr().err, str(bad), "cannot be read at rows", "window row_off=")
    start = int(re.search(r"rows (\d+)-(\d+)", line).group(1))
    end = int(re.search(r"rows (\d+)-(\d+)", line).group(2))
    assert start <= row + 127 and row <= end  # the read that failed covers the broken tile's rows
    assert sorted(p.name for p in out.iterdir()) == [  # b: nothing, not even temp files
        "a_legend.png", "a_pred.png", "a_pred.qml", "a_pred.tif", "a_pred.tif.aux.xml"
    ]  # fmt: skip


# ------------------------------------------------------------------------------------------------- memory
def _memory(ckpt: Path, tmp: Path, heights: list[int], width: int, *extra: str) -> dict:
    res = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "predict_memory.py"), "--height", *map(str, heights),
         "--width", str(width), "--ckpt-in", str(ckpt), "--workdir", str(tmp), "--threads", "1", "--tracemalloc",
         *extra],
        capture_output=True, text=True, timeout=600, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout[res.stdout.index("{") :])


def _check_flat(result: dict) -> None:
    small, big = result["runs"]
    # NumPy / Python allocations: the rows in flight only (an in-memory read would grow 4x with the height)
    assert big["traced_peak_mb"] < 1.5 * small["traced_peak_mb"], result
    # the whole process: torch's buffers and GDAL's cache are bounded by the raster width and the window too
    assert big["growth_mb"] < 1.5 * small["growth_mb"], result


class Stub(torch.nn.Module):
    """Two 1×1 convolutions with the interface of a Segmentor: the pipeline's memory without a network's."""

    def __init__(self, classes: int):
        super().__init__()
        from types import SimpleNamespace

        self.num_classes = classes
        self.encoder = SimpleNamespace(input_multiple=32, in_chans=3)
        self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 1), torch.nn.ReLU(), torch.nn.Conv2d(8, classes, 1))

    def forward(self, x):
        return self.net(x)


def test_numpy_peak_does_not_grow_with_height(ckpts, tmp_path, monkeypatch):
    """In process, tracemalloc: the NumPy / Python allocations of 600 and 2,400 rows of 2,048 px (stub model).

    The in-memory predict of before needed 4 B per pixel at once (image and class map): ~20 MB more here."""
    import tracemalloc

    import ctseg.predict.run as predict

    real = predict._load

    def stub_load(ckpt, dev):
        loaded = real(ckpt, dev)
        loaded.model = Stub(loaded.model.num_classes)
        return loaded

    monkeypatch.setattr(predict, "_load", stub_load)
    peaks = []
    for h in (600, 2400):
        raster = geotiff(tmp_path / f"r{h}.tif", _rgb(h, 2048, h), block=512)
        tracemalloc.start()
        try:
            args = dict(window=256, batch_size=4, device="cpu", progress=False, color=False)
            predict.run_predict(ckpts["rgb"], [raster], tmp_path / "out", **args)
            peaks.append(tracemalloc.get_traced_memory()[1] / 2**20)
        finally:
            tracemalloc.stop()
    assert peaks[1] < 1.5 * peaks[0] and peaks[1] - peaks[0] < 4, peaks


def _gdal_cache_used():
    """GDAL's ``GDALGetCacheUsed64`` (bytes in its block cache), from the library rasterio has loaded (pyogrio's
    wheel brings a GDAL of its own, with a cache of its own, which may be mapped first)."""
    import ctypes

    import rasterio

    libs = str(Path(rasterio.__file__).resolve().parent.parent / "rasterio.libs")
    with open("/proc/self/maps") as fh:
        names = [line.split()[-1] for line in fh if "libgdal" in line.rsplit("/", 1)[-1]]
    path = next((n for n in names if n.startswith(libs)), names[0] if len(names) == 1 else None)
    if path is None:
        pytest.skip("GDAL's library is not among this process's mappings")
    used = ctypes.CDLL(path).GDALGetCacheUsed64
    used.restype = ctypes.c_int64
    return used


def test_gdal_cache_does_not_grow_with_height(ckpts, tmp_path, monkeypatch):
    """GDAL's block cache while 520 and 1,560 rows of 1,024 px are predicted (stub model, 256² source tiles,
    float16 probabilities, which go through the cache): its cap is two source block rows and one row of windows of
    outputs, which 520 rows fill as much as 1,560 (the cap of before, window + 1,024 rows of every byte, left a
    520-row raster 20 MB short of a taller one's)."""
    import ctseg.predict.run as predict
    import ctseg.predict.write as write

    used, seen = _gdal_cache_used(), []
    real_load, real_write = predict._load, write._write_block

    def stub_load(ckpt, dev):
        loaded = real_load(ckpt, dev)
        loaded.model = Stub(loaded.model.num_classes)
        return loaded

    def write_block(dataset, data, window):
        seen[-1] = max(seen[-1], used())
        real_write(dataset, data, window)

    monkeypatch.setattr(predict, "_load", stub_load)
    monkeypatch.setattr(write, "_write_block", write_block)
    for h in (520, 1560):
        raster = geotiff(tmp_path / f"r{h}.tif", _rgb(h, 1024, h), block=256)
        seen.append(0)
        args = dict(window=256, batch_size=4, device="cpu", progress=False, color=False, probs="float16")
        predict.run_predict(ckpts["rgb"], [raster], tmp_path / "out", **args)
    cap = write.gdal_cache_bytes(1024, 256, source_bytes=3, source_block=(256, 256), output_bytes=1 + 4 * 4)
    assert seen[0] > 0.9 * cap and seen[1] <= cap and seen[1] - seen[0] < 1 << 20, (seen, cap)


def test_gdal_cache_caps_change_no_output_byte(ckpts, tmp_path, monkeypatch):
    """Every GDAL cache cap 1 MiB (output blocks and source tiles dropped soon after use) or 1 GiB (nothing
    dropped): the same bytes in every file (class map and its overviews, masked uint8 probabilities, confidence,
    entropy, sidecars)."""
    import ctseg.predict.write as write

    src = geotiff(tmp_path / "scene.tif", _rgbn(500, 600, 5), nodata=0, block=128)
    argv = ["--window", "128", "--batch-size", "4", "--probs", "uint8", "--confidence", "--uncertainty", "--no-color"]
    files = []
    for cap in (1 << 20, 1 << 30):
        monkeypatch.setattr(write, "MIN_CACHE", cap)
        monkeypatch.setattr(write, "MAX_CACHE", cap)
        out = tmp_path / f"out{cap}"
        assert _predict(ckpts["rgbn"], [src], out, *argv) == 0
        files.append({p.name: p.read_bytes() for p in sorted(out.iterdir())})
    assert "scene_probs.tif" in files[0] and "scene_entropy.tif" in files[0]
    assert files[0].keys() == files[1].keys()
    for name in files[0]:
        assert files[0][name] == files[1][name], name


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_height(ckpts, tmp_path):
    """A fresh process (peak RSS and tracemalloc), stub model: 800 then 3,200 rows of 2,048 px."""
    _check_flat(_memory(ckpts["rgb"], tmp_path, [800, 3200], 2048, "--stub"))


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_height_pf_tiny(ckpts, tmp_path):
    """pf-tiny, window 256, batch 4: 2,000 then 8,000 rows of 2,048 px."""
    _check_flat(_memory(ckpts["rgb"], tmp_path, [2000, 8000], 2048, "--window", "256", "--batch-size", "4"))


# ------------------------------------------------------------------------------------------------- vectors
def test_vector_outlines_classes_with_confidence(ckpts, tmp_path, capsys):
    """``--vector DIR --vector-classes roof``: ``ctseg.vectorize.polygons`` on the class map, with the confidence."""
    import pyogrio
    import pyogrio.raw

    src = geotiff(tmp_path / "t.tif", _rgb(96, 128, 6))
    out, polys = tmp_path / "out", tmp_path / "polys"
    argv = ["--window", "64", "--confidence", "--vector", str(polys), "--vector-classes", "roof,0", "--no-color"]
    assert _predict(ckpts["rgb"], [src], out, *argv) == 0
    info = pyogrio.read_info(polys / "t.gpkg")
    assert info["features"] > 0 and "mean_confidence" in list(info["fields"])
    meta, _, _, values = pyogrio.raw.read(polys / "t.gpkg", read_geometry=False)
    outlined = set(values[list(meta["fields"]).index("class_index")].tolist())
    with rasterio.open(out / "t_pred.tif") as pred:
        present = set(np.unique(pred.read(1)).tolist()) & {0, 1}  # ground (0) and roof (1) in the class map
    assert outlined and outlined == present
    assert _predict(ckpts["rgb"], [src], tmp_path / "o2", "--vector", ".gpkg", "--vector-classes", "tree") == 0
    assert (tmp_path / "o2" / "t.gpkg").is_file()
    capsys.readouterr()
    assert _predict(ckpts["rgb"], [src], tmp_path / "o3", "--vector", str(polys), "--vector-classes", "lava") == 2
    _one_line(capsys.readouterr().err, "--vector-classes", "'lava'", "ground, roof, tree, water")
    assert not (tmp_path / "o3").exists()


def test_vector_workers_outline_what_one_process_does(ckpts, tmp_path, capsys):
    """``--vector-workers N``: the polygons of a 4-block class map from 2 worker processes are the file one process
    writes, feature for feature; a bad count, or the flag without ``--vector``, is one line and nothing written."""
    import pyogrio.raw

    src = geotiff(tmp_path / "t.tif", _rgb(600, 560, 8))
    argv = ["--window", "64", "--no-color", "--vector", ".gpkg", "--vector-classes", "0,1,2,3"]
    read = {}
    for n in ("2", "0"):
        assert _predict(ckpts["rgb"], [src], tmp_path / n, *argv, "--vector-workers", n) == 0
        meta, _, geometry, values = pyogrio.raw.read(tmp_path / n / "t.gpkg")
        read[n] = (list(meta["fields"]), geometry.tolist(), [v.tolist() for v in values])
    assert len(read["0"][1]) > 4 and read["2"] == read["0"]
    capsys.readouterr()
    assert _predict(ckpts["rgb"], [src], tmp_path / "bad", *argv, "--vector-workers", "-1") == 2
    _one_line(capsys.readouterr().err, "--vector-workers -1", ">= 0")
    assert _predict(ckpts["rgb"], [src], tmp_path / "bad", "--vector-workers", "2") == 2
    _one_line(capsys.readouterr().err, "--vector-workers", "add --vector")
    assert not (tmp_path / "bad").exists()


def test_inputs_whose_outputs_would_collide_are_refused_before_any_work(ckpts, tmp_path, capsys):
    """Two inputs with one stem, or ``a``'s ``a_uncertain.gpkg`` against the ``--vector .gpkg`` of ``a_uncertain``:
    one line naming both inputs and the file, and nothing written."""
    (tmp_path / "x").mkdir()
    a = geotiff(tmp_path / "a.tif", _rgb(64, 64, 1))
    same = geotiff(tmp_path / "x" / "a.tif", _rgb(64, 64, 2))
    other = geotiff(tmp_path / "a_uncertain.tif", _rgb(64, 64, 3))
    capsys.readouterr()
    assert _predict(ckpts["rgb"], [a, same], tmp_path / "o1", "--window", "64") == 2
    _one_line(capsys.readouterr().err, "a.tif", "would both write a_pred.tif", "rename one")
    argv = ["--window", "64", "--uncertain-windows", "1", "--vector", ".gpkg", "--vector-classes", "0"]
    assert _predict(ckpts["rgb"], [a, other], tmp_path / "o2", *argv) == 2
    _one_line(capsys.readouterr().err, "a.tif", "a_uncertain.tif", "would both write a_uncertain.gpkg")
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()
    assert _predict(ckpts["rgb"], [a, other], tmp_path / "o3", "--window", "64", "--uncertain-windows", "1") == 0


def test_vector_of_a_png_input_notes_pixel_units_in_one_line(ckpts, tmp_path, capsys):
    """A PNG input gives a class map without georeference: vectorize's note is one ``ctseg: warning:`` line."""
    src = tmp_path / "t.png"
    Image.fromarray(_rgb(64, 64, 7).transpose(1, 2, 0)).save(src)
    argv = ["--window", "64", "--confidence", "--vector", ".gpkg", "--vector-classes", "0,1,2,3", "--no-color"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no Python warning (with its source line) reaches the user
        assert _predict(ckpts["rgb"], [src], tmp_path / "out", *argv) == 0
    assert (tmp_path / "out" / "t.gpkg").is_file()
    notes = [line for line in capsys.readouterr().err.splitlines() if "georeferenced" in line]
    assert len(notes) == 1 and notes[0].startswith("ctseg: warning: t_pred.tif is not georeferenced"), notes


def test_onnx_export_predicts_like_the_checkpoint(ckpts, tmp_path):
    """``--ckpt model.onnx`` runs the ONNX export with onnxruntime through the same streamed loop."""
    pytest.importorskip("onnxruntime")
    onnx = tmp_path / "m.onnx"
    assert main(["export", str(ckpts["rgb"]), str(onnx), "--window", "64"]) == 0
    src = geotiff(tmp_path / "t.tif", _rgb(150, 130, 3))
    assert _predict(onnx, [src], tmp_path / "a", "--window", "64", "--no-color") == 0
    assert _predict(ckpts["rgb"], [src], tmp_path / "b", "--window", "64", "--no-color") == 0
    with rasterio.open(tmp_path / "a" / "t_pred.tif") as a, rasterio.open(tmp_path / "b" / "t_pred.tif") as b:
        assert (a.read(1) == b.read(1)).mean() > 0.999  # onnxruntime's kernels round differently from torch's
