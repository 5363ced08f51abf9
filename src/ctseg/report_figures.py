"""``ctseg report``, part 2: the figures — qualitative predictions (Fig. 2 style), the CT patch sampling
(Fig. 3 style) and training curves — rebuilt from the runs' data modules and checkpoints."""

from __future__ import annotations

import csv
import importlib
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from ctseg.data.definitions import DATASETS, DatasetInfo
from ctseg.errors import CtsegError
from ctseg.io import atomic_path
from ctseg.report_tables import CURVE_METRICS, MODEL_LABELS, Cell
from ctseg.safety.pickles import UnsafeFileError


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


def synthetic_crop() -> tuple[np.ndarray, np.ndarray, DatasetInfo]:
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
