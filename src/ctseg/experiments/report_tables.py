"""``ctseg report``, part 1: gathering ``results.json`` files and rendering Table 1, the per-class and boundary
tables and the per-run list (Markdown + CSV).

A results folder may come from someone else (:mod:`ctseg.safety`): each ``results.json`` is parsed with the
bounds of :func:`ctseg.safety.documents.read_json` (size, nesting), and of the files it names — the checkpoint,
the CSV log folder — only those inside the run's own folder (the folder holding that ``results.json``, symlinks
resolved: :func:`inside_run`) are ever opened; the others are skipped with a note (:func:`foreign_paths`).
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np

from ctseg.errors import CtsegError
from ctseg.safety.documents import read_json

SCHEME_ORDER = ("none", "ct-cl", "ct-infonce", "ms", "mscs")
SCHEME_LABELS = {"none": "baseline", "ct-cl": "CL", "ct-infonce": "InfoNCE", "ms": "MS", "mscs": "MSCS"}
MODEL_ORDER = ("ds-paper", "uf-paper", "pf-paper")
MODEL_LABELS = {"ds-paper": "DS", "uf-paper": "UF", "pf-paper": "PF"}
DATASET_ORDER = ("potsdam", "vaihingen", "dubai", "synthetic")
CURVE_METRICS = ("train/seg", "train/contrastive", "val/miou")
#: results.json fields the tables compute with: numbers (or null), and per-class mappings of numbers.
_NUMBER_FIELDS = ("miou", "mf1", "oa", "mbiou", "mbf1", "wall_seconds", "fit_seconds", "contrastive_clipped")
_PER_CLASS_FIELDS = ("iou", "f1", "biou", "bf1")


# ----------------------------------------------------------------------------------------------- gathering
def collect_results(run_dirs: Sequence[str | os.PathLike]) -> list[dict[str, Any]]:
    """Every ``results.json`` under ``run_dirs`` (recursively), parsed; ``_path`` holds the file's path."""
    if not run_dirs:
        raise CtsegError("no run folders given")
    found: list[Path] = []
    for d in map(Path, run_dirs):
        if not d.exists():
            raise CtsegError(f"run folder {d} does not exist")
        found += [d] if d.is_file() and d.name == "results.json" else sorted(d.rglob("results.json"))
    if not found:
        raise CtsegError(f"no results.json under {', '.join(map(str, run_dirs))}; run 'ctseg grid' first")
    results = []
    for path in dict.fromkeys(p.resolve() for p in found):
        data = read_json(path, "results.json")  # bounded: a crafted file is one error line
        missing = [k for k in ("model", "scheme", "miou", "iou") if k not in data] if isinstance(data, dict) else []
        if not isinstance(data, dict) or missing or not isinstance(data.get("iou"), dict):
            raise CtsegError(f"{path} is not a ctseg results file (missing {', '.join(missing) or 'iou'})")
        wrong = _wrong_field(data)
        if wrong:
            raise CtsegError(f"{path} is not a ctseg results file ({wrong} has the wrong type)")
        data["_path"] = str(path)
        results.append(data)
    return results


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _wrong_field(data: dict[str, Any]) -> str | None:
    """The first field the tables compute with that has the wrong type (a crafted file), or ``None``."""
    for key in _NUMBER_FIELDS:
        if not _is_number(data.get(key)):
            return key
    for key in _PER_CLASS_FIELDS:
        value = data.get(key)
        if value is not None and not (isinstance(value, dict) and all(map(_is_number, value.values()))):
            return key
    if data.get("seed") is not None and type(data["seed"]) is not int:
        return "seed"
    names, evals = data.get("class_names"), data.get("eval_classes")
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        return "class_names"
    if evals is not None and not (isinstance(evals, list) and all(type(i) is int for i in evals)):
        return "eval_classes"
    for key in ("model", "scheme", "dataset", "config_name"):
        if data.get(key) is not None and not isinstance(data[key], (str, int, float)):
            return key
    return None


