"""The bad-input matrix of the ``ctseg`` command: every user error is exit code 2, one line, no partial output.

Each case builds its inputs under ``tmp_path``, runs the real CLI entry (``ctseg.cli.entry.main`` in-process; a few
through the installed ``ctseg`` console script too) and checks:

* exit code 2;
* stderr holds exactly one line, ``ctseg: error: …``, naming the offending file or argument, and no traceback
  (``ctseg prepare`` shows its progress bar and notes only on a terminal);
* nothing under ``tmp_path`` was created, changed or removed: no destination, no temporary sibling, and an
  existing output is left byte-identical.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from helpers.tiny import TINY_CONFIG, tiny_config
from PIL import Image

from ctseg.cli.entry import main

#: A colour outside the ISPRS palette and where it is put in the case ``prepare-unknown-colour``.
ODD_COLOUR, ODD_PIXEL = (12, 34, 56), (7, 11)


@dataclass
class Case:
    argv: list[str]
    needles: list[str]  # substrings of the error line: the offending file / argument, what is wrong
    progress: bool = False  # ``ctseg prepare`` notes / bar may precede the error line


# ------------------------------------------------------------------------------------------------- inputs
def _rgb(h: int = 64, w: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _good_png(path: Path) -> Path:
    Image.fromarray(_rgb()).save(path)
    return path


def _blocker(tmp_path: Path) -> Path:
    """A regular file that outputs are asked to go below."""
    path = tmp_path / "a_file"
    path.write_text("I am a file, not a folder\n")
    return path


def _make_isprs():
    """tests/helpers/make_isprs.py (importable as ``helpers.make_isprs``: tests/ is on pytest's pythonpath)."""
    from helpers import make_isprs

    return make_isprs


def _potsdam(root: Path):
    """Tiny Potsdam release layout: train tile 2_10 and test tile 2_13, 120 × 140 px."""
    return _make_isprs().make_potsdam(root, tiles=("2_10", "2_13"), size=(120, 140))


def _prepare(src: Path, dst: Path) -> list[str]:
    # default --workers (all cores): the two tiles are cut in the process pool, as a user would run it
    return ["prepare", "potsdam", "--src", str(src), "--dst", str(dst), "--crop", "100"]


def _ckpt(request) -> Path:
    return next(request.getfixturevalue("tiny").rglob("last.ckpt"))


def _garbage_ckpt(tmp_path: Path) -> Path:
    path = tmp_path / "junk.ckpt"
    path.write_bytes(b"this is not a checkpoint\n" * 20)
    return path


def _foreign_ckpt(tmp_path: Path) -> Path:
    path = tmp_path / "weights.pt"
    torch.save({"weights": torch.zeros(3)}, path)  # a valid torch file, but not from ctseg
    return path


# ------------------------------------------------------------------------------------------------- cases
def predict_corrupt_tif(tmp_path, request):
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00" + b"garbage" * 40)
    good = _good_png(tmp_path / "good.png")  # listed first: must not be written either
    out = tmp_path / "out"
    return Case(["predict", "--ckpt", str(_ckpt(request)), str(good), str(bad), "--out", str(out)], [str(bad)])


def predict_corrupt_png(tmp_path, request):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 40)
    good = _good_png(tmp_path / "good.png")
    out = tmp_path / "out"
    return Case(["predict", "--ckpt", str(_ckpt(request)), str(good), str(bad), "--out", str(out)], [str(bad)])


def predict_truncated_jpeg(tmp_path, request):
    """A JPEG whose header is intact but whose pixels are cut off: found before the first (good) input is done."""
    good = _good_png(tmp_path / "good.png")
    bad = tmp_path / "broken.jpg"
    Image.fromarray(_rgb(256, 256)).save(bad, quality=95)
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    out = tmp_path / "out"
    return Case(["predict", "--ckpt", str(_ckpt(request)), str(good), str(bad), "--out", str(out)], [str(bad)])


def predict_truncated_tif(tmp_path, request):
    good = _good_png(tmp_path / "good.png")
    bad = tmp_path / "cut.tif"
    with rasterio.open(bad, "w", driver="GTiff", height=256, width=256, count=3, dtype="uint8") as dst:
        dst.write(np.moveaxis(_rgb(256, 256), -1, 0))
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    out = tmp_path / "out"
    return Case(["predict", "--ckpt", str(_ckpt(request)), str(good), str(bad), "--out", str(out)], [str(bad)])


