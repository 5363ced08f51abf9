"""Flags that several sub-commands share, each declared by one helper here (the command modules call them).

``--allow-remote`` / ``--allow-outside`` (:func:`source_flags`: what a VRT input may name), ``--device``
(:func:`device_flag`) and ``--bands`` (:func:`bands_flag`; :func:`band_list` parses ``1,2,3,4``).
"""

from __future__ import annotations

import argparse

__all__ = ["DEVICES", "band_list", "bands_flag", "device_flag", "source_flags"]

#: ``--device`` choices.
DEVICES = ("auto", "cpu", "cuda")


def source_flags(parser: argparse.ArgumentParser) -> None:
    """``--allow-remote`` / ``--allow-outside``: what a VRT input may name (``ctseg.safety.rasters``).

    :func:`ctseg.cli.entry.main` applies them around the command's run (``allowing``)."""
    parser.add_argument("--allow-remote", action="store_true",
                        help="let a VRT input read sources on the network (/vsicurl/, /vsis3/, URLs, WMS: ...); "
                             "off: refused before anything is contacted")  # fmt: skip
    parser.add_argument("--allow-outside", action="store_true",
                        help="let a VRT input read local files outside its own folder (absolute or ../ paths, "
                             "/vsizip/ ...); off: refused before they are opened")  # fmt: skip


def device_flag(parser: argparse.ArgumentParser, help: str, default: str = "auto") -> None:
    """``--device auto|cpu|cuda``."""
    parser.add_argument("--device", default=default, choices=list(DEVICES), help=help)


def band_list(text: str) -> tuple[int, ...]:
    """``"1,2,3,4"`` → ``(1, 2, 3, 4)`` (1-based band numbers, as GDAL counts them)."""
    try:
        bands = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of band numbers (e.g. 1,2,3,4)"
        ) from None
    if not bands or min(bands) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: bands are numbered from 1 (e.g. 1,2,3,4)")
    return bands


def bands_flag(parser: argparse.ArgumentParser, help: str, *, parse: bool = True) -> None:
    """``--bands B1,B2,...``: 1-based source bands. ``parse``: checked here (:func:`band_list`); otherwise the
    text goes to the library as given (``ctseg predict`` checks it against the model)."""
    if parse:
        parser.add_argument("--bands", type=band_list, default=None, help=help)
    else:
        parser.add_argument("--bands", default=None, metavar="B1,B2,...", help=help)
