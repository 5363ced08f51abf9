"""``ctseg fit | validate | test``: help a user can read, short data-module names, quiet and fully logged runs."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys

import yaml
from helpers.tiny import tiny_config

from ctseg.cli.entry import main
from ctseg.training.cli_help import plain_text


def _run(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            code = main(argv)
        except SystemExit as exit_info:  # --help and --print_config exit
            code = exit_info.code or 0
    return code, out.getvalue()


def test_plain_text_drops_sphinx_markup():
    text = (":func:`~ctseg.data.prepare.prepare_dataset` reads ``manifest.json``; :class:`ctseg.data.DatasetInfo`, "
            ":mod:`the data sets <ctseg.data.sets>`, :py:meth:`~a.B.c`")  # fmt: skip
    assert plain_text(text) == "prepare_dataset reads manifest.json; ctseg.data.DatasetInfo, the data sets, c"


def test_fit_help_puts_ctseg_first_names_its_data_modules_and_is_plain_text():
    code, out = _run(["fit", "--help"])
    assert code == 0
    assert out.startswith("usage: ctseg fit [-c CONFIG|NAME]") and out.index("\n\n") < 400  # a short usage
    assert out.index("--model.model") < out.index("--data CONFIG") < out.index("--trainer.accelerator")
    for name in ("FolderDataModule", "PotsdamDataModule", "DubaiDataModule", "LoveDADataModule", "UAVidDataModule"):
        assert f"ctseg.data.{name}" in out
    assert not any(markup in out for markup in (":func:", ":class:", ":mod:", ":meth:", "``"))
    code, out = _run(["test", "--help"])
    assert code == 0 and out.startswith("usage: ctseg test") and "evaluation split" in out


def test_data_modules_take_their_short_names():
    code, out = _run(["fit", "--data", "SyntheticDataModule", "--data.image_size", "64", "--print_config"])
    assert code == 0
    data = yaml.safe_load(out)["data"]
    assert data["class_path"] == "ctseg.data.SyntheticDataModule" and data["init_args"]["image_size"] == 64


def test_a_fit_prints_no_third_party_tips_and_logs_csv_and_tensorboard(tmp_path):
    """A normal fit and test, as a user runs them: no advert, no notice about the libraries' own internals;
    CSV and TensorBoard logs in the run folder; ``test`` says which split it scores."""
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(tiny_config())
    root = tmp_path / "run"
    common = ["--config", str(cfg), "--trainer.default_root_dir", str(root)]
    fit = subprocess.run([sys.executable, "-m", "ctseg.cli", "fit", *common], capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert fit.returncode == 0, fit.stderr
    test = subprocess.run([sys.executable, "-m", "ctseg.cli", "test", *common, "--ckpt_path", "last"],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert test.returncode == 0, test.stderr
    printed = fit.stdout + fit.stderr + test.stdout + test.stderr
    for noise in ("💡", "litlogger", "LeafSpec", "skip_none", "tensorboardX", "DeprecationWarning", "FutureWarning"):
        assert noise not in printed, noise
    assert "ctseg test: scoring split" in test.stdout + test.stderr
    assert len(list((root / "lightning_logs").rglob("metrics.csv"))) == 2  # the fit's and the test's
    assert list((root / "tensorboard").rglob("events.out.tfevents.*"))
    assert (root / "lightning_logs" / "version_0" / "config.yaml").is_file()
