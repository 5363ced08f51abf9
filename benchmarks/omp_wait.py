"""Training-step time under OpenMP wait policies, on an idle CPU and beside busy processes.

    python benchmarks/omp_wait.py                       # idle, then beside one busy process (2 rounds each)
    python benchmarks/omp_wait.py --burn 0 2 --steps 6  # idle and beside two busy processes

torch's CPU kernels run on a GNU OpenMP thread pool (one thread per core by default). Between parallel regions
its idle threads spin for a while before they sleep (``GOMP_SPINCOUNT``, 300,000 by default): on an idle machine
that saves the wake-up of the next region, on a machine whose cores are also busy with other work the spinning
threads take the cores from the thread doing the work. ``OMP_WAIT_POLICY=PASSIVE`` makes them sleep at once;
``GOMP_SPINCOUNT=N`` spins less. The variable is read when torch loads its OpenMP library, so each variant runs
in its own child process.

Each child times ``--steps`` training steps of pf-paper (PoolFormer + DCSwin, batch 4, 256², 6 classes, fp32, seg
loss, AdamW; glibc's allocator tuned as ``ctseg`` commands tune it) after two warm-up steps: median wall time and
CPU time per step. ``--burn N`` starts N processes that spin a core (``while True: pass``) for the variants'
runs; the variants alternate in each of ``--rounds`` rounds. Prints one JSON object (per burn level: each
variant's step times, and the ratio of each median to the default's), with the machine and load averages.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

#: (name, environment) of each variant; the default is libgomp's own (neither variable set).
VARIANTS = {
    "default": {},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "spin1000": {"GOMP_SPINCOUNT": "1000"},
}


def child(steps: int) -> None:
    """Time ``steps`` training steps; print ``{"wall_ms", "cpu_ms"}`` medians."""
    import torch

    sys.path.insert(0, str(HERE))
    from common import blocky_masks

    from ctseg.cli.allocator import tune_allocator
    from ctseg.models import build_model
    from ctseg.training.seg_loss import SegmentationLoss

    tune_allocator()
    torch.manual_seed(0)
    model = build_model("pf-paper", 6, img_size=256)
    seg = SegmentationLoss()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, y = torch.randn(4, 3, 256, 256), blocky_masks(4, 256, 6)

    def step() -> tuple[float, float]:
        t, c = time.perf_counter(), time.process_time()
        loss = seg(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - t, time.process_time() - c

    for _ in range(2):
        step()
    runs = [step() for _ in range(steps)]
    wall, cpu = zip(*runs, strict=True)
    print(json.dumps({"wall_ms": 1000 * statistics.median(wall), "cpu_ms": 1000 * statistics.median(cpu)}))


def run_variant(name: str, steps: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(VARIANTS[name])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p)
    out = subprocess.run([sys.executable, __file__, "--child", str(steps)], env=env, capture_output=True, text=True,
                         check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--burn", type=int, nargs="+", default=[0, 1], help="busy processes beside the runs (0 1)")
    p.add_argument("--steps", type=int, default=6, help="timed steps per run (6)")
    p.add_argument("--rounds", type=int, default=2, help="rounds of all variants per burn level (2)")
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        child(args.child)
        return
    sys.path.insert(0, str(HERE))
    from common import cpu_model

    result: dict = {"cpu": cpu_model(), "nproc": os.cpu_count(), "steps": args.steps, "levels": {}}
    for burn in args.burn:
        load_before = os.getloadavg()[0]
        burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(burn)]
        try:
            times: dict[str, list[dict]] = {name: [] for name in VARIANTS}
            for rnd in range(args.rounds):
                order = list(VARIANTS) if rnd % 2 == 0 else list(VARIANTS)[::-1]
                for name in order:
                    times[name].append(run_variant(name, args.steps))
        finally:
            for proc in burners:
                proc.kill()
                proc.wait()
        wall = {name: statistics.median(r["wall_ms"] for r in runs) for name, runs in times.items()}
        result["levels"][f"burn{burn}"] = {
            "load_before": round(load_before, 2),
            "load_after": round(os.getloadavg()[0], 2),
            "wall_ms": {name: [round(r["wall_ms"], 1) for r in runs] for name, runs in times.items()},
            "cpu_ms": {name: [round(r["cpu_ms"], 1) for r in runs] for name, runs in times.items()},
            "ratio_to_default": {name: round(wall[name] / wall["default"], 3) for name in VARIANTS},
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
