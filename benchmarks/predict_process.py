"""``ctseg predict`` as a whole process against a naive loop, and what the CPU work of issue 33 saves.

    python benchmarks/predict_process.py [--size 3000] [--repeats 5] [--json out.json]
    python benchmarks/predict_process.py --only startup,fit,prepare     # the other measurements

Every variant is a fresh process (``subprocess`` + ``os.wait4``: wall clock, user / system CPU, minor page faults
and peak RSS of the child), the variants alternating within each repeat, medians reported with the load average
before and after. Linux counts the RSS a child had when forked (this process's) into its ``ru_maxrss``, so this
process never imports torch: ``parent_rss_mb`` in the JSON is that floor. Measurements (``--only``, default all):

* ``goal`` — a ``--size``² RGB GeoTIFF (a mosaic of the Dubai validation images when ``../shared`` is there, else
  noise; window 512, overlap 0.25, batch 8, CPU, the shipped ``results/dubai/models/cl.safetensors``):
  ``naive`` (this script's :func:`naive`: read the raster whole, normalise, forward per batch of windows under
  ``torch.inference_mode``, argmax per window written over the map — no blending —, a plain GeoTIFF),
  ``ctseg`` (``ctseg predict … --no-color``: blended, streamed, a COG with overviews), ``ctseg-no-malloc``
  (``CTSEG_MALLOC_TUNING=0``: glibc's default thresholds) and ``ctseg-onnx`` (``--runtime onnx``, its export
  cached by one untimed run first). Also the pixels where the ONNX map differs from the PyTorch one.
* ``startup`` — ``ctseg predict --ckpt x.onnx`` on a 512² image: as it is (timm and torchvision never imported)
  and with both imported first (what every ONNX run paid before ``ctseg.models`` became lazy).
* ``fit`` — training steps (``benchmarks/train_bench.py``'s step: pf-tiny, batch 8, 192², fp32, CT off and CT-CL,
  synthetic batch, AdamW, grad clip) in a child process with the allocator tuned
  (:func:`ctseg.cli.allocator.tune_allocator`, as every ``ctseg`` command does) and with ``CTSEG_MALLOC_TUNING=0``.
* ``prepare`` — ``ctseg prepare dubai`` of the shared Dubai set into a fresh folder (default workers: all cores),
  tuned and ``CTSEG_MALLOC_TUNING=0``; CPU times count the workers (children waited for by the command).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "dubai-aerial"
CTSEG = [sys.executable, "-m", "ctseg.cli"]


def run(argv: list[str], env: dict[str, str] | None = None) -> dict[str, float]:
    """Run ``argv`` as a child process; its wall seconds, CPU seconds, minor faults and peak RSS (MiB)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)  # fmt: skip
    err = proc.stderr.read() if proc.stderr else b""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{err.decode(errors='replace')[-2000:]}")
    return {"wall_s": wall, "user_s": usage.ru_utime, "sys_s": usage.ru_stime, "minor_faults": usage.ru_minflt,
            "peak_rss_mb": usage.ru_maxrss / 1024}  # fmt: skip


def load() -> float:
    return os.getloadavg()[0]


