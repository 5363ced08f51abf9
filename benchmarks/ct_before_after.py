"""CT cost before / after a change: another checkout's ``ctseg.contrastive`` against this one's, in one process.

    python benchmarks/ct_before_after.py --before /path/to/other/checkout [--loss cl|infonce]
                                         [--reduction paper] [--part loss|step] [--repeats 12] [--threads 1]
                                         [--phases]

``--part loss`` times the CT loss alone (forward + backward) on fixed pf-paper stage features (batch 4, 256²,
6 classes); ``--part step`` times the whole training step as ``ct_cost.py`` does, CT off / before / after. After a
warm-up the kinds run in rotated order (AB BA … for two kinds; ABC BCA CAB … for three), so drift on a shared
machine hits all alike and no kind always runs between the other two; the two losses share their head weights and
draw the same samples, and the script first checks that they give the same value and feature gradients. The other
checkout's ``src/ctseg/contrastive`` is copied to a temporary package (it imports no other part of ctseg). Medians
of wall and process CPU time, and "per round": the median ratio to the first kind's time of the same round.
``--phases`` (with ``--part step``) also prints each kind's median phases (:data:`common.PHASES`). glibc's
allocator is tuned as ``ctseg`` commands do.

The loss alone runs with its data warm in the caches; in the step the model's activations have evicted it, so a
change that moves memory traffic rather than removing it can show in ``--part loss`` and not in ``--part step``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PHASES, blocky_masks, train_step  # noqa: E402

from ctseg.cli.allocator import tune_allocator
from ctseg.contrastive import PatchContrastiveLoss
from ctseg.models import build_model
from ctseg.training.seg_loss import SegmentationLoss


def load_before(checkout: Path, workdir: Path) -> type:
    """The other checkout's ``PatchContrastiveLoss``, imported as the package ``ct_before``."""
    dst = workdir / "ct_before"
    shutil.copytree(checkout / "src" / "ctseg" / "contrastive", dst)
    for py in dst.glob("*.py"):
        py.write_text(py.read_text().replace("ctseg.contrastive", "ct_before"))
    sys.path.insert(0, str(workdir))
    import ct_before  # noqa: PLC0415

    return ct_before.PatchContrastiveLoss


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", type=Path, required=True, help="a checkout of ctseg (its src/ctseg/contrastive)")
    p.add_argument("--loss", default="cl", choices=["cl", "infonce"])
    p.add_argument("--reduction", default="paper", choices=["paper", "mean"])
    p.add_argument("--part", default="loss", choices=["loss", "step"])
    p.add_argument("--repeats", type=int, default=12)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--phases", action="store_true", help="with --part step: each kind's median phases")
    args = p.parse_args()
    tune_allocator()
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        before_cls = load_before(args.before, Path(tmp))
        torch.manual_seed(0)
        model = build_model("pf-paper", 6, img_size=256)
        opts = {"loss": args.loss, "reduction": args.reduction, "clip_mode": None}
        losses = {
            "before": before_cls(model.channels, 6, **opts),
            "after": PatchContrastiveLoss(model.channels, 6, **opts),
        }
        losses["after"].load_state_dict(losses["before"].state_dict())
        x, y = torch.randn(4, 3, 256, 256), blocky_masks(4, 256, 6)
        with torch.no_grad():
            feats = [f.detach().clone().requires_grad_() for f in model.encode(x)]
        seg = SegmentationLoss()
        params = [q for m in (model, *losses.values()) for q in m.parameters()]
        opt = torch.optim.AdamW(params, lr=1e-4)

        def run(kind: str | None) -> dict[str, float] | None:
            """One call of the loss alone, or one training step (then its phases)."""
            if args.part == "loss":
                for f in feats:
                    f.grad = None
                losses[kind](feats, y).backward()
                return None
            return train_step(model, seg, None if kind is None else losses[kind], opt, x, y)

        check = {}
        for kind in losses:
            for f in feats:
                f.grad = None
            torch.manual_seed(1)
            value = losses[kind](feats, y)
            value.backward()
            check[kind] = (float(value.detach()), [f.grad.clone() for f in feats])
        pairs = zip(check["before"][1], check["after"][1], strict=True)
        rel = max(float((a - b).abs().max() / a.abs().max()) for a, b in pairs)
        print(
            f"loss before {check['before'][0]:.8f} after {check['after'][0]:.8f}; feature gradients rel. diff {rel:.1e}"
        )
        kinds: list[str | None] = ["before", "after"] if args.part == "loss" else [None, "before", "after"]
        wall: dict[str | None, list[float]] = {k: [] for k in kinds}
        cpu: dict[str | None, list[float]] = {k: [] for k in kinds}
        phases: dict[str | None, list[dict[str, float] | None]] = {k: [] for k in kinds}
        load = os.getloadavg()[0]
        for i in range(args.warmup + args.repeats):
            shift = i % len(kinds)
            for kind in kinds[shift:] + kinds[:shift]:  # rotated: no kind always runs between the others
                t0, c0 = time.perf_counter(), time.process_time()
                step = run(kind)
                if i >= args.warmup:
                    wall[kind].append(time.perf_counter() - t0)
                    cpu[kind].append(time.process_time() - c0)
                    phases[kind].append(step)
        print(
            f"{args.part}, CT {args.loss}/{args.reduction}, {torch.get_num_threads()} threads, {args.repeats} repeats, "
            f"load {load:.2f} → {os.getloadavg()[0]:.2f}"
        )
        base = kinds[0]
        for kind in kinds:
            w, c = statistics.median(wall[kind]), statistics.median(cpu[kind])
            w0, c0 = statistics.median(wall[base]), statistics.median(cpu[base])
            paired = statistics.median(a / b for a, b in zip(wall[kind], wall[base], strict=True))
            ratio = f"   / {base or 'CT off'}: wall {w / w0:.3f}, CPU {c / c0:.3f}, per round {paired:.3f}"
            print(f"{kind or 'CT off'}: wall {w * 1000:.1f} ms, CPU {c * 1000:.1f} ms{ratio}")
        if args.phases and args.part == "step":
            for kind in kinds:
                parts = ", ".join(f"{ph} {statistics.median(r[ph] for r in phases[kind]) * 1000:.1f}" for ph in PHASES)
                print(f"phases, {kind or 'CT off'}: {parts} ms")


if __name__ == "__main__":
    main()
