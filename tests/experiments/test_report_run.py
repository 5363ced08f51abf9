"""``ctseg report`` on the folder of one plain ``ctseg fit`` run (no ``results.json``): the per-class table from the
best checkpoint's logged validation (or re-scored), its confusion matrix on the validation split, the curves; mixed
input; the same safety as for grid results; the one-line error for a folder with neither kind of run."""

from __future__ import annotations

import builtins
import csv
import importlib
import json
import math
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers.tiny import tiny_config
from PIL import Image

from ctseg.cli.entry import main

ERROR = "ctseg: error: "
#: 4 optimizer steps, a validation of the whole (2-scene) split after steps 2 and 4, every step logged.
FIT = ["--trainer.max_steps", "4", "--trainer.limit_val_batches", "1.0"]
SYNTHETIC = {"train_samples": 4, "val_samples": 2, "image_size": 64}


def _fit(root: Path, data_yaml: str, name: str) -> Path:
    cfg = root / f"{name}.yaml"
    cfg.write_text(tiny_config(data=data_yaml))
    run = root / name
    assert main(["fit", "--config", str(cfg), "--trainer.default_root_dir", str(run), *FIT]) == 0
    return run


@pytest.fixture(scope="module")
def fit_run(tmp_path_factory) -> Path:
    """A real tiny ``ctseg fit`` run folder (synthetic scenes): checkpoints/, lightning_logs/version_0/ …"""
    data = "class_path: ctseg.data.SyntheticDataModule\ninit_args:\n" + "".join(
        f"  {k}: {v}\n" for k, v in {**SYNTHETIC, "batch_size": 2}.items()
    )
    return _fit(tmp_path_factory.mktemp("fit"), data, "r1")


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory) -> tuple[Path, Path]:
    """A ``ctseg fit`` run on a prepared folder data set (three 64² crops: two train, one val): (run, data)."""
    from helpers.make_folder import make_color_folder

    from ctseg.data.prepare import prepare_dataset

    base = tmp_path_factory.mktemp("fit-folder")
    make_color_folder(base / "src", count=3, h=64, w=64)
    data = prepare_dataset("folder", base / "src", base / "data", classes=base / "src" / "classes.yaml", crop=64,
                           val_fraction=0.34, workers=1, progress=False)  # fmt: skip
    block = (f"class_path: ctseg.data.FolderDataModule\ninit_args:\n  root: {data}\n  image_size: 64\n"
             "  batch_size: 2\n  num_workers: 0\n  persistent_workers: false\n")  # fmt: skip
    return _fit(base, block, "mine"), Path(data)


def _copy(run: Path, dst: Path) -> Path:
    """A copy of a run folder (checkpoints hard-linked where the file system allows it; the rest copied, as tests
    edit them)."""

    def link(src, target):
        try:
            if not str(src).endswith(".ckpt"):
                raise OSError
            os.link(src, target)
        except OSError:
            shutil.copy2(src, target)

    shutil.copytree(run, dst, copy_function=link)
    return dst


def report(*args) -> int:
    return main(["report", *map(str, args), "--device", "cpu"])


def _table(path: Path) -> dict[str, str]:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["row", "value"]
    return dict(rows[1:])


def _confusion(path: Path) -> tuple[list[str], np.ndarray]:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    names = rows[0][1:]
    assert [r[0] for r in rows[1:]] == names
    return names, np.array([[int(v) for v in r[1:]] for r in rows[1:]], dtype=np.int64)


def _val_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "lightning_logs" / "version_0" / "metrics.csv", newline="") as fh:
        return [row for row in csv.DictReader(fh) if row.get("val/miou")]


def _best(run: Path) -> tuple[Path, dict[str, str]]:
    """The best checkpoint and the metrics.csv row of its validation (logged at its step − 1)."""
    (ckpt,) = sorted((run / "checkpoints").glob("best*.ckpt"))
    step = int(ckpt.stem.rpartition("step=")[2])
    (row,) = [r for r in _val_rows(run) if int(r["step"]) == step - 1]
    return ckpt, row


