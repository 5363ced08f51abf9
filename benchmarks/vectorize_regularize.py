"""``ctseg vectorize --regularize`` on a generated class map: the time per 1,000 polygons with and without it.

    python benchmarks/vectorize_regularize.py                  # 2400² px at 0.5 m, ~3,600 buildings
    python benchmarks/vectorize_regularize.py --size 1200 --repeats 3

The class map (uint8, 0.5 m, EPSG:32633, tiled 256²; read in 1024-px blocks) holds one building per 20 m cell:
rotated rectangles (6-16 m sides, any angle), rotated L shapes and round tanks (radius 3-7 m), in the ratio
6 : 3 : 1. Plain and regularised runs alternate in one process; each figure is the median of ``--repeats`` runs.
Prints one JSON line: the polygon count, seconds per run, milliseconds per 1,000 polygons for both and for the
difference (the cost of regularising), the share of polygons that came back right-angled, and the machine (CPU
count, CPU model, load average before and after).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

RES = 0.5
CELL = 20.0


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def buildings(size: int, seed: int = 0) -> list:
    import shapely
    from shapely import affinity

    rng = np.random.default_rng(seed)
    cells = int(size * RES // CELL)
    ell = shapely.Polygon([(0, 0), (1, 0), (1, 0.45), (0.45, 0.45), (0.45, 1), (0, 1)])
    out = []
    for i in range(cells):
        for j in range(cells):
            cx, cy = (j + 0.5) * CELL, -(i + 0.5) * CELL
            kind = rng.choice(3, p=[0.6, 0.3, 0.1])
            if kind == 2:
                out.append(shapely.Point(cx, cy).buffer(rng.uniform(3, 7), 64))
                continue
            w, h = rng.uniform(6, 16, 2)
            shape = shapely.box(-w / 2, -h / 2, w / 2, h / 2) if kind == 0 else affinity.scale(
                affinity.translate(ell, -0.5, -0.5), w, h, origin=(0, 0))  # fmt: skip
            out.append(affinity.translate(affinity.rotate(shape, rng.uniform(0, 180), origin=(0, 0)), cx, cy))
    return out


def write_class_map(path: Path, size: int) -> None:
    import rasterio
    from rasterio.features import rasterize
    from rasterio.transform import from_origin

    transform = from_origin(0.0, 0.0, RES, RES)
    data = rasterize(buildings(size), out_shape=(size, size), transform=transform, dtype="uint8")
    profile = dict(driver="GTiff", height=size, width=size, count=1, dtype="uint8", crs="EPSG:32633",
                   transform=transform, tiled=True, blockxsize=256, blockysize=256, compress="deflate")  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)


def right_angled(path: Path) -> tuple[int, float]:
    import pyogrio.raw
    import shapely

    geoms = shapely.from_wkb(pyogrio.raw.read(path)[2])
    square = 0
    for g in geoms:
        xy = shapely.get_coordinates(g.exterior)[:-1]
        a, b = xy - np.roll(xy, 1, axis=0), np.roll(xy, -1, axis=0) - xy
        cos = (a * b).sum(1) / np.hypot(*a.T) / np.hypot(*b.T)
        square += bool(np.all(np.abs(cos) < 1e-6))
    return len(geoms), square / max(1, len(geoms))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2400, help="raster side in pixels (2400)")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each, alternating (5)")
    args = parser.parse_args()

    from ctseg.vectorize.polygons import vectorize_raster

    load_before = loadavg()
    with tempfile.TemporaryDirectory() as tmp:
        pred = Path(tmp) / "city_pred.tif"
        write_class_map(pred, args.size)
        times: dict[str, list[float]] = {"plain": [], "regularize": []}
        for _ in range(args.repeats):
            for name in times:
                start = time.perf_counter()
                vectorize_raster(pred, Path(tmp) / f"{name}.gpkg", [1], overwrite=True, regularize=name != "plain")
                times[name].append(time.perf_counter() - start)
        count, square = right_angled(Path(tmp) / "regularize.gpkg")
    plain, reg = (statistics.median(times[k]) for k in ("plain", "regularize"))
    print(json.dumps({
        "size": args.size, "polygons": count, "repeats": args.repeats,
        "plain_s": round(plain, 3), "regularize_s": round(reg, 3),
        "plain_ms_per_1000": round(1e6 * plain / count, 1), "regularize_ms_per_1000": round(1e6 * reg / count, 1),
        "added_ms_per_1000": round(1e6 * (reg - plain) / count, 1), "right_angled_share": round(square, 3),
        "nproc": os.cpu_count(), "cpu": cpu_model(), "loadavg_before": load_before, "loadavg_after": loadavg(),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
