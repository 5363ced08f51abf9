"""The data-set registry: built-ins one file each, ``ctseg prepare --list``, a data set added from outside, no
import circle, and a prepare killed mid-way leaves nothing behind once the next prepare has run."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ctseg.cli.entry import main
from ctseg.data import PreparedDataset
from ctseg.data.definitions import DatasetInfo
from ctseg.data.prepare import prepare_dataset
from ctseg.data.registry import (
    CropSettings,
    DatasetSpec,
    SourceTile,
    get_dataset,
    list_datasets,
    register_dataset,
    unregister_dataset,
)

DATA = Path(__file__).resolve().parents[2] / "src" / "ctseg" / "data"


def _list() -> list[str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["prepare", "--list"]) == 0
    return out.getvalue().splitlines()


def test_builtins_are_registered_and_listed_one_line_each():
    names = {spec.name for spec in list_datasets()}
    assert {"potsdam", "vaihingen", "dubai", "folder", "synthetic"} <= names
    lines = _list()
    assert len(lines) == len(names) and all(len(line) < 200 for line in lines)
    listed = {line.split()[0] for line in lines}
    assert listed == names
    assert any(line.startswith("potsdam ") and "6 classes" in line for line in lines)
    assert get_dataset("Potsdam").info.name == "potsdam"


# A data set defined here, outside the package: 2 classes, masks are grey PNGs where 10 = a, 20 = b.
TOY = DatasetInfo(name="toy-set", classes=("a", "b"), colors=((1, 2, 3), (4, 5, 6)), label_values=(10, 20))


def _toy_discover(src, split_tiles, options):
    tiles = []
    for image in sorted((src / "pics").glob("*.png")):
        split = "test" if image.stem.endswith("9") else "train"
        tiles.append(SourceTile(image.stem, image.stem, split, image, src / "labels" / image.name, "mask"))
    return tiles, []


@pytest.fixture
def toy(tmp_path):
    spec = register_dataset(
        DatasetSpec(
            name="toy-set",
            summary="a test's own data set",
            info=TOY,
            crop=CropSettings(16, 16, None),
            discover=_toy_discover,
            layout="pics/*.png with labels/*.png",
        )  # fmt: skip
    )
    (tmp_path / "src" / "pics").mkdir(parents=True)
    (tmp_path / "src" / "labels").mkdir()
    rng = np.random.default_rng(0)
    for stem in ("x1", "x9"):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(
            tmp_path / "src" / "pics" / f"{stem}.png"
        )
        Image.fromarray(rng.choice(np.array([10, 20], np.uint8), (20, 24))).save(
            tmp_path / "src" / "labels" / f"{stem}.png"
        )
    yield spec, tmp_path / "src"
    unregister_dataset("toy-set")


def test_a_data_set_added_outside_appears_in_list_and_prepares(toy, tmp_path):
    spec, src = toy
    assert any(line.startswith("toy-set ") and "a test's own data set" in line for line in _list())
    prepare_dataset("toy-set", src, tmp_path / "out", workers=1, progress=False)
    ds = PreparedDataset(tmp_path / "out", "train")
    assert ds.info == TOY and len(ds) == 4  # 20 × 24 → rows 0, 4 × cols 0, 8
    label = np.asarray(Image.open(src / "labels" / "x1.png"))
    np.testing.assert_array_equal(ds[0]["mask"].numpy(), (label[:16, :16] == 20).astype(np.int64))
    with pytest.raises(ValueError, match="already registered"):
        register_dataset(DatasetSpec(name="toy-set", summary="another", info=TOY))


def test_no_data_module_longer_than_400_lines_and_no_import_circle():
    files = sorted(DATA.rglob("*.py"))
    long = {f.name: n for f in files if (n := len(f.read_text().splitlines())) > 400}
    assert not long, long
    # the generic machinery never imports a data set module; data set modules never import the driver
    for name in ("prepare.py", "crops.py", "raster.py", "labels.py", "manifest.py", "splits.py", "registry.py"):
        assert not [m for m in _imports(DATA / name) if m.startswith("ctseg.data.sets.")], name
    for f in (DATA / "sets").glob("*.py"):
        assert "ctseg.data.prepare" not in _imports(f), f.name


def _imports(path: Path) -> set[str]:
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


# ------------------------------------------------------------------------------------------------ SIGKILL
_SLOW_PREPARE = """
import sys, time
import ctseg.data.crops as crops
original = crops.cut_tile
def slow(*args, **kwargs):
    out = original(*args, **kwargs)
    time.sleep(0.3)
    return out
crops.cut_tile = slow
import ctseg.data.prepare as prepare
prepare.cut_tile = slow
prepare.prepare_dataset("folder", sys.argv[1], sys.argv[2], classes=sys.argv[3], crop=32, workers=1, progress=False)
"""


def test_a_killed_prepare_leaves_no_destination_and_the_next_one_cleans_up(tmp_path):
    from helpers.make_folder import make_uint16_folder

    src, dst = tmp_path / "src", tmp_path / "data" / "mine"
    make_uint16_folder(src, count=8, h=40, w=40)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_PREPARE, str(src), str(dst), str(src / "classes.yaml")], env=env
    )
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            tmps = list(dst.parent.glob("mine.tmp-*")) if dst.parent.exists() else []
            if tmps and len(list((tmps[0] / "masks").glob("*.png"))) >= 2:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the prepare never started writing")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
    assert not dst.exists()  # no partial destination
    (stale,) = dst.parent.glob("mine.tmp-*")
    assert json.loads((stale / ".ctseg-owner").read_text())["pid"] == proc.pid
    prepare_dataset("folder", src, dst, classes=src / "classes.yaml", crop=32, workers=1, progress=False)
    assert sorted(p.name for p in dst.parent.iterdir()) == ["mine"]  # the stale temporary folder is gone
    assert not (dst / ".ctseg-owner").exists() and len(PreparedDataset(dst, "train")) > 0


def _marked(mark: str) -> list[int]:
    """Processes whose environment holds ``mark`` (a prepare and every process it started)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if mark.encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
def test_a_killed_prepare_leaves_no_worker_behind(tmp_path):
    """SIGKILL of ``ctseg prepare`` while its pool cuts tiles: its workers (which would wait for work forever, or
    write into the temporary folder the next prepare deletes) are gone within seconds."""
    from helpers.make_folder import make_uint16_folder

    src, dst = tmp_path / "src", tmp_path / "mine"
    make_uint16_folder(src, count=6, h=400, w=400)
    mark = f"CTSEG_TEST_PREPARE_KILL={os.getpid()}_{time.time_ns()}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", mark.split("=")[0]: mark.split("=")[1]}
    argv = [sys.executable, "-m", "ctseg.cli", "prepare", "folder", "--src", str(src), "--classes",
            str(src / "classes.yaml"), "--dst", str(dst), "--crop", "32", "--workers", "2"]  # fmt: skip
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            tmps = list(tmp_path.glob("mine.tmp-*"))
            if tmps and len(_marked(mark)) >= 3 and any((tmps[0] / "masks").glob("*.png")):
                break  # the main process, its workers (and the fork server) run; crops are being written
            time.sleep(0.02)
        else:
            pytest.fail("the prepare never started writing")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        deadline = time.time() + 15
        while _marked(mark) and time.time() < deadline:
            time.sleep(0.1)
        left = _marked(mark)
    finally:
        proc.kill()
        for pid in _marked(mark):  # only on failure: the workers this test started
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    assert not left, f"processes of the killed prepare still run: {left}"
    assert not dst.exists()
