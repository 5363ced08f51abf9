"""Write a prepared folder of synthetic scenes (crops + manifest, the ``ctseg prepare`` format) for benchmarks.

    python benchmarks/make_prepared.py /tmp/synthetic-prepared --train 96 --test 16 --size 512

For machines that hold no real data set (a lent GPU machine gets only the repository): the loader and the
whole-pipeline benchmarks then run through the real :class:`ctseg.data.PreparedDataModule` code path. Crops are
``ctseg.data.synthetic.generate_scene`` scenes, written as ``ctseg prepare`` writes crops (image crops as ZSTD
TIFFs, :func:`ctseg.data.crops.save_image`; masks as PNGs at its level); decoding them
is not the same work as decoding real aerial crops (compare with a prepared Dubai folder on CPU), reading them
from the decoded cache is.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from ctseg.data.crops import IMAGE_SUFFIX, save_image
from ctseg.data.definitions import SYNTHETIC
from ctseg.data.prepare import FORMAT, FORMAT_VERSION, MANIFEST, PNG_LEVEL, info_to_json
from ctseg.data.synthetic import generate_scene


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dst")
    p.add_argument("--train", type=int, default=96)
    p.add_argument("--test", type=int, default=16)
    p.add_argument("--size", type=int, default=512)
    args = p.parse_args()
    dst = Path(args.dst)
    if (dst / MANIFEST).exists():
        print(f"{dst} exists; kept", file=sys.stderr)
        return
    (dst / "images").mkdir(parents=True, exist_ok=True)
    (dst / "masks").mkdir(exist_ok=True)
    jobs = [("train", i) for i in range(args.train)] + [("test", args.train + i) for i in range(args.test)]

    def write(job: tuple[str, int]) -> dict:
        split, i = job
        image, mask = generate_scene(i, args.size)
        name = f"scene{i:05d}"
        save_image(image, dst / "images" / f"{name}{IMAGE_SUFFIX}", None)
        Image.fromarray(mask).save(dst / "masks" / f"{name}.png", compress_level=PNG_LEVEL)
        return {"image": f"images/{name}{IMAGE_SUFFIX}", "mask": f"masks/{name}.png", "tile": name, "group": name,
                "offset": [0, 0], "split": split}  # fmt: skip

    t0 = time.perf_counter()
    with ThreadPoolExecutor() as pool:
        crops = list(pool.map(write, jobs))
    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "dataset": info_to_json(SYNTHETIC),
        "settings": {"dataset": "synthetic", "crop": args.size, "stride": args.size, "resize": None},
        "size": args.size,
        "source": "benchmarks/make_prepared.py",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "crops": crops,
    }
    (dst / MANIFEST).write_text(json.dumps(manifest, indent=1))
    print(
        f"wrote {len(crops)} synthetic crops of {args.size}² in {time.perf_counter() - t0:.1f} s → {dst}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
