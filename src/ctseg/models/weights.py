"""Loading local encoder weights into an :class:`~ctseg.models.encoders.Encoder`: :func:`load_encoder_weights`.

Files are read without running code (:mod:`ctseg.safety.pickles`); keys of ctseg, timm and the original releases are
mapped onto the encoder; RGB first convolutions are adapted to other band counts with timm's
``adapt_input_conv``; fewer than 90 % of the encoder's tensors loading is refused unless ``allow_partial``.
"""

from __future__ import annotations

import math
import os
import re
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from timm.models import adapt_input_conv
from torch import Tensor, nn

from ctseg.errors import CtsegError
from ctseg.models.encoders import Encoder

__all__ = ["LoadReport", "load_encoder_weights"]


@dataclass
class LoadReport:
    """What :func:`load_encoder_weights` loaded: counts over the timm body's tensors (stage norms aside).

    ``loaded / total`` counts the body's tensors (``body.*`` keys, BN counters excluded) that the file gave with the
    encoder's own shape; ``groups`` splits that count by the body's top-level module, in the body's order
    (MetaFormer / PoolFormer: ``stem``, ``stages_0`` … ``stages_3``; Swin: ``patch_embed``, ``layers_0`` …), as
    ``name → (loaded, total)``; ``norms_loaded`` of ``norms_total`` stage-output norm tensors came from the file
    (the others keep their initialisation). ``adapted``: ``key → (file channels, encoder channels)`` for a first
    convolution whose input channels were adapted by timm's ``adapt_input_conv`` (counted as loaded).
    """

    path: str
    loaded: int
    total: int
    norms_loaded: int = 0
    missing: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    groups: dict[str, tuple[int, int]] = field(default_factory=dict)
    norms_total: int = 0
    adapted: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        return self.loaded / max(self.total, 1)

    def summary(self) -> str:
        """One line: ``PATH: loaded 63/148 encoder tensors (42 %) — stem 1/2, stages_0 20/20, …; stage norms 0/8``."""
        parts = ", ".join(f"{name} {done}/{count}" for name, (done, count) in self.groups.items())
        text = f"{self.path}: loaded {self.loaded}/{self.total} encoder tensors ({math.floor(100 * self.fraction)} %)"
        if parts:
            text += f" — {parts}"
        if self.norms_total:
            text += f"; stage norms {self.norms_loaded}/{self.norms_total}"
        for key, (src, dst) in self.adapted.items():
            text += f"; {key} adapted from {src} to {dst} input channels (timm adapt_input_conv)"
        return text


def _group_counts(keys: list[str], usable: Mapping[str, Tensor]) -> dict[str, tuple[int, int]]:
    """``body.<group>.…`` keys → ``{group: (loaded, total)}`` in first-seen order."""
    groups: dict[str, list[int]] = {}
    for key in keys:
        name = key.split(".", 2)[1]
        counts = groups.setdefault(name, [0, 0])
        counts[0] += key in usable
        counts[1] += 1
    return {name: (done, count) for name, (done, count) in groups.items()}


def _is_main_process() -> bool:
    """False on the non-zero ranks of a multi-process launch (torchrun / Lightning set these variables)."""
    return all(os.environ.get(var, "0") == "0" for var in ("RANK", "LOCAL_RANK"))


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    """The tensors of a local weights file, read without running any of its code (:mod:`ctseg.safety.pickles`)."""
    from ctseg.safety.pickles import is_safetensors, load_torch_file, short_reason

    if not path.is_file():
        raise CtsegError(f"{path}: no such weights file; pass the path of a local .pth/.pt/.bin/.safetensors file")
    fix = "Save a plain state dict (torch.save(model.state_dict(), path)) or a .safetensors file from a trusted copy."
    if path.suffix == ".safetensors" or is_safetensors(path):
        from safetensors.torch import load_file

        try:
            obj: Any = load_file(str(path), device="cpu")
        except Exception as err:  # any unreadable file is the user's to fix
            raise CtsegError(f"{path}: cannot read weights ({short_reason(err)}); save them again") from None
    else:
        obj = load_torch_file(path, "weights file", fix)
    for key in ("state_dict", "model", "module"):
        while isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping):
        raise CtsegError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    return {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}


