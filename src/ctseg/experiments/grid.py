"""``ctseg grid``: every config × several seeds, each trained, then tested on its best checkpoint.

Run ``(config, seed)`` lives in ``OUT/<config stem>/seed<N>/`` and is exactly ``ctseg fit --config CONFIG
--seed_everything N --data.init_args.seed N --trainer.default_root_dir OUT/<stem>/seed<N> [extra overrides]``,
run in-process through the same LightningCLI (``run=False``), followed by ``trainer.test`` on the best
checkpoint: the best by the monitored metric of the ``checkpoint`` callback (``checkpoint.monitor``,
``val/miou`` by default; the paper selects on validation mean F1: ``checkpoint.monitor: val/mf1``), the last
checkpoint when no best was recorded (:func:`best_checkpoint`). The test split is the validation split for the
ISPRS / Dubai data modules (the paper's protocol: the 14 Potsdam test tiles) and the held-out test scenes for
the synthetic set. Logs go to the run folder (CSV: ``lightning_logs/version_*/metrics.csv``; TensorBoard:
``tensorboard/version_*``) unless the config names another logger.

The run ends with ``results.json`` (written atomically, last)::

    {"format": "ctseg-results", "version": 1, "config": "potsdam/ds-cl", "config_name": "ds-cl",
     "dataset": "potsdam", "model": "ds-paper", "scheme": "ct-cl", "seed": 0, "split": "test",
     "class_names": [...], "eval_classes": [...] | null,
     "miou": 0.77, "mf1": 0.86, "oa": 0.89, "iou": {class: value}, "f1": {class: value},   # NaN → null
     "boundary_tolerance": 3, "mbiou": 0.41, "mbf1": 0.55, "biou": {class: value}, "bf1": {class: value},
     "boundary": {"5": {"mbiou": …, "mbf1": …, "biou": {…}, "bf1": {…}}},   # further tolerances, if any
     "boundary_definition": "ctseg" | "reference", "boundary_tolerance_shape": "square" | "disk",
     "checkpoint": "/abs/path/best-….ckpt", "checkpoint_kind": "best" | "last", "checkpoint_sha256": "…",
     "checkpoint_monitor": "val/miou" | null, "checkpoint_score": 0.78 | null, "fixed_data": false,
     "contrastive_clipped": 0.93 | null,
     "wall_seconds": …, "fit_seconds": …, "test_seconds": …, "log_dir": "…",
     "data": {"class_path": …, "init_args": {…}}, "cwd": "…", "overrides": [...]}

The boundary scores (``mbiou`` / ``mbf1``: means over the evaluated classes, like ``miou``; per class ``biou`` /
``bf1``; :mod:`ctseg.evaluation.boundary`) are the logged ``test/biou*`` / ``test/bf1*`` values at the task's first
``boundary_tolerance``; ``boundary`` holds the others (empty with one tolerance). ``boundary_definition`` /
``boundary_tolerance_shape``: the task's ``boundary_definition`` / ``boundary_shape``, named as in ``ctseg
evaluate``'s JSON (results written before them: ``ctseg`` / ``square``).

A run whose ``results.json`` exists is skipped, so an interrupted grid resumes where it stopped (a run killed
half-way is started again from scratch). Config stems must be unique within one grid; run each data set's
configs into its own ``--out`` (``runs/grid/potsdam``, ``runs/grid/vaihingen`` …).

Seeds: seed ``N`` varies everything random in a run. ``seed_everything N`` seeds the initialisation, dropout /
drop-path and the sampling of the CT scheme, and ``--data.init_args.seed N`` the data module's shuffling and
augmentation (ctseg's data modules; for the synthetic set it also picks other scenes). With ``fixed_data=True``
(``--fixed-data``) the data seed stays the config's for every run (data order and augmentation identical across
seeds; needed for a data module without a ``seed`` argument). An override after ``--`` wins over both.
"""

from __future__ import annotations

import inspect
import math
import os
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctseg.errors import CtsegError
from ctseg.io import ensure_writable_dir, sha256_file, write_json_atomic

__all__ = ["PlannedRun", "best_checkpoint", "plan_grid", "run_grid", "run_one", "sha256_file"]

RESULTS = "results.json"


