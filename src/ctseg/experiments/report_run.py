"""``ctseg report`` on one ``ctseg fit`` run: a folder with checkpoints and logs but no ``results.json``
(:func:`make_run_report`; the folder is read by :mod:`ctseg.experiments.report_fit`, which also says which
checkpoint is reported and where its scores come from).

Outputs (each written atomically into the run's report folder):

* ``table.md`` / ``table.csv`` — the reported checkpoint's validation scores: IoU and F1 of every class, mIoU,
  mean F1, OA, and boundary IoU / F1 (per class and their means) when the run logged them. The line under the
  title (``table.md``) and the ``source`` row (``table.csv``, a ``row,value`` list whose row names follow
  Table 1's: ``mIoU``, ``IoU <class>``, ``mean F1``, ``OA``, ``boundary IoU`` …) say where they come from: the
  run's ``metrics.csv`` row of that checkpoint's validation, as logged during training, or — when the log does
  not show it — **re-scored** now from the confusion matrix below with the ISPRS formulas
  (:mod:`ctseg.evaluation.metrics`; no boundary scores then). Means average the evaluated classes (``*``: kept
  in the confusion matrix and OA only, e.g. ISPRS clutter). The table is always written; with no scores at all
  it says why.
* ``confusion.csv`` / ``confusion.png`` — the confusion matrix ``M`` of that checkpoint on the validation split
  of the run's data module (rebuilt read-only, :mod:`ctseg.experiments.report_data`), computed as the task
  validates: the whole crop through the model, logits resized (bilinear) to the label's size, argmax.
  ``M[t, p]`` counts the pixels of true class ``t`` predicted ``p``; ignore pixels (and labels outside the
  classes) are left out, so ``Σ M`` is the number of labelled validation pixels. The CSV holds the counts
  (rows = truth, columns = prediction, class names on both); the figure is row-normalised,
  ``R[t, p] = M[t, p] / Σ_q M[t, q]`` in percent (:func:`ctseg.evaluation.metrics.normalise_rows`), so its
  diagonal is each class's recall. Skipped with a note when the checkpoint or the data cannot be used.
* ``curves.png`` — ``train/seg``, ``train/contrastive`` and ``val/miou`` over optimizer steps from the run's
  ``metrics.csv`` (all versions), drawn by the grid report's curves code; skipped with a note without them.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from ctseg.errors import CtsegError
from ctseg.experiments.report_data import build_datamodule, val_batches
from ctseg.experiments.report_fit import FitRun
from ctseg.experiments.report_tables import CURVE_METRICS
from ctseg.io import ensure_writable_dir, write_text_atomic

__all__ = ["confusion_counts", "logged_scores", "make_run_report", "render_run_table"]

#: Scores of one run: ``iou``, ``f1``, ``biou``, ``bf1`` (class name → value) and the means below.
_MEANS = (("mIoU", "miou"), ("mean F1", "mf1"), ("OA", "oa"), ("boundary IoU", "mbiou"), ("boundary F1", "mbf1"))
_PER_CLASS = (("IoU", "iou"), ("F1", "f1"), ("bIoU", "biou"), ("bF1", "bf1"))


def confusion_counts(run: FitRun, device: str = "cpu") -> tuple[np.ndarray, list[str], list[int] | None]:
    """``(M, class names, evaluated classes)``: the confusion matrix (``(K, K)`` int64 counts, rows = truth) of
    the run's reported checkpoint on its data module's validation split (module docstring)."""
    import torch

    from ctseg.checkpoints.files import load_model
    from ctseg.data.definitions import DatasetInfo
    from ctseg.evaluation.metrics import SegmentationMetrics
    from ctseg.inference.tile import resolve_device

    if run.checkpoint is None:
        raise CtsegError("no readable checkpoint in the run's checkpoints/ folder")
    if run.config_path is None:
        raise CtsegError("the run has no lightning_logs/version_N/config.yaml to rebuild its data from")
    dm = build_datamodule(run.config.get("data"))  # only ctseg's own, checked, read-only; before any loading
    dev = resolve_device(device)
    loaded = load_model(run.checkpoint, device=dev)
    k = len(loaded.class_names)
    metric = SegmentationMetrics(k, ignore_index=loaded.ignore_index, eval_classes=loaded.eval_classes)
    with torch.inference_mode():
        for batch in val_batches(dm):
            info = getattr(dm, "info", None)
            if isinstance(info, DatasetInfo) and info.num_classes != k:
                raise CtsegError(f"the run's data has {info.num_classes} classes, its checkpoint {k}")
            y = batch["mask"]
            logits = loaded.model(batch["image"].to(dev))
            if logits.shape[-2:] != y.shape[-2:]:  # scored at the label's size, as the task validates
                logits = torch.nn.functional.interpolate(logits.float(), size=y.shape[-2:], mode="bilinear",
                                                         align_corners=False)  # fmt: skip
            metric.update(logits.argmax(1).cpu(), y)
    counts = metric.confmat.cpu().numpy().astype(np.int64)
    if counts.sum() == 0:
        raise CtsegError("the validation split has no labelled pixel")
    return counts, list(loaded.class_names), loaded.eval_classes


def logged_scores(run: FitRun, names: list[str]) -> dict[str, Any]:
    """The scores in the run's chosen ``metrics.csv`` row (``val/iou_<class>``, ``val/miou`` …)."""
    row = run.row or {}
    out: dict[str, Any] = {key: row.get(f"val/{key}") for _, key in _MEANS}
    out.update({"mbiou": row.get("val/biou"), "mbf1": row.get("val/bf1")})
    for _, key in _PER_CLASS:
        out[key] = {n: row.get(f"val/{key}_{n}") for n in names}
    return out


