"""DCSwin decoder: the densely connected feature aggregation module (DCFAM).

Reference: L. Wang, R. Li, C. Duan, C. Zhang, X. Meng, S. Fang, "A Novel Transformer Based Semantic
Segmentation Scheme for Fine-Resolution Remote Sensing Images", IEEE Geoscience and Remote Sensing Letters 19
(2022). Written here from the structure in docs/design.md §3.3; the exact layer shapes follow the parameter count of the
authors' decoder (8,055,746 parameters on channels 64/128/256/512 with 6 classes). That count fixes two details
against a literal reading of the prose: the stride-2 shortcut of a down connection is a 3×3 conv-BN (a 1×1 one
gives 1,638,400 fewer parameters), and a separable conv normalises after its pointwise conv, over the output
channels (BN after the depthwise conv gives 1,152 more). With both, the count is exact.

Dataflow, with encoder features ``x1 … x4`` (channels ``C1 … C4`` at strides r, 2r, 4r, 8r; r = 4 usually)::

    out4 = conv1x1(x4) + down(C3→C4)(SA(down(C2→C3)(x2)))             # (B, C4, H/8r, W/8r)
    out3 = SA(x3) + down(C2→C3)(CA(down(C1→C2)(x1)))                  # (B, C3, H/4r, W/4r)
    out2 = CA(x2) + [sep(C4→C3, d6), ×2, sep(C3→C2, d12), ×2](out4)   # (B, C2, H/2r, W/2r)
    out1 = conv1x1(x1) + [sep(C3→C2, d6), ×2, sep(C2→C1, d12), ×2](out3)  # (B, C1, H/r, W/r)
    y    = out1 + [conv3x3-BN-ReLU(C2→C1), ×2](out2)
    y    = conv1x1(C1→K)(conv3x3-BN-ReLU(C1)(Dropout2d(y)))            # (B, K, H/r, W/r)
    logits = bilinear(y, size)                                         # (B, K, H, W)

``SA`` (one instance, used twice) is a linear-complexity attention over positions, ``CA`` (one instance, used
twice) the same attention over channels; both add their output to the input with a zero-initialised scale γ, so
at initialisation they are identities. ``×2`` is nearest-neighbour upsampling.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "DCSwinDecoder",
    "DownConnection",
    "SeparableConvBNReLU",
    "SharedChannelAttention",
    "SharedSpatialAttention",
]


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
    )


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Sequential:
    return nn.Sequential(*_conv_bn(in_channels, out_channels, kernel_size), nn.ReLU(inplace=True))


class SeparableConvBNReLU(nn.Sequential):
    """Depthwise 3×3 conv (dilated) → pointwise 1×1 conv → BN → ReLU; (B, C_in, H, W) → (B, C_out, H, W)."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int = 1):
        super().__init__(
            nn.Conv2d(in_channels, in_channels, 3, padding=dilation, dilation=dilation, groups=in_channels, bias=False),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class DownConnection(nn.Module):
    """Residual stride-2 block; (B, C_in, H, W) → (B, C_out, H/2, W/2).

    ``ReLU(BN(conv3x3/2(ReLU(BN(conv3x3(x))))) + BN(conv3x3/2(x)))``.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = _conv_bn(in_channels, out_channels, 3)
        self.conv2 = _conv_bn(out_channels, out_channels, 3, stride=2)
        self.shortcut = _conv_bn(in_channels, out_channels, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv2(F.relu(self.conv1(x)))
        return F.relu(y + self.shortcut(x))


def _linear_attention(query: Tensor, key: Tensor, value: Tensor, eps: float = 1e-6) -> Tensor:
    """Attention with weights ``1 + q̂·k̂`` (first-order expansion of exp), linear in the number of tokens.

    Args:
        query, key: (B, T, D) with rows L2-normalised, so every weight lies in [0, 2].
        value: (B, T, E).

    Returns:
        (B, T, E): ``out_t = Σ_s (1 + q_t·k_s) v_s / Σ_s (1 + q_t·k_s)``, computed as
        ``(Σ_s v_s + q_t (Kᵀ V)) / (T + q_t · Σ_s k_s)`` — O(T·D·E) instead of O(T²).
    """
    tokens = query.shape[1]
    numerator = value.sum(dim=1, keepdim=True) + query @ (key.transpose(1, 2) @ value)  # (B, T, E)
    denominator = tokens + query @ key.sum(dim=1).unsqueeze(-1)  # (B, T, 1)
    return numerator / (denominator + eps)


class SharedSpatialAttention(nn.Module):
    """Linear attention over positions; (B, C, H, W) → (B, C, H, W).

    Queries and keys are 1×1 convs to C/8 channels (L2-normalised per position), values a 1×1 conv to C
    channels; ``x + γ · attention``, γ initialised to 0. The attention runs in float32 with autocast off (its sums
    run over all positions; it is a small part of the cost).
    """

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        self.query = nn.Conv2d(channels, channels // reduction, 1)
        self.key = nn.Conv2d(channels, channels // reduction, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.query(x), self.key(x), self.value(x)
        with torch.autocast(x.device.type, enabled=False):
            q = F.normalize(q.flatten(2).transpose(1, 2).float(), dim=-1)  # (B, HW, C/8)
            k = F.normalize(k.flatten(2).transpose(1, 2).float(), dim=-1)  # (B, HW, C/8)
            v = v.flatten(2).transpose(1, 2).float()  # (B, HW, C)
            out = _linear_attention(q, k, v).transpose(1, 2).reshape(b, c, h, w)
        return x + self.gamma.to(x.dtype) * out.to(x.dtype)


class SharedChannelAttention(nn.Module):
    """Linear attention over channels, no weights but γ; (B, C, H, W) → (B, C, H, W).

    Each channel is a token whose feature is its flattened map (HW values); queries and keys are those maps
    L2-normalised, values the raw maps. ``x + γ · attention``, γ initialised to 0; float32 inside, autocast off.
    """

    def __init__(self):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        with torch.autocast(x.device.type, enabled=False):
            v = x.flatten(2).float()  # (B, C, HW)
            q = F.normalize(v, dim=-1)
            # Channels are few and positions many: form the (C, C) similarity first, never a (HW, HW) matrix.
            similarity = q @ q.transpose(1, 2)  # (B, C, C)
            numerator = v.sum(dim=1, keepdim=True) + similarity @ v  # (B, C, HW)
            denominator = c + similarity.sum(dim=-1, keepdim=True)  # (B, C, 1)
            out = (numerator / (denominator + 1e-6)).reshape(b, c, h, w)
        return x + self.gamma.to(x.dtype) * out.to(x.dtype)


class DCSwinDecoder(nn.Module):
    """DCFAM decoder over a 4-stage pyramid (see the module docstring for the dataflow).

    Args:
        encoder_channels: (C1, C2, C3, C4), channels of the stage outputs at strides r, 2r, 4r, 8r.
        num_classes: K, the number of output channels.
        atrous_rates: dilations of the two separable convs in each upsampling path (paper: 6 and 12).
        dropout: Dropout2d probability before the last 3×3 conv (paper: 0.05).

    Shapes: ``forward([x1, x2, x3, x4], size)`` with ``x_i`` of shape (B, C_i, H/(r·2^(i-1)), W/(r·2^(i-1)))
    returns logits ``(B, K, *size)``.
    """

    def __init__(
        self,
        encoder_channels: Sequence[int],
        num_classes: int,
        atrous_rates: Sequence[int] = (6, 12),
        dropout: float = 0.05,
    ):
        super().__init__()
        if len(encoder_channels) != 4:
            raise ValueError(f"DCSwinDecoder needs 4 encoder stages, got channels {list(encoder_channels)}")
        c1, c2, c3, c4 = (int(c) for c in encoder_channels)
        d1, d2 = atrous_rates
        self.conv4 = nn.Conv2d(c4, c4, 1, bias=False)
        self.conv1 = nn.Conv2d(c1, c1, 1, bias=False)
        self.spatial_attention = SharedSpatialAttention(c3)
        self.channel_attention = SharedChannelAttention()
        self.down12 = DownConnection(c1, c2)
        self.down23_to4 = DownConnection(c2, c3)  # x2 → SA → down34 → out4
        self.down23_to3 = DownConnection(c2, c3)  # x1 → down12 → CA → out3
        self.down34 = DownConnection(c3, c4)
        self.up4 = nn.Sequential(
            SeparableConvBNReLU(c4, c3, d1),
            nn.Upsample(scale_factor=2, mode="nearest"),
            SeparableConvBNReLU(c3, c2, d2),
            nn.Upsample(scale_factor=2, mode="nearest"),
        )
        self.up3 = nn.Sequential(
            SeparableConvBNReLU(c3, c2, d1),
            nn.Upsample(scale_factor=2, mode="nearest"),
            SeparableConvBNReLU(c2, c1, d2),
            nn.Upsample(scale_factor=2, mode="nearest"),
        )
        self.up2 = nn.Sequential(_conv_bn_relu(c2, c1, 3), nn.Upsample(scale_factor=2, mode="nearest"))
        self.dropout = nn.Dropout2d(dropout)
        self.head = _conv_bn_relu(c1, c1, 3)
        self.classifier = nn.Conv2d(c1, num_classes, 1, bias=False)
        self.num_classes = num_classes
        _init_conv_bn(self)

    def forward(self, features: Sequence[Tensor], size: Sequence[int]) -> Tensor:
        x1, x2, x3, x4 = features
        out4 = self.conv4(x4) + self.down34(self.spatial_attention(self.down23_to4(x2)))
        out3 = self.spatial_attention(x3) + self.down23_to3(self.channel_attention(self.down12(x1)))
        out2 = self.channel_attention(x2) + self.up4(out4)
        out1 = self.conv1(x1) + self.up3(out3)
        y = out1 + self.up2(out2)
        y = self.classifier(self.head(self.dropout(y)))
        return F.interpolate(y, size=tuple(size), mode="bilinear", align_corners=False)


def _init_conv_bn(module: nn.Module) -> None:
    """He-normal convs (fan-in, so depthwise convs get their true fan of k²), BN at (1, 0)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
