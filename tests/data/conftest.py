"""Fixtures for the data tests: tiny ISPRS look-alikes written into temporary folders."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.make_isprs import make_potsdam, make_vaihingen

from ctseg.data.prepare import prepare_dataset


@pytest.fixture
def potsdam_src(tmp_path: Path):
    """(source folder, tiles): Potsdam train tile 2_10 and test tile 2_13, 260 × 300 px, release layout."""
    src = tmp_path / "potsdam_download"
    return src, make_potsdam(src, tiles=("2_10", "2_13"))


@pytest.fixture
def vaihingen_src(tmp_path: Path):
    """(source folder, tiles): Vaihingen train area1 and test area2, 240 × 200 px, release layout."""
    src = tmp_path / "vaihingen_download"
    return src, make_vaihingen(src, areas=(1, 2))


@pytest.fixture(scope="session")
def prepared_potsdam(tmp_path_factory) -> Path:
    """A prepared tiny Potsdam folder (100 px crops, stride 100, resized to 64; 9 train + 9 test crops)."""
    base = tmp_path_factory.mktemp("prepared")
    make_potsdam(base / "src", tiles=("2_10", "2_13"))
    return prepare_dataset("potsdam", base / "src", base / "out", crop=100, resize=64, workers=1, progress=False)
