"""The settings of the sliding window, checked once: :class:`WindowOptions`, shared by
:func:`ctseg.inference.tile.predict_tile` (an image in memory) and :func:`ctseg.inference.rows.predict_rows` (a
raster read by row bands), and the checks that need the model or the image (:func:`check_normalisation`,
:func:`check_scale`, :func:`resolve_device`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from types import SimpleNamespace
from typing import Any

import torch

from ctseg.data.definitions import IMAGENET_MEAN, IMAGENET_STD, value_scale
from ctseg.errors import CtsegError
from ctseg.inference.blend import WindowGrid, check_window_args, device_of, resolve_amp, window_grid, window_multiple

__all__ = ["WindowOptions", "check_normalisation", "check_scale", "resolve_device", "window_options"]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"`` / ``None`` → CUDA when available, else CPU; ``"cuda"`` without a GPU is a one-line error."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CtsegError("--device cuda was asked for but no CUDA device is available; use --device cpu or auto")
    return dev


def check_normalisation(model, mean: Sequence[float], std: Sequence[float]) -> tuple[list[float], list[float]]:
    """``mean`` / ``std`` as float lists; one-line errors unless one of each per band of the model."""
    mean, std = [float(m) for m in mean], [float(s) for s in std]
    if len(mean) != len(std):
        raise CtsegError(f"mean has {len(mean)} values but std has {len(std)}; give one of each per band")
    model_bands = getattr(getattr(model, "encoder", None), "in_chans", None)
    if model_bands is None:
        model_bands = getattr(model, "in_chans", None)
    if model_bands is not None and int(model_bands) != len(mean):
        raise CtsegError(f"the model takes {model_bands} bands but mean / std have {len(mean)} values (one per band)")
    return mean, std


def check_scale(scale: float | None, dtype: str) -> float:
    """The divisor of raw values: ``scale`` or the dtype's (255 / 65535 / 1); one-line error unless positive."""
    scale = float(value_scale(dtype) if scale is None else scale)
    if not scale > 0:
        raise CtsegError(f"scale must be positive, got {scale}")
    return scale


def _floats(name: str, values: Sequence[float]) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise CtsegError(f"{name} must be one number per band, got {values!r}") from None
    if not out:
        raise CtsegError(f"{name} must be one number per band, got none")
    return out


