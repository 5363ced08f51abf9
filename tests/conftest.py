"""Test-wide settings (no network for timm, a headless matplotlib) and the shared fixtures.

``tests/`` mirrors ``src/ctseg/``: one folder per package (``tests/predict/`` for ``ctseg.predict`` …), and at the
top the tests that cross packages (bands end to end, folder data sets end to end, the package map, configs,
benchmarks). Helpers (not tests) are the package ``tests/helpers`` — ``tests/`` is on pytest's ``pythonpath``
(pyproject), so tests import them as ``from helpers.tiny import TINY_CONFIG``.
"""

import os
import sys
from pathlib import Path

# OpenMP threads that sleep between parallel regions instead of spinning: on a shared CI machine spinning threads
# take the cores from the work (a training step 1.7x slower beside one busy process); on an idle one the suite
# takes about the same time (benchmarks/README.md, "OpenMP threads on a shared machine"). Read when torch loads
# its OpenMP library, so only before torch is imported (make test also sets it for the whole run).
if "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
from helpers.paths import SHARED  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

# Lightning attaches a stream handler to its loggers when first imported; imported inside a test that captures
# stderr, the handler would keep that test's (later closed) stream and fail every later log line.
import lightning.pytorch  # noqa: E402, F401


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared is absent")
    return SHARED


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Path:
    """The run folder of a tiny finished ``ctseg grid`` run (:func:`helpers.tiny.tiny_run`), made once per session
    and shared by every test file that asks for it."""
    from helpers.tiny import tiny_run

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
