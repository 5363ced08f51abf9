"""Read checkpoint and weights files from other people without running any of their code.

A ``torch.save`` file is a pickle, and a pickle is a program: its ``GLOBAL`` opcodes import any callable
(``os.system``) and ``REDUCE`` calls it. So ctseg never hands an unchecked pickle to ``pickle.load``:

1. **static scan** (:func:`scan_torch_file`): the pickle stream (``data.pkl`` of the zip layout, or the
   five pickles at the head of the legacy layout) is walked with :mod:`pickletools` — which decodes opcodes
   and never executes one. Every global it names must be on :data:`ALLOWED_GLOBALS` — exactly the types
   that ctseg's own files contain (tensor storages of any dtype, the tensor rebuild functions,
   ``collections.OrderedDict``) — and no opcode may fetch a callable another way (``EXT1/2/4``; ``INST`` /
   ``OBJ`` / ``STACK_GLOBAL`` only with an allowed name). Anything else is refused before a byte of it runs;
2. only then ``torch.load(weights_only=True)``, torch's own restricted unpickler, as a second lock (and the
   only one the data passes through: the scan never builds an object).

Files that cannot carry code at all (safetensors) skip both steps; ``ctseg export`` writes that format.
"""

from __future__ import annotations

import io
import os
import pickletools
import re
import zipfile
from pathlib import Path
from typing import IO, Any

from ctseg.errors import CtsegError

#: (module, name) pairs a ctseg checkpoint may name; ``torch.<Dtype>Storage`` is matched by pattern below.
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("collections", "OrderedDict"),
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_tensor_v3"),
        ("torch._utils", "_rebuild_parameter"),
        ("torch", "UntypedStorage"),
        ("torch.storage", "UntypedStorage"),
    }
)
_STORAGE = re.compile(r"[A-Z][A-Za-z0-9]*Storage")
_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"}
_MEMO_GETS = {"GET", "BINGET", "LONG_BINGET"}
_MEMO_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}
_NEVER = {"EXT1", "EXT2", "EXT4"}  # the copyreg extension registry: callables by number
_LEGACY_PICKLES = 5  # magic number, protocol, sys info, the object, the storage keys


class UnsafeFileError(CtsegError):
    """A file that names code to run (a global outside :data:`ALLOWED_GLOBALS`); refused before loading."""


def unsafe_message(path: str | os.PathLike, what: str = "checkpoint", fix: str | None = None) -> str:
    """The one line of a refusal (the CLI prefixes ``ctseg: error:``)."""
    fix = fix or "Re-export it with ctseg export from a trusted copy."
    return (
        f"{what} {path} holds objects other than tensors and plain data; refusing to load it "
        f"(loading it could run code). {fix}"
    )


def short_reason(err: BaseException, limit: int = 160) -> str:
    """``Type: first line of the message``, shortened at a word boundary (never mid-word)."""
    text = " ".join(str(err).strip().splitlines()[0].split()) if str(err).strip() else ""
    if len(text) > limit:
        cut = text[:limit].rsplit(" ", 1)[0].rstrip(" ,;:")
        text = f"{cut} …"
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _is_dtype(name: str) -> bool:
    import torch

    return isinstance(getattr(torch, name, None), torch.dtype)


def is_allowed_global(module: str, name: str) -> bool:
    """True for the globals ctseg's own files name: :data:`ALLOWED_GLOBALS`, ``torch.<Dtype>Storage`` and the
    dtypes themselves (``torch.uint16``: tensors of the newer dtypes are stored with an untyped storage)."""
    if (module, name) in ALLOWED_GLOBALS:
        return True
    return module == "torch" and (bool(_STORAGE.fullmatch(name)) or _is_dtype(name))


