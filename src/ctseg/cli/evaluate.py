"""``ctseg evaluate``: score prediction files against label files — class maps (region and boundary metrics,
:func:`ctseg.evaluation.files.run_evaluate`) or footprints in vector files (object scores,
:func:`ctseg.evaluation.footprints.run_evaluate_objects`), chosen by the inputs."""

from __future__ import annotations

import argparse

from ctseg.cli.flags import device_flag, source_flags
from ctseg.errors import CtsegError

HELP = "score predictions against labels: class maps (mIoU, F1, OA, boundary IoU / F1) or footprints (object F1)"
EPILOG = (
    "Folders: pairs <stem>_pred.tif (ctseg predict) or <stem>.png in PRED with TRUTH/<stem>.png|.tif; labels are "
    "decoded with the data set's colours or label values. Example: ctseg evaluate predictions/ --truth labels/ "
    "--dataset dubai --out scores.json. Vector files (GeoPackage, GeoJSON, Shapefile, FlatGeobuf): object scores "
    "of the footprints, matched one-to-one at --iou. Example: ctseg evaluate pred.gpkg --truth buildings.gpkg "
    "--class building --out scores.json"
)
#: Flags of vector mode only, with their defaults there.
VECTOR_DEFAULTS = {"iou": 0.5, "class_name": None, "boundary_tolerance": 1.0}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pred_dir", metavar="PRED",
                        help="folder of predicted class maps, or a vector file of predicted footprints")  # fmt: skip
    parser.add_argument("--truth", required=True, metavar="TRUTH",
                        help="folder of label files, paired by stem; "
                             "or a vector file of reference footprints")  # fmt: skip
    info = parser.add_mutually_exclusive_group()
    info.add_argument("--dataset", default=None,
                      help="class maps: registered data set (ctseg prepare --list) to score as")  # fmt: skip
    info.add_argument("--manifest", default=None, metavar="PREPARED_DIR/manifest.json",
                      help="class maps: the data set definition of a prepared folder "
                           "(e.g. a folder data set)")  # fmt: skip
    parser.add_argument("--tolerance", type=int, nargs="+", default=[3], metavar="D",
                        help="class maps: boundary tolerance(s) in pixels, >= 1; "
                             "the first is the main one (3)")  # fmt: skip
    parser.add_argument("--boundary", dest="boundary_definition", choices=("ctseg", "reference"), default="ctseg",
                        help="class maps: boundary IoU definition: ctseg's (the image border is no boundary) or "
                             "Cheng et al.'s reference (it is) (ctseg)")  # fmt: skip
    parser.add_argument("--boundary-shape", choices=("square", "disk"), default="square",
                        help="class maps: boundary F1 tolerance, Chebyshev square or Euclidean disk "
                             "(square)")  # fmt: skip
    parser.add_argument("--iou", type=float, default=None, metavar="T",
                        help="footprints: IoU a match needs, in (0, 1] (0.5)")  # fmt: skip
    parser.add_argument("--class", dest="class_name", default=None, metavar="NAME",
                        help="footprints: score only features whose 'class' attribute is NAME (all)")  # fmt: skip
    parser.add_argument("--boundary-tolerance", type=float, default=None, metavar="M",
                        help="footprints: boundary F1 tolerance in map units, "
                             "metres for a geographic truth (1.0)")  # fmt: skip
    parser.add_argument("--out", default=None, metavar="SCORES.json", help="also write the scores as JSON")
    device_flag(parser, "class maps: where to compute (cpu)", default="cpu")
    source_flags(parser)


def run(args: argparse.Namespace, extra: list[str]) -> int:
    from ctseg.evaluation.footprints import is_vector_input

    given = [k for k in VECTOR_DEFAULTS if getattr(args, k) is not None]
    if is_vector_input(args.pred_dir) or is_vector_input(args.truth):
        from ctseg.evaluation.footprints import run_evaluate_objects

        if args.dataset or args.manifest:
            raise CtsegError("--dataset / --manifest are for folders of class maps; vector files need neither")
        kw = {k: VECTOR_DEFAULTS[k] if getattr(args, k) is None else getattr(args, k) for k in VECTOR_DEFAULTS}
        print(run_evaluate_objects(args.pred_dir, args.truth, iou=kw["iou"], class_name=kw["class_name"],
                                   tolerance=kw["boundary_tolerance"], out=args.out))  # fmt: skip
        return 0
    from ctseg.evaluation.files import run_evaluate

    if given:
        flags = ", ".join("--" + ("class" if k == "class_name" else k.replace("_", "-")) for k in given)
        raise CtsegError(
            f"{flags}: for footprints in vector files; {args.pred_dir} and {args.truth} are not vector files"
        )
    if args.dataset is None and args.manifest is None:
        raise CtsegError(
            "one of --dataset NAME or --manifest PREPARED_DIR/manifest.json is required to score folders of class maps"
        )
    print(run_evaluate(args.pred_dir, args.truth, dataset=args.dataset, manifest=args.manifest,
                       tolerance=args.tolerance, out=args.out, device=args.device,
                       definition=args.boundary_definition, tolerance_shape=args.boundary_shape))  # fmt: skip
    return 0
