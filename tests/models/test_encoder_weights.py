"""load_encoder_weights: round trips, key formats, the 90 % rule, missing files; build_model(pretrained=PATH)."""

import re

import pytest
import torch
from safetensors.torch import save_file

from ctseg.errors import CtsegError
from ctseg.models import Encoder, build_model, load_encoder_weights


def outputs(model, x):
    model.eval()
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_round_trip_gives_identical_outputs(tmp_path, suffix):
    torch.manual_seed(0)
    trained = build_model("pf-tiny", 6)
    path = tmp_path / f"encoder{suffix}"
    state = {k: v.contiguous() for k, v in trained.encoder.state_dict().items()}
    torch.save(state, path) if suffix == ".pth" else save_file(state, str(path))

    torch.manual_seed(1)
    fresh = build_model("pf-tiny", 6)
    fresh.decoder.load_state_dict(trained.decoder.state_dict())
    x = torch.randn(1, 3, 64, 64)
    assert not torch.allclose(outputs(fresh, x), outputs(trained, x))
    report = load_encoder_weights(fresh, path)
    assert report.loaded == report.total and report.norms_loaded == 8
    torch.testing.assert_close(outputs(fresh, x), outputs(trained, x))


def test_build_model_loads_pretrained_from_a_whole_segmentor_checkpoint(tmp_path):
    torch.manual_seed(0)
    trained = build_model("uf-tiny", 6)
    path = tmp_path / "checkpoint.pt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in trained.state_dict().items()}, "epoch": 3}, path)
    model = build_model("uf-tiny", 6, pretrained=path)
    for key, value in trained.encoder.state_dict().items():
        torch.testing.assert_close(model.encoder.state_dict()[key], value)
    assert "pretrained" not in model.config


def test_whole_timm_model_state_dict_is_mapped_to_the_feature_pyramid(tmp_path):
    encoder = Encoder("ctseg_poolformer_tiny")
    full = encoder.full_model("cpu")  # a timm MetaFormer with head, keys "stages.0.blocks…"
    path = tmp_path / "imagenet.pth"
    torch.save({"model": full.state_dict()}, path)
    report = load_encoder_weights(encoder, path)
    assert report.loaded == report.total
    torch.testing.assert_close(encoder.body.stages_2.blocks[1].mlp.fc1.weight, full.stages[2].blocks[1].mlp.fc1.weight)


def test_original_swin_release_format_is_converted(tmp_path):
    """Microsoft's Swin checkpoints put each downsample at the end of the previous stage and name the head
    ``head``; timm's converter moves them. Simulated here from a timm model."""
    encoder = Encoder("ctseg_swin_paper")
    full = encoder.full_model("cpu")
    original = {}
    for key, value in full.state_dict().items():
        key = re.sub(r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m[1]) - 1}.downsample", key)
        original[key.replace("head.fc.", "head.")] = value
    assert "layers.0.downsample.reduction.weight" in original
    path = tmp_path / "swin_original.pth"
    torch.save({"model": original}, path)
    report = load_encoder_weights(encoder, path)
    assert report.loaded == report.total
    torch.testing.assert_close(
        encoder.body.layers_1.downsample.reduction.weight, full.layers[1].downsample.reduction.weight
    )


def test_mismatched_checkpoint_is_refused(tmp_path):
    path = tmp_path / "tiny.pth"
    torch.save(build_model("pf-tiny", 6).encoder.state_dict(), path)
    with pytest.raises(CtsegError, match=r"tiny\.pth.*allow_partial"):
        build_model("pf-paper", 6, pretrained=path)


def test_other_family_checkpoint_is_refused_unless_partial_allowed(tmp_path):
    path = tmp_path / "swin.pth"
    torch.save(Encoder("ctseg_swin_paper", stage_norm="none").full_model("cpu").state_dict(), path)
    encoder = Encoder("ctseg_poolformer_tiny")
    with pytest.raises(CtsegError, match="0 %"):
        load_encoder_weights(encoder, path)
    with pytest.warns(UserWarning, match="loaded 0/"):
        report = load_encoder_weights(encoder, path, allow_partial=True)
    assert report.loaded == 0


def test_missing_file_is_named(tmp_path):
    with pytest.raises(CtsegError, match="nope.pth: no such weights file"):
        build_model("pf-tiny", 6, pretrained=tmp_path / "nope.pth")


def test_unreadable_file_is_named(tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CtsegError, match="weights file .*broken.pth cannot be read .*torch.save"):
        load_encoder_weights(Encoder("ctseg_poolformer_tiny"), path)


def _to_original_poolformer_keys(state):
    """timm MetaFormer keys → the original PoolFormer release's (``network.{2i}.{j}…``, ``patch_embed.proj``)."""
    original = {}
    for key, value in state.items():
        key = key.replace("stem.conv", "patch_embed.proj").replace("head.norm", "norm").replace("head.fc", "head")
        if m := re.match(r"stages\.(\d+)\.downsample\.conv\.(.*)", key):
            key = f"network.{2 * int(m[1]) - 1}.proj.{m[2]}"
        if m := re.match(r"stages\.(\d+)\.blocks\.(\d+)\.(.*)", key):
            rest = re.sub(r"layer_scale(\d)\.scale", r"layer_scale_\1", m[3])
            value = value.flatten() if "layer_scale_" in rest else value
            key = f"network.{2 * int(m[1])}.{m[2]}.{rest}"
        original[key] = value
    return original


def test_original_poolformer_release_format_is_converted(tmp_path):
    encoder = Encoder("ctseg_poolformer_tiny")
    full = encoder.full_model("cpu")
    original = _to_original_poolformer_keys(full.state_dict())
    assert "network.0.0.layer_scale_1" in original and "network.1.proj.weight" in original
    path = tmp_path / "poolformer.pth.tar"
    torch.save(original, path)
    report = load_encoder_weights(encoder, path)
    assert report.loaded == report.total
    torch.testing.assert_close(encoder.body.stages_1.downsample.conv.weight, full.stages[1].downsample.conv.weight)
    torch.testing.assert_close(
        encoder.body.stages_2.blocks[0].layer_scale1.scale, full.stages[2].blocks[0].layer_scale1.scale
    )
