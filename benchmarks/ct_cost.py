"""CPU cost of CT: median training-step time of a model with and without the CT loss, in one process.

    python benchmarks/ct_cost.py [--model pf-paper] [--encoder NAME] [--size 256] [--batch 4] [--repeats 10]
                                 [--classes 6] [--loss cl|infonce] [--reduction paper mean] [--threads N]
                                 [--phases] [--profile] [--processes N]

Each repeat times one full step (forward, seg loss [+ CT loss], backward, AdamW step); CT off and CT on with
each ``--reduction`` (the authors' ``paper`` and ctseg's ``mean``, by default both) run in rotated order (ABC BCA
CAB …: no kind always runs between the others) so that drift in the machine affects all equally; the first
``--warmup`` steps of each are dropped. The CT loss runs unclipped
here, so that a clipped value (no gradient under the paper's clip) does not make its backward look free.

glibc's allocator is tuned as every ``ctseg`` command (``ctseg fit`` included) tunes it
(:func:`ctseg.cli.allocator.tune_allocator`; ``CTSEG_MALLOC_TUNING=0`` turns it off). Besides the wall-clock
medians, the process CPU time of each step is reported: on a shared machine, time spent descheduled inflates wall
times at random, CPU time much less. "per round" is the median of the ratios of the CT-on and CT-off steps of the
same round (taken next to each other), which drift in the machine's speed between rounds does not move. The load
average is printed before and after.

``--processes N`` runs the whole measurement in ``N`` fresh processes, one after the other, and then pools them:
on the shared 2-core machine of benchmarks/README.md the ratio moves between runs by ±1.5–3 %, more than within
one, so one run cannot say on which side of a goal a ratio lies. Each
process's ratios (median over median, and per round) are printed, then the median over the processes and
distribution-free intervals for it (``common.median_interval``): the range, which holds the true median of ``N``
independent processes with probability ``1 − 2^(1−N)`` (93.8 % for five), and from eight processes on the narrower
interval between the ``j``-th smallest and ``j``-th largest (for ten, the 3rd: 89.1 %).

``--phases`` also prints the median wall time of each phase of the step (:data:`common.PHASES`: the model's
forward with the seg loss, CT's forward, the backward, clip and AdamW). ``--profile`` runs instead the CT loss
alone (forward + backward on fixed stage features) under ``torch.profiler`` and prints its operators, how many
of stage 0's sampled patches are distinct, and what the rule itself fixes: the matrix products' FLOPs (the heads',
and InfoNCE's logits; ``torch.utils.flop_counter``) against their time and against one 2048³ ``sgemm`` on the
same threads (the machine's matrix-product rate), the heads' GELU, and the sampling's ``rand`` and ``topk``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PHASES, blocky_masks, device_name, median_interval, train_step  # noqa: E402

from ctseg.cli.allocator import tune_allocator
from ctseg.contrastive import PatchContrastiveLoss
from ctseg.models import build_model
from ctseg.training.seg_loss import SegmentationLoss


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
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
    p.add_argument("--phases", action="store_true", help="also the median of each phase of the step")
    p.add_argument("--profile", action="store_true",
                   help="instead: the CT loss alone under torch.profiler (first --reduction)")  # fmt: skip
    p.add_argument("--processes", type=int, default=1,
                   help="repeat the measurement in this many fresh processes and pool them")  # fmt: skip
    p.add_argument("--ratios-json", default=None, help=argparse.SUPPRESS)  # a child's ratios, for --processes
    args = p.parse_args()
    if args.processes < 1:
        p.error(f"--processes must be at least 1, got {args.processes}")
    if args.processes > 1:
        if args.profile:
            p.error("--profile runs the loss alone once; it takes no --processes")
        if not pooled(args.processes, sys.argv[1:]):
            sys.exit(2)
        return
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

    if args.profile:
        profile_loss(model, cts[args.reduction[0]], x, y)
        return
    kinds: list[str | None] = [None, *args.reduction]
    runs: dict[str | None, list[dict[str, float]]] = {kind: [] for kind in kinds}
    for i in range(args.warmup + args.repeats):
        shift = i % len(kinds)
        for kind in kinds[shift:] + kinds[:shift]:  # rotated: no kind always runs between the others
            run = train_step(model, seg, None if kind is None else cts[kind], opt, x, y)
            if i >= args.warmup:
                runs[kind].append(run)
    times = {kind: [r["total"] for r in rs] for kind, rs in runs.items()}
    cpu = {kind: [r["cpu"] for r in rs] for kind, rs in runs.items()}
    off, off_cpu = statistics.median(times[None]), statistics.median(cpu[None])
    print(f"device: {device_name(torch.device('cpu'))}, malloc tuning {'on' if tuned else 'off'}")
    name = f"{args.model} ({args.encoder})" if args.encoder else args.model
    print(f"model {name}, {args.batch}×{args.size}², {k} classes, CT loss={args.loss}, {args.repeats} repeats")
    print(f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}")
    print(f"step CT off: {off * 1000:.1f} ms (CPU {off_cpu * 1000:.1f} ms)")
    for r in args.reduction:
        on, on_cpu = statistics.median(times[r]), statistics.median(cpu[r])
        paired = statistics.median(a / b for a, b in zip(times[r], times[None], strict=True))
        print(
            f"step CT on, reduction={r}: {on * 1000:.1f} ms (CPU {on_cpu * 1000:.1f} ms, CPU ratio "
            f"{on_cpu / off_cpu:.3f})   ratio on/off: {on / off:.3f}   per round: {paired:.3f}"
        )
    if args.phases:  # medians per phase: where CT's time goes in the step
        for kind in kinds:
            parts = ", ".join(f"{ph} {statistics.median(r[ph] for r in runs[kind]) * 1000:.1f}" for ph in PHASES)
            print(f"phases, {'CT off' if kind is None else f'CT on ({kind})'}: {parts} ms")
    if args.ratios_json:
        ratios = {
            r: {
                "on_off": statistics.median(times[r]) / off,
                "per_round": statistics.median(a / b for a, b in zip(times[r], times[None], strict=True)),
            }
            for r in args.reduction
        }
        Path(args.ratios_json).write_text(json.dumps({"off_ms": off * 1000, "ratios": ratios}))


def pooled(processes: int, argv: list[str]) -> bool:
    """``--processes N``: the measurement in ``N`` fresh processes, one after the other (each prints its own
    report), then each reduction's ratios over the processes: every process's, their median and intervals for it
    (:func:`common.median_interval`). False, after one ``ct_cost.py: error:`` line, when a process fails."""
    child, skip = [], False
    for a in argv:  # the same arguments without --processes (the parser takes no abbreviations)
        if not skip and a != "--processes" and not a.startswith("--processes="):
            child.append(a)
        skip = a == "--processes"
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(processes):
            out = Path(tmp) / f"ratios-{n}.json"
            print(f"--- process {n + 1} of {processes}", flush=True)
            code = subprocess.run([sys.executable, __file__, *child, "--ratios-json", str(out)]).returncode
            if code != 0:
                print(f"ct_cost.py: error: process {n + 1} of {processes} exited with {code} (its output is above)")
                return False
            results.append(json.loads(out.read_text()))
    offs = ", ".join(f"{res['off_ms']:.1f}" for res in results)
    print(f"--- over {processes} processes (CT off {offs} ms)")
    for r in results[0]["ratios"]:
        for stat in ("on_off", "per_round"):
            values = [res["ratios"][r][stat] for res in results]
            print(
                f"reduction={r}, {stat.replace('_', '/' if stat == 'on_off' else ' ')}: "
                f"{' '.join(f'{v:.3f}' for v in values)}   median {statistics.median(values):.3f}, "
                f"{median_interval(values)}"
            )
    return True


def profile_loss(model, ct, x: torch.Tensor, y: torch.Tensor, calls: int = 8) -> None:
    """``--profile``: the CT loss alone (forward + backward on detached stage features), ``torch.profiler``'s
    operators per call after 3 warm-up calls, and how many of stage 0's sampled patches are distinct."""
    from torch.profiler import ProfilerActivity, profile
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad():
        feats = [f.detach().clone().requires_grad_() for f in model.encode(x)]

    def call() -> None:
        ct(feats, y).backward()

    for _ in range(3):
        call()
    start = time.perf_counter()
    for _ in range(calls):
        call()
    print(f"CT loss alone, forward + backward: {(time.perf_counter() - start) / calls * 1000:.1f} ms per call")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            call()
    print(f"operators over {calls} calls (divide by {calls} for one):")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))
    per_call = {e.key: e.self_cpu_time_total / calls / 1000 for e in prof.key_averages()}  # ms

    def ms(*names: str) -> float:
        return sum(per_call.get(n, 0.0) for n in names)

    with FlopCounterMode(display=False) as counter:
        call()
    gflop, products = counter.get_total_flops() / 1e9, ms("aten::mm", "aten::addmm", "aten::bmm")
    print(
        f"fixed by the rule, per call: matrix products {gflop:.2f} GFLOP in {products:.1f} ms "
        f"({gflop / max(products, 1e-9) * 1000:.0f} GFLOP/s; one 2048³ sgemm here: {sgemm_rate():.0f} GFLOP/s), "
        f"GELU {ms('aten::gelu', 'aten::gelu_backward'):.1f} ms, sampling (rand, topk) "
        f"{ms('aten::uniform_', 'aten::topk'):.1f} ms; every operator {ms(*per_call):.1f} ms"
    )
    ct.keep_details = True
    ct(feats, y)
    ct.keep_details = False
    index, valid = ct.details[0]["index"], ct.details[0]["valid"]
    print(f"stage 0: {int(valid.sum())} sampled patches, {index[valid].unique().numel()} distinct")


def sgemm_rate(n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of an ``n × n × n`` float32 matrix product on torch's threads (median of ``repeats``, one warm-up)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


if __name__ == "__main__":
    main()