@dataclass(frozen=True)
class WindowOptions:
    """How an image is cut into windows, fed to the model and blended back (checked when built).

    **Windows.** ``window`` (pixels, a multiple of the model's input multiple ``m``, 32 for ctseg's encoders,
    checked against the model at prediction time) is the side of every window fed to the model. Along an axis of
    ``L < window`` pixels the window shrinks to ``⌈L / m⌉ · m`` and the image is reflect-padded up to it (edge-padded
    when the image is a single row or column), so every window is full-size. ``overlap`` ∈ ``[0, 1)`` is a *fraction*
    of the window: with ``s = window − round(overlap · window)`` the largest allowed step, an axis of ``L ≥ window``
    pixels gets ``n = ⌈(L − window) / s⌉ + 1`` windows starting at ``round(k · (L − window) / (n − 1))``,
    ``k = 0 … n − 1`` — spread evenly from the first pixel to the last, so neighbours share at least
    ``round(overlap · window)`` pixels (:func:`~ctseg.inference.blend.window_positions`). The 2-D grid is the
    product of the two axes' positions, visited row by row, ``batch_size`` windows per forward pass.

    **Blending.** Each window's softmax probabilities are weighted by a separable Hann (cosine²) window sampled at
    pixel centres, ``b(t) = sin²(π (t + ½) / a)`` for ``t = 0 … a − 1`` (``a``: the window's side), strictly
    positive (no 0 / 0 at the image border) and falling towards the window edge where a network sees the least
    context, so seams vanish. Along each axis the weights are normalised, ``w_k(x) = b(x − p_k) / Σ_l b(x − p_l)``
    (``p_k``: the start of window ``k``; the sum over the windows ``l`` that cover ``x``), so ``Σ_k w_k(x) = 1``;
    the grid being a product, the 2-D weights ``w_i(y) · w_j(x)`` sum to exactly 1 at every pixel and the blend is
    a convex combination of the windows' probabilities (float32, no weight buffer). A pixel seen by one window keeps
    that window's probabilities, so a window covering the whole image reproduces a single forward pass
    (:func:`~ctseg.inference.blend.blend_weights`).

    **TTA.** ``tta=True`` averages the probabilities of the window, its horizontal flip and its vertical flip
    (three forward passes per batch).

    **Normalisation.** ``x = (pixel / scale − mean) / std`` per band, with one ``mean`` / ``std`` value per band
    of the model (ImageNet statistics by default; :class:`~ctseg.data.definitions.DatasetInfo`) and ``scale`` the
    divisor of raw values (``DatasetInfo.scale``; ``None``: by the image's dtype, 255 for uint8, 65535 for uint16,
    1 for float32, :func:`~ctseg.data.definitions.value_scale`).

    **Device and precision.** ``device``: ``"auto"`` / ``None`` (stored as ``None``: the model's device) or a
    torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"`` …; one without a GPU is an error at prediction time). The
    forward runs under bf16 autocast with ``amp=True``; ``amp=None`` → on for CUDA devices that support bf16. The
    softmax and the blend are float32 either way.

    Checks that need no model are made here, each a one-line :class:`~ctseg.errors.CtsegError`; the window's
    multiple and the band count are checked against the model by :meth:`check_model`.
    """

    window: int = 512
    overlap: float = 0.25
    batch_size: int = 8
    tta: bool = False
    device: str | torch.device | None = None
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    scale: float | None = None
    amp: bool | None = None

    def __post_init__(self) -> None:
        put = object.__setattr__
        window, batch_size = int(self.window), int(self.batch_size)
        if window < 1:
            raise CtsegError(f"window must be a positive multiple of the model's input multiple (32), got {window}")
        if not 0.0 <= float(self.overlap) < 1.0:
            raise CtsegError(f"overlap is a fraction of the window in [0, 1), got {self.overlap}")
        if batch_size < 1:
            raise CtsegError(f"batch_size must be at least 1, got {batch_size}")
        mean, std = _floats("mean", self.mean), _floats("std", self.std)
        if len(mean) != len(std):
            raise CtsegError(f"mean has {len(mean)} values but std has {len(std)}; give one of each per band")
        scale = None if self.scale is None else float(self.scale)
        if scale is not None and not scale > 0:
            raise CtsegError(f"scale must be positive, got {scale}")
        device = self.device
        if device is not None and str(device) == "auto":
            device = None
        if device is not None:
            try:
                device = torch.device(device)
            except (RuntimeError, TypeError, ValueError):
                raise CtsegError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}") from None
        put(self, "window", window)
        put(self, "overlap", float(self.overlap))
        put(self, "batch_size", batch_size)
        put(self, "tta", bool(self.tta))
        put(self, "device", device)
        put(self, "mean", mean)
        put(self, "std", std)
        put(self, "scale", scale)
        put(self, "amp", None if self.amp is None else bool(self.amp))

    def check_model(self, model) -> None:
        """One-line errors unless ``model`` takes ``len(mean)`` bands (where it says) and ``window`` is a multiple
        of its input multiple."""
        check_normalisation(model, self.mean, self.std)
        check_window_args(model, self.window, self.overlap, self.batch_size)

    def value_scale(self, dtype: str) -> float:
        """The divisor of raw values of ``dtype``: ``scale``, or the dtype's (255 / 65535 / 1)."""
        return check_scale(self.scale, dtype)

    def target_device(self, model) -> torch.device:
        """The device the windows run on: ``device``, or the model's where it is ``None``."""
        return device_of(model) if self.device is None else resolve_device(self.device)

    def autocast(self, device: torch.device) -> bool:
        """Whether the forward runs under bf16 autocast on ``device`` (``amp``; ``None`` → CUDA with bf16)."""
        return resolve_amp(device, self.amp)

    def grid(self, model, height: int, width: int) -> WindowGrid:
        """The window grid of an ``height × width`` image for ``model`` (class docstring)."""
        return window_grid(height, width, self.window, self.overlap, window_multiple(model))


_DEFAULTS = {f.name: f.default for f in fields(WindowOptions)}


class _NotGiven:
    """The default of a keyword that mirrors a :class:`WindowOptions` field: "not given" (shown as the field's
    default, so ``help(predict_tile)`` reads ``window: int = 512``)."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return repr(_DEFAULTS[self.name])


#: The defaults of ``predict_tile`` / ``predict_rows``'s keywords that mirror :class:`WindowOptions` fields
#: (``window: int = DEFAULT.window``): "not given", shown as the field's default.
DEFAULT = SimpleNamespace(**{name: _NotGiven(name) for name in _DEFAULTS})


def window_options(options: WindowOptions | None = None, **keywords: Any) -> WindowOptions:
    """The :class:`WindowOptions` of a call: ``options``, or one built from the keywords given (those left at
    :data:`DEFAULT` take the field's default). A keyword given beside ``options`` must agree with it."""
    given = {k: v for k, v in keywords.items() if not isinstance(v, _NotGiven)}
    if options is None:
        return WindowOptions(**given)
    if not isinstance(options, WindowOptions):
        raise CtsegError(f"options must be a WindowOptions, got {type(options).__name__}")
    merged = replace(options, **given)
    clash = [k for k in given if getattr(merged, k) != getattr(options, k)]
    if clash:
        said = ", ".join(f"{k}={given[k]!r} but options.{k}={getattr(options, k)!r}" for k in clash)
        raise CtsegError(f"conflicting window settings: {said}; give each setting once, as a keyword or in options")
    return options
