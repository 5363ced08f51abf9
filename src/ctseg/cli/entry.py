"""The ``ctseg`` command: thin — parses, dispatches to a handler (:data:`ctseg.cli.commands.HANDLERS`), turns user
errors into one line (exit code 2).

Subcommands:
    fit | validate | test   LightningCLI with YAML configs (``--config FILE`` and dotted overrides)
    demo                    baseline vs CT on built-in synthetic data, table + figures (CPU, minutes)
    prepare                 turn a data set download or your own image/label folder into crops (--list)
    predict                 segment rasters of any size by sliding windows, streamed into COGs (ctseg.predict)
    export                  write the inference-only model of a checkpoint: safetensors or ONNX (ctseg.checkpoints)
    vectorize               polygons (GeoPackage / GeoJSON) of classes of a predicted class map (ctseg.vectorize)
    grid                    configs × seeds: fit, test the best checkpoint, results.json (ctseg.experiments.grid)
    report                  Table 1 (Markdown + CSV) and figures from results.json files (ctseg.experiments.report)
    evaluate                score prediction files against label files: region + boundary metrics (ctseg.evaluation)
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
    from ctseg.cli.lightning import build_cli

    build_cli(argv)
    return 0


def _band_list(text: str) -> tuple[int, ...]:
    """``"1,2,3,4"`` → ``(1, 2, 3, 4)`` (1-based band numbers, as GDAL counts them)."""
    try:
        bands = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of band numbers (e.g. 1,2,3,4)"
        ) from None
    if not bands or min(bands) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: bands are numbered from 1 (e.g. 1,2,3,4)")
    return bands


def _split_arg(text: str) -> tuple[str, list[str]]:
    """``"test=tile1,tile2"`` → ``("test", ["tile1", "tile2"])``."""
    name, sep, groups = text.partition("=")
    members = [g.strip() for g in groups.split(",") if g.strip()]
    if not sep or not name.strip() or not members:
        raise argparse.ArgumentTypeError(f"{text!r}: write NAME=ID,ID (e.g. test=tile1,tile2)")
    return name.strip(), members


def _source_flags(parser: argparse.ArgumentParser) -> None:
    """``--allow-remote`` / ``--allow-outside``: what a VRT input may name (``ctseg.safety.rasters``)."""
    parser.add_argument("--allow-remote", action="store_true",
                        help="let a VRT input read sources on the network (/vsicurl/, /vsis3/, URLs, WMS: ...); "
                             "off: refused before anything is contacted")  # fmt: skip
    parser.add_argument("--allow-outside", action="store_true",
                        help="let a VRT input read local files outside its own folder (absolute or ../ paths, "
                             "/vsizip/ ...); off: refused before they are opened")  # fmt: skip


class _OneLineParser(argparse.ArgumentParser):
    """argparse with ctseg's error style: one line on stderr naming the problem, exit code 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"ctseg: error: {self.prog}: {message} (see '{self.prog} --help')\n")


