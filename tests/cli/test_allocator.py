"""``ctseg.cli.allocator``: glibc's thresholds raised at a command's start — fewer page faults, same results."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

#: Five forwards of pf-tiny (batch 4, 256², one thread) after a warm-up; prints the minor page faults they took.
FORWARDS = """
import resource, sys, torch
from ctseg.cli.allocator import tune_allocator
tuned = tune_allocator()
from ctseg.models import build_model
torch.manual_seed(0)
torch.set_num_threads(1)
model = build_model("pf-tiny", 6, img_size=256).eval()
x = torch.randn(4, 3, 256, 256)
with torch.inference_mode():
    first = model(x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        out = model(x)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
assert torch.equal(first, out)
print(tuned, after - before, float(out.double().sum()))
"""


def _forwards(**env: str) -> tuple[str, int, float]:
    res = subprocess.run([sys.executable, "-c", FORWARDS], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HF_HUB_OFFLINE": "1", **env})  # fmt: skip
    assert res.returncode == 0, res.stderr
    tuned, faults, total = res.stdout.split()
    return tuned, int(faults), float(total)


@pytest.mark.skipif(not GLIBC, reason="mallopt tuning applies to Linux with glibc only")
def test_tuning_cuts_page_faults_and_changes_no_result():
    tuned, faults_on, total_on = _forwards(CTSEG_MALLOC_TUNING="1")
    untuned, faults_off, total_off = _forwards(CTSEG_MALLOC_TUNING="0")
    assert (tuned, untuned) == ("True", "False")
    assert total_on == total_off  # the same numbers, bit for bit
    assert faults_on < 0.6 * faults_off, (faults_on, faults_off)  # measured here: 4,608 vs 14,752


def test_opt_outs_leave_the_allocator_alone():
    code = "from ctseg.cli.allocator import tune_allocator; print(tune_allocator())"
    for env in ({"CTSEG_MALLOC_TUNING": "0"}, {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"}):
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                             env={**os.environ, **env})  # fmt: skip
        assert res.returncode == 0 and res.stdout.strip() == "False", (env, res.stderr)
    plain = {k: v for k, v in os.environ.items() if k not in ("CTSEG_MALLOC_TUNING", "GLIBC_TUNABLES")}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=plain)
    assert res.returncode == 0 and res.stdout.strip() == str(GLIBC)
