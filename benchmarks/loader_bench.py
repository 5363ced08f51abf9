"""Data-loading rate of the real training loader: crop files vs the decoded uint8 cache, by worker count.

    python benchmarks/loader_bench.py --data data/dubai                      # batch 32, workers 0 1 2
    python benchmarks/loader_bench.py --data data/dubai --also-png           # + the same crops as PNG files
    python benchmarks/loader_bench.py --data data/potsdam --workers 0 4 8 --device cuda

What a GPU needs from the host at the issue-7 target is 500 images/s of 512² crops. This measures what the
training loader of :class:`ctseg.data.PreparedDataModule` delivers in its fast pipeline
(``augment_on_device=True``: workers only produce uint8 crops, batched; augmentation runs on the device) with
the crops read from their files (``source: files``; ZSTD TIFF image crops since issue 33, PNG in older folders) and
from the decoded cache (:mod:`ctseg.data.decoded`), for each worker count:
images/s of uint8 batches (median over ``--repeats`` passes of ``--batches`` batches, after a warm-up pass
that also starts the workers), and the host-CPU cost per image with no workers (one core's work: decode or
copy); also the seconds taken to build the cache of the train and test splits (``cache_build_s``; near 0 when
it already existed).
``--also-png`` also measures a copy of the folder whose image crops are level-1 PNGs (``source: files-png``: the
format ``ctseg prepare`` wrote before issue 33, which the loader still reads), made in a temporary folder.
With ``--device``, each batch is also moved there and augmented (:meth:`PreparedDataModule.device_transform`),
the device synchronised before each clock read. Prints one JSON object (``--json PATH`` writes it too).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_model, device_name, emit, median, prepared_batches, sync  # noqa: E402

from ctseg.data.prepared import PreparedDataset  # noqa: E402


def measure(args, data: str, cache: str | bool, workers: int, device: torch.device | None) -> dict:
    pin = device is not None and device.type == "cuda"
    dm, it = prepared_batches(data, args.batch, workers, args.size, cache, pin)

    def run(n: int) -> float:
        if device is not None:
            sync(device)
        t0 = time.perf_counter()
        for _ in range(n):
            batch = next(it)
            if device is not None:
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                dm.device_transform(batch, training=True)
        if device is not None:
            sync(device)
        return time.perf_counter() - t0

    run(max(2, workers))  # warm-up: starts the workers, fills the page cache
    seconds = median([run(args.batches) for _ in range(args.repeats)])
    images = args.batch * args.batches
    return {"images_per_s": images / seconds, "ms_per_image": 1000 * seconds / images}


def png_copy(data: str, dst: Path) -> str:
    """A copy of the prepared folder ``data`` in ``dst`` with every image crop re-encoded as a level-1 PNG (the same
    pixels; masks and the decoded cache untouched)."""
    import numpy as np
    from PIL import Image

    from ctseg.data.crops import PNG_LEVEL, read_crop_image
    from ctseg.data.manifest import MANIFEST

    src = Path(data)
    manifest = json.loads((src / MANIFEST).read_text())
    (dst / "images").mkdir(parents=True)
    (dst / "masks").symlink_to((src / "masks").resolve())
    for crop in manifest["crops"]:
        image = read_crop_image(src / crop["image"])  # (C, H, W) uint8
        name = Path(crop["image"]).with_suffix(".png")
        Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0))).save(dst / name, compress_level=PNG_LEVEL)
        crop["image"] = name.as_posix()
    (dst / MANIFEST).write_text(json.dumps(manifest))
    return str(dst)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="a prepared folder (ctseg prepare ...)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=512, help="training crop side (used by the augmentation)")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--batches", type=int, default=10, help="batches per timed pass")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default=None, help="also move each batch there and augment it (cpu | cuda)")
    p.add_argument("--cache-dir", default=None, help="decoded cache folder (default: a temporary one)")
    p.add_argument("--also-png", action="store_true", help="also time the crops re-encoded as PNG (older folders)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)  # the main process's own work (collation) on one core, like a training run's
    device = torch.device(args.device) if args.device else None
    res: dict = {
        "host": f"{cpu_model()}, {os.cpu_count()} cores",
        "device": device_name(device) if device is not None else None,
        "data": args.data,
        "batch": args.batch,
        "size": args.size,
        "results": [],
    }
    with tempfile.TemporaryDirectory(prefix="ctseg-decoded-") as tmp:
        cache_dir = args.cache_dir or tmp
        t0 = time.perf_counter()
        for split in dict.fromkeys(("train", "test")):  # the data modules' default splits
            PreparedDataset(args.data, split, decoded_cache=cache_dir)  # builds the cache (or opens it)
        res["cache_build_s"] = time.perf_counter() - t0
        sources = [("files", args.data, False), ("decoded", args.data, cache_dir)]
        if args.also_png:
            sources.insert(1, ("files-png", png_copy(args.data, Path(tmp) / "png"), False))
        for source, data, cache in sources:
            for workers in args.workers:
                row = {"source": source, "workers": workers, **measure(args, data, cache, workers, device)}
                res["results"].append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    emit(res, args.json)


if __name__ == "__main__":
    main()
