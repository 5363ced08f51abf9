"""``ctseg report``'s reading of one ``ctseg fit`` run folder (one with no ``results.json``): its logs, its
config, the checkpoint to report and the logged scores of that checkpoint (:func:`read_fit_run`);
:mod:`ctseg.experiments.report_run` writes the report from what this module reads.

A fit run folder is what ``ctseg fit --trainer.default_root_dir ROOT`` leaves::

    ROOT/checkpoints/best-<epoch>-<step>.ckpt, last.ckpt     (and step-*.ckpt)
    ROOT/lightning_logs/version_N/metrics.csv, config.yaml, hparams.yaml
    ROOT/tensorboard/version_N/…                               (not read)

A folder is taken for one when it holds ``lightning_logs/version_N/`` with a ``metrics.csv`` or a ``config.yaml``
(:func:`is_fit_run`). A resumed run continues in ``version_N+1``: the logs of all versions are read in version
order (a later version's value at the same step wins, :func:`~ctseg.experiments.report_results.read_metrics`);
the config is the newest version's.

**The checkpoint**: among ``checkpoints/best*.ckpt`` the best by the score the monitoring callback recorded in
each file (``checkpoint.monitor`` and ``mode`` of ``config.yaml``; ``val/miou``, ``max`` by default), else
``checkpoints/last.ckpt``. **Its logged scores**: a validation logged at step ``s`` ran after ``s + 1`` optimizer
steps (Lightning's convention; after an exact resume Lightning logs it at ``s + 1`` itself), so the checkpoint's
row is the one at step ``global_step − 1``, else ``global_step`` — taken only when its monitored value is the score
recorded in the checkpoint (same value, or both NaN; a checkpoint that records none: only ``global_step − 1``);
otherwise (or without a log) the report re-scores the checkpoint. Without any checkpoint the row with the best
monitored value is taken.

The folder may come from someone else (:mod:`ctseg.safety`), and what it records is data, never directions:
only files inside the run folder are opened (symlinks resolved,
:func:`~ctseg.experiments.report_results.inside_folder`; others: a note), never a path ``config.yaml`` records
(``checkpoint.dirpath``,
``default_root_dir``); ``config.yaml`` and ``hparams.yaml`` are parsed with the bounded YAML loader
(:func:`ctseg.safety.documents.read_yaml`; a crafted one is one error line); its ``data`` block is rebuilt only
by :mod:`ctseg.experiments.report_data`; a checkpoint is read through :mod:`ctseg.safety.pickles` — one that could
run code refuses the whole report before anything is written, one that cannot be read is skipped with a note.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctseg.errors import CtsegError
from ctseg.experiments.report_results import inside_folder, read_metrics
from ctseg.safety.documents import read_yaml
from ctseg.safety.pickles import UnsafeFileError

__all__ = ["FitRun", "find_fit_runs", "is_fit_run", "read_fit_run"]

_VERSION = re.compile(r"version_(\d{1,9})")
_MAX_CLASSES = 255


@dataclass
class FitRun:
    """What the report uses of one fit run folder (module docstring).

    ``row``: the logged values (``{column: value}``) of the reported checkpoint's validation, with ``row_step``
    its step and ``row_log`` the log it came from; ``None`` when the scores must be re-computed.
    """

    folder: Path
    logs: list[Path] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    config_path: Path | None = None
    monitor: str = "val/miou"
    mode: str = "max"
    checkpoint: Path | None = None
    kind: str | None = None  # "best" | "last"
    global_step: int | None = None
    score: float | None = None
    class_names: list[str] | None = None
    eval_classes: list[int] | None = None
    steps: dict[int, dict[str, float]] = field(default_factory=dict)
    row: dict[str, float] | None = None
    row_step: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.folder.name

    def relative(self, path: Path | None) -> str:
        """``path`` relative to the run folder (for notes and the table's header line)."""
        return "–" if path is None else path.relative_to(self.folder).as_posix()


def _versions(folder: Path) -> list[Path]:
    """``lightning_logs/version_N`` folders of ``folder`` (inside it, symlinks resolved), by N."""
    logs = folder / "lightning_logs"
    if not logs.is_dir():
        return []
    found = []
    for child in logs.iterdir():
        match = _VERSION.fullmatch(child.name)
        if match and child.is_dir():
            found.append((int(match.group(1)), child))
    return [path for _, path in sorted(found)]


def is_fit_run(folder: Path) -> bool:
    """Whether ``folder`` holds ``lightning_logs/version_N/`` with a ``metrics.csv`` or a ``config.yaml``."""
    return any((v / "metrics.csv").is_file() or (v / "config.yaml").is_file() for v in _versions(Path(folder)))


def find_fit_runs(folder: Path) -> list[Path]:
    """``folder`` when it is a fit run, else the fit run folders below it (none below another), by path."""
    folder = Path(folder)
    if is_fit_run(folder):
        return [folder]
    found: list[Path] = []
    for logs in sorted(folder.rglob("lightning_logs")):  # rglob does not descend into symlinked folders
        run = logs.parent
        if is_fit_run(run) and not any(run.is_relative_to(f) for f in found):
            found.append(run)
    return found


def _inside(run: FitRun, path: Path, what: str) -> Path | None:
    """``path`` resolved when inside the run folder; else a note and ``None`` (never opened)."""
    inside = inside_folder(run.folder, path)
    if inside is None:
        run.notes.append(f"report: {path}: the {what} is not inside the run's folder {run.folder}; not read")
    return inside


def _names(value: Any) -> list[str] | None:
    ok = isinstance(value, list) and 0 < len(value) <= _MAX_CLASSES and all(isinstance(n, str) for n in value)
    return [n[:200] for n in value] if ok else None


def _evals(value: Any, k: int) -> list[int] | None:
    ok = isinstance(value, list) and value and all(type(i) is int and 0 <= i < k for i in value)
    return list(value) if ok else None


def _classes(run: FitRun, hp: Any) -> None:
    """Class names and evaluated classes from hyper-parameters (a checkpoint's or ``hparams.yaml``), checked."""
    if run.class_names is None and isinstance(hp, dict):
        run.class_names = _names(hp.get("class_names"))
        if run.class_names is not None:
            info = hp.get("data_info") if isinstance(hp.get("data_info"), dict) else {}
            run.eval_classes = _evals(hp.get("eval_classes", info.get("eval_classes")), len(run.class_names))


def _score(value: Any) -> float | None:
    try:
        return float(value) if getattr(value, "numel", lambda: 1)() == 1 else None
    except (TypeError, ValueError, RuntimeError):
        return None


def _checkpoint_facts(run: FitRun, path: Path) -> tuple[int | None, float | None, Any] | None:
    """``(global_step, recorded monitor score, hyper_parameters)`` of a checkpoint, read without running code;
    ``None`` (with a note) when it cannot be read. A checkpoint that could run code refuses the report."""
    from ctseg.checkpoints.files import read_checkpoint

    try:
        obj = read_checkpoint(path, mmap=True)
    except UnsafeFileError:
        raise
    except CtsegError as err:
        run.notes.append(f"report: skipped checkpoint {path}: {err}")
        return None
    step = obj.get("global_step")
    score = None
    callbacks = obj.get("callbacks")
    for state in callbacks.values() if isinstance(callbacks, dict) else ():
        if isinstance(state, dict) and state.get("monitor") == run.monitor:
            score = _score(state.get("current_score"))
    return (step if type(step) is int and step >= 0 else None), score, obj.get("hyper_parameters")


def _choose_checkpoint(run: FitRun) -> None:
    folder = run.folder / "checkpoints"
    files = sorted(folder.glob("*.ckpt")) if folder.is_dir() else []
    if not files:
        recorded = run.config.get("checkpoint") if isinstance(run.config.get("checkpoint"), dict) else {}
        where = recorded.get("dirpath")
        if isinstance(where, str) and where and inside_folder(run.folder, where) is None:
            run.notes.append(f"report: {run.config_path}: its checkpoint folder {where[:300]!r} is not inside the "
                             "run's folder; not read")  # fmt: skip
    groups = (("best", [p for p in files if p.name.startswith("best")]),
              ("last", [p for p in files if p.name == "last.ckpt"]))  # fmt: skip
    for kind, paths in groups:
        chosen = None
        for path in paths:
            inside = _inside(run, path, "checkpoint")
            facts = _checkpoint_facts(run, inside) if inside is not None else None
            if facts is None:
                continue
            step, score, hp = facts
            _classes(run, hp)
            key = -math.inf if score is None or math.isnan(score) else score if run.mode == "max" else -score
            if chosen is None or key > chosen[0]:
                chosen = (key, inside, step, score)
        if chosen is not None:
            _, run.checkpoint, run.global_step, run.score = chosen
            run.kind = kind
            return


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def _choose_row(run: FitRun) -> None:
    """The logged validation of the reported checkpoint (module docstring); ``run.row`` stays ``None`` when the
    log does not show it."""
    logged = {s: v for s, v in run.steps.items() if run.monitor in v}
    if run.checkpoint is None:
        finite = {s: v for s, v in logged.items() if not math.isnan(v[run.monitor])}
        if finite:
            sign = 1.0 if run.mode == "max" else -1.0
            run.row_step = max(finite, key=lambda s: (sign * finite[s][run.monitor], -s))
            run.row = finite[run.row_step]
        return
    if run.global_step is None:
        return
    for step in (run.global_step - 1, run.global_step):
        values = logged.get(step)
        if values is None:
            continue
        if _same(values[run.monitor], run.score) if run.score is not None else step < run.global_step:
            run.row_step, run.row = step, values
            return


def read_fit_run(folder: Path) -> FitRun:
    """Read the fit run in ``folder`` for the report (module docstring); notes in ``FitRun.notes``."""
    run = FitRun(Path(folder).resolve())
    for version in _versions(run.folder):
        log, config = version / "metrics.csv", version / "config.yaml"
        if log.is_file() and _inside(run, log, "log") is not None:
            run.logs.append(log)
        if config.is_file() and _inside(run, config, "config") is not None:
            run.config_path = config
    if run.config_path is not None:
        doc = read_yaml(run.config_path, "run config")  # bounded; a crafted one is one error line
        if not isinstance(doc, dict):
            raise CtsegError(f"run config {run.config_path} is not a LightningCLI config (no mapping inside)")
        run.config = doc
        ckpt = doc.get("checkpoint") if isinstance(doc.get("checkpoint"), dict) else {}
        if isinstance(ckpt.get("monitor"), str) and ckpt["monitor"]:
            run.monitor = ckpt["monitor"][:200]
        if ckpt.get("mode") in ("min", "max"):
            run.mode = ckpt["mode"]
    _choose_checkpoint(run)
    if run.class_names is None and run.config_path is not None:
        hparams = run.config_path.with_name("hparams.yaml")
        if hparams.is_file() and _inside(run, hparams, "hyper-parameter file") is not None:
            _classes(run, read_yaml(hparams, "run hyper-parameters"))
    run.steps = read_metrics(run.logs)
    _choose_row(run)
    return run