# ---------------------------------------------------------------------------------------------- the report
def test_a_fit_run_gets_table_confusion_and_curves(fit_run, tmp_path, capsys):
    out = tmp_path / "report"
    assert report(fit_run, "--out", out) == 0
    printed = capsys.readouterr()
    assert printed.err == ""
    names = {"table.md", "table.csv", "confusion.csv", "confusion.png", "curves.png"}
    assert {p.name for p in out.iterdir()} == names, printed.out
    assert all(f"wrote {out / n}" in printed.out for n in names)
    for name in ("confusion.png", "curves.png"):
        with Image.open(out / name) as img:
            assert img.size[0] > 300 and img.size[1] > 250
    md = (out / "table.md").read_text().splitlines()
    ckpt, row = _best(fit_run)
    assert md[0] == "# Validation scores: r1"
    assert md[2].startswith(f"Source: the metrics.csv row of step {row['step']} ") and ckpt.name in md[2], md[2]
    assert "| clutter* |" in "\n".join(md)  # the ISPRS-like synthetic set keeps clutter out of the means


def test_the_table_is_the_best_row_of_metrics_csv(fit_run, tmp_path):
    out = tmp_path / "report"
    assert report(fit_run, "--out", out) == 0
    table = _table(out / "table.csv")
    rows = _val_rows(fit_run)
    ckpt, row = _best(fit_run)
    assert float(row["val/miou"]) == max(float(r["val/miou"]) for r in rows)  # the best row
    assert len(rows) == 2 and table["source"].startswith(f"the metrics.csv row of step {row['step']} ")
    classes = [k.removeprefix("val/iou_") for k in row if k.startswith("val/iou_")]
    assert len(classes) == 6
    expected = {"mIoU": "val/miou", "mean F1": "val/mf1", "OA": "val/oa", "boundary IoU": "val/biou",
                "boundary F1": "val/bf1"}  # fmt: skip
    for label, prefix in (("IoU", "iou"), ("F1", "f1"), ("bIoU", "biou"), ("bF1", "bf1")):
        expected.update({f"{label} {c}{'*' if c == 'clutter' else ''}": f"val/{prefix}_{c}" for c in classes})
    assert set(table) - {"source"} == set(expected)
    for label, column in expected.items():
        assert float(table[label]) == float(row[column]), label


def test_the_confusion_matrix_is_the_checkpoint_on_the_val_split(fit_run, tmp_path):
    """Its counts sum to the labelled validation pixels, and equal — with the per-class recall, the diagonal over
    the row sums — a hand computation on the same predictions; re-scored, it gives the logged mIoU."""
    from ctseg.checkpoints import load_model
    from ctseg.data import SyntheticDataModule
    from ctseg.evaluation.metrics import confusion_matrix_scores, normalise_rows

    out = tmp_path / "report"
    assert report(fit_run, "--out", out) == 0
    names, counts = _confusion(out / "confusion.csv")
    ckpt, row = _best(fit_run)
    loaded = load_model(ckpt)
    assert names == loaded.class_names
    k = len(names)
    dm = SyntheticDataModule(**SYNTHETIC, batch_size=1, num_workers=0)
    dm.setup("validate")
    hand = np.zeros((k, k), dtype=np.int64)
    labelled = 0
    for batch in dm.val_dataloader():
        with torch.no_grad():
            pred = loaded.model(batch["image"].float()).argmax(1).numpy().ravel()
        truth = batch["mask"].numpy().ravel()
        keep = (truth != loaded.ignore_index) & (truth < k)
        labelled += int(keep.sum())
        np.add.at(hand, (truth[keep], pred[keep]), 1)
    assert counts.sum() == labelled > 0 and np.array_equal(counts, hand)
    # recall of class c: its pixels predicted c over all its pixels, counted pixel by pixel
    hand_recall = []
    for c in range(k):
        mine = [(t, p) for t, p in zip(*np.nonzero(hand), strict=True) if t == c]
        total = sum(int(hand[t, p]) for t, p in mine)
        hand_recall.append(int(hand[c, c]) / total if total else np.nan)
    present = counts.sum(1) > 0
    assert np.allclose((np.diag(counts) / np.maximum(counts.sum(1), 1))[present], np.array(hand_recall)[present])
    assert np.allclose(normalise_rows(torch.as_tensor(counts)).diagonal().numpy(), hand_recall, equal_nan=True)
    rescored = confusion_matrix_scores(torch.as_tensor(counts), loaded.eval_classes)
    assert math.isclose(float(rescored["miou"]), float(row["val/miou"]), abs_tol=1e-5)


