"""Text documents from other people (JSON, YAML) parsed with bounds, so that a crafted one can neither hang nor crash.

Three attacks on a parser that a handed file can make, and the bound that stops each before any value is built:

* **size**: a document over ``max_bytes`` (default :data:`MAX_BYTES`, 8 MiB) is refused unread past the limit;
* **nesting**: 200,000 nested brackets make Python's recursive parser (and every later ``str()`` / walk of the
  value) raise ``RecursionError``. The depth of a JSON text is found without recursion — string literals blanked
  by one regular expression, then the running sum of ``+1`` per ``[`` / ``{`` and ``-1`` per ``]`` / ``}`` over
  the bytes (:func:`json_depth`) — and anything deeper than ``max_depth`` (default :data:`MAX_DEPTH`, 64) is refused;
* **expansion** (YAML only): an alias bomb (``a: &a [x, x]``, ``b: &b [*a, *a]``, …) is a few hundred bytes that
  expand to :math:`2^{n}` nodes when built or printed. YAML is loaded with :class:`PlainLoader`, a safe loader
  that refuses every alias (``*name``) and anchor (``&name``): no file ctseg reads needs them.

Each refusal is one :class:`~ctseg.errors.CtsegError` line that names the file and what is wrong.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ctseg.errors import CtsegError

__all__ = ["MAX_BYTES", "MAX_DEPTH", "PlainLoader", "json_depth", "parse_json", "read_json", "read_yaml"]

#: Largest JSON / YAML document ctseg parses from a file it did not write in this run.
MAX_BYTES = 8 * 1024 * 1024
#: Deepest nesting of brackets (JSON) or blocks (YAML) accepted; ctseg's own files nest at most 6 deep.
MAX_DEPTH = 64

_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_OPEN = np.zeros(256, dtype=np.int8)
_OPEN[[ord("["), ord("{")]] = 1
_OPEN[[ord("]"), ord("}")]] = -1


def json_depth(text: str | bytes) -> int:
    """The deepest bracket nesting of a JSON text, found without recursion (0 for a scalar).

    String literals are blanked first (a ``[`` inside ``"..."`` does not count); for a text that is not valid JSON
    the number is still a bound on what a parser would have to recurse through.
    """
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    bare = np.frombuffer(_JSON_STRING.sub(b'""', data), dtype=np.uint8)
    if bare.size == 0:
        return 0
    return int(max(0, np.cumsum(_OPEN[bare], dtype=np.int64).max()))


def parse_json(
    text: str | bytes,
    what: str,
    *,
    max_bytes: int = MAX_BYTES,
    max_depth: int = MAX_DEPTH,
    fix: str = "remove or fix it",
) -> Any:
    """``json.loads(text)`` after the size and nesting bounds; ``what`` names the source in the error line
    (e.g. ``"results.json runs/a/results.json"``), ``fix`` ends the line of a text that is not JSON.
    ``NaN`` / ``Infinity`` are accepted as Python's json does."""
    size = len(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
    if size > max_bytes:
        raise CtsegError(
            f"{what} is {size:,} bytes, over the {max_bytes:,} a ctseg document may have; is it the right file?"
        )
    depth = json_depth(text)
    if depth > max_depth:
        raise CtsegError(f"{what} nests {depth} levels deep (at most {max_depth} are read); is it the right file?")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as err:
        reason = err.msg if isinstance(err, json.JSONDecodeError) else type(err).__name__
        raise CtsegError(f"{what} is not valid JSON ({reason}); {fix}") from None


def _read_bounded(path: Path, what: str, max_bytes: int) -> bytes:
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as err:
        raise CtsegError(f"{what} {path} cannot be read ({err.strerror or type(err).__name__})") from None
    if len(data) > max_bytes:
        raise CtsegError(
            f"{what} {path} is over {max_bytes:,} bytes, more than a ctseg document has; is it the right file?"
        )
    return data


def read_json(
    path: str | os.PathLike,
    what: str = "file",
    *,
    max_bytes: int = MAX_BYTES,
    max_depth: int = MAX_DEPTH,
    fix: str = "remove or fix it",
) -> Any:
    """Parse the JSON file ``path`` within the bounds (:func:`parse_json`); errors name ``what`` and the path."""
    path = Path(path)
    data = _read_bounded(path, what, max_bytes)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise CtsegError(f"{what} {path} is not UTF-8 text; is it the right file?") from None
    return parse_json(text, f"{what} {path}", max_bytes=max_bytes, max_depth=max_depth, fix=fix)


class PlainLoader(yaml.SafeLoader):
    """PyYAML's safe loader without anchors and aliases (no expansion bombs), and nesting at most
    :data:`MAX_DEPTH` deep (no ``RecursionError`` from 100,000 nested ``[``)."""

    def compose_node(self, parent: Any, index: Any) -> Any:  # noqa: D401 - PyYAML hook
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.YAMLError(f"line {event.start_mark.line + 1}: aliases (*name) are not read")
        event = self.peek_event()
        if getattr(event, "anchor", None) is not None:
            raise yaml.YAMLError(f"line {event.start_mark.line + 1}: anchors (&name) are not read")
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.YAMLError(f"line {event.start_mark.line + 1}: nested over {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def read_yaml(path: str | os.PathLike, what: str = "file", *, max_bytes: int = MAX_BYTES) -> Any:
    """Parse the YAML file ``path`` with :class:`PlainLoader` within ``max_bytes``; one error line otherwise."""
    path = Path(path)
    data = _read_bounded(path, what, max_bytes)
    try:
        return yaml.load(data, Loader=PlainLoader)  # noqa: S506 - PlainLoader is a SafeLoader
    except RecursionError:
        raise CtsegError(f"{what} {path} nests too deep to read; is it the right file?") from None
    except yaml.YAMLError as err:
        first = " ".join(str(err).split())[:200]
        raise CtsegError(f"{what} {path} cannot be read ({first})") from None
