"""``ctseg report``, part 1: the tables — the runs grouped into the cells of Table 1 (:func:`group_results`),
Table 1 with the per-class and boundary tables (:func:`render_tables`) and the per-run list
(:func:`render_runs`), as Markdown and CSV. The runs come from :mod:`ctseg.experiments.report_results`, which
gathers and checks the ``results.json`` files and reads only the files inside each run's own folder; its public
names are importable from here too.
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ctseg.experiments.report_results import (
    clip_fraction,
    collect_results,
    foreign_paths,
    inside_run,
    run_checkpoint,
    run_folder,
)

__all__ = [
    "CURVE_METRICS",
    "DATASET_ORDER",
    "MODEL_LABELS",
    "MODEL_ORDER",
    "SCHEME_LABELS",
    "SCHEME_ORDER",
    "Cell",
    "clip_fraction",
    "collect_results",
    "foreign_paths",
    "group_results",
    "inside_run",
    "render_runs",
    "render_tables",
    "run_checkpoint",
    "run_folder",
]

SCHEME_ORDER = ("none", "ct-cl", "ct-infonce", "ms", "mscs")
SCHEME_LABELS = {"none": "baseline", "ct-cl": "CL", "ct-infonce": "InfoNCE", "ms": "MS", "mscs": "MSCS"}
MODEL_ORDER = ("ds-paper", "uf-paper", "pf-paper")
MODEL_LABELS = {"ds-paper": "DS", "uf-paper": "UF", "pf-paper": "PF"}
DATASET_ORDER = ("potsdam", "vaihingen", "dubai", "synthetic")
#: The logged metrics drawn in curves.png, in this order.
CURVE_METRICS = ("train/seg", "train/contrastive", "val/miou")


@dataclass
class Cell:
    """The runs of one (data set, model, scheme, config) cell of the table."""

    dataset: str
    model: str
    scheme: str
    config: str
    runs: list[dict[str, Any]] = field(default_factory=list)
    label: str = ""

    def values(self, key: str, cls: str | None = None) -> list[float]:
        out = []
        for r in self.runs:
            v = r.get(key) if cls is None else (r.get(key) or {}).get(cls)
            if v is not None and math.isfinite(float(v)):
                out.append(float(v))
        return out

    def mean(self, key: str, cls: str | None = None) -> float | None:
        vals = self.values(key, cls)
        return float(np.mean(vals)) if vals else None

    def std(self, key: str) -> float | None:
        """Sample standard deviation over seeds (ddof = 1); ``None`` for fewer than two runs."""
        vals = self.values(key)
        return float(np.std(vals, ddof=1)) if len(vals) > 1 else None

    def best_run(self) -> dict[str, Any]:
        return max(self.runs, key=lambda r: -math.inf if r.get("miou") is None else float(r["miou"]))


def _order(value: str, order: Sequence[str]) -> tuple[int, str]:
    return (order.index(value), value) if value in order else (len(order), value)


def group_results(results: list[dict[str, Any]]) -> dict[str, dict[str, list[Cell]]]:
    """data set → model → cells in scheme order (labels: ``baseline``, ``CL`` …; config name added on clashes)."""
    cells: dict[tuple[str, str, str, str], Cell] = {}
    for r in results:
        ds, model, scheme = str(r.get("dataset") or "unknown"), str(r["model"]), str(r["scheme"])
        config = str(r.get("config_name") or Path(str(r.get("config", "?"))).stem)
        key = (ds, model, scheme, config)
        cells.setdefault(key, Cell(ds, model, scheme, config)).runs.append(r)
    grouped: dict[str, dict[str, list[Cell]]] = defaultdict(lambda: defaultdict(list))
    for cell in cells.values():
        cell.runs.sort(key=lambda r: r.get("seed", 0))
        grouped[cell.dataset][cell.model].append(cell)
    out: dict[str, dict[str, list[Cell]]] = {}
    for ds in sorted(grouped, key=lambda d: _order(d, DATASET_ORDER)):
        out[ds] = {}
        for model in sorted(grouped[ds], key=lambda m: _order(m, MODEL_ORDER)):
            row = sorted(grouped[ds][model], key=lambda c: (_order(c.scheme, SCHEME_ORDER), c.config))
            counts = defaultdict(int)
            for c in row:
                counts[c.scheme] += 1
            for c in row:
                base = SCHEME_LABELS.get(c.scheme, c.scheme)
                c.label = base if counts[c.scheme] == 1 else f"{base} ({c.config})"
            out[ds][model] = row
    return out


# ----------------------------------------------------------------------------------------------- tables
def _class_names(cells: list[Cell]) -> tuple[list[str], set[str]]:
    """Class names in order and the names left out of mIoU."""
    names: list[str] = []
    excluded: set[str] = set()
    for c in cells:
        for r in c.runs:
            rn = list(r.get("class_names") or r["iou"].keys())
            for n in rn:
                if n not in names:
                    names.append(n)
            ev = r.get("eval_classes")
            if ev is not None:
                excluded |= {n for i, n in enumerate(rn) if i not in set(ev)}
    return names, excluded


def _rows(cells: list[Cell]) -> list[tuple[str, str, list[float | None]]]:
    """(row label, kind, one value per cell); kind picks formatting: n / mean / std."""
    names, excluded = _class_names(cells)
    rows: list[tuple[str, str, list[float | None]]] = [
        ("runs (seeds)", "n", [float(len(c.runs)) for c in cells]),
        ("mIoU", "mean", [c.mean("miou") for c in cells]),
        ("mIoU std", "std", [c.std("miou") for c in cells]),
    ]
    for n in names:
        rows.append((f"IoU {n}{'*' if n in excluded else ''}", "mean", [c.mean("iou", n) for c in cells]))
    rows.append(("mean F1", "mean", [c.mean("mf1") for c in cells]))
    rows.append(("OA", "mean", [c.mean("oa") for c in cells]))
    if _has_boundary(cells):
        rows.append(("boundary IoU", "mean", [c.mean("mbiou") for c in cells]))
        rows.append(("boundary IoU std", "std", [c.std("mbiou") for c in cells]))
        rows.append(("boundary F1", "mean", [c.mean("mbf1") for c in cells]))
        rows.append(("boundary F1 std", "std", [c.std("mbf1") for c in cells]))
    return rows


def _has_boundary(cells: list[Cell]) -> bool:
    return any(r.get("mbiou") is not None or r.get("mbf1") is not None for c in cells for r in c.runs)


def _tolerances(cells: list[Cell]) -> str:
    found = sorted({int(r["boundary_tolerance"]) for c in cells for r in c.runs if r.get("boundary_tolerance")})
    return " / ".join(map(str, found)) or "?"


def _boundary_definitions(cells: list[Cell]) -> str:
    """The boundary definitions of the runs (``results.json`` ``boundary_definition``, ``boundary_tolerance_shape``;
    ``ctseg, square`` for results written before they were recorded), e.g. ``"ctseg, square"``."""
    found = {
        f"{r.get('boundary_definition') or 'ctseg'}, {r.get('boundary_tolerance_shape') or 'square'}"
        for c in cells
        for r in c.runs
    }
    return " / ".join(sorted(found))


def _boundary_rows(cells: list[Cell]) -> list[tuple[str, str, list[float | None]]]:
    """Per-class boundary IoU and F1 rows (empty when no run holds boundary scores)."""
    if not _has_boundary(cells):
        return []
    names, excluded = _class_names(cells)
    rows = []
    for key, label in (("biou", "bIoU"), ("bf1", "bF1")):
        for n in names:
            rows.append((f"{label} {n}{'*' if n in excluded else ''}", "mean", [c.mean(key, n) for c in cells]))
    return rows


def _fmt(value: float | None, kind: str, digits: int) -> str:
    if value is None:
        return "–"
    if kind == "n":
        return str(int(value))
    return f"{value:.{digits + 1 if kind == 'std' else digits}f}"


def render_tables(grouped: dict[str, dict[str, list[Cell]]], digits: int = 3) -> tuple[str, str]:
    """``(markdown, csv)`` text of Table 1 (layout in the module docstring)."""
    md = [
        "# Results",
        "",
        "Test-set scores of each run's best checkpoint (highest val/miou), averaged over seeds. "
        "mIoU / mean F1 average the evaluated classes (classes marked * stay in the confusion matrix and OA "
        "only); std is the sample standard deviation over seeds (ddof = 1), – for a single run. "
        "Boundary IoU / F1 (Cheng et al., CVPR 2021; contour F1 within d pixels; ctseg.evaluation.boundary) "
        "average the same classes. Bold: the best mean of the row within a model.",
    ]
    all_cols: list[str] = []
    blocks: list[tuple[str, list[str], list[tuple[str, str, list[float | None]]]]] = []
    for ds, models in grouped.items():
        cells = [c for row in models.values() for c in row]
        cols = [f"{MODEL_LABELS.get(c.model, c.model)} {c.label}" for c in cells]
        rows, per_class = _rows(cells), _boundary_rows(cells)
        blocks.append((ds, cols, rows + per_class))
        all_cols += [c for c in cols if c not in all_cols]
        configs = ", ".join(sorted({c.config for c in cells}))
        md += ["", f"## {ds}", "", f"configs: {configs}", ""]
        spans = []  # column ranges per model, for bolding the best mean
        start = 0
        for row in models.values():
            spans.append(range(start, start + len(row)))
            start += len(row)
        md += _md_table(cols, rows, spans, digits)
        if _has_boundary(cells):
            md += ["", f"boundary definition: {_boundary_definitions(cells)}"]
        if per_class:
            md += ["", f"### {ds}: boundary IoU / F1 per class (d = {_tolerances(cells)} px)", ""]
            md += _md_table(cols, per_class, spans, digits)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["dataset", "row", *all_cols])
    for ds, cols, rows in blocks:
        for label, kind, vals in rows:
            by_col = dict(zip(cols, vals, strict=True))
            cells_out = []
            for col in all_cols:
                v = by_col.get(col)
                cells_out.append("" if v is None else (str(int(v)) if kind == "n" else f"{v:.6f}"))
            writer.writerow([ds, label, *cells_out])
    return "\n".join(md) + "\n", buf.getvalue()


def _md_table(
    cols: list[str], rows: list[tuple[str, str, list[float | None]]], spans: list[range], digits: int
) -> list[str]:
    """Markdown lines of one table; the best mean of each row within a model (``spans``) in bold."""
    md = ["| | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for label, kind, vals in rows:
        texts = [_fmt(v, kind, digits) for v in vals]
        if kind == "mean":
            for span in spans:
                present = [i for i in span if vals[i] is not None]
                rounded = {round(vals[i], digits) for i in present}  # type: ignore[arg-type]
                if len(rounded) > 1:
                    best = max(rounded)
                    for i in present:
                        if round(vals[i], digits) == best:  # type: ignore[arg-type]
                            texts[i] = f"**{texts[i]}**"
        md.append(f"| {label} | " + " | ".join(texts) + " |")
    return md


def _num(result: dict[str, Any], key: str, fmt: str) -> str:
    value = result.get(key)
    return "–" if value is None else format(float(value), fmt)


def render_runs(results: list[dict[str, Any]]) -> tuple[str, str]:
    """``(markdown, csv)``: one row per run — config, seed, scores, wall-clock seconds, the fraction of clipped
    contrastive steps (:func:`clip_fraction`), checkpoint SHA-256."""
    keys = ("dataset", "config_name", "model", "scheme", "seed", "miou", "mf1", "oa", "mbiou", "mbf1",
            "wall_seconds", "fit_seconds", "contrastive_clipped", "checkpoint_kind", "checkpoint_sha256")  # fmt: skip
    ordered = sorted(
        results,
        key=lambda r: (
            _order(str(r.get("dataset") or ""), DATASET_ORDER),
            _order(str(r["scheme"]), SCHEME_ORDER),
            str(r.get("config_name") or ""),
            int(r.get("seed") or 0),
        ),
    )
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(keys)
    md = [
        "# Runs",
        "",
        "One row per run: test scores of its best checkpoint (bIoU / bF1: boundary IoU / F1, – when not scored), "
        "wall-clock seconds (fit + test), the fraction of "
        "training steps whose contrastive loss was clipped (no contrastive gradient under the value clip; – without "
        "CT or when not logged), and the SHA-256 of the checkpoint that was scored.",
        "",
        "| data set | config | scheme | seed | mIoU | mean F1 | OA | bIoU | bF1 | wall s | clipped "
        "| checkpoint SHA-256 |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in ordered:
        r = {**r, "contrastive_clipped": clip_fraction(r)}
        writer.writerow(["" if r.get(k) is None else r.get(k) for k in keys])
        md.append(
            f"| {r.get('dataset') or '?'} | {r.get('config_name') or '?'} | {r['scheme']} | {r.get('seed', '?')} | "
            f"{_num(r, 'miou', '.4f')} | {_num(r, 'mf1', '.4f')} | {_num(r, 'oa', '.4f')} | "
            f"{_num(r, 'mbiou', '.4f')} | {_num(r, 'mbf1', '.4f')} | "
            f"{_num(r, 'wall_seconds', '.0f')} | {_num(r, 'contrastive_clipped', '.0%')} | "
            f"`{r.get('checkpoint_sha256') or '?'}` |"
        )
    return "\n".join(md) + "\n", buf.getvalue()