def make_raster(path: Path, size: int) -> Path:
    """A ``size``² RGB GeoTIFF (tiled 512², DEFLATE, UTM): Dubai validation images side by side, else noise."""
    import rasterio
    from PIL import Image
    from rasterio.transform import from_origin

    data = np.zeros((3, size, size), np.uint8)
    images = sorted(SHARED.glob("tile1/images/*.jpg")) if SHARED.is_dir() else []
    if images:
        y = x = row_h = 0
        k = 0
        while y < size:
            im = np.asarray(Image.open(images[k % len(images)]).convert("RGB")).transpose(2, 0, 1)
            k += 1
            h, w = min(im.shape[1], size - y), min(im.shape[2], size - x)
            data[:, y : y + h, x : x + w] = im[:, :h, :w]
            row_h = max(row_h, h)
            x += w
            if x >= size:
                x, y, row_h = 0, y + row_h, 0
    else:
        data[:] = np.random.default_rng(0).integers(0, 256, data.shape, dtype=np.uint8)
    profile = {"driver": "GTiff", "height": size, "width": size, "count": 3, "dtype": "uint8", "tiled": True,
               "blockxsize": 512, "blockysize": 512, "compress": "deflate", "crs": "EPSG:32640",
               "transform": from_origin(300_000.0, 2_800_000.0, 0.3, 0.3)}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def naive(src: str, ckpt: str, out: str, window: int = 512, overlap: float = 0.25, batch: int = 8) -> None:
    """The naive loop (module docstring), as a user would write it around ctseg's model loader."""
    import rasterio
    import torch

    from ctseg.checkpoints.files import load_model
    from ctseg.inference.blend import window_positions
    from ctseg.predict.inputs import resolve_info

    loaded = load_model(ckpt, device="cpu")
    model = loaded.model.eval()
    info = resolve_info(loaded, Path(ckpt), None)  # the normalisation ctseg predict uses
    with rasterio.open(src) as ds:
        image = ds.read()
        profile = {"driver": "GTiff", "height": ds.height, "width": ds.width, "count": 1, "dtype": "uint8",
                   "crs": ds.crs, "transform": ds.transform}  # fmt: skip
    x = torch.from_numpy(image).float().div_(255)
    mean = torch.tensor(info.mean).view(-1, 1, 1)
    std = torch.tensor(info.std).view(-1, 1, 1)
    x = (x - mean) / std
    ys = window_positions(image.shape[1], window, overlap)
    xs = window_positions(image.shape[2], window, overlap)
    jobs = [(y, x0) for y in ys for x0 in xs]
    pred = np.zeros(image.shape[1:], np.uint8)
    with torch.inference_mode():
        for i in range(0, len(jobs), batch):
            part = jobs[i : i + batch]
            windows = torch.stack([x[:, y : y + window, x0 : x0 + window] for y, x0 in part])
            classes = model(windows).argmax(1).to(torch.uint8).numpy()
            for (y, x0), c in zip(part, classes, strict=True):
                pred[y : y + window, x0 : x0 + window] = c
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(pred, 1)


