"""Moved to :mod:`ctseg.evaluation.metrics`; this forwarding module goes in the next release (docs/design.md §13).

One name here is a contract of its own, not a forwarded one: :func:`boundary_iou_reference` (the published Boundary
IoU of two binary masks, :mod:`ctseg.evaluation.boundary_reference`) imports from here without a warning.
"""

from ctseg._exports import forward
from ctseg.evaluation.boundary_reference import boundary_iou_reference

__all__ = ["boundary_iou_reference"]

__getattr__ = forward(__name__, "ctseg.evaluation.metrics")
