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
(:func:`ctseg.models.weights.load_encoder_weights`); nothing is ever downloaded. RGB weights loaded into an
encoder with another band count get their first convolution adapted by timm's own ``adapt_input_conv`` (what
timm does for ``pretrained=True, in_chans=N``): for N > 3 the RGB filters are repeated cyclically over the N
input channels (band k takes the filter of channel k mod 3: R, G, B, R, … for bands 1, 2, 3, 4, …) and scaled
by 3 / N, which keeps the layer's output scale; for N = 1 the three filters are summed; for N = 2 the R and G
filters are kept, scaled by 3 / 2.
"""

from __future__ import annotations

import re
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ctseg.errors import CtsegError
from ctseg.models.architectures import CTSEG_ENCODERS

__all__ = ["Encoder", "list_encoders"]

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
def list_encoders() -> list[str]:
    """The ctseg encoder architectures (any timm name with a stride-4…32 pyramid works as well)."""
    return sorted(CTSEG_ENCODERS)


def _timm_module(name: str) -> str:
    if name in CTSEG_ENCODERS:
        return CTSEG_ENCODERS[name].timm_module
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
        if name not in CTSEG_ENCODERS and not timm.is_model(name):
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
            if self.name in CTSEG_ENCODERS:
                return CTSEG_ENCODERS[self.name].build(features_only=features_only, **kwargs)
            return timm.create_model(self.name, pretrained=False, features_only=features_only, **kwargs)
        except (RuntimeError, TypeError, ValueError, AssertionError, AttributeError, KeyError) as err:
            what = "features_only encoder" if features_only else "model"
            raise CtsegError(
                f"timm cannot build {self.name!r} as a {what} with {kwargs}: {err}".replace("\n", " ")
            ) from err

    def _resolve_stage_norm(self, stage_norm: str) -> str:
        if stage_norm == "auto":
            if self.name in CTSEG_ENCODERS:
                return CTSEG_ENCODERS[self.name].stage_norm
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