def prepare_corrupt_tif(tmp_path, request):
    tiles = _potsdam(tmp_path / "src")
    tiles["2_13"].image.write_bytes(b"II*\x00" + b"garbage" * 40)
    return Case(_prepare(tmp_path / "src", tmp_path / "dst"), ["cannot read", str(tiles["2_13"].image)], True)


def prepare_truncated_tile(tmp_path, request):
    tiles = _potsdam(tmp_path / "src")
    image = tiles["2_10"].image
    image.write_bytes(image.read_bytes()[: image.stat().st_size // 2])  # header intact, pixels cut off
    return Case(_prepare(tmp_path / "src", tmp_path / "dst"), ["cannot read", str(image)], True)


def prepare_unknown_colour(tmp_path, request):
    tiles = _potsdam(tmp_path / "src")
    label = tiles["2_10"].label
    with rasterio.open(label, "r+") as ds:
        data = ds.read()
        data[:, ODD_PIXEL[0], ODD_PIXEL[1]] = ODD_COLOUR
        ds.write(data)
    row, col = ODD_PIXEL
    needles = [str(label), str(ODD_COLOUR), "#0C2238", f"row {row}, col {col}"]
    return Case(_prepare(tmp_path / "src", tmp_path / "dst"), needles, True)


def prepare_size_mismatch(tmp_path, request):
    tiles = _potsdam(tmp_path / "src")
    label = _make_isprs().write_geotiff(tiles["2_13"].eroded, np.zeros((100, 140, 3), np.uint8))  # image is 120 × 140
    needles = [str(label), "100×140", "120×140", tiles["2_13"].image.name]
    return Case(_prepare(tmp_path / "src", tmp_path / "dst"), needles, True)


def prepare_empty_src(tmp_path, request):
    src = tmp_path / "download"
    src.mkdir()
    return Case(_prepare(src, tmp_path / "dst"), [str(src), "no potsdam images"])


def prepare_wrong_src(tmp_path, request):
    src = tmp_path / "holiday_photos"
    (src / "2023").mkdir(parents=True)
    (src / "notes.txt").write_text("not a data set\n")
    _good_png(src / "2023" / "beach.png")
    (src / "2023" / "scan.tif").write_bytes(b"II*\x00" + b"\x00" * 64)
    return Case(_prepare(src, tmp_path / "dst"), [str(src), "top_potsdam_X_Y_RGB.tif"])


def fit_missing_config(tmp_path, request):
    missing = tmp_path / "configs" / "missing.yaml"
    return Case(["fit", "--config", str(missing)], [str(missing), "no such file"])


def fit_junk_ckpt_path(tmp_path, request):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY_CONFIG)
    junk = _garbage_ckpt(tmp_path)
    argv = ["fit", "--config", str(cfg), "--trainer.default_root_dir", str(tmp_path / "runs"), "--ckpt_path", str(junk)]
    return Case(argv, [str(junk)])


def _tiny_fit(tmp_path, *extra):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY_CONFIG)
    return ["fit", "--config", str(cfg), "--trainer.default_root_dir", str(tmp_path / "runs"), *extra]


def fit_gpu_without_cuda(tmp_path, request):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    return Case(_tiny_fit(tmp_path, "--trainer.accelerator", "gpu"), ["--trainer.accelerator gpu", "cpu"])


def fit_too_many_devices(tmp_path, request):
    have = torch.cuda.device_count() or len(os.sched_getaffinity(0))
    wanted = str(have + 1)
    return Case(_tiny_fit(tmp_path, "--trainer.devices", wanted), [f"--trainer.devices {wanted}", f"has {have}"])


def fit_bad_scheme_stage(tmp_path, request):
    return Case(_tiny_fit(tmp_path, "--model.scheme_options", "{stages: [5]}"), ["--model.scheme_options", "stages"])


def fit_bad_hard_fraction(tmp_path, request):
    argv = _tiny_fit(tmp_path, "--model.scheme_options", "{hard_fraction: 1.5}")
    return Case(argv, ["--model.scheme_options", "hard_fraction must be in (0, 1], got 1.5"])


def fit_negative_lr(tmp_path, request):
    return Case(_tiny_fit(tmp_path, "--model.lr", "-1"), ["--model.lr -1.0", "must be positive"])


def fit_fractional_devices(tmp_path, request):
    return Case(_tiny_fit(tmp_path, "--trainer.devices", "1.5"), ["--trainer.devices 1.5", "whole number"])


