"""Run an ONNX export (:mod:`ctseg.checkpoints.onnx_export`) with onnxruntime, in place of the PyTorch Segmentor.

>>> model = OnnxSegmentor("model.onnx")                 # doctest: +SKIP
>>> logits = model(x)                                    # (B, C, window, window) float32 → (B, K, window, window)

:class:`OnnxSegmentor` is a parameter-free ``nn.Module``, so code written for the Segmentor (``eval()``,
``model.encoder.in_chans``, ``model.encoder.input_multiple``, ``model.num_classes``) runs it unchanged. Its input
multiple is the export window: ``ctseg.inference.tile.predict_tile`` then pads images smaller than the window up to
it, and any other window size is refused in one line. :func:`ctseg.checkpoints.load_onnx_model` returns it as a
:class:`~ctseg.checkpoints.files.LoadedModel` (class names, data set description), as ``load_model`` does for
PyTorch files.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from ctseg.errors import CtsegError
from ctseg.safety.documents import parse_json
from ctseg.safety.model_spec import check_data_info, check_model_metadata

__all__ = ["OnnxSegmentor", "read_onnx_metadata"]


#: Largest ONNX file read (protobuf's own limit: a ctseg export keeps its weights inside the file).
MAX_ONNX_BYTES = 2**31 - 1


def _checked_bytes(path: Path) -> bytes:
    """The bytes of an ONNX file whose tensors are all inside it: an initializer stored as external data names a
    file to open (ONNX's ``external_data.location``), which a handed model may not do (:mod:`ctseg.safety`)."""
    import onnx

    size = path.stat().st_size
    if size > MAX_ONNX_BYTES:
        raise CtsegError(f"ONNX model {path} is {size:,} bytes, over the 2 GiB an ONNX file holds; is it an export?")
    data = path.read_bytes()
    try:
        proto = onnx.load_model_from_string(data)  # external data is never loaded from bytes
    except Exception as err:  # DecodeError and friends
        raise CtsegError(f"ONNX model {path} cannot be loaded ({type(err).__name__}); is it a ctseg export?") from None
    external = [t.name for t in _tensors(proto.graph) if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise CtsegError(
            f"ONNX model {path}: tensor {external[0][:60]!r} is stored in another file (external data), which a "
            "model file may not name; export it again with ctseg export --format onnx"
        )
    return data


def _tensors(graph: Any):
    """Every tensor of an ONNX graph: initializers, ``Constant`` values and those of nested subgraphs."""
    stack = [graph]
    while stack:
        g = stack.pop()
        yield from g.initializer
        yield from (s.values for s in g.sparse_initializer)
        for node in g.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t
                yield from attr.tensors
                if attr.HasField("g"):
                    stack.append(attr.g)
                stack.extend(attr.graphs)


def _session(path: Path, device: str, threads: int | None):
    try:
        import onnxruntime as ort
    except ImportError:
        raise CtsegError("onnxruntime is not installed; pip install onnxruntime (or onnxruntime-gpu)") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads) if threads else torch.get_num_threads()
    options.log_severity_level = 3  # errors only
    # Idle worker threads sleep instead of spinning between windows: the reading, blending and writing between two
    # forwards then get the cores (issue 33: non-model time 1.67 s → 1.17 s on 2 cores).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    providers = ["CPUExecutionProvider"]
    if device == "auto":  # CUDA when both this onnxruntime and torch see a GPU
        cuda = "CUDAExecutionProvider" in ort.get_available_providers() and torch.cuda.is_available()
        device = "cuda" if cuda else "cpu"
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise CtsegError(
                "device cuda: this onnxruntime has no CUDA support; pip install onnxruntime-gpu or use --device cpu"
            )
        providers.insert(0, "CUDAExecutionProvider")
    model = _checked_bytes(path)
    try:
        return ort.InferenceSession(model, options, providers=providers)
    except Exception as err:  # onnxruntime's InvalidProtobuf / Fail / InvalidGraph …
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CtsegError(f"ONNX model {path} cannot be loaded ({reason[:200]}); is it a ctseg ONNX export?") from None


def read_onnx_metadata(session: Any, path: Path) -> dict[str, Any]:
    """The ``"ctseg"`` metadata of an ONNX export (a dict), or a one-line error."""
    text = session.get_modelmeta().custom_metadata_map.get("ctseg")
    if text is None:
        raise CtsegError(f"ONNX model {path} has no ctseg metadata; export it with ctseg export --format onnx")
    meta = parse_json(text, f"ONNX model {path}: its ctseg metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise CtsegError(f"ONNX model {path}: its ctseg metadata is not a ctseg model (no model config)")
    return {**meta, **check_model_metadata(meta, path).metadata()}


class OnnxSegmentor(nn.Module):
    """An ONNX export as a callable ``(B, C, window, window) float32 → (B, K, window, window)`` logits.

    Args:
        path: a ``.onnx`` file written by ``ctseg export --format onnx``.
        device: ``"cpu"`` (CPUExecutionProvider), ``"cuda"`` (CUDAExecutionProvider, CPU as fallback for
            unsupported operators; a one-line error when this onnxruntime has no CUDA) or ``"auto"`` (CUDA
            when available, else CPU). Outputs are returned on the input's device.
        threads: onnxruntime's intra-op threads (default: ``torch.get_num_threads()``).

    Attributes:
        num_classes: the class count ``K`` of the graph's output.
        in_chans: the band count ``C`` of the graph's input.
        window: the export window, the side of the graph's fixed input.
        input_multiple: equal to ``window``.
        meta: the stored ctseg metadata.
        info: the training data set's :class:`~ctseg.data.definitions.DatasetInfo` (``None`` if not stored).
        encoder: ``in_chans`` and ``input_multiple`` where Segmentor code looks for them.
    """

    def __init__(self, path: str | os.PathLike, device: str | torch.device = "cpu", *, threads: int | None = None):
        super().__init__()
        self.path = Path(path)
        if not self.path.is_file():
            raise CtsegError(f"ONNX model {self.path} does not exist")
        self.device_name = str(device)
        self.session = _session(self.path, self.device_name, threads)
        self.meta = read_onnx_metadata(self.session, self.path)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise CtsegError(f"ONNX model {self.path} has {len(inputs)} inputs / {len(outputs)} outputs, not 1 / 1")
        in_shape, out_shape = list(inputs[0].shape), list(outputs[0].shape)
        if len(in_shape) != 4 or not all(isinstance(s, int) for s in in_shape[1:]) or in_shape[2] != in_shape[3]:
            raise CtsegError(f"ONNX model {self.path}: input shape {in_shape}, expected (batch, C, window, window)")
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        self.in_chans, self.window = int(in_shape[1]), int(in_shape[2])
        config = self.meta["config"]
        k = out_shape[1] if len(out_shape) == 4 and isinstance(out_shape[1], int) else config["num_classes"]
        if k != config["num_classes"] or self.in_chans != config.get("in_chans", 3):
            raise CtsegError(
                f"ONNX model {self.path}: its graph takes {self.in_chans} bands and gives {k} classes, its metadata "
                f"says {config.get('in_chans', 3)} and {config['num_classes']}; export it again"
            )
        self.num_classes = int(k)
        self.input_multiple = self.window
        self.encoder = SimpleNamespace(in_chans=self.in_chans, input_multiple=self.input_multiple)
        self.config = dict(config)
        self.info = _info(self.meta, self.path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_chans or tuple(x.shape[-2:]) != (self.window, self.window):
            raise CtsegError(
                f"input of shape {tuple(x.shape)}: this ONNX model takes (B, {self.in_chans}, {self.window}, "
                f"{self.window}) (its export window); use --window {self.window} or export again with --window"
            )
        array = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        logits = self.session.run([self.output_name], {self.input_name: array})[0]
        return torch.from_numpy(logits).to(x.device)

    def extra_repr(self) -> str:
        return f"path={self.path}, num_classes={self.num_classes}, in_chans={self.in_chans}, window={self.window}"


def _info(meta: dict[str, Any], path: Path):
    config = meta["config"]
    return check_data_info(meta.get("data_info"), path, config["num_classes"], config.get("in_chans", 3))
