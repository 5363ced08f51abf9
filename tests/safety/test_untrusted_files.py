"""A file from someone else is read, never run: malicious pickles and code-naming checkpoints are refused.

Each malicious file carries a pickle whose ``__reduce__`` creates a marker file when unpickled (the test
first proves that an ordinary ``pickle.load`` does run it). Given to every command that reads a checkpoint or
weights file, it must be refused before anything of it runs: the marker never appears, the exit code is 2,
stderr is exactly the one refusal line, and nothing is written. Every checkpoint ctseg writes still loads.
"""

from __future__ import annotations

import io
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.paths import REPO
from helpers.tiny import TINY_CONFIG
from PIL import Image

from ctseg.checkpoints.files import export_model, load_model, read_checkpoint
from ctseg.cli.entry import main
from ctseg.errors import CtsegError
from ctseg.safety.pickles import UnsafeFileError, scan_torch_file

FORMS = ("raw-pickle", "torch-zip", "torch-legacy", "protocol-4")


class _MakesMarker:
    """Unpickling this runs ``open(marker, "w")``: a stand-in for any code an attacker would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class _RunsShell:
    """Unpickling this runs ``os.system("touch marker")`` (the 200-byte file of the issue)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _lightning_like(payload) -> dict:
    return {
        "pytorch-lightning_version": "2.6.0",
        "epoch": 0,
        "global_step": 2,
        "state_dict": {"net.head.weight": torch.zeros(2, 2)},
        "hyper_parameters": {"model": "pf-tiny", "num_classes": 6, "img_size": 64, "extra": payload},
    }


def make_malicious(path: Path, marker: Path, form: str = "torch-zip") -> Path:
    if form == "raw-pickle":
        path.write_bytes(pickle.dumps(_RunsShell(marker)))
    elif form == "torch-zip":
        torch.save(_lightning_like(_MakesMarker(marker)), path)
    elif form == "torch-legacy":
        torch.save(_lightning_like(_MakesMarker(marker)), path, _use_new_zipfile_serialization=False)
    elif form == "protocol-4":  # STACK_GLOBAL: module and name come from the stack
        torch.save(_lightning_like(_MakesMarker(marker)), path, pickle_protocol=4)
    else:
        raise AssertionError(form)
    return path


def refusal(path: Path) -> str:
    return (
        f"ctseg: error: checkpoint {path} holds objects other than tensors and plain data; refusing to load it "
        "(loading it could run code). Re-export it with ctseg export from a trusted copy."
    )


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def evil(tmp_path) -> tuple[Path, Path]:
    marker = tmp_path / "MARKER"
    return make_malicious(tmp_path / "evil.ckpt", marker), marker


def _refused(capsys, path: Path, marker: Path, code: int) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == [refusal(path)], err
    assert not marker.exists(), "the pickle's code ran"


# ---------------------------------------------------------------------------------------------- the payloads
@pytest.mark.parametrize("form", FORMS)
def test_the_payloads_really_run_code_when_unpickled(tmp_path, form):
    """Guard for every test below: each form runs its payload under an unrestricted load."""
    marker = tmp_path / "ran"
    path = make_malicious(tmp_path / "x.pt", marker, form)
    if form == "raw-pickle":
        pickle.loads(path.read_bytes())
    else:
        torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("form", FORMS)
def test_load_model_refuses_every_form(tmp_path, form):
    marker = tmp_path / "MARKER"
    path = make_malicious(tmp_path / "evil.ckpt", marker, form)
    with pytest.raises(UnsafeFileError) as info:
        load_model(path)
    assert f"ctseg: error: {info.value}" == refusal(path)
    assert not marker.exists()


def test_scan_refuses_other_code_carrying_opcodes(tmp_path):
    """INST (protocol 0) and the extension registry fetch callables without GLOBAL."""
    inst = tmp_path / "inst.pt"
    inst.write_bytes(b"(S'touch x'\nios\nsystem\n.")
    ext = tmp_path / "ext.pt"
    ext.write_bytes(b"\x80\x02\x82\x01)R.")  # EXT1 1, empty tuple, REDUCE
    for path in (inst, ext):
        with pytest.raises(UnsafeFileError):
            scan_torch_file(path)


