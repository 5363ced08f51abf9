"""CPU forward speed of one batch of windows: PyTorch eager vs onnxruntime (``ctseg export --format onnx``).

    python benchmarks/onnx_speed.py                                   # pf-tiny and pf-paper, 4 × 3 × 512², all threads
    python benchmarks/onnx_speed.py --models pf-tiny --window 64 --batch 2 --repeats 1 --warmup 0   # smoke test

Random weights (speed does not depend on them); both back ends run the same model on the same batch with the
same thread count (``torch.set_num_threads(n)``, onnxruntime ``intra_op_num_threads=n``); median of
``--repeats`` calls after ``--warmup`` calls, alternating the back ends. The largest logit difference is reported
too. The model goes through the real export (:func:`ctseg.checkpoints.onnx_export.export_onnx`).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_model, emit, median, time_call  # noqa: E402

from ctseg.models import build_model  # noqa: E402


def _checkpoint(name: str, classes: int, window: int, folder: Path) -> tuple[Path, torch.nn.Module]:
    """A ctseg export of ``name`` with random weights (the version-1 layout read by ``ctseg.checkpoints.files``)."""
    torch.manual_seed(0)
    model = build_model(name, classes, img_size=window).eval()
    path = folder / f"{name}.pt"
    torch.save({"format": "ctseg-model", "version": 1, "config": model.config, "state_dict": model.state_dict(),
                "dataset": None, "class_names": [f"class_{i}" for i in range(classes)], "ignore_index": 255,
                "eval_classes": None}, path)  # fmt: skip
    return path, model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["pf-tiny", "pf-paper"])
    p.add_argument("--classes", type=int, default=6)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--window", type=int, default=512)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--json", default=None, help="also write the result here")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    from ctseg.checkpoints.onnx_export import export_onnx
    from ctseg.inference.onnx import OnnxSegmentor

    cpu = torch.device("cpu")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            ckpt, model = _checkpoint(name, args.classes, args.window, Path(tmp))
            onnx_path = export_onnx(ckpt, Path(tmp) / f"{name}.onnx", window=args.window, check=False)
            runtime = OnnxSegmentor(onnx_path, threads=args.threads)
            x = torch.randn(args.batch, 3, args.window, args.window, generator=torch.Generator().manual_seed(0))
            backends = {"pytorch": model, "onnxruntime": runtime}
            times: dict[str, list[float]] = {k: [] for k in backends}
            with torch.inference_mode():
                diff = float((model(x) - runtime(x)).abs().max())
                for i in range(args.warmup + args.repeats):
                    for key, fn in backends.items():
                        t = time_call(lambda fn=fn, x=x: fn(x), cpu)
                        if i >= args.warmup:
                            times[key].append(t)
            row = {"model": name, "max_abs_diff": diff}
            for key, values in times.items():
                row[f"{key}_s"] = median(values)
                row[f"{key}_windows_per_s"] = args.batch / median(values)
            row["speedup"] = row["pytorch_s"] / row["onnxruntime_s"]
            results.append(row)
    import onnxruntime

    host = {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": args.threads, "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__}  # fmt: skip
    emit({"host": host, "batch": [args.batch, 3, args.window, args.window], "results": results}, args.json)


if __name__ == "__main__":
    main()
