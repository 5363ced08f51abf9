"""Re-score the committed Dubai study models (``results/dubai/models/*.safetensors``) with region and boundary
metrics on the validation tiles 1–3, through the user-facing commands: ``ctseg predict`` on each whole
validation image, then ``ctseg evaluate``'s scoring (:func:`ctseg.evaluation.files.evaluate_pairs`) against the
original colour-coded masks. Writes Markdown to stdout and every score to ``--json``.

    OMP_NUM_THREADS=1 .venv/bin/python results/dubai/boundary_rescore.py \\
        --src ../shared/data/dubai-aerial --work /tmp/dubai-rescore --json results/dubai/boundary.json \\
        > results/dubai/boundary.md

The validation images of the three tiles share file names (``image_part_001.jpg`` in every tile), so they are
linked into ``WORK/images`` and ``WORK/truth`` as ``tileN_image_part_00K`` first. Predictions: windows of 512
with overlap 0.25 (predict's defaults), no test-time augmentation, CPU. Tolerances: 3 px (the main one), 1 and 5.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODELS = ("baseline", "cl", "infonce", "mscs")
#: scheme and seed of each committed model (results/dubai/README.md, "Checkpoints")
SOURCE = {"baseline": ("none", 2), "cl": ("ct-cl", 0), "infonce": ("ct-infonce", 1), "mscs": ("mscs", 2)}


def link_validation(src: Path, work: Path) -> list[str]:
    from ctseg.data.sets.dubai import discover_dubai

    tiles, _ = discover_dubai(src)
    val = [t for t in tiles if t.split == "test"]
    for sub in ("images", "truth"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    names = []
    for t in val:
        name = t.tile.replace("/", "_")
        for link, target in ((work / "images" / f"{name}{t.image.suffix}", t.image),
                             (work / "truth" / f"{name}.png", t.label)):  # fmt: skip
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(target.resolve())
        names.append(name)
    return names


def predict(model: Path, work: Path, name: str) -> tuple[Path, float]:
    from ctseg.cli.entry import main

    out = work / "pred" / name
    images = sorted(str(p) for p in (work / "images").iterdir())
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(["predict", *images, "--ckpt", str(model), "--out", str(out), "--no-color", "--overwrite",
                     "--device", "cpu"])  # fmt: skip
    if code != 0:
        raise SystemExit(f"ctseg predict failed for {model}")
    return out, time.perf_counter() - start


def _f(v) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def _d(v, base) -> str:
    return "" if v is None or base is None else f" ({(v - base) * 100:+.1f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", default=str(REPO.parent / "shared" / "data" / "dubai-aerial"))
    ap.add_argument("--models", default=str(REPO / "results" / "dubai" / "models"))
    ap.add_argument("--work", default="/tmp/dubai-rescore")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from ctseg.data.definitions import DUBAI
    from ctseg.evaluation.files import evaluate_pairs, find_pairs

    work = Path(args.work)
    names = link_validation(Path(args.src), work)
    scores, seconds = {}, {}
    for name in MODELS:
        out, seconds[name] = predict(Path(args.models) / f"{name}.safetensors", work, name)
        start = time.perf_counter()
        scores[name] = evaluate_pairs(find_pairs(out, work / "truth"), DUBAI, [3, 1, 5])
        scores[name].pop("files")  # WORK paths; the images are listed once below
        seconds[name] = (seconds[name], time.perf_counter() - start)
    if args.json:
        Path(args.json).write_text(json.dumps({"images": names, "scores": scores}, indent=1) + "\n")
    base = scores["baseline"]
    lines = [
        f"Validation tiles 1–3 ({len(names)} whole images, {base['pixels']:,} labelled pixels), predicted with "
        "`ctseg predict` (512 windows, overlap 0.25) and scored with `ctseg evaluate`'s protocol; in brackets the "
        "difference to the baseline in points. Boundary metrics at d = 3 px unless named.",
        "",
        "| model | scheme | seed | mIoU | mean F1 | OA | bIoU | bF1 | bIoU d=1 | bF1 d=1 | bIoU d=5 | bF1 d=5 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in MODELS:
        s, (scheme, seed) = scores[name], SOURCE[name]
        b1, b5 = s["boundary"]["1"], s["boundary"]["5"]
        bb1, bb5 = base["boundary"]["1"], base["boundary"]["5"]
        cells = [(s["miou"], base["miou"]), (s["mf1"], base["mf1"]), (s["oa"], base["oa"]),
                 (s["mbiou"], base["mbiou"]), (s["mbf1"], base["mbf1"]), (b1["mbiou"], bb1["mbiou"]),
                 (b1["mbf1"], bb1["mbf1"]), (b5["mbiou"], bb5["mbiou"]), (b5["mbf1"], bb5["mbf1"])]  # fmt: skip
        text = [_f(v) + ("" if name == "baseline" else _d(v, b)) for v, b in cells]
        lines.append(f"| `{name}.safetensors` | {scheme} | {seed} | " + " | ".join(text) + " |")
    lines += ["", "Per class, d = 3 px: IoU / boundary IoU / boundary F1 (difference to the baseline in points):", ""]
    lines.append("| model | " + " | ".join(DUBAI.classes) + " |")
    lines.append("|---|" + "---|" * len(DUBAI.classes))
    for name in MODELS:
        s = scores[name]
        cells = []
        for c in DUBAI.classes:
            vals = [(s["iou"][c], base["iou"][c]), (s["biou"][c], base["biou"][c]), (s["bf1"][c], base["bf1"][c])]
            cells.append(" / ".join(_f(v) + ("" if name == "baseline" else _d(v, b)) for v, b in vals))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Seconds per model (predict / score): "
              + ", ".join(f"{n} {p:.0f} / {e:.1f}" for n, (p, e) in seconds.items())]  # fmt: skip
    print("\n".join(lines))


if __name__ == "__main__":
    main()
