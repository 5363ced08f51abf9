"""CPU cost of the multi-scale contrastive loss against CT's PatchContrastiveLoss, model-free.

    python benchmarks/ms_cost.py [--size 256] [--batch 4] [--repeats 5] [--warmup 2]

Random features shaped like PoolFormer-S12's stages (channels 64/128/320/512 at strides 4/8/16/32) and a blocky
6-class mask; each repeat times one forward + backward of each loss (alternating, so that drift in the machine
affects both equally); the first ``--warmup`` repeats are dropped and the median is printed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import blocky_masks, device_name  # noqa: E402

from ctseg.contrastive import MultiScaleContrastiveLoss, PatchContrastiveLoss

CHANNELS = (64, 128, 320, 512)
STRIDES = (4, 8, 16, 32)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--max-features", type=int, default=10000)
    args = p.parse_args()
    torch.manual_seed(0)
    k = 6
    mask = blocky_masks(args.batch, args.size, k)
    feats = [
        torch.randn(args.batch, c, args.size // s, args.size // s, requires_grad=True)
        for c, s in zip(CHANNELS, STRIDES, strict=True)
    ]
    losses = {
        "ct": PatchContrastiveLoss(CHANNELS, k),
        "ms": MultiScaleContrastiveLoss(CHANNELS, k, max_features=args.max_features),
    }

    def step(name: str) -> float:
        for f in feats:
            f.grad = None
        t0 = time.perf_counter()
        losses[name](feats, mask).backward()
        return time.perf_counter() - t0

    times: dict[str, list[float]] = {name: [] for name in losses}
    for i in range(args.warmup + args.repeats):
        for name in losses:
            t = step(name)
            if i >= args.warmup:
                times[name].append(t)
    ct, ms = statistics.median(times["ct"]), statistics.median(times["ms"])
    stats = losses["ms"].stats
    print(f"device: {device_name(torch.device('cpu'))}")
    print(f"features like PoolFormer-S12 at {args.size}², batch {args.batch}, {args.repeats} repeats")
    print(f"multi-scale views per group {stats['views'].tolist()}, groups {stats['groups'].tolist()}")
    print(f"forward+backward CT (PatchContrastiveLoss): {ct * 1000:.1f} ms")
    print(f"forward+backward MS (MultiScaleContrastiveLoss): {ms * 1000:.1f} ms   ratio MS/CT: {ms / ct:.2f}")


if __name__ == "__main__":
    main()
