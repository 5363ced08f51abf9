"""Full-tile inference: sliding windows with overlap, weighted blending, optional flip TTA.

:func:`predict_tile` turns one image of any size (a 6000×6000 Potsdam tile included), with any number of bands
and uint8, uint16 or float32 values, into an ``(H, W)`` uint8 class map.

**Windows.** ``window`` (pixels, a multiple of the model's input multiple, 32) is the side of every window fed
to the model. Along an axis shorter than ``window`` the window shrinks to the axis length rounded up to that
multiple, and the image is reflect-padded up to it, so every window is full-size. ``overlap`` is a *fraction*
of the window (``0.25`` → neighbouring windows share at least a quarter of their pixels): the number of windows
per axis is the smallest one whose step is at most ``window − round(overlap · window)``, and the windows are
spread evenly from the first pixel to the last (the first starts at 0, the last ends at the image edge).

**Blending.** Each window's softmax probabilities are weighted by a separable Hann (cosine²) window sampled at
pixel centres, ``b(t) = sin²(π (t + ½) / n)``, which is strictly positive (no 0 / 0 at the image border) and
falls towards the window edge where a CNN / transformer sees the least context, so seams vanish. The weights are
normalised per axis (``Σ_k w_k(x) = 1`` for each column ``x``, likewise for rows), and because the window grid is
a product grid the 2-D weights ``w_i(y) · w_j(x)`` then sum to exactly 1 at every pixel: the blend is a convex
combination of the windows' probabilities and needs no weight buffer. A pixel seen by one window only gets that
window's probabilities unchanged (so a window covering the whole image reproduces a single forward pass).

**TTA.** ``tta=True`` averages the probabilities of the window, its horizontal flip and its vertical flip
(three forward passes, each of at most ``batch_size`` windows).

**Memory.** At most ``batch_size`` windows are on the device at once. Probabilities are accumulated in float32
in a rolling *strip* buffer ``(K, window, W)`` on the model's device that covers one row of windows: when the
next row of windows starts at ``y``, every row above ``y`` is final (no later window reaches it), is reduced
by ``argmax`` into the uint8 output and leaves the buffer. For a 6000×6000 tile with 6 classes and 512² windows
that buffer is 6 · 512 · 6000 · 4 B ≈ 74 MB instead of 864 MB for the whole ``(K, H, W)`` float32 map; the
uint8 output is 36 MB and the uint8 RGB input 108 MB (both on the host; a uint16 / float32 input takes 2× / 4×
that per band). ``return_probs=True`` additionally returns the blended probabilities as a host float16
``(K, H, W)`` array (432 MB for that tile), so ask for them only when needed.

**Precision.** On CUDA the forward runs under bf16 autocast (``amp=None`` → on for CUDA, off elsewhere); the
softmax and the blending are float32.

Normalisation: ``(pixel / scale − mean) / std`` per band, with the data set's ``mean`` / ``std`` (one value per
band; :class:`~ctseg.data.definitions.DatasetInfo`; ImageNet statistics by default) and ``scale`` = 255 for uint8,
65535 for uint16, 1 for float32 (:func:`~ctseg.data.definitions.value_scale`; ``DatasetInfo.scale``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ctseg.data.definitions import IMAGENET_MEAN, IMAGENET_STD, value_scale
from ctseg.errors import CtsegError

__all__ = ["blend_weights", "predict_tile", "resolve_device", "to_chw", "to_chw_uint8", "window_positions"]

#: Sample dtypes :func:`predict_tile` takes (as :data:`ctseg.data.definitions.DTYPES`).
_DTYPES = (np.uint8, np.uint16, np.float32)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"`` / ``None`` → CUDA when available, else CPU; ``"cuda"`` without a GPU is a one-line error."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CtsegError("--device cuda was asked for but no CUDA device is available; use --device cpu or auto")
    return dev


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


def window_positions(length: int, window: int, overlap: float) -> list[int]:
    """Start offsets of the windows along one axis of ``length`` (≥ ``window``) pixels.

    The fewest windows whose step is at most ``window − round(overlap · window)``, spread evenly from 0 to
    ``length − window`` (so the real overlap is at least the requested one).
    """
    if length <= window:
        return [0]
    step = max(1, window - int(round(overlap * window)))
    n = math.ceil((length - window) / step) + 1
    return [int(round(k * (length - window) / (n - 1))) for k in range(n)]


def _hann(n: int) -> np.ndarray:
    t = (np.arange(n, dtype=np.float64) + 0.5) / n
    return np.sin(np.pi * t) ** 2


def blend_weights(length: int, window: int, positions: Sequence[int]) -> list[np.ndarray]:
    """Per-window 1-D weights along one axis, normalised so that at every pixel they sum to 1 (float32)."""
    base = _hann(window)
    total = np.zeros(length, dtype=np.float64)
    for p in positions:
        total[p : p + window] += base
    return [(base / total[p : p + window]).astype(np.float32) for p in positions]


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _input_multiple(model: nn.Module) -> int:
    encoder = getattr(model, "encoder", None)
    return int(getattr(encoder, "input_multiple", 32)) if encoder is not None else 32


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


@torch.no_grad()
def predict_tile(
    model: nn.Module,
    image: np.ndarray | Tensor,
    *,
    window: int = 512,
    overlap: float = 0.25,
    batch_size: int = 8,
    tta: bool = False,
    device: str | torch.device | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    scale: float | None = None,
    amp: bool | None = None,
    return_probs: bool = False,
    progress: bool = False,
    desc: str | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Segment one image of any size by overlapping windows (method, weights and memory: module docstring).

    Args:
        model: ``model(x)`` → logits ``(B, K, h, w)`` for normalised ``x`` ``(B, C, h, w)`` (a
            :class:`~ctseg.models.Segmentor`); it is put in eval mode for the call and moved to ``device``.
        image: ``(H, W, C)`` or ``(C, H, W)`` (``(H, W)`` for one band), uint8, uint16 or float32, with
            ``C = len(mean)`` bands (the model's ``in_chans``).
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
        progress: show a tqdm bar over windows (``desc`` labels it).

    Returns:
        ``(H, W)`` uint8 class indices, or ``(classes, probs)`` with ``return_probs``.
    """
    mean, std = [float(m) for m in mean], [float(s) for s in std]
    if len(mean) != len(std):
        raise CtsegError(f"mean has {len(mean)} values but std has {len(std)}; give one of each per band")
    img = to_chw(image, len(mean))
    model_bands = getattr(getattr(model, "encoder", None), "in_chans", None)
    if model_bands is not None and int(model_bands) != len(mean):
        raise CtsegError(f"the model takes {model_bands} bands but mean / std have {len(mean)} values (one per band)")
    if scale is None:
        scale = value_scale(str(img.dtype))
    scale = float(scale)
    if not scale > 0:
        raise CtsegError(f"scale must be positive, got {scale}")
    window, batch_size = int(window), int(batch_size)
    multiple = _input_multiple(model)
    if window < multiple or window % multiple:
        raise CtsegError(f"window must be a positive multiple of {multiple}, got {window}")
    if not 0.0 <= float(overlap) < 1.0:
        raise CtsegError(f"overlap is a fraction of the window in [0, 1), got {overlap}")
    if batch_size < 1:
        raise CtsegError(f"batch_size must be at least 1, got {batch_size}")
    dev = _model_device(model) if device is None or str(device) == "auto" else resolve_device(device)
    if amp is None:
        amp = dev.type == "cuda" and torch.cuda.is_bf16_supported()

    _, height, width = img.shape
    win_h = min(window, _round_up(height, multiple))
    win_w = min(window, _round_up(width, multiple))
    pad_h, pad_w = max(0, win_h - height), max(0, win_w - width)
    if pad_h or pad_w:
        img = np.pad(img, ((0, 0), (0, pad_h), (0, pad_w)), mode="reflect" if min(height, width) > 1 else "edge")
    full_h, full_w = height + pad_h, width + pad_w
    ys = window_positions(full_h, win_h, overlap)
    xs = window_positions(full_w, win_w, overlap)
    wy = [torch.from_numpy(w).to(dev) for w in blend_weights(full_h, win_h, ys)]
    wx = [torch.from_numpy(w).to(dev) for w in blend_weights(full_w, win_w, xs)]
    jobs = [(i, j) for i in range(len(ys)) for j in range(len(xs))]

    was_training = model.training
    model.eval()
    if _model_device(model) != dev:
        model.to(dev)
    channels = img.shape[0]
    mean_t = torch.tensor(mean, device=dev).view(1, channels, 1, 1)
    std_t = torch.tensor(std, device=dev).view(1, channels, 1, 1)
    flips: list[tuple[int, ...]] = [(), (-1,), (-2,)] if tta else [()]

    out = np.zeros((height, width), dtype=np.uint8)
    probs_out: np.ndarray | None = None
    strip: Tensor | None = None  # (K, win_h, full_w) float32: rows [top, top + win_h) of the padded image
    top = 0

    def flush(stop: int) -> None:
        """Rows [top, stop) are final: argmax them into ``out`` (and ``probs_out``)."""
        nonlocal strip, top
        assert strip is not None
        n = stop - top
        rows = min(stop, height) - top
        if rows > 0:
            part = strip[:, :rows, :width]
            out[top : top + rows] = part.argmax(0).to(torch.uint8).cpu().numpy()
            if probs_out is not None:
                probs_out[:, top : top + rows] = part.to(torch.float16).cpu().numpy()
        if n < win_h:
            strip[:, : win_h - n] = strip[:, n:].clone()
        strip[:, max(0, win_h - n) :] = 0
        top = stop

    from tqdm.auto import tqdm

    bar = tqdm(total=len(jobs), disable=not progress, desc=desc, unit="win", leave=False)
    try:
        for start in range(0, len(jobs), batch_size):
            batch_jobs = jobs[start : start + batch_size]
            crops = np.stack([img[:, ys[i] : ys[i] + win_h, xs[j] : xs[j] + win_w] for i, j in batch_jobs])
            if crops.dtype == np.uint16:  # exact in float32; torch's uint16 tensors support few operations
                crops = crops.astype(np.float32)
            x = torch.from_numpy(crops).to(dev, non_blocking=True).float()
            if scale != 1.0:
                x = x.div_(scale)
            x = x.sub_(mean_t).div_(std_t)
            prob: Tensor | None = None
            for dims in flips:
                xin = x.flip(dims) if dims else x
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bool(amp)):
                    logits = model(xin)
                logits = logits.float()
                if logits.shape[-2:] != (win_h, win_w):
                    logits = F.interpolate(logits, size=(win_h, win_w), mode="bilinear", align_corners=False)
                p = logits.softmax(1)
                p = p.flip(dims) if dims else p
                prob = p if prob is None else prob.add_(p)
            assert prob is not None
            if len(flips) > 1:
                prob.div_(len(flips))
            if strip is None:
                k = prob.shape[1]
                if k > 256:
                    raise CtsegError(f"the model predicts {k} classes; a uint8 class map holds at most 256")
                strip = torch.zeros((k, win_h, full_w), dtype=torch.float32, device=dev)
                if return_probs:
                    probs_out = np.zeros((k, height, width), dtype=np.float16)
            for n, (i, j) in enumerate(batch_jobs):
                if ys[i] > top:
                    flush(ys[i])
                y0 = ys[i] - top
                weight = wy[i][:, None] * wx[j][None, :]
                strip[:, y0 : y0 + win_h, xs[j] : xs[j] + win_w].addcmul_(prob[n], weight)
            bar.update(len(batch_jobs))
        flush(full_h)
    finally:
        bar.close()
        model.train(was_training)
    if return_probs:
        assert probs_out is not None
        return out, probs_out
    return out
