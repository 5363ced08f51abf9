"""``ctseg report``: the paper's Table 1 and figures from the ``results.json`` files of ``ctseg grid`` runs.

Outputs (each written atomically into the output folder):

* ``table.md`` / ``table.csv`` — Table 1 layout, one block per data set: for every model (DS, UF, PF, …) the
  columns baseline / CL / InfoNCE (/ MS / MSCS when present); rows: number of runs, mean mIoU over seeds, its
  standard deviation, then the mean IoU of every class, mean F1 and OA. The standard deviation is the *sample*
  standard deviation over seeds (``ddof = 1``); with a single run it is undefined and printed as ``–`` (empty in
  the CSV). Means skip runs where a class scored NaN (absent from truth and prediction). In ``table.md`` the best
  mean of each row within a model is bold; classes left out of mIoU (ISPRS clutter) carry a ``*``. When the runs
  hold boundary scores (:mod:`ctseg.boundary`, ``results.json`` ``mbiou`` / ``mbf1``), four rows follow OA —
  ``boundary IoU``, its std, ``boundary F1``, its std (same means and ddof = 1 std over seeds) — and a second
  table per data set gives the boundary IoU / F1 of every class (rows ``bIoU <class>``, ``bF1 <class>``; in
  ``table.csv`` these are further rows of the data set). Runs from before ctseg scored boundaries print ``–``.
* ``qualitative.png`` — like the paper's Fig. 3: validation crops with image, truth, the baseline's and the
  highlighted scheme's prediction (the best seed of each, by mIoU), the highlighted scheme's changes outlined
  (white: now right, red: now wrong). Crops are those where the two models disagree most among the first
  validation samples of the data module recorded in the run. Made for the first (data set, model) that has both
  schemes with their checkpoints.
* ``patch_sampling.png`` — like Fig. 2: for one crop and one encoder stage, the CT patch rule for one class:
  positive patches (all pixels of the class) green, negative (none of it, some labelled) red, discarded
  (mixed or unlabelled) grey.
* ``curves.png`` — ``train/seg``, ``train/contrastive`` and ``val/miou`` from the runs' Lightning CSV logs,
  averaged over seeds at equal steps, one line per configuration.

A figure that cannot be made (no checkpoint, data folder gone, no CSV logs) is skipped with a note; the tables
are always written. No ``results.json`` under the folders, or an unwritable output folder, is an error.
"""

from __future__ import annotations

import csv
import importlib
import io
import json
import math
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ctseg.data.definitions import DATASETS, DatasetInfo
from ctseg.errors import CtsegError
from ctseg.io import atomic_path, ensure_writable_dir, write_text_atomic
from ctseg.safe_load import UnsafeFileError

__all__ = ["Cell", "collect_results", "group_results", "make_report", "render_tables"]

SCHEME_ORDER = ("none", "ct-cl", "ct-infonce", "ms", "mscs")
SCHEME_LABELS = {"none": "baseline", "ct-cl": "CL", "ct-infonce": "InfoNCE", "ms": "MS", "mscs": "MSCS"}
MODEL_ORDER = ("ds-paper", "uf-paper", "pf-paper")
MODEL_LABELS = {"ds-paper": "DS", "uf-paper": "UF", "pf-paper": "PF"}
DATASET_ORDER = ("potsdam", "vaihingen", "dubai", "synthetic")
CURVE_METRICS = ("train/seg", "train/contrastive", "val/miou")


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
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise CtsegError(f"{path} is not readable JSON ({type(err).__name__}); remove or fix it") from None
        missing = [k for k in ("model", "scheme", "miou", "iou") if k not in data] if isinstance(data, dict) else []
        if not isinstance(data, dict) or missing or not isinstance(data.get("iou"), dict):
            raise CtsegError(f"{path} is not a ctseg results file (missing {', '.join(missing) or 'iou'})")
        data["_path"] = str(path)
        results.append(data)
    return results


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
        "Boundary IoU / F1 (Cheng et al., CVPR 2021; contour F1 within d pixels; ctseg.boundary) average the "
        "same classes. Bold: the best mean of the row within a model.",
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
    log_dir = result.get("log_dir")
    path = Path(str(log_dir)) / "metrics.csv" if log_dir else None
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


# ----------------------------------------------------------------------------------------------- figures
def _import(class_path: str):
    """The data module class a ``results.json`` names — only one of ctseg's own (``ctseg.*``, a
    LightningDataModule): the file may come from someone else, and its class and arguments are called."""
    import lightning as L

    module, _, name = class_path.rpartition(".")
    if not (module == "ctseg" or module.startswith("ctseg.")) or not name.isidentifier():
        raise CtsegError(
            f"the run's data module {class_path!r} is not one of ctseg's; only ctseg.data modules are rebuilt"
        )
    cls = getattr(importlib.import_module(module), name, None)
    if not (isinstance(cls, type) and issubclass(cls, L.LightningDataModule)):
        raise CtsegError(f"the run's data module {class_path!r} is not a LightningDataModule")
    return cls


