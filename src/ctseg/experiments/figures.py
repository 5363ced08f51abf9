"""Figures: prediction panels (image / truth / predictions, disagreements highlighted) and training curves."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from ctseg.data.definitions import DatasetInfo
from ctseg.io import atomic_path


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg back end (figures are written to files, never shown)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def denormalize(image: np.ndarray, info: DatasetInfo) -> np.ndarray:
    """(C, H, W) normalised float → (H, W, 3) float in [0, 1] for display.

    The first three bands are shown as RGB (one or two bands: the first as grey). 8-bit data sets are shown as
    stored; others (uint16, float32) are stretched per band between their 2nd and 98th percentiles, since e.g. a
    12-bit product fills only 1/16 of the uint16 range.
    """
    mean = np.asarray(info.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(info.std, dtype=np.float32)[:, None, None]
    values = image * std + mean
    shown = values[:3] if values.shape[0] >= 3 else np.repeat(values[:1], 3, axis=0)
    if info.dtype != "uint8":
        low, high = np.percentile(shown, [2, 98], axis=(1, 2), keepdims=True)
        shown = (shown - low) / np.maximum(high - low, 1e-12)
    return np.clip(shown, 0, 1).transpose(1, 2, 0)


def plot_predictions(
    images: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    predictions: Mapping[str, Sequence[np.ndarray]],
    info: DatasetInfo,
    path: str | os.PathLike,
    highlight: str | None = None,
) -> None:
    """One row per sample: image, truth, then each run's prediction.

    Args:
        images: (C, H, W) normalised float arrays; truths: (H, W) class indices.
        predictions: run name → list of (H, W) predicted class indices.
        highlight: name of the run whose pixels that differ from the first run's and are correct are outlined
            in white, and wrong ones in red — the "differences highlighted" view of the paper's Fig. 3.
    """
    plt = pyplot()
    names = list(predictions)
    cols = 2 + len(names)
    rows = len(images)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.6 * rows), squeeze=False)
    for r in range(rows):
        panels = [("image", denormalize(images[r], info)), ("truth", info.colorize(truths[r]))]
        panels += [(n, info.colorize(predictions[n][r])) for n in names]
        for c, (title, pic) in enumerate(panels):
            ax = axes[r][c]
            ax.imshow(pic, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                if title == highlight and len(names) > 1:
                    title = f"{title}\nvs {names[0]}: white = fixed,\nred = broken"
                ax.set_title(title, fontsize=9 if "\n" in title else 10)
        if highlight is not None and highlight in predictions and len(names) > 1:
            base = predictions[names[0]][r]
            other = predictions[highlight][r]
            truth = truths[r]
            labelled = truth != info.ignore_index
            better = (other != base) & (other == truth) & labelled
            worse = (other != base) & (base == truth) & labelled
            ax = axes[r][2 + names.index(highlight)]
            for mask, colour in ((better, "white"), (worse, "red")):
                if mask.any():
                    ax.contour(mask.astype(float), levels=[0.5], colors=colour, linewidths=0.7)
    handles = [
        plt.Rectangle((0, 0), 1, 1, facecolor=np.asarray(c) / 255, edgecolor="black", lw=0.5) for c in info.colors
    ]
    fig.legend(handles, info.classes, loc="lower center", ncol=min(len(info.classes), 6), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def plot_curves(curves: Mapping[str, Mapping[str, Sequence[tuple[float, float]]]], path: str | os.PathLike) -> None:
    """Training curves: one panel per metric, one line per run.

    Args:
        curves: run name → metric name → list of ``(step, value)``.
    """
    plt = pyplot()
    metrics = sorted({m for run in curves.values() for m in run})
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for run, data in curves.items():
            pts = data.get(metric, [])
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, label=run, marker="o" if len(pts) < 12 else None, markersize=3)
        ax.set_title(metric)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def plot_confusion(
    confmat: np.ndarray,
    class_names: Sequence[str],
    path: str | os.PathLike,
    *,
    excluded: Sequence[int] = (),
    title: str = "",
) -> None:
    """The confusion matrix as a row-normalised heat map: cell ``(t, p)`` is the fraction of the pixels of true
    class ``t`` predicted ``p`` (:func:`ctseg.evaluation.metrics.normalise_rows`; the diagonal is each class's
    recall), printed in percent; a class without pixels in the truth is a grey row. Row labels carry each true
    class's pixel count; classes in ``excluded`` (not averaged into mIoU) carry a ``*``.

    Args:
        confmat: ``(K, K)`` pixel counts, rows = truth, columns = prediction.
        class_names: ``K`` names in index order.
    """
    import torch

    from ctseg.evaluation.metrics import normalise_rows

    counts = np.asarray(confmat, dtype=np.int64)
    k = counts.shape[0]
    rows = 100.0 * normalise_rows(torch.as_tensor(counts)).numpy()
    names = [f"{n}*" if i in set(excluded) else str(n) for i, n in enumerate(class_names)]
    plt = pyplot()
    side = min(max(4.5, 0.62 * k + 2.5), 24.0)
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    ax.set_facecolor((0.85, 0.85, 0.85))  # NaN rows (no true pixel) show the background
    image = ax.imshow(np.ma.masked_invalid(rows), cmap="Blues", vmin=0.0, vmax=100.0, interpolation="nearest")
    if k <= 25:
        for t in range(k):
            for p in range(k):
                value = rows[t, p]
                text = "–" if np.isnan(value) else f"{value:.0f}"
                ax.text(p, t, text, ha="center", va="center", fontsize=8,
                        color="white" if not np.isnan(value) and value > 60 else "black")  # fmt: skip
    ax.set_xticks(range(k), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), [f"{n} ({counts[t].sum():,})" for t, n in enumerate(names)], fontsize=8)
    ax.set_xlabel("prediction")
    ax.set_ylabel("truth (pixels)")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="% of the true class's pixels")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
