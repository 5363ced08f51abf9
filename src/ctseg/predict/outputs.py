"""One input of ``ctseg predict``, start to finish: streamed through the model by rows of windows
(:mod:`ctseg.inference.rows`) into its outputs — the class COG and its GIS sidecars, probabilities, confidence, the
colour PNG and its legend or the index PNG, the overlay, the entropy and the most uncertain windows
(:mod:`ctseg.predict.uncertainty`) — inside its own staging folder, sealed and renamed into
place together (:mod:`ctseg.predict.stage`), and its polygons (``--vector``). :func:`ctseg.predict.run.run_predict`
checks every input first and then hands each to :func:`predict_file`; the outputs, the nodata rule and the staging
protocol are described in :mod:`ctseg.predict.run`'s docstring.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from ctseg.data.raster import NODATA_CLASS
from ctseg.errors import CtsegError
from ctseg.predict.gis import output_georef, write_class_sidecars
from ctseg.predict.inputs import (
    NO_NODATA,
    ImageHeader,
    open_raster,
    plan_bands,
    raster_georef,
    read_image,
    uses_pillow,
)
from ctseg.predict.overlay import write_overlay_png
from ctseg.predict.plan import Settings, Targets
from ctseg.predict.png import write_color_png, write_index_png, write_legend_png
from ctseg.predict.region import WindowRows, outside_rows
from ctseg.predict.stage import Stage
from ctseg.predict.uncertainty import TopCells, entropy_writer
from ctseg.predict.write import COG_BLOCK, gdal_cache_bytes, open_writers

__all__ = ["predict_file"]


def _nodata_value(opts: Settings, georef: dict, info) -> float | None:
    if opts.nodata is NO_NODATA:
        return None
    if opts.nodata is not None:
        return opts.nodata
    return georef.get("nodata") if georef.get("nodata") is not None else info.nodata


def predict_file(loaded, info, header: ImageHeader, targets: Targets, dev, opts: Settings, show: bool) -> list[Path]:
    """One input's outputs: written into a staging folder, sealed when all are complete and renamed into place
    together (:mod:`ctseg.predict.stage`); returns the final paths."""
    vector_in_set = targets.vector is not None and _same_folder(targets.vector.parent, opts.out_dir)
    in_set = [t for t in targets.paths() if t != targets.vector or vector_in_set]
    stage = Stage(opts.out_dir, header.path.stem, shown=in_set[0])
    try:
        _write_outputs(loaded, info, header, targets, dev, opts, show, stage.dir)
        if vector_in_set:
            conf = None if targets.conf is None else stage.staged(targets.conf)
            ent = None if targets.entropy is None else stage.staged(targets.entropy)
            _vectorize(stage.staged(targets.classes), targets.vector, conf, opts, stage.staged(targets.vector), ent)
        stage.seal(in_set, shown=in_set[0])
    except BaseException:
        stage.discard()
        raise
    written = stage.commit()
    if targets.vector is not None and not vector_in_set:  # another folder: written after the set (run's docstring)
        written.append(_vectorize(targets.classes, targets.vector, targets.conf, opts, entropy=targets.entropy))
    return written


def _write_outputs(
    loaded, info, header: ImageHeader, targets: Targets, dev, opts: Settings, show: bool, work: Path
) -> None:
    """Stream one input through the model into its raster outputs, all written into the folder ``work``."""
    import contextlib

    import rasterio
    from affine import Affine
    from tqdm.auto import tqdm

    from ctseg.inference.entropy import band_rows, entropy_rows
    from ctseg.inference.options import WindowOptions
    from ctseg.inference.rows import (
        ArrayRows,
        RasterRows,
        class_rows,
        confidence_rows,
        plan_grid,
        predict_rows,
        prob_rows,
    )

    height, width = header.height, header.width
    with contextlib.ExitStack() as stack:
        if uses_pillow(header.path):
            image, georef = read_image(header.path, opts.selected, info)
            source = ArrayRows(image)
        else:
            src = stack.enter_context(open_raster(header.path))
            bands = plan_bands(header, info, opts.selected)
            georef = raster_georef(src)
            if header.window is None and isinstance(header.path, Path):
                source = RasterRows(src, bands, header.path)
            else:  # a region (ctseg.predict.region), or a raster by address: the window of the source grid
                window = header.window or (0, 0, src.width, src.height)
                source = WindowRows(src, bands, header.path, window)
                if georef["transform"] is not None:  # the source's grid, offset to the window
                    georef["transform"] = src.transform @ Affine.translation(window[0], window[1])
        georef = output_georef(georef)  # no georeference: upright in pixel units (ctseg.predict.gis)
        value = _nodata_value(opts, georef, info)
        masked = value is not None or header.clip is not None  # outside an --aoi: nodata
        whole = np.zeros((height, width), np.uint8) if targets.color or targets.index or targets.overlay else None
        writers = open_writers(targets, info, height, width, georef, masked, opts.probs, work)
        extra: list = []  # the entropy COG, once open (ctseg.predict.uncertainty)
        try:
            if targets.entropy is not None:
                extra.append(entropy_writer(targets.entropy, height, width, georef, masked, work, tta=opts.tta))
            block = (0, 0) if isinstance(source, ArrayRows) else _source_block(src, bands)
            cache = gdal_cache_bytes(
                width, opts.window, source_bytes=source.count * source.dtype.itemsize * bool(block[0]),
                source_block=block, output_bytes=sum(w.bytes_per_px for w in writers.all() + extra),
            )  # fmt: skip
            stack.enter_context(rasterio.Env(GDAL_CACHEMAX=cache))  # not the height (ctseg.predict.write)
            cells = None
            if targets.uncertain is not None:
                cells = TopCells(opts.uncertain_windows, height, width, opts.window, info.classes)
            grid = plan_grid(loaded.model, height, width, opts.window, opts.overlap)
            bar = stack.enter_context(
                tqdm(total=len(grid.jobs), desc=header.path.name, unit="win", leave=False, disable=not show)
            )
            started, rows_done = time.perf_counter(), [0]
            variance: list = []  # the TTA variance of the rows emit gets next (entropy band 2 with --tta)

            def on_variance(top: int, v) -> None:
                variance[:] = [v]

            def emit(top: int, p, mask) -> None:
                if header.clip is not None:
                    outside = outside_rows(header.clip, georef["transform"], top, p.shape[-2], width)
                    mask = outside if mask is None else mask | outside
                classes = class_rows(p, mask)
                if writers.classes is not None:
                    writers.classes.write(top, classes)
                if whole is not None:
                    whole[top : top + classes.shape[0]] = classes
                if writers.probs is not None:
                    writers.probs.write(top, prob_rows(p, mask, opts.probs))
                if writers.conf is not None:
                    writers.conf.write(top, confidence_rows(p, mask))
                if extra:
                    entropy = entropy_rows(p, mask)
                    extra[0].write(top, np.stack([entropy, band_rows(variance.pop(), mask)]) if opts.tta else entropy)
                    if cells is not None:
                        cells.add(top, entropy, classes)
                rows_done[0] = top + classes.shape[0]

            def on_batch(n: int) -> None:
                bar.update(n)
                secs = time.perf_counter() - started
                if show and secs > 0:
                    bar.set_postfix_str(f"{rows_done[0] * width / 1e6 / secs:.2f} Mpx/s", refresh=False)

            fill = None  # NaN / inf of a float input are fed as the band means (raw scale)
            if source.dtype.kind == "f":
                fill = np.asarray(info.mean, dtype=np.float32) * np.float32(info.scale)
            window_opts = WindowOptions(
                window=opts.window, overlap=opts.overlap, batch_size=opts.batch_size, tta=opts.tta, device=dev,
                mean=info.mean, std=info.std, scale=info.scale,
            )  # fmt: skip
            predict_rows(
                loaded.model, source, emit, options=window_opts, nodata=value, fill=fill, on_batch=on_batch,
                on_variance=on_variance if extra and opts.tta else None,
            )  # fmt: skip
            for w in writers.all() + extra:
                w.finish()
            if cells is not None:
                cells.write(work / targets.uncertain.name, georef)
            if targets.aux is not None:
                write_class_sidecars(targets.aux, targets.qml, info, NODATA_CLASS if masked else None, work)
            if whole is not None and targets.color is not None:
                write_color_png(whole, info, targets.color, work)
                write_legend_png(info, targets.legend, masked, work)
            if whole is not None and targets.overlay is not None:
                write_overlay_png(source, whole, info, targets.overlay, work)
            if whole is not None and targets.index is not None:
                write_index_png(whole, targets.index, work)
        except BaseException:
            for w in writers.all() + extra:
                w.abort()
            raise


def _source_block(src, bands) -> tuple[int, int]:
    """``(rows, columns)`` of the blocks GDAL decodes when ``src`` is read; a VRT's own blocks say nothing of its
    sources', which are taken to be up to 512 rows high."""
    rows, cols = src.block_shapes[bands[0] - 1]
    return (max(rows, COG_BLOCK), max(cols, COG_BLOCK)) if src.driver == "VRT" else (rows, cols)


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _vectorize(
    classes: Path, vector: Path, conf: Path | None, opts: Settings, staged: Path | None = None,
    entropy: Path | None = None,
) -> Path:  # fmt: skip
    """``--vector``: polygons of the class map into ``vector`` (or first into ``staged``, its place in the staging
    folder; a failure still names ``vector``); notes on it (pixel units …) as one line each. With ``conf`` the
    polygons get ``mean_confidence`` / ``min_confidence``, with ``entropy`` (``--uncertainty``) ``mean_entropy``."""
    from ctseg.vectorize.io import notes_as_lines
    from ctseg.vectorize.polygons import vectorize_raster

    out = vector if staged is None else staged
    try:
        with notes_as_lines():
            vectorize_raster(
                classes, out, opts.vector_classes, confidence_tif=conf, entropy_tif=entropy, overwrite=True,
                regularize=opts.regularize, regularize_tolerance=opts.regularize_tolerance, workers=opts.vector_workers,
            )  # fmt: skip
    except CtsegError as err:
        if staged is None:
            raise
        raise CtsegError(str(err).replace(str(staged), str(vector)).replace(str(classes), classes.name)) from None
    return vector
