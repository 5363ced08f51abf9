"""The paths tests need, defined once."""

from pathlib import Path

#: The repository root.
REPO = Path(__file__).resolve().parents[2]
#: ``tests/``.
TESTS = REPO / "tests"
#: ``../shared`` beside the repository root (holds the real Dubai data set); absent on some machines.
SHARED = REPO.parent / "shared"
#: The real Dubai aerial set.
DUBAI_DIR = SHARED / "data" / "dubai-aerial"
