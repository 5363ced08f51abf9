"""Read checkpoint and weights files from other people without running any of their code.

A ``torch.save`` file is a pickle, and a pickle is a program: its ``GLOBAL`` / ``STACK_GLOBAL`` opcodes import
any callable (``os.system``) and ``REDUCE`` calls it. So ctseg never hands an unchecked pickle to an
unpickler; first the globals the pickle names are listed without executing any of it (:func:`scan_torch_file`):

* **zip layout** (what ``torch.save`` writes since torch 1.6; told apart exactly as ``torch.load`` does, by the
  first four bytes ``PK\\x03\\x04``): torch's own judgement,
  :func:`torch.serialization.get_unsafe_globals_in_checkpoint` — the globals of ``data.pkl`` that its
  ``weights_only`` unpickler would not allow. Any of them, or a stream that function cannot walk (an opcode
  the ``weights_only`` unpickler does not know, as ``STACK_GLOBAL`` or ``MEMOIZE`` of protocol 4), refuses the
  file;
* **legacy layout** (five pickles in a row: magic number, protocol, system info, the object, the storage keys)
  and a **raw pickle**, which that function does not read: ctseg's own walk of each stream
  (:func:`_scan_stream`) that mirrors the unpickler — its stack, its marks and its memo numbered exactly as
  Python's (``MEMOIZE`` stores at ``len(memo)``, ``PUT`` / ``BINPUT`` / ``LONG_BINPUT`` at their argument,
  overwriting, ``GET`` reads by index) — so the two operands of a ``STACK_GLOBAL`` are the very values the
  unpickler would pop. Every global must be on :data:`ALLOWED_GLOBALS` (tensor storages of any dtype, the
  tensor rebuild functions, ``collections.OrderedDict``: what ctseg's own files name); ``EXT1/2/4`` (callables
  by number) are refused, and so is anything the walk cannot be sure of (an operand that is not a string the
  stream pushed, a memo slot never written, a stack underflow).

Only then ``torch.load(weights_only=True)``, torch's own restricted unpickler, as the second lock (and the only
one the data passes through: the scan never builds an object). A refused file is one line,
:func:`unsafe_message`, raised as :class:`UnsafeFileError` before any byte of it is unpickled — no torch warning
is printed.

Files that cannot carry code at all (safetensors) skip both steps; ``ctseg export`` writes that format.
"""

from __future__ import annotations

import os
import pickletools
import re
import struct
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
#: Opcodes that push a ``str`` in Python 3 (the only operands ``STACK_GLOBAL`` accepts); the byte-string opcodes
#: of protocol 0-2 push a value that depends on the unpickler's ``encoding``, so the walk does not model it.
_UNICODE_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"}
_MEMO_GETS = {"GET", "BINGET", "LONG_BINGET"}
_MEMO_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}
_NEVER = {"EXT1", "EXT2", "EXT4"}  # the copyreg extension registry: callables by number
_LEGACY_PICKLES = 5  # magic number, protocol, sys info, the object, the storage keys
_ZIP_MAGIC = b"PK\x03\x04"  # torch.serialization._is_zipfile: a zip-layout file starts with a local header
_UNKNOWN = object()  # a stack value the walk does not model (anything but a pushed str)


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

    return isinstance(vars(torch).get(name), torch.dtype)  # no getattr: torch's lazy __getattr__ imports modules


def is_allowed_global(module: str, name: str) -> bool:
    """True for the globals ctseg's own files name: :data:`ALLOWED_GLOBALS`, ``torch.<Dtype>Storage`` and the
    dtypes themselves (``torch.uint16``: tensors of the newer dtypes are stored with an untyped storage)."""
    if (module, name) in ALLOWED_GLOBALS:
        return True
    return module == "torch" and (bool(_STORAGE.fullmatch(name)) or _is_dtype(name))


class _Unsure(Exception):
    """The walk cannot tell what the unpickler would do here (the stream counts as not allowed)."""


