"""``ctseg report`` on a results folder from someone else: what a ``results.json`` names is data, never directions.

A crafted ``results.json`` must not make the report write outside ``--out`` (a decoded cache built in, and old
``.npy`` files unlinked from, a folder it names), import or call anything but ctseg's own data modules, open a
checkpoint or log outside the run's own folder, or crash with a traceback (200,000 nested brackets).
"""

from __future__ import annotations

import builtins
import importlib
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from ctseg.cli.entry import main

ERROR = "ctseg: error: "


class _MakesMarker:
    """Unpickling this runs ``open(marker, "w")``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)  # the tiny checkpoint is 39 MB: a hard link where the file system allows it
    except OSError:
        shutil.copy(src, dst)


def make_runs(tmp_path: Path, tiny: Path, **fields) -> Path:
    """A baseline and a CT-CL run (the tiny run's numbers, its checkpoint in each run's folder, no CSV log) with
    ``fields`` replaced in both ``results.json``."""
    real = json.loads((tiny / "results.json").read_text())
    runs = tmp_path / "runs"
    for scheme in ("none", "ct-cl"):
        run = runs / scheme
        run.mkdir(parents=True)
        _link(Path(real["checkpoint"]), run / "best.ckpt")
        res = {**real, "scheme": scheme, "checkpoint": str(run / "best.ckpt"), "log_dir": None, **fields}
        (run / "results.json").write_text(json.dumps(res))
    return runs


def report(runs: Path, out: Path) -> int:
    return main(["report", str(runs), "--out", str(out), "--device", "cpu"])


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every path below ``root`` with its mtime and bytes (folders: empty bytes)."""
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else b"")
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A prepared folder data set of three 64² crops (two train, one val)."""
    from helpers.make_folder import make_color_folder

    from ctseg.data.prepare import prepare_dataset

    base = tmp_path_factory.mktemp("handed")
    make_color_folder(base / "src", count=3, h=64, w=64)
    return prepare_dataset("folder", base / "src", base / "data", classes=base / "src" / "classes.yaml", crop=64,
                           val_fraction=0.34, workers=1, progress=False)  # fmt: skip


def _victim(folder: Path) -> Path:
    folder.mkdir()
    for name in ("val-images.npy", "val-masks.npy", "val-0.npy", "train-images.npy", "notes.txt"):
        (folder / name).write_bytes(b"precious " + name.encode())
    return folder


# ---------------------------------------------------------------------------------------------- decoded cache
def test_the_decoded_cache_vector_is_real(tmp_path, prepared):
    """Guard for the test below: the data module built with a recorded ``decoded_cache`` writes there."""
    from ctseg.data.datamodules import FolderDataModule

    victim = _victim(tmp_path / "victim")
    before = snapshot(victim)
    FolderDataModule(str(prepared), num_workers=0, decoded_cache=str(victim)).setup("validate")
    assert snapshot(victim) != before


@pytest.mark.parametrize("cache", ["victim", True])
def test_a_recorded_decoded_cache_writes_nothing(tmp_path, tiny, prepared, cache, capsys):
    """``decoded_cache`` pointing at someone's folder (or ``true``: ``<root>/decoded``) is not used: the folder
    and the data root are byte-for-byte unchanged, nothing new appears, and the figure is still made (read)."""
    victim = _victim(tmp_path / "victim")
    data = {"class_path": "ctseg.data.datamodules.FolderDataModule",
            "init_args": {"root": str(prepared), "decoded_cache": str(victim) if cache == "victim" else True,
                          "num_workers": 3, "persistent_workers": True, "batch_size": 1}}  # fmt: skip
    runs = make_runs(tmp_path, tiny, data=data)
    victim_before, data_before = snapshot(victim), snapshot(prepared)
    assert report(runs, tmp_path / "report") == 0
    out = capsys.readouterr().out
    assert snapshot(victim) == victim_before and snapshot(prepared) == data_before
    assert "skipped qualitative.png" not in out, out
    assert (tmp_path / "report" / "qualitative.png").is_file()


# ---------------------------------------------------------------------------------------------- code-naming
@pytest.mark.parametrize(
    "class_path",
    ["ctseg.training.SegmentationTask", "ctseg.cli.entry.SomeThing", "ctseg.data.prepared.SyntheticDataModule",
     "ctseg.data.registry.register_dataset", "os.system", ["ctseg.data.SyntheticDataModule"]],
)  # fmt: skip
def test_only_ctseg_data_modules_are_rebuilt(tmp_path, tiny, class_path, capsys, monkeypatch):
    """Another ctseg module's class (or a wrong spelling of a data module) is neither imported nor called: the
    figure is skipped with one note naming it; the tables are written, exit 0."""
    import ctseg.experiments.report_data

    imported = []
    real_import = importlib.import_module
    recorder = SimpleNamespace(import_module=lambda name, *a: imported.append(name) or real_import(name, *a))
    # what the report imports, nothing else
    monkeypatch.setattr(ctseg.experiments.report_data, "importlib", recorder)
    runs = make_runs(tmp_path, tiny, data={"class_path": class_path, "init_args": {}})
    assert report(runs, tmp_path / "report") == 0
    captured = capsys.readouterr()
    notes = [line for line in captured.out.splitlines() if "qualitative.png" in line]
    assert len(notes) == 1 and "is not one of ctseg's" in notes[0], captured.out
    assert captured.err == "" and imported == []
    assert (tmp_path / "report" / "table.md").is_file()


@pytest.mark.parametrize(
    "class_path", ["ctseg.data.SyntheticDataModule", "ctseg.data.synthetic.SyntheticDataModule",
                   "ctseg.data.FolderDataModule", "ctseg.data.datamodules.PotsdamDataModule"],
)  # fmt: skip
def test_both_spellings_of_a_data_module_are_accepted(class_path):
    import lightning as L

    from ctseg.experiments.report_data import import_data_module

    cls = import_data_module(class_path)
    assert issubclass(cls, L.LightningDataModule) and cls.__name__ == class_path.rpartition(".")[2]


def test_the_allow_list_is_the_data_modules_ctseg_data_exports():
    import ctseg.data
    from ctseg.experiments.report_data import DATA_MODULES

    exported = {name for name in ctseg.data.__all__ if name.endswith("DataModule")}
    assert set(DATA_MODULES) == exported
    for name, module in DATA_MODULES.items():
        assert getattr(ctseg.data, name).__module__ == module


def test_recorded_arguments_are_checked(tmp_path, tiny, prepared, capsys):
    """A wrong type, a root that is no prepared folder, a split name with a path in it: one note each, no
    traceback; a root whose manifest nests 200,000 brackets deep too."""
    deep = tmp_path / "deep"
    deep.mkdir()
    (deep / "manifest.json").write_text("[" * 200_000 + "]" * 200_000)
    cases = [
        ({"class_path": "ctseg.data.SyntheticDataModule", "init_args": {"image_size": "64"}}, "image_size"),
        ({"class_path": "ctseg.data.SyntheticDataModule", "init_args": {"val_samples": 10**12}}, "val_samples"),
        ({"class_path": "ctseg.data.FolderDataModule", "init_args": {"root": str(tmp_path)}}, "not a prepared"),
        ({"class_path": "ctseg.data.FolderDataModule", "init_args": {"root": str(deep)}}, "nests"),
        ({"class_path": "ctseg.data.FolderDataModule", "init_args": {"root": str(prepared), "val_split": "../x"}},
         "not a split name"),
        ({"class_path": "ctseg.data.FolderDataModule", "init_args": "root=/"}, "not a mapping"),
    ]  # fmt: skip
    for i, (data, needle) in enumerate(cases):
        runs = make_runs(tmp_path / str(i), tiny, data=data)
        assert report(runs, tmp_path / str(i) / "report") == 0
        notes = [line for line in capsys.readouterr().out.splitlines() if "skipped qualitative.png" in line]
        assert len(notes) == 1 and needle in notes[0], (data, notes)


# ---------------------------------------------------------------------------------------------- results.json
def test_deeply_nested_results_json_is_one_line(tmp_path, capsys):
    run = tmp_path / "runs" / "a"
    run.mkdir(parents=True)
    (run / "results.json").write_text("[" * 200_000 + "]" * 200_000)
    assert report(tmp_path / "runs", tmp_path / "report") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(ERROR) and "results.json" in err[0] and "nests" in err[0], err
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [("miou", "0.7"), ("iou", {"building": [1]}), ("seed", "0; rm"), ("eval_classes", [[0]]), ("model", {"a": 1}),
     ("class_names", "abc"), ("mbiou", True)],
)  # fmt: skip
def test_fields_of_the_wrong_type_are_one_line(tmp_path, tiny, field, value, capsys):
    runs = make_runs(tmp_path, tiny, **{field: value})
    assert report(runs, tmp_path / "report") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"{ERROR}{runs / 'ct-cl' / 'results.json'} is not a ctseg results file ({field} has the wrong type)"]
    assert not (tmp_path / "report").exists()


# ---------------------------------------------------------------------------------------------- named files
@pytest.mark.parametrize("where", ["absolute", "relative", "symlink"])
def test_a_checkpoint_outside_the_run_folder_is_not_opened(tmp_path, tiny, where, capsys, monkeypatch):
    """A checkpoint (here one that would run code) and a CSV log outside the run's own folder are skipped with a
    note and never opened — whether named by absolute path, by ``..``, or through a symlink in the folder."""
    marker = tmp_path / "MARKER"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    evil = elsewhere / "best.ckpt"
    torch.save({"state_dict": {}, "x": _MakesMarker(marker)}, evil)
    (elsewhere / "metrics.csv").write_text("epoch,step,val/miou,train/seg\n0,0,0.99,9.0\n")
    runs = make_runs(tmp_path, tiny)
    for run in (runs / "none", runs / "ct-cl"):
        res = json.loads((run / "results.json").read_text())
        if where == "absolute":
            (run / "best.ckpt").unlink()  # no copy of the same name in the run folder (see the moved-folder test)
            res["checkpoint"], res["log_dir"] = str(evil), str(elsewhere)
        elif where == "relative":
            (run / "best.ckpt").unlink()
            res["checkpoint"], res["log_dir"] = "../../elsewhere/best.ckpt", "../../elsewhere"
        else:
            (run / "best.ckpt").unlink()
            (run / "best.ckpt").symlink_to(evil)
            (run / "logs").symlink_to(elsewhere, target_is_directory=True)
            res["checkpoint"], res["log_dir"] = str(run / "best.ckpt"), str(run / "logs")
        (run / "results.json").write_text(json.dumps(res))
    opened = []
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda file, *a, **k: opened.append(file) or real_open(file, *a, **k))
    assert report(runs, tmp_path / "report") == 0
    monkeypatch.undo()
    captured = capsys.readouterr()
    touched = [str(f) for f in opened if isinstance(f, (str, os.PathLike)) and "elsewhere" in str(Path(f).resolve())]
    assert touched == [] and not marker.exists()
    assert captured.out.count("is not inside the run's folder; not read") == 4, captured.out
    assert "skipped qualitative.png" in captured.out and "skipped curves.png" in captured.out
    assert captured.err == ""
    assert {p.name for p in (tmp_path / "report").iterdir()} == {"table.md", "table.csv", "runs.md", "runs.csv",
                                                                  "patch_sampling.png"}  # fmt: skip


def test_a_moved_run_folder_uses_its_own_copy_of_the_checkpoint(tmp_path, tiny, capsys):
    """A results folder copied from another machine records the old absolute checkpoint path: the file of that
    name in the run's ``checkpoints/`` folder is used when its SHA-256 is the recorded one, never the old path."""
    real = json.loads((tiny / "results.json").read_text())
    runs = make_runs(tmp_path, tiny, checkpoint=real["checkpoint"])  # the path on the "other machine"
    for run in (runs / "none", runs / "ct-cl"):
        (run / "checkpoints").mkdir()
        os.replace(run / "best.ckpt", run / "checkpoints" / Path(real["checkpoint"]).name)
    assert report(runs, tmp_path / "report") == 0
    out = capsys.readouterr().out
    assert "skipped qualitative.png" not in out and "not inside the run's folder" not in out, out
    assert (tmp_path / "report" / "qualitative.png").is_file()
    tampered = runs / "ct-cl" / "checkpoints" / Path(real["checkpoint"]).name
    tampered.unlink()
    tampered.write_bytes(b"not the recorded file")
    assert report(runs, tmp_path / "report2") == 0
    assert "skipped qualitative.png" in capsys.readouterr().out
