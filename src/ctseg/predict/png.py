"""The PNG outputs of ``ctseg predict``: the class map in the data set's colours (``<stem>_pred.png``) and as
class indices (``<stem>.png``, ``--format index-png``). A PNG holds the whole map in memory, which is why predict
writes them only up to ``--png-max-mpx``; each is written atomically, or into the caller's staging folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ctseg.data.definitions import DatasetInfo
from ctseg.io import atomic_path
from ctseg.predict.failures import write_error

__all__ = ["write_color_png", "write_index_png"]


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
    _save_png(img, path, workdir)
    return path


def _save_png(img, path: Path, workdir: Path | None = None) -> None:
    if workdir is not None:
        staged = workdir / path.name
        try:
            img.save(staged, format="PNG")
        except OSError as err:
            staged.unlink(missing_ok=True)
            raise write_error(path, err) from None
        return
    try:
        with atomic_path(path) as tmp:
            img.save(tmp, format="PNG")
    except OSError as err:  # the temporary file is gone (atomic_path)
        raise write_error(path, err) from None


def write_index_png(pred: np.ndarray, path: Path, workdir: Path | None = None) -> list[Path]:
    """Write the class map as a uint8 single-channel PNG of class indices (LoveDA's test-server format); with
    ``workdir`` as ``workdir / path.name`` (:func:`write_color_png`)."""
    _save_png(_png_image(pred, "L"), path, workdir)
    return [path]
