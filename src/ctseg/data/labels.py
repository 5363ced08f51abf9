"""Label decoding: colour-coded RGB labels and index masks → class indices (uint8, 255 = ignore).

Exact values only: a colour or label value the data set does not declare is an error naming the file, one
pixel (row, col), the value and how many pixels have undeclared values — never silently a class.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from ctseg.data.definitions import DatasetInfo
from ctseg.errors import CtsegError

#: Marks pixels whose colour / value is not declared during decoding (never a class index or the ignore index).
INVALID = 254


def color_key(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 → (...) int32 packed 0xRRGGBB."""
    return (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2].astype(np.int32)


def hex_color(color: Sequence[int]) -> str:
    return "#" + "".join(f"{int(c):02X}" for c in color)


def _check_count(classes: int, ignore_index: int) -> None:
    if classes >= INVALID or ignore_index == INVALID:
        raise CtsegError(f"{classes} classes: prepared masks are uint8, so at most {INVALID - 1} classes")


@lru_cache(maxsize=8)
def _color_lut(
    colors: tuple[tuple[int, int, int], ...], ignore_colors: tuple[tuple[int, int, int], ...], ignore_index: int
) -> np.ndarray:
    """16 MiB table: packed colour → class index, ``ignore_index`` for ignore colours, ``INVALID`` otherwise."""
    _check_count(len(colors), ignore_index)
    lut = np.full(1 << 24, INVALID, dtype=np.uint8)
    for color in ignore_colors:
        lut[color_key(np.asarray(color, np.uint8))] = ignore_index
    for index, color in enumerate(colors):
        lut[color_key(np.asarray(color, np.uint8))] = index
    return lut


@lru_cache(maxsize=8)
def _value_lut(values: tuple[int, ...], ignore_values: tuple[int, ...], ignore_index: int) -> np.ndarray:
    """65536-entry table: label value → class index, ``ignore_index`` for ignore values, ``INVALID`` otherwise."""
    _check_count(len(values), ignore_index)
    lut = np.full(1 << 16, INVALID, dtype=np.uint8)
    for value in ignore_values:
        lut[value] = ignore_index
    for index, value in enumerate(values):
        lut[value] = index
    return lut


def decode_label(rgb: np.ndarray, info: DatasetInfo, path: Path | str = "<array>") -> np.ndarray:
    """Colour-coded label (H, W, 3) uint8 → class indices (H, W) uint8 (``info.ignore_index`` for ignore colours).

    Raises:
        CtsegError: a colour that is neither a class colour nor an ignore colour: names ``path``, the colour, one
            pixel position (row, col) and how many pixels have unknown colours.
    """
    lut = _color_lut(tuple(info.colors), tuple(info.ignore_colors), info.ignore_index)
    index = lut[color_key(rgb)]
    bad = index == INVALID
    if bad.any():
        allowed = " ".join(hex_color(c) for c in (*info.colors, *info.ignore_colors))
        row, col = divmod(int(np.argmax(bad)), rgb.shape[1])
        color = tuple(int(c) for c in rgb[row, col])
        raise CtsegError(
            f"{path}: colour {color} ({hex_color(color)}) at pixel (row {row}, col {col}) is not in the {info.name} "
            f"palette ({int(bad.sum())} such pixels; expected one of {allowed})"
        )
    return index


def decode_index(values: np.ndarray, info: DatasetInfo, path: Path | str = "<array>") -> np.ndarray:
    """Index mask (H, W) of label values → class indices (H, W) uint8 through ``info.label_values``.

    Raises:
        CtsegError: a value that is neither a class value nor an ignore value (file, value, pixel, count), or a
            value outside 0–65535.
    """
    if info.label_values is None:
        raise ValueError(f"{info.name} has colour-coded labels, not index masks")
    lut = _value_lut(tuple(info.label_values), tuple(info.ignore_values), info.ignore_index)
    values = np.asarray(values)
    out_of_range = (values < 0) | (values > 0xFFFF)
    if out_of_range.any():
        row, col = divmod(int(np.argmax(out_of_range)), values.shape[1])
        raise CtsegError(f"{path}: label value {values[row, col]} at pixel (row {row}, col {col}) is out of range")
    index = lut[values.astype(np.int64, copy=False)]
    bad = index == INVALID
    if bad.any():
        allowed = ", ".join(map(str, (*info.label_values, *info.ignore_values)))
        row, col = divmod(int(np.argmax(bad)), values.shape[1])
        raise CtsegError(
            f"{path}: label value {int(values[row, col])} at pixel (row {row}, col {col}) is not declared for "
            f"{info.name} ({int(bad.sum())} such pixels; declared values: {allowed}); add it to the classes or "
            "to ignore"
        )
    return index
