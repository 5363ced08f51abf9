"""The package layout's promises (docs/design.md §13): public names import from their packages, moved modules
forward with a DeprecationWarning naming the new path, and the paths users and checkpoints hold are unchanged."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

PUBLIC = [
    ("ctseg.inference", "predict_tile"),
    ("ctseg.inference", "predict_rows"),
    ("ctseg.inference", "OnnxSegmentor"),
    ("ctseg.checkpoints", "load_model"),
    ("ctseg.checkpoints", "export_model"),
    ("ctseg.vectorize", "vectorize_raster"),
    ("ctseg.predict", "run_predict"),
    ("ctseg.evaluation", "BoundaryMetrics"),
    ("ctseg.evaluation", "boundary_scores"),
    ("ctseg.training", "SegmentationTask"),
    ("ctseg.cli", "main"),
    ("ctseg.models", "build_model"),
    ("ctseg.contrastive", "PatchContrastiveLoss"),
]
MOVED = [
    ("ctseg.metrics", "ctseg.evaluation.metrics", "BoundaryMetrics"),
    ("ctseg.boundary", "ctseg.evaluation.boundary", "boundary_scores"),
    ("ctseg.seg_loss", "ctseg.training.seg_loss", "SegmentationLoss"),
    ("ctseg.resume", "ctseg.training.resume", "ExactResume"),
    ("ctseg.streaming", "ctseg.inference.rows", "predict_rows"),
    ("ctseg.onnx_backend", "ctseg.inference.onnx", "OnnxSegmentor"),
]


@pytest.mark.parametrize(("package", "name"), PUBLIC)
def test_public_names_import_from_their_package_without_a_warning(package, name):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        assert getattr(importlib.import_module(package), name) is not None
    assert name in dir(importlib.import_module(package))


@pytest.mark.parametrize(("old", "new", "name"), MOVED)
def test_moved_modules_forward_with_a_warning_naming_the_new_path(old, new, name):
    with pytest.warns(DeprecationWarning, match=rf"{old}\.{name} moved to {new}\.{name}"):
        value = getattr(importlib.import_module(old), name)
    assert value is getattr(importlib.import_module(new), name)


def test_unknown_names_are_attribute_errors():
    with pytest.raises(AttributeError):
        importlib.import_module("ctseg.inference").no_such_name  # noqa: B018
    with pytest.raises(AttributeError):
        importlib.import_module("ctseg.metrics").__wrapped__  # noqa: B018


def test_the_paths_checkpoints_and_configs_hold_are_unchanged():
    """Every fit checkpoint records ``ctseg.training.SegmentationTask``; configs name the data modules both ways."""
    from ctseg.checkpoints.files import ALLOWED_HPARAM_NAMES
    from ctseg.training import SegmentationTask

    assert f"{SegmentationTask.__module__}.{SegmentationTask.__qualname__}" == "ctseg.training.SegmentationTask"
    assert "ctseg.training.SegmentationTask" in ALLOWED_HPARAM_NAMES["_class_path"]
    for path in ("ctseg.data.FolderDataModule", "ctseg.data.datamodules.FolderDataModule"):
        module, _, name = path.rpartition(".")
        assert getattr(importlib.import_module(module), name).__name__ == "FolderDataModule"


def test_python_dash_m_ctseg_cli_runs_the_command():
    res = subprocess.run([sys.executable, "-m", "ctseg.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "predict" in res.stdout, res.stderr


#: What each package may import (docs/design.md §13).
MAY_IMPORT = {
    "contrastive": set(),
    "configs": set(),
    "safety": {"models", "data"},
    "models": {"safety"},
    "data": {"safety"},
    "inference": {"data", "safety"},
    "evaluation": {"data", "inference"},
    "training": {"contrastive", "models", "data", "evaluation", "safety", "checkpoints"},
    "checkpoints": {"models", "data", "safety", "inference"},
    "vectorize": {"data", "safety"},
    "predict": {"inference", "checkpoints", "vectorize", "data", "safety"},
    "experiments": {"contrastive", "safety", "models", "data", "inference", "evaluation", "training", "checkpoints",
                    "vectorize", "predict"},
}
#: Top-level modules any package may use.
SHARED = {"errors", "io", "staging", "_exports"}


def test_packages_import_only_what_the_package_map_allows():
    src = Path(importlib.import_module("ctseg").__file__).parent
    pattern = re.compile(r"^\s*(?:from|import) ctseg\.([a-z_]+)", re.MULTILINE)
    found = {
        package: {m for p in (src / package).rglob("*.py") for m in pattern.findall(p.read_text())} - {package}
        for package in MAY_IMPORT
    }
    extra = {package: sorted(found[package] - MAY_IMPORT[package] - SHARED) for package in MAY_IMPORT}
    assert {k: v for k, v in extra.items() if v} == {}


def test_no_module_imports_the_cli_but_itself():
    """``cli/`` is the top of the map: nothing below it imports it."""
    src = Path(importlib.import_module("ctseg").__file__).parent
    offenders = [
        str(p.relative_to(src))
        for p in src.rglob("*.py")
        if p.parts[len(src.parts)] != "cli" and "ctseg.cli" in p.read_text()
        and "import" in "".join(line for line in p.read_text().splitlines() if "ctseg.cli" in line)
    ]
    assert offenders == [], offenders
