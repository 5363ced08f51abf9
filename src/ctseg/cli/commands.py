"""The handlers of ``ctseg``'s own sub-commands, one function each: ``handler(args, extra) -> exit code``.

:data:`HANDLERS` maps a sub-command to its handler; :func:`ctseg.cli.entry.main` parses and dispatches. ``extra``
holds the options ``ctseg grid`` passes on to every run (empty for the others). Library errors
(:class:`~ctseg.errors.CtsegError`) propagate to ``main``, which prints them as one line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from ctseg.errors import CtsegError


def _merge_splits(items: list[tuple[str, list[str]]]) -> dict[str, list[str]]:
    merged: dict[str, list[str]] = {}
    for name, members in items:
        merged.setdefault(name, []).extend(members)
    return merged


def demo(args: argparse.Namespace, extra: list[str]) -> int:
    """``ctseg demo``: baseline vs CT on built-in data (:mod:`ctseg.experiments.demo`)."""
    from ctseg.experiments.demo import run_demo

    run_demo(out=args.out, steps=args.steps, quick=args.quick, seed=args.seed)
    return 0


def prepare(args: argparse.Namespace, extra: list[str]) -> int:
    """``ctseg prepare``: list the data sets, or cut one into crops (:mod:`ctseg.data.prepare`)."""
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
        split_tiles=None if args.split is None else _merge_splits(args.split),
    )
    if not sys.stderr.isatty():
        print(f"prepared {args.dataset} in {dst}")
    return 0


def predict(args: argparse.Namespace, extra: list[str]) -> int:
    """``ctseg predict``: class maps of rasters of any size (:mod:`ctseg.predict.run`)."""
    from ctseg.predict.run import run_predict

    written = run_predict(
        args.ckpt,
        args.inputs,
        args.out,
        tta=args.tta,
        window=args.window,
        overlap=args.overlap,
        batch_size=args.batch_size,
        color=args.color,
        overwrite=args.overwrite,
        device=args.device,
        dataset=args.dataset,
        bands=args.bands,
        nodata=args.nodata,
        out_format=args.format,
        input_lists=args.input_lists,
        probs=args.probs,
        confidence=args.confidence,
        skip_existing=args.skip_existing,
        png_max_mpx=args.png_max_mpx,
        vector=args.vector,
        vector_classes=args.vector_classes,
    )
    for path in written:
        print(f"wrote {path}")
    return 0


def export(args: argparse.Namespace, extra: list[str]) -> int:
    """``ctseg export``: the inference model as safetensors or ONNX."""
    fmt = args.format or ("onnx" if args.out.lower().endswith(".onnx") else "safetensors")
    if fmt == "onnx":
        from ctseg.checkpoints.onnx_export import export_onnx

        print(f"wrote {export_onnx(args.ckpt, args.out, window=args.window, overwrite=args.overwrite)}")
        return 0
    from ctseg.checkpoints.files import export_model

    print(f"wrote {export_model(args.ckpt, args.out, overwrite=args.overwrite)}")
    return 0


def vectorize(args: argparse.Namespace, extra: list[str]) -> int:
    """``ctseg vectorize``: polygons of classes of a class map (:mod:`ctseg.vectorize.polygons`)."""
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
            block_size=args.block_size,
            layer=args.layer,
            overwrite=args.overwrite,
        )
    print(f"wrote {out}")
    return 0


def grid(args: argparse.Namespace, extra: list[str]) -> int:
    """``ctseg grid``: configs × seeds → results.json (:mod:`ctseg.experiments.grid`)."""
    from ctseg.experiments.grid import run_grid

    run_grid(
        args.configs,
        args.seeds,
        args.out,
        first_seed=args.first_seed,
        fixed_data=args.fixed_data,
        dry_run=args.dry_run,
        extra=extra,
    )
    return 0


def evaluate(args: argparse.Namespace, extra: list[str]) -> int:
    """``ctseg evaluate``: score prediction files against labels (:mod:`ctseg.evaluation.files`)."""
    from ctseg.evaluation.files import run_evaluate

    print(run_evaluate(args.pred_dir, args.truth, dataset=args.dataset, manifest=args.manifest,
                       tolerance=args.tolerance, out=args.out, device=args.device))  # fmt: skip
    return 0


def report(args: argparse.Namespace, extra: list[str]) -> int:
    """``ctseg report``: Table 1 and figures (:mod:`ctseg.experiments.report`)."""
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


#: sub-command → handler.
HANDLERS: dict[str, Callable[[argparse.Namespace, list[str]], int]] = {
    "demo": demo,
    "prepare": prepare,
    "predict": predict,
    "export": export,
    "vectorize": vectorize,
    "grid": grid,
    "evaluate": evaluate,
    "report": report,
}