def _rescored(counts: np.ndarray, names: list[str], evals: list[int] | None) -> dict[str, Any]:
    import torch

    from ctseg.evaluation.metrics import confusion_matrix_scores

    res = confusion_matrix_scores(torch.as_tensor(counts), evals)
    out: dict[str, Any] = {key: float(res[key]) for key in ("miou", "mf1", "oa")}
    out.update({key: {n: float(v) for n, v in zip(names, res[key].tolist(), strict=True)} for key in ("iou", "f1")})
    return out


def _cell(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def _text(value: str) -> str:
    """A name from the run's files, safe inside a Markdown table cell."""
    return " ".join(value.split()).replace("|", "\\|")


def render_run_table(
    run: FitRun, scores: dict[str, Any] | None, names: list[str], evals: list[int] | None, source: str, extra=()
) -> tuple[str, str]:
    """``(markdown, csv)`` of one run's per-class table (module docstring); ``source``: where the scores come
    from (the header line); ``extra``: paragraphs after the table."""
    excluded = set() if evals is None else set(range(len(names))) - set(evals)
    star = [f"{n}{'*' if i in excluded else ''}" for i, n in enumerate(names)]
    md = [f"# Validation scores: {_text(run.name)}", "", f"Source: {_text(source)}", ""]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerows([["row", "value"], ["source", source]])
    if scores is not None:
        boundary = scores.get("mbiou") is not None or scores.get("mbf1") is not None
        cols = _PER_CLASS if boundary else _PER_CLASS[:2]
        md += ["| class | " + " | ".join(("IoU", "F1", "boundary IoU", "boundary F1")[: len(cols)]) + " |",
               "|---|" + "---:|" * len(cols)]  # fmt: skip
        for n, shown in zip(names, star, strict=True):
            md.append(f"| {_text(shown)} | " + " | ".join(_cell(scores[key].get(n)) for _, key in cols) + " |")
        means = ("miou", "mf1", "mbiou", "mbf1")[: len(cols)]
        md.append("| **mean** | " + " | ".join(f"**{_cell(scores.get(key))}**" for key in means) + " |")
        md += ["", f"OA {_cell(scores.get('oa'))}. Means average the evaluated classes"
               + (" (* kept in the confusion matrix and OA only, not averaged)" if excluded else "")
               + "." + (f" Boundary IoU / F1: Cheng et al., CVPR 2021, contours within {_tolerance(run)} "
                        "(ctseg.evaluation.boundary)." if boundary else "")]  # fmt: skip
        for label, key in _MEANS:
            value = scores.get(key)
            writer.writerow([label, "" if value is None else repr(float(value))])
        for label, key in _PER_CLASS:
            for n, shown in zip(names, star, strict=True):
                value = scores.get(key, {}).get(n)
                writer.writerow([f"{label} {shown}", "" if value is None else repr(float(value))])
    for paragraph in extra:
        md += ["", paragraph]
    return "\n".join(md) + "\n", buf.getvalue()


def _tolerance(run: FitRun) -> str:
    """The boundary tolerance ``d`` the run logged its boundary scores at (its first one), from its config."""
    model = run.config.get("model") if isinstance(run.config.get("model"), dict) else {}
    d = model.get("boundary_tolerance", 3)
    d = d[0] if isinstance(d, list) and d else d
    return f"d = {d} pixels" if type(d) is int else "d pixels"


def _confusion_csv(counts: np.ndarray, names: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["truth \\ prediction", *names])
    for name, row in zip(names, counts.tolist(), strict=True):
        writer.writerow([name, *row])
    return buf.getvalue()


def _chosen(run: FitRun) -> str:
    if run.kind == "best":
        return f"the best by {run.monitor}, {run.mode}"
    return "the last checkpoint: no best one"


def _source(run: FitRun, counts: np.ndarray | None, why: str) -> str:
    """The table's header line: where its numbers come from."""
    ckpt = run.relative(run.checkpoint)
    if run.row is not None:
        logs = ", ".join(run.relative(p) for p in run.logs)
        if run.checkpoint is None:
            best = "highest" if run.mode == "max" else "lowest"
            return (f"the metrics.csv row with the {best} {run.monitor} (step {run.row_step}; {logs}), as logged "
                    "during training; the run folder has no readable checkpoint.")  # fmt: skip
        return (f"the metrics.csv row of step {run.row_step} ({logs}), as logged during training: the validation of "
                f"{ckpt} ({_chosen(run)}; saved after {run.global_step} steps).")  # fmt: skip
    if counts is not None:
        return (
            f"re-scored now from the confusion matrix of {ckpt} ({_chosen(run)}) on the validation split (the "
            "run's metrics.csv shows no validation of this checkpoint); boundary scores not computed."
        )
    return f"no scores: the run's metrics.csv shows no validation of {ckpt}, and it cannot be re-scored ({why})."


def _limited(run: FitRun) -> str | None:
    trainer = run.config.get("trainer") if isinstance(run.config.get("trainer"), dict) else {}
    limit = trainer.get("limit_val_batches")
    if isinstance(limit, int | float) and not isinstance(limit, bool) and limit != 1:
        return (f"The run validated on limit_val_batches = {limit} of the split; the confusion matrix covers all "
                "of it, so its numbers can differ from the logged ones.")  # fmt: skip
    return None


def make_run_report(run: FitRun, out: str | Path, *, device: str = "auto", echo=print) -> list[Path]:
    """Write ``table.md``, ``table.csv``, ``confusion.csv``, ``confusion.png`` and ``curves.png`` (those that can
    be made) for one fit run into ``out``; returns the written paths. ``run.notes`` are the caller's to print."""
    from ctseg.experiments.figures import plot_confusion, plot_curves
    from ctseg.experiments.report_figures import log_curves

    out = ensure_writable_dir(out, "report folder")
    counts = names = evals = None
    why = ""
    try:
        counts, names, evals = confusion_counts(run, device)
    except CtsegError as err:
        why = str(err)
    except (OSError, RuntimeError, ValueError, TypeError, KeyError) as err:
        why = f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"
    if why:
        echo(f"report: {run.folder}: skipped confusion.png: {why}")
    if names is None:  # from the checkpoint's or hparams.yaml's hyper-parameters, else the logged columns
        names = run.class_names or [k[len("val/iou_") :] for k in (run.row or {}) if k.startswith("val/iou_")]
        evals = run.eval_classes if run.class_names else None
    scores = logged_scores(run, names) if run.row is not None else None
    extra = [p for p in [_limited(run) if counts is not None else None] if p]
    if scores is None and counts is not None:
        scores = _rescored(counts, names, evals)
    elif scores is not None and counts is not None:
        again = _rescored(counts, names, evals)
        extra.append(f"Re-scored from the confusion matrix below: mIoU {_cell(again['miou'])}, mean F1 "
                     f"{_cell(again['mf1'])}, OA {_cell(again['oa'])}.")  # fmt: skip
    if counts is not None:
        extra.append(f"Confusion matrix (confusion.csv: pixel counts, rows = truth, columns = prediction; "
                     f"confusion.png: rows normalised, the diagonal is each class's recall): "
                     f"{run.relative(run.checkpoint)} on the validation split, {int(counts.sum()):,} labelled "
                     "pixels, ignore pixels left out.")  # fmt: skip
    md, table_csv = render_run_table(run, scores, names, evals, _source(run, counts, why), extra)
    written = [out / "table.md", out / "table.csv"]
    write_text_atomic(written[0], md)
    write_text_atomic(written[1], table_csv)
    if counts is not None:
        write_text_atomic(out / "confusion.csv", _confusion_csv(counts, names))
        excluded = [] if evals is None else sorted(set(range(len(names))) - set(evals))
        title = f"{run.name}: {run.relative(run.checkpoint)}, validation split ({int(counts.sum()):,} pixels)"
        plot_confusion(counts, names, out / "confusion.png", excluded=excluded, title=title)
        written += [out / "confusion.csv", out / "confusion.png"]
    curves = log_curves(run.steps)
    if not curves:
        echo(f"report: {run.folder}: skipped curves.png: its metrics.csv logs none of {', '.join(CURVE_METRICS)}")
        return written
    missing = [m for m in CURVE_METRICS if m not in curves]
    if missing:
        echo(f"report: {run.folder}: curves.png has no panel for {', '.join(missing)}: the run did not log it")
    plot_curves({run.name: {k: sorted(v.items()) for k, v in curves.items()}}, out / "curves.png")
    return [*written, out / "curves.png"]
