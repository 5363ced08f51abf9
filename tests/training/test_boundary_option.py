"""Issue 32: the task's boundary metric definition (``--model.boundary_definition`` / ``boundary_shape``)."""

import inspect

import pytest
import torch

from ctseg.errors import CtsegError
from ctseg.experiments.report_tables import group_results, render_tables
from ctseg.safety.model_spec import check_task_hparams
from ctseg.training import SegmentationTask


def _border_case() -> tuple[torch.Tensor, torch.Tensor]:
    """Class 1 fills the left half of the image (it touches three image borders); the prediction is 2 px short."""
    target = torch.zeros(1, 32, 32, dtype=torch.long)
    target[:, :, :16] = 1
    pred = torch.zeros_like(target)
    pred[:, 2:, :14] = 1
    return pred, target


def _biou(task: SegmentationTask) -> float:
    pred, target = _border_case()
    task.val_boundary.update(pred, target)
    return float(task.val_boundary.compute()["mbiou@3"])


def test_task_passes_the_boundary_definition_to_its_metrics():
    default = SegmentationTask(model="pf-tiny", num_classes=2, img_size=64)
    ref = SegmentationTask(
        model="pf-tiny", num_classes=2, img_size=64, boundary_definition="reference", boundary_shape="disk"
    )
    for metric in (default.val_boundary, default.test_boundary):
        assert (metric.definition, metric.tolerance_shape) == ("ctseg", "square")
    for metric in (ref.val_boundary, ref.test_boundary):
        assert (metric.definition, metric.tolerance_shape) == ("reference", "disk")
    assert ref.hparams.boundary_definition == "reference" and ref.hparams.boundary_shape == "disk"
    # the class touches the image border: the reference definition counts it as boundary, ctseg's does not
    assert _biou(ref) != pytest.approx(_biou(default))


def test_unknown_boundary_definition_is_one_line_error():
    with pytest.raises(CtsegError, match="boundary definition"):
        SegmentationTask(model="pf-tiny", num_classes=2, img_size=64, boundary_definition="cheng")
    with pytest.raises(CtsegError, match="tolerance shape"):
        SegmentationTask(model="pf-tiny", num_classes=2, img_size=64, boundary_shape="circle")


def test_checkpoint_hparams_keep_the_boundary_definition():
    arguments = inspect.signature(SegmentationTask).parameters
    hp = {"model": "pf-tiny", "num_classes": 2, "boundary_definition": "reference", "boundary_shape": "disk"}
    out = check_task_hparams(hp, "x.ckpt", arguments)
    assert out["boundary_definition"] == "reference" and out["boundary_shape"] == "disk"
    old = check_task_hparams({"model": "pf-tiny", "num_classes": 2}, "old.ckpt", arguments)
    assert "boundary_definition" not in old  # older checkpoints: the task's defaults (ctseg, square)


def _result(seed: int, **extra) -> dict:
    return {"dataset": "synthetic", "model": "pf-tiny", "scheme": "none", "config_name": "c", "seed": seed,
            "class_names": ["a", "b"], "eval_classes": None, "miou": 0.5, "mf1": 0.6, "oa": 0.7,
            "iou": {"a": 0.5, "b": 0.5}, "f1": {"a": 0.6, "b": 0.6}, "boundary_tolerance": 3,
            "mbiou": 0.3, "mbf1": 0.4, "biou": {"a": 0.3, "b": 0.3}, "bf1": {"a": 0.4, "b": 0.4}, **extra}  # fmt: skip


def test_report_names_the_boundary_definitions():
    md, _ = render_tables(group_results([_result(0)]))
    assert "boundary definition: ctseg, square" in md  # results.json written before the keys existed
    both = [_result(0), _result(1, boundary_definition="reference", boundary_tolerance_shape="disk")]
    md, _ = render_tables(group_results(both))
    assert "boundary definition: ctseg, square / reference, disk" in md
    lines = md.splitlines()
    at = lines.index("boundary definition: ctseg, square / reference, disk")
    assert lines[at - 2].startswith("| boundary F1 std |")  # right under the boundary rows
