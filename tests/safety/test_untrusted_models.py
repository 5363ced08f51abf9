"""A handed model file is data: its metadata never makes ctseg open a file, and absurd metadata is one line.

Every case starts from a real export of the tiny run and changes one thing in its metadata (or its tensors), as
someone crafting the file would. Given to ``ctseg predict`` (or ``ctseg fit --ckpt_path`` for a training
checkpoint) it must give exit 2, exactly one ``ctseg: error:`` line naming the file, no output, and the file
the metadata names is never opened (a Python audit hook records every ``open`` of it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.tiny import TINY_CONFIG
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from ctseg.checkpoints.files import export_model, load_model
from ctseg.cli.entry import main
from ctseg.errors import CtsegError
from ctseg.safety.documents import json_depth, parse_json

#: Paths the code under test opened while :data:`_WATCH` holds them (a process-wide audit hook, added once).
_OPENED: list[str] = []
_WATCH: set[str] = set()


def _audit(event: str, args: tuple) -> None:
    if event == "open" and _WATCH and args and str(args[0]) in _WATCH:
        _OPENED.append(str(args[0]))


sys.addaudithook(_audit)


@pytest.fixture
def watch():
    """``watch(path)``: record every open of ``path`` until the test ends; returns the list of opens."""
    _OPENED.clear()

    def add(path: Path) -> list[str]:
        _WATCH.add(str(path))
        return _OPENED

    yield add
    _WATCH.clear()
    _OPENED.clear()


@pytest.fixture(scope="module")
def export(tiny, tmp_path_factory) -> Path:
    """A safetensors export of the tiny run's model."""
    ckpt = json.loads((tiny / "results.json").read_text())["checkpoint"]
    return export_model(ckpt, tmp_path_factory.mktemp("export") / "tiny.safetensors")


def _parts(path: Path) -> tuple[dict, dict]:
    with safe_open(str(path), framework="pt") as fh:
        return json.loads(fh.metadata()["ctseg"]), {k: fh.get_tensor(k) for k in fh.keys()}


def _crafted(export: Path, out: Path, change, tensors=None, raw: str | None = None) -> Path:
    """A copy of ``export`` whose ``ctseg`` metadata is ``change(meta)`` (or the text ``raw``)."""
    meta, state = _parts(export)
    change(meta)
    save_file(tensors(state) if tensors else state, str(out), metadata={"ctseg": raw or json.dumps(meta)})
    return out


def _image(tmp_path: Path) -> Path:
    path = tmp_path / "scene.png"
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(path)
    return path


def _predict_refused(tmp_path: Path, model: Path, capsys, *needles: str) -> None:
    out = tmp_path / "out"
    code = main(["predict", "--ckpt", str(model), str(_image(tmp_path)), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("ctseg: error: ") and str(model) in err[0], err
    for needle in needles:
        assert needle in err[0], err
    assert not out.exists() or not any(out.iterdir())


def _set(path: str, value):
    def change(meta: dict) -> None:
        *parents, last = path.split(".")
        node = meta
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value

    return change


def _drop(key: str):
    return lambda meta: meta.pop(key)


def test_the_export_itself_predicts(export, tmp_path, capsys):
    """Guard for the cases below: the untouched export predicts."""
    out = tmp_path / "out"
    assert main(["predict", "--ckpt", str(export), str(_image(tmp_path)), "--out", str(out)]) == 0
    assert (out / "scene_pred.tif").is_file() and (out / "scene_pred.png").is_file()


@pytest.mark.parametrize(
    "key", ["config.pretrained", "config.encoder_kwargs.checkpoint_path", "config.encoder_kwargs.pretrained_cfg"]
)
def test_a_path_in_the_metadata_is_never_opened(export, tmp_path, capsys, watch, key):
    victim = tmp_path / "victim.pth"
    torch.save({"w": torch.zeros(1)}, victim)
    value = {"file": str(victim)} if key.endswith("pretrained_cfg") else str(victim)
    model = _crafted(export, tmp_path / "m.safetensors", _set(key, value))
    opened = watch(victim)
    _predict_refused(tmp_path, model, capsys, key.split(".")[-1])
    assert opened == [], "the file named in the model's metadata was opened"


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (_drop("class_names"), "class_names"),
        (_drop("ignore_index"), "ignore_index"),
        (_set("class_names", "building"), "class_names"),
        (_set("class_names", [1, 2, 3, 4, 5, 6]), "class_names"),
        (_set("config.num_classes", 3e9), "num_classes"),
        (_set("config.num_classes", 3_000_000_000), "num_classes"),
        (_set("config.name", "ctseg.cli.entry.main"), "config.name"),
        (_set("config.img_size", 10**9), "img_size"),
        (_set("config.decode_channels", 10**7), "decode_channels"),
        (_set("eval_classes", [0, 99]), "eval_classes"),
        (_set("data_info.mean", [float("nan")] * 3), "mean"),
        (_set("data_info.std", [0.0, 0.1, 0.1]), "std"),
        (_set("data_info.std", [0.1, 0.1]), "std"),
    ],
)
def test_absurd_metadata_is_one_line(export, tmp_path, capsys, change, needle):
    meta, _ = _parts(export)
    assert meta.get("data_info") is not None  # the tiny run's export stores its data set description
    _predict_refused(tmp_path, _crafted(export, tmp_path / "m.safetensors", change), capsys, needle)


