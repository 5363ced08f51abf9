"""Helpers for tests that run ``ctseg fit`` as a subprocess and compare the training losses it logged."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path


def run_fit(config: Path, *extra: str, env: dict[str, str] | None = None, timeout: int = 300):
    """``python -m ctseg.cli fit --config CONFIG EXTRA...`` (no network), its ``CompletedProcess``."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    cmd = [sys.executable, "-m", "ctseg.cli", "fit", "--config", str(config), *extra]
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=timeout)


def train_losses(root: Path) -> dict[int, float]:
    """Step → ``train/loss`` from every ``metrics.csv`` (CSVLogger) under ``root``."""
    losses = {}
    for path in sorted(root.rglob("metrics.csv")):
        with open(path) as fh:
            for row in csv.DictReader(fh):
                if row.get("train/loss"):
                    losses[int(row["step"])] = float(row["train/loss"])
    return losses
