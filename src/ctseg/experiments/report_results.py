"""``ctseg report``'s reading of the runs: gathering and checking the ``results.json`` files under the run
folders (:func:`collect_results`), the files a run records that may be opened — only inside the run's own folder
(:func:`run_folder`, :func:`inside_run`, :func:`run_checkpoint`, with a note for the others:
:func:`foreign_paths`) — and the fraction of clipped contrastive steps from a run's CSV log
(:func:`clip_fraction`). :mod:`ctseg.experiments.report_tables` renders the tables from what this module reads,
:mod:`ctseg.experiments.report_figures` the figures.

A results folder may come from someone else (:mod:`ctseg.safety`): each ``results.json`` is parsed with the
bounds of :func:`ctseg.safety.documents.read_json` (size, nesting), and of the files it names — the checkpoint,
the CSV log folder — only those inside the run's own folder (the folder holding that ``results.json``, symlinks
resolved: :func:`inside_run`) are ever opened; the others are skipped with a note (:func:`foreign_paths`).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from ctseg.errors import CtsegError
from ctseg.io import sha256_file
from ctseg.safety.documents import read_json

__all__ = [
    "clip_fraction",
    "collect_results",
    "foreign_paths",
    "inside_folder",
    "inside_run",
    "read_metrics",
    "run_checkpoint",
    "run_folder",
]

#: results.json fields the tables compute with: numbers (or null), and per-class mappings of numbers.
_NUMBER_FIELDS = ("miou", "mf1", "oa", "mbiou", "mbf1", "wall_seconds", "fit_seconds", "contrastive_clipped")
_PER_CLASS_FIELDS = ("iou", "f1", "biou", "bf1")


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


def inside_folder(folder: Path, value: Any, *parts: str) -> Path | None:
    """The path ``value`` (joined with ``parts``; a relative one taken from ``folder``), resolved, when it lies
    inside ``folder`` (itself resolved, and not ``folder`` itself); ``None`` for anything else — symlinks out
    of the folder and ``..`` included."""
    if not isinstance(value, str | os.PathLike) or not str(value):
        return None
    try:
        folder = Path(folder).resolve()
        path = (folder / Path(value).joinpath(*parts)).resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    return path if path != folder and path.is_relative_to(folder) else None


def inside_run(run: dict[str, Any], value: Any, *parts: str) -> Path | None:
    """The path ``value`` (joined with ``parts``) that a ``results.json`` records, resolved, when it lies inside
    the run's own folder (:func:`run_folder`; a relative path is taken from there); ``None`` for anything else —
    a file elsewhere is never opened on a handed results file's word."""
    if not isinstance(value, str) or not value or "_path" not in run:
        return None
    return inside_folder(run_folder(run), value, *parts)


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
            return found if not isinstance(want, str) or sha256_file(found) == want else None
    return None


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


def read_metrics(paths: Sequence[Path]) -> dict[int, dict[str, float]]:
    """The values of Lightning CSV logs (``metrics.csv``) by step: ``{step: {column: value}}``.

    The rows of one step are merged (Lightning writes a training and a validation row at the same step), and the
    logs are read in the order given: a later log's value of a column at a step replaces an earlier one (a
    resumed run continues in ``version_N+1``). Empty cells and cells that are not numbers are left out (NaN is a
    number: a validation without labelled pixels). A file the ``csv`` module cannot read is one error line.
    """
    steps: dict[int, dict[str, float]] = {}
    for path in paths:
        try:
            with open(path, newline="", errors="replace") as fh:
                for row in csv.DictReader(fh):
                    step = _float(row.get("step"))
                    if step is None or not step.is_integer() or step < 0:
                        continue
                    values = steps.setdefault(int(step), {})
                    for key, text in row.items():
                        value = _float(text) if isinstance(key, str) and key not in ("epoch", "step") else None
                        if value is not None:
                            values[key] = value
        except (csv.Error, OSError) as err:
            raise CtsegError(f"log {path} cannot be read as a CSV log ({' '.join(str(err).split())[:200]})") from None
    return steps


def _float(text: Any) -> float | None:
    try:
        return float(text) if isinstance(text, str) and text.strip() else None
    except ValueError:
        return None
