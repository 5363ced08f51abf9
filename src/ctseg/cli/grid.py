"""``ctseg grid``: configs × seeds, each fit and tested, one results.json per run (:mod:`ctseg.experiments.grid`).

The options after ``--`` (``extra``) go to every run."""

from __future__ import annotations

import argparse

HELP = "run configs x seeds (fit + test), one results.json per run"
EPILOG = "Overrides for every run follow '--', e.g.: ctseg grid --configs a.yaml -- --trainer.max_epochs 5"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--configs", nargs="+", required=True, metavar="CFG",
                        help="LightningCLI YAML configs: files, or packaged names and name patterns "
                             "('potsdam/*'; see ctseg configs)")  # fmt: skip
    parser.add_argument("--seeds", type=int, default=3,
                        help="seeds per config: first-seed … first-seed+N-1 (3)")  # fmt: skip
    parser.add_argument("--first-seed", type=int, default=0, help="first seed (0)")
    parser.add_argument("--out", default="runs/grid", help="runs go to OUT/<config stem>/seed<N> (runs/grid)")
    data = parser.add_mutually_exclusive_group()
    data.add_argument("--fixed-data", action="store_true",
                      help="keep the config's data seed in every run (by default seed N also sets the data order "
                           "and augmentation: --data.init_args.seed N)")  # fmt: skip
    data.add_argument(
        "--data-seed",
        action="store_true",
        help="deprecated, no effect: the data seed follows N by default (see --fixed-data)",
    )
    parser.add_argument("--dry-run", action="store_true", help="list the planned runs and commands; run nothing")


def run(args: argparse.Namespace, extra: list[str]) -> int:
    from ctseg.configs import expand_configs
    from ctseg.experiments.grid import run_grid

    run_grid(
        expand_configs(args.configs),
        args.seeds,
        args.out,
        first_seed=args.first_seed,
        fixed_data=args.fixed_data,
        dry_run=args.dry_run,
        extra=extra,
    )
    return 0
