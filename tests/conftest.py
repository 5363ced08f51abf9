"""Test-wide settings: no network for timm, deterministic and small thread counts."""

import os
from pathlib import Path

import pytest

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