@dataclass(frozen=True)
class PlannedRun:
    config: Path
    seed: int
    run_dir: Path
    #: keep the config's data seed (do not pass ``--data.init_args.seed N``)
    fixed_data: bool = False

    @property
    def done(self) -> bool:
        return (self.run_dir / RESULTS).is_file()

    def fit_args(self, extra: Sequence[str] = ()) -> list[str]:
        """LightningCLI arguments of this run (without the ``fit`` subcommand)."""
        return [
            "--config",
            str(self.config),
            "--seed_everything",
            str(self.seed),
            "--trainer.default_root_dir",
            str(self.run_dir),
            *([] if self.fixed_data else ["--data.init_args.seed", str(self.seed)]),
            *extra,
        ]

    def command(self, extra: Sequence[str] = ()) -> str:
        """The equivalent shell command (fit only; the grid tests the best checkpoint afterwards)."""
        return shlex.join(["ctseg", "fit", *self.fit_args(extra)])


def plan_grid(
    configs: Sequence[str | os.PathLike],
    seeds: int,
    out: str | os.PathLike,
    first_seed: int = 0,
    fixed_data: bool = False,
) -> list[PlannedRun]:
    """The runs of a grid, config-major (all seeds of the first config first); ``fixed_data``: module docstring."""
    if not configs:
        raise CtsegError("no configs given; pass --configs FILE [FILE ...]")
    if seeds < 1:
        raise CtsegError(f"--seeds must be at least 1, got {seeds}")
    out = Path(out)
    stems: dict[str, Path] = {}
    runs = []
    for cfg in map(Path, configs):
        if not cfg.is_file():
            raise CtsegError(f"config {cfg} does not exist")
        if cfg.stem in stems:
            raise CtsegError(
                f"configs {stems[cfg.stem]} and {cfg} share the name {cfg.stem!r}; "
                "run them into different --out folders"
            )
        stems[cfg.stem] = cfg
        for seed in range(first_seed, first_seed + seeds):
            runs.append(PlannedRun(cfg, seed, out / cfg.stem / f"seed{seed}", fixed_data))
    return runs


def _build_cli(args: list[str], run_dir: Path):
    """The ``ctseg fit`` LightningCLI for ``args``, instantiated but not run, logging CSV into ``run_dir``."""
    from ctseg.training.lightning_cli import build_cli

    return build_cli(args, run=False, root=str(run_dir), context="grid")


def _plain(value: Any) -> Any:
    """Namespaces / tuples / paths → JSON-ready values."""
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _num(value: Any) -> float | None:
    if value is None:
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def _boundary_results(scores: dict[str, Any], names: Sequence[str], tolerance: Any) -> dict[str, Any]:
    """The boundary part of ``results.json`` from the logged ``test/biou*`` / ``test/bf1*`` values."""
    from ctseg.evaluation.boundary import parse_tolerances

    tolerances = parse_tolerances(tolerance)

    def block(tag: str) -> dict[str, Any]:
        return {
            "mbiou": _num(scores.get(f"test/biou{tag}")),
            "mbf1": _num(scores.get(f"test/bf1{tag}")),
            "biou": {n: _num(scores.get(f"test/biou_{n}{tag}")) for n in names},
            "bf1": {n: _num(scores.get(f"test/bf1_{n}{tag}")) for n in names},
        }

    return {
        "boundary_tolerance": tolerances[0],
        **block(""),
        "boundary": {str(d): block(f"@{d}") for d in tolerances[1:]},
    }


def best_checkpoint(trainer) -> tuple[Path | None, str | None, Any]:
    """``(path, "best" | "last", callback)`` of the checkpoint to test after ``trainer.fit``, ``(None, None, cb)``
    when none was written.

    The callback is the first :class:`~lightning.pytorch.callbacks.ModelCheckpoint` with a ``monitor`` (ctseg's
    ``checkpoint``; the ``step_checkpoint`` one monitors nothing), else ``trainer.checkpoint_callback``. Its
    ``best_model_path`` is the best checkpoint by that monitor and ``mode`` (Lightning keeps it up to date over
    ``save_top_k``); without one, its ``last_model_path``.
    """
    callbacks = list(getattr(trainer, "checkpoint_callbacks", None) or [])
    cb = next((c for c in callbacks if getattr(c, "monitor", None)), None) or trainer.checkpoint_callback
    if cb is not None and getattr(cb, "best_model_path", "") and Path(cb.best_model_path).is_file():
        return Path(cb.best_model_path), "best", cb
    for c in [cb, *callbacks]:
        if c is not None and getattr(c, "last_model_path", "") and Path(c.last_model_path).is_file():
            return Path(c.last_model_path), "last", cb
    return None, None, cb


