"""Kills of ``ctseg predict`` and ``ctseg vectorize`` for real: SIGKILL at a random point of a multi-file predict,
at each rename (strace's fault injection), and the folders of dead and live processes.

What must hold after a kill anywhere: every input's outputs are complete or absent — or, when the kill fell
between the renames of a sealed set, its staging folder holds the completion record, so the next run finishes
it (:mod:`ctseg.predict.stage`) — and after the next run nothing temporary is left and ``--skip-existing`` has
done the rest. The killed processes are the installed ``ctseg`` script (a fresh interpreter each, ~5 s of
imports); the runs after them are in-process.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image
from test_predict_stream import RGB, geotiff, save_checkpoint

from ctseg.cli.entry import main
from ctseg.predict.stage import PREFIX, RECORD, Stage

CTSEG = Path(sys.executable).with_name("ctseg")
#: The outputs of one input with ``ARGS``: the class map, probabilities, confidence, colour PNG, polygons, the
#: legend and the class map's GIS sidecars.
KINDS = ("_pred.tif", "_probs.tif", "_conf.tif", "_pred.png", ".gpkg", "_legend.png", "_pred.tif.aux.xml", "_pred.qml")
ARGS = ["--window", "64", "--device", "cpu", "--confidence", "--probs", "uint8", "--vector", ".gpkg",
        "--vector-classes", "0,1"]  # fmt: skip
RENAMES = "rename,renameat,renameat2"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("kill-model") / "rgb.ckpt", RGB)


def _inputs(folder: Path, n: int, size: int = 128) -> list[Path]:
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(n)
    return [geotiff(folder / f"scene_{i}.tif", rng.integers(0, 256, (3, size, size), dtype=np.uint8)) for i in range(n)]


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"}


def _argv(ckpt: Path, inputs: list[Path], out: Path, *extra: str) -> list[str]:
    return ["predict", "--ckpt", str(ckpt), *map(str, inputs), "--out", str(out), *ARGS, *extra]


def _staging(out: Path, stem: str) -> list[Path]:
    return sorted(out.glob(f"{PREFIX}{stem}-*"))


def _check_after_kill(out: Path, stems: list[str]) -> dict[str, str]:
    """Each stem's outputs: "complete", "absent", or "sealed" (some in place, the rest in a staging folder with
    its completion record, which the next run finishes). Returns the states."""
    states = {}
    for stem in stems:
        there = [(out / f"{stem}{k}").is_file() for k in KINDS]
        sealed = [s for s in _staging(out, stem) if (s / RECORD).is_file()]
        if all(there):
            states[stem] = "complete"
        elif not any(there) and not sealed:
            states[stem] = "absent"
        else:
            assert sealed, f"{stem}: a partial output set without a completion record: {sorted(os.listdir(out))}"
            for kind in KINDS:  # each file is in place or still staged
                assert (out / f"{stem}{kind}").is_file() or (sealed[0] / f"{stem}{kind}").is_file(), (stem, kind)
            states[stem] = "sealed"
    return states


def _check_final(out: Path, stems: list[str]) -> None:
    """Every output in place and readable, nothing temporary left in ``out``."""
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{s}{k}" for s in stems for k in KINDS)
    for stem in stems:
        for kind in ("_pred.tif", "_probs.tif", "_conf.tif"):
            with rasterio.open(out / f"{stem}{kind}") as src:
                assert src.read().shape[1:] == (src.height, src.width)
        Image.open(out / f"{stem}_pred.png").load()


def _strace_or_skip() -> None:
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    res = subprocess.run(["strace", "-f", "-qq", "-o", os.devnull, "-e", f"inject={RENAMES}:error=EPERM:when=1000",
                          "true"], capture_output=True, text=True)  # fmt: skip
    if res.returncode != 0:
        pytest.skip(f"strace cannot trace here ({res.stderr.strip()[:100]})")


def _rerun(ckpt, inputs, out, capsys) -> str:
    capsys.readouterr()
    assert main(_argv(ckpt, inputs, out, "--skip-existing")) == 0
    return capsys.readouterr().err


def _skipped(err: str) -> int:
    return sum("skipping" in line for line in err.splitlines())


# ------------------------------------------------------------------------------------------ random SIGKILL
def test_sigkill_at_a_random_point_of_a_multi_file_predict(ckpt, tmp_path, capsys):
    """Six files; SIGKILL while the third one or a later one is written (a random delay after its staging folder
    appears, scaled by how long the first two took)."""
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    inputs = _inputs(tmp_path / "in", 6)
    stems = [p.stem for p in inputs]
    out = tmp_path / "out"
    argv = [str(CTSEG), *_argv(ckpt, inputs, out)]
    proc = subprocess.Popen(argv, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        seen: dict[str, float] = {}
        while "scene_2" not in seen and proc.poll() is None and time.monotonic() < deadline:
            for stem in ("scene_0", "scene_2"):
                if stem not in seen and out.is_dir() and _staging(out, stem):
                    seen[stem] = time.monotonic()
            time.sleep(0.002)
        per_file = (seen["scene_2"] - seen.get("scene_0", seen["scene_2"] - 1.0)) / 2 if "scene_2" in seen else 0
        time.sleep(rng.uniform(0.0, 3.0) * per_file)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"seed {seed}: the run ended before the kill ({proc.returncode}): {err}"
    states = _check_after_kill(out, stems)
    assert states["scene_0"] == states["scene_1"] == "complete", (seed, states)
    err = _rerun(ckpt, inputs, out, capsys)
    _check_final(out, stems)
    done_before = sum(s != "absent" for s in states.values())  # complete, or completed by this run's recovery
    assert _skipped(err) == done_before, (seed, states, err)
    assert f"ctseg predict: {6 - done_before} file" in err, (seed, err)


# ------------------------------------------------------------------------------------------ SIGKILL at renames
def _count_renames(ckpt: Path, inputs: list[Path], out: Path, log: Path) -> int:
    cmd = ["strace", "-f", "-qq", "-o", str(log), "-e", f"trace={RENAMES}", str(CTSEG), *_argv(ckpt, inputs, out)]
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    return sum(1 for line in log.read_text().splitlines() if "rename" in line and "= 0" in line)


def _kill_at_rename(ckpt: Path, inputs: list[Path], out: Path, n: int) -> int:
    cmd = ["strace", "-f", "-qq", "-o", os.devnull, "-e", f"inject={RENAMES}:signal=KILL:when={n}", str(CTSEG),
           *_argv(ckpt, inputs, out)]  # fmt: skip
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300).returncode


def _after_rename_kill(ckpt, inputs, out, n, capsys) -> None:
    stems = [p.stem for p in inputs]
    states = _check_after_kill(out, stems)
    err = _rerun(ckpt, inputs, out, capsys)
    _check_final(out, stems)
    assert _skipped(err) == sum(s != "absent" for s in states.values()), (n, states, err)


def test_sigkill_between_the_renames_of_one_set(ckpt, tmp_path, capsys):
    """The issue's case: killed between the renames of one input's outputs (the fourth rename: vectorize's own in the
    staging folder, the completion record, the class map, then the probabilities): the class map is in place, the
    rest still staged; the next run completes the set and skips it."""
    _strace_or_skip()
    inputs = _inputs(tmp_path / "in", 2)
    out = tmp_path / "out"
    rc = _kill_at_rename(ckpt, inputs, out, 4)
    assert rc != 0
    assert (out / "scene_0_pred.tif").is_file() and not (out / "scene_0_probs.tif").exists()
    assert _check_after_kill(out, ["scene_0", "scene_1"]) == {"scene_0": "sealed", "scene_1": "absent"}
    _after_rename_kill(ckpt, inputs, out, 4, capsys)


@pytest.mark.slow  # one fresh interpreter per rename (20 of them, two at a time): ~2 min
def test_sigkill_at_each_rename(ckpt, tmp_path, capsys):
    """strace -e inject=rename…:signal=KILL:when=N for every rename N of a two-file predict."""
    _strace_or_skip()
    inputs = _inputs(tmp_path / "in", 2)
    total = _count_renames(ckpt, inputs, tmp_path / "count", tmp_path / "renames.log")
    assert total >= 2 * len(KINDS)  # every output is renamed into place, and more (records, vectorize's own)
    outs = {n: tmp_path / f"out{n}" for n in range(1, total + 1)}
    with ThreadPoolExecutor(2) as pool:
        codes = dict(zip(outs, pool.map(lambda n: _kill_at_rename(ckpt, inputs, outs[n], n), outs), strict=True))
    for n, out in outs.items():
        assert codes[n] == -signal.SIGKILL or codes[n] == 128 + signal.SIGKILL, (n, codes[n])
        _after_rename_kill(ckpt, inputs, out, n, capsys)


# ------------------------------------------------------------------------------------------ dead and live folders
def test_dead_folders_roll_forward_or_back_and_live_ones_are_kept(ckpt, tmp_path, capsys):
    """In process: a sealed folder of a dead process is finished, an unsealed one deleted, a live one (its lock
    held here) neither touched nor trusted by ``--skip-existing``; stale files of older versions go."""
    inputs = _inputs(tmp_path / "in", 3, size=64)
    out = tmp_path / "out"
    assert main(_argv(ckpt, inputs, tmp_path / "ref")) == 0
    out.mkdir()
    sealed = Stage(out, "scene_0")  # scene_0: sealed, two files already renamed, then "killed"
    for kind in KINDS:
        shutil.copy(tmp_path / "ref" / f"scene_0{kind}", sealed.staged(out / f"scene_0{kind}"))
    sealed.seal([out / f"scene_0{k}" for k in KINDS], shown=out / "scene_0_pred.tif")
    for kind in KINDS[:2]:
        os.replace(sealed.staged(out / f"scene_0{kind}"), out / f"scene_0{kind}")
    sealed._folder.release()  # what a kill does to the lock
    unsealed = Stage(out, "scene_1")  # scene_1: half written, "killed"
    (unsealed.dir / "scene_1_pred.tif").write_bytes(b"half")
    unsealed._folder.release()
    for kind in KINDS:  # scene_2: complete, but a live process is writing it again
        shutil.copy(tmp_path / "ref" / f"scene_2{kind}", out / f"scene_2{kind}")
    live = Stage(out, "scene_2")
    old = out / ".scene_2_probs.ab12cd34.part.tif"  # an older ctseg's temporary file, an hour old
    old.write_bytes(b"partial")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    capsys.readouterr()
    assert main(_argv(ckpt, inputs, out, "--skip-existing")) == 0
    err = capsys.readouterr().err
    assert "completed the outputs of scene_0" in err and "removed 1 unfinished output set" in err
    assert "skipping" in err and str(inputs[0]) in err and str(inputs[2]) not in err  # scene_2 is redone
    assert live.dir.is_dir() and sorted(os.listdir(live.dir)) == ["lock"]  # the live folder: untouched
    assert not old.exists() and not sealed.dir.exists() and not unsealed.dir.exists()
    for kind in KINDS:
        assert (out / f"scene_0{kind}").read_bytes() == (tmp_path / "ref" / f"scene_0{kind}").read_bytes()
    live.discard()
    _check_final(out, ["scene_0", "scene_1", "scene_2"])


def test_two_parallel_predicts_into_one_folder(ckpt, tmp_path):
    """Two processes over the same inputs into one folder: both succeed, every set is whole, nothing is left."""
    inputs = _inputs(tmp_path / "in", 4)
    out = tmp_path / "out"
    argv = [str(CTSEG), *_argv(ckpt, inputs, out, "--overwrite")]
    procs = [subprocess.Popen(argv, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]  # fmt: skip
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
    _check_final(out, [p.stem for p in inputs])


# ------------------------------------------------------------------------------------------ vectorize
def test_vectorize_killed_at_its_rename_is_cleaned_by_the_next_run(tmp_path):
    """SIGKILL at vectorize's rename leaves its locked work folder (with the whole GeoPackage); the next vectorize
    into that folder deletes it. A live process's folder and an older version's recent one stay."""
    _strace_or_skip()
    from vectorize.test_vectorize import _class_map, _write

    from ctseg.staging import LockedFolder
    from ctseg.vectorize.io import WORK_PREFIX

    pred = _write(tmp_path / "scene_pred.tif", _class_map())
    out = tmp_path / "polys"
    out.mkdir()
    cmd = ["strace", "-f", "-qq", "-o", os.devnull, "-e", f"inject={RENAMES}:signal=KILL:when=1", str(CTSEG),
           "vectorize", str(pred), "--classes", "building", "--out", str(out / "v.gpkg")]  # fmt: skip
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode != 0, res.stderr
    left = [p for p in out.iterdir() if p.name.startswith(WORK_PREFIX)]
    assert len(left) == 1 and (left[0] / "v.gpkg").stat().st_size > 0 and not (out / "v.gpkg").exists()
    live = LockedFolder(out, WORK_PREFIX)
    recent = out / ".v.ab12cd34"  # an older version's work folder, seconds old: maybe still written
    recent.mkdir()
    (recent / "v.gpkg").write_bytes(b"gpkg")
    old = out / ".v.zz12cd34"  # and one an hour old: dead
    old.mkdir()
    (old / "v.gpkg").write_bytes(b"gpkg")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    assert main(["vectorize", str(pred), "--classes", "building", "--out", str(out / "v.gpkg")]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted([live.path.name, recent.name, "v.gpkg"])
    live.remove()


def test_export_killed_at_its_rename_is_cleaned_by_the_next_write(ckpt, tmp_path):
    """``ctseg export`` (every atomic_path write: report files, results.json …) killed at its rename leaves its
    locked work folder and no final file; the next write into that folder removes the dead folder."""
    _strace_or_skip()
    from ctseg.io import ATOMIC_PREFIX

    out = tmp_path / "models"
    out.mkdir()
    # safetensors renames its own temporary file with renameat(2); Python's os.replace into place is rename(2)
    cmd = ["strace", "-f", "-qq", "-o", os.devnull, "-e", "inject=rename:signal=KILL:when=1", str(CTSEG),
           "export", str(ckpt), str(out / "m.safetensors")]  # fmt: skip
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode != 0, res.stderr
    left = [p for p in out.iterdir() if p.name.startswith(ATOMIC_PREFIX)]
    assert len(left) == 1 and (left[0] / "m.safetensors").stat().st_size > 0 and not (out / "m.safetensors").exists()
    assert main(["export", str(ckpt), str(out / "m.safetensors")]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["m.safetensors"]
