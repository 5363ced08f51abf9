"""Remote ``ctseg predict`` of a box of a COG served over HTTP: bytes fetched against bytes the box covers, Mpx/s.

    python benchmarks/remote_predict.py                       # 8192² COG, a 1024² box, pf-tiny, window 256, CPU
    python benchmarks/remote_predict.py --size 4096 --box 512 --json out.json

A 3-band uint8 COG (512² DEFLATE tiles, internal overviews; smooth random content, as
``predict_memory.py`` makes it) is generated into ``--workdir`` (reused by later runs) and served by a local HTTP
server on 127.0.0.1 with range requests (``tests/helpers/range_server.py``, which counts the bytes it sends). The box
(``--box`` pixels square at ``--offset``, not aligned to the tiles) is predicted twice with an untrained pf-tiny
through ``ctseg.predict.run.run_predict`` — the code behind ``ctseg predict --bbox`` —, once by its URL and once
from the local file, and the script reports

* ``bytes_fetched``, ``requests``: what the server sent for the remote run (the COG's header, then the tiles);
* ``tile_bytes``: the compressed size of the full-resolution tiles the box touches (from the TIFF's tile byte
  counts) and ``box_raw_bytes``: the box's pixels uncompressed (width × height × 3);
* ``fetched_per_tile_byte`` / ``fetched_per_raw_byte``: the ratios; ``cog_bytes``: the file's size;
* ``remote_mpx_s`` / ``local_mpx_s``: box megapixels per second of ``run_predict`` wall time (model load and checks
  included), by URL and from the disk; ``machine``: CPUs, their model and the 1-minute load before and after.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))  # helpers.range_server
from common import cpu_model, emit  # noqa: E402
from predict_memory import make_checkpoint, make_raster  # noqa: E402

RES = 0.1  # make_raster's pixel size (m); its origin
X0, Y0 = 500_000.0, 5_800_000.0


def make_cog(path: Path, size: int) -> Path:
    """The COG of ``make_raster``'s tiled GeoTIFF (512² tiles, DEFLATE, overviews)."""
    import rasterio
    import rasterio.shutil

    if path.is_file():
        return path
    tiled = make_raster(path.with_name(f"tiled_{size}.tif"), size, size)
    part = path.with_suffix(".part.tif")
    with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"):
        rasterio.shutil.copy(tiled, part, driver="COG", blocksize=512, compress="deflate")
    os.replace(part, path)
    tiled.unlink()
    return path


def tile_bytes(path: Path, col: int, row: int, width: int, height: int) -> tuple[int, int]:
    """(compressed bytes, count) of the full-resolution tiles the window touches."""
    import rasterio

    with rasterio.open(path) as src:
        bh, bw = src.block_shapes[0]
        tiles = [(c, r) for c in range(col // bw, (col + width - 1) // bw + 1)
                 for r in range(row // bh, (row + height - 1) // bh + 1)]  # fmt: skip
        return sum(int(src.get_tag_item(f"BLOCK_SIZE_{c}_{r}", "TIFF", bidx=1)) for c, r in tiles), len(tiles)


def loadavg() -> float:
    with open("/proc/loadavg") as fh:
        return float(fh.read().split()[0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=8192, help="COG side in pixels (8192)")
    p.add_argument("--box", type=int, default=1024, help="box side in pixels (1024)")
    p.add_argument("--offset", type=int, default=3000, help="box's column and row offset (3000)")
    p.add_argument("--window", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "0")) or os.cpu_count())
    p.add_argument("--workdir", default=None, help="where the COG, checkpoint and outputs go (default: temp)")
    p.add_argument("--json", default=None, help="also write the result here")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from helpers.range_server import RangeServer

    from ctseg.predict.run import run_predict

    torch.set_num_threads(args.threads)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="ctseg-remote-predict-"))
    served = work / "served"
    served.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cog = make_cog(served / f"cog_{args.size}.tif", args.size)
    make_s = time.perf_counter() - t0
    ckpt = make_checkpoint(work / "pf-tiny-6.ckpt", "pf-tiny", 6)
    col = row = args.offset
    side = args.box
    bbox = (X0 + col * RES, Y0 - (row + side) * RES, X0 + (col + side) * RES, Y0 - row * RES)
    run = {"window": args.window, "batch_size": args.batch_size, "device": "cpu", "overwrite": True,
           "progress": False, "color": False, "bbox": ",".join(f"{v:.3f}" for v in bbox)}  # fmt: skip
    load_before = loadavg()
    with RangeServer(served) as server:
        server.reset()
        t0 = time.perf_counter()
        run_predict(ckpt, [server.url(cog.name)], work / "out-remote", **run)
        remote_s = time.perf_counter() - t0
        fetched, requests = server.bytes_sent, server.requests
    t0 = time.perf_counter()
    run_predict(ckpt, [cog], work / "out-local", **run)
    local_s = time.perf_counter() - t0
    tiles, count = tile_bytes(cog, col, row, side, side)
    mpx = side * side / 1e6
    import rasterio

    emit({
        "cog": str(cog), "cog_side": args.size, "cog_bytes": cog.stat().st_size, "make_seconds": make_s,
        "box": [col, row, side, side], "window": args.window, "batch_size": args.batch_size,
        "bytes_fetched": fetched, "requests": requests, "tile_bytes": tiles, "tiles": count,
        "box_raw_bytes": side * side * 3, "fetched_per_tile_byte": fetched / tiles,
        "fetched_per_raw_byte": fetched / (side * side * 3), "fetched_per_cog_byte": fetched / cog.stat().st_size,
        "remote_seconds": remote_s, "local_seconds": local_s, "remote_mpx_s": mpx / remote_s,
        "local_mpx_s": mpx / local_s,
        "machine": {"nproc": os.cpu_count(), "cpu": cpu_model(), "torch_threads": torch.get_num_threads(),
                    "loadavg_1min_before": load_before, "loadavg_1min_after": loadavg(),
                    "gdal": rasterio.__gdal_version__, "torch": torch.__version__},
    }, args.json)  # fmt: skip


if __name__ == "__main__":
    main()