def _scan_stream(stream: IO[bytes]) -> list[str]:
    """Walk one pickle (up to its STOP) without executing it; return the globals it names that are not allowed.

    ``STACK_GLOBAL`` takes module and name from the stack: they are resolved from the two string pushes
    (or memo reads of strings) just before it; anything else counts as not allowed.
    """
    bad: list[str] = []
    memo: dict[int, Any] = {}
    recent: list[Any] = []  # values of the last pushes (strings, or None for anything else)
    next_memo = 0
    for op, arg, _pos in pickletools.genops(stream):
        name = op.name
        if name in _NEVER:
            bad.append(f"{name} {arg}")
        elif name in ("GLOBAL", "INST"):
            module, _, attr = str(arg).partition(" ")
            if not is_allowed_global(module, attr):
                bad.append(f"{module}.{attr}")
        elif name == "STACK_GLOBAL":
            if len(recent) >= 2 and isinstance(recent[-2], str) and isinstance(recent[-1], str):
                module, attr = recent[-2], recent[-1]
            else:
                module, attr = "?", "?"
            if not is_allowed_global(module, attr):
                bad.append(f"{module}.{attr}")
        if name in _STRING_OPS:
            value = arg.decode("latin-1") if isinstance(arg, bytes) else arg
            recent.append(value)
        elif name in _MEMO_GETS:
            recent.append(memo.get(int(arg)))
        elif name in _MEMO_PUTS:
            memo[int(arg)] = recent[-1] if recent else None
        elif name == "MEMOIZE":
            memo[next_memo] = recent[-1] if recent else None
            next_memo += 1
        elif name not in ("FRAME", "PROTO", "MARK"):
            recent.append(None)
        if name in _MEMO_PUTS:
            next_memo = max(next_memo, int(arg) + 1)
        del recent[:-2]
    return bad


def _zip_pickle(path: Path) -> bytes | None:
    """The ``*/data.pkl`` of a zip-layout torch file, or None for another layout."""
    if not zipfile.is_zipfile(path):
        return None
    with zipfile.ZipFile(path) as zf:
        names = [n for n in zf.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(names) != 1:
            raise CtsegError(f"{path} is a zip file but not a torch checkpoint (no single data.pkl inside)")
        return zf.read(names[0])


def _hint(what: str) -> str:
    return "is it a ctseg checkpoint?" if what == "checkpoint" else "save a plain state dict with torch.save"


def scan_torch_file(path: str | os.PathLike, what: str = "checkpoint", fix: str | None = None) -> None:
    """Refuse (:class:`UnsafeFileError`) a torch file whose pickle names anything but tensors and plain data.

    Raises :class:`CtsegError` for a file that is not a pickle at all. Nothing of the file is executed.
    """
    path = Path(path)
    bad: list[str] = []
    try:
        data = _zip_pickle(path)
        streams = 1 if data is not None else _LEGACY_PICKLES
        with io.BytesIO(data) if data is not None else open(path, "rb") as fh:
            for _ in range(streams):
                bad += _scan_stream(fh)
                if bad:
                    break
    except (OSError, zipfile.BadZipFile) as err:
        raise CtsegError(f"{what} {path} cannot be read ({short_reason(err)})") from None
    except (ValueError, EOFError, IndexError, TypeError) as err:  # pickletools: not a pickle / truncated
        if bad:
            raise UnsafeFileError(unsafe_message(path, what, fix)) from None
        raise CtsegError(
            f"{what} {path} cannot be read (not a torch file: {short_reason(err)}); {_hint(what)}"
        ) from None
    if bad:
        raise UnsafeFileError(unsafe_message(path, what, fix))


def load_torch_file(
    path: str | os.PathLike, what: str = "checkpoint", fix: str | None = None, *, mmap: bool = False
) -> Any:
    """:func:`scan_torch_file`, then ``torch.load(map_location="cpu", weights_only=True)``.

    ``mmap``: memory-map the tensors (zip layout only) — reading the structure of a large file is then cheap.
    """
    import pickle

    import torch

    path = Path(path)
    scan_torch_file(path, what, fix)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and zipfile.is_zipfile(path))
    except pickle.UnpicklingError as err:
        if "unsupported global" in str(err).lower():  # torch's restricted unpickler refused a name the scan let through
            raise UnsafeFileError(unsafe_message(path, what, fix)) from None
        raise CtsegError(f"{what} {path} cannot be read ({short_reason(err)})") from None
    except Exception as err:  # truncated, corrupt, not a torch file, ...
        raise CtsegError(f"{what} {path} cannot be read ({short_reason(err)}); {_hint(what)}") from None


def is_safetensors(path: str | os.PathLike) -> bool:
    """True when the file starts like a safetensors file (8-byte little-endian header size, then ``{``)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
    except OSError:
        return False
    if len(head) < 9 or head[8:9] != b"{":
        return False
    size = int.from_bytes(head[:8], "little")
    try:
        return 2 <= size <= Path(path).stat().st_size - 8
    except OSError:
        return False
