"""Extra validation time of the boundary metrics (issue 18): one validation batch, the model's forward pass vs
the region metrics' and the boundary metrics' updates, in one process.

    python benchmarks/boundary_cost.py [--batch 8] [--size 512] [--model pf-tiny] [--repeats 5] [--json OUT]

Masks: 6 classes, realistic edges (the synthetic aerial scenes' labels); the "prediction" is the truth shifted
by two pixels with 10 % of 8-pixel blocks relabelled, so bands and contours are neither empty nor everywhere.
Times are medians of ``--repeats`` after one warm-up call.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_name, emit, median, time_call  # noqa: E402

from ctseg.data.synthetic import SyntheticAerialDataset  # noqa: E402
from ctseg.evaluation.metrics import BoundaryMetrics, SegmentationMetrics  # noqa: E402
from ctseg.models import build_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--model", default="pf-tiny")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    dev = torch.device(args.device)
    data = SyntheticAerialDataset(args.batch, size=args.size, seed=0, split="val")
    truth = torch.stack([data[i]["mask"] for i in range(args.batch)]).long().to(dev)
    g = torch.Generator().manual_seed(0)
    blocks = torch.rand(args.batch, args.size // 8, args.size // 8, generator=g) < 0.1
    blocks = blocks.repeat_interleave(8, 1).repeat_interleave(8, 2).to(dev)
    noise = torch.randint(0, 6, truth.shape, generator=g).to(dev)
    pred = torch.where(blocks, noise, torch.roll(truth, 2, dims=2))
    pred = torch.where(pred == 255, torch.zeros_like(pred), pred)
    x = torch.randn(args.batch, 3, args.size, args.size, device=dev)
    model = build_model(args.model, 6, img_size=args.size).to(dev).eval()
    region = SegmentationMetrics(6, eval_classes=(0, 1, 2, 3, 4)).to(dev)
    b3 = BoundaryMetrics(6, 3, eval_classes=(0, 1, 2, 3, 4)).to(dev)
    b135 = BoundaryMetrics(6, [3, 1, 5], eval_classes=(0, 1, 2, 3, 4)).to(dev)

    def forward():
        with torch.no_grad():
            model(x).argmax(1)

    calls = {
        "forward + argmax": forward,
        "region metrics update": lambda: region.update(pred, truth),
        "boundary update, d=3": lambda: b3.update(pred, truth),
        "boundary update, d=3,1,5": lambda: b135.update(pred, truth),
    }
    times = {}
    for name, fn in calls.items():
        fn()
        times[name] = median([time_call(fn, dev) for _ in range(args.repeats)])
    fwd = times["forward + argmax"]
    result = {
        "device": device_name(dev),
        "model": args.model,
        "batch": args.batch,
        "size": args.size,
        "seconds": {k: round(v, 4) for k, v in times.items()},
        "boundary_d3_vs_forward": round(times["boundary update, d=3"] / fwd, 4),
        "boundary_d135_vs_forward": round(times["boundary update, d=3,1,5"] / fwd, 4),
        "scores_d3": {"mbiou": float(b3.compute()["mbiou"]), "mbf1": float(b3.compute()["mbf1"])},
    }
    emit(result, args.json)


if __name__ == "__main__":
    main()
