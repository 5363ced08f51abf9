"""``ctseg export``: the inference-only model of a checkpoint as safetensors
(:func:`ctseg.checkpoints.files.export_model`) or ONNX (:func:`ctseg.checkpoints.onnx_export.export_onnx`)."""

from __future__ import annotations

import argparse

HELP = "write the inference-only model (no projection heads, no optimiser)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ckpt", metavar="CKPT", help="checkpoint written by 'ctseg fit' (or an older export)")
    parser.add_argument("out", metavar="OUT",
                        help="output file: *.safetensors (weights + JSON metadata, no code) or *.onnx")  # fmt: skip
    parser.add_argument("--format", default=None, choices=["safetensors", "onnx"],
                        help="output format (default: by OUT's suffix)")  # fmt: skip
    parser.add_argument("--window", type=int, default=512,
                        help="onnx: the model's fixed input side in pixels, a multiple of 32 (512); the batch "
                             "size stays free")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT")


def run(args: argparse.Namespace, extra: list[str]) -> int:
    fmt = args.format or ("onnx" if args.out.lower().endswith(".onnx") else "safetensors")
    if fmt == "onnx":
        from ctseg.checkpoints.onnx_export import export_onnx

        print(f"wrote {export_onnx(args.ckpt, args.out, window=args.window, overwrite=args.overwrite)}")
        return 0
    from ctseg.checkpoints.files import export_model

    print(f"wrote {export_model(args.ckpt, args.out, overwrite=args.overwrite)}")
    return 0
