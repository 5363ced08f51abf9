"""Scores: the ISPRS protocol's region metrics (:mod:`~ctseg.evaluation.metrics`), boundary IoU / F1
(:mod:`~ctseg.evaluation.boundary`) and scoring prediction files against label files
(:mod:`~ctseg.evaluation.files`, ``ctseg evaluate``)."""

from ctseg.evaluation.boundary import boundary_scores
from ctseg.evaluation.metrics import BoundaryMetrics, SegmentationMetrics

__all__ = ["BoundaryMetrics", "SegmentationMetrics", "boundary_scores"]
