"""Building footprints of the committed Dubai study models (``results/dubai/models/*.safetensors``) on the
validation tiles 1–3, scored as objects against footprints of the human labels (issue 32's Measure).

    OMP_NUM_THREADS=1 .venv/bin/python results/dubai/footprints.py \\
        --src ../shared/data/dubai-aerial --work /tmp/dubai-footprints --json results/dubai/footprints.json \\
        > results/dubai/footprints.md

Per model: ``ctseg predict`` on each whole validation image (512 windows, overlap 0.25, CPU; as
``boundary_rescore.py``), then ``ctseg vectorize --classes building`` of each class map three ways — raw pixel
outlines, with ``--min-area``, and with ``--min-area --regularize`` — timed (wall clock of the in-process command,
summed over the images). The reference footprints are the same command on the decoded label (``building`` pixels
of the colour-coded mask, unlabelled pixels as nodata) with the same ``--min-area`` where the prediction has it.
Scores: :func:`ctseg.evaluation.objects.object_scores` — what ``ctseg evaluate PRED.gpkg --truth TRUTH.gpkg``
computes — over all 27 images at once (each image's polygons shifted by its own offset so images never overlap):
the SpaceNet rule (one-to-one, greedy by IoU, IoU ≥ 0.5), PoLiS of the matches and boundary F1 at 3 px. The
images carry no georeference, so every size is in pixels.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from boundary_rescore import MODELS, REPO, SOURCE, link_validation, predict  # noqa: E402

#: --min-area of the filtered rows, in px² (the images carry no georeference)
MIN_AREA = 25.0
#: boundary F1 tolerance, px (the raster boundary table's main d)
TOLERANCE = 3.0
#: x offset between images when all are scored at once, px (wider than any validation image)
OFFSET = 100_000.0
VARIANTS = {"raw": [], "min-area": ["--min-area", f"{MIN_AREA:g}"],
            "regularised": ["--min-area", f"{MIN_AREA:g}", "--regularize"]}  # fmt: skip


def vectorize(raster: Path, out: Path, extra: list[str]) -> float:
    from ctseg.cli.entry import main

    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = main(["vectorize", str(raster), "--classes", "building", "--out", str(out), "--overwrite", *extra])
    if code != 0:
        raise SystemExit(f"ctseg vectorize failed for {raster}")
    return time.perf_counter() - start


def truth_raster(label: Path, like: Path, out: Path) -> Path:
    """The decoded label as a class raster on ``like``'s grid (its frame and class-name tag), 255 unlabelled."""
    import rasterio

    from ctseg.data.definitions import DUBAI
    from ctseg.evaluation.files import read_truth

    classes = read_truth(label, DUBAI).astype(np.uint8)
    with rasterio.open(like) as ref:
        profile = {"driver": "GTiff", "height": ref.height, "width": ref.width, "count": 1, "dtype": "uint8",
                   "crs": ref.crs, "transform": ref.transform, "nodata": 255}  # fmt: skip
        tags = ref.tags()
    if classes.shape != (profile["height"], profile["width"]):
        raise SystemExit(f"{label}: {classes.shape} is not the prediction's shape")
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(classes, 1)
        dst.update_tags(**{k: v for k, v in tags.items() if k == "CTSEG_CLASSES"})
    return out


def read_shifted(path: Path, dx: float) -> list:
    import pyogrio.raw
    import shapely

    _, _, wkb, _ = pyogrio.raw.read(path)
    return list(shapely.transform(shapely.from_wkb(wkb), lambda xy: xy + [dx, 0.0])) if len(wkb) else []


