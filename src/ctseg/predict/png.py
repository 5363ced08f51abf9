"""The PNG outputs of ``ctseg predict``: the class map in the data set's colours (``<stem>_pred.png``), its legend
(``<stem>_legend.png``) and the class map as class indices (``<stem>.png``, ``--format index-png``). A PNG holds the
whole map in memory, which is why predict writes them only up to ``--png-max-mpx``; each is written atomically,
or into the caller's staging folder.

The colour PNG is a palette PNG whose nodata index (:data:`~ctseg.data.raster.NODATA_CLASS`, 255) is transparent
(its ``tRNS`` chunk: any viewer decodes it as RGBA), pixel for pixel the class map — so the legend is a picture of
its own, never drawn over the map: one row per class, a swatch of its colour and its name, and a checkered
``nodata`` row (transparent) when the map has a nodata value.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ctseg.data.definitions import DatasetInfo
from ctseg.data.raster import NODATA_CLASS
from ctseg.io import atomic_path
from ctseg.predict.failures import write_error
from ctseg.predict.gis import NODATA_NAME, category_names

__all__ = [
    "LEGEND_FONT_SIZE",
    "legend_image",
    "save_png",
    "write_color_png",
    "write_index_png",
    "write_legend_png",
]

#: Font size (pixels) of the legend's class names.
LEGEND_FONT_SIZE = 14
_SWATCH = (28, 18)  # width, height
_PAD, _GAP = 8, 6
_BACKGROUND, _OUTLINE, _TEXT = (255, 255, 255), (64, 64, 64), (0, 0, 0)


def _png_image(pred: np.ndarray, mode: str):
    """A Pillow image (mode ``"P"`` or ``"L"``) over the uint8 class map's own memory: no full-size copy."""
    from PIL import Image

    data = np.ascontiguousarray(pred, dtype=np.uint8)
    height, width = data.shape
    return Image.frombuffer(mode, (width, height), data, "raw", mode, 0, 1)


def write_color_png(pred: np.ndarray, info: DatasetInfo, path: Path, workdir: Path | None = None) -> Path:
    """The class map as a palette PNG in the data set's colours, written atomically (or, with ``workdir``, as
    ``workdir / path.name``, for the caller to move); returns ``path``."""
    img = _png_image(pred, "P")
    img.putpalette(info.palette().reshape(-1).tolist())
    save_png(img, path, workdir, transparency=NODATA_CLASS)
    return path


def save_png(img, path: Path, workdir: Path | None = None, **options) -> None:
    """Save the Pillow image ``img`` as the PNG ``path``: atomically, or as ``workdir / path.name`` (for the caller
    to move); ``options``: Pillow's PNG options. A failure is one line and leaves no partial file."""
    if workdir is not None:
        staged = workdir / path.name
        try:
            img.save(staged, format="PNG", **options)
        except OSError as err:
            staged.unlink(missing_ok=True)
            raise write_error(path, err) from None
        return
    try:
        with atomic_path(path) as tmp:
            img.save(tmp, format="PNG", **options)
    except OSError as err:  # the temporary file is gone (atomic_path)
        raise write_error(path, err) from None


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (OSError, ImportError):  # Pillow without FreeType: its small bitmap font
        return ImageFont.load_default()


def legend_image(info: DatasetInfo, nodata: bool, font_size: int = LEGEND_FONT_SIZE):
    """The legend as an RGB Pillow image: a row per class (swatch, name), and a checkered ``nodata`` row when
    ``nodata``."""
    from PIL import Image, ImageDraw

    font = _font(font_size)
    rows = [(name, tuple(int(c) for c in info.palette()[i])) for i, name in enumerate(category_names(info, None))]
    if nodata:
        rows.append((NODATA_NAME, None))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    boxes = [probe.textbbox((0, 0), name, font=font) for name, _ in rows]
    text_h = max([b[3] for b in boxes] + [1])
    row_h = max(_SWATCH[1], text_h) + _GAP
    width = _PAD + _SWATCH[0] + _GAP + max([b[2] for b in boxes] + [1]) + _PAD
    img = Image.new("RGB", (width, 2 * _PAD + row_h * len(rows) - _GAP), _BACKGROUND)
    draw = ImageDraw.Draw(img)
    for k, (name, colour) in enumerate(rows):
        top = _PAD + k * row_h
        x0, y0, x1, y1 = _PAD, top, _PAD + _SWATCH[0] - 1, top + _SWATCH[1] - 1
        if colour is None:  # transparent: a checkerboard
            for cy in range(y0, y1 + 1, 6):
                for cx in range(x0, x1 + 1, 6):
                    shade = (204, 204, 204) if ((cx - x0) // 6 + (cy - y0) // 6) % 2 else (255, 255, 255)
                    draw.rectangle((cx, cy, min(cx + 5, x1), min(cy + 5, y1)), fill=shade)
            draw.rectangle((x0, y0, x1, y1), outline=_OUTLINE)
        else:
            draw.rectangle((x0, y0, x1, y1), fill=colour, outline=_OUTLINE)
        draw.text((x1 + 1 + _GAP, top + (_SWATCH[1] - text_h) // 2), name, fill=_TEXT, font=font)
    return img


def write_legend_png(info: DatasetInfo, path: Path, nodata: bool, workdir: Path | None = None) -> Path:
    """The legend (:func:`legend_image`) as ``path``, written like :func:`write_color_png`; returns ``path``."""
    save_png(legend_image(info, nodata), path, workdir)
    return path


def write_index_png(pred: np.ndarray, path: Path, workdir: Path | None = None) -> list[Path]:
    """Write the class map as a uint8 single-channel PNG of class indices (LoveDA's test-server format); with
    ``workdir`` as ``workdir / path.name`` (:func:`write_color_png`)."""
    save_png(_png_image(pred, "L"), path, workdir)
    return [path]
