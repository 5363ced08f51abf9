"""Time ``torch.exp`` on 2.6 M float32 values by argument range (why masked logits never go through ``exp``).

    python benchmarks/exp_underflow.py [--threads 1] [--repeats 10]

On some CPUs arguments below the fp32 underflow limit (≈ −87.3, results that are denormal or 0) take a slow
path. ``ctseg.contrastive`` therefore never feeds ``exp`` a masked −1e9 logit (``masked_logsumexp`` and the fused
InfoNCE floor every argument at −80).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_name  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    shape = (5, 512, 1025)  # the InfoNCE logits of one CT stage: K classes × queries × (1 + negatives)
    cases = {
        "uniform in [-20, 0]": torch.rand(shape) * -20,
        "-80 (floor used)": torch.full(shape, -80.0),
        "-90 (denormal results)": torch.full(shape, -90.0),
        "-1e9 (a masked logit)": torch.full(shape, -1e9),
    }
    print(f"device: {device_name(torch.device('cpu'))}; exp over {torch.Size(shape).numel():,} values")
    base = None
    for name, x in cases.items():
        x.exp()
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            x.exp()
            times.append(time.perf_counter() - t0)
        ms = statistics.median(times) * 1000
        base = base or ms
        print(f"  {name:<24} {ms:8.2f} ms   ×{ms / base:.1f}")


if __name__ == "__main__":
    main()
