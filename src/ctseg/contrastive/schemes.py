"""Named contrastive schemes selectable from configs: ``none``, ``ct-cl``, ``ct-infonce``, ``ms``, ``mscs``.

``ct-*`` is the Contrastive Transformer (patch-level, :class:`~ctseg.contrastive.PatchContrastiveLoss`, default
weight 1.0, docs/design.md §1); ``ms`` / ``mscs`` the multi-scale (and cross-scale) pixel contrast of Pissas et al.
(:class:`~ctseg.contrastive.MultiScaleContrastiveLoss`, default weight 0.1, docs/design.md §5).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from ctseg.errors import CtsegError

SCHEMES = ("none", "ct-cl", "ct-infonce", "ms", "mscs")
DEFAULT_WEIGHTS = {"none": 0.0, "ct-cl": 1.0, "ct-infonce": 1.0, "ms": 0.1, "mscs": 0.1}


def build_scheme(
    scheme: str, in_channels: Sequence[int], num_classes: int, ignore_index: int = 255, **options: Any
) -> nn.Module | None:
    """The contrastive loss module of a scheme (``None`` for ``"none"``); ``options`` go to its constructor."""
    if scheme not in SCHEMES:
        raise CtsegError(f"unknown scheme {scheme!r}; choose one of: {', '.join(SCHEMES)}")
    if scheme == "none":
        return None
    try:
        if scheme.startswith("ct-"):
            from ctseg.contrastive import PatchContrastiveLoss

            loss = scheme.removeprefix("ct-")
            return PatchContrastiveLoss(in_channels, num_classes, ignore_index=ignore_index, loss=loss, **options)
        from ctseg.contrastive import MultiScaleContrastiveLoss

        return MultiScaleContrastiveLoss(
            in_channels, num_classes, ignore_index=ignore_index, cross_scale=scheme == "mscs", **options
        )
    except TypeError as err:  # an unknown option name
        raise CtsegError(f"scheme {scheme!r}: bad scheme_options ({err})") from None
    except ValueError as err:  # a bad option value: the constructor's message names it and the choices
        raise CtsegError(f"--model.scheme_options: {err}") from None
