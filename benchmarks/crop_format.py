"""Prepared crop formats: write time, read time and disk size per candidate, alternating, on real and synthetic crops.

    python benchmarks/crop_format.py --data data/dubai --synthetic 64 --repeats 5 --json /tmp/crop_format.json

``ctseg prepare`` spends most of its time encoding crops (issue 33: 72 % of a one-worker Dubai prepare was PNG
level-1 encoding). This measures, per candidate format, on the same crops:

- ``write_ms``: encoding one image crop and writing its bytes to a file (what :class:`ctseg.data.crops.CropWriter`
  does per crop; the OS page cache takes the bytes, as in a real prepare);
- ``read_ms``: reading it back as the training loader does (:func:`ctseg.data.crops.read_crop_image` for PNG and
  TIFF — Pillow, or rasterio through ctseg's checked ``open_raster`` —, ``np.load`` for ``.npy``), hot in the
  page cache;
- ``kib``: mean file size, and ``size_vs_before`` its ratio to ctseg's crop before issue 33 (PNG level 1 for RGB
  images and masks, ``tiff-deflate6-pred`` for the 4-band uint16 set).

Crop sets: ``--data`` a prepared folder of RGB PNG crops (its crops are decoded once and serve as the pixels;
e.g. ``ctseg prepare dubai``), ``--synthetic N`` scenes of ``--size``² (:func:`ctseg.data.synthetic.generate_scene`),
with ``--masks`` the single-channel mask crops of ``--data`` as a set of their own, and ``--multiband N``
4-band uint16 scenes (the GeoTIFF crops of non-RGB data sets). Each repeat runs every
candidate once, in an order rotated per repeat (so no candidate always runs after the same one), after one
warm-up repeat; figures are medians over the repeats. Every decoded crop is checked equal to its source once.
Prints one JSON object (``--json PATH`` writes it too) and a Markdown table on stderr.

``--prepare DATASET SRC --old-src DIR`` times the whole ``ctseg prepare DATASET --src SRC --workers 1`` instead,
alternating this tree's ``src`` with another checkout's (``git worktree add /tmp/old <commit>``, then
``--old-src /tmp/old/src``), a fresh destination each run, ``--repeats`` pairs after one warm-up pair: wall and CPU
(user + system) seconds of the prepare process, medians, and the bytes of each destination's ``images/`` and
``masks/``::

    python benchmarks/crop_format.py --prepare dubai ../shared/data/dubai-aerial --old-src /tmp/old/src --repeats 5
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_model, emit  # noqa: E402

from ctseg.data.crops import IMAGE_SUFFIX, read_crop_image, save_image  # noqa: E402
from ctseg.data.synthetic import generate_scene  # noqa: E402

Encoder = Callable[[np.ndarray], bytes]


def _png(array: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", **options)
    return buffer.getvalue()


def _tiff(array: np.ndarray, **options) -> bytes:
    """(H, W) or (H, W, C) → a pixel-interleaved (C, H, W) TIFF in memory, rasterio / GDAL's GTiff driver."""
    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.io import MemoryFile

    bands = array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)
    with warnings.catch_warnings(), MemoryFile() as memory:
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with memory.open(driver="GTiff", height=bands.shape[1], width=bands.shape[2], count=bands.shape[0],
                         dtype=array.dtype.name, interleave="pixel", **options) as dst:  # fmt: skip
            dst.write(bands)
        return memory.read()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


#: name → (file suffix, encoder). ``png-1`` is ctseg's RGB image crop before issue 33 (Pillow, compress_level 1),
#: ``tiff-deflate6-pred`` its crop of any other band count / dtype; ``ctseg-now`` is the library's own writer,
#: :func:`ctseg.data.crops.save_image` (image crops only). PNG candidates run on RGB and mask crops only.
CANDIDATES: dict[str, tuple[str, Encoder | None]] = {
    "png-1": (".png", lambda a: _png(a, compress_level=1)),
    "png-0": (".png", lambda a: _png(a, compress_level=0)),
    "png-1-rle": (".png", lambda a: _png(a, compress_level=1, compress_type=zlib.Z_RLE)),
    "png-1-huffman": (".png", lambda a: _png(a, compress_level=1, compress_type=zlib.Z_HUFFMAN_ONLY)),
    "tiff-none": (".tif", lambda a: _tiff(a)),
    "tiff-lzw-pred": (".tif", lambda a: _tiff(a, compress="lzw", predictor=2)),
    "tiff-deflate6-pred": (".tif", lambda a: _tiff(a, compress="deflate", predictor=2)),
    "tiff-deflate1-pred": (".tif", lambda a: _tiff(a, compress="deflate", zlevel=1, predictor=2)),
    "tiff-deflate1-pred-tiled": (".tif", lambda a: _tiff(a, compress="deflate", zlevel=1, predictor=2, tiled=True)),
    "tiff-zstd1": (".tif", lambda a: _tiff(a, compress="zstd", zstd_level=1)),
    "tiff-zstd1-pred": (".tif", lambda a: _tiff(a, compress="zstd", zstd_level=1, predictor=2)),
    "tiff-zstd1-pred-tiled": (".tif", lambda a: _tiff(a, compress="zstd", zstd_level=1, predictor=2, tiled=True)),
    "tiff-zstd1-pred-strip64": (".tif", lambda a: _tiff(a, compress="zstd", zstd_level=1, predictor=2, blockysize=64)),
    "npy": (".npy", _npy),
    "ctseg-now": (IMAGE_SUFFIX, None),
}


