"""ONNX exports made on first use: ``ctseg predict --runtime onnx --ckpt model.safetensors``.

On a CPU, onnxruntime runs ctseg's models 1.8–2.3× faster than PyTorch eager (benchmarks/README.md, "ONNX Runtime
vs PyTorch on CPU"), but it runs a file that ``ctseg export --format onnx`` writes for one fixed window. With
``--runtime onnx`` predict makes that file itself, once, and keeps it in a cache:

* **where**: ``$CTSEG_CACHE_DIR/onnx/``, else ``$XDG_CACHE_HOME/ctseg/onnx/``, else ``~/.cache/ctseg/onnx/`` — a
  folder of the user's (created ``0700``), never beside the model (a model folder may be read-only or shared,
  and a file found beside a handed model would be a second, unchecked model);
* **name**: ``<sha256 of the model file's bytes, 32 hex digits>-w<window>-opset<N>-ctseg<version>.onnx``, so a
  changed model file, another window or another ctseg version gets its own export, and nothing about the file
  name comes from the model itself;
* **how**: :func:`ctseg.checkpoints.onnx_export.export_onnx` (the checked export: onnx's checker and onnxruntime
  against PyTorch on a random batch), written atomically, so concurrent predicts (shards) both end with a
  complete file. The cached file is then opened like any ONNX model handed to ctseg
  (:class:`ctseg.inference.onnx.OnnxSegmentor`: tensors inside the file, metadata checked).

The export takes a few seconds (one trace, one check) and is reported on stderr; later runs only hash the model
file (~0.1 s per 100 MB). The class maps equal PyTorch's except where two classes' probabilities tie within
float32 rounding (the graph sums in another order; benchmarks/README.md counts the pixels).
"""

from __future__ import annotations

import os
from pathlib import Path

from ctseg.errors import CtsegError
from ctseg.io import sha256_file

__all__ = ["cache_dir", "cached_onnx", "model_digest"]


def cache_dir() -> Path:
    """The folder of ctseg's cached ONNX exports (module docstring)."""
    root = os.environ.get("CTSEG_CACHE_DIR")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = str(Path(xdg) / "ctseg") if xdg else str(Path.home() / ".cache" / "ctseg")
    return Path(root).expanduser() / "onnx"


def model_digest(path: Path) -> str:
    """The SHA-256 of the model file's bytes, hex (:func:`ctseg.io.sha256_file`)."""
    return sha256_file(path)


def cached_onnx(ckpt: str | os.PathLike, window: int, *, log=None) -> Path:
    """The ONNX export of ``ckpt`` (a ``.ckpt`` / ``.safetensors`` model file) at ``window``, from the cache or
    exported into it now (module docstring). ``log(message)``: told when an export is made."""
    import time

    from ctseg import __version__
    from ctseg.checkpoints.onnx_export import OPSET, export_onnx

    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise CtsegError(f"checkpoint {ckpt} does not exist or is not a file")
    folder = cache_dir()
    target = folder / f"{model_digest(ckpt)[:32]}-w{int(window)}-opset{OPSET}-ctseg{__version__}.onnx"
    if target.is_file():
        return target
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as err:
        raise CtsegError(
            f"the ONNX cache {folder} cannot be created ({err.strerror or err}); set CTSEG_CACHE_DIR to a writable "
            "folder, or export once with ctseg export --format onnx and pass that .onnx file as --ckpt"
        ) from None
    start = time.perf_counter()
    export_onnx(ckpt, target, window=int(window), overwrite=True)
    if log is not None:
        log(f"ctseg: exported {ckpt.name} to ONNX for --runtime onnx (window {int(window)}, "
            f"{time.perf_counter() - start:.1f} s, once): {target}")  # fmt: skip
    return target