def _parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="ctseg",
        description="Aerial-image segmentation with the Contrastive Transformer scheme.",
        epilog="Training: ctseg fit --config configs/demo/ct-cl.yaml [--trainer.max_epochs 5 ...] "
        "(also: validate, test; see ctseg fit --help).",
    )
    sub = parser.add_subparsers(
        parser_class=_OneLineParser,
        dest="command",
        metavar="{fit,validate,test,demo,prepare,predict,export,vectorize,grid,report,evaluate}",
    )
    for name in LIGHTNING_COMMANDS:
        sub.add_parser(name, help=f"LightningCLI {name} with a YAML config", add_help=False)

    demo = sub.add_parser("demo", help="train a baseline and CT on synthetic data; print the table, save figures")
    demo.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    demo.add_argument("--steps", type=int, default=None, help="training steps per run (default: the demo budget)")
    demo.add_argument("--quick", action="store_true", help="tiny budget, for tests")
    demo.add_argument("--seed", type=int, default=0)

    prep = sub.add_parser(
        "prepare",
        help="cut a downloaded data set (or your own folder of image/label pairs) into training crops",
        epilog="Data sets: ctseg prepare --list. Your own data: ctseg prepare folder --src DIR --classes "
        "classes.yaml --dst data/mine (DIR/images + DIR/masks paired by file stem; see the README).",
    )
    prep.add_argument("dataset", nargs="?", help="a registered data set (ctseg prepare --list)")
    prep.add_argument("--list", action="store_true", help="print the registered data sets, one line each")
    prep.add_argument("--src", default=None, help="folder holding the download (searched recursively)")
    prep.add_argument("--dst", default=None,
                      help="output folder for crops and manifest.json (outside --src; written beside it as "
                           "DST.tmp-XXXX, renamed when complete)")  # fmt: skip
    prep.add_argument("--crop", type=int, default=None, help="crop size in source pixels (at most 8192)")
    prep.add_argument("--stride", type=int, default=None, help="crop stride in source pixels (1 … crop)")
    prep.add_argument("--resize", type=int, default=None, help="resize crops to this size (0: keep; at most 8192)")
    prep.add_argument("--workers", type=int, default=None, help="processes (default: all cores; at most 256)")
    prep.add_argument(
        "--split",
        action="append",
        type=_split_arg,
        default=None,
        metavar="NAME=ID,ID",
        help="assign groups (tiles, sequences, images) to a split, e.g. --split test=tile1,tile2 (repeatable; "
        "groups not listed go to train unless a train split is given)",
    )
    prep.add_argument("--classes", default=None, help="folder: classes.yaml (class names with values or colours)")
    prep.add_argument("--val-fraction", type=float, default=None, help="folder: share of images for val (0.2)")
    prep.add_argument("--seed", type=int, default=0, help="folder: seed of the train/val split (default 0)")
    prep.add_argument("--bands", type=_band_list, default=None, help="folder: source bands to keep, e.g. 1,2,3,4")
    prep.add_argument("--nodata", type=float, default=None,
                      help="folder: nodata value (default: the raster's); finite and of the images' type "
                           "(nan: float images only)")  # fmt: skip
    prep.add_argument("--overwrite", action="store_true", help="replace an existing, different destination")
    _source_flags(prep)

    pred = sub.add_parser(
        "predict",
        help="segment rasters of any size (GeoTIFF, JP2, VRT mosaics, PNG, JPEG) with a trained model",
        epilog="Rasters are streamed by rows of windows (memory bounded by the raster width, not its size) into "
        "Cloud-Optimized GeoTIFFs. Many files over many GPUs: torchrun --nproc_per_node N -m ctseg.cli predict ... "
        "(or srun): rank r takes every N-th input; add --skip-existing to resume a killed job.",
    )
    pred.add_argument("inputs", nargs="*", metavar="INPUT",
                      help="rasters GDAL reads (.tif, .jp2, .vrt ...; by windows) or PNG / JPEG (whole)")  # fmt: skip
    pred.add_argument("--inputs", dest="input_lists", action="append", default=[], metavar="LIST.txt",
                      help="text file of further inputs, one path a line (# comments; relative to the file's "
                           "folder); repeatable")  # fmt: skip
    pred.add_argument("--ckpt", required=True,
                      help="checkpoint from 'ctseg fit' or 'ctseg export' (an .onnx export runs with "
                           "onnxruntime)")  # fmt: skip
    pred.add_argument("--out", required=True, help="output folder for <stem>_pred.tif (COG) / <stem>_pred.png")
    pred.add_argument("--tta", action="store_true", help="average over horizontal and vertical flips (3x time)")
    pred.add_argument("--window", type=int, default=512, help="window side in pixels, multiple of 32 (512)")
    pred.add_argument("--overlap", type=float, default=0.25, help="window overlap as a fraction in [0, 1) (0.25)")
    pred.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (8)")
    pred.add_argument("--color", action=argparse.BooleanOptionalAction, default=True,
                      help="also write the colour PNG <stem>_pred.png, for inputs up to --png-max-mpx "
                           "(default: on)")  # fmt: skip
    pred.add_argument("--png-max-mpx", type=float, default=100.0, metavar="MPX",
                      help="largest input (megapixels) given a PNG: above it the colour PNG is skipped with a "
                           "note and --format index-png is refused (a PNG needs the whole map in memory) "
                           "(100)")  # fmt: skip
    pred.add_argument("--probs", default=None, choices=["uint8", "float16"],
                      help="also write <stem>_probs.tif: one band per class, round(255 p) or float16 p")  # fmt: skip
    pred.add_argument("--confidence", action="store_true",
                      help="also write <stem>_conf.tif: uint8 round(255 * max probability), 0 at nodata")  # fmt: skip
    pred.add_argument("--skip-existing", action="store_true",
                      help="skip inputs whose outputs all exist (resume a killed job; others are redone)")  # fmt: skip
    pred.add_argument("--vector", default=None, metavar="DIR|.gpkg",
                      help="also outline --vector-classes as polygons (ctseg vectorize): DIR/<stem>.gpkg, or "
                           "<stem>.gpkg / .geojson beside the class map for a suffix")  # fmt: skip
    pred.add_argument("--vector-classes", default=None, metavar="NAMES",
                      help="classes to outline with --vector, by name or index, e.g. building or 1,2")  # fmt: skip
    pred.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    pred.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to run (auto)")
    pred.add_argument("--dataset", default=None, help="palette / normalisation to use (default: the checkpoint's)")
    pred.add_argument("--bands", default=None, metavar="B1,B2,...",
                      help="1-based input bands to read, in the training order, e.g. 1,2,3,4 (default: the "
                           "checkpoint's source bands, else all bands of a file with the model's count)")  # fmt: skip
    pred.add_argument("--nodata", default=None, metavar="V",
                      help="input nodata value: pixels where every band equals it get class 255 (output "
                           "nodata 255); 'none': off (default: the GeoTIFF's, else the data set's)")  # fmt: skip
    pred.add_argument("--format", default="geotiff", choices=["geotiff", "index-png"],
                      help="geotiff: <stem>_pred.tif (+ colour PNG); index-png: only <stem>.png, uint8 class "
                           "indices (LoveDA test-server format) (default: geotiff)")  # fmt: skip
    _source_flags(pred)

    exp = sub.add_parser("export", help="write the inference-only model (no projection heads, no optimiser)")
    exp.add_argument("ckpt", metavar="CKPT", help="checkpoint written by 'ctseg fit' (or an older export)")
    exp.add_argument("out", metavar="OUT",
                     help="output file: *.safetensors (weights + JSON metadata, no code) or *.onnx")  # fmt: skip
    exp.add_argument("--format", default=None, choices=["safetensors", "onnx"],
                     help="output format (default: by OUT's suffix)")  # fmt: skip
    exp.add_argument("--window", type=int, default=512,
                     help="onnx: the model's fixed input side in pixels, a multiple of 32 (512); the batch "
                          "size stays free")  # fmt: skip
    exp.add_argument("--overwrite", action="store_true", help="replace an existing OUT")

    vec = sub.add_parser(
        "vectorize",
        help="polygons of classes of a class map (ctseg predict output) as GeoPackage or GeoJSON",
        epilog="Example: ctseg vectorize scene_pred.tif --classes building --out buildings.gpkg --min-area 10 "
        "--simplify 0.5 (sizes in the raster's CRS units, e.g. m² and m).",
    )
    vec.add_argument("raster", metavar="PRED.tif", help="single-band class map, e.g. <stem>_pred.tif of ctseg predict")
    vec.add_argument("--classes", required=True, metavar="C1,C2,...",
                     help="class names (stored by ctseg predict in the raster) or class indices, e.g. building,road "
                          "or 1,2")  # fmt: skip
    vec.add_argument("--out", required=True, help="output file: *.gpkg (GeoPackage) or *.geojson (GeoJSON)")
    vec.add_argument("--min-area", type=float, default=0.0, metavar="A",
                     help="drop polygons smaller than A map units² (e.g. m²) (0)")  # fmt: skip
    vec.add_argument("--simplify", type=float, default=0.0, metavar="T",
                     help="simplification tolerance in map units, topology kept (0: exact pixel outlines)")  # fmt: skip
    vec.add_argument("--fill-holes", action="store_true", help="fill the polygons' holes (courtyards)")
    vec.add_argument("--confidence", default=None, metavar="CONF.tif",
                     help="raster on the same grid (uint8 0-255 or float 0-1): adds mean_confidence per polygon "
                          "(default: the class raster's band described 'confidence', if any)")  # fmt: skip
    vec.add_argument("--layer", default=None, help="layer name (default: the output's file stem)")
    vec.add_argument("--block-size", type=int, default=None, metavar="PX",
                     help="pixels per block side read at a time (default: whole internal blocks, ~1024)")  # fmt: skip
    vec.add_argument("--overwrite", action="store_true", help="replace an existing output")
    _source_flags(vec)

    grid = sub.add_parser(
        "grid",
        help="run configs x seeds (fit + test), one results.json per run",
        epilog="Overrides for every run follow '--', e.g.: ctseg grid --configs a.yaml -- --trainer.max_epochs 5",
    )
    grid.add_argument("--configs", nargs="+", required=True, metavar="CFG", help="LightningCLI YAML configs")
    grid.add_argument("--seeds", type=int, default=3, help="seeds per config: first-seed … first-seed+N-1 (3)")
    grid.add_argument("--first-seed", type=int, default=0, help="first seed (0)")
    grid.add_argument("--out", default="runs/grid", help="runs go to OUT/<config stem>/seed<N> (runs/grid)")
    data = grid.add_mutually_exclusive_group()
    data.add_argument("--fixed-data", action="store_true",
                      help="keep the config's data seed in every run (by default seed N also sets the data order "
                           "and augmentation: --data.init_args.seed N)")  # fmt: skip
    data.add_argument(
        "--data-seed",
        action="store_true",
        help="deprecated, no effect: the data seed follows N by default (see --fixed-data)",
    )
    grid.add_argument("--dry-run", action="store_true", help="list the planned runs and commands; run nothing")

    rep = sub.add_parser("report", help="Table 1 (table.md, table.csv) and figures from results.json files")
    rep.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="folders searched for results.json")
    rep.add_argument("--out", required=True, help="output folder")
    rep.add_argument("--highlight", default="ct-cl", help="scheme compared with the baseline in the figures (ct-cl)")
    rep.add_argument("--crops", type=int, default=4, help="validation crops in qualitative.png (4)")
    rep.add_argument("--sample-class", default=None, help="class shown in patch_sampling.png (default: automatic)")
    rep.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="device for the figures")

    ev = sub.add_parser(
        "evaluate",
        help="score prediction files against label files (mIoU, F1, OA, boundary IoU / F1)",
        epilog="Pairs <stem>_pred.tif (ctseg predict) or <stem>.png in PRED_DIR with TRUTH_DIR/<stem>.png|.tif; "
        "labels are decoded with the data set's colours or label values. Example: ctseg evaluate predictions/ "
        "--truth labels/ --dataset dubai --out scores.json",
    )
    ev.add_argument("pred_dir", metavar="PRED_DIR", help="folder of predicted class maps")
    ev.add_argument("--truth", required=True, metavar="TRUTH_DIR", help="folder of label files, paired by stem")
    ev_info = ev.add_mutually_exclusive_group(required=True)
    ev_info.add_argument("--dataset", default=None, help="registered data set (ctseg prepare --list) to score as")
    ev_info.add_argument("--manifest", default=None, metavar="PREPARED_DIR/manifest.json",
                         help="the data set definition of a prepared folder (e.g. a folder data set)")  # fmt: skip
    ev.add_argument("--tolerance", type=int, nargs="+", default=[3], metavar="D",
                    help="boundary tolerance(s) in pixels, >= 1; the first is the main one (3)")  # fmt: skip
    ev.add_argument("--out", default=None, metavar="SCORES.json", help="also write the scores as JSON")
    ev.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"], help="where to compute (cpu)")
    _source_flags(ev)
    return parser


def _split_extra(argv: list[str]) -> tuple[list[str], list[str]]:
    """``[..., "--", extra...]`` → (before, extra)."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, []

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never wait on the network for timm
    from ctseg.safety.rasters import allowing, apply_gdal_guards

    apply_gdal_guards()  # forced: no Python pixel functions, no raw VRT bands, no MEM::: pointers
    try:
        if argv and argv[0] in LIGHTNING_COMMANDS:
            return _run_lightning(argv)
        argv, extra = _split_extra(argv) if argv and argv[0] == "grid" else (argv, [])
        args = _parser().parse_args(argv)
        from ctseg.cli.commands import HANDLERS

        if args.command in HANDLERS:
            allow = {"remote": getattr(args, "allow_remote", False), "outside": getattr(args, "allow_outside", False)}
            with allowing(**allow):  # what a VRT input may name; default: only files under its own folder
                return HANDLERS[args.command](args, extra)
        _parser().print_help()
        return 2
    except CtsegError as err:
        return _fail(str(err))
    except KeyboardInterrupt:
        return _fail("interrupted")


if __name__ == "__main__":
    raise SystemExit(main())
