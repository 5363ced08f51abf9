"""Moved to :mod:`ctseg.training.resume`; this forwarding module goes in the next release (docs/design.md §13)."""

from ctseg._exports import forward

__getattr__ = forward(__name__, "ctseg.training.resume")