def test_plain_data_naming_code_in_hyper_parameters_is_refused(tmp_path):
    """A pickle-free checkpoint whose hyper-parameters name a class / instantiator for Lightning to import."""
    marker = tmp_path / "MARKER"
    for key, value in (("_class_path", "subprocess.Popen"), ("_instantiator", "os.system")):
        ckpt = _lightning_like("plain")
        ckpt["hyper_parameters"][key] = value
        path = tmp_path / f"{key}.ckpt"
        torch.save(ckpt, path)
        with pytest.raises(UnsafeFileError, match=f"hyper_parameters.{key} = '{value}'"):
            load_model(path)
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------- memo renumbering
MEMO_LAYOUTS = ("raw-pickle", "torch-zip", "torch-legacy")


def _unicode(text: str) -> bytes:
    """BINUNICODE: a str pushed on the unpickler's stack."""
    data = text.encode()
    return b"X" + len(data).to_bytes(4, "little") + data


def memo_renumbering_pickle(module: str, name: str, decoy_module: str, decoy_name: str, tail: bytes) -> bytes:
    """A protocol-4 pickle whose ``STACK_GLOBAL`` is ``module.name`` to Python's unpickler but
    ``decoy_module.decoy_name`` to a scanner that numbers ``MEMOIZE`` after the largest slot (max + 1) instead of
    at ``len(memo)``: ``BINPUT 1`` stores the decoy at slot 1 (one slot in use), the following ``MEMOIZE``
    stores the real module at ``len(memo)`` = 1 — overwriting it — where max + 1 would have used slot 2; the same
    again for the name at slot 2; then ``BINGET 1``, ``BINGET 2``, ``STACK_GLOBAL`` and ``tail``."""
    return (
        b"\x80\x04"
        + _unicode(decoy_module) + b"q\x01"  # BINPUT 1
        + _unicode(module) + b"\x94"  # MEMOIZE: slot len(memo) = 1
        + _unicode(decoy_name) + b"q\x02"  # BINPUT 2
        + _unicode(name) + b"\x94"  # MEMOIZE: slot len(memo) = 2
        + b"h\x01h\x02\x93"  # BINGET 1, BINGET 2, STACK_GLOBAL
        + tail
    )  # fmt: skip


def memo_bypass(marker: Path) -> bytes:
    """``open(marker, "w")`` to the unpickler, ``torch.FloatStorage`` to a max + 1 scanner (issue 27)."""
    return memo_renumbering_pickle(
        "builtins", "open", "torch", "FloatStorage", _unicode(str(marker)) + _unicode("w") + b"\x86R."
    )


def _torch_zip(path: Path, data_pkl: bytes) -> Path:
    """A zip laid out as ``torch.save`` writes it, around ``data_pkl``."""
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", data_pkl)
        zf.writestr("archive/byteorder", "little")
        zf.writestr("archive/version", "3\n")
    return path


def _torch_legacy(path: Path, obj_pkl: bytes) -> Path:
    """The legacy ``torch.save`` layout: magic number, protocol, system info, ``obj_pkl``, storage keys."""
    import sys

    from torch.serialization import MAGIC_NUMBER, PROTOCOL_VERSION

    info = {"protocol_version": PROTOCOL_VERSION, "little_endian": sys.byteorder == "little",
            "type_sizes": {"short": 2, "int": 4, "long": 4}}  # fmt: skip
    head = b"".join(pickle.dumps(x, protocol=2) for x in (MAGIC_NUMBER, PROTOCOL_VERSION, info))
    path.write_bytes(head + obj_pkl + pickle.dumps([], protocol=2))
    return path


def write_layout(path: Path, stream: bytes, layout: str) -> Path:
    if layout == "raw-pickle":
        path.write_bytes(stream)
        return path
    return _torch_zip(path, stream) if layout == "torch-zip" else _torch_legacy(path, stream)


@pytest.mark.parametrize("layout", MEMO_LAYOUTS)
def test_the_memo_renumbering_payload_really_runs(tmp_path, layout):
    marker = tmp_path / "ran"
    path = write_layout(tmp_path / "x.pt", memo_bypass(marker), layout)
    if layout == "raw-pickle":
        pickle.loads(path.read_bytes())
    else:
        torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("layout", MEMO_LAYOUTS)
