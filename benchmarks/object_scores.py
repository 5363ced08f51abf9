"""Time ``ctseg evaluate PRED.gpkg --truth TRUTH.gpkg`` (object scores) on generated footprints.

``python benchmarks/object_scores.py [--n 10000] [--folder out/object_bench]``: ``n`` reference footprints
(rotated rectangles of 6–25 m, one per 50 m × 50 m on average, in UTM zone 31N), ``n`` predictions
(90 % jittered / rescaled copies, the rest false alarms), written as GeoPackages; then one timed run of each
stage (matching, PoLiS, boundary F1) in memory and of the whole command from the files. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def footprints(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    import shapely
    from shapely import affinity

    rng = np.random.default_rng(seed)
    side = float(np.sqrt(n) * 50.0)  # ~50 m between footprint centres
    centres = rng.uniform(0, side, (n, 2)) + [500_000.0 - side / 2, 5_540_000.0]
    size = rng.uniform(6, 25, (n, 2))
    angle = rng.uniform(0, 90, n)
    truth = shapely.box(*(centres - size / 2).T, *(centres + size / 2).T)
    truth = np.asarray([affinity.rotate(g, a) for g, a in zip(truth, angle, strict=True)], dtype=object)
    pred = []
    for k, g in enumerate(truth):
        if k % 10 == 9:  # a false alarm somewhere else
            c = rng.uniform(0, side, 2) + [500_000.0 - side / 2, 5_540_000.0]
            pred.append(shapely.box(*(c - 5), *(c + 5)))
        else:
            g = affinity.translate(g, *rng.normal(0, 1.0, 2))
            pred.append(affinity.scale(g, *rng.uniform(0.85, 1.15, 2)))
    return truth, np.asarray(pred, dtype=object)


def write(path: Path, geoms: np.ndarray) -> None:
    import pyogrio.raw
    import shapely

    cls = np.asarray(["building"] * len(geoms), dtype=object)
    pyogrio.raw.write(path, np.asarray(shapely.to_wkb(geoms), dtype=object), [cls], ["class"], driver="GPKG",
                      geometry_type="Polygon", crs="EPSG:32631")  # fmt: skip


def main() -> None:
    from common import cpu_model

    from ctseg.evaluation.footprints import evaluate_footprints
    from ctseg.evaluation.objects import match_objects
    from ctseg.evaluation.polis import boundary_match, polis

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--folder", default="out/object_bench")
    args = parser.parse_args()
    folder = Path(args.folder)
    folder.mkdir(parents=True, exist_ok=True)
    truth, pred = footprints(args.n)
    write(folder / "truth.gpkg", truth)
    write(folder / "pred.gpkg", pred)
    times = {}
    t0 = time.perf_counter()
    ti, pi, iou = match_objects(truth, pred, 0.5)
    times["match_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    polis(truth[ti], pred[pi])
    times["polis_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    boundary_match(truth[ti], pred[pi], 1.0)
    times["boundary_f1_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    scores = evaluate_footprints(folder / "pred.gpkg", folder / "truth.gpkg", class_name="building")
    times["whole_command_s"] = time.perf_counter() - t0
    with open("/proc/loadavg") as fh:
        load = fh.read().split()[:3]
    print(json.dumps({
        "n_truth": len(truth), "n_pred": len(pred), "matches": int(len(ti)),
        **{k: round(v, 3) for k, v in times.items()},
        **{k: scores[k] for k in ("precision", "recall", "f1", "mean_iou", "polis", "boundary_f1")},
        "nproc": os.cpu_count(), "cpu": cpu_model(), "loadavg_after": load,
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
