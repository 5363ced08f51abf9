"""The docs site builds with every warning an error and every cross-reference resolved (what `make docs` and CI
run), and its command-line page is rendered from the parsers."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys

import pytest
from helpers.paths import REPO


def _text(page) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", page.read_text(encoding="utf-8")))


@pytest.mark.slow  # imports every module of ctseg and renders `ctseg fit --help` three times: ~1 minute
def test_docs_build_without_a_warning_and_render_the_cli_help(tmp_path):
    # inside the test, so the default run (slow deselected) shows no skip; `make docs` installs the extra
    pytest.importorskip("sphinx", reason="the docs extra is not installed (make docs, or pip install -e '.[docs]')")
    pytest.importorskip("myst_parser", reason="the docs extra is not installed (make docs)")
    out = tmp_path / "html"
    build = subprocess.run(
        [sys.executable, "-m", "sphinx", "-E", "-W", "--keep-going", "-n", "-q", "-d", str(tmp_path / "doctrees"),
         str(REPO / "docs"), str(out)],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert build.returncode == 0, build.stdout + build.stderr

    cli = _text(out / "cli.html")
    assert "usage: ctseg predict" in cli
    for flag in ("--ckpt", "--out", "--window", "--overlap", "--skip-existing", "--vector-classes", "--allow-remote"):
        assert flag in cli, flag
    for command in ("demo", "prepare", "export", "vectorize", "grid", "report", "evaluate", "configs"):
        assert f"usage: ctseg {command}" in cli, command
    training = _text(out / "cli-training.html")
    for command in ("fit", "validate", "test"):
        assert f"ctseg {command} --help" in training, command
    assert "--model.scheme" in training and "--trainer.max_steps" in training

    api = _text(out / "api" / "inference.html")
    assert "predict_tile" in api and "WindowOptions" in api