def main_() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", default=str(REPO.parent / "shared" / "data" / "dubai-aerial"))
    ap.add_argument("--models", default=str(REPO / "results" / "dubai" / "models"))
    ap.add_argument("--work", default="/tmp/dubai-footprints")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from ctseg.evaluation.objects import object_scores

    work = Path(args.work)
    names = link_validation(Path(args.src), work)
    truth_tifs: dict[str, Path] = {}
    truth: dict[str, list] = {"raw": [], "filtered": []}
    results: dict[str, dict] = {}
    for model in MODELS:
        out, predict_s = predict(Path(args.models) / f"{model}.safetensors", work, model)
        polys = {v: [] for v in VARIANTS}
        seconds = dict.fromkeys(VARIANTS, 0.0)
        for k, name in enumerate(names):
            pred_tif = out / f"{name}_pred.tif"
            if name not in truth_tifs:  # once, on the first model's grid (every model's is the same)
                truth_tifs[name] = truth_raster(work / "truth" / f"{name}.png", pred_tif, work / f"{name}_truth.tif")
                for key, extra in (("raw", []), ("filtered", VARIANTS["min-area"])):
                    gpkg = work / f"{name}_truth_{key}.gpkg"
                    vectorize(truth_tifs[name], gpkg, extra)
                    truth[key] += read_shifted(gpkg, k * OFFSET)
            for variant, extra in VARIANTS.items():
                gpkg = work / "vec" / model / f"{name}_{variant}.gpkg"
                gpkg.parent.mkdir(parents=True, exist_ok=True)
                seconds[variant] += vectorize(pred_tif, gpkg, extra)
                polys[variant] += read_shifted(gpkg, k * OFFSET)
        results[model] = {"predict_s": predict_s}
        for variant in VARIANTS:
            reference = truth["raw" if variant == "raw" else "filtered"]
            start = time.perf_counter()
            s = object_scores(reference, polys[variant], iou=0.5, tolerance=TOLERANCE)
            s.pop("matches")
            n_vertices = int(sum(len(p.exterior.coords) - 1 for p in polys[variant]))
            results[model][variant] = {
                **s, "polygons": len(polys[variant]), "truth_polygons": len(reference), "vertices": n_vertices,
                "vectorize_s": seconds[variant], "polygons_per_s": len(polys[variant]) / seconds[variant],
                "score_s": time.perf_counter() - start,
            }  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"images": names, "min_area_px": MIN_AREA, "tolerance_px": TOLERANCE,
                                               "models": results}, indent=1) + "\n")  # fmt: skip
    print(report(names, results))


def _f(v, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def report(names: list[str], results: dict[str, dict]) -> str:
    first = results[MODELS[0]]
    lines = [
        f"Building footprints on the validation tiles 1–3 ({len(names)} whole images; "
        f"{first['raw']['truth_polygons']:,} reference buildings raw, {first['min-area']['truth_polygons']:,} of "
        f"≥ {MIN_AREA:g} px²). `ctseg vectorize --classes building` of each model's class map: raw outlines, "
        f"`--min-area {MIN_AREA:g}` (reference filtered alike), and `--min-area {MIN_AREA:g} --regularize`. "
        f"Object scores as `ctseg evaluate PRED.gpkg --truth TRUTH.gpkg` (IoU ≥ 0.5, one-to-one, greedy); PoLiS "
        f"and boundary F1 ({TOLERANCE:g} px) in pixels (the images carry no georeference). Vectorize time: the "
        "command in-process, summed over the images (polygons per second of it).",
        "",
        "| model | scheme | outlines | polygons | vertices | precision | recall | F1 | mean IoU | PoLiS px "
        "| boundary F1 | vectorize s | polygons/s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for model in MODELS:
        scheme, _ = SOURCE[model]
        for variant in VARIANTS:
            s = results[model][variant]
            lines.append(
                f"| {model} | {scheme} | {variant} | {s['polygons']:,} | {s['vertices']:,} | {_f(s['precision'])} | "
                f"{_f(s['recall'])} | {_f(s['f1'])} | {_f(s['mean_iou'])} | {_f(s['polis'], 2)} | "
                f"{_f(s['boundary_f1'])} | {s['vectorize_s']:.2f} | {s['polygons_per_s']:,.0f} |"
            )
    lines += ["", "Seconds of `ctseg predict` per model (27 images): "
              + ", ".join(f"{m} {results[m]['predict_s']:.0f}" for m in MODELS)]  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main_()
