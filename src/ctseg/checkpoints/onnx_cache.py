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

* **pruning**: a cached file's modification time is set each time it is used; whenever an export is made, cached
  exports (files named as above, nothing else) unused for :data:`MAX_AGE_DAYS` days (``$CTSEG_CACHE_MAX_AGE_DAYS``)
  are deleted, so exports of old model files and old ctseg versions do not pile up.

The export takes a few seconds (one trace, one check) and is reported on stderr; later runs only hash the model
file (~0.1 s per 100 MB). The class maps equal PyTorch's except where two classes' probabilities tie within
float32 rounding (the graph sums in another order; benchmarks/README.md counts the pixels).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from ctseg.errors import CtsegError
from ctseg.io import sha256_file

__all__ = ["MAX_AGE_DAYS", "cache_dir", "cached_onnx", "model_digest", "prune_cache"]

#: Cached exports unused for this many days are deleted when a new export is made.
MAX_AGE_DAYS = 30
#: The names this cache gives its files (module docstring); nothing else in the folder is ever deleted.
_NAME = re.compile(r"[0-9a-f]{32}-w[0-9]+-opset[0-9]+-ctseg[0-9A-Za-z.+_-]+\.onnx")


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


def max_age_days() -> float:
    """``$CTSEG_CACHE_MAX_AGE_DAYS`` when it is a number > 0, else :data:`MAX_AGE_DAYS`."""
    try:
        days = float(os.environ.get("CTSEG_CACHE_MAX_AGE_DAYS", MAX_AGE_DAYS))
    except ValueError:
        return float(MAX_AGE_DAYS)
    return days if days > 0 else float(MAX_AGE_DAYS)


def prune_cache(folder: Path, keep: Path | None = None, *, now: float | None = None) -> list[Path]:
    """Delete the cached exports in ``folder`` not used for :func:`max_age_days` days (never ``keep``, never a
    file not named like this cache's); returns what was deleted. A file that cannot be deleted is left."""
    limit = (time.time() if now is None else now) - max_age_days() * 86400.0
    gone = []
    for path in folder.glob("*.onnx"):
        if path == keep or not _NAME.fullmatch(path.name):
            continue
        try:
            if path.is_file() and not path.is_symlink() and path.stat().st_mtime < limit:
                path.unlink()
                gone.append(path)
        except OSError:
            continue
    return gone


def cached_onnx(ckpt: str | os.PathLike, window: int, *, log=None) -> Path:
    """The ONNX export of ``ckpt`` (a ``.ckpt`` / ``.safetensors`` model file) at ``window``, from the cache or
    exported into it now (module docstring). ``log(message)``: told when an export is made."""
    from ctseg import __version__
    from ctseg.checkpoints.onnx_export import OPSET, export_onnx

    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise CtsegError(f"checkpoint {ckpt} does not exist or is not a file")
    folder = cache_dir()
    target = folder / f"{model_digest(ckpt)[:32]}-w{int(window)}-opset{OPSET}-ctseg{__version__}.onnx"
    if target.is_file():
        try:
            os.utime(target)  # used now: kept by prune_cache
        except OSError:
            pass
        return target
    fix = (
        "set CTSEG_CACHE_DIR to a writable folder, or export once with ctseg export --format onnx and pass that "
        ".onnx file as --ckpt"
    )
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as err:
        raise CtsegError(f"the ONNX cache {folder} cannot be created ({err.strerror or err}); {fix}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CtsegError(f"the ONNX cache {folder} is not writable; {fix}")
    start = time.perf_counter()
    export_onnx(ckpt, target, window=int(window), overwrite=True)
    prune_cache(folder, keep=target)
    if log is not None:
        log(f"ctseg: exported {ckpt.name} to ONNX for --runtime onnx (window {int(window)}, "
            f"{time.perf_counter() - start:.1f} s, once): {target}")  # fmt: skip
    return target
