"""UNetFormer decoder (without its auxiliary head).

Reference: L. Wang, R. Li, C. Zhang, S. Fang, C. Duan, X. Meng, P. M. Atkinson, "UNetFormer: A UNet-like
transformer for efficient semantic segmentation of remote sensing urban scene imagery", ISPRS Journal of
Photogrammetry and Remote Sensing 190 (2022) 196–214. Written from the structure in docs/design.md §3.4; with
decode channels 64, window 8, 8 heads, encoder channels 64/128/256/512 and 6 classes it has 511,006 parameters, as
the authors' decoder does.

Dataflow, with encoder features ``x1 … x4`` (channels ``C1 … C4`` at strides r, 2r, 4r, 8r) and D decode
channels::

    y = block(ConvBN1x1(C4→D)(x4))            # (B, D, H/8r, W/8r)
    y = block(fuse(y, x3))                    # (B, D, H/4r, W/4r)
    y = block(fuse(y, x2))                    # (B, D, H/2r, W/2r)
    y = refine(y, x1)                         # (B, D, H/r, W/r)
    logits = bilinear(conv1x1(D→K)(Dropout2d(ConvBNReLU(D)(y))), size)   # (B, K, H, W)

``block`` is a global-local transformer block, ``fuse`` the weighted fusion and ``refine`` the feature
refinement head; each class below documents its own shapes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "FeatureRefinementHead",
    "GlobalLocalAttention",
    "GlobalLocalBlock",
    "UNetFormerDecoder",
    "WeightedFusion",
]


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
    )


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Sequential:
    return nn.Sequential(*_conv_bn(in_channels, out_channels, kernel_size), nn.ReLU(inplace=True))


def _separable_conv_bn(channels: int, kernel_size: int) -> nn.Sequential:
    """Depthwise k×k conv → BN → pointwise 1×1 conv; 'same' zero padding also for even k (extra row/col at the
    end, padded explicitly so the conv itself never needs an asymmetric-padding copy)."""
    before = (kernel_size - 1) // 2
    after = kernel_size - 1 - before
    return nn.Sequential(
        nn.ZeroPad2d((before, after, before, after)),
        nn.Conv2d(channels, channels, kernel_size, groups=channels, bias=False),
        nn.BatchNorm2d(channels),
        nn.Conv2d(channels, channels, 1, bias=False),
    )


def _pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Pad the bottom/right of (B, C, H, W) up to multiples of ``multiple``.

    Reflect padding where the map is large enough for it, replicate padding otherwise (a 2×2 map padded to
    8×8, say). Shapes are Python ints here, so this costs no device sync and compiles to a static graph.
    """
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    mode = "reflect" if pad_h < h and pad_w < w else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


