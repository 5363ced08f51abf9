"""Scores: the ISPRS protocol's region metrics (:mod:`~ctseg.evaluation.metrics`), boundary IoU / F1
(:mod:`~ctseg.evaluation.boundary`; the published Boundary IoU of two masks in
:mod:`~ctseg.evaluation.boundary_reference`) and scoring prediction files against label files
(:mod:`~ctseg.evaluation.files`, ``ctseg evaluate``)."""

from ctseg.evaluation.boundary import boundary_scores
from ctseg.evaluation.boundary_reference import boundary_iou_reference
from ctseg.evaluation.metrics import BoundaryMetrics, SegmentationMetrics

__all__ = ["BoundaryMetrics", "SegmentationMetrics", "boundary_iou_reference", "boundary_scores"]