def test_deep_metadata_is_one_line(export, tmp_path, capsys):
    nested = '{"format": "ctseg-model", "config": ' + "[" * 200_000 + "]" * 200_000 + "}"
    model = _crafted(export, tmp_path / "m.safetensors", lambda m: None, raw=nested)
    _predict_refused(tmp_path, model, capsys, "nests")


def test_tensors_of_another_shape_are_one_line(export, tmp_path, capsys):
    def widen(state: dict) -> dict:
        key = next(k for k, v in state.items() if v.dim() == 4)
        return {**state, key: torch.zeros(3, *state[key].shape[1:])}

    model = _crafted(export, tmp_path / "m.safetensors", lambda m: None, tensors=widen)
    _predict_refused(tmp_path, model, capsys, "do not match", "of another shape")


def test_checked_metadata_round_trips(export):
    """The allow-list keeps everything ctseg's own export holds."""
    loaded = load_model(export)
    meta, _ = _parts(export)
    assert loaded.class_names == meta["class_names"] and loaded.ignore_index == meta["ignore_index"]
    assert loaded.model.config["name"] == meta["config"]["name"]


def test_bounded_json():
    assert json_depth('{"a": ["[[[", {"b": 1}]}') == 3
    assert parse_json('{"a": [1, 2]}', "x") == {"a": [1, 2]}
    with pytest.raises(CtsegError, match="nests 100 levels"):
        parse_json("[" * 100 + "]" * 100, "x")
    with pytest.raises(CtsegError, match="over the 10 "):
        parse_json('"' + "a" * 20 + '"', "x", max_bytes=10)


def test_fit_checkpoint_pretrained_path_is_not_opened(tiny, tmp_path, capsys, watch):
    """``ctseg fit --ckpt_path`` merges the checkpoint's hyper-parameters into the run, but never a path."""
    victim = tmp_path / "victim.pth"
    torch.save({"w": torch.zeros(1)}, victim)
    real = json.loads((tiny / "results.json").read_text())["checkpoint"]
    ckpt = torch.load(real, weights_only=True, map_location="cpu")
    ckpt["hyper_parameters"]["pretrained"] = str(victim)
    tampered = tmp_path / "tampered.ckpt"
    torch.save(ckpt, tampered)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY_CONFIG)
    opened = watch(victim)
    code = main(
        [
            "fit",
            "--config",
            str(cfg),
            "--ckpt_path",
            str(tampered),
            "--trainer.max_steps",
            "3",
            "--trainer.default_root_dir",
            str(tmp_path / "run"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert opened == [], "the weights file named in the checkpoint's hyper-parameters was opened"


def test_fit_checkpoint_encoder_kwargs_path_is_one_line(tiny, tmp_path, capsys, watch):
    victim = tmp_path / "victim.pth"
    torch.save({"w": torch.zeros(1)}, victim)
    real = json.loads((tiny / "results.json").read_text())["checkpoint"]
    ckpt = torch.load(real, weights_only=True, map_location="cpu")
    ckpt["hyper_parameters"]["model_options"] = {"encoder_kwargs": {"checkpoint_path": str(victim)}}
    tampered = tmp_path / "tampered.ckpt"
    torch.save(ckpt, tampered)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY_CONFIG)
    opened = watch(victim)
    code = main(
        ["fit", "--config", str(cfg), "--ckpt_path", str(tampered), "--trainer.default_root_dir", str(tmp_path / "run")]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "checkpoint_path" in err[0] and str(tampered) in err[0], err
    assert opened == []
