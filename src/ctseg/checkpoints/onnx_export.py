"""ONNX export: ``ctseg export CKPT model.onnx [--window 512]``.

The inference model (the Segmentor: no projection heads, no optimiser) is traced on a
``(1, in_chans, window, window)`` input with a dynamic batch axis (input ``"input"``, output ``"logits"``,
``(batch, num_classes, window, window)``); the window is fixed. The ONNX model's ``metadata_props`` hold one entry,
``"ctseg"``: the same JSON as the safetensors export's metadata (config, dataset, class names, ignore index,
evaluated classes, data set description; see :mod:`ctseg.checkpoints.files`). The file is checked with
``onnx.checker``, run once with onnxruntime against PyTorch on a random input, and written atomically.

Exporter: the TorchScript-based ``torch.onnx.export(..., dynamo=False)``. The ``torch.export``-based one
(``dynamo=True``) handles the PoolFormer presets but not the Swin ones in torch 2.14: tracing timm's window
attention specialises the batch size (a guard ``batch <= 2``), so no dynamic batch axis can be kept.
:class:`ctseg.inference.onnx.OnnxSegmentor` runs the file.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from ctseg.errors import CtsegError
from ctseg.io import atomic_path

#: The file suffix of an ONNX export.
SUFFIX = ".onnx"
#: ONNX opset of the export (onnxruntime >= 1.14 runs it).
OPSET = 17
INPUT_NAME, OUTPUT_NAME = "input", "logits"
#: Largest ``|onnxruntime - PyTorch|`` logit difference accepted by the check after export, relative to the largest
#: ``|logit|`` (at least 1): float32 sums in another order differ by ~1e-6 of that; a wrong graph by far more.
CHECK_RTOL = 1e-3

__all__ = ["OPSET", "SUFFIX", "export_onnx"]


def _check_out(out: Path, overwrite: bool) -> None:
    if out.suffix.lower() != SUFFIX:
        raise CtsegError(f"ONNX export output {out}: name it *{SUFFIX}")
    if out.is_dir():
        raise CtsegError(f"export output {out} is a folder; name a file")
    if out.exists() and not overwrite:
        raise CtsegError(f"export output {out} already exists; pass --overwrite to replace it")
    if not out.parent.is_dir():
        raise CtsegError(f"output folder {out.parent} does not exist; create it first")


def _trace(model: torch.nn.Module, example: torch.Tensor, opset: int) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # the legacy exporter's deprecation note and the tracer's notes on the fixed H, W checks
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", module=r"torch\.onnx")
        torch.onnx.export(
            model,
            (example,),
            buffer,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    return buffer.getvalue()


def export_onnx(
    ckpt: str | os.PathLike,
    out: str | os.PathLike,
    *,
    window: int = 512,
    overwrite: bool = False,
    opset: int = OPSET,
    check: bool = True,
) -> Path:
    """Write the inference model of ``ckpt`` (a ``ctseg fit`` checkpoint or a safetensors export) to ``out``.

    Args:
        window: the fixed input height and width, a multiple of the model's input multiple (32).
        overwrite: replace an existing ``out`` (refused otherwise).
        opset: ONNX opset (at least 17).
        check: run the exported model with onnxruntime (CPU) on one random batch of 2 and compare its logits
            with PyTorch's (a :class:`CtsegError` when they differ by more than ``CHECK_RTOL`` × max ``|logit|``).

    Returns ``out``.
    """
    import onnx

    from ctseg.checkpoints.files import export_metadata, model_from, read_for_export

    ckpt, out = Path(ckpt), Path(out)
    _check_out(out, overwrite)
    if ckpt.suffix.lower() == SUFFIX:
        raise CtsegError(f"checkpoint {ckpt} is already ONNX; export from the .ckpt or .safetensors file")
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise CtsegError(f"--window {window!r}: give the input side in pixels, a multiple of 32 (e.g. 512)")
    if int(opset) < 17:
        raise CtsegError(f"opset {opset}: ctseg exports opset 17 or later")
    data = read_for_export(ckpt)
    meta = export_metadata(data)
    loaded = model_from(data, ckpt)
    model = loaded.model.eval()
    multiple = int(model.encoder.input_multiple)
    if window % multiple:
        raise CtsegError(f"--window {window}: the model takes sides that are multiples of {multiple} (e.g. 512)")
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(1, loaded.in_chans, window, window, generator=generator)
    try:
        proto = onnx.load_from_string(_trace(model, example, int(opset)))
    except (RuntimeError, torch.onnx.errors.OnnxExporterError) as err:  # an operator ONNX lacks
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CtsegError(f"model of {ckpt.name} cannot be exported to ONNX ({reason[:200]})") from None
    _name_output_dims(proto, model, example)
    entry = proto.metadata_props.add()
    entry.key, entry.value = "ctseg", json.dumps(meta, sort_keys=True)
    proto.producer_name = "ctseg"
    onnx.checker.check_model(proto, full_check=True)
    data = proto.SerializeToString()
    if check:
        batch = torch.randn(2, loaded.in_chans, window, window, generator=generator)
        _compare(data, model, batch, ckpt)
    try:
        with atomic_path(out) as tmp:
            tmp.write_bytes(data)
    except OSError as err:
        raise CtsegError(f"output {out} cannot be written ({err.strerror or err}); choose a writable path") from None
    return out


def _name_output_dims(proto, model: torch.nn.Module, example: torch.Tensor) -> None:
    """Give the output its shape ``(batch, K, window, window)``: the tracer leaves the three fixed dimensions
    symbolic (generated names), so tools that read the graph (and shape inference) learn nothing from them."""
    with torch.no_grad():
        _, classes, height, width = model(example).shape
    dims = proto.graph.output[0].type.tensor_type.shape.dim
    dims[0].dim_param = "batch"
    for dim, value in zip(dims[1:], (classes, height, width), strict=True):
        dim.dim_value = int(value)


def _compare(data: bytes, model: torch.nn.Module, batch: torch.Tensor, ckpt: Path) -> None:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.log_severity_level = 3
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT_NAME], {INPUT_NAME: batch.numpy()})[0]
    with torch.no_grad():
        want = model(batch).numpy()
    diff = float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")
    if not diff <= CHECK_RTOL * max(1.0, float(np.abs(want).max())):
        raise CtsegError(
            f"the ONNX model of {ckpt.name} does not reproduce PyTorch's logits (max difference {diff:.3g}, "
            f"shape {got.shape} vs {want.shape}); please report this with the model name"
        )
