"""Moved to :mod:`ctseg.training.seg_loss`; this forwarding module goes in the next release (docs/design.md §13)."""

from ctseg._exports import forward

__getattr__ = forward(__name__, "ctseg.training.seg_loss")