def run_one(run: PlannedRun, extra: Sequence[str] = ()) -> dict[str, Any]:
    """Train, test the best checkpoint and write ``results.json`` for one run; returns the results."""
    start = time.perf_counter()
    run.run_dir.mkdir(parents=True, exist_ok=True)
    cli = _build_cli(run.fit_args(extra), run.run_dir)
    trainer, task, dm = cli.trainer, cli.model, cli.datamodule
    trainer.fit(task, datamodule=dm)
    fit_seconds = time.perf_counter() - start
    ckpt, kind, cb = best_checkpoint(trainer)
    monitor = getattr(cb, "monitor", None) if cb is not None else None
    best_score = getattr(cb, "best_model_score", None) if kind == "best" else None
    t_test = time.perf_counter()
    ckpt_arg = str(ckpt) if ckpt else None
    # weights_only: torch's restricted unpickler whatever torch's default (the keyword is Lightning >= 2.5's)
    safe = {"weights_only": True} if "weights_only" in inspect.signature(trainer.test).parameters else {}
    scores = trainer.test(task, datamodule=dm, ckpt_path=ckpt_arg, verbose=False, **safe)
    test_seconds = time.perf_counter() - t_test
    scores = scores[0] if scores else {}
    hp = task.hparams
    names = list(task.class_names)
    results: dict[str, Any] = {
        "format": "ctseg-results",
        "version": 1,
        "config": str(run.config),
        "config_name": run.config.stem,
        "dataset": hp.get("dataset"),
        "model": hp.get("model"),
        "scheme": hp.get("scheme"),
        "seed": run.seed,
        "split": "test",
        "class_names": names,
        "eval_classes": task.eval_classes,
        "miou": _num(scores.get("test/miou")),
        "mf1": _num(scores.get("test/mf1")),
        "oa": _num(scores.get("test/oa")),
        "iou": {n: _num(scores.get(f"test/iou_{n}")) for n in names},
        "f1": {n: _num(scores.get(f"test/f1_{n}")) for n in names},
        **_boundary_results(scores, names, hp.get("boundary_tolerance", 3)),
        "boundary_definition": hp.get("boundary_definition", "ctseg"),
        "boundary_tolerance_shape": hp.get("boundary_shape", "square"),
        "checkpoint": str(ckpt.resolve()) if ckpt else None,
        "checkpoint_kind": kind,
        "checkpoint_sha256": sha256_file(ckpt) if ckpt else None,
        "checkpoint_monitor": monitor,
        "checkpoint_score": _num(best_score),
        "fixed_data": run.fixed_data,
        "contrastive_clipped": getattr(task, "clip_fraction", None),  # steps whose CT term passed no gradient
        "wall_seconds": round(time.perf_counter() - start, 2),
        "fit_seconds": round(fit_seconds, 2),
        "test_seconds": round(test_seconds, 2),
        "log_dir": str(Path(trainer.log_dir).resolve()) if trainer.log_dir else None,
        "data": _plain(cli.config.get("data")),
        "cwd": os.getcwd(),
        "overrides": list(extra),
    }
    write_json_atomic(run.run_dir / RESULTS, results)
    return results


def run_grid(
    configs: Sequence[str | os.PathLike],
    seeds: int = 3,
    out: str | os.PathLike = "runs/grid",
    *,
    first_seed: int = 0,
    fixed_data: bool = False,
    dry_run: bool = False,
    extra: Sequence[str] = (),
) -> list[PlannedRun]:
    """Run (or, with ``dry_run``, list) the grid; finished runs are skipped. Returns the planned runs.

    Seed ``N`` is passed to the data module too (``--data.init_args.seed N``), so that the training order and
    augmentation differ between seeds (for the synthetic set it also picks other scenes); ``fixed_data=True``
    keeps the config's data seed for every run.
    """
    runs = plan_grid(configs, seeds, out, first_seed, fixed_data)
    todo = [r for r in runs if not r.done]
    print(f"grid: {len(runs)} runs ({len(configs)} configs × {seeds} seeds), {len(runs) - len(todo)} done", flush=True)
    for run in runs:
        state = "done" if run.done else "todo"
        print(f"  [{state}] {run.config.stem} seed {run.seed} → {run.run_dir}" + ("" if not dry_run else
             f"\n         {run.command(extra)}"))  # fmt: skip
    if dry_run:
        return runs
    ensure_writable_dir(out, "grid output folder")
    for n, run in enumerate(todo, 1):
        print(f"grid: run {n}/{len(todo)}: {run.config.stem} seed {run.seed}", flush=True)
        res = run_one(run, extra)
        miou = res["miou"]
        shown = "n/a (no labelled pixel in the test split)" if miou is None else f"{miou:.4f}"
        print(f"grid: {run.config.stem} seed {run.seed}: mIoU {shown} "
             f"({res['wall_seconds']:.0f} s) → {run.run_dir / RESULTS}", flush=True)  # fmt: skip
    return runs