def _strip_prefix(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], bool]:
    """Find the encoder's tensors in ``state``; returns (tensors, True if they are in ctseg's own format)."""
    for prefix in (
        "",
        "encoder.",
        "net.encoder.",
        "model.encoder.",
        "module.encoder.",
        "module.net.encoder.",
        "_orig_mod.encoder.",  # a torch.compile'd Segmentor
    ):
        if any(k.startswith(prefix + "body.") for k in state):
            return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}, True
    for prefix in ("module.", "backbone.", "encoder."):
        selected = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if len(selected) >= len(state) / 2:
            state = selected
    return state, False


def _timm_filter(encoder: Encoder) -> Callable[[dict, nn.Module], dict] | None:
    module = sys.modules.get(f"timm.models.{encoder.module}")
    return getattr(module, "checkpoint_filter_fn", None)


def _to_encoder_keys(state: dict[str, Tensor], encoder: Encoder) -> dict[str, Tensor]:
    """Map a whole-model timm state dict (``layers.0.…``) onto the encoder's keys (``body.layers_0.…``)."""
    targets = encoder.state_dict()
    out = {}
    for key, value in state.items():
        norm = re.match(r"^norm(\d+)\.(weight|bias)$", key)  # mmseg-style stage-output norms
        candidates = [f"norms.{norm[1]}.{norm[2]}"] if norm else []
        candidates += ["body." + key, "body." + re.sub(r"^([^.]+)\.([^.]+)\.", r"\1_\2.", key)]
        for candidate in candidates:
            if candidate in targets:
                out[candidate] = value
                break
    return out


