"""``ctseg demo``: a baseline and the same model with CT, same seed and budget, on built-in synthetic scenes.

Writes into the output folder: ``metrics.json`` (both runs: per-class IoU / F1, mIoU, mean F1, OA, losses,
training time with the 1-minute load average before and after it; the machine: CPUs, torch threads, device),
``predictions.png`` (image / truth / baseline / CT, CT's changes outlined), ``curves.png`` (training loss and
validation mIoU), and the two trained models (``baseline.ckpt``, ``ct-cl.ckpt``); prints the table.
CPU only, 2 cores: about 2–3 minutes at the default budget.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ctseg.io import atomic_path, ensure_writable_dir, write_json_atomic


@dataclass(frozen=True)
class DemoBudget:
    image_size: int = 128
    batch_size: int = 8
    steps: int = 600
    train_samples: int = 960
    val_samples: int = 64
    val_every_steps: int = 150
    lr: float = 2e-3


QUICK = DemoBudget(image_size=64, batch_size=4, steps=4, train_samples=8, val_samples=4, val_every_steps=2)
RUNS = (("baseline", "none"), ("ct-cl", "ct-cl"))


def _silence() -> None:
    import logging
    import warnings

    import lightning  # noqa: F401  (configures its loggers on import; quiet them afterwards)

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from ctseg.training.quiet import quiet_third_party

    quiet_third_party()
    warnings.filterwarnings("ignore", ".*weights_only.*")


def _train_one(scheme: str, budget: DemoBudget, seed: int, log_dir: Path, progress: bool):
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    from ctseg.data.synthetic import SyntheticDataModule
    from ctseg.training.task import SegmentationTask

    L.seed_everything(seed, verbose=False)
    dm = SyntheticDataModule(
        train_samples=budget.train_samples,
        val_samples=budget.val_samples,
        image_size=budget.image_size,
        batch_size=budget.batch_size,
        seed=seed,
    )
    info = dm.info
    task = SegmentationTask(
        model="pf-tiny",
        num_classes=info.num_classes,
        img_size=budget.image_size,
        scheme=scheme,
        # ctseg's CT reduction: the authors' ("paper", the default) starts above the value clip, so on a budget
        # this short it would pass almost no contrastive gradient (docs/training.md "CT reductions").
        scheme_options={"reduction": "mean"} if scheme.startswith("ct-") else None,
        lr=budget.lr,
        class_names=list(info.classes),
        eval_classes=list(info.eval_classes) if info.eval_classes else None,
        dataset=info.name,
    )
    steps_per_epoch = max(1, budget.train_samples // budget.batch_size)
    trainer = L.Trainer(
        max_steps=budget.steps,
        accelerator="cpu",
        devices=1,
        precision="32-true",
        gradient_clip_val=1.0,
        logger=CSVLogger(str(log_dir), name=scheme, version=0),
        enable_checkpointing=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        log_every_n_steps=max(1, min(10, budget.steps // 4)),
        val_check_interval=min(budget.val_every_steps, steps_per_epoch),
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
    )
    start = time.perf_counter()
    trainer.fit(task, dm)
    seconds = time.perf_counter() - start
    return task, dm, trainer, seconds


def _evaluate(task, dm) -> tuple[dict, list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    from ctseg.evaluation.metrics import SegmentationMetrics

    info = dm.info
    metrics = SegmentationMetrics(info.num_classes, ignore_index=info.ignore_index, eval_classes=info.eval_classes)
    images, truths, preds = [], [], []
    task.eval()
    with torch.no_grad():
        for batch in dm.val_dataloader():
            pred = task(batch["image"]).argmax(1)
            metrics.update(pred, batch["mask"])
            images += list(batch["image"].numpy())
            truths += list(batch["mask"].numpy())
            preds += list(pred.numpy())
    res = metrics.compute()
    out = {
        "miou": float(res["miou"]),
        "mf1": float(res["mf1"]),
        "oa": float(res["oa"]),
        "iou": {n: float(v) for n, v in zip(info.classes, res["iou"], strict=True)},
        "f1": {n: float(v) for n, v in zip(info.classes, res["f1"], strict=True)},
    }
    return out, images, truths, preds


def _curves(log_dir: Path, scheme: str) -> dict[str, list[tuple[float, float]]]:
    import csv

    path = log_dir / scheme / "version_0" / "metrics.csv"
    curves: dict[str, list[tuple[float, float]]] = {}
    if not path.exists():
        return curves
    with open(path) as fh:
        for row in csv.DictReader(fh):
            for key in ("train/seg", "train/contrastive", "val/miou"):
                if row.get(key):
                    curves.setdefault(key, []).append((float(row["step"]), float(row[key])))
    return curves


def run_demo(out: str | os.PathLike = "demo_out", steps: int | None = None, quick: bool = False, seed: int = 0) -> dict:
    """Train baseline and CT-CL on synthetic data, evaluate both, print the table, write files to ``out``."""
    import tempfile

    from ctseg.data.definitions import SYNTHETIC
    from ctseg.evaluation.metrics import format_table
    from ctseg.experiments.figures import plot_curves, plot_predictions

    out = ensure_writable_dir(out)
    budget = QUICK if quick else DemoBudget()
    if steps is not None:
        budget = DemoBudget(**{**budget.__dict__, "steps": steps})
    _silence()
    torch.set_num_threads(max(1, min(os.cpu_count() or 1, 8)))
    results, curves, panels = {}, {}, {}
    print(
        f"ctseg demo: pf-tiny on synthetic {budget.image_size}² scenes, {budget.steps} steps of batch "
        f"{budget.batch_size}, baseline vs CT-CL (seed {seed})",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="ctseg-demo-") as tmp:
        for name, scheme in RUNS:
            load_before = _load()
            task, dm, trainer, seconds = _train_one(scheme, budget, seed, Path(tmp), progress=not quick)
            metrics, images, truths, preds = _evaluate(task, dm)
            metrics["train_seconds"] = round(seconds, 1)
            # what the time depends on: a busy shared machine can make the same training several times slower
            metrics["load_1min"] = {"before": load_before, "after": _load()}
            metrics["scheme"] = scheme
            results[name] = metrics
            curves[name] = _curves(Path(tmp), scheme)
            panels[name] = preds
            with atomic_path(out / f"{name}.ckpt") as ckpt:
                trainer.save_checkpoint(ckpt)
            print(
                f"  {name}: mIoU {metrics['miou']:.4f}, OA {metrics['oa']:.4f} ({seconds:.0f} s on "
                f"{torch.get_num_threads()} threads, load {load_before} → {metrics['load_1min']['after']})",
                flush=True,
            )
    rows = {
        n: {"iou": list(r["iou"].values()), "miou": r["miou"], "mf1": r["mf1"], "oa": r["oa"]}
        for n, r in results.items()
    }
    table = format_table(rows, list(SYNTHETIC.classes), eval_classes=SYNTHETIC.eval_classes)
    print()
    print(table)
    summary = {
        "budget": budget.__dict__,
        "model": "pf-tiny",
        "seed": seed,
        "eval_classes": list(SYNTHETIC.eval_classes or []),
        "machine": _machine(),
        "runs": results,
    }
    write_json_atomic(out / "metrics.json", summary)
    pick = _pick_samples(truths, panels, n=4)
    plot_predictions(
        [images[i] for i in pick],
        [truths[i] for i in pick],
        {n: [panels[n][i] for i in pick] for n in panels},
        SYNTHETIC,
        out / "predictions.png",
        highlight="ct-cl",
    )
    plot_curves(curves, out / "curves.png")
    print(f"\nwrote {out}/metrics.json, predictions.png, curves.png, baseline.ckpt, ct-cl.ckpt")
    return summary


def _load() -> float | None:
    """The 1-minute load average (runnable processes; compare with the CPU count), ``None`` where unknown."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _machine() -> dict:
    """What the demo's times were measured on: CPUs, the threads torch used, the device, versions."""
    import platform

    return {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def _pick_samples(truths: list[np.ndarray], panels: dict[str, list[np.ndarray]], n: int) -> list[int]:
    """The ``n`` validation samples where the runs disagree most (informative panels), in index order."""
    names = list(panels)
    if len(names) < 2 or not truths:
        return list(range(min(n, len(truths))))
    diff = [float((panels[names[0]][i] != panels[names[1]][i]).mean()) for i in range(len(truths))]
    return sorted(np.argsort(diff)[::-1][:n].tolist())
