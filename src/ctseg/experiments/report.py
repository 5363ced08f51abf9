"""``ctseg report``: the paper's Table 1 and figures from the ``results.json`` files of ``ctseg grid`` runs, and
a per-run report of a plain ``ctseg fit`` run.

**What is reported.** Each RUN_DIR is one of two kinds. One with a ``results.json`` at or below it holds grid
results: all of them make Table 1 and its figures (below), written into ``--out``. One without holds ``ctseg fit``
runs (the folder itself, or the fit run folders below it: ``lightning_logs/version_N/`` with a ``metrics.csv`` or
``config.yaml``, :mod:`ctseg.experiments.report_fit`): each gets its own report (per-class ``table.md`` /
``table.csv``, ``confusion.csv`` / ``confusion.png``, ``curves.png``: :mod:`ctseg.experiments.report_run`) —
written into ``--out`` itself when it is the only thing reported, else into ``--out/<run folder name>/`` (``-2``,
``-3`` … appended on a clash), so grid results and fit runs can be reported together. A RUN_DIR with neither is
an error naming it and both kinds.

Outputs of the grid results (each written atomically into the output folder):

* ``table.md`` / ``table.csv`` — Table 1 layout, one block per data set: for every model (DS, UF, PF, …) the
  columns baseline / CL / InfoNCE (/ MS / MSCS when present); rows: number of runs, mean mIoU over seeds, its
  standard deviation, then the mean IoU of every class, mean F1 and OA. The standard deviation is the *sample*
  standard deviation over seeds (``ddof = 1``); with a single run it is undefined and printed as ``–`` (empty in
  the CSV). Means skip runs where a class scored NaN (absent from truth and prediction). In ``table.md`` the best
  mean of each row within a model is bold; classes left out of mIoU (ISPRS clutter) carry a ``*``. When the runs
  hold boundary scores (:mod:`ctseg.evaluation.boundary`, ``results.json`` ``mbiou`` / ``mbf1``), four rows follow OA —
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
are always written. A RUN_DIR with neither kind of run, or an unwritable output folder, is an error.

A results folder may come from someone else (:mod:`ctseg.safety`: a handed file is data, never directions).
``results.json`` is parsed within bounds (a crafted one — 200,000 nested brackets, 1 GB — is one error line);
a checkpoint or CSV log it names is opened only inside the run's own folder (others: a note, never read), a
checkpoint that could run code refuses the whole report (exit 2) before anything is written (a fit run's
checkpoints and ``config.yaml`` too: every file of every run is checked before the first output); the data module
for ``qualitative.png`` is built only when it is one of ctseg's own, from a checked few of its recorded
arguments and without a decoded cache (:mod:`ctseg.experiments.report_figures`), so the report reads the data and writes
nothing but its outputs, into ``--out``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ctseg.errors import CtsegError
from ctseg.experiments.report_figures import (
    check_checkpoints,
    curves_figure,
    patch_sampling_figure,
    qualitative_figure,
    run_log,
    synthetic_crop,
)
from ctseg.experiments.report_fit import FitRun, find_fit_runs, read_fit_run
from ctseg.experiments.report_results import clip_fraction, collect_results, foreign_paths
from ctseg.experiments.report_run import make_run_report
from ctseg.experiments.report_tables import Cell, group_results, render_runs, render_tables
from ctseg.io import ensure_writable_dir, write_text_atomic

__all__ = [
    "Cell",
    "check_checkpoints",
    "clip_fraction",
    "collect_results",
    "curves_figure",
    "group_results",
    "make_report",
    "make_run_report",
    "patch_sampling_figure",
    "qualitative_figure",
    "render_runs",
    "render_tables",
    "run_log",
    "split_run_dirs",
]

#: What the grid results write into ``--out``: a fit run's report folder never takes one of these names.
_GRID_OUTPUTS = {"table.md", "table.csv", "runs.md", "runs.csv", "qualitative.png", "patch_sampling.png", "curves.png"}


def split_run_dirs(run_dirs: Sequence[str | os.PathLike]) -> tuple[list[Path], list[Path]]:
    """``(grid folders, fit run folders)``: the RUN_DIRs with a ``results.json`` at or below them, and the fit runs
    in the others (module docstring); one without either is an error naming it."""
    if not run_dirs:
        raise CtsegError("no run folders given")
    grid: list[Path] = []
    fits: list[Path] = []
    for d in map(Path, run_dirs):
        if not d.exists():
            raise CtsegError(f"run folder {d} does not exist")
        if (d.is_file() and d.name == "results.json") or (d.is_dir() and next(d.rglob("results.json"), None)):
            grid.append(d)
            continue
        found = find_fit_runs(d) if d.is_dir() else []
        if not found:
            raise CtsegError(
                f"{d} holds no results.json (a 'ctseg grid' run) and no 'ctseg fit' run (lightning_logs/version_N/ "
                "with metrics.csv or config.yaml); pass the folder of either (run 'ctseg grid' or 'ctseg fit' first)"
            )
        fits += found
    return grid, list(dict.fromkeys(f.resolve() for f in fits))


def _run_outputs(out: Path, runs: list[FitRun], alone: bool) -> list[Path]:
    """Each fit run's report folder: ``out`` for a run reported alone, else ``out/<run folder name>``."""
    if alone and len(runs) == 1:
        return [out]
    taken = set(_GRID_OUTPUTS)
    folders = []
    for run in runs:
        name, n = run.name, 1
        while name in taken:
            n += 1
            name = f"{run.name}-{n}"
        taken.add(name)
        folders.append(out / name)
    return folders


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
    """Report the grid results and fit runs in ``run_dirs`` into ``out`` (module docstring): for grid results
    ``table.md``, ``table.csv``, ``runs.md``, ``runs.csv`` and the figures (``figures``: whether to draw them), for
    each fit run its own report; returns the written paths. Everything is read and checked before the first write."""
    if crops < 1:
        raise CtsegError(f"--crops must be at least 1, got {crops}")
    from ctseg.contrastive.schemes import SCHEMES

    if highlight not in SCHEMES or highlight == "none":
        choices = ", ".join(x for x in SCHEMES if x != "none")
        raise CtsegError(f"--highlight {highlight!r}: choose one of {choices}")
    from ctseg.inference.tile import resolve_device

    resolve_device(device)  # "cuda" without a GPU is an error before anything is written
    grid_dirs, fit_dirs = split_run_dirs(run_dirs)
    results = collect_results(grid_dirs) if grid_dirs else []
    if sample_class is not None and results:
        known = {str(n) for r in results for n in (r.get("class_names") or r["iou"])}
        if sample_class not in known:
            raise CtsegError(
                f"--sample-class {sample_class!r} is not a class of these runs: {', '.join(sorted(known))}"
            )
    for note in foreign_paths(results):  # files a results.json names outside its run folder: never opened
        echo(note)
    if figures:
        check_checkpoints(results)
    runs = [read_fit_run(d) for d in fit_dirs]  # configs parsed, checkpoints checked: may refuse (exit 2)
    for run in runs:
        for note in run.notes:
            echo(note)
    out = ensure_writable_dir(out, "report folder")
    written = _grid_report(results, out, highlight, crops, sample_class, device, figures, echo) if results else []
    for run, folder in zip(runs, _run_outputs(out, runs, alone=not results), strict=True):
        written += make_run_report(run, folder, device=device, echo=echo)
    return written


def _grid_report(results, out: Path, highlight, crops, sample_class, device, figures, echo) -> list[Path]:
    """Table 1, the run list and the figures of grid results (module docstring)."""
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
    image, mask, info = crop if crop is not None else synthetic_crop()
    patch_sampling_figure(image, mask, info, out / "patch_sampling.png", sample_class)
    written.append(out / "patch_sampling.png")
    try:
        curves_figure(grouped, out / "curves.png", echo)
        written.append(out / "curves.png")
    except CtsegError as err:
        echo(f"report: skipped curves.png: {err}")
    return written