def load_encoder_weights(
    model_or_encoder: nn.Module, path: str | Path, allow_partial: bool = False, verbose: bool = True
) -> LoadReport:
    """Load encoder weights from a local file into a :class:`Encoder` (or a model with an ``encoder``).

    Reads ``.pth`` / ``.pt`` / ``.bin`` (``torch.load(weights_only=True)``; state dicts nested under
    ``"state_dict"`` / ``"model"`` are unwrapped) and ``.safetensors``. Accepted key formats: ctseg's own
    (``Encoder.state_dict()``, also inside a whole :class:`~ctseg.models.Segmentor` or Lightning checkpoint),
    whole timm models, and the original Swin / PoolFormer releases, converted by timm's own
    ``checkpoint_filter_fn`` (which also resizes Swin's relative position tables and patch embedding).

    Only tensors whose key and shape both match the encoder's are loaded; the others keep their initialisation.
    With ``B`` the timm body's tensors and ``L ⊆ B`` those loaded, the fraction ``|L| / |B|`` below 0.9 raises
    :class:`~ctseg.errors.CtsegError` unless ``allow_partial=True`` (the authors' code silently loaded almost
    nothing into its 64-dim Swin). ``allow_partial`` is how the CT paper's PoolFormer (layers 2/2/8/2, dims
    64/128/256/512, 8×8 stem, 2×2 downsampling) takes timm's ``poolformer_s12`` ImageNet checkpoint (layers
    2/2/6/2, dims 64/128/320/512, 7×7 stem, 3×3 downsampling), as the authors did: the blocks of stages 0, 1
    and 3 and the biases of the stem and of the stage-1 / stage-3 downsampling match (63 of 148 tensors);
    stage 2, the stem and downsampling kernels do not. Stage norms are loaded when present, kept otherwise.

    **Input bands.** When the file's first convolution takes another number of channels than the encoder's
    ``in_chans`` (RGB ImageNet weights into a 4-band encoder), it is adapted with timm's ``adapt_input_conv``,
    as timm does for ``pretrained=True, in_chans=N``: the RGB filters repeated cyclically over the N channels and
    scaled by 3 / N (N > 1), or summed (N = 1). The report's ``adapted`` and its summary line say so.

    With ``verbose`` (default) one line on stderr says what was loaded, per top-level module of the body
    (:meth:`LoadReport.summary`; printed by the main process only); a partial load also warns.

    Returns:
        a :class:`LoadReport`.
    """
    encoder = getattr(model_or_encoder, "encoder", model_or_encoder)
    if not isinstance(encoder, Encoder):
        raise CtsegError(f"load_encoder_weights needs a ctseg Encoder or Segmentor, got {type(encoder).__name__}")
    path = Path(path)
    state, own_format = _strip_prefix(_read_state_dict(path))
    if not own_format:
        filter_fn = _timm_filter(encoder)
        if filter_fn is not None:
            try:
                state = filter_fn(state, encoder.full_model())
            except Exception:  # noqa: BLE001 - a converter that does not apply leaves the keys as they are
                pass
        state = _to_encoder_keys(state, encoder)
    targets = {k: v for k, v in encoder.state_dict().items() if not k.endswith("num_batches_tracked")}
    adapted: dict[str, tuple[int, int]] = {}
    first = encoder.first_conv_key()
    if first is not None and first in state:
        weight, target = state[first], targets[first]
        same_kernels = weight.ndim == 4 and weight.shape[0] == target.shape[0] and weight.shape[2:] == target.shape[2:]
        if same_kernels and weight.shape[1] != target.shape[1]:
            try:
                state[first] = adapt_input_conv(int(target.shape[1]), weight, base_chans=int(weight.shape[1]))
                adapted[first] = (int(weight.shape[1]), int(target.shape[1]))
            except (NotImplementedError, ValueError, AssertionError):
                pass  # left as it is: reported like any other tensor of another shape
    usable, missing, mismatched = {}, [], []
    for key, target in targets.items():
        if key not in state:
            missing.append(key)
        elif tuple(state[key].shape) != tuple(target.shape):
            mismatched.append(f"{key} {tuple(state[key].shape)} vs {tuple(target.shape)}")
        else:
            usable[key] = state[key]
    for key, value in state.items():  # BN counters: load if present, never counted
        if key.endswith("num_batches_tracked") and key in encoder.state_dict():
            usable[key] = value
    body_keys = [k for k in targets if k.startswith("body.")]
    norm_keys = [k for k in targets if k.startswith("norms.")]
    report = LoadReport(
        path=str(path),
        loaded=sum(k in usable for k in body_keys),
        total=len(body_keys),
        norms_loaded=sum(k in usable for k in norm_keys),
        missing=[k for k in missing if k.startswith("body.")],
        mismatched=mismatched,
        groups=_group_counts(body_keys, usable),
        norms_total=len(norm_keys),
        adapted=adapted,
    )
    if report.fraction < 0.9 and not allow_partial:
        example = f"; e.g. {mismatched[0]}" if mismatched else ""
        raise CtsegError(
            f"{path}: only {report.loaded}/{report.total} ({math.floor(100 * report.fraction)} %) of encoder "
            f"{encoder.name!r}'s tensors match this checkpoint{example}; use weights made for this encoder, "
            "or pass allow_partial=True (ctseg fit: --model.allow_partial true) to load only "
            "the tensors whose shapes match"
        )
    if verbose and _is_main_process():
        print(f"ctseg: encoder weights {report.summary()}", file=sys.stderr, flush=True)
    if report.loaded < report.total:
        warnings.warn(
            f"{path}: loaded {report.loaded}/{report.total} encoder tensors "
            f"({len(report.missing)} missing, {len(mismatched)} with other shapes)",
            stacklevel=2,
        )
    encoder.load_state_dict(usable, strict=False)
    return report
