"""The ``ctseg`` command: thin — parses, calls the library, turns user errors into one line (exit code 2).

Subcommands:
    fit | validate | test   LightningCLI with YAML configs (``--config FILE`` and dotted overrides)
    demo                    baseline vs CT on built-in synthetic data, table + figures (CPU, minutes)
    prepare                 turn a data set download into crops (potsdam | vaihingen | dubai)
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ctseg.errors import CtsegError

LIGHTNING_COMMANDS = ("fit", "validate", "test")


def _fail(message: str) -> int:
    print(f"ctseg: error: {message}", file=sys.stderr)
    return 2


def _run_lightning(argv: list[str]) -> int:
    from ctseg.lightning_cli import run_lightning_cli

    run_lightning_cli(argv)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ctseg",
        description="Aerial-image segmentation with the Contrastive Transformer scheme.",
        epilog="Training: ctseg fit --config configs/demo/ct-cl.yaml [--trainer.max_epochs 5 ...] "
        "(also: validate, test; see ctseg fit --help).",
    )
    sub = parser.add_subparsers(dest="command", metavar="{fit,validate,test,demo,prepare}")
    for name in LIGHTNING_COMMANDS:
        sub.add_parser(name, help=f"LightningCLI {name} with a YAML config", add_help=False)

    demo = sub.add_parser("demo", help="train a baseline and CT on synthetic data; print the table, save figures")
    demo.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    demo.add_argument("--steps", type=int, default=None, help="training steps per run (default: the demo budget)")
    demo.add_argument("--quick", action="store_true", help="tiny budget, for tests")
    demo.add_argument("--seed", type=int, default=0)

    prep = sub.add_parser("prepare", help="cut a downloaded data set into training crops")
    prep.add_argument("dataset", help="potsdam | vaihingen | dubai")
    prep.add_argument("--src", required=True, help="folder holding the download (searched recursively)")
    prep.add_argument("--dst", required=True, help="output folder for crops and manifest.json")
    prep.add_argument("--crop", type=int, default=None, help="crop size in source pixels")
    prep.add_argument("--stride", type=int, default=None, help="crop stride in source pixels")
    prep.add_argument("--resize", type=int, default=None, help="resize crops to this size (0: keep)")
    prep.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    prep.add_argument("--overwrite", action="store_true", help="replace an existing, different destination")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never wait on the network for timm
    try:
        if argv and argv[0] in LIGHTNING_COMMANDS:
            return _run_lightning(argv)
        args = _parser().parse_args(argv)
        if args.command == "demo":
            from ctseg.demo import run_demo

            run_demo(out=args.out, steps=args.steps, quick=args.quick, seed=args.seed)
            return 0
        if args.command == "prepare":
            from ctseg.data import prepare_dataset

            dst = prepare_dataset(
                args.dataset,
                args.src,
                args.dst,
                crop=args.crop,
                stride=args.stride,
                resize=args.resize,
                workers=args.workers,
                overwrite=args.overwrite,
            )
            print(f"prepared data in {dst}")
            return 0
        _parser().print_help()
        return 2
    except CtsegError as err:
        return _fail(str(err))
    except KeyboardInterrupt:
        return _fail("interrupted")


if __name__ == "__main__":
    raise SystemExit(main())
