"""Summarise the Dubai study: per config mean ± std of mIoU over seeds, the gain over the baseline, and whether it
exceeds the seed-to-seed spread. Reads every ``results.json`` below the given folder; writes Markdown to stdout.

    python results/dubai/summarize.py runs/grid/dubai-cpu > results/dubai/summary.md

"Spread" is the larger of the two sample standard deviations (ddof = 1); a gain counts as "beyond the spread"
only when it exceeds twice that value (the issue's bar). Single-seed rows (ablations) have no std of their own and
are compared with the CL row's spread. Per-class IoU gains are listed for the core rows.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def load(root: Path) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {}
    for path in sorted(root.rglob("results.json")):
        r = json.loads(path.read_text())
        runs.setdefault(r["config_name"], []).append(r)
    return runs


def mean_std(values: list[float]) -> tuple[float, float | None]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None)


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/grid/dubai-cpu")
    runs = load(root)
    if "baseline" not in runs:
        raise SystemExit(f"summarize: no baseline runs under {root}")
    base_mean, base_std = mean_std([r["miou"] for r in runs["baseline"]])
    cl_std = mean_std([r["miou"] for r in runs["cl"]])[1] if "cl" in runs else None
    classes = list(runs["baseline"][0]["iou"])
    out = [
        "| config | scheme | options | seeds | mIoU mean | std | gain vs baseline (pt) | 2 × spread (pt) | beyond? |"
        " wall s / run |",
        "|---|---|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    order = ["baseline", "cl", "infonce", "mscs"]
    names = order + sorted(n for n in runs if n not in order)
    for name in names:
        if name not in runs:
            continue
        rs = runs[name]
        m, s = mean_std([r["miou"] for r in rs])
        spread = max(x for x in (base_std, s if s is not None else cl_std) if x is not None) if base_std else None
        gain = (m - base_mean) * 100
        beyond = "–" if name == "baseline" or spread is None else ("yes" if abs(gain) > 200 * spread else "no")
        options = json.dumps(_scheme_options(rs[0]), sort_keys=True)
        wall = statistics.mean(r["wall_seconds"] for r in rs)
        out.append(
            f"| {name} | {rs[0]['scheme']} | `{options}` | {len(rs)} | {m:.4f} | "
            f"{'–' if s is None else f'{s:.4f}'} | {'–' if name == 'baseline' else f'{gain:+.2f}'} | "
            f"{'–' if spread is None or name == 'baseline' else f'{200 * spread:.2f}'} | {beyond} | {wall:.0f} |"
        )
    out += ["", "Per-class IoU, mean over seeds (gain over the baseline in points):", ""]
    out.append("| config | " + " | ".join(classes) + " |")
    out.append("|---|" + "---:|" * len(classes))
    base_cls = {c: statistics.mean(r["iou"][c] for r in runs["baseline"]) for c in classes}
    for name in names:
        if name not in runs:
            continue
        cells = []
        for c in classes:
            v = statistics.mean(r["iou"][c] for r in runs[name])
            cells.append(f"{v:.3f}" if name == "baseline" else f"{v:.3f} ({(v - base_cls[c]) * 100:+.1f})")
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    # Configs whose contrastive loss sat at the clip value (1.0) in every logged step got no contrastive gradient
    # ("value" clip): they differ from the baseline only in the random stream (CT's sampling draws from it, so
    # dropout / drop-path masks differ), which makes them extra baseline seeds — a direct measure of the noise.
    frozen = [n for n in names if n in runs and n != "baseline" and all(_clipped(r) for r in runs[n])]
    if frozen:
        pooled = [r["miou"] for n in ["baseline", *frozen] for r in runs[n]]
        m, s_ = mean_std(pooled)
        out += [
            "",
            f"No contrastive gradient (loss at the clip value 1.0 in every logged step): {', '.join(frozen)}. "
            f"Pooled with the baseline these are {len(pooled)} runs of the same training up to the random stream: "
            f"mIoU {m:.4f} ± {s_:.4f} (range {min(pooled):.4f}–{max(pooled):.4f}).",
        ]
    print("\n".join(out))


def _clipped(result: dict) -> bool:
    """True when the run clips by value and every logged ``train/contrastive`` equals 1.0 (the clip value).

    (``clip_mode: scale`` also shows 1.0 above the threshold but keeps the gradient.)"""
    import csv

    if _scheme_options(result).get("clip_mode", "value") != "value":
        return False
    path = Path(result.get("log_dir") or "") / "metrics.csv"
    if not path.is_file():
        return False
    with open(path, newline="") as fh:
        values = [float(row["train/contrastive"]) for row in csv.DictReader(fh) if row.get("train/contrastive")]
    return bool(values) and all(v == 1.0 for v in values)


def _scheme_options(result: dict) -> dict:
    """The run's ``model.scheme_options`` as written in its config file (``{}`` when absent)."""
    import yaml

    path = Path(result.get("cwd") or ".") / result["config"]
    model = (yaml.safe_load(path.read_text()) or {}).get("model") or {} if path.is_file() else {}
    return model.get("scheme_options") or {}


if __name__ == "__main__":
    main()
