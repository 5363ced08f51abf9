"""``ctseg prepare``: list the registered data sets, or cut one (or a folder of image/label pairs) into training
crops (:mod:`ctseg.data.prepare`)."""

from __future__ import annotations

import argparse
import sys

from ctseg.cli.flags import bands_flag, source_flags
from ctseg.errors import CtsegError

HELP = "cut a downloaded data set (or your own image/label pairs, or images with vector labels) into training crops"
EPILOG = (
    "Data sets: ctseg prepare --list. Your own data: ctseg prepare folder --src DIR --classes classes.yaml --dst "
    "data/mine, with DIR/images + DIR/masks paired by file stem, DIR/<group>/{images,masks} for tiles or scenes, "
    "or DIR/{train,val,test}/{images,masks} (docs/own-data.md). Georeferenced images with polygons as labels: ctseg "
    "prepare vector --src IMAGES --labels LABELS.gpkg --class-field FIELD --classes classes.yaml --dst data/mine "
    "(docs/vector-labels.md). A table of crops, pixels, ignore pixels by cause and "
    "class shares per split follows every prepare."
)


def split_arg(text: str) -> tuple[str, list[str]]:
    """``"val=Tile 1,Tile 2"`` → ``("val", ["Tile 1", "Tile 2"])``."""
    name, sep, patterns = text.partition("=")
    members = [g.strip() for g in patterns.split(",") if g.strip()]
    if not sep or not name.strip() or not members:
        raise argparse.ArgumentTypeError(f"{text!r}: write NAME=PATTERN,PATTERN (e.g. 'val=Tile [1-3]')")
    return name.strip(), members


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", nargs="?", help="a registered data set (ctseg prepare --list)")
    parser.add_argument("--list", action="store_true", help="print the registered data sets, one line each")
    parser.add_argument("--src", default=None,
                        help="folder holding the download (searched recursively); vector: a folder of georeferenced "
                             "rasters, a .txt list of them or one raster / VRT")  # fmt: skip
    parser.add_argument("--dst", default=None,
                        help="output folder for crops and manifest.json (outside --src; written beside it as "
                             "DST.tmp-XXXX, renamed when complete)")  # fmt: skip
    parser.add_argument("--crop", type=int, default=None, help="crop size in source pixels (at most 8192)")
    parser.add_argument("--stride", type=int, default=None, help="crop stride in source pixels (1 … crop)")
    parser.add_argument("--resize", type=int, default=None,
                        help="resize crops to this size (0: keep; at most 8192)")  # fmt: skip
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores; at most 256)")
    parser.add_argument(
        "--split",
        action="append",
        type=split_arg,
        default=None,
        metavar="NAME=PATTERN,…",
        help="put images into split NAME (repeatable; the rest go to train unless a train split is given). folder: "
        "group names, file stems or globs, e.g. 'val=Tile [1-3]' or 'val=*_part_00[1-2]'; other data sets: their "
        "group ids, e.g. test=tile1,tile2",
    )
    parser.add_argument("--classes", default=None,
                        help="folder: classes.yaml (class names with values or colours); vector: class names with "
                             "the --class-field value of each, background: NAME")  # fmt: skip
    parser.add_argument("--val-fraction", type=float, default=None, metavar="F",
                        help="folder, vector, without --split: share of the groups (or images) for val "
                             "(0.2)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="folder, vector: seed of that val draw (default 0)")
    bands_flag(parser, "folder, vector: source bands to keep, e.g. 1,2,3,4")
    parser.add_argument("--nodata", type=float, default=None,
                        help="folder, vector: nodata value (default: the raster's); finite and of the images' type "
                             "(nan: float images only)")  # fmt: skip
    parser.add_argument("--labels", default=None, metavar="FILE",
                        help="vector: polygons labelling the images (GeoPackage, GeoJSON, Shapefile or FlatGeobuf, "
                             "any CRS)")  # fmt: skip
    parser.add_argument("--class-field", default=None, metavar="FIELD",
                        help="vector: the labels' attribute holding each polygon's class (its values: in "
                             "--classes)")  # fmt: skip
    parser.add_argument("--extent", default=None, metavar="FILE",
                        help="vector: polygons where the labels are complete; pixels outside are ignore")  # fmt: skip
    parser.add_argument("--all-touched", action="store_true",
                        help="vector: burn every pixel a polygon touches (default: those whose centre it "
                             "covers)")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace an existing, different destination")
    source_flags(parser)


def _merge_splits(items: list[tuple[str, list[str]]]) -> dict[str, list[str]]:
    merged: dict[str, list[str]] = {}
    for name, members in items:
        merged.setdefault(name, []).extend(members)
    return merged


def run(args: argparse.Namespace, extra: list[str]) -> int:
    from ctseg.data.registry import describe_datasets

    if args.list:
        print("\n".join(describe_datasets()))
        return 0
    missing = [flag for flag, value in (("DATASET", args.dataset), ("--src", args.src), ("--dst", args.dst))
               if value is None]  # fmt: skip
    if missing:
        raise CtsegError(f"ctseg prepare: {' and '.join(missing)} required (or --list to see the data sets)")
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
        progress=sys.stderr.isatty(),  # bar and notes for people; logs get one line
        classes=args.classes,
        val_fraction=args.val_fraction,
        seed=args.seed,
        bands=args.bands,
        nodata=args.nodata,
        labels=args.labels,
        class_field=args.class_field,
        extent=args.extent,
        all_touched=args.all_touched,
        split_tiles=None if args.split is None else _merge_splits(args.split),
    )
    from ctseg.data.manifest import load_manifest
    from ctseg.data.summary import format_summary

    print(format_summary(load_manifest(dst)))
    if not sys.stderr.isatty():
        print(f"prepared {args.dataset} in {dst}")
    return 0