class GlobalLocalAttention(nn.Module):
    """Window self-attention (global branch) plus a convolutional local branch; (B, D, H, W) → (B, D, H, W).

    Global: 1×1-conv q/k/v, multi-head self-attention inside non-overlapping ``window × window`` windows with a
    learned relative position bias ((2w−1)² × heads table); the map is padded to a multiple of the window first
    and cropped after. Its output is smoothed by window-long average pools along columns and along rows (summed).
    Local: 3×3 conv-BN + 1×1 conv-BN. The sum of both goes through a separable conv (window × window depthwise,
    BN, pointwise).
    """

    def __init__(self, dim: int, num_heads: int = 8, window_size: int = 8):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"decode channels {dim} must be divisible by the number of heads {num_heads}")
        self.num_heads = num_heads
        self.window_size = window_size
        self.qkv = nn.Conv2d(dim, 3 * dim, 1, bias=False)
        self.local3x3 = _conv_bn(dim, dim, 3)
        self.local1x1 = _conv_bn(dim, dim, 1)
        self.proj = _separable_conv_bn(dim, window_size)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij"))
        coords = coords.flatten(1)  # (2, w²)
        relative = (coords[:, :, None] - coords[:, None, :]) + (window_size - 1)  # (2, w², w²), each in [0, 2w-2]
        index = relative[0] * (2 * window_size - 1) + relative[1]
        self.register_buffer("relative_position_index", index, persistent=False)

    def _window_attention(self, x: Tensor) -> Tensor:
        """(B, D, Hp, Wp) with Hp, Wp multiples of the window → (B, D, Hp, Wp)."""
        b, d, hp, wp = x.shape
        ws, heads = self.window_size, self.num_heads
        nh, nw = hp // ws, wp // ws
        qkv = self.qkv(x).reshape(b, 3, heads, d // heads, nh, ws, nw, ws)
        # → (3, B·nh·nw, heads, ws², d/heads)
        qkv = qkv.permute(1, 0, 4, 6, 2, 5, 7, 3).reshape(3, b * nh * nw, heads, ws * ws, d // heads)
        bias = self.relative_position_bias_table[self.relative_position_index]  # (ws², ws², heads)
        bias = bias.permute(2, 0, 1).unsqueeze(0).to(qkv.dtype)  # (1, heads, ws², ws²)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=bias)
        out = out.reshape(b, nh, nw, heads, ws, ws, d // heads)
        return out.permute(0, 3, 6, 1, 4, 2, 5).reshape(b, d, hp, wp)

    def _smooth(self, x: Tensor) -> Tensor:
        """Window-long average pools along H and along W, 'same' size via reflect padding; (B, D, Hp, Wp)."""
        ws = self.window_size
        before, after = (ws - 1) // 2, ws - 1 - (ws - 1) // 2
        along_h = F.avg_pool2d(F.pad(x, (0, 0, before, after), mode="reflect"), (ws, 1), stride=1)
        along_w = F.avg_pool2d(F.pad(x, (before, after, 0, 0), mode="reflect"), (1, ws), stride=1)
        return along_h + along_w

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        local = self.local3x3(x) + self.local1x1(x)
        attended = self._smooth(self._window_attention(_pad_to_multiple(x, self.window_size)))
        return self.proj(attended[..., :h, :w] + local)


class GlobalLocalBlock(nn.Module):
    """``x + GLA(BN(x))`` then ``x + MLP(BN(x))`` with a 1×1-conv MLP (ratio 4, ReLU6); (B, D, H, W) → same."""

    def __init__(self, dim: int, num_heads: int = 8, window_size: int = 8, mlp_ratio: int = 4):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = GlobalLocalAttention(dim, num_heads, window_size)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = nn.Sequential(
            nn.Conv2d(dim, dim * mlp_ratio, 1), nn.ReLU6(inplace=True), nn.Conv2d(dim * mlp_ratio, dim, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class WeightedFusion(nn.Module):
    """Fuse a deeper map with a skip connection.

    ``ConvBNReLU3x3(w0·conv1x1(skip) + w1·up2(x))`` with ``(w0, w1) = ReLU(w) / (ΣReLU(w) + ε)`` learned
    (initialised to 1, 1). Shapes: x (B, D, h, w), skip (B, C_skip, 2h, 2w) → (B, D, 2h, 2w).
    """

    def __init__(self, skip_channels: int, dim: int, eps: float = 1e-8):
        super().__init__()
        self.skip_conv = nn.Conv2d(skip_channels, dim, 1, bias=False)
        self.weights = nn.Parameter(torch.ones(2))
        self.eps = eps
        self.post_conv = _conv_bn_relu(dim, dim, 3)

    def fuse(self, x: Tensor, skip: Tensor) -> Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        weights = F.relu(self.weights)
        weights = weights / (weights.sum() + self.eps)
        return weights[0] * self.skip_conv(skip) + weights[1] * x

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.post_conv(self.fuse(x, skip))


class FeatureRefinementHead(WeightedFusion):
    """The weighted fusion, then a spatial and a channel gate; (B, D, h, w) + (B, C1, 2h, 2w) → (B, D, 2h, 2w).

    After the fusion ``y``: spatial gate ``sigmoid(dwconv3x3(y)) · y``, channel gate
    ``sigmoid(conv1x1(ReLU6(conv1x1(avgpool(y))))) · y`` (squeeze-excite, reduction 16), summed, projected by a
    separable 3×3 conv, plus a 1×1 conv-BN shortcut of ``y``, then ReLU6.
    """

    def __init__(self, skip_channels: int, dim: int, reduction: int = 16):
        super().__init__(skip_channels, dim)
        self.spatial_gate = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        hidden = max(dim // reduction, 1)
        self.channel_gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(dim, hidden, 1, bias=False),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, dim, 1, bias=False),
        )
        self.shortcut = _conv_bn(dim, dim, 1)
        self.proj = _separable_conv_bn(dim, 3)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        y = self.post_conv(self.fuse(x, skip))
        gated = torch.sigmoid(self.spatial_gate(y)) * y + torch.sigmoid(self.channel_gate(y)) * y
        return F.relu6(self.proj(gated) + self.shortcut(y))


class UNetFormerDecoder(nn.Module):
    """UNetFormer decoder over a 4-stage pyramid (see the module docstring), no auxiliary head.

    Args:
        encoder_channels: (C1, C2, C3, C4) at strides r, 2r, 4r, 8r.
        num_classes: K.
        decode_channels: D (paper: 64).
        window_size: attention window (paper: 8); maps of any size are padded to a multiple of it.
        num_heads: attention heads (paper: 8).
        dropout: Dropout2d probability before the classifier.

    Shapes: ``forward([x1, x2, x3, x4], size)`` → logits ``(B, K, *size)``.
    """

    def __init__(
        self,
        encoder_channels: Sequence[int],
        num_classes: int,
        decode_channels: int = 64,
        window_size: int = 8,
        num_heads: int = 8,
        dropout: float = 0.1,
    ):
        super().__init__()
        if len(encoder_channels) != 4:
            raise ValueError(f"UNetFormerDecoder needs 4 encoder stages, got channels {list(encoder_channels)}")
        c1, c2, c3, c4 = (int(c) for c in encoder_channels)
        d = decode_channels
        self.pre_conv = _conv_bn(c4, d, 1)
        self.block4 = GlobalLocalBlock(d, num_heads, window_size)
        self.fuse3 = WeightedFusion(c3, d)
        self.block3 = GlobalLocalBlock(d, num_heads, window_size)
        self.fuse2 = WeightedFusion(c2, d)
        self.block2 = GlobalLocalBlock(d, num_heads, window_size)
        self.refine = FeatureRefinementHead(c1, d)
        self.head = _conv_bn_relu(d, d, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(d, num_classes, 1, bias=False)
        self.num_classes = num_classes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, features: Sequence[Tensor], size: Sequence[int]) -> Tensor:
        x1, x2, x3, x4 = features
        y = self.block4(self.pre_conv(x4))
        y = self.block3(self.fuse3(y, x3))
        y = self.block2(self.fuse2(y, x2))
        y = self.refine(y, x1)
        y = self.classifier(self.dropout(self.head(y)))
        return F.interpolate(y, size=tuple(size), mode="bilinear", align_corners=False)