def test_memo_renumbering_is_refused_with_one_line(tmp_path, layout, capfd):
    """The scan numbers the memo as Python does, so the STACK_GLOBAL is ``builtins.open``: refused before
    loading, with the documented line only (no torch warning, no 'cannot be read')."""
    marker = tmp_path / "MARKER"
    path = write_layout(tmp_path / "evil.pt", memo_bypass(marker), layout)
    with pytest.raises(UnsafeFileError):
        scan_torch_file(path)
    with pytest.raises(UnsafeFileError) as info:
        load_model(path)
    assert f"ctseg: error: {info.value}" == refusal(path)
    capfd.readouterr()
    assert main(["export", str(path), str(tmp_path / "out.safetensors")]) == 2
    captured = capfd.readouterr()
    assert captured.err.strip().splitlines() == [refusal(path)], captured.err
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()


def test_the_scan_follows_pythons_memo_numbering_not_a_guess(tmp_path):
    """The mirror image: to Python the global is ``collections.OrderedDict`` (allowed), to a max + 1 count
    ``os.system``. The scan judges what the unpickler would import, so the file passes."""
    stream = memo_renumbering_pickle("collections", "OrderedDict", "os", "system", b")R.")
    assert pickle.loads(stream) == {}
    scan_torch_file(_torch_legacy(tmp_path / "fine.pt", stream))


@pytest.mark.parametrize(
    "stream",
    [
        b"\x80\x04h\x05h\x06\x93)R.",  # BINGET of memo slots never written
        b"\x80\x02U\x08builtinsU\x04open\x93)R.",  # SHORT_BINSTRING operands: their type depends on the unpickler
        b"\x80\x04K\x01K\x02\x93)R.",  # operands that are not strings
        b"\x80\x04\x93)R.",  # STACK_GLOBAL on an empty stack
        b"\x80\x04" + _unicode("builtins") + _unicode("open") + b"(0\x93)R.",  # MARK, POP drops it: builtins.open
    ],
)
def test_what_the_scan_cannot_be_sure_of_is_refused(tmp_path, stream):
    path = tmp_path / "odd.pt"
    path.write_bytes(stream)
    with pytest.raises(UnsafeFileError):
        scan_torch_file(path)


def test_report_refuses_a_memo_renumbering_checkpoint(tmp_path, tiny, capfd):
    """``ctseg report`` on a run whose checkpoint is such a file: one refusal line, exit 2, nothing written."""
    marker = tmp_path / "MARKER"
    runs = tmp_path / "runs"
    real = json.loads((tiny / "results.json").read_text())
    for scheme in ("none", "ct-cl"):
        run = runs / scheme
        run.mkdir(parents=True)
        ckpt = _torch_zip(run / "best.ckpt", memo_bypass(marker))
        (run / "results.json").write_text(json.dumps({**real, "scheme": scheme, "checkpoint": str(ckpt)}))
    capfd.readouterr()
    code = main(["report", str(runs), "--out", str(tmp_path / "report"), "--device", "cpu"])
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 2 and err == [refusal(runs / "ct-cl" / "best.ckpt")], err  # the first found
    assert not marker.exists() and not (tmp_path / "report").exists()


# ---------------------------------------------------------------------------------------------- commands
def test_predict_refuses(tmp_path, evil, capsys):
    path, marker = evil
    image = tmp_path / "image.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(image)
    before = _tree(tmp_path)
    code = main(["predict", "--ckpt", str(path), str(image), "--out", str(tmp_path / "o")])
    _refused(capsys, path, marker, code)
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("form", FORMS)
def test_export_refuses(tmp_path, form, capsys):
    marker = tmp_path / "MARKER"
    path = make_malicious(tmp_path / "evil.pt", marker, form)
    code = main(["export", str(path), str(tmp_path / "out.safetensors")])
    _refused(capsys, path, marker, code)
    assert not (tmp_path / "out.safetensors").exists()


