"""Issue 33: the speed of ``ctseg vectorize`` against GDAL's polygonize of the class mask (and an older ctseg).

    python benchmarks/vectorize_speed.py                          # 10000² px at 0.5 m, ~62,000 buildings
    python benchmarks/vectorize_speed.py --before 8e78076 --repeats 5 --size 6000

The class map is :mod:`vectorize_regularize`'s (uint8, 0.5 m, EPSG:32633, tiled 256², deflate; one building per
20 m cell: rotated rectangles, rotated Ls, round tanks). Each variant runs in its own warm worker process (one
untimed run first), and the variants alternate run by run; each figure is the median of ``--repeats``:

* ``ctseg``: ``vectorize_raster(PRED, OUT.gpkg, [1])`` (``ctseg vectorize PRED --classes 1 --out OUT.gpkg``
  without the start-up), with this checkout's ``src``: by default one worker process per CPU polygonises blocks
  (:mod:`ctseg.vectorize.workers`; their start-up is in the time);
* ``ctseg_1``: the same with ``workers=0`` (``--workers 0``: all in the calling process);
* ``before`` (with ``--before REV``): the same call with the ``src`` of the git revision ``REV``;
* ``gdal``: GDAL's polygonize of the whole class mask, in memory (read band 1, ``== 1``, every polygon of
  :func:`rasterio.features.shapes`, 4-connected, listed) — the floor a tool built on it cannot go below;
* ``gdal_gpkg``: the same polygons written as a GeoPackage (shapely from GeoJSON one at a time, pyogrio), a
  GDAL-polygonize-to-file route in Python.

Prints one JSON line: polygon count, seconds per variant (median) and every run, ratios to ``gdal`` (of the
medians, and the median of the ratios within each round), polygons per second, machine (CPU count and model,
load average before and after).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def run_once(variant: str, pred: Path, out: Path) -> float:
    """Seconds of one run of ``variant`` (module docstring)."""
    import numpy as np

    start = time.perf_counter()
    if variant in ("ctseg", "ctseg_1", "before"):
        from ctseg.vectorize.polygons import vectorize_raster

        opts = {"workers": 0} if variant == "ctseg_1" else {}
        vectorize_raster(pred, out, [1], overwrite=True, **opts)
    else:
        import rasterio
        from rasterio.features import shapes

        with rasterio.open(pred) as src:
            mask = src.read(1) == 1
            transform, crs = src.transform, src.crs
        found = list(shapes(mask.view(np.uint8), mask=mask, connectivity=4, transform=transform))
        if variant == "gdal_gpkg":
            import pyogrio.raw
            import shapely
            from shapely.geometry import shape

            wkb = shapely.to_wkb(np.array([shape(g) for g, _ in found], dtype=object))
            out.unlink(missing_ok=True)
            pyogrio.raw.write(str(out), wkb, [], [], driver="GPKG", geometry_type="Polygon", crs=crs.to_wkt())
    return time.perf_counter() - start


def worker(variant: str, pred: Path, out: Path) -> None:
    """Answer each line on stdin with the seconds of one run."""
    for _ in sys.stdin:
        print(run_once(variant, pred, out), flush=True)


def old_src(rev: str, folder: Path) -> Path:
    """The ``src`` folder of git revision ``rev``, extracted into ``folder``."""
    data = subprocess.run(["git", "archive", rev, "src"], cwd=ROOT, check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(folder, filter="data")
    return folder / "src"


def count_polygons(path: Path) -> int:
    import pyogrio

    return int(pyogrio.read_info(path)["features"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10000, help="raster side in pixels (10000)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each, alternating (5)")
    parser.add_argument("--before", default=None, metavar="REV", help="also time the src of this git revision")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--pred", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, Path(args.pred), Path(args.out))
        return

    from common import cpu_model
    from vectorize_regularize import loadavg, write_class_map

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pred = tmp / "city_pred.tif"
        write_class_map(pred, args.size)
        variants = {"gdal": None, "gdal_gpkg": None, "ctseg": str(ROOT / "src"), "ctseg_1": str(ROOT / "src")}
        if args.before:
            variants["before"] = str(old_src(args.before, tmp / "before"))
        load_before = loadavg()
        workers = {}
        for name, src in variants.items():
            env = dict(os.environ)
            if src is not None:
                env["PYTHONPATH"] = os.pathsep.join([src, str(HERE)])
            cmd = [sys.executable, __file__, "--worker", name, "--pred", str(pred), "--out", str(tmp / f"{name}.gpkg")]
            workers[name] = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        times: dict[str, list[float]] = {name: [] for name in variants}
        try:
            for rep in range(args.repeats + 1):  # the first round warms each worker up, untimed
                for name, proc in workers.items():
                    proc.stdin.write("run\n")
                    proc.stdin.flush()
                    seconds = float(proc.stdout.readline())
                    if rep:
                        times[name].append(seconds)
        finally:
            for proc in workers.values():
                proc.stdin.close()
                proc.wait()
        count = count_polygons(tmp / "ctseg.gpkg")
        assert count_polygons(tmp / "ctseg_1.gpkg") == count
        if args.before:
            assert count_polygons(tmp / "before.gpkg") == count
    med = {name: statistics.median(t) for name, t in times.items()}
    print(json.dumps({
        "size": args.size, "polygons": count, "repeats": args.repeats,
        "seconds": {k: round(v, 3) for k, v in med.items()},
        "runs": {k: [round(x, 2) for x in v] for k, v in times.items()},
        "ratio_to_gdal": {k: round(v / med["gdal"], 2) for k, v in med.items()},
        "round_ratio_to_gdal": {  # the median of the ratios within each round (the runs next to each other)
            k: round(statistics.median(a / g for a, g in zip(t, times["gdal"], strict=True)), 2)
            for k, t in times.items()
        },
        "polygons_per_s": {k: round(count / v) for k, v in med.items()},
        "nproc": os.cpu_count(), "cpu": cpu_model(), "loadavg_before": load_before, "loadavg_after": loadavg(),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