def run_folder(run: dict[str, Any]) -> Path:
    """The run's own folder: the one holding its ``results.json`` (symlinks resolved)."""
    return Path(run["_path"]).parent.resolve()


def inside_run(run: dict[str, Any], value: Any, *parts: str) -> Path | None:
    """The path ``value`` (joined with ``parts``) that a ``results.json`` records, resolved, when it lies inside
    the run's own folder (:func:`run_folder`; a relative path is taken from there); ``None`` for anything else —
    a file elsewhere is never opened on a handed results file's word."""
    if not isinstance(value, str) or not value or "_path" not in run:
        return None
    folder = run_folder(run)
    try:
        path = (folder / Path(value).joinpath(*parts)).resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    return path if path != folder and path.is_relative_to(folder) else None


def run_checkpoint(run: dict[str, Any]) -> Path | None:
    """The run's checkpoint file inside its own folder: the recorded path when it lies there, else — a results
    folder copied from another machine records the old absolute path — a file of the same name in the run's
    ``checkpoints/`` folder or the run folder itself, when its SHA-256 is the recorded ``checkpoint_sha256`` (if
    any). ``None`` when there is none (nothing outside the run's folder is opened)."""
    recorded = run.get("checkpoint")
    path = inside_run(run, recorded)
    if path is not None and path.is_file():
        return path
    if not isinstance(recorded, str) or "_path" not in run:
        return None
    name = PureWindowsPath(recorded).name if "\\" in recorded else PurePosixPath(recorded).name
    for candidate in (f"checkpoints/{name}", name):
        found = inside_run(run, candidate) if name not in ("", ".", "..") else None
        if found is not None and found.is_file():
            want = run.get("checkpoint_sha256")
            return found if not isinstance(want, str) or _sha256(found) == want else None
    return None


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def foreign_paths(results: list[dict[str, Any]]) -> list[str]:
    """One note per file a ``results.json`` names outside its run's folder (``checkpoint``, ``log_dir``): those
    are not read (the checkpoint's figure is then skipped; a log is looked for below the run's folder instead)."""
    notes = []
    for run in results:
        for key, what in (("checkpoint", "checkpoint"), ("log_dir", "log folder")):
            value = run.get(key)
            if key == "checkpoint" and value and inside_run(run, value) is None and run_checkpoint(run) is not None:
                continue  # a moved run folder: its own copy of the checkpoint is used
            if value and inside_run(run, value) is None:
                notes.append(
                    f"report: {run['_path']}: its {what} {str(value)[:300]!r} is not inside the run's folder; not read"
                )
    return notes


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


def clip_fraction(result: dict[str, Any]) -> float | None:
    """Fraction of a run's training steps whose contrastive term was clipped (passed no contrastive gradient).

    From ``results.json`` (``contrastive_clipped``, counted by the task) or else from the run's CSV log: the
    per-epoch means of ``train/contrastive_clipped`` weighted by the steps of each epoch. ``None`` when the run
    logged no such value (no CT, or a run from before ctseg logged it).
    """
    if result.get("contrastive_clipped") is not None:
        return float(result["contrastive_clipped"])
    path = inside_run(result, result.get("log_dir"), "metrics.csv")
    if path is None or not path.is_file():
        return None
    points: list[tuple[int, float]] = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            value, step = row.get("train/contrastive_clipped"), row.get("step")
            if value not in (None, "") and step not in (None, ""):
                points.append((int(float(step)), float(value)))
    if not points:  # e.g. a baseline: no contrastive term, nothing clipped
        return None
    points.sort()
    weights = [b[0] - a[0] for a, b in zip([(0, 0.0), *points[:-1]], points, strict=True)]
    total = sum(weights)
    return sum(w * v for w, (_, v) in zip(weights, points, strict=True)) / total if total > 0 else None


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
