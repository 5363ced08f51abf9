"""Encoder: the feature pyramid (shapes, NCHW, stage norms) at several sizes, channels_last, torch.compile."""

import pytest
import torch

from ctseg.models import Encoder, build_model
from ctseg.models.encoders import ChannelGroupNorm, ChannelLayerNorm


@pytest.fixture(scope="module")
def swin_paper():
    """One CT-paper Swin for the tests that only run it in eval mode (building it is the slow part)."""
    return Encoder("ctseg_swin_paper").eval()


def assert_pyramid(encoder, feats, batch, height, width):
    assert encoder.strides == [4, 8, 16, 32]
    assert [tuple(f.shape) for f in feats] == [
        (batch, c, height // s, width // s) for c, s in zip(encoder.channels, encoder.strides, strict=True)
    ]


@pytest.mark.parametrize("name", ["ctseg_poolformer_tiny", "ctseg_swin_paper"])
@pytest.mark.parametrize(("height", "width"), [(64, 64), (128, 96), (256, 256)])
def test_pyramid_at_any_multiple_of_32(name, height, width, swin_paper):
    encoder = swin_paper if name == "ctseg_swin_paper" else Encoder(name).eval()
    with torch.no_grad():
        feats = encoder(torch.randn(1, 3, height, width))
    assert_pyramid(encoder, feats, 1, height, width)


def test_paper_encoders(swin_paper):
    swin = swin_paper
    assert swin.channels == [64, 128, 256, 512]
    assert swin.nhwc and isinstance(swin.norms[0], ChannelLayerNorm)
    pool = Encoder("ctseg_poolformer_paper")
    assert pool.channels == [64, 128, 256, 512]
    assert not pool.nhwc and isinstance(pool.norms[0], ChannelGroupNorm)
    assert pool.body.stem.conv.kernel_size == (8, 8) and pool.body.stem.conv.padding == (2, 2)
    assert pool.body.stages_1.downsample.conv.kernel_size == (2, 2)


@pytest.mark.parametrize(
    ("name", "channels", "norm"),
    [
        ("poolformer_s12", [64, 128, 320, 512], "groupnorm"),
        ("poolformerv2_s12", [64, 128, 320, 512], "groupnorm"),
        ("resnet18", [64, 128, 256, 512], "none"),
    ],
)
def test_standard_timm_encoders(name, channels, norm):
    encoder = Encoder(name, img_size=128).eval()
    assert encoder.channels == channels
    assert encoder.stage_norm == norm
    with torch.no_grad():
        feats = encoder(torch.randn(1, 3, 64, 96))
    assert_pyramid(encoder, feats, 1, 64, 96)


def test_swin_stage_norm_is_a_per_pixel_layer_norm_in_nchw(swin_paper):
    with torch.no_grad():
        feats = swin_paper(torch.randn(2, 3, 64, 64))
    for f in feats:  # fresh LayerNorm (weight 1, bias 0): every pixel's channel vector has mean 0, variance 1
        torch.testing.assert_close(f.mean(1), torch.zeros_like(f.mean(1)), atol=1e-4, rtol=0)
        torch.testing.assert_close(f.var(1, unbiased=False), torch.ones_like(f.mean(1)), atol=1e-3, rtol=0)


def test_stage_norm_can_be_switched_off():
    encoder = Encoder("ctseg_poolformer_tiny", stage_norm="none")
    assert encoder.norms is None
    feats = encoder(torch.randn(1, 3, 64, 64))
    assert_pyramid(encoder, feats, 1, 64, 64)
    with torch.device("meta"):
        swin = Encoder("ctseg_swin_paper", stage_norm="none")
    assert sum(p.numel() for p in swin.parameters()) == 13_832_588  # timm's count before the stage norms


@pytest.mark.parametrize("name", ["pf-tiny", "uf-tiny", "ds-paper"])
def test_channels_last_matches_contiguous(name):
    torch.manual_seed(0)
    model = build_model(name, 6).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        model = model.to(memory_format=torch.channels_last)
        got = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, atol=1e-3, rtol=1e-3)


@pytest.mark.slow
def test_torch_compile_training_step():
    torch.manual_seed(0)
    model = build_model("pf-tiny", 6)
    compiled = torch.compile(model)
    x = torch.randn(2, 3, 64, 64)
    y = torch.randint(0, 6, (2, 64, 64))
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), atol=1e-4, rtol=1e-4)
    model.train()
    loss = torch.nn.functional.cross_entropy(compiled(x), y)
    loss.backward()
    assert torch.isfinite(loss)


@pytest.mark.parametrize("name", ["pf-tiny", "uf-tiny"])
def test_bfloat16_autocast_forward_backward(name):
    torch.manual_seed(0)
    model = build_model(name, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(torch.randn(2, 3, 64, 64))
    assert torch.isfinite(logits).all()
    logits.float().logsumexp(1).mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
