"""Many files over many processes: torchrun / SLURM ranks, input lists, --skip-existing and resuming a killed job."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from test_predict_stream import RGB, geotiff, save_checkpoint

from ctseg.cli.entry import main
from ctseg.errors import CtsegError
from ctseg.predict.run import run_predict
from ctseg.predict.shard import Shard, detect_shard, read_input_list

#: The outputs of one input by default: class map, colour PNG, legend, the class map's GIS sidecars.
OUTPUTS = ("_pred.tif", "_pred.png", "_legend.png", "_pred.tif.aux.xml", "_pred.qml")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("shard-model") / "rgb.ckpt", RGB)


@pytest.fixture
def six(tmp_path) -> list[Path]:
    folder = tmp_path / "tiles"
    folder.mkdir()
    rng = np.random.default_rng(0)
    return [geotiff(folder / f"tile_{i}.tif", rng.integers(0, 256, (3, 48 + 8 * i, 64), dtype=np.uint8))
            for i in range(6)]  # fmt: skip


def _maps(folder: Path) -> dict[str, np.ndarray]:
    out = {}
    for path in sorted(folder.glob("*_pred.tif")):
        with rasterio.open(path) as src:
            out[path.name] = src.read(1)
    return out


def test_detect_shard():
    assert detect_shard({}) == Shard()
    assert detect_shard({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}) == Shard(3, 4, 1, "torchrun")
    assert detect_shard({"SLURM_NTASKS": "8", "SLURM_PROCID": "5", "SLURM_LOCALID": "1"}) == Shard(5, 8, 1, "slurm")
    torchrun_wins = {"WORLD_SIZE": "2", "RANK": "0", "SLURM_NTASKS": "8", "SLURM_PROCID": "5"}
    assert detect_shard(torchrun_wins) == Shard(0, 2, None, "torchrun")
    assert Shard(1, 3).take(list(range(8))) == [1, 4, 7]
    with pytest.raises(CtsegError, match="RANK=2 with WORLD_SIZE=2"):
        detect_shard({"WORLD_SIZE": "2", "RANK": "2"})
    with pytest.raises(CtsegError, match="SLURM_PROCID='x'"):
        detect_shard({"SLURM_NTASKS": "2", "SLURM_PROCID": "x"})


def test_read_input_list(tmp_path):
    listing = tmp_path / "lists" / "city.txt"
    listing.parent.mkdir()
    listing.write_text("# tiles of the city\n\n  a.tif  \n/data/b.tif\n# c.tif\nsub/d.vrt\n")
    assert read_input_list(listing) == [listing.parent / "a.tif", Path("/data/b.tif"), listing.parent / "sub/d.vrt"]
    with pytest.raises(CtsegError, match="--inputs .*nope.txt cannot be read"):
        read_input_list(tmp_path / "nope.txt")


def test_two_ranks_write_every_output_once(ckpt, six, tmp_path):
    """Rank r of 2 takes files r, r+2, r+4; together they write what one process writes."""
    kw = {"window": 64, "device": "cpu", "progress": False}
    single = run_predict(ckpt, six, tmp_path / "single", **kw)
    assert len(single) == 30  # a COG, its two sidecars, a colour PNG and its legend per file
    r0 = run_predict(ckpt, six, tmp_path / "ranks", shard=Shard(0, 2), **kw)
    r1 = run_predict(ckpt, six, tmp_path / "ranks", shard=Shard(1, 2), **kw)
    assert {p.name for p in r0} == {f"tile_{i}{e}" for i in (0, 2, 4) for e in OUTPUTS}
    assert {p.name for p in r1} == {f"tile_{i}{e}" for i in (1, 3, 5) for e in OUTPUTS}
    assert sorted(p.name for p in (tmp_path / "ranks").iterdir()) == sorted(p.name for p in single)
    a, b = _maps(tmp_path / "single"), _maps(tmp_path / "ranks")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_killed_job_resumes_with_skip_existing(ckpt, six, tmp_path, capsys, monkeypatch):
    import ctseg.predict.write as pw

    listing = tmp_path / "tiles.txt"
    listing.write_text("\n".join(f"tiles/{p.name}" for p in six) + "\n")  # relative to the list's folder
    out = tmp_path / "out"
    argv = ["predict", "--ckpt", str(ckpt), "--inputs", str(listing), "--out", str(out), "--window", "64"]
    real, calls = pw._write_block, []

    def killed(*args, **kwargs):  # the job is killed while the fourth file is being written
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(pw, "_write_block", killed)
    assert main(argv) == 2
    assert "interrupted" in capsys.readouterr().err
    done = sorted(p.name for p in out.iterdir())
    assert done == sorted(f"tile_{i}{e}" for i in range(3) for e in OUTPUTS)  # no partial file
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    monkeypatch.setattr(pw, "_write_block", real)
    assert main(argv) == 2  # a plain re-run refuses to replace the finished outputs
    assert "--overwrite" in capsys.readouterr().err
    assert main([*argv, "--skip-existing"]) == 0
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if "skipping" in line] == [
        f"ctseg predict: skipping {six[i]}: its outputs exist" for i in range(3)
    ]
    assert "ctseg predict: 3 files" in err and "; 3 skipped" in err
    assert len(list(out.iterdir())) == 30
    assert all(stamps[name] == (out / name).stat().st_mtime_ns for name in stamps)  # not rewritten
    (out / "tile_5_pred.png").unlink()  # an input with one output missing is redone
    assert main([*argv, "--skip-existing"]) == 0
    assert "ctseg predict: 1 file," in capsys.readouterr().err and len(list(out.iterdir())) == 30


@pytest.mark.slow  # ~10 s idle: two fresh interpreters import torch + timm
def test_torchrun_two_cpu_processes_gloo(ckpt, six, tmp_path):
    """``torchrun --nproc_per_node 2 -m ctseg.cli predict``: two CPU ranks (gloo group for the input check and
    the summary) over six files write each output once, as one process does."""
    listing = tmp_path / "tiles.txt"
    listing.write_text("\n".join(map(str, six)) + "\n")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "ctseg.cli",
           "predict", "--ckpt", str(ckpt), "--inputs", str(listing), "--out", str(tmp_path / "ranks"), "--window",
           "64", "--device", "cpu"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "[rank 0/2] ctseg predict: 3 files" in res.stderr and "[rank 1/2] ctseg predict: 3 files" in res.stderr
    assert "ctseg predict: all 2 ranks: 6 files" in res.stderr
    wrote = [line for line in res.stdout.splitlines() if line.startswith("wrote ")]
    assert len(wrote) == len(set(wrote)) == 30
    run_predict(ckpt, six, tmp_path / "single", window=64, device="cpu", progress=False)
    assert sorted(p.name for p in (tmp_path / "ranks").iterdir()) == sorted(
        p.name for p in (tmp_path / "single").iterdir()
    )
    a, b = _maps(tmp_path / "single"), _maps(tmp_path / "ranks")
    assert len(a) == 6 and a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