def _read(path: Path) -> np.ndarray:
    """A crop file back as the loader holds it: (C, H, W) images, (H, W) masks; ``.npy`` as saved."""
    if path.suffix == ".npy":
        return np.load(path)
    if path.parent.name == "masks" and path.suffix == ".png":
        with Image.open(path) as im:
            return np.array(im)
    return read_crop_image(path)


def _same(read: np.ndarray, source: np.ndarray) -> bool:
    if read.ndim == source.ndim + 1 and read.shape[0] == 1:
        read = read[0]
    elif read.ndim == 3 and read.shape != source.shape:
        read = np.moveaxis(read, 0, -1)
    return read.shape == source.shape and np.array_equal(read, source)


def one_pass(name: str, crops: list[np.ndarray], folder: Path, check: bool) -> tuple[float, float, int]:
    """(write ms per crop, read ms per crop, total bytes) of one candidate over one crop set."""
    suffix, encode = CANDIDATES[name]
    paths = [folder / f"{i:05d}{suffix}" for i in range(len(crops))]
    t0 = time.perf_counter()
    for array, path in zip(crops, paths, strict=True):
        if encode is None:
            save_image(array, path, None)
        else:
            path.write_bytes(encode(array))
    t1 = time.perf_counter()
    back = [_read(path) for path in paths]
    t2 = time.perf_counter()
    if check and not all(_same(b, a) for a, b in zip(crops, back, strict=True)):
        raise SystemExit(f"{name}: a crop did not read back equal to its pixels")
    size = sum(path.stat().st_size for path in paths)
    for path in paths:
        path.unlink()
    return (t1 - t0) * 1e3 / len(crops), (t2 - t1) * 1e3 / len(crops), size


def crop_sets(args) -> dict[str, list[np.ndarray]]:
    sets: dict[str, list[np.ndarray]] = {}
    if args.data:
        images = sorted((Path(args.data) / "images").glob("*.png"))
        if args.limit and len(images) > args.limit:  # evenly spaced over the folder: every tile has its share
            images = [images[round(i * len(images) / args.limit)] for i in range(args.limit)]
        if not images:
            raise SystemExit(f"{args.data}/images holds no PNG crops")
        sets["data"] = [np.array(Image.open(p).convert("RGB")) for p in images]
        if args.masks:
            sets["masks"] = [np.array(Image.open(Path(args.data) / "masks" / p.name)) for p in images]
    if args.synthetic:
        sets["synthetic"] = [generate_scene(i, args.size)[0] for i in range(args.synthetic)]
    if args.multiband:  # 4 × uint16, a 12-bit sensor's range: the scene's RGB and their mean, ×16, plus noise
        rng = np.random.default_rng(0)
        sets["multiband"] = []
        for i in range(args.multiband):
            rgb = generate_scene(i, args.size)[0].astype(np.uint16)
            bands = np.dstack([rgb, rgb.mean(axis=2, keepdims=True).astype(np.uint16)]) * 16
            sets["multiband"].append(bands + rng.integers(0, 16, bands.shape, dtype=np.uint16))
    if not sets:
        raise SystemExit("give --data FOLDER and/or --synthetic N")
    return sets


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir())


