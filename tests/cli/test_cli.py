"""The ``ctseg`` command end to end on tiny settings, and its one-line errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.tiny import tiny_config

from ctseg.cli.entry import main


def _tiny(root: Path, scheme: str) -> str:
    """The shared tiny config (:func:`helpers.tiny.tiny_config`) writing under ``root``."""
    return tiny_config(scheme).replace("trainer:\n", f"trainer:\n  default_root_dir: {root}\n", 1)


@pytest.mark.parametrize("scheme", ["none", "ct-cl", "ct-infonce", "mscs"])
def test_fit_tiny_config(tmp_path, scheme):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(_tiny(tmp_path / "runs", scheme))
    assert main(["fit", "--config", str(cfg)]) == 0
    ckpts = list((tmp_path / "runs").rglob("last.ckpt"))
    assert ckpts, "fit must write a last checkpoint"
    metrics = list((tmp_path / "runs").rglob("metrics.csv"))
    assert metrics and "val/miou" in metrics[0].read_text()


def test_validate_from_checkpoint(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(_tiny(tmp_path / "runs", "ct-cl"))
    assert main(["fit", "--config", str(cfg)]) == 0
    ckpt = next((tmp_path / "runs").rglob("last.ckpt"))
    assert main(["validate", "--config", str(cfg), "--ckpt_path", str(ckpt)]) == 0


def test_model_options_replaced_by_the_checkpoint_are_warned_about(tmp_path, capsys):
    """LightningCLI applies a --ckpt_path file's model settings over the command line: say so, per option."""
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(_tiny(tmp_path / "runs", "ct-cl"))
    assert main(["fit", "--config", str(cfg)]) == 0
    ckpt = next((tmp_path / "runs").rglob("last.ckpt"))
    capsys.readouterr()
    argv = ["validate", "--config", str(cfg), "--ckpt_path", str(ckpt), "--model.model", "uf-paper",
            "--model.lr", "0.5", "--model.scheme", "ct-cl"]  # fmt: skip
    assert main(argv) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ctseg: warning:")]
    assert len(warnings) == 2, warnings  # --model.scheme ct-cl agrees with the checkpoint
    assert warnings[0].startswith("ctseg: warning: --model.model uf-paper is replaced by the checkpoint's 'pf-tiny'")
    assert "--model.lr 0.5 is replaced by the checkpoint's" in warnings[1] and str(ckpt) in warnings[1]


def test_demo_quick(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| baseline |" in printed and "| ct-cl |" in printed and "mIoU" in printed
    data = json.loads((out / "metrics.json").read_text())
    assert set(data["runs"]) == {"baseline", "ct-cl"}
    for run in data["runs"].values():
        assert 0.0 <= run["miou"] <= 1.0 and len(run["iou"]) == 6
        assert run["train_seconds"] > 0 and set(run["load_1min"]) == {"before", "after"}
        assert all(v is None or v >= 0 for v in run["load_1min"].values())
    machine = data["machine"]
    assert machine["cpus"] >= 1 and machine["torch_threads"] >= 1 and machine["device"]
    assert f"threads, load {data['runs']['ct-cl']['load_1min']['before']}" in printed
    for name in ("predictions.png", "curves.png", "baseline.ckpt", "ct-cl.ckpt"):
        assert (out / name).stat().st_size > 1000
    assert not [p for p in out.iterdir() if ".tmp" in p.name]


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["fit", "--config", "no/such/file.yaml"], "no/such/file.yaml"),
        (["fit", "--model.model", "nonexistent-net", "--data", "ctseg.data.SyntheticDataModule"], "nonexistent-net"),
        (["fit", "--model.scheme", "magic", "--data", "ctseg.data.SyntheticDataModule"], "magic"),
        (["fit", "--model.bogus_key", "1", "--data", "ctseg.data.SyntheticDataModule"], "bogus_key"),
        (["prepare", "atlantis", "--src", ".", "--dst", "x"], "atlantis"),
    ],
)
def test_bad_input_is_one_line_exit_2(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "x").exists()


def test_demo_unwritable_output(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["demo", "--quick", "--out", str(blocker / "sub")]) == 2
    err = capsys.readouterr().err
    assert str(blocker) in err and len(err.strip().splitlines()) == 1


def test_console_script_help():
    exe = Path(sys.executable).with_name("ctseg")
    res = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "demo" in res.stdout and "prepare" in res.stdout


def test_outputs_get_normal_file_modes(tmp_path):
    import os
    import stat

    from ctseg.io import write_json_atomic

    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "x.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.json").stat().st_mode) == 0o644
