"""Input bands: ``build_model(..., in_chans=N)`` and RGB weights adapted by timm's ``adapt_input_conv``."""

import pytest
import torch
from timm.models import adapt_input_conv

from ctseg.errors import CtsegError
from ctseg.models import Encoder, build_model, load_encoder_weights


@pytest.mark.parametrize("name", ["pf-tiny", "ds-paper"])
@pytest.mark.parametrize("in_chans", [4, 1])
def test_forward_on_any_band_count(name, in_chans):
    model = build_model(name, 3, in_chans=in_chans, img_size=64).eval()
    assert model.encoder.in_chans == in_chans
    assert model.config["in_chans"] == in_chans
    first = model.encoder.state_dict()[model.encoder.first_conv_key()]
    assert first.shape[1] == in_chans
    with torch.no_grad():
        out = model(torch.randn(2, in_chans, 64, 64))
    assert out.shape == (2, 3, 64, 64)
    rebuilt = build_model(**model.config)  # the config rebuilds the same architecture
    assert rebuilt.encoder.in_chans == in_chans


def test_three_bands_keep_the_old_config():
    """3-band configs are written as earlier ctseg wrote them (readable by it)."""
    assert "in_chans" not in build_model("pf-tiny", 3, img_size=64).config


@pytest.mark.parametrize("value", [0, -1, 2.5, True])
def test_bad_in_chans(value):
    with pytest.raises(CtsegError, match="in_chans"):
        build_model("pf-tiny", 3, in_chans=value)


@pytest.mark.parametrize(
    "encoder, key, in_chans",
    [
        ("ctseg_poolformer_tiny", "body.stem.conv.weight", 4),
        ("ctseg_poolformer_tiny", "body.stem.conv.weight", 1),
        ("ctseg_swin_paper", "body.patch_embed.proj.weight", 4),
    ],
)
def test_rgb_weights_are_adapted_as_timm_does(tmp_path, capsys, encoder, key, in_chans):
    torch.manual_seed(0)
    rgb = Encoder(encoder, img_size=64)
    path = tmp_path / "rgb.pth"
    state = rgb.state_dict()
    torch.save(state, path)
    target = Encoder(encoder, img_size=64, in_chans=in_chans)
    assert target.first_conv_key() == key
    report = load_encoder_weights(target, path)
    assert report.loaded == report.total  # the adapted conv counts as loaded
    assert report.adapted == {key: (3, in_chans)}
    assert f"{key} adapted from 3 to {in_chans} input channels (timm adapt_input_conv)" in report.summary()
    assert "adapt_input_conv" in capsys.readouterr().err
    expected = adapt_input_conv(in_chans, state[key])
    torch.testing.assert_close(target.state_dict()[key], expected, rtol=0, atol=0)
    if in_chans == 4:  # RGB filters repeated R, G, B, R and scaled by 3 / 4
        w = state[key]
        torch.testing.assert_close(expected, torch.cat([w, w[:, :1]], 1) * 0.75, rtol=0, atol=0)
    for name, value in rgb.state_dict().items():  # everything else as in the file
        if name != key:
            torch.testing.assert_close(target.state_dict()[name], value, rtol=0, atol=0)


def test_whole_timm_model_rgb_weights_into_a_four_band_model(tmp_path):
    """The timm format (``stem.conv.weight`` of a whole model) goes through the same adaptation."""
    full = Encoder("ctseg_poolformer_tiny").full_model("cpu")
    path = tmp_path / "imagenet.pth"
    torch.save({"model": full.state_dict()}, path)
    model = build_model("pf-tiny", 3, in_chans=4, img_size=64, pretrained=path)
    torch.testing.assert_close(
        model.encoder.body.stem.conv.weight, adapt_input_conv(4, full.stem.conv.weight), rtol=0, atol=0
    )


def test_same_band_count_is_not_adapted(tmp_path):
    torch.manual_seed(0)
    four = Encoder("ctseg_poolformer_tiny", in_chans=4)
    path = tmp_path / "four.pth"
    torch.save(four.state_dict(), path)
    report = load_encoder_weights(Encoder("ctseg_poolformer_tiny", in_chans=4), path, verbose=False)
    assert report.adapted == {} and report.loaded == report.total
