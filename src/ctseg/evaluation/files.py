"""``ctseg evaluate``: score prediction files against label files with a data set's protocol.

Any model's output can be scored, not only a ctseg checkpoint's: region metrics (the ISPRS protocol of
:mod:`ctseg.evaluation.metrics`: one confusion matrix, per-class IoU / F1, mIoU and mean F1 over the data set's
``eval_classes``, OA over all classes) and boundary metrics (:mod:`ctseg.evaluation.boundary`: boundary IoU and boundary
F1 at one or more tolerances), all accumulated over every pixel of every file.

**Pairing.** A prediction in ``PRED_DIR`` is ``<stem>_pred.tif`` (what ``ctseg predict`` writes), ``<stem>.png``
(an index PNG, ``ctseg predict --format index-png``) or any single-band ``.tif`` / ``.png`` of class indices;
it is paired with the label ``TRUTH_DIR/<stem>.png`` / ``.tif`` / ``.tiff`` of the same stem (a trailing
``_pred`` dropped). The colour PNG ``<stem>_pred.png`` that predict writes beside ``<stem>_pred.tif`` holds the
same classes and is skipped, and so are its ``<stem>_probs.tif`` / ``<stem>_conf.tif`` / ``<stem>_legend.png`` /
``<stem>_overlay.png`` beside one. Every prediction needs a label and every label a prediction (a missing one is
an error naming it: score a subset with a ``TRUTH_DIR`` holding only its labels).

**Values.** Predictions hold class indices ``0 … K−1``; 255 (predict's nodata) is allowed and, as in the
confusion matrix of :mod:`ctseg.evaluation.metrics`, drops the pixel from the region metrics while counting as
"no class" for the boundaries. Labels are decoded with the data set's definition: colour-coded masks through its colours
(:func:`~ctseg.data.labels.decode_label`), index masks through its ``label_values``
(:func:`~ctseg.data.labels.decode_index`); unlabelled pixels are ignore and never counted.

**Definitions.** ``definition="reference"`` (``--boundary reference``) scores boundary IoU with Cheng et al.'s
bands (the image border a boundary), ``tolerance_shape="disk"`` (``--boundary-shape disk``) boundary F1 with a
Euclidean tolerance (:mod:`ctseg.evaluation.boundary`); the JSON names both (``boundary_definition``,
``boundary_tolerance_shape``). When every file is georeferenced with one square pixel size in a projected CRS,
``boundary_tolerance_m`` holds each tolerance in metres (``d`` × pixel size; else null).

**Large files** are scored in strips of rows with ``max(tolerance) + 1`` rows of context (the same sums as the
whole image at once; :func:`~ctseg.evaluation.boundary.boundary_counts`), so memory stays bounded.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ctseg.data.definitions import DatasetInfo
from ctseg.errors import CtsegError
from ctseg.evaluation.boundary import BoundaryMetrics, check_options, parse_tolerances
from ctseg.evaluation.metrics import SegmentationMetrics

__all__ = [
    "check_out",
    "evaluate_folder",
    "evaluate_pairs",
    "find_pairs",
    "format_scores",
    "resolve_info",
    "run_evaluate",
    "write_scores",
]

PRED_SUFFIXES = (".tif", ".tiff", ".png")
TRUTH_SUFFIXES = (".png", ".tif", ".tiff")
#: Boolean elements of one boundary strip (2 maps × K classes × rows × width) to aim for.
STRIP_BUDGET = 1 << 25


def resolve_info(dataset: str | None = None, manifest: str | os.PathLike | None = None) -> DatasetInfo:
    """The data set definition: a registered data set's, or the one in a prepared folder's ``manifest.json``."""
    if (dataset is None) == (manifest is None):
        raise CtsegError("give the data set: --dataset NAME (registered) or --manifest PREPARED_DIR/manifest.json")
    if manifest is not None:
        from ctseg.data.manifest import info_from_manifest, load_manifest

        path = Path(manifest).expanduser()
        return info_from_manifest(load_manifest(path.parent if path.is_file() else path))
    from ctseg.data.registry import get_dataset

    spec = get_dataset(str(dataset))
    if spec.info is None:
        raise CtsegError(
            f"data set {dataset!r} takes its classes from the source: pass --manifest PREPARED_DIR/manifest.json "
            "of the prepared folder instead"
        )
    return spec.info


def _stem(path: Path) -> str:
    stem = path.stem
    return stem[: -len("_pred")] if stem.endswith("_pred") and len(stem) > len("_pred") else stem


def _files(folder: Path, suffixes: Sequence[str], what: str) -> list[Path]:
    if not folder.is_dir():
        raise CtsegError(f"{what} {folder} is not a folder")
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and
                  p.suffix.lower() in suffixes)  # fmt: skip


def _listed(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def find_pairs(pred_dir: str | os.PathLike, truth_dir: str | os.PathLike) -> list[tuple[str, Path, Path]]:
    """``(stem, prediction, label)`` for every prediction in ``pred_dir`` (pairing rules: module docstring)."""
    pred_dir, truth_dir = Path(pred_dir).expanduser(), Path(truth_dir).expanduser()
    preds: dict[str, Path] = {}
    files = _files(pred_dir, PRED_SUFFIXES, "prediction folder")
    names = {p.name.lower() for p in files}
    for path in files:
        base, _, extra = path.stem.rpartition("_")
        if extra in ("probs", "conf", "legend", "overlay") and f"{base}_pred.tif".lower() in names:
            continue  # predict's probabilities / confidence / legend / overlay beside its class map
        key = _stem(path)
        old = preds.get(key)
        if old is None:
            preds[key] = path
            continue
        # predict's colour PNG beside its GeoTIFF: the GeoTIFF is the prediction
        pair = {old.name.lower(), path.name.lower()}
        if pair == {f"{key}_pred.tif".lower(), f"{key}_pred.png".lower()}:
            preds[key] = old if old.suffix.lower() == ".tif" else path
            continue
        raise CtsegError(f"{pred_dir}: two predictions for {key!r}: {old.name} and {path.name}; keep one")
    if not preds:
        raise CtsegError(
            f"no prediction files in {pred_dir} (expected <stem>_pred.tif from ctseg predict, or index PNGs <stem>.png)"
        )
    truths: dict[str, Path] = {}
    for path in _files(truth_dir, TRUTH_SUFFIXES, "label folder"):
        if path.stem in truths:
            raise CtsegError(f"{truth_dir}: two labels for {path.stem!r}: {truths[path.stem].name} and {path.name}")
        truths[path.stem] = path
    lonely = [p.name for k, p in preds.items() if k not in truths]
    if lonely:
        raise CtsegError(
            f"no label in {truth_dir} for prediction(s) {_listed(lonely)} (paired by stem: <stem>_pred.tif or "
            "<stem>.png with TRUTH_DIR/<stem>.png or .tif)"
        )
    unscored = [p.name for k, p in truths.items() if k not in preds]
    if unscored:
        raise CtsegError(
            f"no prediction in {pred_dir} for label(s) {_listed(unscored)}; predict them, or pass a TRUTH_DIR that "
            "holds only the labels to score"
        )
    return [(k, preds[k], truths[k]) for k in sorted(preds)]


def read_prediction(path: Path, info: DatasetInfo) -> np.ndarray:
    """(H, W) class indices of a prediction file; a value that is no class (nor 255) is a one-line error."""
    from ctseg.data.raster import read_index

    pred = np.asarray(read_index(path))
    if pred.ndim != 2:
        raise CtsegError(f"{path}: a prediction must be one band of class indices, found shape {pred.shape}")
    k = info.num_classes
    bad = ((pred < 0) | (pred >= k)) & (pred != info.ignore_index)
    if bad.any():
        row, col = divmod(int(np.argmax(bad)), pred.shape[1])
        raise CtsegError(
            f"{path}: value {int(pred[row, col])} at pixel (row {row}, col {col}) is not a class of {info.name} "
            f"(0–{k - 1}, or {info.ignore_index} for nodata; {int(bad.sum())} such pixels)"
        )
    return pred


def read_truth(path: Path, info: DatasetInfo) -> np.ndarray:
    """(H, W) class indices (``ignore_index`` for unlabelled pixels) of a label file, decoded as ``info`` says."""
    from ctseg.data.labels import decode_index, decode_label
    from ctseg.data.raster import read_index, read_rgb

    if info.label_kind == "color":
        return decode_label(read_rgb(path, label=True), info, path)
    return decode_index(read_index(path), info, path)


def _score_pair(
    pred: np.ndarray, truth: np.ndarray, region: SegmentationMetrics, boundary: BoundaryMetrics, device
) -> None:
    h, w = truth.shape
    halo = max(boundary.tolerances) + 1
    rows = max(64, STRIP_BUDGET // max(1, 2 * boundary.num_classes * w))
    p_all = torch.from_numpy(pred.astype(np.int64, copy=False)).to(device)
    t_all = torch.from_numpy(truth.astype(np.int64, copy=False)).to(device)
    for top in range(0, h, rows):
        bottom = min(h, top + rows)
        lo, hi = max(0, top - halo), min(h, bottom + halo)
        p, t = p_all[lo:hi][None], t_all[lo:hi][None]
        own = torch.zeros_like(t, dtype=torch.bool)
        own[:, top - lo : bottom - lo] = True
        region.update(p_all[top:bottom][None], t_all[top:bottom][None])
        boundary.update(p, t, count_mask=own)


def pixel_metres(path: Path) -> float | None:
    """The pixel size in metres of a georeferenced raster in a projected CRS with square pixels, else ``None``."""
    from ctseg.data.raster import open_raster

    if path.suffix.lower() not in (".tif", ".tiff"):
        return None
    try:
        with open_raster(path, header_only=True) as ds:
            crs, (sx, sy) = ds.crs, ds.res
            if crs is None or not crs.is_projected or ds.transform.is_identity or abs(sx - sy) > 1e-9 * abs(sx):
                return None
            factor = crs.linear_units_factor[1]
    except Exception:  # noqa: BLE001 — a label without a header we can read has no metres to give
        return None
    return float(sx) * float(factor)


def _metres(pairs: Sequence[tuple[str, Path, Path]], tolerances: Sequence[int]) -> list[float] | None:
    sizes = {pixel_metres(p) for pair in pairs for p in pair[1:]}
    if len(sizes) != 1 or None in sizes:
        return None
    (size,) = sizes
    return [round(d * size, 6) for d in tolerances]


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().tolist()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def evaluate_pairs(
    pairs: Sequence[tuple[str, Path, Path]],
    info: DatasetInfo,
    tolerance: int | Sequence[int] = 3,
    device: str | torch.device = "cpu",
    definition: str = "ctseg",
    tolerance_shape: str = "square",
) -> dict[str, Any]:
    """Region and boundary scores of ``(stem, prediction, label)`` pairs, accumulated over all of them.

    Returns the ``scores.json`` dict (same keys as a ``ctseg grid`` ``results.json``: ``miou``, ``mf1``, ``oa``,
    ``iou`` / ``f1`` per class name, ``boundary_tolerance``, ``mbiou``, ``mbf1``, ``biou`` / ``bf1`` per class,
    ``boundary`` for further tolerances, ``boundary_definition``, ``boundary_tolerance_shape``,
    ``boundary_tolerance_m``; plus ``pairs``, ``pixels``, ``confmat`` and ``files``).
    """
    from ctseg.inference.tile import resolve_device

    tolerances = parse_tolerances(tolerance)
    dev = resolve_device(device)
    if not pairs:
        raise CtsegError("nothing to score: no prediction / label pairs")
    k = info.num_classes
    region = SegmentationMetrics(k, ignore_index=info.ignore_index, eval_classes=info.eval_classes).to(dev)
    boundary = BoundaryMetrics(k, tolerances, ignore_index=info.ignore_index, eval_classes=info.eval_classes,
                               definition=definition, tolerance_shape=tolerance_shape).to(dev)  # fmt: skip
    for _, pred_path, truth_path in pairs:
        pred = read_prediction(pred_path, info)
        truth = read_truth(truth_path, info)
        if pred.shape != truth.shape:
            raise CtsegError(
                f"{pred_path} is {pred.shape[0]} × {pred.shape[1]} (H × W) but its label {truth_path} is "
                f"{truth.shape[0]} × {truth.shape[1]}"
            )
        _score_pair(pred, truth, region, boundary, dev)
    reg, bnd = region.compute(), boundary.compute()
    names = list(info.classes)

    def per_class(values: torch.Tensor) -> dict[str, Any]:
        return dict(zip(names, _plain(values), strict=True))

    def block(d: int) -> dict[str, Any]:
        return {
            "mbiou": _plain(bnd[f"mbiou@{d}"].item()),
            "mbf1": _plain(bnd[f"mbf1@{d}"].item()),
            "biou": per_class(bnd[f"biou@{d}"]),
            "bf1": per_class(bnd[f"bf1@{d}"]),
        }

    return {
        "format": "ctseg-scores",
        "version": 1,
        "dataset": info.name,
        "class_names": names,
        "eval_classes": None if info.eval_classes is None else list(info.eval_classes),
        "pairs": len(pairs),
        "pixels": int(reg["confmat"].sum()),
        "miou": _plain(reg["miou"].item()),
        "mf1": _plain(reg["mf1"].item()),
        "oa": _plain(reg["oa"].item()),
        "iou": per_class(reg["iou"]),
        "f1": per_class(reg["f1"]),
        "boundary_tolerance": tolerances[0],
        "boundary_definition": boundary.definition,
        "boundary_tolerance_shape": boundary.tolerance_shape,
        "boundary_tolerance_m": _metres(pairs, tolerances),
        **block(tolerances[0]),
        "boundary": {str(d): block(d) for d in tolerances[1:]},
        "confmat": _plain(reg["confmat"]),
        "files": [[str(p), str(t)] for _, p, t in pairs],
    }


def evaluate_folder(
    pred_dir: str | os.PathLike,
    truth_dir: str | os.PathLike,
    info: DatasetInfo,
    tolerance: int | Sequence[int] = 3,
    device: str | torch.device = "cpu",
    definition: str = "ctseg",
    tolerance_shape: str = "square",
) -> dict[str, Any]:
    """:func:`find_pairs` then :func:`evaluate_pairs`; the result also records both folders."""
    tolerances = parse_tolerances(tolerance)  # a bad tolerance is said before any file is read
    check_options(definition, tolerance_shape)
    scores = evaluate_pairs(find_pairs(pred_dir, truth_dir), info, tolerances, device, definition, tolerance_shape)
    return {**scores, "pred_dir": str(Path(pred_dir).resolve()), "truth_dir": str(Path(truth_dir).resolve())}


def _f(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.4f}"


def format_scores(scores: dict[str, Any]) -> str:
    """A Markdown table of :func:`evaluate_pairs` scores: one row per class, then the means and OA."""
    names = scores["class_names"]
    ev = scores.get("eval_classes")
    excluded = set() if ev is None else set(range(len(names))) - set(ev)
    extra = list(scores.get("boundary") or {})
    d = scores["boundary_tolerance"]
    header = ["class", "IoU", "F1", f"bIoU (d={d})", f"bF1 (d={d})"]
    header += [h for t in extra for h in (f"bIoU (d={t})", f"bF1 (d={t})")]
    lines = [
        f"{scores['dataset']}: {scores['pairs']} file pair(s), {scores['pixels']:,} labelled pixels scored",
        "",
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * (len(header) - 1),
    ]
    for i, n in enumerate(names):
        cells = [_f(scores["iou"][n]), _f(scores["f1"][n]), _f(scores["biou"][n]), _f(scores["bf1"][n])]
        for t in extra:
            cells += [_f(scores["boundary"][t]["biou"][n]), _f(scores["boundary"][t]["bf1"][n])]
        lines.append(f"| {n}{'*' if i in excluded else ''} | " + " | ".join(cells) + " |")
    means = [_f(scores["miou"]), _f(scores["mf1"]), _f(scores["mbiou"]), _f(scores["mbf1"])]
    for t in extra:
        means += [_f(scores["boundary"][t]["mbiou"]), _f(scores["boundary"][t]["mbf1"])]
    lines.append("| **mean** | " + " | ".join(means) + " |")
    lines += ["", f"OA {_f(scores['oa'])}"]
    shape = scores.get("boundary_tolerance_shape", "square")
    lines.append(f"boundary definition: {scores.get('boundary_definition', 'ctseg')}, F1 tolerance {shape}"
                 + ("" if scores.get("boundary_tolerance_m") is None else
                    f", d = {', '.join(f'{m:g}' for m in scores['boundary_tolerance_m'])} m"))  # fmt: skip
    if excluded:
        lines.append("* kept in the confusion matrix and OA, not averaged into the means")
    return "\n".join(lines)


def run_evaluate(
    pred_dir: str | os.PathLike,
    truth_dir: str | os.PathLike,
    *,
    dataset: str | None = None,
    manifest: str | os.PathLike | None = None,
    tolerance: int | Sequence[int] = 3,
    out: str | os.PathLike | None = None,
    device: str = "cpu",
    definition: str = "ctseg",
    tolerance_shape: str = "square",
) -> str:
    """``ctseg evaluate``: score the folder, write ``out`` (JSON) when given; returns the table text."""
    tolerances = parse_tolerances(tolerance)
    check_options(definition, tolerance_shape)
    info = resolve_info(dataset, manifest)
    path = check_out(out)
    scores = evaluate_folder(pred_dir, truth_dir, info, tolerances, device, definition, tolerance_shape)
    write_scores(path, scores)
    return format_scores(scores)


def check_out(out: str | os.PathLike | None) -> Path | None:
    """The ``--out`` JSON path, checked before any scoring (a folder, a missing or read-only folder: one line)."""
    from ctseg.io import ensure_writable_dir

    path = None if out is None else Path(out).expanduser()
    if path is not None:
        if path.is_dir():
            raise CtsegError(f"--out {out} is a folder; give a file name such as scores.json")
        if not path.parent.is_dir():
            raise CtsegError(f"--out {out}: the folder {path.parent} does not exist")
        ensure_writable_dir(path.parent, "--out folder")  # before the scoring, not after it
    return path


def write_scores(path: Path | None, scores: dict[str, Any]) -> None:
    """Write ``scores`` to ``path`` (from :func:`check_out`) atomically; nothing when ``path`` is ``None``."""
    from ctseg.io import write_json_atomic

    if path is None:
        return
    try:
        write_json_atomic(path, scores)
    except OSError as err:  # a full disk: atomic_path left nothing behind
        raise CtsegError(f"--out {path} cannot be written ({err.strerror or err}); choose a writable path") from None