def fit_image_size_not_multiple(tmp_path, request):
    argv = _tiny_fit(tmp_path, "--data.init_args.image_size", "100")
    return Case(argv, ["--data.init_args.image_size 100", "multiple of 32", "96 or 128"])


def fit_negative_max_steps(tmp_path, request):
    return Case(_tiny_fit(tmp_path, "--trainer.max_steps", "-5"), ["--trainer.max_steps -5", "-1 (no limit)"])


def fit_read_only_root(tmp_path, request):
    ro = _mounted(tmp_path / "ro", request, "ro,size=1m")
    return Case(_tiny_fit(tmp_path, "--trainer.default_root_dir", str(ro / "runs")), [str(ro), "read-only"])


def fit_prepared_root_missing(tmp_path, request):
    """Found after Lightning has seeded: the error is still the only line (no ``Seed set to 0`` before it)."""
    data = "class_path: ctseg.data.PreparedDataModule\ninit_args:\n  root: " + str(tmp_path / "nowhere") + "\n"
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(tiny_config(data=data))
    argv = ["fit", "--config", str(cfg), "--trainer.default_root_dir", str(tmp_path / "runs")]
    return Case(argv, [str(tmp_path / "nowhere"), "does not exist"])


def _validate_other(tmp_path, request, name: str, **hparams) -> tuple[Path, list[str]]:
    """The tiny run's checkpoint saved as ``name`` with ``hparams`` changed, and ``ctseg validate`` on it."""
    ckpt = torch.load(_ckpt(request), map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"].update(hparams)
    other = tmp_path / name
    torch.save(ckpt, other)
    return other, ["validate", *_tiny_fit(tmp_path, "--ckpt_path", str(other))[1:]]


def validate_other_class_count(tmp_path, request):
    other, argv = _validate_other(tmp_path, request, "dubai-model.ckpt", num_classes=5, dataset="dubai")
    return Case(argv, [str(other), "trained for 5 classes (dubai)", "has 6"])


def validate_other_band_count(tmp_path, request):
    from ctseg.data.definitions import DatasetInfo, generic_colors, info_to_json

    four = DatasetInfo("rgbn", tuple(f"c{i}" for i in range(6)), generic_colors(6), mean=(0.1,) * 4, std=(0.2,) * 4,
                       bands=4, dtype="uint16")  # fmt: skip
    hparams = {"in_chans": 4, "data_info": info_to_json(four), "dataset": "rgbn"}
    other, argv = _validate_other(tmp_path, request, "rgbn-model.ckpt", **hparams)
    return Case(argv, [str(other), "trained on 4 bands uint16 images (rgbn)", "has 3 bands uint8"])


def predict_16bit_to_8bit_model(tmp_path, request):
    good = _good_png(tmp_path / "good.png")
    bad = tmp_path / "deep.tif"
    with rasterio.open(bad, "w", driver="GTiff", height=64, width=64, count=3, dtype="uint16") as dst:
        dst.write(np.full((3, 64, 64), 300, np.uint16))
    argv = ["predict", "--ckpt", str(_ckpt(request)), str(good), str(bad), "--out", str(tmp_path / "out")]
    return Case(argv, [str(bad), "uint16", "3 bands uint8", "rescale it to 8 bits"])


def predict_bands_out_of_range(tmp_path, request):
    good = _good_png(tmp_path / "good.png")
    argv = ["predict", "--ckpt", str(_ckpt(request)), str(good), "--bands", "1,2,4", "--out", str(tmp_path / "out")]
    return Case(argv, ["--bands 1,2,4", str(good), "band 4 does not exist"])


def predict_index_png_over_input(tmp_path, request):
    good = _good_png(tmp_path / "tile.png")
    argv = ["predict", "--ckpt", str(_ckpt(request)), str(good), "--format", "index-png", "--overwrite",
            "--out", str(tmp_path)]  # fmt: skip
    return Case(argv, [str(good), "would replace an input image"])


def predict_garbage_ckpt(tmp_path, request):
    junk = _garbage_ckpt(tmp_path)
    good = _good_png(tmp_path / "good.png")
    return Case(["predict", "--ckpt", str(junk), str(good), "--out", str(tmp_path / "out")], [str(junk)])


def predict_foreign_ckpt(tmp_path, request):
    foreign = _foreign_ckpt(tmp_path)
    good = _good_png(tmp_path / "good.png")
    argv = ["predict", "--ckpt", str(foreign), str(good), "--out", str(tmp_path / "out")]
    return Case(argv, [str(foreign), "not a ctseg checkpoint"])


def export_garbage_ckpt(tmp_path, request):
    junk = _garbage_ckpt(tmp_path)
    return Case(["export", str(junk), str(tmp_path / "model.safetensors")], [str(junk)])


def export_foreign_ckpt(tmp_path, request):
    foreign = _foreign_ckpt(tmp_path)
    return Case(["export", str(foreign), str(tmp_path / "model.safetensors")], [str(foreign), "not a ctseg checkpoint"])


def _mounted(path: Path, request, options: str) -> Path:
    """A tmpfs mounted at ``path`` with ``options`` (``size=1m``: a small disk; ``ro``: a read-only mount), unmounted
    after the test; the case is skipped where this process may not mount (not root, or no mount namespace)."""
    path.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if res.returncode != 0:
        path.rmdir()
        pytest.skip(f"cannot mount a tmpfs here ({res.stderr.strip()[:80]})")
    request.addfinalizer(lambda: subprocess.run(["umount", "-l", str(path)], check=False))
    return path


def export_disk_full(tmp_path, request):
    disk = _mounted(tmp_path / "disk", request, "size=1m")
    out = disk / "model.safetensors"
    return Case(["export", str(_ckpt(request)), str(out)], [str(out), "no space left"])


def export_unwritable_out(tmp_path, request):
    blocker = _blocker(tmp_path)
    return Case(["export", str(_ckpt(request)), str(blocker / "model.safetensors")], [str(blocker)])


def demo_unwritable_out(tmp_path, request):
    blocker = _blocker(tmp_path)
    return Case(["demo", "--quick", "--out", str(blocker / "demo")], [str(blocker)])


def predict_unwritable_out(tmp_path, request):
    blocker = _blocker(tmp_path)
    good = _good_png(tmp_path / "good.png")
    argv = ["predict", "--ckpt", str(_ckpt(request)), str(good), "--out", str(blocker / "preds")]
    return Case(argv, [str(blocker)])


def report_unwritable_out(tmp_path, request):
    blocker = _blocker(tmp_path)
    run = request.getfixturevalue("tiny")
    return Case(["report", str(run), "--out", str(blocker / "report")], [str(blocker)])


def predict_existing_output(tmp_path, request):
    good = _good_png(tmp_path / "tile.png")
    out = tmp_path / "out"
    argv = ["predict", "--ckpt", str(_ckpt(request)), str(good), "--out", str(out), "--window", "64"]
    assert main(argv) == 0 and (out / "tile_pred.tif").is_file() and (out / "tile_pred.png").is_file()
    request.getfixturevalue("capsys").readouterr()
    return Case(argv, [str(out / "tile_pred.tif"), "--overwrite"])


def predict_disk_full(tmp_path, request):
    """The disk fills while the class map is streamed (the second row band): its partial file goes, one line."""
    import errno

    import ctseg.predict.write as pw

    src = tmp_path / "tall.tif"
    with rasterio.open(src, "w", driver="GTiff", height=256, width=64, count=3, dtype="uint8") as dst:
        dst.write(np.moveaxis(_rgb(256, 64), -1, 0))
    (tmp_path / "out").mkdir()
    real, calls = pw._write_block, []

    def full(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    request.getfixturevalue("monkeypatch").setattr(pw, "_write_block", full)
    argv = ["predict", "--ckpt", str(_ckpt(request)), str(src), "--out", str(tmp_path / "out"), "--window", "64"]
    return Case(argv, [str(tmp_path / "out" / "tall_pred.tif"), "no space left on device", "removed"])


def _corrupt_window_tif(bad: Path) -> Path:
    """A 512 × 256 tiled GeoTIFF whose tile in the middle (block row 1, column 2) is garbage."""
    with rasterio.open(bad, "w", driver="GTiff", height=512, width=256, count=3, dtype="uint8", tiled=True,
                       blockxsize=128, blockysize=128, compress="deflate") as dst:  # fmt: skip
        dst.write(np.moveaxis(_rgb(512, 256), -1, 0))
    with rasterio.open(bad) as src:
        offset, size = (int(src.get_tag_item(f"BLOCK_{k}_1_2", "TIFF", bidx=1)) for k in ("OFFSET", "SIZE"))
    raw = bytearray(bad.read_bytes())
    raw[offset : offset + size] = b"\xff" * size
    bad.write_bytes(bytes(raw))
    return bad


def predict_corrupt_window(tmp_path, request):
    """A tile in the middle of a GeoTIFF is garbage (header and last row fine): found mid-stream, one line naming
    the file and the window, nothing of that input left behind."""
    bad = _corrupt_window_tif(tmp_path / "city.tif")
    (tmp_path / "out").mkdir()
    argv = ["predict", "--ckpt", str(_ckpt(request)), str(bad), "--out", str(tmp_path / "out"), "--window", "64"]
    return Case(argv, [str(bad), "cannot be read at rows", "window row_off="])


def predict_disk_full_float16(tmp_path, request):
    """A real 5 MB disk: float16 probabilities and the confidence of a 640 × 640 scene do not fit. One line naming
    the output, the (new) --out folder removed again, no GDAL / libtiff message on stderr."""
    disk = _mounted(tmp_path / "disk", request, "size=5m")
    src = tmp_path / "scene.tif"
    with rasterio.open(src, "w", driver="GTiff", height=640, width=640, count=3, dtype="uint8") as dst:
        dst.write(np.moveaxis(_rgb(640, 640), -1, 0))
    out = disk / "preds"
    argv = ["predict", "--ckpt", str(_ckpt(request)), str(src), "--out", str(out), "--window", "128", "--probs",
            "float16", "--confidence"]  # fmt: skip
    return Case(argv, [str(out / "scene_"), "no space left"])


def predict_nodata_inf(tmp_path, request):
    good = _good_png(tmp_path / "good.png")
    argv = ["predict", "--ckpt", str(_ckpt(request)), str(good), "--nodata", "inf", "--out", str(tmp_path / "out")]
    return Case(argv, ["--nodata inf", "finite"])


def predict_fails_removes_out(tmp_path, request):
    """A window unreadable in the middle of the only input: the --out folders the run made (two levels) go again."""
    bad = _corrupt_window_tif(tmp_path / "city.tif")
    out = tmp_path / "preds" / "run1"
    argv = ["predict", "--ckpt", str(_ckpt(request)), str(bad), "--out", str(out), "--window", "64"]
    return Case(argv, [str(bad), "cannot be read at rows"])


def _folder(tmp_path: Path, **kwargs) -> Path:
    from helpers.make_folder import make_uint16_folder

    make_uint16_folder(tmp_path / "src", count=2, h=40, w=40, **kwargs)
    return tmp_path / "src"


def _prepare_folder(src: Path, dst: Path) -> list[str]:
    return ["prepare", "folder", "--src", str(src), "--classes", str(src / "classes.yaml"), "--dst", str(dst)]


def prepare_folder_image_without_mask(tmp_path, request):
    src = _folder(tmp_path)
    (src / "masks" / "scene_1.png").unlink()
    return Case(_prepare_folder(src, tmp_path / "dst"), [str(src / "images" / "scene_1.tif"), "has no mask"])


def prepare_folder_band_count_differs(tmp_path, request):
    src = _folder(tmp_path)
    image = src / "images" / "scene_1.tif"
    with rasterio.open(image, "w", driver="GTiff", height=40, width=40, count=3, dtype="uint16") as ds:
        ds.write(np.ones((3, 40, 40), np.uint16))
    return Case(_prepare_folder(src, tmp_path / "dst"), [str(image), "3 band(s)", "needs 4"], True)


def prepare_folder_duplicate_value(tmp_path, request):
    src = _folder(tmp_path)
    (src / "classes.yaml").write_text("classes:\n  - {name: a, value: 1}\n  - {name: b, value: 1}\n")
    return Case(_prepare_folder(src, tmp_path / "dst"), [str(src / "classes.yaml"), "value 1 is used by both"])


def _alias_bomb(levels: int = 12) -> str:
    """A few hundred bytes of YAML that expand to 9^levels names when aliases are followed."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + f"\nclasses:\n  - {{name: *a{levels - 1}, value: 1}}\nignore: *a{levels - 1}\n"


def prepare_folder_alias_bomb(tmp_path, request):
    src = _folder(tmp_path)
    (src / "classes.yaml").write_text(_alias_bomb())
    return Case(_prepare_folder(src, tmp_path / "dst"), [str(src / "classes.yaml"), "anchors (&name) are not read"])


def prepare_folder_nested_classes(tmp_path, request):
    src = _folder(tmp_path)
    (src / "classes.yaml").write_text("classes: " + "[" * 100_000 + "]" * 100_000 + "\n")
    return Case(_prepare_folder(src, tmp_path / "dst"), [str(src / "classes.yaml"), "nested over 64 levels"])


def prepare_folder_nan_statistics(tmp_path, request):
    src = _folder(tmp_path)
    classes = src / "classes.yaml"
    classes.write_text(classes.read_text() + "mean: [.nan, 0.5, 0.5, 0.5]\nstd: [.inf, 0.2, 0.2, 0.2]\n")
    return Case(_prepare_folder(src, tmp_path / "dst"), [str(classes), "mean values must be finite"])


def prepare_folder_undeclared_value(tmp_path, request):
    src = _folder(tmp_path)
    mask = src / "masks" / "scene_0.png"
    values = np.asarray(Image.open(mask)).copy()
    values[3, 4] = 42
    Image.fromarray(values).save(mask)
    return Case(_prepare_folder(src, tmp_path / "dst"), [str(mask), "label value 42", "row 3, col 4"], True)


def prepare_folder_disk_full(tmp_path, request):
    """A real 1 MB disk: two 400 × 400 4-band uint16 images (≈ 1.2 MB of crops each, incompressible noise) cut in
    the process pool. One line naming --dst and "no space left", however many workers hit the full disk; the
    temporary folder removed (nothing on the disk)."""
    from helpers.make_folder import make_uint16_folder

    make_uint16_folder(tmp_path / "src", count=2, h=400, w=400)
    dst = _mounted(tmp_path / "disk", request, "size=1m") / "prepared"
    return Case(_prepare_folder(tmp_path / "src", dst), [str(dst), "no space left"])


def prepare_folder_read_only_dst(tmp_path, request):
    src = _folder(tmp_path)
    ro = _mounted(tmp_path / "ro", request, "ro,size=1m")
    return Case(_prepare_folder(src, ro / "prepared"), [str(ro / "prepared"), str(ro), "read-only"])


def prepare_folder_nodata_inf(tmp_path, request):
    src = _folder(tmp_path)
    return Case([*_prepare_folder(src, tmp_path / "dst"), "--nodata", "inf"], ["--nodata inf", "finite"])


def prepare_folder_huge_crop(tmp_path, request):
    """Refused before any file is read (not the 7 TiB allocation of one padded crop)."""
    src = _folder(tmp_path)
    argv = [*_prepare_folder(src, tmp_path / "dst"), "--crop", "1000000"]
    return Case(argv, ["--crop 1000000", "at most 8192"])


def prepare_folder_dst_inside_src(tmp_path, request):
    """Else accepted: and with --overwrite the next run reads its own crops as a split called "prepared"."""
    src = _folder(tmp_path)
    return Case(_prepare_folder(src, src / "prepared"), [str(src / "prepared"), "inside the source folder"])


CASES: dict[str, Callable[..., Case]] = {
    "predict-corrupt-tif": predict_corrupt_tif,
    "predict-corrupt-png": predict_corrupt_png,
    "predict-truncated-jpeg": predict_truncated_jpeg,
    "predict-truncated-tif": predict_truncated_tif,
    "prepare-corrupt-tif": prepare_corrupt_tif,
    "prepare-truncated-tile": prepare_truncated_tile,
    "prepare-unknown-colour": prepare_unknown_colour,
    "prepare-size-mismatch": prepare_size_mismatch,
    "prepare-empty-src": prepare_empty_src,
    "prepare-wrong-src": prepare_wrong_src,
    "prepare-folder-image-without-mask": prepare_folder_image_without_mask,
    "prepare-folder-band-count-differs": prepare_folder_band_count_differs,
    "prepare-folder-duplicate-value": prepare_folder_duplicate_value,
    "prepare-folder-alias-bomb": prepare_folder_alias_bomb,
    "prepare-folder-nested-classes": prepare_folder_nested_classes,
    "prepare-folder-undeclared-value": prepare_folder_undeclared_value,
    "prepare-folder-nan-statistics": prepare_folder_nan_statistics,
    "prepare-folder-disk-full": prepare_folder_disk_full,
    "prepare-folder-read-only-dst": prepare_folder_read_only_dst,
    "prepare-folder-nodata-inf": prepare_folder_nodata_inf,
    "prepare-folder-huge-crop": prepare_folder_huge_crop,
    "prepare-folder-dst-inside-src": prepare_folder_dst_inside_src,
    "fit-missing-config": fit_missing_config,
    "fit-junk-ckpt-path": fit_junk_ckpt_path,
    "fit-gpu-without-cuda": fit_gpu_without_cuda,
    "fit-too-many-devices": fit_too_many_devices,
    "fit-bad-scheme-stage": fit_bad_scheme_stage,
    "fit-bad-hard-fraction": fit_bad_hard_fraction,
    "fit-negative-lr": fit_negative_lr,
    "fit-fractional-devices": fit_fractional_devices,
    "fit-image-size-not-multiple": fit_image_size_not_multiple,
    "fit-negative-max-steps": fit_negative_max_steps,
    "fit-read-only-root": fit_read_only_root,
    "fit-prepared-root-missing": fit_prepared_root_missing,
    "validate-other-class-count": validate_other_class_count,
    "validate-other-band-count": validate_other_band_count,
    "predict-16bit-to-8bit-model": predict_16bit_to_8bit_model,
    "predict-bands-out-of-range": predict_bands_out_of_range,
    "predict-index-png-over-input": predict_index_png_over_input,
    "predict-garbage-ckpt": predict_garbage_ckpt,
    "predict-foreign-ckpt": predict_foreign_ckpt,
    "export-garbage-ckpt": export_garbage_ckpt,
    "export-foreign-ckpt": export_foreign_ckpt,
    "export-unwritable-out": export_unwritable_out,
    "export-disk-full": export_disk_full,
    "demo-unwritable-out": demo_unwritable_out,
    "predict-unwritable-out": predict_unwritable_out,
    "report-unwritable-out": report_unwritable_out,
    "predict-existing-output": predict_existing_output,
    "predict-disk-full": predict_disk_full,
    "predict-corrupt-window": predict_corrupt_window,
    "predict-disk-full-float16": predict_disk_full_float16,
    "predict-nodata-inf": predict_nodata_inf,
    "predict-fails-removes-out": predict_fails_removes_out,
}
XFAIL: dict[str, str] = {}


def _params(names):
    return [
        pytest.param(name, id=name, marks=[pytest.mark.xfail(reason=XFAIL[name], strict=True)] if name in XFAIL else [])
        for name in names
    ]


# ------------------------------------------------------------------------------------------------- checks
def _snapshot(root: Path) -> dict[str, str]:
    """Relative path → content hash ("dir" for folders) of everything under ``root``."""
    return {
        str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
    }


def _check_stderr(err: str, case: Case) -> None:
    assert "Traceback" not in err, err
    lines = [seg.strip() for seg in re.split(r"[\r\n]+", err) if seg.strip()]
    assert lines, "nothing on stderr"
    error, before = lines[-1], lines[:-1]
    assert not before, f"stderr holds more than the error line:\n{err}"
    assert error.startswith("ctseg: error: "), err
    for needle in case.needles:
        assert needle in error, f"{needle!r} not in: {error}"


@pytest.mark.parametrize("name", _params(CASES))
def test_bad_input_in_process(name, tmp_path, request, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a command that fell back to a default output folder would write here
    case = CASES[name](tmp_path, request)
    capsys.readouterr()
    before = _snapshot(tmp_path)
    code = main(case.argv)
    err = capsys.readouterr().err
    assert code == 2, err
    _check_stderr(err, case)
    assert _snapshot(tmp_path) == before, "the failed command created, changed or removed files"


CONSOLE_CASES = [
    "prepare-unknown-colour",
    "predict-corrupt-png",
    "fit-prepared-root-missing",
    "prepare-folder-disk-full",  # the workers' stderr is the process's: no GDAL / libtiff line from any of them
    "predict-disk-full-float16",  # GDAL / libtiff print to the process's stderr: none of it may reach the user
]


@pytest.mark.parametrize("name", _params(CONSOLE_CASES))
def test_bad_input_console_script(name, tmp_path, request):
    """The installed ``ctseg`` script: the process's real exit code, and a clean stderr from a fresh interpreter."""
    case = CASES[name](tmp_path, request)
    before = _snapshot(tmp_path)
    exe = Path(sys.executable).with_name("ctseg")
    res = subprocess.run([str(exe), *case.argv], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    _check_stderr(res.stderr, case)
    assert _snapshot(tmp_path) == before, "the failed command created, changed or removed files"
