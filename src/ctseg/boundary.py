"""Moved to :mod:`ctseg.evaluation.boundary`; this forwarding module goes in the next release (docs/design.md §13)."""

from ctseg._exports import forward

__getattr__ = forward(__name__, "ctseg.evaluation.boundary")