def test_report_refuses_a_runs_checkpoint(tmp_path, tiny, capsys):
    marker = tmp_path / "MARKER"
    runs = tmp_path / "runs"
    real = json.loads((tiny / "results.json").read_text())
    for scheme in ("none", "ct-cl"):
        run = runs / scheme
        run.mkdir(parents=True)
        ckpt = make_malicious(run / "best.ckpt", marker) if scheme == "ct-cl" else Path(real["checkpoint"])
        (run / "results.json").write_text(json.dumps({**real, "scheme": scheme, "checkpoint": str(ckpt)}))
    code = main(["report", str(runs), "--out", str(tmp_path / "report"), "--device", "cpu"])
    _refused(capsys, runs / "ct-cl" / "best.ckpt", marker, code)
    assert not (tmp_path / "report").exists()


def test_report_does_not_call_a_foreign_data_class(tmp_path, tiny, capsys):
    """results.json names the data module to rebuild for figures: only ctseg's own are imported and called."""
    marker = tmp_path / "MARKER"
    runs = tmp_path / "runs"
    real = json.loads((tiny / "results.json").read_text())
    data = {"class_path": "subprocess.run", "init_args": {"args": ["touch", str(marker)]}}
    for scheme in ("none", "ct-cl"):
        (runs / scheme).mkdir(parents=True)
        (runs / scheme / "results.json").write_text(json.dumps({**real, "scheme": scheme, "data": data}))
    assert main(["report", str(runs), "--out", str(tmp_path / "report"), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "skipped qualitative.png" in out and "'subprocess.run' is not one of ctseg's" in out
    assert not marker.exists()


def _tiny_config(tmp_path: Path, extra: str = "") -> Path:
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY_CONFIG + extra)
    return cfg


@pytest.mark.parametrize("command", ["validate", "test", "fit"])
def test_lightning_commands_refuse(tmp_path, evil, command, capsys):
    path, marker = evil
    cfg = _tiny_config(tmp_path)
    root = tmp_path / "root"
    argv = [command, "--config", str(cfg), "--ckpt_path", str(path), "--trainer.default_root_dir", str(root)]
    _refused(capsys, path, marker, main(argv))
    assert not root.exists()


def test_ckpt_path_from_a_config_file_and_a_planted_last_are_refused(tmp_path, capsys):
    marker = tmp_path / "MARKER"
    path = make_malicious(tmp_path / "evil.ckpt", marker)
    cfg = _tiny_config(tmp_path, f"ckpt_path: {path}\n")
    root = tmp_path / "root"
    code = main(["validate", "--config", str(cfg), "--trainer.default_root_dir", str(root)])
    _refused(capsys, path, marker, code)
    # `--ckpt_path last` resumes from <root>/checkpoints/last.ckpt: someone else's file there is refused too
    assert not root.exists()
    (root / "checkpoints").mkdir(parents=True)
    planted = make_malicious(root / "checkpoints" / "last.ckpt", marker, "torch-legacy")
    code = main(["fit", "--config", str(_tiny_config(tmp_path)), "--ckpt_path", "last",
                 "--trainer.default_root_dir", str(root)])  # fmt: skip
    _refused(capsys, planted, marker, code)
    assert sorted(p.name for p in root.rglob("*")) == ["checkpoints", "last.ckpt"]


def test_weights_only_false_is_refused(tmp_path, tiny, capsys):
    ckpt = next(tiny.rglob("last.ckpt"))
    argv = ["validate", "--config", str(_tiny_config(tmp_path)), "--ckpt_path", str(ckpt), "--weights_only", "false"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--weights_only false" in err[0]


def test_encoder_weights_file_is_refused(tmp_path, capsys):
    marker = tmp_path / "MARKER"
    weights = tmp_path / "encoder.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "args": _MakesMarker(marker)}, weights)
    argv = ["fit", "--config", str(_tiny_config(tmp_path)), "--model.pretrained", str(weights),
            "--trainer.default_root_dir", str(tmp_path / "root")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"ctseg: error: weights file {weights} holds objects other than")
    assert "refusing to load it (loading it could run code)" in err[0]
    assert not marker.exists()


def test_unreadable_checkpoint_message_is_not_cut_mid_word(tmp_path, capsys):
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"PK\x03\x04" + b"not really a zip " * 40)
    cfg = _tiny_config(tmp_path)
    assert main(["fit", "--config", str(cfg), "--ckpt_path", str(junk)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(junk) in err[0]
    words = err[0].replace("(", " ").replace(")", " ").split()
    assert all(w.isascii() or w == "…" for w in words)
    assert err[0].rstrip().endswith((")", "?", "."))  # a whole sentence, not one cut at a fixed length


def test_decoded_cache_with_a_pickle_inside_is_refused(tmp_path):
    from ctseg.data.decoded import DecodedCrops

    marker = tmp_path / "MARKER"
    images = tmp_path / "images.npy"
    arr = np.empty(1, dtype=object)
    arr[0] = _MakesMarker(marker)
    np.save(images, arr, allow_pickle=True)
    masks = tmp_path / "masks.npy"
    np.save(masks, np.zeros((1, 4, 4), np.uint8))
    with pytest.raises(CtsegError, match=r"decoded cache .*images.npy is unreadable"):
        DecodedCrops(images, masks, 1)
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------- what we write
def test_every_checkpoint_ctseg_writes_still_loads(tmp_path):
    root = tmp_path / "run"
    argv = ["fit", "--config", str(_tiny_config(tmp_path)), "--trainer.default_root_dir", str(root),
            "--trainer.max_steps", "4", "--step_checkpoint.every_n_train_steps", "2"]  # fmt: skip
    assert main(argv) == 0
    written = sorted((root / "checkpoints").glob("*.ckpt"))
    names = {p.name.split("-")[0].split(".")[0] for p in written}
    assert {"best", "step", "last"} <= names, names
    x = torch.randn(1, 3, 64, 64)
    for ckpt in written:
        scan_torch_file(ckpt)
        assert load_model(ckpt).model(x).shape == (1, 6, 64, 64)
    out = export_model(written[0], tmp_path / "model.safetensors")
    assert read_checkpoint(out)["class_names"] == load_model(written[0]).class_names
    with torch.no_grad():
        torch.testing.assert_close(load_model(out).model(x), load_model(written[0]).model(x), rtol=0, atol=0)
    # validate from each kind, and extend the run from last: Lightning's own loads pass too
    assert main(["validate", "--config", str(_tiny_config(tmp_path)), "--ckpt_path", str(written[0]),
                 "--trainer.default_root_dir", str(root)]) == 0  # fmt: skip
    assert main([*argv[:-4], "--trainer.max_steps", "6", "--ckpt_path", "last"]) == 0


def test_version_1_exports_still_load(tmp_path, tiny):
    """The ``torch.save`` dict exports of earlier ctseg (format version 1) load safely and predict the same."""
    ckpt = next(tiny.rglob("last.ckpt"))
    data = read_checkpoint(ckpt)
    loaded = load_model(ckpt)
    v1 = {
        "format": "ctseg-model", "version": 1, "config": {"name": "pf-tiny", "num_classes": 6, "img_size": 64},
        "state_dict": loaded.model.state_dict(), "dataset": "synthetic", "class_names": loaded.class_names,
        "ignore_index": 255, "eval_classes": data["hyper_parameters"]["eval_classes"],
    }  # fmt: skip
    buf = io.BytesIO()
    torch.save(v1, buf)
    (tmp_path / "old.pt").write_bytes(buf.getvalue())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(load_model(tmp_path / "old.pt").model(x), loaded.model(x), rtol=0, atol=0)
    out = tmp_path / "new.safetensors"
    assert main(["export", str(tmp_path / "old.pt"), str(out)]) == 0  # converting an old export
    assert main(["export", str(tmp_path / "old.pt"), str(out)]) == 2  # exists: --overwrite to replace
    assert main(["export", str(tmp_path / "old.pt"), str(out), "--overwrite"]) == 0


def test_committed_models_load_and_match_their_hashes():
    """results/dubai/models/*.safetensors are listed with their SHA-256 in results/dubai/README.md."""
    import hashlib

    repo = REPO
    readme = (repo / "results" / "dubai" / "README.md").read_text()
    models = sorted((repo / "results" / "dubai" / "models").glob("*.safetensors"))
    assert len(models) == 4
    for path in models:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert digest in readme, f"{path.name}: SHA-256 {digest} is not the one listed"
        loaded = load_model(path)
        assert loaded.dataset == "dubai" and len(loaded.class_names) == loaded.model(torch.zeros(1, 3, 64, 64)).shape[1]
    assert not list((repo / "results" / "dubai" / "models").glob("*.pt")), "old pickled exports are converted"
