"""Encoders: a timm ``features_only`` pyramid, always NCHW, with optional per-stage output norms.

:class:`Encoder` wraps any timm model that gives a feature pyramid at strides 4, 8, 16, 32 and returns
``[F_1, F_2, F_3, F_4]``, ``F_s`` of shape (B, C_s, H / r_s, W / r_s). Swin's NHWC outputs are permuted to NCHW.
Transformer / MetaFormer encoders get a norm on each stage output, as the CT paper's encoders have (timm adds
none): a LayerNorm over channels applied per pixel, or for PoolFormer a GroupNorm(1, C) as in the authors' code.

Besides timm names, three ctseg architectures are known (built with timm's classes):

- ``ctseg_swin_paper``: the CT paper's Swin — ``swin_tiny_patch4_window7_224`` with embed dims 64/128/256/512,
  depths 2/2/8/2, heads 2/4/8/16, window 7, drop-path 0.3 (13,832,588 parameters + 1,920 for the stage norms).
- ``ctseg_poolformer_paper``: the CT paper's PoolFormer — PoolFormer-v1 blocks (pool 3, GELU MLP ratio 4,
  GroupNorm, layer scale 1e-5), layers 2/2/8/2, dims 64/128/256/512, stem conv 8×8 stride 4 padding 2 and 2×2
  stride-2 downsampling convs (9,455,680 parameters + 1,920 for the stage norms). The 2×2 downsampling is not
  stated in the paper; it is what the authors' parameter count (9,457,600) requires.
- ``ctseg_poolformer_tiny``: the same family at dims 32/64/128/256, layers 1/1/2/1 (CPU demos and tests).

Every encoder takes ``in_chans`` input bands (default 3; ``Encoder(name, in_chans=4)``, passed to timm's
constructor, which builds the first convolution for that many channels). Weights come only from local files
(:func:`load_encoder_weights`); nothing is ever downloaded. RGB weights loaded into an encoder with another
band count get their first convolution adapted by timm's own ``adapt_input_conv`` (what timm does for
``pretrained=True, in_chans=N``): for N > 3 the RGB filters are repeated cyclically over the N input channels
(band k takes the filter of channel k mod 3: R, G, B, R, … for bands 1, 2, 3, 4, …) and scaled by 3 / N, which
keeps the layer's output scale; for N = 1 the three filters are summed; for N = 2 the R and G filters are kept,
scaled by 3 / 2.
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

import timm
import torch
import torch.nn.functional as F
from timm.models import adapt_input_conv
from torch import Tensor, nn

from ctseg.errors import CtsegError

__all__ = ["Encoder", "LoadReport", "list_encoders", "load_encoder_weights"]

#: Strides every ctseg encoder must provide, finest first.
PYRAMID_STRIDES = (4, 8, 16, 32)

#: timm modules whose models get a LayerNorm on each stage output under ``stage_norm="auto"``.
_TRANSFORMER_MODULES = {
    "swin_transformer",
    "swin_transformer_v2",
    "swin_transformer_v2_cr",
    "metaformer",
    "pvt_v2",
    "twins",
    "maxxvit",
    "mvitv2",
    "davit",
    "focalnet",
    "hiera",
    "nest",
    "tiny_vit",
    "efficientformer",
    "efficientformer_v2",
    "nextvit",
}


# ----------------------------------------------------------------------------------------- ctseg architectures
def _swin_paper(**kwargs: Any) -> nn.Module:
    arch = dict(embed_dim=64, depths=(2, 2, 8, 2), num_heads=(2, 4, 8, 16), window_size=7, drop_path_rate=0.3)
    return timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, **{**arch, **kwargs})


def _poolformer_v1(
    depths: tuple[int, ...],
    dims: tuple[int, ...],
    stem_kernel: int,
    downsample_kernel: int,
    drop_path_rate: float,
    features_only: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """A PoolFormer-v1 MetaFormer of any depths/dims, with the stem and downsampling kernels swapped in."""
    from timm.models import build_model_with_cfg
    from timm.models.metaformer import GroupNorm1, MetaFormer, checkpoint_filter_fn

    model = build_model_with_cfg(
        MetaFormer,
        "poolformer_s12",
        pretrained=False,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(flatten_sequential=True, out_indices=tuple(range(len(depths)))),
        features_only=features_only,
        depths=list(depths),
        dims=list(dims),
        downsample_norm=None,
        mlp_act=nn.GELU,
        mlp_bias=True,
        norm_layers=GroupNorm1,
        layer_scale_init_values=1e-5,
        res_scale_init_values=None,
        use_mlp_head=False,
        drop_path_rate=drop_path_rate,
        **kwargs,
    )
    # timm fixes the stem at 7×7 (padding 2) and downsampling at 3×3 (padding 1); swap convs where asked.
    for name, module in list(model.named_modules()):
        parent_name, _, child = name.rpartition(".")
        if child != "conv" or not isinstance(module, nn.Conv2d):
            continue
        is_stem = parent_name == "stem"
        kernel = stem_kernel if is_stem else downsample_kernel
        if not (is_stem or parent_name.endswith("downsample")) or module.kernel_size == (kernel, kernel):
            continue
        padding = 2 if is_stem else (kernel - 1) // 2
        conv = nn.Conv2d(
            module.in_channels, module.out_channels, kernel, module.stride, padding, device=module.weight.device
        )
        nn.init.trunc_normal_(conv.weight, std=0.02)
        nn.init.zeros_(conv.bias)
        model.get_submodule(parent_name).conv = conv
    return model


def _poolformer_paper(**kwargs: Any) -> nn.Module:
    kwargs.setdefault("drop_path_rate", 0.1)
    return _poolformer_v1((2, 2, 8, 2), (64, 128, 256, 512), stem_kernel=8, downsample_kernel=2, **kwargs)


def _poolformer_tiny(**kwargs: Any) -> nn.Module:
    kwargs.setdefault("drop_path_rate", 0.0)
    return _poolformer_v1((1, 1, 2, 1), (32, 64, 128, 256), stem_kernel=7, downsample_kernel=3, **kwargs)


#: ctseg architectures: name → (constructor taking timm keyword arguments, timm module, stage norm).
_CTSEG_ENCODERS: dict[str, tuple[Callable[..., nn.Module], str, str]] = {
    "ctseg_swin_paper": (_swin_paper, "swin_transformer", "layernorm"),
    "ctseg_poolformer_paper": (_poolformer_paper, "metaformer", "groupnorm"),
    "ctseg_poolformer_tiny": (_poolformer_tiny, "metaformer", "groupnorm"),
}


def list_encoders() -> list[str]:
    """The ctseg encoder architectures (any timm name with a stride-4…32 pyramid works as well)."""
    return sorted(_CTSEG_ENCODERS)


def _timm_module(name: str) -> str:
    if name in _CTSEG_ENCODERS:
        return _CTSEG_ENCODERS[name][1]
    return timm.models.model_entrypoint(name).__module__.rpartition(".")[2]


# ----------------------------------------------------------------------------------------- stage norms
class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of each pixel; (B, C, H, W) → (B, C, H, W), or (B, H, W, C) → (B, C, H, W)
    with ``nhwc=True`` (Swin's outputs: normalised where they lie, then permuted)."""

    def forward(self, x: Tensor, nhwc: bool = False) -> Tensor:
        if not nhwc:
            x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ChannelGroupNorm(nn.GroupNorm):
    """GroupNorm(1, C) (PoolFormer's norm): statistics over C, H, W of each image; NCHW (or NHWC) in, NCHW out."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__(1, channels, eps=eps)

    def forward(self, x: Tensor, nhwc: bool = False) -> Tensor:
        if nhwc:
            x = x.permute(0, 3, 1, 2)
        return super().forward(x)


_STAGE_NORMS = {"layernorm": ChannelLayerNorm, "groupnorm": ChannelGroupNorm}


# ----------------------------------------------------------------------------------------- the encoder
class Encoder(nn.Module):
    """A timm feature pyramid at strides 4/8/16/32, NCHW out, with optional stage-output norms.

    Args:
        name: a timm model name with ``features_only`` support (``swin_tiny_patch4_window7_224``,
            ``poolformerv2_s12``, ``convnext_tiny``, ``resnet50`` …) or a ctseg architecture
            (:func:`list_encoders`).
        img_size: the nominal training size, passed to models that take one (Swin). Swin is built with
            ``strict_img_size=False`` and ``always_partition=True``: any multiple of 32 runs, and the window
            (hence the parameter count) does not depend on ``img_size``.
        stage_norm: ``"auto"`` (LayerNorm for transformer / MetaFormer families, GroupNorm(1, C) for PoolFormer,
            none otherwise), ``"layernorm"``, ``"groupnorm"`` or ``"none"``.
        **timm_kwargs: passed to the timm constructor (``drop_path_rate``, ``in_chans`` …); ``in_chans``
            (default 3) is the number of input bands the first convolution takes.

    Attributes:
        channels: ``[C_1, C_2, C_3, C_4]``. strides: ``[4, 8, 16, 32]``. in_chans: input bands.
        body: the timm ``features_only`` module. norms: one norm per stage, or ``None``.

    ``forward(x)``: (B, in_chans, H, W) → list of 4 tensors (B, C_s, H / r_s, W / r_s).
    Raises :class:`~ctseg.errors.CtsegError` for unknown names and models without such a pyramid.
    """

    def __init__(self, name: str, *, img_size: int = 512, stage_norm: str = "auto", **timm_kwargs: Any):
        super().__init__()
        if name not in _CTSEG_ENCODERS and not timm.is_model(name):
            raise CtsegError(
                f"unknown encoder {name!r}: use a timm model name (timm.list_models()) or one of {list_encoders()}"
            )
        in_chans = timm_kwargs.get("in_chans", 3)
        if isinstance(in_chans, bool) or not isinstance(in_chans, int) or in_chans < 1:
            raise CtsegError(f"in_chans={in_chans!r}: expected a positive number of input bands")
        self.name = name
        self.img_size = img_size
        self.in_chans = int(in_chans)
        self.module = _timm_module(name)
        self._kwargs = self._size_kwargs(img_size) | dict(timm_kwargs)
        self.body = self._create(features_only=True)
        info = self.body.feature_info
        reductions = list(info.reduction())
        if not all(r in reductions for r in PYRAMID_STRIDES):
            raise CtsegError(
                f"encoder {name!r} has feature strides {reductions}, not a pyramid at strides 4, 8, 16, 32: "
                "use a hierarchical encoder (swin_*, poolformer*, convnext_*, resnet*, pvt_v2_* …)"
            )
        if reductions != list(PYRAMID_STRIDES):
            # e.g. ResNet's extra stride-2 level: rebuild with only the four pyramid levels
            self._kwargs["out_indices"] = tuple(reductions.index(r) for r in PYRAMID_STRIDES)
            self.body = self._create(features_only=True)
            info = self.body.feature_info
        self.channels: list[int] = [int(c) for c in info.channels()]
        self.strides: list[int] = [int(r) for r in info.reduction()]
        self.nhwc = str(getattr(self.body, "output_fmt", "NCHW")).upper().endswith("NHWC")
        self.stage_norm = self._resolve_stage_norm(stage_norm)
        self.norms = (
            nn.ModuleList(_STAGE_NORMS[self.stage_norm](c) for c in self.channels)
            if self.stage_norm != "none"
            else None
        )

    def _size_kwargs(self, img_size: int) -> dict[str, Any]:
        if self.module == "swin_transformer":
            return dict(img_size=img_size, strict_img_size=False, always_partition=True)
        return {}

    def _create(self, features_only: bool) -> nn.Module:
        """Build the timm model, never with pretrained weights (those come from :func:`load_encoder_weights`)."""
        kwargs = dict(self._kwargs)
        if not features_only:
            kwargs.pop("out_indices", None)
        try:
            if self.name in _CTSEG_ENCODERS:
                return _CTSEG_ENCODERS[self.name][0](features_only=features_only, **kwargs)
            return timm.create_model(self.name, pretrained=False, features_only=features_only, **kwargs)
        except (RuntimeError, TypeError, ValueError, AssertionError, AttributeError, KeyError) as err:
            what = "features_only encoder" if features_only else "model"
            raise CtsegError(
                f"timm cannot build {self.name!r} as a {what} with {kwargs}: {err}".replace("\n", " ")
            ) from err

    def _resolve_stage_norm(self, stage_norm: str) -> str:
        if stage_norm == "auto":
            if self.name in _CTSEG_ENCODERS:
                return _CTSEG_ENCODERS[self.name][2]
            if self.name.startswith("poolformer"):
                return "groupnorm"
            return "layernorm" if self.module in _TRANSFORMER_MODULES else "none"
        if stage_norm not in (*_STAGE_NORMS, "none"):
            raise CtsegError(f"stage_norm={stage_norm!r}: use 'auto', 'layernorm', 'groupnorm' or 'none'")
        return stage_norm

    def full_model(self, device: str | torch.device = "meta") -> nn.Module:
        """The whole timm model this encoder was cut from (default: on the meta device, no memory used).

        Used to run timm's checkpoint converters, which look up the model's own module shapes.
        """
        with torch.device(device):
            return self._create(features_only=False)

    def first_conv_key(self) -> str | None:
        """The state-dict key of the first convolution's weight (``body.stem.conv.weight``,
        ``body.patch_embed.proj.weight`` …), from timm's ``pretrained_cfg["first_conv"]``; else the first 4-D
        weight that takes ``in_chans`` channels; ``None`` if there is none."""
        targets = self.state_dict()
        first = (getattr(self.body, "pretrained_cfg", None) or {}).get("first_conv")
        names = [first] if isinstance(first, str) else list(first or ())
        for name in names:
            key = f"{name}.weight"
            for candidate in ("body." + key, "body." + re.sub(r"^([^.]+)\.([^.]+)\.", r"\1_\2.", key)):
                if candidate in targets and targets[candidate].ndim == 4:
                    return candidate
        for key, value in targets.items():
            if key.startswith("body.") and value.ndim == 4 and value.shape[1] == self.in_chans:
                return key
        return None

    @property
    def input_multiple(self) -> int:
        """Input heights and widths must be multiples of this (the coarsest stride, at least 32)."""
        return max(32, self.strides[-1])

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = self.body(x)
        out = []
        for i, f in enumerate(feats):
            if self.norms is not None:
                f = self.norms[i](f, nhwc=self.nhwc)
            elif self.nhwc:
                f = f.permute(0, 3, 1, 2)
            out.append(f)
        return out


# ----------------------------------------------------------------------------------------- weights
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
    """The tensors of a local weights file, read without running any of its code (:mod:`ctseg.safe_load`)."""
    from ctseg.safe_load import is_safetensors, load_torch_file, short_reason

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
