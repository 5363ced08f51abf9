"""``ctseg evaluate``: score prediction files against label files, region and boundary metrics
(:func:`ctseg.evaluation.files.run_evaluate`)."""

from __future__ import annotations

import argparse

from ctseg.cli.flags import device_flag, source_flags

HELP = "score prediction files against label files (mIoU, F1, OA, boundary IoU / F1)"
EPILOG = (
    "Pairs <stem>_pred.tif (ctseg predict) or <stem>.png in PRED_DIR with TRUTH_DIR/<stem>.png|.tif; "
    "labels are decoded with the data set's colours or label values. Example: ctseg evaluate predictions/ "
    "--truth labels/ --dataset dubai --out scores.json"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pred_dir", metavar="PRED_DIR", help="folder of predicted class maps")
    parser.add_argument("--truth", required=True, metavar="TRUTH_DIR",
                        help="folder of label files, paired by stem")  # fmt: skip
    info = parser.add_mutually_exclusive_group(required=True)
    info.add_argument("--dataset", default=None, help="registered data set (ctseg prepare --list) to score as")
    info.add_argument("--manifest", default=None, metavar="PREPARED_DIR/manifest.json",
                      help="the data set definition of a prepared folder (e.g. a folder data set)")  # fmt: skip
    parser.add_argument("--tolerance", type=int, nargs="+", default=[3], metavar="D",
                        help="boundary tolerance(s) in pixels, >= 1; the first is the main one (3)")  # fmt: skip
    parser.add_argument("--out", default=None, metavar="SCORES.json", help="also write the scores as JSON")
    device_flag(parser, "where to compute (cpu)", default="cpu")
    source_flags(parser)


def run(args: argparse.Namespace, extra: list[str]) -> int:
    from ctseg.evaluation.files import run_evaluate

    print(run_evaluate(args.pred_dir, args.truth, dataset=args.dataset, manifest=args.manifest,
                       tolerance=args.tolerance, out=args.out, device=args.device))  # fmt: skip
    return 0
