"""Test-wide settings (no network for timm, a headless matplotlib), the test helpers' import path, and the
shared fixtures.

Helper modules (not tests): ``tests/ctseg_tiny.py`` (a tiny finished grid run), ``tests/data/make_*.py``
(generated data sets in each release's layout: ISPRS, folder, city), ``tests/data/scored.py`` (evaluation crops
put back together). ``tests/data`` is put on ``sys.path`` here, once, so every test imports them by name
(``from make_folder import make_uint16_folder``).
"""

import os
import sys
from pathlib import Path

import pytest

HELPERS = Path(__file__).resolve().parent / "data"
if str(HELPERS) not in sys.path:
    sys.path.insert(0, str(HELPERS))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

# Lightning attaches a stream handler to its loggers when first imported; imported inside a test that captures
# stderr, the handler would keep that test's (later closed) stream and fail every later log line.
import lightning.pytorch  # noqa: E402, F401

#: ``../shared`` beside the repository root (holds the real Dubai data set); absent on some machines.
SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared is absent")
    return SHARED


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Path:
    """The run folder of a tiny finished ``ctseg grid`` run (:func:`ctseg_tiny.tiny_run`), made once per session
    and shared by every test file that asks for it."""
    from ctseg_tiny import tiny_run

    return tiny_run(tmp_path_factory.getbasetemp() / "tiny-grid")


def pytest_collection_modifyitems(config, items):
    """``@pytest.mark.gpu`` tests (declared in pyproject) are skipped, with one reason, where no CUDA device is
    visible; on a GPU machine they run with the rest (``-m gpu`` runs only them)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="gpu: no CUDA device visible")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
