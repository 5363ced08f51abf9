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


def _poolformer_s12_file(tmp_path, original_format=False):
    """timm's ``poolformer_s12`` (layers 2/2/6/2, dims 64/128/320/512) saved as an ImageNet checkpoint would be,
    random weights (``pretrained=False``: nothing downloaded)."""
    import timm

    torch.manual_seed(0)
    full = timm.create_model("poolformer_s12", pretrained=False)
    # perturbed, so that every loaded tensor differs from its initialisation (layer scales start at 1e-5 in both)
    state = {k: v + torch.rand_like(v) for k, v in full.state_dict().items()}
    path = tmp_path / ("poolformer_s12.pth.tar" if original_format else "poolformer_s12.pth")
    torch.save(_to_original_poolformer_keys(state) if original_format else state, path)
    return path, state


def _timm_key(key):
    """``body.stages_2.blocks.0.…`` → timm's ``stages.2.blocks.0.…``."""
    return re.sub(r"^body\.([a-z]+)_(\d+)\.", r"\1.\2.", key).removeprefix("body.")


@pytest.mark.parametrize("original_format", [False, True])
def test_pf_paper_takes_poolformer_s12_partially_as_the_authors(tmp_path, capsys, original_format):
    """The authors load timm's poolformer_s12 into their 2/2/8/2, 64/128/256/512 PoolFormer: exactly the tensors
    whose shapes match are loaded, the rest keeps its initialisation, and one line says what loaded."""
    path, s12 = _poolformer_s12_file(tmp_path, original_format)
    torch.manual_seed(1)
    model = build_model("pf-paper", 6)
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    capsys.readouterr()
    with pytest.warns(UserWarning, match="loaded 63/148"):
        report = load_encoder_weights(model, path, allow_partial=True)
    after = model.encoder.state_dict()
    # Expected from the shapes alone: key "body.stages_i.…" ↔ timm "stages.i.…", same shape.
    expected = {
        k
        for k in before
        if k.startswith("body.") and (src := _timm_key(k)) in s12 and s12[src].shape == before[k].shape
    }
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == expected and report.loaded == len(expected) == 63 and report.total == 148
    for key in expected:
        torch.testing.assert_close(after[key], s12[_timm_key(key)])
    assert report.groups == {
        "stem": (1, 2),  # the bias; the 7×7 kernel does not fit the 8×8 stem
        "stages_0": (20, 20),
        "stages_1": (21, 22),  # the 3×3 downsampling kernel does not fit the 2×2 one
        "stages_2": (0, 82),  # 320 channels, 6 blocks vs 256 channels, 8 blocks
        "stages_3": (21, 22),
    }
    assert report.norms_loaded == 0 and report.norms_total == 8
    assert "body.stem.conv.weight (64, 3, 7, 7) vs (64, 3, 8, 8)" in report.mismatched
    assert "body.stages_2.blocks.7.mlp.fc1.weight" in report.missing
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"ctseg: encoder weights {path}: loaded 63/148 encoder tensors (42 %) — stem 1/2, stages_0 20/20, "
        "stages_1 21/22, stages_2 0/82, stages_3 21/22; stage norms 0/8"
    ]


def test_pf_paper_refuses_poolformer_s12_without_allow_partial(tmp_path):
    path, _ = _poolformer_s12_file(tmp_path)
    with pytest.raises(CtsegError) as info:
        build_model("pf-paper", 6, pretrained=path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: only 63/148 (42 %) of encoder 'ctseg_poolformer_paper'")
    assert "allow_partial" in message
    with pytest.warns(UserWarning, match="loaded 63/148"):
        model = build_model("pf-paper", 6, pretrained=path, allow_partial=True)  # the build_model route
    torch.testing.assert_close(model.encoder.body.stages_3.blocks[1].mlp.fc2.weight,
                               torch.load(path)["stages.3.blocks.1.mlp.fc2.weight"])  # fmt: skip


def test_complete_load_prints_one_line_and_quiet_mode(tmp_path, capsys):
    path = tmp_path / "tiny.pth"
    torch.save(build_model("pf-tiny", 6).encoder.state_dict(), path)
    capsys.readouterr()
    report = load_encoder_weights(build_model("pf-tiny", 6), path)
    assert capsys.readouterr().err == f"ctseg: encoder weights {report.summary()}\n"
    assert report.summary().startswith(f"{path}: loaded {report.total}/{report.total} encoder tensors (100 %) — stem")
    load_encoder_weights(build_model("pf-tiny", 6), path, verbose=False)
    assert capsys.readouterr().err == ""


def test_allow_partial_is_a_fit_option(tmp_path, capsys):
    """``ctseg fit --model.pretrained PATH --model.allow_partial true`` (SegmentationTask's own argument)."""
    from ctseg.training.task import SegmentationTask

    path, _ = _poolformer_s12_file(tmp_path)
    with pytest.raises(CtsegError, match=r"--model.allow_partial true"):
        SegmentationTask(model="pf-paper", pretrained=str(path), img_size=64)
    capsys.readouterr()
    task = SegmentationTask(model="pf-paper", pretrained=str(path), img_size=64, allow_partial=True)
    assert "stages_0 20/20" in capsys.readouterr().err
    assert task.hparams.allow_partial is True
