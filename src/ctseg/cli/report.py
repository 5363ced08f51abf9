"""``ctseg report``: Table 1 (Markdown + CSV) and figures from results.json files
(:func:`ctseg.experiments.report.make_report`)."""

from __future__ import annotations

import argparse

from ctseg.cli.flags import device_flag

HELP = "Table 1 (table.md, table.csv) and figures from results.json files"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="folders searched for results.json")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--highlight", default="ct-cl",
                        help="scheme compared with the baseline in the figures (ct-cl)")  # fmt: skip
    parser.add_argument("--crops", type=int, default=4, help="validation crops in qualitative.png (4)")
    parser.add_argument("--sample-class", default=None,
                        help="class shown in patch_sampling.png (default: automatic)")  # fmt: skip
    device_flag(parser, "device for the figures")


def run(args: argparse.Namespace, extra: list[str]) -> int:
    from ctseg.experiments.report import make_report

    written = make_report(
        args.run_dirs,
        args.out,
        highlight=args.highlight,
        crops=args.crops,
        sample_class=args.sample_class,
        device=args.device,
    )
    for path in written:
        print(f"wrote {path}")
    return 0
