"""CPU cost of CT: median training-step time of a model with and without the CT loss, in one process.

    python benchmarks/ct_cost.py [--model pf-paper] [--encoder NAME] [--size 256] [--batch 4] [--repeats 10]
                                 [--classes 6] [--loss cl|infonce] [--reduction paper mean] [--threads N]

Each repeat times one full step (forward, seg loss [+ CT loss], backward, AdamW step); CT off and CT on with
each ``--reduction`` (the authors' ``paper`` and ctseg's ``mean``, by default both) alternate so that drift in
the machine affects all equally; the first ``--warmup`` steps of each are dropped. The CT loss runs unclipped
here, so that a clipped value (no gradient under the paper's clip) does not make its backward look free.

glibc's allocator is tuned as every ``ctseg`` command (``ctseg fit`` included) tunes it
(:func:`ctseg.cli.allocator.tune_allocator`; ``CTSEG_MALLOC_TUNING=0`` turns it off). Besides the wall-clock
medians, the process CPU time of each step is reported: on a shared machine, time spent descheduled inflates wall
times at random, CPU time much less. The load average is printed before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import blocky_masks, device_name  # noqa: E402

from ctseg.cli.allocator import tune_allocator
from ctseg.contrastive import PatchContrastiveLoss
from ctseg.models import build_model
from ctseg.training.seg_loss import SegmentationLoss


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="pf-paper")
    p.add_argument("--encoder", default=None, help="timm encoder for the generic presets (e.g. poolformer_s12)")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--loss", default="cl")
    p.add_argument("--classes", type=int, default=6)
    p.add_argument("--reduction", nargs="+", default=["paper", "mean"], choices=["paper", "mean"])
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = p.parse_args()
    tuned = tune_allocator()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    k = args.classes
    model = build_model(args.model, k, encoder=args.encoder, img_size=args.size)
    cts = {r: PatchContrastiveLoss(model.channels, k, loss=args.loss, reduction=r, clip_mode=None)
           for r in args.reduction}  # fmt: skip
    seg = SegmentationLoss()
    params = list(model.parameters()) + [q for ct in cts.values() for q in ct.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-4)
    x = torch.randn(args.batch, 3, args.size, args.size)
    y = blocky_masks(args.batch, args.size, k)

    def step(reduction: str | None) -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        feats = model.encode(x)
        loss = seg(model.decode(feats, x.shape[-2:]), y)
        if reduction is not None:
            loss = loss + cts[reduction](feats, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return time.perf_counter() - t0, time.process_time() - c0

    kinds: list[str | None] = [None, *args.reduction]
    times: dict[str | None, list[float]] = {kind: [] for kind in kinds}
    cpu: dict[str | None, list[float]] = {kind: [] for kind in kinds}
    for i in range(args.warmup + args.repeats):
        for kind in kinds if i % 2 == 0 else kinds[::-1]:  # ABC CBA …: no kind always follows the same one
            t, c = step(kind)
            if i >= args.warmup:
                times[kind].append(t)
                cpu[kind].append(c)
    off, off_cpu = statistics.median(times[None]), statistics.median(cpu[None])
    print(f"device: {device_name(torch.device('cpu'))}, malloc tuning {'on' if tuned else 'off'}")
    name = f"{args.model} ({args.encoder})" if args.encoder else args.model
    print(f"model {name}, {args.batch}×{args.size}², {k} classes, CT loss={args.loss}, {args.repeats} repeats")
    print(f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}")
    print(f"step CT off: {off * 1000:.1f} ms (CPU {off_cpu * 1000:.1f} ms)")
    for r in args.reduction:
        on, on_cpu = statistics.median(times[r]), statistics.median(cpu[r])
        print(
            f"step CT on, reduction={r}: {on * 1000:.1f} ms (CPU {on_cpu * 1000:.1f} ms, CPU ratio "
            f"{on_cpu / off_cpu:.3f})   ratio on/off: {on / off:.3f}"
        )


if __name__ == "__main__":
    main()
