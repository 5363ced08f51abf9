"""``ctseg predict --runtime onnx`` (issue 33): the checkpoint exported once into the cache
(:mod:`ctseg.checkpoints.onnx_cache`), then run by onnxruntime — the same class map as predicting with the
explicit ``ctseg export`` file, and almost every pixel as PyTorch's."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from helpers.tiny import save_task_checkpoint

import ctseg.checkpoints.onnx_export as export_mod
from ctseg import __version__
from ctseg.checkpoints import onnx_cache
from ctseg.cli.entry import main

WINDOW = 64


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx-cache")
    ckpt = save_task_checkpoint(root / "m.ckpt", None, model="pf-tiny", img_size=WINDOW, seed=4)
    image = np.random.default_rng(0).integers(0, 256, (3, 100, 150), dtype=np.uint8)
    src = root / "scene.tif"
    with rasterio.open(src, "w", driver="GTiff", height=100, width=150, count=3, dtype="uint8") as dst:
        dst.write(image)
    return root, ckpt, src


def _predict(ckpt, src, out, *extra) -> np.ndarray:
    argv = ["predict", "--ckpt", str(ckpt), str(src), "--out", str(out), "--device", "cpu", "--window",
            str(WINDOW), "--no-color", *extra]  # fmt: skip
    assert main(argv) == 0
    with rasterio.open(out / "scene_pred.tif") as ds:
        return ds.read(1)


def test_runtime_onnx_exports_once_and_matches_the_explicit_export(setup, tmp_path, monkeypatch, capsys):
    root, ckpt, src = setup
    monkeypatch.setenv("CTSEG_CACHE_DIR", str(tmp_path / "cache"))
    calls = []
    original = export_mod.export_onnx

    def spy(*a, **k):
        calls.append(a)
        return original(*a, **k)

    monkeypatch.setattr(export_mod, "export_onnx", spy)
    first = _predict(ckpt, src, tmp_path / "a", "--runtime", "onnx")
    assert "exported m.ckpt to ONNX for --runtime onnx (window 64" in capsys.readouterr().err
    second = _predict(ckpt, src, tmp_path / "b", "--runtime", "onnx")
    assert len(calls) == 1 and "exported" not in capsys.readouterr().err  # the second run used the cache
    cached = list((tmp_path / "cache" / "onnx").glob("*.onnx"))
    assert len(cached) == 1 and cached[0].name.endswith(f"-w{WINDOW}-opset17-ctseg{__version__}.onnx")
    assert cached[0].name.startswith(onnx_cache.model_digest(ckpt)[:32])
    assert (tmp_path / "cache" / "onnx").stat().st_mode & 0o077 == 0  # the user's own folder
    via_file = _predict(cached[0], src, tmp_path / "c")  # the export as a --ckpt of its own
    assert np.array_equal(first, second) and np.array_equal(first, via_file)
    torch_map = _predict(ckpt, src, tmp_path / "d")
    assert np.mean(first == torch_map) > 0.999  # float32 sums in another order: ties may flip


def test_cache_keys_on_the_model_bytes_and_the_window(setup, tmp_path, monkeypatch):
    root, ckpt, _ = setup
    monkeypatch.setenv("CTSEG_CACHE_DIR", str(tmp_path / "cache"))
    made = []

    def fake_export(src, out, *, window, overwrite):  # the key is what is tested here, not the export
        made.append((src, window))
        out.write_bytes(b"onnx")
        return out

    monkeypatch.setattr(export_mod, "export_onnx", fake_export)
    a = onnx_cache.cached_onnx(ckpt, WINDOW)
    assert onnx_cache.cached_onnx(ckpt, WINDOW) == a
    b = onnx_cache.cached_onnx(ckpt, 2 * WINDOW)
    other = tmp_path / "other.ckpt"
    other.write_bytes(ckpt.read_bytes() + b"\0")  # one byte more: another model file
    c = onnx_cache.cached_onnx(other, WINDOW)
    assert len({a, b, c}) == 3 and all(p.is_file() for p in (a, b, c)) and len(made) == 3
    monkeypatch.delenv("CTSEG_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert onnx_cache.cache_dir() == tmp_path / "xdg" / "ctseg" / "onnx"


def test_unwritable_cache_and_bad_runtime_are_one_line(setup, tmp_path, monkeypatch, capsys):
    root, ckpt, src = setup
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("CTSEG_CACHE_DIR", str(blocker))
    out = tmp_path / "out"
    assert main(["predict", "--ckpt", str(ckpt), str(src), "--out", str(out), "--runtime", "onnx",
                 "--window", str(WINDOW)]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ctseg: error: the ONNX cache") and "CTSEG_CACHE_DIR" in err[0]
    assert not out.exists() or not any(out.iterdir())
    with pytest.raises(SystemExit) as info:
        main(["predict", "--ckpt", str(ckpt), str(src), "--out", str(out), "--runtime", "tensorrt"])
    assert info.value.code == 2


def test_old_exports_are_pruned_when_a_new_one_is_made(setup, tmp_path, monkeypatch):
    """Exports unused for 30 days (``$CTSEG_CACHE_MAX_AGE_DAYS``) go when another is made; a cache hit counts as a
    use; files not named like the cache's are never touched."""
    import os
    import time

    root, ckpt, _ = setup
    folder = tmp_path / "cache" / "onnx"
    folder.mkdir(parents=True)
    monkeypatch.setenv("CTSEG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(export_mod, "export_onnx", lambda src, out, *, window, overwrite: out.write_bytes(b"x"))
    month = 31 * 86400
    stale = folder / f"{'a' * 32}-w512-opset17-ctseg0.1.0.onnx"
    recent = folder / f"{'b' * 32}-w512-opset17-ctseg0.1.0.onnx"
    foreign = folder / "my-own-model.onnx"
    for path in (stale, recent, foreign):
        path.write_bytes(b"old")
    for path in (stale, foreign):
        os.utime(path, (time.time() - month, time.time() - month))
    hit = onnx_cache.cached_onnx(ckpt, WINDOW)  # a new export: prunes
    assert hit.is_file() and not stale.exists() and recent.exists() and foreign.exists()
    os.utime(hit, (time.time() - month, time.time() - month))
    assert onnx_cache.cached_onnx(ckpt, WINDOW) == hit and time.time() - hit.stat().st_mtime < 60  # used: touched
    monkeypatch.setenv("CTSEG_CACHE_MAX_AGE_DAYS", "0.5")
    os.utime(recent, (time.time() - 86400, time.time() - 86400))
    onnx_cache.cached_onnx(ckpt, 2 * WINDOW)  # another export, with a half-day limit
    assert not recent.exists() and hit.exists() and foreign.exists()


def test_an_existing_cache_folder_that_is_not_writable_is_one_line(setup, tmp_path, monkeypatch):
    root, ckpt, _ = setup
    (tmp_path / "cache" / "onnx").mkdir(parents=True)
    monkeypatch.setenv("CTSEG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(onnx_cache.os, "access", lambda path, mode: False)  # as for a user without write access
    with pytest.raises(onnx_cache.CtsegError, match="is not writable; set CTSEG_CACHE_DIR"):
        onnx_cache.cached_onnx(ckpt, WINDOW)