def check_checkpoints(results: list[dict[str, Any]]) -> None:
    """Refuse (one line) before anything is written if a run's checkpoint on disk could run code when loaded."""
    from ctseg.checkpoints import read_checkpoint

    for run in results:
        ckpt = run.get("checkpoint")
        if ckpt and Path(str(ckpt)).is_file():
            try:
                read_checkpoint(ckpt, mmap=True)
            except UnsafeFileError:
                raise
            except CtsegError:
                pass  # unreadable: the figure that needs it is skipped with a note


def _datamodule(run: dict[str, Any]):
    """The data module a run was trained with (relative roots resolved against the run's working folder)."""
    spec = run.get("data") or {}
    if not spec.get("class_path"):
        raise CtsegError("the run records no data module")
    kwargs = dict(spec.get("init_args") or {})
    root = kwargs.get("root")
    if root and not Path(root).exists() and run.get("cwd") and (Path(run["cwd"]) / root).exists():
        kwargs["root"] = str(Path(run["cwd"]) / root)
    kwargs.update({k: 0 for k in ("num_workers",) if k in kwargs})
    return _import(spec["class_path"])(**kwargs)


def _val_samples(dm, limit: int) -> tuple[list[np.ndarray], list[np.ndarray], Any]:
    """Up to ``limit`` validation ``(images (C, H, W) normalised float, masks (H, W))`` and the batches' source."""

    dm.setup("validate")
    images, masks = [], []
    for batch in dm.val_dataloader():
        if getattr(dm, "augment_on_device", False) and hasattr(dm, "device_transform"):  # stored dtype
            batch = dm.device_transform(batch, training=False)
        images += list(batch["image"].float().numpy())
        masks += list(batch["mask"].numpy())
        if len(images) >= limit:
            break
    if not images:
        raise CtsegError("the data module has no validation samples")
    return images[:limit], masks[:limit], dm


def _info_for(dataset: str, dm) -> DatasetInfo:
    info = getattr(dm, "info", None)
    return info if isinstance(info, DatasetInfo) else DATASETS.get(dataset, DATASETS["synthetic"])


def _pick_pair(grouped, highlight: str) -> tuple[Cell, Cell] | None:
    for models in grouped.values():
        for cells in models.values():
            base = [c for c in cells if c.scheme == "none"]
            others = [c for c in cells if c.scheme == highlight] or [c for c in cells if c.scheme != "none"]
            if base and others:
                b, o = base[0], others[0]
                if all(Path(str(c.best_run().get("checkpoint") or "")).is_file() for c in (b, o)):
                    return b, o
    return None


def qualitative_figure(
    grouped, path: Path, highlight: str, crops: int, device: str, echo=print
) -> tuple[np.ndarray, np.ndarray, DatasetInfo] | None:
    """Write ``qualitative.png``; returns the first shown crop (image, mask, info) for the patch figure."""
    import torch

    from ctseg.checkpoints import load_model
    from ctseg.figures import plot_predictions
    from ctseg.inference import resolve_device

    pair = _pick_pair(grouped, highlight)
    if pair is None:
        raise CtsegError(f"no (data set, model) has a baseline and a {highlight!r} run with a checkpoint on disk")
    dev = resolve_device(device)
    base, other = pair
    if other.scheme != highlight:
        echo(f"report: no {highlight} run with a checkpoint beside a baseline; qualitative.png shows {other.scheme}")
    runs = {base.label: base.best_run(), other.label: other.best_run()}
    images, masks, dm = _val_samples(_datamodule(runs[base.label]), limit=max(crops, 16))
    info = _info_for(base.dataset, dm)
    preds: dict[str, list[np.ndarray]] = {}
    for label, run in runs.items():
        model = load_model(run["checkpoint"], device=dev).model
        out = []
        with torch.no_grad():
            for i in range(0, len(images), 4):
                x = torch.from_numpy(np.stack(images[i : i + 4])).to(dev)
                logits = model(x)
                size = masks[i].shape[-2:]
                if tuple(logits.shape[-2:]) != tuple(size):  # evaluation masks at their native size (ISPRS: 500)
                    logits = torch.nn.functional.interpolate(logits.float(), size=size, mode="bilinear")
                out += list(logits.argmax(1).cpu().numpy())
        preds[label] = out
    names = list(preds)
    diff = [float((preds[names[0]][i] != preds[names[1]][i]).mean()) for i in range(len(images))]
    pick = sorted(np.argsort(diff, kind="stable")[::-1][:crops].tolist())
    model_label = MODEL_LABELS.get(base.model, base.model)
    shown = {f"{model_label} {n}": [preds[n][i] for i in pick] for n in names}
    plot_predictions(
        [images[i] for i in pick],
        [masks[i] for i in pick],
        shown,
        info,
        path,
        highlight=f"{model_label} {other.label}",
    )
    return images[pick[0]], masks[pick[0]], info


