"""``ctseg report``: the paper's Table 1 and figures from the ``results.json`` files of ``ctseg grid`` runs.

Outputs (each written atomically into the output folder):

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
are always written. No ``results.json`` under the folders, or an unwritable output folder, is an error.

A results folder may come from someone else (:mod:`ctseg.safety`: a handed file is data, never directions).
``results.json`` is parsed within bounds (a crafted one — 200,000 nested brackets, 1 GB — is one error line);
a checkpoint or CSV log it names is opened only inside the run's own folder (others: a note, never read), a
checkpoint that could run code refuses the whole report (exit 2) before anything is written; the data module
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
from ctseg.experiments.report_results import clip_fraction, collect_results, foreign_paths
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
    "patch_sampling_figure",
    "qualitative_figure",
    "render_runs",
    "render_tables",
    "run_log",
]


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
    from ctseg.contrastive.schemes import SCHEMES

    if highlight not in SCHEMES or highlight == "none":
        choices = ", ".join(x for x in SCHEMES if x != "none")
        raise CtsegError(f"--highlight {highlight!r}: choose one of {choices}")
    from ctseg.inference.tile import resolve_device

    resolve_device(device)  # "cuda" without a GPU is an error before anything is written
    results = collect_results(run_dirs)
    if sample_class is not None:
        known = {str(n) for r in results for n in (r.get("class_names") or r["iou"])}
        if sample_class not in known:
            raise CtsegError(
                f"--sample-class {sample_class!r} is not a class of these runs: {', '.join(sorted(known))}"
            )
    for note in foreign_paths(results):  # files a results.json names outside its run folder: never opened
        echo(note)
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
    image, mask, info = crop if crop is not None else synthetic_crop()
    patch_sampling_figure(image, mask, info, out / "patch_sampling.png", sample_class)
    written.append(out / "patch_sampling.png")
    try:
        curves_figure(grouped, out / "curves.png", echo)
        written.append(out / "curves.png")
    except CtsegError as err:
        echo(f"report: skipped curves.png: {err}")
    return written
