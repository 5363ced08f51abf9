"""DCSwin and UNetFormer decoders: parameter counts, shapes, the linear attentions against explicit formulas."""

import pytest
import torch

from ctseg.models.dcswin import DCSwinDecoder, SharedChannelAttention, SharedSpatialAttention
from ctseg.models.unetformer import GlobalLocalAttention, UNetFormerDecoder

PAPER_CHANNELS = [64, 128, 256, 512]


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def pyramid(channels, size, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(batch, c, size // s, size // s, generator=g) for c, s in zip(channels, (4, 8, 16, 32), strict=True)
    ]


def test_dcswin_parameter_count_matches_the_authors():
    assert n_params(DCSwinDecoder(PAPER_CHANNELS, 6)) == 8_055_746


def test_unetformer_parameter_count_matches_the_authors():
    assert n_params(UNetFormerDecoder(PAPER_CHANNELS, 6)) == 511_006


@pytest.mark.parametrize("decoder_cls", [DCSwinDecoder, UNetFormerDecoder])
@pytest.mark.parametrize("size", [64, 96, 160])
def test_decoder_output_shape_and_gradients(decoder_cls, size):
    # 96 and 160 give stride-32 maps of 3×3 and 5×5: not multiples of UNetFormer's window of 8
    channels = [16, 32, 64, 128]
    decoder = decoder_cls(channels, 5, **({"decode_channels": 32} if decoder_cls is UNetFormerDecoder else {}))
    feats = [f.requires_grad_() for f in pyramid(channels, size)]
    logits = decoder(feats, (size, size))
    assert logits.shape == (2, 5, size, size)
    logits.square().mean().backward()
    assert all(f.grad is not None and torch.isfinite(f.grad).all() for f in feats)


def test_attentions_start_as_identity():
    x = torch.randn(2, 32, 6, 5)
    torch.testing.assert_close(SharedSpatialAttention(32)(x), x)
    torch.testing.assert_close(SharedChannelAttention()(x), x)


def _explicit_linear_attention(q, k, v):
    """Quadratic reference: weights 1 + q̂·k̂ over all tokens, normalised per query. q, k: (T, D), v: (T, E)."""
    weights = 1 + q @ k.T
    return (weights / weights.sum(dim=1, keepdim=True)) @ v


def test_spatial_attention_matches_quadratic_formula():
    torch.manual_seed(0)
    sa = SharedSpatialAttention(16)
    with torch.no_grad():
        sa.gamma.fill_(1.0)
    x = torch.randn(1, 16, 4, 3)
    q = torch.nn.functional.normalize(sa.query(x).flatten(2)[0].T, dim=-1)
    k = torch.nn.functional.normalize(sa.key(x).flatten(2)[0].T, dim=-1)
    v = sa.value(x).flatten(2)[0].T
    expected = x + _explicit_linear_attention(q, k, v).T.reshape(1, 16, 4, 3)
    torch.testing.assert_close(sa(x), expected, atol=1e-5, rtol=1e-5)


def test_channel_attention_matches_quadratic_formula():
    ca = SharedChannelAttention()
    with torch.no_grad():
        ca.gamma.fill_(0.5)
    x = torch.randn(1, 8, 5, 4)
    tokens = x.flatten(2)[0]  # channels are the tokens
    q = torch.nn.functional.normalize(tokens, dim=-1)
    expected = x + 0.5 * _explicit_linear_attention(q, q, tokens).reshape(1, 8, 5, 4)
    torch.testing.assert_close(ca(x), expected, atol=1e-5, rtol=1e-5)


def test_global_local_attention_is_local_to_windows():
    """Changing a pixel in one window leaves the attention inside far-away windows unchanged."""
    torch.manual_seed(0)
    gla = GlobalLocalAttention(16, num_heads=4, window_size=4).eval()
    x = torch.randn(1, 16, 16, 16)
    y = x.clone()
    y[..., 0, 0] += 5.0
    a = gla._window_attention(x)
    b = gla._window_attention(y)
    assert not torch.allclose(a[..., :4, :4], b[..., :4, :4])
    torch.testing.assert_close(a[..., 8:, 8:], b[..., 8:, 8:])
