"""The benchmark scripts run end to end on CPU at toy size (the GPU suite, benchmarks/gpu_suite.sh, chains them)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.paths import REPO

from ctseg.data.prepared import PreparedDataset

BENCH = REPO / "benchmarks"


def _run(script: str, *args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO / "src")}
    res = subprocess.run(
        [sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=timeout, env=env
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return res


@pytest.fixture(scope="module")
def synthetic_prepared(tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("bench") / "prepared"
    _run("make_prepared.py", str(dst), "--train", "6", "--test", "2", "--size", "64")
    return dst


def test_make_prepared_writes_a_prepared_folder(synthetic_prepared):
    train, test = PreparedDataset(synthetic_prepared, "train"), PreparedDataset(synthetic_prepared, "test")
    assert len(train) == 6 and len(test) == 2 and train.info.name == "synthetic"
    sample = train[0]
    assert sample["image"].shape == (3, 64, 64) and int(sample["mask"].max()) < 6


def test_loader_bench(synthetic_prepared, tmp_path):
    out = tmp_path / "loader.json"
    args = ["--data", str(synthetic_prepared), "--batch", "2", "--batches", "2", "--repeats", "1", "--workers", "0"]
    _run("loader_bench.py", *args, "--size", "64", "--also-png", "--json", str(out))
    res = json.loads(out.read_text())
    assert [(r["source"], r["workers"]) for r in res["results"]] == [("files", 0), ("files-png", 0), ("decoded", 0)]
    assert all(r["images_per_s"] > 0 for r in res["results"]) and "cores" in res["host"]
    assert res["cache_build_s"] > 0


def test_train_bench_cpu(synthetic_prepared, tmp_path):
    out = tmp_path / "train.json"
    args = ["--device", "cpu", "--model", "pf-tiny", "--batch", "2", "--size", "64", "--steps", "1", "--blocks", "1"]
    args += ["--warmup", "1", "--workers", "0", "--data", str(synthetic_prepared), "--decoded-cache"]
    _run("train_bench.py", *args, "--json", str(out))
    res = json.loads(out.read_text())
    assert res["device"].startswith("CPU") and res["decoded_cache"] is True
    assert res["ct_on"]["step_ms"] > 0 and res["ct_off"]["step_ms"] > 0 and res["time_ratio_on_off"] > 0
    assert res["train_gflop_per_image"] > 0 and res["pipeline"]["images_per_s"] > 0
    assert res["sync_debug_ct_loss"] == res["syncs_in_full_step"] == "not run (needs CUDA)"


def test_infer_bench_cpu(tmp_path):
    out = tmp_path / "infer.json"
    args = ["--device", "cpu", "--model", "pf-tiny", "--size", "160", "--window", "64", "--batch-size", "4"]
    _run("infer_bench.py", *args, "--repeats", "1", "--json", str(out))
    res = json.loads(out.read_text())
    assert res["tile"] == "160x160" and res["megapixels_per_s"] > 0


def test_gpu_suite_is_valid_bash():
    res = subprocess.run(["bash", "-n", str(BENCH / "gpu_suite.sh")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


@pytest.mark.slow  # subprocesses building a model: ~25 s; the default suite stays under 10 minutes
def test_ct_cost_reports_both_reductions():
    args = ["--model", "pf-tiny", "--size", "64", "--batch", "2", "--repeats", "1", "--warmup", "0"]
    lines = _run("ct_cost.py", *args, "--phases").stdout.splitlines()
    assert any(line.startswith("step CT off:") for line in lines)
    for r in ("paper", "mean"):
        [line] = [x for x in lines if x.startswith(f"step CT on, reduction={r}:")]
        assert float(line.split("ratio on/off: ")[1].split()[0]) > 0
        assert float(line.split("per round: ")[1]) > 0
        [phases] = [x for x in lines if x.startswith(f"phases, CT on ({r}):")]
        assert float(phases.split("ct_forward ")[1].split(",")[0]) > 0
    [off] = [x for x in lines if x.startswith("phases, CT off:")]
    assert "ct_forward 0.0," in off
    profiled = _run("ct_cost.py", *args, "--profile").stdout
    assert "aten::mm" in profiled and "ms per call" in profiled
    rule = r"matrix products ([\d.]+) GFLOP in ([\d.]+) ms \((\d+) GFLOP/s; one 2048³ sgemm here: (\d+)"
    fixed = re.search(rule, profiled)  # the heads' FLOPs (~0.09 GFLOP here), their time, the machine's rate
    assert fixed is not None and float(fixed[1]) > 0 and float(fixed[2]) > 0 and int(fixed[4]) > 0
    found = re.search(r"stage 0: (\d+) sampled patches, (\d+) distinct", profiled)
    assert found is not None
    sampled, distinct = int(found[1]), int(found[2])
    assert 0 < distinct <= sampled
    pooled = _run("ct_cost.py", *args, "--reduction", "paper", "--processes", "2").stdout
    assert pooled.count("step CT off:") == 2  # two fresh processes, each with its own report
    assert "--- over 2 processes (CT off " in pooled
    for stat in ("on/off", "per round"):
        line = re.search(
            rf"reduction=paper, {stat}: ([\d.]+) ([\d.]+)   median ([\d.]+), range ([\d.]+)–([\d.]+) \(50.0%\)$",
            pooled,
            re.MULTILINE,
        )
        assert line is not None, pooled
        first, second, median, low, high = (float(v) for v in line.groups())
        assert low == min(first, second) and high == max(first, second) and low <= median <= high


def test_median_interval_is_the_order_statistics_interval():
    spec = importlib.util.spec_from_file_location("_bench_common", BENCH / "common.py")  # no sys.path change
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    median_interval = common.median_interval
    five = [1.058, 1.052, 1.051, 1.045, 1.042]
    assert median_interval(five) == "range 1.042–1.058 (93.8%)"  # 1 − 2/2⁵; two values in from each end: 62.5 %
    ten = [*five, 1.069, 1.075, 1.050, 1.046, 1.065]
    # 1 − 2 (1 + 10 + 45) / 2¹⁰ = 89.1 % for the 3rd and 8th sorted values; the 4th and 7th hold it only at 65.6 %
    assert median_interval(ten) == "range 1.042–1.075 (99.8%), sorted values 3 and 8 of 10 1.046–1.065 (89.1%)"


@pytest.mark.slow  # a subprocess building a model and a 1024² COG: ~20 s
def test_remote_predict_reports_bytes_and_speed(tmp_path):
    out = tmp_path / "remote.json"
    args = ["--size", "1024", "--box", "128", "--offset", "300", "--window", "64", "--workdir", str(tmp_path)]
    _run("remote_predict.py", *args, "--json", str(out))
    res = json.loads(out.read_text())
    assert res["tiles"] == 1 and 1.0 <= res["fetched_per_tile_byte"] < 1.2  # one 512² tile and the header
    assert res["remote_mpx_s"] > 0 and res["local_mpx_s"] > 0 and res["machine"]["nproc"] >= 1


@pytest.mark.slow  # four whole predict processes and an ONNX export: ~60 s
def test_predict_process_compares_whole_processes(tmp_path):
    out = tmp_path / "pp.json"
    _run("predict_process.py", "--size", "512", "--repeats", "1", "--only", "goal,startup", "--work", str(tmp_path),
         "--json", str(out), timeout=600)  # fmt: skip
    res = json.loads(out.read_text())
    goal = res["goal"]
    assert set(goal["median"]) == {"naive", "ctseg", "ctseg-no-malloc", "ctseg-onnx"}
    assert all(m["wall_s"] > 0 and m["peak_rss_mb"] > 0 for m in goal["median"].values())
    # one window covers a 512² image: no blending, so the naive loop's map is ctseg's, pixel for pixel
    assert goal["naive_pixels_differing"] == 0 and goal["malloc_pixels_differing"] == 0
    assert goal["onnx_pixels_differing"] < 0.001 * goal["pixels"]
    assert set(res["startup"]["median"]) == {"lazy", "timm-imported"}


def test_crop_format_benchmark_runs_at_toy_size(tmp_path):
    out = tmp_path / "cf.json"
    _run("crop_format.py", "--synthetic", "2", "--multiband", "2", "--size", "64", "--repeats", "1", "--tmp",
         str(tmp_path), "--json", str(out))  # fmt: skip
    res = json.loads(out.read_text())
    assert res["ctseg_now"] == ".tif" and set(res["results"]) == {"synthetic", "multiband"}
    for name in ("png-1", "tiff-zstd1-pred-strip64", "ctseg-now"):
        row = res["results"]["synthetic"][name]
        assert row["write_ms"] > 0 and row["read_ms"] > 0 and row["kib"] > 0
    assert res["results"]["synthetic"]["png-1"]["size_vs_before"] == 1.0


def test_vectorize_speed_compares_ctseg_gdal_and_an_older_src():
    res = _run("vectorize_speed.py", "--size", "400", "--repeats", "1", "--before", "HEAD")
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["polygons"] == 100 and set(got["seconds"]) == {"gdal", "gdal_gpkg", "ctseg", "ctseg_1", "before"}
    assert got["ratio_to_gdal"]["gdal"] == 1.0 and all(v > 0 for v in got["polygons_per_s"].values())


@pytest.mark.slow  # pf-paper stage features and two CT losses, then 3 steps: ~35 s
def test_ct_before_after_against_this_checkout(tmp_path):
    res = _run("ct_before_after.py", "--before", str(REPO), "--repeats", "1", "--warmup", "0", "--threads", "1")
    check = next(line for line in res.stdout.splitlines() if line.startswith("loss before"))
    before, after = check.split()[2], check.split()[4].rstrip(";")
    assert before == after  # the same code on both sides: the same loss
    assert any(line.startswith("after: wall") and "per round" in line for line in res.stdout.splitlines())
    step = _run("ct_before_after.py", "--before", str(REPO), "--part", "step", "--phases", "--repeats", "1",
                "--warmup", "0", "--threads", "1").stdout.splitlines()  # fmt: skip
    assert any(line.startswith("before: wall") and "per round" in line for line in step)
    assert any(line.startswith("phases, after: forward") and "ct_forward" in line for line in step)


@pytest.mark.slow  # three child processes, each building pf-paper and running 3 steps: ~30 s
def test_omp_wait_times_each_policy():
    res = _run("omp_wait.py", "--burn", "0", "--steps", "1", "--rounds", "1")
    got = json.loads(res.stdout.strip().splitlines()[-1])
    level = got["levels"]["burn0"]
    assert set(level["wall_ms"]) == {"default", "passive", "spin1000"}
    assert all(len(v) == 1 and v[0] > 0 for v in level["wall_ms"].values())
    assert level["ratio_to_default"]["default"] == 1.0 and got["nproc"] >= 1