def test_a_folder_data_set_run(folder_run, tmp_path, capsys):
    """A run on a prepared folder: its data module rebuilt from config.yaml's root; the matrix counts the
    labelled pixels of the val split (the folder's classes and ignore colour)."""
    from ctseg.data.datamodules import FolderDataModule

    run, data = folder_run
    out = tmp_path / "report"
    assert report(run, "--out", out) == 0
    assert "skipped" not in capsys.readouterr().out
    names, counts = _confusion(out / "confusion.csv")
    assert names == ["building", "road", "grass"]
    dm = FolderDataModule(str(data), num_workers=0, persistent_workers=False)
    dm.setup("validate")
    masks = [s["mask"].numpy() for s in dm.val_dataset]
    assert counts.sum() == sum(int(((m != 255) & (m < 3)).sum()) for m in masks) > 0
    assert _table(out / "table.csv")["source"].startswith("the metrics.csv row of step ")


def test_without_a_logged_row_the_checkpoint_is_rescored(fit_run, tmp_path, capsys):
    """A log that does not show the checkpoint's validation: the table is re-scored from the confusion matrix
    (and says so), without boundary scores."""
    import torch as t

    from ctseg.evaluation.metrics import confusion_matrix_scores

    run = _copy(fit_run, tmp_path / "r1")
    log = run / "lightning_logs" / "version_0" / "metrics.csv"
    with open(log, newline="") as fh:
        rows = list(csv.DictReader(fh))
    with open(log, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(r for r in rows if not r["val/miou"])  # the training rows only
    out = tmp_path / "report"
    assert report(run, "--out", out) == 0
    table = _table(out / "table.csv")
    assert table["source"].startswith("re-scored now from the confusion matrix of checkpoints/best")
    names, counts = _confusion(out / "confusion.csv")
    res = confusion_matrix_scores(t.as_tensor(counts), [0, 1, 2, 3, 4])
    assert math.isclose(float(table["mIoU"]), float(res["miou"]), rel_tol=1e-6)
    assert table["boundary IoU"] == "" and "bIoU building" in table and table["bIoU building"] == ""
    assert "skipped curves.png" not in capsys.readouterr().out  # the training curves are still there


def test_a_resumed_run_reads_every_log_version(fit_run, tmp_path):
    """A run resumed into ``version_1``, where Lightning logged the best checkpoint's validation at its own step
    (as after an exact resume): the logs are read together and that row is the table."""
    run = _copy(fit_run, tmp_path / "r1")
    ckpt, row = _best(fit_run)
    step = int(row["step"]) + 1
    log = run / "lightning_logs" / "version_0" / "metrics.csv"
    with open(log, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if not (r["step"] == row["step"] and r["val/miou"])]
    fields = list(row)
    with open(log, "w", newline="") as fh:
        csv.DictWriter(fh, fieldnames=fields).writeheader()
        csv.DictWriter(fh, fieldnames=fields).writerows(rows)
    (run / "lightning_logs" / "version_1").mkdir()
    with open(run / "lightning_logs" / "version_1" / "metrics.csv", "w", newline="") as fh:
        csv.DictWriter(fh, fieldnames=fields).writeheader()
        csv.DictWriter(fh, fieldnames=fields).writerow({**row, "step": str(step)})
    assert report(run, "--out", tmp_path / "report") == 0
    table = _table(tmp_path / "report" / "table.csv")
    assert table["source"].startswith(f"the metrics.csv row of step {step} (lightning_logs/version_0/metrics.csv, "
                                      "lightning_logs/version_1/metrics.csv)"), table["source"]  # fmt: skip
    assert float(table["mIoU"]) == float(row["val/miou"]) and float(table["OA"]) == float(row["val/oa"])


def test_without_checkpoints_the_best_row_is_reported(fit_run, tmp_path, capsys):
    run = _copy(fit_run, tmp_path / "r1")
    shutil.rmtree(run / "checkpoints")
    out = tmp_path / "report"
    assert report(run, "--out", out) == 0
    printed = capsys.readouterr().out
    assert "skipped confusion.png: no readable checkpoint" in printed
    assert {p.name for p in out.iterdir()} == {"table.md", "table.csv", "curves.png"}
    best = max(_val_rows(fit_run), key=lambda r: float(r["val/miou"]))
    table = _table(out / "table.csv")
    assert "highest val/miou" in table["source"] and float(table["mIoU"]) == float(best["val/miou"])


# ---------------------------------------------------------------------------------------------- mixed input
def test_grid_results_and_fit_runs_together(fit_run, tmp_path, capsys):
    """Grid results make Table 1 in --out; each fit run its report in --out/<run folder name>/ (-2 on a clash)."""
    grid = tmp_path / "grid" / "seed0"
    grid.mkdir(parents=True)
    (grid / "results.json").write_text(json.dumps(
        {"model": "pf-tiny", "scheme": "ct-cl", "miou": 0.5, "iou": {"a": 0.4, "b": 0.6}, "dataset": "synthetic"}
    ))  # fmt: skip
    other = _copy(fit_run, tmp_path / "elsewhere" / "r1")
    out = tmp_path / "report"
    assert report(tmp_path / "grid", fit_run, other, "--out", out) == 0
    names = {p.name for p in out.iterdir()}
    assert {"table.md", "runs.md", "r1", "r1-2"} <= names, names
    assert "# Results" in (out / "table.md").read_text()
    for sub in ("r1", "r1-2"):
        assert (out / sub / "confusion.csv").is_file() and (out / sub / "table.md").read_text().startswith(
            "# Validation scores: r1"
        )
    capsys.readouterr()
    out2 = tmp_path / "report2"  # a folder of fit runs: each below --out
    assert report(tmp_path / "elsewhere", "--out", out2) == 0
    assert {p.name for p in out2.iterdir()} == {"table.md", "table.csv", "confusion.csv", "confusion.png",
                                                 "curves.png"}  # fmt: skip


def test_a_folder_with_neither_kind_is_one_error_line(tmp_path, capsys):
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    assert report(tmp_path / "empty", "--out", tmp_path / "report") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(ERROR), err
    assert str(tmp_path / "empty") in err[0] and "results.json" in err[0] and "ctseg fit" in err[0]
    assert not (tmp_path / "report").exists()


# ---------------------------------------------------------------------------------------------- from a stranger
class _MakesMarker:
    """Unpickling this runs ``open(marker, "w")``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _edit_config(run: Path, edit) -> None:
    import yaml

    path = run / "lightning_logs" / "version_0" / "config.yaml"
    doc = yaml.safe_load(path.read_text())
    edit(doc)
    path.write_text(yaml.safe_dump(doc))


@pytest.mark.parametrize("class_path", ["os.system", "ctseg.training.SegmentationTask", "ctseg.cli.entry.main"])
def test_a_foreign_class_path_is_a_note_and_nothing_is_imported(fit_run, tmp_path, class_path, capsys, monkeypatch):
    import ctseg.experiments.report_data

    run = _copy(fit_run, tmp_path / "r1")
    _edit_config(run, lambda doc: doc["data"].update(class_path=class_path))
    imported = []
    real_import = importlib.import_module
    recorder = SimpleNamespace(import_module=lambda name, *a: imported.append(name) or real_import(name, *a))
    monkeypatch.setattr(ctseg.experiments.report_data, "importlib", recorder)
    out = tmp_path / "report"
    assert report(run, "--out", out) == 0
    printed = capsys.readouterr()
    notes = [line for line in printed.out.splitlines() if "skipped confusion.png" in line]
    assert len(notes) == 1 and "is not one of ctseg's" in notes[0] and printed.err == "", printed
    assert imported == []
    assert {p.name for p in out.iterdir()} == {"table.md", "table.csv", "curves.png"}


def test_a_recorded_decoded_cache_writes_nothing(folder_run, tmp_path, capsys):
    run, data = folder_run
    run = _copy(run, tmp_path / "mine")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "val-images.npy").write_bytes(b"precious")
    _edit_config(run, lambda doc: doc["data"]["init_args"].update(decoded_cache=str(victim), num_workers=3))
    before = sorted((p.name, p.stat().st_mtime_ns) for p in [*victim.iterdir(), *Path(data).rglob("*")])
    assert report(run, "--out", tmp_path / "report") == 0
    assert "skipped" not in capsys.readouterr().out
    assert sorted((p.name, p.stat().st_mtime_ns) for p in [*victim.iterdir(), *Path(data).rglob("*")]) == before
    assert (victim / "val-images.npy").read_bytes() == b"precious"


@pytest.mark.parametrize("where", ["symlink", "recorded"])
def test_a_checkpoint_outside_the_run_folder_is_not_opened(fit_run, tmp_path, where, capsys, monkeypatch):
    """A checkpoint symlinked from outside (here one that would run code) is skipped with a note and never opened
    (the run's last.ckpt is reported instead); a checkpoint folder config.yaml records elsewhere is not looked in."""
    marker = tmp_path / "MARKER"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    evil = elsewhere / "best-epoch=9-step=99.ckpt"
    torch.save({"state_dict": {}, "x": _MakesMarker(marker)}, evil)
    run = _copy(fit_run, tmp_path / "r1")
    for best in (run / "checkpoints").glob("best*.ckpt"):
        best.unlink()
    if where == "symlink":
        (run / "checkpoints" / evil.name).symlink_to(evil)
    else:
        shutil.rmtree(run / "checkpoints")
        _edit_config(run, lambda doc: doc["checkpoint"].update(dirpath=str(elsewhere)))
    opened = []
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda file, *a, **k: opened.append(file) or real_open(file, *a, **k))
    assert report(run, "--out", tmp_path / "report") == 0
    monkeypatch.undo()
    printed = capsys.readouterr()
    assert not marker.exists() and printed.err == ""
    assert [f for f in opened if isinstance(f, str | os.PathLike) and "elsewhere" in str(Path(f).resolve())] == []
    assert printed.out.count("is not inside the run's folder") == 1, printed.out
    source = _table(tmp_path / "report" / "table.csv")["source"]
    if where == "symlink":
        assert "checkpoints/last.ckpt (the last checkpoint: no best one" in source, source
        assert (tmp_path / "report" / "confusion.csv").is_file()
    else:
        assert "no readable checkpoint" in source


def test_a_checkpoint_that_could_run_code_refuses_the_report(fit_run, tmp_path, capsys):
    marker = tmp_path / "MARKER"
    run = _copy(fit_run, tmp_path / "r1")
    torch.save({"state_dict": {}, "x": _MakesMarker(marker)}, run / "checkpoints" / "best-evil.ckpt")
    assert report(run, "--out", tmp_path / "report") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(ERROR) and "best-evil.ckpt" in err[0], err
    assert not marker.exists() and not (tmp_path / "report").exists()


@pytest.mark.parametrize("text", ["a: &a [x, x]\nb: [*a, *a]\n", "[" * 200_000 + "]" * 200_000])
def test_a_crafted_config_is_one_error_line(fit_run, tmp_path, text, capsys):
    run = _copy(fit_run, tmp_path / "r1")
    (run / "lightning_logs" / "version_0" / "config.yaml").write_text(text)
    assert report(run, "--out", tmp_path / "report") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(ERROR) and "config.yaml" in err[0], err
    assert not (tmp_path / "report").exists()
