"""ctseg's own encoder architectures, built with timm's classes: the CT paper's Swin and PoolFormer, and a tiny
PoolFormer for CPU demos and tests (descriptions in :mod:`ctseg.models.encoders`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import timm
from torch import nn


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


@dataclass(frozen=True)
class CtsegEncoder:
    """A ctseg encoder architecture: how to build it and how :class:`~ctseg.models.encoders.Encoder` treats it.

    Attributes:
        build: constructor taking timm keyword arguments (``features_only``, ``in_chans`` …).
        timm_module: the timm module its blocks come from (decides Swin's size arguments, timm's key filters).
        stage_norm: the norm put on each stage output under ``stage_norm="auto"``.
    """

    build: Callable[..., nn.Module]
    timm_module: str
    stage_norm: str


#: ctseg architectures by name (any timm name with a stride-4…32 pyramid works as well).
CTSEG_ENCODERS: dict[str, CtsegEncoder] = {
    "ctseg_swin_paper": CtsegEncoder(_swin_paper, "swin_transformer", "layernorm"),
    "ctseg_poolformer_paper": CtsegEncoder(_poolformer_paper, "metaformer", "groupnorm"),
    "ctseg_poolformer_tiny": CtsegEncoder(_poolformer_tiny, "metaformer", "groupnorm"),
}
