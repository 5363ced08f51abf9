"""``ctseg prepare vector`` on a generated city: one SIZE × SIZE UTM scene and FOOTPRINTS building polygons (plus a
grid of roads) in EPSG:4326, as a GeoPackage; prepared into CROP crops by the real command, in a child process.

    python benchmarks/prepare_vector.py                         # 10,000 × 10,000 px, 50,000 footprints
    python benchmarks/prepare_vector.py --size 4000 --footprints 8000 --workers 2

Prints one JSON line: the sizes, the time to generate the inputs and to prepare them, and the peak resident memory
of the prepare (``ru_maxrss`` of its process's resource usage as ``os.wait4`` reports it — ``getrusage`` of that one
child: the largest process of the command's tree, the main process or one worker), beside the CPU count and the
load. The inputs are written by a child of their own, so that neither their memory nor this process's counts.
The scene is a cheap pattern with little noise (0.5 m pixels; the deflate GeoTIFF stays small); its crops are
PNGs like any 3-band uint8 data set's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

UTM = "EPSG:32633"
PIXEL = 0.5
ORIGIN = (500000.0, 6000000.0)
CLASSES = """\
name: bench-city
classes:
  - {name: background}
  - {name: building, value: building}
  - {name: road, value: road}
background: background
"""


def write_scene(path: Path, size: int, rows: int = 1024) -> None:
    """A size × size 3-band uint8 GeoTIFF (tiled, deflate), written a band of rows at a time."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rng = np.random.default_rng(0)
    cols = np.arange(size)
    profile = dict(driver="GTiff", height=size, width=size, count=3, dtype="uint8", crs=UTM, tiled=True,
                   transform=from_origin(*ORIGIN, PIXEL, PIXEL), compress="deflate")  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        for top in range(0, size, rows):
            r = np.arange(top, min(size, top + rows))[:, None]
            base = ((r // 7 + cols // 11) % 64 + 90).astype(np.uint8)
            block = np.stack([base, base + 10, base + 5]) + rng.integers(0, 8, (3, *base.shape), dtype=np.uint8)
            dst.write(block, window=Window(0, top, size, len(r)))


def write_labels(path: Path, size: int, footprints: int) -> int:
    """``footprints`` rotated rectangles (6–20 m) and a road every 400 m both ways, in EPSG:4326; returns the count."""
    import pyogrio.raw
    import shapely
    from rasterio.warp import transform

    rng = np.random.default_rng(1)
    side = size * PIXEL
    cx = ORIGIN[0] + rng.uniform(0, side, footprints)
    cy = ORIGIN[1] - rng.uniform(0, side, footprints)
    w, h, a = rng.uniform(6, 20, footprints), rng.uniform(6, 20, footprints), rng.uniform(0, np.pi, footprints)
    unit = np.array([(-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5), (-0.5, -0.5)])
    x = unit[None, :, 0] * w[:, None]
    y = unit[None, :, 1] * h[:, None]
    xs = cx[:, None] + x * np.cos(a)[:, None] - y * np.sin(a)[:, None]
    ys = cy[:, None] + x * np.sin(a)[:, None] + y * np.cos(a)[:, None]
    houses = shapely.polygons(np.stack([xs, ys], axis=-1))
    roads = []
    for offset in np.arange(200.0, side, 400.0):
        roads.append(shapely.box(ORIGIN[0] + offset - 4, ORIGIN[1] - side, ORIGIN[0] + offset + 4, ORIGIN[1]))
        roads.append(shapely.box(ORIGIN[0], ORIGIN[1] - offset - 4, ORIGIN[0] + side, ORIGIN[1] - offset + 4))
    geoms = np.concatenate([houses, np.array(roads, dtype=object)])
    values = np.array(["building"] * len(houses) + ["road"] * len(roads), dtype=object)

    def lonlat(coords: np.ndarray) -> np.ndarray:
        lon, lat = transform(UTM, "EPSG:4326", coords[:, 0], coords[:, 1])
        return np.column_stack([lon, lat])

    geoms = shapely.transform(geoms, lonlat)
    pyogrio.raw.write(path, np.array(shapely.to_wkb(geoms), dtype=object), [values], ["class"], layer="labels",
                      geometry_type="Polygon", crs="EPSG:4326", driver="GPKG")  # fmt: skip
    return len(geoms)


def _child(command: list[str]) -> tuple[float, int]:
    """Run ``command``; (seconds, its peak resident KiB). ``os.wait4`` gives that child's own usage; this process
    stays small (it generates nothing itself), since a child's peak counts the parent's pages until it execs."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    took = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit((proc.stderr.read() if proc.stderr else "").strip() or f"{command[:3]} failed ({proc.returncode})")
    return took, usage.ru_maxrss  # KiB on Linux


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=10_000, help="scene side in pixels (0.5 m)")
    p.add_argument("--footprints", type=int, default=50_000)
    p.add_argument("--crop", type=int, default=512)
    p.add_argument("--workers", type=int, default=None, help="prepare's --workers (default: all cores)")
    p.add_argument("--work", type=Path, default=None, help="folder for inputs and output (default: temporary)")
    p.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)  # the first child
    args = p.parse_args()
    if args.generate_only:
        (args.work / "scenes").mkdir(parents=True, exist_ok=True)
        write_scene(args.work / "scenes" / "scene.tif", args.size)
        count = write_labels(args.work / "labels.gpkg", args.size, args.footprints)
        (args.work / "classes.yaml").write_text(CLASSES)
        (args.work / "features.txt").write_text(str(count))
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="ctseg-prepare-vector-"))
    generated, _ = _child([sys.executable, __file__, "--generate-only", "--work", str(work), "--size", str(args.size),
                           "--footprints", str(args.footprints)])  # fmt: skip
    dst = work / "prepared"
    shutil.rmtree(dst, ignore_errors=True)
    ctseg = Path(sys.executable).with_name("ctseg")
    command = [str(ctseg)] if ctseg.exists() else [sys.executable, "-m", "ctseg.cli"]
    command += ["prepare", "vector", "--src", str(work / "scenes"), "--labels", str(work / "labels.gpkg"),
                "--class-field", "class", "--classes", str(work / "classes.yaml"), "--dst", str(dst), "--crop",
                str(args.crop)]  # fmt: skip
    if args.workers is not None:
        command += ["--workers", str(args.workers)]
    took, peak_kib = _child(command)
    manifest = json.loads((dst / "manifest.json").read_text())
    print(json.dumps({
        "size": args.size, "features": int((work / "features.txt").read_text()), "crop": args.crop,
        "crops": len(manifest["crops"]), "workers": args.workers or os.cpu_count(), "generate_s": round(generated, 1),
        "prepare_s": round(took, 1), "mpx_per_s": round(args.size**2 / 1e6 / took, 2),
        "peak_rss_mib": round(peak_kib / 1024), "cpus": os.cpu_count(), "load": os.getloadavg()[0],
    }))  # fmt: skip
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