def _choose_stride(size: int) -> int:
    """The coarsest encoder stride that still gives at least 16 patches along the crop side."""
    for stride in (32, 16, 8, 4):
        if size % stride == 0 and size // stride >= 16:
            return stride
    return 4


def patch_sampling_figure(
    image: np.ndarray, mask: np.ndarray, info: DatasetInfo, path: Path, sample_class: str | None = None
) -> None:
    """Write ``patch_sampling.png`` for one crop (normalised (3, H, W) image, (H, W) mask)."""
    import torch

    from ctseg.contrastive.patches import eligibility, patch_class_counts
    from ctseg.figures import denormalize, pyplot

    h, w = mask.shape
    stride = _choose_stride(min(h, w))
    while h % stride or w % stride:
        stride //= 2
    k = info.num_classes
    counts = patch_class_counts(torch.as_tensor(mask, dtype=torch.int64)[None], stride, k, info.ignore_index)
    pos, neg = eligibility(counts, stride, k)
    gh, gw = h // stride, w // stride
    pos, neg = pos.view(k, gh, gw).numpy(), neg.view(k, gh, gw).numpy()
    if sample_class is not None:
        if sample_class not in info.classes:
            raise CtsegError(f"--sample-class {sample_class!r} is not one of: {', '.join(info.classes)}")
        c = info.classes.index(sample_class)
    else:
        candidates = list(info.eval_classes) if info.eval_classes is not None else list(range(k))
        c = max(candidates, key=lambda i: (min(pos[i].sum(), neg[i].sum()), -i))
    p, n = pos[c], neg[c]
    d = ~(p | n)
    colours = {"positive": (0.1, 0.85, 0.1), "negative": (0.9, 0.1, 0.1), "discarded": (0.55, 0.55, 0.55)}
    overlay = np.zeros((gh, gw, 4), dtype=np.float32)
    for sel, key, alpha in ((p, "positive", 0.5), (n, "negative", 0.45), (d, "discarded", 0.65)):
        overlay[sel] = (*colours[key], alpha)
    overlay = overlay.repeat(stride, 0).repeat(stride, 1)
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(11.5, 4.2))
    rgb = denormalize(image, info)
    axes[0].imshow(rgb)
    axes[0].set_title("image")
    axes[1].imshow(info.colorize(mask), interpolation="nearest")
    axes[1].set_title("truth")
    grey = np.repeat(rgb.mean(-1, keepdims=True), 3, axis=-1) * 0.8 + 0.1  # desaturated: the colours read
    axes[2].imshow(grey)
    axes[2].imshow(overlay, interpolation="nearest")
    for x in range(0, w + 1, stride):
        axes[2].axvline(x - 0.5, color="black", linewidth=0.3, alpha=0.5)
    for y in range(0, h + 1, stride):
        axes[2].axhline(y - 0.5, color="black", linewidth=0.3, alpha=0.5)
    stage = {4: 1, 8: 2, 16: 3, 32: 4}.get(stride, "?")
    axes[2].set_title(f"patches for '{info.classes[c]}', stage {stage} (stride {stride})", fontsize=10)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [
        plt.Rectangle((0, 0), 1, 1, color=colours[key], alpha=0.8, label=f"{key} ({int(sel.sum())})")
        for key, sel in (("positive", p), ("negative", n), ("discarded", d))
    ]
    class_handles = [plt.Rectangle((0, 0), 1, 1, color=np.asarray(col) / 255) for col in info.colors]
    fig.legend(handles, [hd.get_label() for hd in handles], loc="lower right", ncol=3, fontsize=9, frameon=False)
    fig.legend(class_handles, info.classes, loc="lower left", ncol=min(k, 6), fontsize=8, frameon=False)
    fig.suptitle("CT patch rule: positive = every pixel of the class, negative = none of it (some labelled), "
                 "discarded = mixed or unlabelled", fontsize=10)  # fmt: skip
    fig.tight_layout(rect=(0, 0.07, 1, 0.95))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def _synthetic_crop() -> tuple[np.ndarray, np.ndarray, DatasetInfo]:
    from ctseg.data.definitions import SYNTHETIC
    from ctseg.data.synthetic import SyntheticAerialDataset

    sample = SyntheticAerialDataset(1, size=256, seed=0, split="val")[0]
    return sample["image"].numpy(), sample["mask"].numpy(), SYNTHETIC


