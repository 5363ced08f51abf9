"""Full-tile inference: sliding windows with overlap, weighted blending, optional flip TTA.

:func:`predict_tile` turns one image of any size (a 6000×6000 Potsdam tile included), with any number of bands
and uint8, uint16 or float32 values, into an ``(H, W)`` uint8 class map.

The settings — window, overlap, batch size, TTA, device, normalisation, precision — are one
:class:`~ctseg.inference.options.WindowOptions` (``options=``), or the same names as keywords; its docstring
holds the maths of the window grid, the Hann blend and the normalisation.

**Memory.** At most ``batch_size`` windows are on the device at once. Probabilities are accumulated in float32
in a rolling *strip* buffer ``(K, window, W)`` on the model's device that covers one row of windows: when the
next row of windows starts at ``y``, every row above ``y`` is final (no later window reaches it), is reduced
by ``argmax`` into the uint8 output and leaves the buffer. For a 6000×6000 tile with 6 classes and 512² windows
that buffer is 6 · 512 · 6000 · 4 B ≈ 74 MB instead of 864 MB for the whole ``(K, H, W)`` float32 map; the
uint8 output is 36 MB and the uint8 RGB input 108 MB (both on the host; a uint16 / float32 input takes 2× / 4×
that per band). ``return_probs=True`` additionally returns the blended probabilities as a host float16
``(K, H, W)`` array (432 MB for that tile), so ask for them only when needed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ctseg.errors import CtsegError
from ctseg.inference.blend import (  # noqa: F401 - the window grid and blend are part of this module's API
    WindowGrid,
    blend_weights,
    blend_windows,
    call_model,
    check_window_args,
    class_indices,
    device_of,
    resolve_amp,
    window_grid,
    window_multiple,
    window_positions,
)
from ctseg.inference.options import (  # noqa: F401 - the checks of the settings were this module's
    DEFAULT,
    WindowOptions,
    check_normalisation,
    check_scale,
    resolve_device,
    window_options,
)

__all__ = [
    "WindowGrid",
    "blend_weights",
    "blend_windows",
    "call_model",
    "class_indices",
    "check_window_args",
    "predict_tile",
    "resolve_device",
    "to_chw",
    "to_chw_uint8",
    "window_grid",
    "window_positions",
]

#: Sample dtypes :func:`predict_tile` takes (as :data:`ctseg.data.definitions.DTYPES`).
_DTYPES = (np.uint8, np.uint16, np.float32)


def to_chw(image: np.ndarray | Tensor, channels: int | None = None) -> np.ndarray:
    """An image as ``(C, H, W)`` from ``(H, W, C)`` or ``(C, H, W)`` (or ``(H, W)`` for one band), uint8 / uint16 /
    float32 kept as they are.

    ``channels``: the number of bands expected (default: 3 when one of the end axes has 3, else the first axis);
    an array whose first axis has ``channels`` entries counts as channels-first.
    """
    arr = image.detach().cpu().numpy() if isinstance(image, Tensor) else np.asarray(image)
    if arr.dtype not in _DTYPES:
        raise CtsegError(f"image must be uint8, uint16 or float32, got {arr.dtype}; convert it to one of these first")
    if arr.ndim == 2 and channels in (None, 1):
        arr = arr[None]
    if channels is None:
        channels = 3 if arr.ndim == 3 and 3 in (arr.shape[0], arr.shape[-1]) else (arr.shape[0] if arr.ndim else 0)
    plural = "s" if channels != 1 else ""
    if arr.ndim != 3 or channels not in (arr.shape[0], arr.shape[-1]):
        raise CtsegError(
            f"image must have {channels} band{plural} as (H, W, {channels}) or ({channels}, H, W), "
            f"got shape {tuple(arr.shape)}"
        )
    if arr.shape[0] != channels:
        arr = arr.transpose(2, 0, 1)
    if arr.shape[1] < 1 or arr.shape[2] < 1:
        raise CtsegError(f"image has no pixels (shape {tuple(arr.shape)})")
    return arr


def to_chw_uint8(image: np.ndarray | Tensor) -> np.ndarray:
    """An RGB (or IR-R-G) image as ``(3, H, W)`` uint8 from ``(H, W, 3)`` or ``(3, H, W)`` uint8 input."""
    arr = image.detach().cpu().numpy() if isinstance(image, Tensor) else np.asarray(image)
    if arr.dtype != np.uint8:
        raise CtsegError(f"image must be uint8 (0-255), got {arr.dtype}; rescale it to 8 bits first")
    return to_chw(arr, 3)


@torch.no_grad()
def predict_tile(
    model: nn.Module,
    image: np.ndarray | Tensor,
    *,
    options: WindowOptions | None = None,
    window: int = DEFAULT.window,
    overlap: float = DEFAULT.overlap,
    batch_size: int = DEFAULT.batch_size,
    tta: bool = DEFAULT.tta,
    device: str | torch.device | None = DEFAULT.device,
    mean: Sequence[float] = DEFAULT.mean,
    std: Sequence[float] = DEFAULT.std,
    scale: float | None = DEFAULT.scale,
    amp: bool | None = DEFAULT.amp,
    return_probs: bool = False,
    return_variance: bool = False,
    progress: bool = False,
    desc: str | None = None,
) -> np.ndarray | tuple[np.ndarray, ...]:
    """Segment one image of any size by overlapping windows (method and weights:
    :class:`~ctseg.inference.options.WindowOptions`; memory: module docstring).

    Args:
        model: ``model(x)`` → logits ``(B, K, h, w)`` for normalised ``x`` ``(B, C, h, w)`` (a
            :class:`~ctseg.models.Segmentor`); it is put in eval mode for the call and moved to ``device``.
        image: ``(H, W, C)`` or ``(C, H, W)`` (``(H, W)`` for one band), uint8, uint16 or float32, with
            ``C = len(mean)`` bands (the model's ``in_chans``).
        options: the settings ``window`` … ``amp`` below as one :class:`~ctseg.inference.options.WindowOptions`
            (checked when it is built); a keyword given beside it must agree with it, else a one-line error.
            Without it the keywords build one (a keyword left out takes the field's default).
        window: window side in pixels, a multiple of the model's input multiple (32).
        overlap: fraction of the window shared by neighbouring windows, in ``[0, 1)``.
        batch_size: windows per forward pass (the most that are on the device at once).
        tta: average over the identity, horizontal and vertical flips.
        device: ``"auto"`` / ``None`` (the model's device, CUDA if it is on CUDA), ``"cpu"``, ``"cuda"`` …
        mean, std: per-band normalisation on the ``x / scale`` scale, one value per band.
        scale: raw values are divided by this first; ``None``: by the image's dtype (255 for uint8, 65535 for
            uint16, 1 for float32).
        amp: bf16 autocast; ``None`` → on for CUDA devices that support bf16.
        return_probs: also return the blended probabilities as float16 ``(K, H, W)``.
        return_variance: (with ``tta``) also return the blended TTA variance as float32 ``(H, W)``: per window
            and pixel ``V = (1/3) Σ_t Σ_k (p_tk − p̄_k)²`` over the three flips, in ``[0, 2/3]``, blended with the
            windows' weights (:func:`~ctseg.inference.blend.blend_windows`; ``ctseg predict --tta --uncertainty``
            writes the same values as band 2 of ``<stem>_entropy.tif``).
        progress: show a tqdm bar over windows (``desc`` labels it).

    Returns:
        ``(H, W)`` uint8 class indices; with ``return_probs`` and / or ``return_variance`` a tuple of the class
        indices, then the probabilities, then the variance (each only when asked for).

    :func:`ctseg.inference.rows.predict_rows` computes the same class map from a raster read by row bands.
    """
    opts = window_options(
        options, window=window, overlap=overlap, batch_size=batch_size, tta=tta, device=device, mean=mean, std=std,
        scale=scale, amp=amp,
    )  # fmt: skip
    opts.check_model(model)
    if return_variance and not opts.tta:
        raise CtsegError("return_variance needs TTA (tta=True): the variance is that of the flipped passes")
    img = to_chw(image, len(opts.mean))
    scale = opts.value_scale(str(img.dtype))
    dev = opts.target_device(model)

    _, height, width = img.shape
    grid = opts.grid(model, height, width)
    img = grid.pad(img)
    out = np.zeros((height, width), dtype=np.uint8)
    probs_out: list[np.ndarray] = []
    variance_out = np.zeros((height, width), dtype=np.float32) if return_variance else None

    def crops(jobs: list[tuple[int, int]]) -> np.ndarray:
        g = grid
        return np.stack([img[:, g.ys[i] : g.ys[i] + g.win_h, g.xs[j] : g.xs[j] + g.win_w] for i, j in jobs])

    def emit(top: int, part: Tensor) -> None:
        rows = part.shape[1]
        if variance_out is not None:  # the last channel (blend_windows' tta_variance)
            variance_out[top : top + rows] = part[-1].cpu().numpy()
            part = part[:-1]
        out[top : top + rows] = class_indices(part).cpu().numpy()
        if return_probs:
            if not probs_out:
                probs_out.append(np.zeros((part.shape[0], height, width), dtype=np.float16))
            probs_out[0][:, top : top + rows] = part.to(torch.float16).cpu().numpy()

    from tqdm.auto import tqdm

    bar = tqdm(total=len(grid.jobs), disable=not progress, desc=desc, unit="win", leave=False)
    try:
        blend_windows(
            model, grid, crops, emit, batch_size=opts.batch_size, device=dev, mean=opts.mean, std=opts.std,
            scale=scale, amp=opts.autocast(dev), tta=opts.tta, tta_variance=return_variance, on_batch=bar.update,
        )  # fmt: skip
    finally:
        bar.close()
    extra = ([probs_out[0]] if return_probs else []) + ([variance_out] if variance_out is not None else [])
    return (out, *extra) if extra else out