def _scan_stream(stream: IO[bytes]) -> list[str]:
    """Walk one pickle (up to its STOP) without executing it; return the globals it names that are not allowed.

    The unpickler's stack, mark stack and memo are mirrored opcode by opcode (values are kept only for the
    strings the stream pushes; anything else is :data:`_UNKNOWN`), so ``STACK_GLOBAL`` is judged on the two
    values the unpickler would pop. A ``STACK_GLOBAL`` whose operands are not such strings, a read of a memo
    slot never written, or a stack underflow counts as not allowed.
    """
    bad: list[str] = []
    stack: list[Any] = []
    marks: list[list[Any]] = []  # the stacks below each MARK (Python's metastack)
    memo: dict[int, Any] = {}

    def pop(n: int) -> list[Any]:
        if n > len(stack):
            raise _Unsure("stack underflow")
        items = stack[len(stack) - n :]
        del stack[len(stack) - n :]
        return items

    try:
        for op, arg, _pos in pickletools.genops(stream):
            name = op.name
            if name in _NEVER:
                bad.append(f"{name} {arg}")
            elif name in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                if not is_allowed_global(module, attr):
                    bad.append(f"{module}.{attr}")
            # the stack effect, as pickle.Unpickler (and _pickle) applies it
            if name == "MARK":
                marks.append(stack)
                stack = []
            elif name in _UNICODE_OPS:
                stack.append(str(arg))
            elif name in _MEMO_PUTS:  # memo[arg] = top, overwriting
                if not stack:
                    raise _Unsure(f"{name} on an empty stack")
                memo[int(arg)] = stack[-1]
            elif name == "MEMOIZE":  # memo[len(memo)] = top: numbered by the count of slots, not the largest
                if not stack:
                    raise _Unsure("MEMOIZE on an empty stack")
                memo[len(memo)] = stack[-1]
            elif name in _MEMO_GETS:
                if int(arg) not in memo:
                    raise _Unsure(f"{name} {arg}: memo slot never written")
                stack.append(memo[int(arg)])
            elif name == "DUP":
                stack.append(pop(1)[0])
                stack.append(stack[-1])
            elif name == "POP" and not stack:  # POP on an empty frame drops the mark instead (pickle.py, _pickle.c)
                if not marks:
                    raise _Unsure("stack underflow")
                stack = marks.pop()
            elif name == "STACK_GLOBAL":
                module, attr = pop(2)
                if not (isinstance(module, str) and isinstance(attr, str) and is_allowed_global(module, attr)):
                    shown = [v if isinstance(v, str) else "?" for v in (module, attr)]
                    bad.append(".".join(shown))
                stack.append(_UNKNOWN)
            else:  # every other opcode: pickletools' declared stack effect, values not modelled
                before = op.stack_before
                if pickletools.markobject in before:
                    if not marks:
                        raise _Unsure(f"{name} without a MARK")
                    stack = marks.pop()  # the items above the mark go with it
                    pop(before.index(pickletools.markobject))  # items below the mark the opcode consumes
                else:
                    pop(len(before))
                stack.extend([_UNKNOWN] * len(op.stack_after))
    except _Unsure as why:
        bad.append(f"? ({why})")
    return bad


def is_zip_layout(path: str | os.PathLike) -> bool:
    """True for the zip layout of ``torch.save``, decided as ``torch.load`` decides it (the first four bytes)."""
    with open(path, "rb") as fh:
        return fh.read(len(_ZIP_MAGIC)) == _ZIP_MAGIC


def _unsafe_in_zip(path: Path) -> list[str]:
    """torch's judgement of a zip-layout file: the globals of its ``data.pkl`` that ``weights_only`` refuses.

    A stream torch's walk cannot follow (an opcode its restricted unpickler does not know) is not allowed;
    a file that is no torch zip at all raises :class:`CtsegError` (by the caller).
    """
    import pickle

    from torch.serialization import get_unsafe_globals_in_checkpoint

    try:
        return sorted(get_unsafe_globals_in_checkpoint(str(path)))
    except pickle.UnpicklingError as err:  # "Unsupported operand …": not something weights_only would load
        return [f"? ({short_reason(err)})"]


def _hint(what: str) -> str:
    return "is it a ctseg checkpoint?" if what == "checkpoint" else "save a plain state dict with torch.save"


def scan_torch_file(path: str | os.PathLike, what: str = "checkpoint", fix: str | None = None) -> None:
    """Refuse (:class:`UnsafeFileError`) a torch file whose pickle names anything but tensors and plain data.

    Raises :class:`CtsegError` for a file that is not a pickle at all. Nothing of the file is executed.
    """
    path = Path(path)
    bad: list[str] = []
    try:
        if is_zip_layout(path):
            bad = _unsafe_in_zip(path)
        else:
            with open(path, "rb") as fh:
                for _ in range(_LEGACY_PICKLES):
                    bad += _scan_stream(fh)
                    if bad:
                        break
    except OSError as err:
        raise CtsegError(f"{what} {path} cannot be read ({short_reason(err)})") from None
    except (ValueError, EOFError, IndexError, TypeError, RuntimeError, struct.error, zipfile.BadZipFile) as err:
        # pickletools: not a pickle / truncated; torch's zip reader: not a torch zip (RuntimeError, ValueError)
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
    torch's own warnings of the load (a pickle protocol other than 2) are not printed: the outcome is either
    the data or one error line.
    """
    import pickle
    import warnings

    import torch

    path = Path(path)
    scan_torch_file(path, what, fix)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.")
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and is_zip_layout(path))
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
