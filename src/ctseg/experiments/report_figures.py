"""``ctseg report``, part 2: the figures — qualitative predictions (Fig. 2 style), the CT patch sampling
(Fig. 3 style) and training curves — rebuilt from the runs' data modules and checkpoints.

A ``results.json`` may come from someone else (:mod:`ctseg.safety`), and what it records is data, never
directions. For the qualitative figure the report builds the run's data module, and only **reads** with it: one
of ctseg's own, from a checked few of its recorded arguments, without a decoded cache
(:mod:`ctseg.experiments.report_data`); a checkpoint or CSV log is opened only inside the run's own folder
(:func:`ctseg.experiments.report_results.inside_run`), the checkpoint through :mod:`ctseg.safety.pickles`.

Everything the report writes goes into its ``--out`` folder, each file atomically.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from ctseg.data.definitions import DATASETS, DatasetInfo
from ctseg.errors import CtsegError
from ctseg.experiments.report_data import build_datamodule, val_samples
from ctseg.experiments.report_results import inside_run, read_metrics, run_checkpoint, run_folder
from ctseg.experiments.report_tables import CURVE_METRICS, MODEL_LABELS, Cell
from ctseg.io import atomic_path
from ctseg.safety.pickles import UnsafeFileError


# ----------------------------------------------------------------------------------------------- figures
def check_checkpoints(results: list[dict[str, Any]]) -> None:
    """Refuse (one line) before anything is written if a run's checkpoint on disk could run code when loaded."""
    from ctseg.checkpoints.files import read_checkpoint

    for run in results:
        ckpt = run_checkpoint(run)  # elsewhere: never opened (a note said so)
        if ckpt is not None:
            try:
                read_checkpoint(ckpt, mmap=True)
            except UnsafeFileError:
                raise
            except CtsegError:
                pass  # unreadable: the figure that needs it is skipped with a note


def _info_for(dataset: str, dm) -> DatasetInfo:
    info = getattr(dm, "info", None)
    return info if isinstance(info, DatasetInfo) else DATASETS.get(dataset, DATASETS["synthetic"])


def _pairs(grouped, highlight: str) -> list[tuple[Cell, Cell]]:
    """(baseline, highlighted or other scheme) cells of each (data set, model) that has both."""
    out = []
    for models in grouped.values():
        for cells in models.values():
            base = [c for c in cells if c.scheme == "none"]
            others = [c for c in cells if c.scheme == highlight] or [c for c in cells if c.scheme != "none"]
            if base and others:
                out.append((base[0], others[0]))
    return out


def _checkpoint(run: dict[str, Any]) -> Path | None:
    """The run's checkpoint when it is a file inside the run's own folder (:func:`run_checkpoint`)."""
    return run_checkpoint(run)


def _pick_pair(grouped, highlight: str):
    """The first pair whose baseline's data module can be rebuilt and whose two checkpoints are in their run
    folders: ``(base, other, data module, {label: checkpoint})``; else the first reason why not."""
    reasons = []
    for base, other in _pairs(grouped, highlight):
        runs = {base.label: base.best_run(), other.label: other.best_run()}
        try:
            # a code-naming class path is refused before anything is read
            dm = build_datamodule(runs[base.label].get("data") or {}, runs[base.label].get("cwd"))
        except CtsegError as err:
            reasons.append(str(err))
            continue
        ckpts = {label: _checkpoint(run) for label, run in runs.items()}
        if all(ckpts.values()):
            return base, other, dm, ckpts
        reasons.append(f"no (data set, model) has a baseline and a {highlight!r} run with a checkpoint in its folder")
    raise CtsegError(reasons[0] if reasons else f"no (data set, model) has a baseline and a {highlight!r} run")


def qualitative_figure(
    grouped, path: Path, highlight: str, crops: int, device: str, echo=print
) -> tuple[np.ndarray, np.ndarray, DatasetInfo] | None:
    """Write ``qualitative.png``; returns the first shown crop (image, mask, info) for the patch figure."""
    import torch

    from ctseg.checkpoints.files import load_model
    from ctseg.experiments.figures import plot_predictions
    from ctseg.inference.tile import resolve_device

    base, other, dm, ckpts = _pick_pair(grouped, highlight)
    dev = resolve_device(device)
    if other.scheme != highlight:
        echo(f"report: no {highlight} run with a checkpoint beside a baseline; qualitative.png shows {other.scheme}")
    images, masks, dm = val_samples(dm, limit=max(crops, 16))
    info = _info_for(base.dataset, dm)
    preds: dict[str, list[np.ndarray]] = {}
    for label, ckpt in ckpts.items():
        model = load_model(ckpt, device=dev).model
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
    from ctseg.experiments.figures import denormalize, pyplot

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


def synthetic_crop() -> tuple[np.ndarray, np.ndarray, DatasetInfo]:
    from ctseg.data.definitions import SYNTHETIC
    from ctseg.data.synthetic import SyntheticAerialDataset

    sample = SyntheticAerialDataset(1, size=256, seed=0, split="val")[0]
    return sample["image"].numpy(), sample["mask"].numpy(), SYNTHETIC


def log_curves(steps: dict[int, dict[str, float]]) -> dict[str, dict[float, float]]:
    """The curves of :data:`CURVE_METRICS` in a run's logged values (``{step: {column: value}}``,
    :func:`~ctseg.experiments.report_results.read_metrics`): ``{metric: {x: value}}``.

    x is the number of optimizer steps done when the value was measured: a training loss logged at step ``s``
    was computed with ``s`` updates done, a validation logged at step ``s`` (Lightning's convention: the last
    training batch before it) ran after ``s + 1``.
    """
    out: dict[str, dict[float, float]] = {}
    for step, values in sorted(steps.items()):
        for key in CURVE_METRICS:
            if key in values:
                out.setdefault(key, {})[step + (1.0 if key.startswith("val/") else 0.0)] = values[key]
    return out


def run_log(run: dict[str, Any]) -> Path | None:
    """The CSV log of a run: ``metrics.csv`` in the log folder ``results.json`` records (``log_dir``) when that is
    inside the run's folder; otherwise (older results without it, a folder moved from elsewhere) the only
    ``metrics.csv`` below the run folder (``None`` when there are several)."""
    recorded = inside_run(run, run.get("log_dir"), "metrics.csv")  # only inside the run's own folder
    if recorded is not None and recorded.is_file():
        return recorded
    found = [p for p in sorted(run_folder(run).rglob("metrics.csv")) if inside_run(run, str(p)) is not None]
    return found[0] if len(found) == 1 else None


def curves_figure(grouped, path: Path, echo=print) -> None:
    """Write ``curves.png``: per configuration, each metric averaged over seeds at equal steps (x: the optimizer
    steps done, :func:`log_curves`)."""
    from ctseg.experiments.figures import plot_curves

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
                    for key, series in log_curves(read_metrics([log])).items():
                        for x, v in series.items():
                            acc[key][x].append(v)
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
