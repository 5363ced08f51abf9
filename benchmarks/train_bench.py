"""Training-step cost of CT (off vs on, one process), throughput with data loading, FLOPs and MFU.

    python benchmarks/train_bench.py                       # GPU: ds-paper, batch 32, 512², bf16
    python benchmarks/train_bench.py --device cpu --model pf-tiny --batch 4 --size 128 --steps 5 --warmup 2

Measures, in one process, on the same model:
1. median training-step time (forward, seg loss [+ CT], backward, grad clip 1.0, fused AdamW) with CT off and on,
   alternating blocks of steps after warm-up, the device synchronised before each clock read; the ratio on/off;
2. peak memory of each (``torch.cuda.max_memory_allocated``, reset between the two);
3. model FLOPs per training image (``torch.utils.flop_counter``) and the achieved fraction of the device's
   measured bf16 matmul rate (an 8192³ matmul);
4. that the CT loss runs under ``torch.cuda.set_sync_debug_mode("error")``;
5. end-to-end images/s with CT on, data loading included: uint8 crops → DataLoader (workers, pinned memory) →
   GPU augmentation (:class:`ctseg.data.transforms.BatchTrainTransform`) → training step. The crops are
   synthetic scenes held in memory, or with ``--data FOLDER`` a prepared folder read by the real
   :class:`ctseg.data.PreparedDataModule` (fast pipeline; ``--decoded-cache`` reads the decoded uint8 cache
   of :mod:`ctseg.data.decoded`, built first, instead of PNGs).
Prints one JSON object (and writes it with ``--json PATH``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import blocky_masks, device_name, emit, median, prepared_batches, sync, time_call  # noqa: E402

from ctseg.training.task import SegmentationTask  # noqa: E402


def make_task(args, scheme: str, device: torch.device) -> SegmentationTask:
    torch.manual_seed(0)
    task = SegmentationTask(
        model=args.model, img_size=args.size, scheme=scheme, channels_last=args.channels_last, compile=args.compile
    )
    task.to(device)
    task.configure_model()
    return task


def make_step(task: SegmentationTask, device: torch.device, dtype: torch.dtype | None):
    opt = torch.optim.AdamW(task.parameters(), lr=8e-5, weight_decay=0.01, fused=device.type == "cuda")

    def step(batch):
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = task.compute_losses(batch)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(task.parameters(), 1.0)
        opt.step()

    return step


def matmul_rate(device: torch.device) -> float | None:
    """Measured bf16 matmul FLOP/s (CUDA only)."""
    if device.type != "cuda":
        return None
    n = 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    times = [time_call(lambda: a @ b, device) for _ in range(10)]
    return 2 * n**3 / median(times)


def flops_per_image(task: SegmentationTask, batch, device: torch.device, dtype) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        out = task.compute_losses(batch)
        out["loss"].backward()
    task.zero_grad(set_to_none=True)
    return counter.get_total_flops() / batch["image"].shape[0]


def step_times(args, device, dtype, batch):
    """Median step time and peak memory for CT off and on, alternating blocks of steps."""
    results = {}
    tasks = {s: make_task(args, s, device) for s in ("none", args.scheme)}
    steps = {s: make_step(t, device, dtype) for s, t in tasks.items()}
    times: dict[str, list[float]] = {s: [] for s in tasks}
    peaks: dict[str, int] = {}
    for s in tasks:  # warm-up (and compilation) of each, then the peak of a clean step
        for _ in range(args.warmup):
            steps[s](batch)
        sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        steps[s](batch)
        sync(device)
        peaks[s] = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    for _ in range(args.blocks):
        for s in tasks:
            for _ in range(args.steps):
                times[s].append(time_call(lambda s=s: steps[s](batch), device))
    for s in tasks:
        results[s] = {"step_ms": 1000 * median(times[s]), "peak_mem_gib": peaks[s] / 2**30}
    return results, tasks


def sync_free_check(task: SegmentationTask, batch, device, dtype) -> str:
    if device.type != "cuda" or task.contrastive is None:
        return "not run (needs CUDA)"
    feats = [f.detach().requires_grad_() for f in task.net.encode(batch["image"])]
    sync(device)
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = task.contrastive(feats, batch["mask"])
        loss.backward()
    except RuntimeError as err:
        return f"FAILED: {err}"
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return "ok"


def real_batches(args, device):
    """A generator factory over a prepared folder through :class:`PreparedDataModule` (on-device augmentation)."""
    dm, raw_batches = prepared_batches(
        args.data, args.batch, args.workers, args.size, args.decoded_cache, device.type == "cuda"
    )

    def batches():
        for raw in raw_batches:
            raw = {k: v.to(device, non_blocking=True) for k, v in raw.items()}
            yield dm.device_transform(raw, training=True)

    return batches


def synthetic_batches(args, device):
    """A generator factory over synthetic uint8 scenes held in memory (DataLoader + GPU augmentation)."""
    import numpy as np

    from ctseg.data.synthetic import generate_scene
    from ctseg.data.transforms import BatchTrainTransform

    n = args.batch * 4
    images, masks = zip(*(generate_scene(i, args.size) for i in range(n)), strict=True)
    images = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()  # uint8
    masks = torch.from_numpy(np.stack(masks)).long()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(images, masks),
        batch_size=args.batch,
        shuffle=True,
        drop_last=True,
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=args.workers > 0,
    )
    augment = BatchTrainTransform(size=args.size)

    def batches():
        while True:
            for img, msk in loader:
                img = img.to(device, non_blocking=True)
                msk = msk.to(device, non_blocking=True)
                x, y = augment(img, msk)
                yield {"image": x, "mask": y}

    return batches


def full_step_syncs(task: SegmentationTask, batch, device, dtype) -> dict | str:
    """Host syncs in one whole training step (forward, losses, backward, clip, fused AdamW), CUDA only.

    Runs the step under ``torch.cuda.set_sync_debug_mode("warn")`` and counts the warnings: a diagnostic of
    the step outside the CT loss (which must have none; :func:`sync_free_check`).
    """
    import warnings

    if device.type != "cuda":
        return "not run (needs CUDA)"
    step = make_step(task, device, dtype)
    step(batch)
    sync(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step(batch)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    messages = [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message)]
    return {"count": len(messages), "first": messages[:5]}


def loader_throughput(args, task: SegmentationTask, device, dtype) -> dict:
    """Images/s of the whole pipeline with CT on, data loading and GPU augmentation included."""
    step = make_step(task, device, dtype)
    batches = real_batches(args, device) if args.data else synthetic_batches(args, device)
    it = batches()
    for _ in range(args.warmup):
        step(next(it))
    sync(device)
    total = args.steps * args.blocks
    t0 = time.perf_counter()
    for _ in range(total):
        step(next(it))
    sync(device)
    seconds = time.perf_counter() - t0
    return {"images_per_s": total * args.batch / seconds, "steps": total}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--model", default="ds-paper")
    p.add_argument("--scheme", default="ct-cl")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--precision", default=None, help="bf16 | fp32 (default: bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--steps", type=int, default=10, help="steps per timed block")
    p.add_argument("--blocks", type=int, default=3, help="alternating blocks per configuration")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--compile", action="store_true")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--skip-loader", action="store_true")
    p.add_argument("--data", default=None, help="prepared folder for the pipeline measurement (default: synthetic)")
    p.add_argument("--decoded-cache", default=False, nargs="?", const=True, help="with --data: the decoded cache")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device = torch.device(args.device)
    precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")
    dtype = torch.bfloat16 if precision == "bf16" else None
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    batch = {
        "image": torch.randn(args.batch, 3, args.size, args.size, device=device),
        "mask": blocky_masks(args.batch, args.size, 6).to(device),
    }
    res: dict = {
        "device": device_name(device),
        "torch": torch.__version__,
        "model": args.model,
        "scheme": args.scheme,
        "batch": args.batch,
        "size": args.size,
        "precision": precision,
        "compile": args.compile,
        "channels_last": args.channels_last,
        "pipeline_data": args.data or "synthetic, in memory",
        "decoded_cache": bool(args.decoded_cache) if args.data else None,
    }
    steps, tasks = step_times(args, device, dtype, batch)
    off, on = steps["none"], steps[args.scheme]
    res["ct_off"], res["ct_on"] = off, on
    res["time_ratio_on_off"] = on["step_ms"] / off["step_ms"]
    if off["peak_mem_gib"]:
        res["memory_ratio_on_off"] = on["peak_mem_gib"] / off["peak_mem_gib"]
    res["model_images_per_s_ct_on"] = args.batch / (on["step_ms"] / 1000)
    # FLOPs are counted on an eager model (the counter does not see into compiled graphs).
    eager = make_task(argparse.Namespace(**{**vars(args), "compile": False}), "none", device) if args.compile else None
    fpi = flops_per_image(eager or tasks["none"], batch, device, dtype)
    del eager
    res["train_gflop_per_image"] = fpi / 1e9
    rate = matmul_rate(device)
    if rate:
        res["matmul_bf16_tflops"] = rate / 1e12
        res["mfu_ct_on"] = fpi * res["model_images_per_s_ct_on"] / rate
    res["sync_debug_ct_loss"] = sync_free_check(tasks[args.scheme], batch, device, dtype)
    res["syncs_in_full_step"] = full_step_syncs(tasks[args.scheme], batch, device, dtype)
    if not args.skip_loader:
        res["pipeline"] = loader_throughput(args, tasks[args.scheme], device, dtype)
    emit(res, args.json)


if __name__ == "__main__":
    main()