def prepare_times(args) -> dict:
    """Seconds of ``ctseg prepare`` with this tree's ``src`` (``new``) and ``--old-src`` (``old``), alternating."""
    dataset, src = args.prepare
    trees = {"new": str(Path(__file__).resolve().parents[1] / "src"), "old": str(Path(args.old_src).resolve())}
    seconds: dict[str, list[float]] = {"new": [], "old": []}
    cpu: dict[str, list[float]] = {"new": [], "old": []}  # user + system seconds of the prepare process
    sizes: dict[str, dict[str, int]] = {}
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        for r in range(args.repeats + 1):  # the first pair is the warm-up
            for which in ("old", "new") if r % 2 else ("new", "old"):
                dst = Path(tmp) / which
                command = [sys.executable, "-m", "ctseg.cli", "prepare", dataset, "--src", src, "--dst", str(dst)]
                env = {**os.environ, "PYTHONPATH": trees[which], "HF_HUB_OFFLINE": "1"}
                t0, c0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
                subprocess.run([*command, "--workers", "1"], check=True, env=env, stdout=subprocess.DEVNULL)
                c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                if r:
                    seconds[which].append(time.perf_counter() - t0)
                    cpu[which].append(c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime)
                sizes[which] = {part: _folder_bytes(dst / part) for part in ("images", "masks")}
                shutil.rmtree(dst)
    new, old = statistics.median(seconds["new"]), statistics.median(seconds["old"])
    new_cpu, old_cpu = statistics.median(cpu["new"]), statistics.median(cpu["old"])
    return {
        "command": f"ctseg prepare {dataset} --src {src} --workers 1",
        "old_s": round(old, 2), "new_s": round(new, 2), "new_over_old": round(new / old, 3),
        "old_cpu_s": round(old_cpu, 2), "new_cpu_s": round(new_cpu, 2), "cpu_new_over_old": round(new_cpu / old_cpu, 3),
        "runs_s": {k: [round(x, 2) for x in v] for k, v in seconds.items()},
        "bytes": sizes,
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="a prepared folder of RGB PNG crops (ctseg prepare dubai …)")
    p.add_argument("--limit", type=int, default=0, help="at most this many of its crops, evenly spaced (0: all)")
    p.add_argument("--masks", action="store_true", help="also its mask crops, as a set of their own")
    p.add_argument("--synthetic", type=int, default=0, help="this many synthetic scenes")
    p.add_argument("--multiband", type=int, default=0, help="this many 4-band uint16 scenes (TIFF / npy only)")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    p.add_argument("--tmp", help="folder for the written crops (default: the system's temporary folder)")
    p.add_argument("--prepare", nargs=2, metavar=("DATASET", "SRC"), help="time ctseg prepare, old vs new tree")
    p.add_argument("--old-src", help="with --prepare: the src folder of the old checkout")
    p.add_argument("--json")
    args = p.parse_args()
    load_before = os.getloadavg()
    if args.prepare:
        if not args.old_src:
            raise SystemExit("--prepare needs --old-src")
        prepared = prepare_times(args)
        out = {"host": _host(load_before), "repeats": args.repeats, "prepare": prepared}
        emit(out, args.json)
        return
    sets = crop_sets(args)
    results: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        for set_name, crops in sets.items():
            folder = Path(tmp) / set_name / ("masks" if set_name == "masks" else "images")
            folder.mkdir(parents=True)
            skip = "ctseg-now" if set_name == "masks" else "png" if set_name == "multiband" else None
            names = [n for n in args.candidates if skip is None or not n.startswith(skip)]
            runs: dict[str, list[tuple[float, float, int]]] = {n: [] for n in names}
            for name in names:  # warm-up, and the equality check
                one_pass(name, crops, folder, check=True)
            for r in range(args.repeats):
                order = names[r % len(names) :] + names[: r % len(names)]
                for name in order:
                    runs[name].append(one_pass(name, crops, folder, check=False))
            base = "png-1" if "png-1" in runs else "tiff-deflate6-pred"  # ctseg's crops before issue 33
            png_bytes = runs[base][0][2] if base in runs else None
            results[set_name] = {}
            for name in names:
                write = statistics.median(w for w, _, _ in runs[name])
                read = statistics.median(r for _, r, _ in runs[name])
                size = runs[name][0][2]
                results[set_name][name] = {
                    "write_ms": round(write, 2), "read_ms": round(read, 2), "write_read_ms": round(write + read, 2),
                    "kib": round(size / len(crops) / 1024, 1),
                    "size_vs_before": round(size / png_bytes, 3) if png_bytes else None,
                }  # fmt: skip
    out = {
        "host": _host(load_before),
        "crops": {k: [len(v), *v[0].shape] for k, v in sets.items()},
        "repeats": args.repeats,
        "ctseg_now": IMAGE_SUFFIX,
        "results": results,
    }
    emit(out, args.json)
    for set_name, rows in results.items():
        print(f"\n{set_name} ({len(sets[set_name])} crops of {sets[set_name][0].shape})", file=sys.stderr)
        print("| format | write ms | read ms | write+read ms | KiB | size / before |", file=sys.stderr)
        print("|---|---:|---:|---:|---:|---:|", file=sys.stderr)
        for name, row in rows.items():
            print(f"| {name} | {row['write_ms']} | {row['read_ms']} | {row['write_read_ms']} | {row['kib']} | "
                  f"{row['size_vs_before']} |", file=sys.stderr)  # fmt: skip


def _host(load_before: tuple[float, float, float]) -> dict:
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()]}  # fmt: skip


if __name__ == "__main__":
    main()
