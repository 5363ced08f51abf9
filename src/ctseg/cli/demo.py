"""``ctseg demo``: a baseline and CT on built-in synthetic data, the table and figures
(:func:`ctseg.experiments.demo.run_demo`)."""

from __future__ import annotations

import argparse

HELP = "train a baseline and CT on synthetic data; print the table, save figures"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per run (default: the demo budget)")
    parser.add_argument("--quick", action="store_true", help="tiny budget, for tests")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace, extra: list[str]) -> int:
    from ctseg.experiments.demo import run_demo

    run_demo(out=args.out, steps=args.steps, quick=args.quick, seed=args.seed)
    return 0
