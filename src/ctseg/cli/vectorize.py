"""``ctseg vectorize``: polygons of classes of a class map as GeoPackage or GeoJSON
(:func:`ctseg.vectorize.polygons.vectorize_raster`)."""

from __future__ import annotations

import argparse

from ctseg.cli.flags import source_flags

HELP = "polygons of classes of a class map (ctseg predict output) as GeoPackage or GeoJSON"
EPILOG = (
    "Example: ctseg vectorize scene_pred.tif --classes building --out buildings.gpkg --min-area 10 "
    "--simplify 0.5 (sizes in the raster's CRS units, e.g. m² and m); footprints with right angles: --regularize."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("raster", metavar="PRED.tif",
                        help="single-band class map, e.g. <stem>_pred.tif of ctseg predict")  # fmt: skip
    parser.add_argument("--classes", required=True, metavar="C1,C2,...",
                        help="class names (stored by ctseg predict in the raster) or class indices, e.g. "
                             "building,road or 1,2")  # fmt: skip
    parser.add_argument("--out", required=True,
                        help="output file: *.gpkg (GeoPackage) or *.geojson (GeoJSON)")  # fmt: skip
    parser.add_argument("--min-area", type=float, default=0.0, metavar="A",
                        help="drop polygons smaller than A map units² (e.g. m²) (0)")  # fmt: skip
    parser.add_argument("--simplify", type=float, default=0.0, metavar="T",
                        help="simplification tolerance in map units, topology kept (0: exact pixel "
                             "outlines)")  # fmt: skip
    parser.add_argument("--regularize", action="store_true",
                        help="building outlines with straight walls and right angles where they fit (IoU with "
                             "the pixel outline >= --regularize-min-iou), else simplified; never forced into "
                             "boxes")  # fmt: skip
    parser.add_argument("--regularize-tolerance", type=float, default=None, metavar="T",
                        help="--regularize: walls closer than T map units merge, steps shorter than T go "
                             "(default: 1.5 x the pixel size)")  # fmt: skip
    parser.add_argument("--regularize-min-iou", type=float, default=None, metavar="F",
                        help="--regularize: smallest IoU of the right-angled outline with the pixel outline to "
                             "keep it (default: 0.86, ctseg.vectorize.regularize.MIN_IOU)")  # fmt: skip
    parser.add_argument("--fill-holes", action="store_true", help="fill the polygons' holes (courtyards)")
    parser.add_argument("--confidence", default=None, metavar="CONF.tif",
                        help="raster on the same grid (uint8 0-255 or float 0-1): adds mean_confidence and "
                             "min_confidence per polygon (default: the class raster's band described 'confidence', "
                             "if any)")  # fmt: skip
    parser.add_argument("--entropy", default=None, metavar="ENTROPY.tif",
                        help="normalised entropy on the same grid (<stem>_entropy.tif of ctseg predict "
                             "--uncertainty; float 0-1, NaN = nodata): adds mean_entropy per polygon")  # fmt: skip
    parser.add_argument("--layer", default=None, help="layer name (default: the output's file stem)")
    parser.add_argument("--block-size", type=int, default=None, metavar="PX",
                        help="pixels per block side read at a time (default: whole internal blocks, "
                             "~1024)")  # fmt: skip
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="processes polygonising blocks, same output for any N (default: the CPUs available, "
                             "at most 8, for rasters of 16 blocks or more; 0: none)")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    source_flags(parser)


def run(args: argparse.Namespace, extra: list[str]) -> int:
    from ctseg.vectorize.io import notes_as_lines
    from ctseg.vectorize.polygons import vectorize_raster

    with notes_as_lines():  # notes on the input as one line each, other warnings as usual
        out = vectorize_raster(
            args.raster,
            args.out,
            args.classes,
            min_area=args.min_area,
            simplify=args.simplify,
            fill_holes=args.fill_holes,
            confidence_tif=args.confidence,
            entropy_tif=args.entropy,
            block_size=args.block_size,
            layer=args.layer,
            overwrite=args.overwrite,
            regularize=args.regularize,
            regularize_tolerance=args.regularize_tolerance,
            regularize_min_iou=args.regularize_min_iou,
            workers=args.workers,
        )
    print(f"wrote {out}")
    return 0
