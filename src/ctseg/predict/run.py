"""``ctseg predict``: segment rasters of any size (GeoTIFF, JP2, VRT mosaics, PNG, JPEG) and write class maps.

**Streaming.** A GDAL raster is read by full-width row bands, one row of windows at a time plus the overlap,
predicted and blended exactly as :func:`ctseg.inference.tile.predict_tile` does (:mod:`ctseg.inference.rows`), and the
finished rows go straight into the output files: host memory is bounded by a row of windows, not by the
raster (``benchmarks/predict_memory.py``). PNG / JPEG inputs are read whole, with Pillow.

**Outputs.** For each input ``<stem>.<ext>`` the output folder receives, with ``format="geotiff"`` (default),

* ``<stem>_pred.tif`` — a uint8 Cloud-Optimized GeoTIFF of class indices (512² DEFLATE tiles, internal
  overviews by nearest resampling) with the input's CRS and geotransform (for an input without georeference —
  PNG / JPEG — no CRS and row r at y = −r, where a GIS draws that image; one warning line per run), the
  data set's palette as colour table, the class names as a JSON list in the tag ``CTSEG_CLASSES``, and nodata
  255 where the input is nodata;
* ``<stem>_pred.tif.aux.xml`` and ``<stem>_pred.qml`` beside it: GDAL's sidecar with the class names and a raster
  attribute table, and a QGIS style (:mod:`ctseg.predict.gis`);
* ``<stem>_probs.tif`` with ``probs="uint8"`` (round(255 p); 0 in every band at nodata) or ``"float16"`` (NaN
  at nodata): one band per class, a COG with average overviews;
* ``<stem>_conf.tif`` with ``confidence=True``: uint8 round(255 · max probability), 1–255, 0 at nodata;
* ``<stem>_entropy.tif`` with ``uncertainty=True``: float16 normalised entropy −Σ p log p / log K in [0, 1], NaN
  at nodata; ``<stem>_uncertain.gpkg`` with ``uncertain_windows=N``: the N window-sized cells of highest mean
  entropy, for a labeller (:mod:`ctseg.predict.uncertainty`);
* ``<stem>.gpkg`` with ``vector`` / ``vector_classes``: polygons of those classes (:mod:`ctseg.vectorize.polygons`, with
  the confidence when it is written), in the ``vector`` folder or, for a suffix, beside the class map;
* ``<stem>_pred.png`` (unless ``color=False``) — the class map as a palette PNG (nodata transparent) and its
  legend ``<stem>_legend.png``, for inputs of at most ``png_max_mpx`` megapixels (a PNG needs the whole map in
  memory; above the limit they are skipped with a note);
* ``<stem>_overlay.png`` with ``overlay=True`` (up to ``png_max_mpx`` too): the input with the class colours
  blended on top (:mod:`ctseg.predict.overlay`);

or, with ``format="index-png"``, only ``<stem>.png``: a uint8 single-channel PNG whose values are the class
indices (the LoveDA test server's format), for inputs of at most ``png_max_mpx`` megapixels.

**The model's input.** The data set description comes from, in this order: the ``dataset`` argument (a
registered data set, whose class count must match the model's), the checkpoint's own ``data_info`` (stored by
``ctseg fit``), the registered data set the checkpoint names, and for a 3-band model without any of these a
generic palette with ImageNet normalisation. It fixes the band layout the model takes (``bands``, ``dtype``,
the source ``band_indices``), the normalisation ``(x / scale − mean) / std`` and the palette.

**Inputs.** ``.png`` / ``.jpg`` / ``.jpeg`` (and BMP / GIF / WebP) are read with Pillow, anything else with
rasterio (GDAL: GeoTIFF, JPEG 2000, a ``.vrt`` mosaic over a folder of tiles …). ``input_lists`` name text
files of further inputs, one path per line. An input may also be a raster by address (``https://``, ``s3://``,
``gs://``, ``az://``) or a STAC item (``.json``, local or by address) whose asset is the raster
(:mod:`ctseg.predict.sources`), read window by window over HTTP range requests; ``bbox`` / ``aoi`` cut every
input to a region on its own pixel grid (:mod:`ctseg.predict.region`). Every input must hold the model's dtype
(uint8, uint16 or float32) and, after band selection, its number of bands:

* ``bands`` (``--bands 1,2,3,4``, 1-based) picks the bands, in that order;
* without it, the checkpoint's ``band_indices`` (the source bands the training images were made of), if any;
* otherwise the file must have exactly the model's number of bands (a file with more is refused with the
  ``--bands`` to pass); for a 3-band model a Pillow palette / RGBA / CMYK image counts as RGB.

**Nodata.** With a nodata value — ``nodata`` (``--nodata V``; ``"none"`` turns nodata off), else the raster's
own, else the training data set's — pixels where every selected band equals it get class 255 in the output,
and the output's nodata is 255. ``nodata`` must be finite or NaN (``nan``: the NaN pixels of a float raster;
it matches no pixel of an integer one); ``inf`` is refused. Non-finite values of a float32 input (NaN nodata)
are fed to the model as the band's mean, so that they do not spread through the windows that see them.

**Many files, many processes.** Under ``torchrun`` or SLURM, rank r predicts every world-size-th input from r
on, on GPU ``LOCAL_RANK`` (:mod:`ctseg.predict.shard`). All of this process's inputs, their band layouts and
the output paths are checked before its first prediction, so a bad argument writes nothing (and creates no
output folder); a raster that turns out to be unreadable in the middle, or a disk that fills, is one line and
leaves none of that input's files behind — and the output folders this run made are removed again when no input
was complete.

**All or nothing per input** (:mod:`ctseg.predict.stage`). An input's outputs are written into a hidden staging
folder of their own in the output folder, ``.ctseg-predict-<stem>-<random>/``, which the process holds locked
(``flock``) while it lives. When every file is complete a completion record (``done.json``) is written into it
(atomically), then each file is renamed into the output folder and the staging folder removed. Every run first
looks at the staging folders of processes that are gone (their lock is free; a live one's is never touched):
with a record it finishes the renames, without one it deletes the folder. So after a kill at any instruction the
next run sees each input's outputs complete or absent, and ``skip_existing`` skips an input only when all its
outputs exist and no live process is writing it (it redoes the others, replacing outputs of theirs). The
``vector`` file belongs to the set when it goes into the output folder (``vector=".gpkg"``, or that folder
named); one in another folder is written after the set (a rename cannot move a file atomically across file
systems), atomically on its own, so a kill in between leaves the set without it and ``skip_existing`` redoes
that input. Two predicts into one folder at once end consistent: commits and recoveries take turns on a lock
of the folder.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ctseg.errors import CtsegError
from ctseg.io import ensure_writable_dir
from ctseg.predict.gis import georef_warning
from ctseg.predict.inputs import (
    FORMATS,
    ImageHeader,
    check_decodable,
    check_header,
    fallback_info,
    inspect_image,
    nodata_pixels,
    parse_bands,
    parse_nodata,
    plan_bands,
    read_image,
    resolve_info,
)
from ctseg.predict.outputs import predict_file
from ctseg.predict.plan import Settings, Targets, check_settings
from ctseg.predict.png import write_index_png
from ctseg.predict.region import crop_header, parse_region
from ctseg.predict.shard import Shard, ShardGroup, detect_shard, read_input_list, shard_device
from ctseg.predict.sources import resolve_inputs
from ctseg.predict.stage import clean_legacy, is_pending, pending, recover
from ctseg.predict.write import write_prediction

__all__ = [
    "FORMATS",
    "PROB_DTYPES",
    "ImageHeader",
    "check_decodable",
    "check_header",
    "fallback_info",
    "inspect_image",
    "nodata_pixels",
    "plan_bands",
    "read_image",
    "run_predict",
    "write_index_png",
    "write_prediction",
]

#: ``probs`` choices: the sample type of ``<stem>_probs.tif``.
PROB_DTYPES = ("uint8", "float16")
#: ``runtime`` choices: what runs the model (:mod:`ctseg.checkpoints.onnx_cache`).
RUNTIMES = ("torch", "onnx")
#: Default ``png_max_mpx``: the largest input (megapixels) that gets a PNG (colour or index).
PNG_MAX_MPX = 100.0


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _load(ckpt: Path, dev):
    """The model of a ctseg checkpoint / export, or of an ONNX export (``*.onnx``, run by onnxruntime)."""
    if ckpt.suffix.lower() == ".onnx":
        from ctseg.checkpoints.files import load_onnx_model

        if not ckpt.is_file():
            raise CtsegError(f"checkpoint {ckpt} does not exist or is not a file")
        return load_onnx_model(ckpt, device=str(dev))
    from ctseg.checkpoints.files import load_model

    return load_model(ckpt, device=dev)


def run_predict(
    ckpt: str | os.PathLike,
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    tta: bool = False,
    window: int = 512,
    overlap: float = 0.25,
    batch_size: int = 8,
    color: bool = True,
    overwrite: bool = False,
    device: str = "auto",
    dataset: str | None = None,
    progress: bool = True,
    bands: str | Sequence[int] | None = None,
    nodata: str | float | None = None,
    out_format: str = "geotiff",
    input_lists: Sequence[str | os.PathLike] = (),
    probs: str | None = None,
    confidence: bool = False,
    uncertainty: bool = False,
    uncertain_windows: int | None = None,
    skip_existing: bool = False,
    png_max_mpx: float = PNG_MAX_MPX,
    vector: str | os.PathLike | None = None,
    vector_classes: str | Sequence[str | int] | None = None,
    regularize: bool = False,
    regularize_tolerance: float | None = None,
    vector_workers: int | None = None,
    overlay: bool = False,
    asset: str | None = None,
    bbox: str | Sequence[float] | None = None,
    bbox_crs: str | None = None,
    aoi: str | os.PathLike | None = None,
    shard: Shard | None = None,
    runtime: str = "torch",
) -> list[Path]:
    """Predict every input (this rank's share) into ``out`` (module docstring: outputs); returns the paths written.

    ``bands``: 1-based bands to read (``"1,2,3,4"``); ``nodata``: a value, ``"none"``, or ``None`` for the
    raster's own (else the data set's); ``out_format``: ``"geotiff"`` or ``"index-png"``; ``input_lists``: text
    files of further inputs; ``probs``: ``None``, ``"uint8"`` or ``"float16"``; ``vector``: a folder (or a suffix
    such as ``".gpkg"``: beside the class map) for polygons of ``vector_classes`` (:mod:`ctseg.vectorize.polygons`),
    ``regularize``-d with ``regularize_tolerance`` (map units) as ``ctseg vectorize --regularize`` does, in
    ``vector_workers`` worker processes (default: ``ctseg vectorize``'s, one per CPU up to 8; 0: none);
    ``overlay``: also ``<stem>_overlay.png``; ``asset``: the STAC items' asset (:mod:`ctseg.predict.sources`);
    ``bbox`` (``"MINX,MINY,MAXX,MAXY"``) in ``bbox_crs``, or ``aoi`` (a vector file): predict that region only
    (:mod:`ctseg.predict.region`); ``shard``: this process's share (default: from torchrun's / SLURM's
    environment); ``uncertainty``: also ``<stem>_entropy.tif``, ``uncertain_windows`` N: also
    ``<stem>_uncertain.gpkg`` (implies ``uncertainty``; :mod:`ctseg.predict.uncertainty`); ``runtime``:
    ``"torch"`` (PyTorch eager) or ``"onnx"`` (onnxruntime, on an export made once at ``window`` and cached:
    :mod:`ctseg.checkpoints.onnx_cache`; an ``.onnx`` ``ckpt`` always runs with onnxruntime).
    ``progress``: a bar over windows (with Mpx/s) on a terminal, and a summary line on stderr.
    """
    region = parse_region(bbox, bbox_crs, aoi)
    files = resolve_inputs(inputs, asset)
    for lst in input_lists:
        files += read_input_list(lst)
    if not files:
        raise CtsegError("no input files given")
    if out_format not in FORMATS:
        raise CtsegError(f"--format {out_format}: use one of {', '.join(FORMATS)}")
    if runtime not in RUNTIMES:
        raise CtsegError(f"--runtime {runtime}: use one of {', '.join(RUNTIMES)}")
    if probs is not None and probs not in PROB_DTYPES:
        raise CtsegError(f"--probs {probs}: use one of {', '.join(PROB_DTYPES)}")
    if uncertain_windows is not None:
        if not isinstance(uncertain_windows, int) or uncertain_windows < 1:
            raise CtsegError(f"--uncertain-windows {uncertain_windows}: give a number of windows >= 1")
        uncertainty = True
    if out_format == "index-png" and (probs or confidence or uncertainty):
        raise CtsegError("--probs / --confidence / --uncertainty write GeoTIFFs; they need --format geotiff")
    if out_format == "index-png" and overlay:
        raise CtsegError("--overlay needs --format geotiff (index-png writes only the index PNG)")
    if not png_max_mpx > 0:
        raise CtsegError(f"--png-max-mpx must be positive, got {png_max_mpx}")
    tokens = None
    if (vector is None) != (vector_classes is None):
        raise CtsegError("--vector and --vector-classes go together: the folder and the classes to outline")
    if vector is not None:
        if out_format != "geotiff":
            raise CtsegError("--vector outlines the class GeoTIFF; it needs --format geotiff")
        from ctseg.vectorize.polygons import parse_classes

        tokens = parse_classes(vector_classes)
    if (regularize or regularize_tolerance is not None) and vector is None:
        raise CtsegError("--regularize / --regularize-tolerance shape the --vector polygons; add --vector")
    if regularize_tolerance is not None and not 0 < float(regularize_tolerance) < float("inf"):
        raise CtsegError(f"--regularize-tolerance {regularize_tolerance}: give a size > 0 (map units)")
    if vector_workers is not None:
        if vector is None:
            raise CtsegError("--vector-workers sets the processes that outline --vector; add --vector")
        from ctseg.vectorize.workers import check_workers

        check_workers(vector_workers, "--vector-workers")
    opts = Settings(
        Path(out), tta, int(window), float(overlap), int(batch_size), color, overwrite, device, dataset, progress,
        parse_bands(bands), parse_nodata(nodata), out_format, probs, confidence, skip_existing, float(png_max_mpx),
        files, None if vector is None else str(vector), tokens, bool(overlay), region, bool(regularize),
        None if regularize_tolerance is None else float(regularize_tolerance), bool(uncertainty), uncertain_windows,
        runtime, None if vector_workers is None else int(vector_workers),
    )  # fmt: skip
    shard = detect_shard() if shard is None else shard
    owners: dict[Path, Path] = {}
    for path in files:  # every rank checks all names (no I/O): the shards must not collide either
        for target in opts.targets(path.stem, color).paths():  # e.g. a_uncertain.gpkg of a, the --vector of a_uncertain
            owner = owners.setdefault(target, path)
            if owner is not path:
                raise CtsegError(f"inputs {owner} and {path} would both write {target.name}; rename one")

    with ShardGroup(shard) as group:
        group.agree(files)
        written, stats = _run(Path(ckpt), shard, opts)
        totals = group.gather(stats)
    if progress:
        done, skipped, mpx, secs = stats
        size = f"{mpx:.1f}" if mpx >= 1 else f"{mpx:.3f}"
        line = f"{shard.prefix}ctseg predict: {done} file{'s' if done != 1 else ''}, {size} Mpx in {secs:.1f} s"
        line += f" ({mpx / secs if secs > 0 else 0.0:.2f} Mpx/s)" + (f"; {skipped} skipped" if skipped else "")
        _log(line)
        if totals and shard.rank == 0:
            done, skipped, mpx = (sum(t[k] for t in totals) for k in range(3))
            _log(f"ctseg predict: all {shard.world} ranks: {done} files, {mpx:.1f} Mpx; {skipped} skipped")
    return written


def _run(ckpt: Path, shard: Shard, opts: Settings) -> tuple[list[Path], tuple]:
    """This rank's share: every check, then one input after another; returns (paths, stats)."""
    from tqdm.auto import tqdm

    from ctseg.inference.tile import resolve_device

    dev = shard_device(resolve_device(opts.device), shard)
    if opts.runtime == "onnx" and ckpt.suffix.lower() != ".onnx":  # exported once, then from the cache
        from ctseg.checkpoints.onnx_cache import cached_onnx

        ckpt = cached_onnx(ckpt, opts.window, log=lambda m: _log(shard.prefix + m))
    loaded = _load(ckpt, dev)
    info = resolve_info(loaded, ckpt, opts.dataset)
    check_settings(loaded, info, opts)
    limit = opts.png_max_mpx
    sources = {p.resolve() for p in opts.inputs if isinstance(p, Path)}
    plan: list[tuple[ImageHeader, Targets]] = []
    skipped = 0
    if opts.out_dir.is_dir():  # the staging folders of killed runs: finished or deleted (module docstring)
        _recover(opts.out_dir, shard, opts.progress)
    names: list[str] = []
    busy = pending(opts.out_dir)  # stems a live process is writing: not done, whatever exists
    for path in shard.take(opts.inputs):
        header = inspect_image(path)
        if opts.region is not None:  # the region's window on the input's grid (ctseg.predict.region)
            header, note = crop_header(header, opts.region)
            if note and opts.progress:
                _log(shard.prefix + note)
        mpx = header.height * header.width / 1e6
        targets = opts.targets(path.stem, mpx <= limit)
        names += [t.name for t in targets.paths()]
        done = all(t.exists() for t in targets.paths()) and not is_pending(path.stem, busy)
        if opts.skip_existing and done:
            _log(f"{shard.prefix}ctseg predict: skipping {path}: its outputs exist")
            skipped += 1
            continue
        if opts.out_format == "index-png" and mpx > limit:
            raise CtsegError(
                f"input {path} is {mpx:.0f} Mpx; --format index-png holds the whole class map in memory and "
                f"stops at --png-max-mpx {limit:g}: raise it, or use --format geotiff (streamed)"
            )
        plan_bands(header, info, opts.selected)
        for target in targets.paths():
            if target.resolve() in sources:
                raise CtsegError(f"output {target} would replace an input image; choose another --out folder")
            if target.is_dir():
                raise CtsegError(f"output {target} is a folder; move it away or choose another --out folder")
            if target.exists() and not (opts.overwrite or opts.skip_existing):
                raise CtsegError(f"output {target} exists; pass --overwrite to replace it")
        asked = (("colour PNG", opts.color, targets.color), ("overlay", opts.overlay, targets.overlay))
        pngs = " / ".join(what for what, wanted, got in asked if wanted and got is None)
        if opts.out_format == "geotiff" and pngs and opts.progress:
            _log(f"note: {path} is {mpx:.0f} Mpx: no {pngs} above --png-max-mpx {limit:g} (the GeoTIFF "
                 "carries the colour table)")  # fmt: skip
        plan.append((header, targets))
    for header, _ in plan:  # before the first prediction: a broken file later in the list writes nothing
        check_decodable(header)
    if not plan:
        return [], (0, skipped, 0.0, 0.0)

    show = opts.progress and sys.stderr.isatty()
    written: list[Path] = []
    start, mpx_done = time.perf_counter(), 0.0
    vector_dir = plan[0][1].vector.parent if plan[0][1].vector is not None else None
    created = _missing_levels(opts.out_dir) + ([] if vector_dir is None else _missing_levels(vector_dir))
    try:  # the folders are made only now, and removed again if this run fails before an input is complete
        ensure_writable_dir(opts.out_dir)
        if vector_dir is not None:
            ensure_writable_dir(vector_dir, "--vector folder")
        clean_legacy(opts.out_dir, names)
        for header, targets in tqdm(plan, desc="files", unit="file", disable=not show or len(plan) < 2):
            written += predict_file(loaded, info, header, targets, dev, opts, show)
            mpx_done += header.height * header.width / 1e6
    except BaseException:
        if not written:
            _remove_empty(created)
        raise
    unreferenced = [h.path for h, _ in plan if not h.georeferenced and opts.out_format == "geotiff"]
    if unreferenced:  # once, for what was written (a failed run says only its error): ctseg.predict.gis
        _log(shard.prefix + georef_warning(unreferenced))
    return written, (len(plan), skipped, mpx_done, time.perf_counter() - start)


def _recover(out_dir: Path, shard: Shard, progress: bool) -> None:
    completed, removed = recover(out_dir)
    if progress:
        for stem in completed:
            _log(f"{shard.prefix}ctseg predict: completed the outputs of {stem} in {out_dir} (a killed run had "
                 "finished them)")  # fmt: skip
        if removed:
            _log(f"{shard.prefix}ctseg predict: removed {removed} unfinished output set{'s' if removed != 1 else ''} "
                 f"of killed runs from {out_dir}")  # fmt: skip


def _missing_levels(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    for level in (folder, *folder.parents):
        if level.exists() or level.is_symlink():
            break
        missing.append(level)
    return missing


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders this run made (deepest first) where they are empty: a live process's staging folder
    or anything else inside keeps them."""
    for folder in sorted(set(folders), key=lambda p: len(p.parts), reverse=True):
        try:
            folder.rmdir()
        except OSError:
            pass
