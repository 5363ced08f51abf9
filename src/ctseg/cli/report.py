"""``ctseg report``: Table 1 (Markdown + CSV) and figures from results.json files, and a per-run report of a plain
``ctseg fit`` run (:func:`ctseg.experiments.report.make_report`)."""

from __future__ import annotations

import argparse

from ctseg.cli.flags import device_flag

HELP = "Table 1 and figures from ctseg grid results; per-class table, confusion matrix and curves of a ctseg fit run"
EPILOG = (
    "Each RUN_DIR holds grid results (a results.json at or below it: Table 1 as table.md / table.csv, runs.md, "
    "qualitative.png, patch_sampling.png, curves.png, written into --out) or, without any results.json, a "
    "'ctseg fit' run (its --trainer.default_root_dir: checkpoints/ and lightning_logs/version_N/) or folders of "
    "them. A fit run gets table.md / table.csv (per-class validation scores of its best checkpoint, else "
    "last.ckpt), confusion.csv / confusion.png (that checkpoint on the validation split) and curves.png: in --out "
    "when it is the only thing reported, else in --out/<run folder name>/. --highlight, --crops and "
    "--sample-class apply to grid results. Example: ctseg report runs/r1 --out report/r1"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                        help="grid results (folders searched for results.json) or ctseg fit run folders")  # fmt: skip
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--highlight", default="ct-cl",
                        help="scheme compared with the baseline in the figures (ct-cl)")  # fmt: skip
    parser.add_argument("--crops", type=int, default=4, help="validation crops in qualitative.png (4)")
    parser.add_argument("--sample-class", default=None,
                        help="class shown in patch_sampling.png (default: automatic)")  # fmt: skip
    device_flag(parser, "device for the figures and a fit run's confusion matrix")


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
