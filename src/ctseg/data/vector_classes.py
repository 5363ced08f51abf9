"""The classes file of ``ctseg prepare vector`` (:mod:`ctseg.data.sets.vector`): which attribute value is which class.

The folder data set's ``classes.yaml`` (:mod:`ctseg.data.sets.folder`: ``name``, ``classes`` in index order,
``eval_classes``, ``mean`` / ``std``, a display ``color`` per class), where ``value:`` is the value the polygons
of a class hold in ``--class-field`` — a string or a number — and two keys of its own::

    name: city
    classes:
      - {name: background}                        # no value: the pixels no polygon covers (background: below)
      - {name: building, value: building}         # polygons whose class field is "building"
      - {name: road, value: road, color: "#ffff99"}
      - {name: water, value: 3}                   # numbers match numbers (3 and 3.0 alike), text matches text
    background: background                        # optional: without it, pixels no polygon covers are ignore
    ignore: [unsure]                              # optional: values whose polygons are "no label" (ignore)

Where polygons of different classes overlap, the class later in the list wins; polygons of an ``ignore`` value win
over every class. Every class has a ``value`` except the ``background`` class, which may have none. A value the
file holds that the classes file does not list is an error (:func:`unknown_value`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ctseg.data.definitions import IGNORE_INDEX
from ctseg.errors import CtsegError

#: The class index of a value the classes file does not list (never a class, never ignore).
UNKNOWN = -1

Key = tuple[str, Any]


def value_key(value: Any) -> Key | None:
    """How an attribute value is matched: numbers by value (``("n", 3.0)``), everything else as text
    (``("s", "building")``); ``None`` for a missing value (NULL, NaN)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, bool | np.bool_ | numbers.Number):
        number = float(value)
        return None if math.isnan(number) else ("n", number)
    return ("s", str(value))


def shown_value(key: Key | None) -> str:
    """A value as messages print it: ``'building'``, ``3``, ``2.5`` or ``NULL``."""
    if key is None:
        return "NULL"
    kind, value = key
    if kind == "s":
        return repr(value)
    return str(int(value)) if float(value).is_integer() else repr(value)


def _key(raw: Any, where: str) -> Key:
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise CtsegError(f"{where}: value {raw!r} is not a string or a number (the polygons' --class-field value)")
    if isinstance(raw, str) and not raw.strip():
        raise CtsegError(f"{where}: value is an empty string")
    if isinstance(raw, float) and not math.isfinite(raw):
        raise CtsegError(f"{where}: value {raw!r} is not a finite number")
    key = value_key(raw)
    assert key is not None
    return key


def read_vector_classes(path: Path) -> dict[str, Any]:
    """Parse and check a vector ``classes.yaml`` (module docstring); every problem is one line naming the file.

    Returns the folder data set's description (:func:`~ctseg.data.sets.folder.read_classes`: ``name``,
    ``classes``, ``display``, ``eval_classes``, ``mean``, ``std``) with ``lookup`` (value key → class index, or
    :data:`~ctseg.data.definitions.IGNORE_INDEX` for an ``ignore`` value), ``background`` (class index or
    ``None``) and ``known`` (the values, as messages show them).
    """
    from ctseg.data.sets.folder import check_classes
    from ctseg.safety.documents import read_yaml

    path = Path(path)
    if not path.is_file():
        raise CtsegError(f"classes file {path} does not exist; write one (see docs/vector-labels.md)")
    doc = read_yaml(path, "classes file", max_bytes=1024 * 1024)
    if not isinstance(doc, dict) or not isinstance(doc.get("classes"), list) or not doc["classes"]:
        raise CtsegError(f"classes file {path}: expected a mapping with a non-empty 'classes' list")
    doc = dict(doc)
    background = doc.pop("background", None)
    ignore_raw = doc.pop("ignore", None)
    names = [entry.get("name") if isinstance(entry, dict) else None for entry in doc["classes"]]
    if background is not None and (not isinstance(background, str) or background not in names):
        raise CtsegError(
            f"classes file {path}: background {background!r} is not one of the classes "
            f"({', '.join(str(n) for n in names)}); name the class no polygon's pixels get"
        )
    lookup: dict[Key, int] = {}
    placeholders = []
    for i, entry in enumerate(doc["classes"]):
        where = f"classes file {path}, class {i + 1}"
        if not isinstance(entry, dict):
            raise CtsegError(f"{where}: expected {{name: ..., value: ...}}")
        if "value" in entry:
            key = _key(entry["value"], where)
            if key in lookup:
                raise CtsegError(
                    f"classes file {path}: value {shown_value(key)} is used by both {names[lookup[key]]!r} and "
                    f"{names[i]!r}"
                )
            lookup[key] = i
        elif names[i] != background or background is None:
            raise CtsegError(
                f"{where} ({names[i]!r}) has no value: give it the value its polygons hold in --class-field (only "
                "the class named by background: may have none)"
            )
        placeholders.append({**entry, "value": i})  # the folder's checks of everything else
    if ignore_raw is not None:
        for raw in ignore_raw if isinstance(ignore_raw, list) else [ignore_raw]:
            key = _key(raw, f"classes file {path}, ignore")
            if key in lookup:
                raise CtsegError(f"classes file {path}: ignore {shown_value(key)} is also the value of a class")
            lookup[key] = IGNORE_INDEX
    doc["classes"] = placeholders
    doc["name"] = doc.get("name") or "vector"
    spec = check_classes(doc, path)
    spec.update(
        lookup=lookup,
        background=None if background is None else names.index(background),
        known=", ".join(shown_value(key) for key in lookup),
    )
    return spec


def unknown_value(path: Path, field: str, fid: int, key: Key | None, count: int, known: str, classes: Path) -> str:
    """The one line for features whose class value ``classes`` does not list (``fid``: the first of ``count``)."""
    hint = ""
    if key is not None:
        kind, value = key
        if kind == "s":
            try:
                number = float(value)
            except ValueError:
                number = None
            if number is not None and f"{number:g}" in known.split(", "):
                hint = f" (the field holds text: write value: '{value}' in quotes)"
        elif f"'{shown_value(key)}'" in known.split(", "):
            hint = f" (the field holds numbers: write value: {shown_value(key)} without quotes)"
    return (
        f"labels file {path}: feature {fid} has {field} = {shown_value(key)}, which classes file {classes} does not "
        f"list ({count} feature(s) with unlisted values; listed: {known}){hint}; add a class with that value, or "
        "list it under ignore"
    )


def class_codes(values: Any, lookup: Mapping[Key, int]) -> np.ndarray:
    """Class index per attribute value (:data:`UNKNOWN` where ``lookup`` has none), int16."""
    return np.fromiter((lookup.get(value_key(v), UNKNOWN) for v in values), dtype=np.int16, count=len(values))
