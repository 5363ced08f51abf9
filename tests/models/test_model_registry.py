"""build_model / list_models: every preset builds and trains a step, exact parameter counts, errors."""

import pytest
import torch

from ctseg.errors import CtsegError
from ctseg.models import Segmentor, build_model, list_models

PAPER_COUNTS = {
    # name: (whole model, encoder, decoder), 6 classes
    "ds-paper": (21_890_254, 13_834_508, 8_055_746),
    "uf-paper": (14_345_514, 13_834_508, 511_006),
    "pf-paper": (17_513_346, 9_457_600, 8_055_746),
}


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def test_required_names_are_listed():
    assert {"ds-paper", "uf-paper", "pf-paper", "dcswin", "unetformer", "pf-tiny", "uf-tiny"} <= set(list_models())


@pytest.mark.parametrize("name", list_models())
def test_every_model_builds_and_runs_forward_backward(name):
    torch.manual_seed(0)
    model = build_model(name, 5, img_size=64)
    assert isinstance(model, Segmentor)
    x = torch.randn(2, 3, 64, 64)
    feats = model.encode(x)
    assert len(feats) == len(model.channels) == len(model.strides) == 4
    assert model.strides == [4, 8, 16, 32]
    if name == "dcswin":  # default encoder: timm's standard swin_tiny
        assert model.channels == [96, 192, 384, 768]
    for f, c, s in zip(feats, model.channels, model.strides, strict=True):
        assert f.shape == (2, c, 64 // s, 64 // s)
    logits = model.decode(feats, x.shape[-2:])
    assert logits.shape == (2, 5, 64, 64)
    logits.logsumexp(1).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", sorted(PAPER_COUNTS))
def test_paper_parameter_counts(name):
    with torch.device("meta"):  # shapes only: no memory, no init time
        model = build_model(name, 6)
    total, encoder, decoder = PAPER_COUNTS[name]
    assert n_params(model.encoder) == encoder
    assert n_params(model.decoder) == decoder
    assert n_params(model) == total


def test_parameter_count_does_not_depend_on_img_size():
    # Swin keeps its window of 7 at every stage (always_partition), so small img_size builds the same model
    with torch.device("meta"):
        model = build_model("ds-paper", 6, img_size=64)
    assert n_params(model.encoder) == PAPER_COUNTS["ds-paper"][1]


def test_config_rebuilds_the_same_model():
    model = build_model("uf-tiny", 4, img_size=128, dropout=0.2)
    rebuilt = build_model(**model.config)
    assert rebuilt.config == model.config
    assert type(rebuilt.decoder) is type(model.decoder)
    rebuilt.load_state_dict(model.state_dict())  # strict: same tensors, same shapes
    assert rebuilt.decoder.dropout.p == 0.2


@pytest.mark.parametrize(
    ("name", "encoder", "channels"),
    [
        ("unetformer", "poolformer_s12", [64, 128, 320, 512]),
        ("dcswin", "resnet18", [64, 128, 256, 512]),  # five timm levels; the stride-2 one is dropped
    ],
)
def test_generic_presets_take_timm_encoders(name, encoder, channels):
    model = build_model(name, 3, encoder=encoder, img_size=64)
    assert model.channels == channels
    assert model.config["encoder"] == encoder
    assert model(torch.randn(1, 3, 64, 96)).shape == (1, 3, 64, 96)


def test_options_reach_the_decoder():
    model = build_model("pf-tiny", 6, atrous_rates=(2, 4), dropout=0.0)
    assert model.decoder.up4[0][0].dilation == (2, 2)
    assert model.decoder.dropout.p == 0.0


def test_unknown_name_lists_valid_names():
    with pytest.raises(CtsegError, match="pf-tiny"):
        build_model("pf-huge", 6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(name="ds-paper", encoder="resnet18"), "fixes its encoder"),
        (dict(name="pf-tiny", pretrained=True), "never downloads"),
        (dict(name="pf-tiny", colour="red"), "unknown option"),
        (dict(name="pf-tiny", img_size=100), "multiple of 32"),
        (dict(name="dcswin", encoder="no_such_net"), "unknown encoder"),
        (dict(name="unetformer", encoder="vit_tiny_patch16_224"), "pyramid"),
        (dict(name="pf-tiny", stage_norm="batchnorm"), "stage_norm"),
        (dict(name="uf-tiny", decode_channels=30), "divisible"),
    ],
)
def test_bad_arguments_raise_ctseg_errors(kwargs, match):
    num_classes = kwargs.pop("num_classes", 6)
    with pytest.raises(CtsegError, match=match):
        build_model(kwargs.pop("name"), num_classes, **kwargs)


def test_bad_num_classes():
    with pytest.raises(CtsegError, match="num_classes"):
        build_model("pf-tiny", 0)


@pytest.mark.parametrize("shape", [(1, 3, 64, 48), (1, 3, 100, 64), (3, 64, 64)])
def test_input_not_a_multiple_of_32_is_refused(shape):
    model = build_model("pf-tiny", 6)
    with pytest.raises(CtsegError, match="multiples of 32"):
        model(torch.randn(*shape))


def test_a_preset_is_named_once_and_a_duplicate_is_refused():
    import pytest

    from ctseg.models.registry import _PRESETS, ModelPreset, register_model

    assert all(name == preset.name for name, preset in _PRESETS.items())
    with pytest.raises(ValueError, match="'pf-tiny' is already registered"):
        register_model(ModelPreset("pf-tiny", "ctseg_poolformer_tiny", "unetformer"))
    assert _PRESETS["pf-tiny"].decoder == "dcswin"  # the first one stays