def summarise(samples: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    return {name: {key: statistics.median(s[key] for s in runs) for key in runs[0]} for name, runs in samples.items()}


def alternate(variants: dict[str, tuple[list[str], dict[str, str]]], repeats: int) -> dict:
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    before = load()
    for r in range(repeats):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        for name in order:
            argv, env = variants[name]
            samples[name].append(run(argv, env))
    return {"load_before": before, "load_after": load(), "repeats": repeats, "median": summarise(samples),
            "wall_s_all": {n: [round(s["wall_s"], 3) for s in v] for n, v in samples.items()}}  # fmt: skip


def goal(args, work: Path) -> dict:
    import rasterio

    src = make_raster(work / f"scene{args.size}.tif", args.size)
    common = [str(src), "--ckpt", args.ckpt, "--window", "512", "--overlap", "0.25", "--batch-size", "8",
              "--no-color", "--device", "cpu", "--overwrite"]  # fmt: skip
    cache = {"CTSEG_CACHE_DIR": str(work / "cache")}
    run([*CTSEG, "predict", *common, "--out", str(work / "onnx"), "--runtime", "onnx"], cache)  # export once
    variants = {
        "naive": ([sys.executable, __file__, "--naive", str(src), args.ckpt, str(work / "naive.tif")], {}),
        "ctseg": ([*CTSEG, "predict", *common, "--out", str(work / "torch")], {}),
        "ctseg-no-malloc": ([*CTSEG, "predict", *common, "--out", str(work / "plain")], {"CTSEG_MALLOC_TUNING": "0"}),
        "ctseg-onnx": ([*CTSEG, "predict", *common, "--out", str(work / "onnx"), "--runtime", "onnx"], cache),
    }
    result = alternate(variants, args.repeats)
    med = result["median"]
    result["ratio_to_naive"] = {n: med[n]["wall_s"] / med["naive"]["wall_s"] for n in med}
    maps = {}
    for name in ("torch", "onnx", "plain"):
        with rasterio.open(work / name / f"{src.stem}_pred.tif") as ds:
            maps[name] = ds.read(1)
    result["onnx_pixels_differing"] = int((maps["torch"] != maps["onnx"]).sum())
    result["malloc_pixels_differing"] = int((maps["torch"] != maps["plain"]).sum())
    with rasterio.open(work / "naive.tif") as ds:  # equal where one window covers the image (no blending)
        result["naive_pixels_differing"] = int((maps["torch"] != ds.read(1)).sum())
    result["pixels"] = int(maps["torch"].size)
    return result


def startup(args, work: Path) -> dict:
    src = make_raster(work / "small.tif", 512)
    model = work / "model.onnx"
    if not model.exists():  # in a child: this process stays small (module docstring: peak RSS)
        run([*CTSEG, "export", args.ckpt, str(model), "--window", "512"])
    argv = ["predict", str(src), "--ckpt", str(model), "--out", str(work / "startup"), "--no-color", "--device",
            "cpu", "--overwrite"]  # fmt: skip
    eager = "import sys, timm, torchvision; from ctseg.cli.entry import main; sys.exit(main(sys.argv[1:]))"
    variants = {"lazy": ([*CTSEG, *argv], {}), "timm-imported": ([sys.executable, "-c", eager, *argv], {})}
    result = alternate(variants, args.repeats)
    med = result["median"]
    result["saving_s"] = med["timm-imported"]["wall_s"] - med["lazy"]["wall_s"]
    return result


def fit_child(out: str) -> None:
    """One child of ``fit``: the allocator step of every ctseg command, then CT-off and CT-CL step medians."""
    import argparse as ap

    import torch

    from ctseg.cli.allocator import tune_allocator

    tune_allocator()  # a no-op with CTSEG_MALLOC_TUNING=0
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import blocky_masks
    from train_bench import step_times

    args = ap.Namespace(model="pf-tiny", size=192, scheme="ct-cl", channels_last=False, compile=False, warmup=2,
                        blocks=3, steps=3)  # fmt: skip
    batch = {"image": torch.randn(8, 3, 192, 192), "mask": blocky_masks(8, 192, 6)}
    results, _ = step_times(args, torch.device("cpu"), None, batch)
    Path(out).write_text(json.dumps({s: r["step_ms"] for s, r in results.items()}))


def fit(args, work: Path) -> dict:
    samples: dict[str, list[dict]] = {"tuned": [], "default": []}
    before = load()
    for r in range(args.repeats):
        for name in ("tuned", "default") if r % 2 == 0 else ("default", "tuned"):
            out = work / f"fit-{name}.json"
            env = {"CTSEG_MALLOC_TUNING": "1" if name == "tuned" else "0"}
            usage = run([sys.executable, __file__, "--fit-child", str(out)], env)
            doc = json.loads(out.read_text())
            samples[name].append({**usage, "step_off_ms": doc["none"], "step_on_ms": doc["ct-cl"]})
    med = summarise(samples)
    return {"load_before": before, "load_after": load(), "repeats": args.repeats, "median": med,
            "step_off_ratio_tuned_to_default": med["tuned"]["step_off_ms"] / med["default"]["step_off_ms"],
            "step_on_ratio_tuned_to_default": med["tuned"]["step_on_ms"] / med["default"]["step_on_ms"]}  # fmt: skip


def prepare(args, work: Path) -> dict:
    """Whole ``ctseg prepare dubai`` processes into a fresh folder each (a prepared folder is otherwise reused)."""
    import shutil

    if not SHARED.is_dir():
        return {"skipped": f"{SHARED} is not there"}
    samples: dict[str, list[dict]] = {"tuned": [], "default": []}
    before = load()
    for r in range(args.repeats):
        for name in ("tuned", "default") if r % 2 == 0 else ("default", "tuned"):
            dst = work / f"prep-{name}"
            shutil.rmtree(dst, ignore_errors=True)
            env = {"CTSEG_MALLOC_TUNING": "1" if name == "tuned" else "0"}
            samples[name].append(run([*CTSEG, "prepare", "dubai", "--src", str(SHARED), "--dst", str(dst)], env))
    med = summarise(samples)
    return {"load_before": before, "load_after": load(), "repeats": args.repeats, "median": med,
            "wall_s_all": {n: [round(s["wall_s"], 3) for s in v] for n, v in samples.items()},
            "ratio_tuned_to_default": med["tuned"]["wall_s"] / med["default"]["wall_s"]}  # fmt: skip


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--naive":
        naive(*sys.argv[2:5])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--fit-child":
        fit_child(sys.argv[2])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--ckpt", default=str(REPO / "results" / "dubai" / "models" / "cl.safetensors"))
    ap.add_argument("--work", default="/tmp/predict-process")
    ap.add_argument("--only", default="goal,startup,fit,prepare")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               "unknown CPU") if Path("/proc/cpuinfo").exists() else "unknown CPU"  # fmt: skip
    result = {"machine": f"{cpu}, {os.cpu_count()} cores", "size": args.size}
    for name in args.only.split(","):
        result[name] = {"goal": goal, "startup": startup, "fit": fit, "prepare": prepare}[name](args, work)
        result[name]["parent_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if "torch" in sys.modules:
            raise SystemExit("predict_process.py imported torch: the children's peak RSS would count it")
        print(json.dumps({name: result[name]}, indent=1), file=sys.stderr, flush=True)
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
