"""``ctseg predict``: class maps of rasters of any size, streamed into COGs (:func:`ctseg.predict.run.run_predict`).

:data:`KEYWORDS` maps each of ``run_predict``'s keyword arguments to the flag that sets it;
``tests/cli/test_cli_flags.py`` checks it against the function's signature and this parser (no flag without a
keyword, no keyword without a flag but :data:`NOT_FLAGS`, equal defaults). The flags' checks that need the model
are ``ctseg.predict.plan``'s.
"""

from __future__ import annotations

import argparse

from ctseg.cli.flags import bands_flag, device_flag, source_flags

HELP = "segment rasters of any size (GeoTIFF, JP2, VRT mosaics, PNG, JPEG) with a trained model"
EPILOG = (
    "Rasters are streamed by rows of windows (memory bounded by the raster width, not its size) into "
    "Cloud-Optimized GeoTIFFs. Many files over many GPUs: torchrun --nproc_per_node N -m ctseg.cli predict ... "
    "(or srun): rank r takes every N-th input; add --skip-existing to resume a killed job."
)

#: ``run_predict``'s positional arguments, from these flags' destinations, in order.
POSITIONAL = ("ckpt", "inputs", "out")
#: ``run_predict`` keyword → the destination of the flag that sets it.
KEYWORDS = {
    "tta": "tta",
    "window": "window",
    "overlap": "overlap",
    "batch_size": "batch_size",
    "color": "color",
    "overwrite": "overwrite",
    "device": "device",
    "runtime": "runtime",
    "dataset": "dataset",
    "bands": "bands",
    "nodata": "nodata",
    "out_format": "format",
    "input_lists": "input_lists",
    "probs": "probs",
    "confidence": "confidence",
    "uncertainty": "uncertainty",
    "uncertain_windows": "uncertain_windows",
    "skip_existing": "skip_existing",
    "png_max_mpx": "png_max_mpx",
    "vector": "vector",
    "vector_classes": "vector_classes",
    "regularize": "regularize",
    "regularize_tolerance": "regularize_tolerance",
    "vector_workers": "vector_workers",
    "overlay": "overlay",
    "asset": "asset",
    "bbox": "bbox",
    "bbox_crs": "bbox_crs",
    "aoi": "aoi",
}
#: ``run_predict`` keywords the command leaves at their defaults (a progress bar; the shard from the environment).
NOT_FLAGS = ("progress", "shard")
#: Flags applied by :func:`ctseg.cli.entry.main` around the run, not passed to ``run_predict``.
AROUND = ("allow_remote", "allow_outside")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="*", metavar="INPUT",
                        help="rasters GDAL reads (.tif, .jp2, .vrt ...; by windows) or PNG / JPEG (whole); rasters "
                             "by address (https://, s3://, gs://, az://; read by HTTP range requests); STAC items "
                             "(.json, a file or an address)")  # fmt: skip
    parser.add_argument("--inputs", dest="input_lists", action="append", default=[], metavar="LIST.txt",
                        help="text file of further inputs, one path a line (# comments; relative to the file's "
                             "folder); repeatable")  # fmt: skip
    parser.add_argument("--ckpt", required=True,
                        help="checkpoint from 'ctseg fit' or 'ctseg export' (an .onnx export runs with "
                             "onnxruntime)")  # fmt: skip
    parser.add_argument("--out", required=True,
                        help="output folder for <stem>_pred.tif (COG) / <stem>_pred.png")  # fmt: skip
    parser.add_argument("--tta", action="store_true",
                        help="average over horizontal and vertical flips (3x time)")  # fmt: skip
    parser.add_argument("--window", type=int, default=512, help="window side in pixels, multiple of 32 (512)")
    parser.add_argument("--overlap", type=float, default=0.25,
                        help="window overlap as a fraction in [0, 1) (0.25)")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (8)")
    parser.add_argument("--color", action=argparse.BooleanOptionalAction, default=True,
                        help="also write the colour PNG <stem>_pred.png (nodata transparent) and its legend "
                             "<stem>_legend.png, for inputs up to --png-max-mpx (default: on)")  # fmt: skip
    parser.add_argument("--png-max-mpx", type=float, default=100.0, metavar="MPX",
                        help="largest input (megapixels) given a PNG: above it the colour PNG is skipped with a "
                             "note and --format index-png is refused (a PNG needs the whole map in memory) "
                             "(100)")  # fmt: skip
    parser.add_argument("--overlay", action="store_true",
                        help="also write <stem>_overlay.png: the input image (first three bands; other than 8-bit "
                             "stretched 2-98%% per band) with the class colours blended on top, nodata transparent; "
                             "up to --png-max-mpx")  # fmt: skip
    parser.add_argument("--probs", default=None, choices=["uint8", "float16"],
                        help="also write <stem>_probs.tif: one band per class, round(255 p) or float16 p")  # fmt: skip
    parser.add_argument("--confidence", action="store_true",
                        help="also write <stem>_conf.tif: uint8 round(255 * max probability), 0 at "
                             "nodata")  # fmt: skip
    parser.add_argument("--uncertainty", action="store_true",
                        help="also write <stem>_entropy.tif: float16 normalised entropy -sum p log p / log K in "
                             "[0, 1] (1: all classes equally likely), NaN at nodata; with --tta band 2 holds the "
                             "TTA variance (how much the flipped passes disagree)")  # fmt: skip
    parser.add_argument("--uncertain-windows", type=int, default=None, metavar="N",
                        help="also write <stem>_uncertain.gpkg: the N window-sized cells of highest mean entropy, "
                             "ranked, with each class's share (implies --uncertainty)")  # fmt: skip
    parser.add_argument("--skip-existing", action="store_true",
                        help="skip inputs whose outputs all exist (resume a killed job; others are "
                             "redone)")  # fmt: skip
    parser.add_argument("--vector", default=None, metavar="DIR|.gpkg",
                        help="also outline --vector-classes as polygons (ctseg vectorize): DIR/<stem>.gpkg, or "
                             "<stem>.gpkg / .geojson beside the class map for a suffix")  # fmt: skip
    parser.add_argument("--vector-classes", default=None, metavar="NAMES",
                        help="classes to outline with --vector, by name or index, e.g. building or 1,2")  # fmt: skip
    parser.add_argument("--regularize", action="store_true",
                        help="--vector polygons with straight walls and right angles where they fit, else "
                             "simplified (as ctseg vectorize --regularize)")  # fmt: skip
    parser.add_argument("--regularize-tolerance", type=float, default=None, metavar="T",
                        help="--regularize: walls closer than T map units merge, steps shorter than T go "
                             "(default: 1.5 x the pixel size)")  # fmt: skip
    parser.add_argument("--vector-workers", type=int, default=None, metavar="N",
                        help="worker processes that outline --vector (default: as ctseg vectorize, one per CPU up "
                             "to 8; 0: none; with several ranks on one machine give each CPUs / ranks)")  # fmt: skip
    parser.add_argument("--asset", default=None, metavar="KEY",
                        help="the asset of a STAC item input to predict (default: the first GeoTIFF of visual, "
                             "image, data)")  # fmt: skip
    parser.add_argument("--bbox", default=None, metavar="MINX,MINY,MAXX,MAXY",
                        help="predict only this box of each input, on its own pixel grid (write --bbox=-1,... "
                             "when the first number is negative)")  # fmt: skip
    parser.add_argument("--bbox-crs", default=None, metavar="CRS",
                        help="CRS of --bbox, e.g. EPSG:4326 (default: the raster's)")  # fmt: skip
    parser.add_argument("--aoi", default=None, metavar="FILE",
                        help="predict only the box around this vector file's polygons (GeoJSON, GeoPackage, "
                             "Shapefile, FlatGeobuf); pixels outside them are written as nodata")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    device_flag(parser, "where to run (auto)")
    parser.add_argument("--runtime", choices=("torch", "onnx"), default="torch",
                        help="what runs the model: torch (PyTorch) or onnx (onnxruntime, ~2x faster on a CPU; the "
                             "model is exported at --window once and cached in ~/.cache/ctseg/onnx, or "
                             "$CTSEG_CACHE_DIR); an .onnx --ckpt always runs with onnxruntime")  # fmt: skip
    parser.add_argument("--dataset", default=None,
                        help="palette / normalisation to use (default: the checkpoint's)")  # fmt: skip
    bands_flag(parser, "1-based input bands to read, in the training order, e.g. 1,2,3,4 (default: the "
                       "checkpoint's source bands, else all bands of a file with the model's count)",
               parse=False)  # fmt: skip
    parser.add_argument("--nodata", default=None, metavar="V",
                        help="input nodata value: pixels where every band equals it get class 255 (output "
                             "nodata 255); 'none': off (default: the GeoTIFF's, else the data set's)")  # fmt: skip
    parser.add_argument("--format", default="geotiff", choices=["geotiff", "index-png"],
                        help="geotiff: <stem>_pred.tif (+ colour PNG); index-png: only <stem>.png, uint8 class "
                             "indices (LoveDA test-server format) (default: geotiff)")  # fmt: skip
    source_flags(parser)


def run(args: argparse.Namespace, extra: list[str]) -> int:
    from ctseg.predict.run import run_predict

    positional = [getattr(args, dest) for dest in POSITIONAL]
    written = run_predict(*positional, **{keyword: getattr(args, dest) for keyword, dest in KEYWORDS.items()})
    for path in written:
        print(f"wrote {path}")
    return 0
