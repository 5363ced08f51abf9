"""Full-tile inference speed: megapixels per second of ``predict_tile`` (sliding window, blending, optional TTA).

    python benchmarks/infer_bench.py                                   # GPU: ds-paper, 6000² tile, window 512
    python benchmarks/infer_bench.py --device cpu --model pf-tiny --size 1024 --repeats 3

Random weights (speed does not depend on them) and a random uint8 tile; median of ``--repeats`` after one
warm-up call, the device synchronised before each clock read.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_name, emit, median, time_call  # noqa: E402

from ctseg.inference.options import WindowOptions  # noqa: E402
from ctseg.inference.tile import predict_tile  # noqa: E402
from ctseg.models import build_model  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--model", default="ds-paper")
    p.add_argument("--size", type=int, default=6000, help="tile side in pixels")
    p.add_argument("--window", type=int, default=512)
    p.add_argument("--overlap", type=float, default=0.25)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--tta", action="store_true")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default=None, help="also write the result here")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(args.model, 6, img_size=args.window).to(device).eval()
    tile = np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)

    options = WindowOptions(
        window=args.window, overlap=args.overlap, batch_size=args.batch_size, tta=args.tta, device=device
    )

    def run() -> None:
        predict_tile(model, tile, options=options)

    run()
    seconds = median([time_call(run, device) for _ in range(args.repeats)])
    res = {
        "device": device_name(device),
        "model": args.model,
        "tile": f"{args.size}x{args.size}",
        "window": args.window,
        "overlap": args.overlap,
        "batch_size": args.batch_size,
        "tta": args.tta,
        "seconds": round(seconds, 3),
        "megapixels_per_s": round(args.size * args.size / seconds / 1e6, 3),
    }
    emit(res, args.json)


if __name__ == "__main__":
    main()