def _read_csv_log(path: Path) -> dict[str, dict[float, float]]:
    out: dict[str, dict[float, float]] = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            step = row.get("step")
            if not step:
                continue
            for key in CURVE_METRICS:
                v = row.get(key)
                if v not in (None, ""):
                    out.setdefault(key, {})[float(step)] = float(v)
    return out


def run_log(run: dict[str, Any]) -> Path | None:
    """The CSV log of a run: ``metrics.csv`` in the log folder ``results.json`` records (``log_dir``); for older
    results without it, the only ``metrics.csv`` below the run folder (``None`` when there are several)."""
    log_dir = run.get("log_dir")
    if log_dir and (Path(str(log_dir)) / "metrics.csv").is_file():
        return Path(str(log_dir)) / "metrics.csv"
    found = sorted(Path(run["_path"]).parent.rglob("metrics.csv"))
    return found[0] if len(found) == 1 else None


def curves_figure(grouped, path: Path, echo=print) -> None:
    """Write ``curves.png``: per configuration, each metric averaged over seeds at equal steps.

    x is the number of optimizer steps done when the value was measured: a training loss logged at step ``s``
    was computed with ``s`` updates done, a validation logged at step ``s`` (Lightning's convention: the last
    training batch before it) ran after ``s + 1``.
    """
    from ctseg.figures import plot_curves

    several = len(grouped) > 1
    curves: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for ds, models in grouped.items():
        for model, cells in models.items():
            for cell in cells:
                acc: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
                for run in cell.runs:
                    log = run_log(run)
                    if log is None:
                        continue
                    for key, series in _read_csv_log(log).items():
                        shift = 1.0 if key.startswith("val/") else 0.0
                        for step, v in series.items():
                            acc[key][step + shift].append(v)
                if acc:
                    name = f"{MODEL_LABELS.get(model, model)} {cell.label}" + (f" ({ds})" if several else "")
                    curves[name] = {
                        key: sorted((s, float(np.mean(v))) for s, v in series.items()) for key, series in acc.items()
                    }
    if not curves:
        raise CtsegError("no Lightning CSV logs (metrics.csv) recorded for the results")
    missing = [m for m in CURVE_METRICS if not any(m in c for c in curves.values())]
    if missing:
        echo(f"report: curves.png has no panel for {', '.join(missing)}: no run logged it")
    plot_curves(curves, path)


# ----------------------------------------------------------------------------------------------- entry point
def make_report(
    run_dirs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    highlight: str = "ct-cl",
    crops: int = 4,
    sample_class: str | None = None,
    device: str = "auto",
    figures: bool = True,
    echo=print,
) -> list[Path]:
    """Gather results, write ``table.md``, ``table.csv``, ``runs.md``, ``runs.csv`` and the figures into ``out``;
    returns the written paths."""
    if crops < 1:
        raise CtsegError(f"--crops must be at least 1, got {crops}")
    from ctseg.schemes import SCHEMES

    if highlight not in SCHEMES or highlight == "none":
        choices = ", ".join(x for x in SCHEMES if x != "none")
        raise CtsegError(f"--highlight {highlight!r}: choose one of {choices}")
    from ctseg.inference import resolve_device

    resolve_device(device)  # "cuda" without a GPU is an error before anything is written
    results = collect_results(run_dirs)
    if sample_class is not None:
        known = {str(n) for r in results for n in (r.get("class_names") or r["iou"])}
        if sample_class not in known:
            raise CtsegError(
                f"--sample-class {sample_class!r} is not a class of these runs: {', '.join(sorted(known))}"
            )
    if figures:
        check_checkpoints(results)
    out = ensure_writable_dir(out, "report folder")
    grouped = group_results(results)
    md, table_csv = render_tables(grouped)
    runs_md, runs_csv = render_runs(results)
    written = [out / "table.md", out / "table.csv", out / "runs.md", out / "runs.csv"]
    for path, text in zip(written, (md, table_csv, runs_md, runs_csv), strict=True):
        write_text_atomic(path, text)
    if not figures:
        return written
    crop = None
    try:
        crop = qualitative_figure(grouped, out / "qualitative.png", highlight, crops, device, echo)
        written.append(out / "qualitative.png")
    except CtsegError as err:
        echo(f"report: skipped qualitative.png: {err}")
    except (OSError, RuntimeError, ValueError, TypeError, KeyError) as err:
        echo(f"report: skipped qualitative.png: {type(err).__name__}: {' '.join(str(err).split())}")
    if crop is None:
        echo("report: patch_sampling.png shows a built-in synthetic scene (no validation crop available)")
    image, mask, info = crop if crop is not None else _synthetic_crop()
    patch_sampling_figure(image, mask, info, out / "patch_sampling.png", sample_class)
    written.append(out / "patch_sampling.png")
    try:
        curves_figure(grouped, out / "curves.png", echo)
        written.append(out / "curves.png")
    except CtsegError as err:
        echo(f"report: skipped curves.png: {err}")
    return written
