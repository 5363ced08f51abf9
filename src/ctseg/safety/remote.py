"""Rasters by address: the URLs a user names on the command line, read by GDAL window by window.

**What is read.** ``https://…`` / ``http://…`` (GDAL's ``/vsicurl/``), ``s3://bucket/key`` (``/vsis3/``),
``gs://bucket/key`` (``/vsigs/``) and ``az://container/key`` (``/vsiaz/``) — :data:`URL_SCHEMES` — or one of those
``/vsi…/`` paths as GDAL spells them. Reads are HTTP range requests for the blocks a window needs (GDAL's
``/vsicurl/`` with its chunk cache; a tiled GeoTIFF / COG is fetched about as far as a window covers). An address
named on the command line is the user's own choice and needs no ``--allow-remote``; what a file names (a VRT's
sources) follows :mod:`ctseg.safety.rasters`, and a STAC item's asset :mod:`ctseg.safety.stac`.

**What is never followed.** The file at the address is opened with one of the allow-listed raster drivers
(:data:`REMOTE_DRIVERS`: those of :data:`~ctseg.safety.raster_formats.READ_DRIVERS` but VRT), tried in turn on the
bytes GDAL has fetched once, so a service description (``<GDAL_WMS>`` …) or a VRT at the address is never
interpreted: a remote VRT names further files that cannot be checked before GDAL reads them (download it, and
its sources are walked like any local VRT's). GDAL is told that the address's folder is empty
(``GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR``), so it neither lists the folder nor fetches sidecars (``.ovr``,
``.msk``, ``.aux.xml``) from beside it.

**GDAL's options** (:data:`REMOTE_OPTIONS`) are set with ``rasterio.Env`` around the opening and reading of a
remote raster only — each unless the environment sets it already — never for the rest of the process.
Credentials come only from GDAL's standard environment variables (``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN`` / ``AWS_NO_SIGN_REQUEST``, ``GOOGLE_APPLICATION_CREDENTIALS``,
``AZURE_STORAGE_CONNECTION_STRING``, ``GDAL_HTTP_HEADERS`` …) and GDAL's own configuration files, never from a
file ctseg is handed.

Every failure is one :class:`~ctseg.errors.CtsegError` line naming the address: unreachable, an HTTP status
(404: nothing there; 401 / 403: credentials), or not a raster ctseg reads.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from ctseg.errors import CtsegError
from ctseg.safety.raster_formats import READ_DRIVERS, printable

if TYPE_CHECKING:
    from rasterio.io import DatasetReader

__all__ = [
    "REMOTE_DRIVERS",
    "REMOTE_FORMATS",
    "REMOTE_OPTIONS",
    "URL_SCHEMES",
    "RasterSource",
    "fetch",
    "gdal_path",
    "is_address",
    "open_source",
    "remote_options",
    "remote_raster",
    "safe_stem",
]

#: URL scheme → GDAL's virtual file system for it.
URL_SCHEMES = {"https": "/vsicurl/", "http": "/vsicurl/", "s3": "/vsis3/", "gs": "/vsigs/", "az": "/vsiaz/"}
#: The drivers a remote raster may be opened with, tried in this order (no VRT: see the module docstring).
REMOTE_DRIVERS = tuple(d for d in READ_DRIVERS if d != "VRT")
#: The formats of :data:`REMOTE_DRIVERS`, as messages name them.
REMOTE_FORMATS = "GeoTIFF / COG, JPEG 2000, PNG, JPEG, BMP, GIF or WebP"
#: GDAL configuration around the reads of a remote raster (each unless the environment sets it).
REMOTE_OPTIONS: dict[str, str] = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # no listing of the folder, no sidecar fetched from it
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",  # the tiles of a row in one request
    "GDAL_HTTP_MAX_RETRY": "3",  # 429 / 5xx answers are retried
    "GDAL_HTTP_RETRY_DELAY": "1",
    "GDAL_HTTP_CONNECTTIMEOUT": "30",
    "GDAL_HTTP_TIMEOUT": "300",
}
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_STEM_BAD = re.compile(r"[^A-Za-z0-9._\-]+")
_CREDENTIALS = ("AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (AWS_NO_SIGN_REQUEST=YES for a public bucket), "
                "GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_CONNECTION_STRING or GDAL_HTTP_HEADERS")  # fmt: skip


@dataclass(frozen=True)
class RasterSource:
    """An input that is not a plain local path: a raster by address, or a STAC item's asset.

    ``gdal``: what GDAL opens (``/vsicurl/https://…``, ``/vsis3/…``, or a local path for an item's local asset);
    ``stem``: the outputs' stem (the address's last path component without suffix, an item's id); ``label``: how
    messages name it (the address as given, or the asset and its item); ``remote``: on the network.
    """

    gdal: str
    stem: str
    label: str
    remote: bool = True

    def __str__(self) -> str:
        return self.label

    @property
    def name(self) -> str:
        """The last component of the path (a progress bar's label)."""
        return PurePosixPath(urlsplit(self.gdal.split("/vsicurl/", 1)[-1]).path).name or self.stem

    @property
    def suffix(self) -> str:
        return ""


def is_address(text: str) -> bool:
    """True for a URL of any scheme (``x://``) and for GDAL's network paths (``/vsicurl/`` …)."""
    return bool(_SCHEME.match(text)) or text.startswith(tuple(set(URL_SCHEMES.values())))


def gdal_path(address: str, what: str = "input") -> str:
    """The GDAL path of a URL (:data:`URL_SCHEMES`); a ``/vsi…/`` network path is returned as it is."""
    if address.startswith(tuple(set(URL_SCHEMES.values()))):
        return address
    found = _SCHEME.match(address)
    scheme = found.group(1).lower() if found else ""
    if scheme not in URL_SCHEMES:
        raise CtsegError(
            f"{what} {printable(address)}: ctseg reads {', '.join(s + '://' for s in URL_SCHEMES)} addresses "
            "(or download the file and pass its path)"
        )
    rest = address[len(found.group(0)) :]
    if not rest.split("?", 1)[0].strip("/"):
        raise CtsegError(f"{what} {printable(address)} names no file")
    prefix = URL_SCHEMES[scheme]
    return prefix + (f"{scheme}://{rest}" if prefix == "/vsicurl/" else rest)


def safe_stem(text: str) -> str:
    """``text`` as a file-name stem: runs of characters other than letters, digits, ``.``, ``_`` and ``-``
    become ``_`` (no ``/``, no leading dot)."""
    stem = _STEM_BAD.sub("_", text).strip("_").lstrip(".")
    return stem or "input"


def url_stem(address: str) -> str:
    """The stem of an address: its last path component (percent-decoded), without its suffix."""
    path = address.split("?", 1)[0] if address.startswith("/vsi") else urlsplit(address).path
    name = PurePosixPath(unquote(path)).name
    return safe_stem(PurePosixPath(name).stem if "." in name[1:] else name)


def remote_raster(address: str, label: str | None = None, stem: str | None = None) -> RasterSource:
    """A raster at ``address`` (a URL or GDAL network path), named ``label`` in messages (default: itself)."""
    return RasterSource(gdal_path(address), stem or url_stem(address), label or address, True)


def remote_options() -> dict[str, str]:
    """:data:`REMOTE_OPTIONS` less those the environment sets (the user's settings win)."""
    return {key: value for key, value in REMOTE_OPTIONS.items() if key not in os.environ}


def _text(err: BaseException) -> str:
    """GDAL's one line from a rasterio error (:func:`ctseg.data.raster.error_text`; imported here, on an error,
    because ``ctseg.data`` imports this package)."""
    from ctseg.data.raster import error_text

    return error_text(err)


def remote_error(label: str, err: BaseException | str) -> CtsegError:
    """One line for a failed remote open or read: unreachable, an HTTP status, credentials, or GDAL's text."""
    text = err if isinstance(err, str) else _text(err)
    shown = printable(text, 160)
    code = re.search(r"HTTP (?:response )?code:? ?(\d{3})", text, re.IGNORECASE)
    if code and code.group(1) == "404":
        return CtsegError(f"input {label}: HTTP 404, nothing at that address; check the URL")
    if code and code.group(1) in ("401", "403"):
        return CtsegError(f"input {label}: HTTP {code.group(1)}, access denied; give credentials through GDAL's "
                          f"environment variables ({_CREDENTIALS})")  # fmt: skip
    if code:
        return CtsegError(f"input {label}: HTTP {code.group(1)} from the server ({shown}); try again later")
    if re.search(r"credentials|AWS_SECRET_ACCESS_KEY|AWS_NO_SIGN_REQUEST|GOOGLE_APPLICATION|AZURE_STORAGE", text):
        return CtsegError(f"input {label}: no credentials ({shown}); set {_CREDENTIALS}")
    if re.search(r"curl error|could not connect|couldn't connect|resolve host|timed out|timeout", text, re.I):
        return CtsegError(f"input {label} cannot be reached ({shown}); check the address and the network")
    return CtsegError(f"input {label} cannot be read ({shown})")


def _not_recognized(text: str) -> bool:
    return "not recognized as" in text or "not recognised as" in text


@contextlib.contextmanager
def open_source(source: RasterSource) -> Iterator[DatasetReader]:
    """The open dataset of ``source``, GDAL's remote options in force while it is open (module docstring).

    A remote raster is opened with the first of :data:`REMOTE_DRIVERS` that reads it; a local asset of a STAC
    item through :func:`ctseg.safety.rasters.open_raster` (a VRT's sources walked). Failures are one line.
    """
    import rasterio
    from rasterio.errors import RasterioError

    if not source.remote:
        from ctseg.safety.rasters import open_raster

        try:
            src = open_raster(source.gdal)
        except RasterioError as err:
            raise CtsegError(f"input {source.label} cannot be read ({printable(_text(err), 160)})") from None
        with src:
            yield src
        return
    with rasterio.Env(**remote_options()):
        src = None
        for driver in _available(REMOTE_DRIVERS):
            try:
                src = rasterio.open(source.gdal, driver=driver)
                break
            except RasterioError as err:
                if not _not_recognized(_text(err)):
                    raise remote_error(source.label, err) from None
        if src is None:
            raise CtsegError(
                f"input {source.label} is not a {REMOTE_FORMATS} file (the formats ctseg reads from the network; "
                "a VRT must be downloaded, so that its sources can be checked); is it the right address?"
            )
        with src:
            yield src


@functools.cache
def _available(drivers: tuple[str, ...]) -> tuple[str, ...]:
    """Those of ``drivers`` this GDAL build has."""
    import rasterio

    with rasterio.Env() as env:
        known = env.drivers()
    return tuple(d for d in drivers if d in known)


def fetch(url: str, what: str, limit: int) -> bytes:
    """The body at an ``http(s)`` URL, at most ``limit`` bytes (a longer one is refused); one line on failure.
    Redirects are followed to ``http(s)`` addresses only."""
    import urllib.error
    import urllib.request

    class HttpOnly(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D401
            if urlsplit(newurl).scheme.lower() not in ("http", "https"):
                raise CtsegError(f"{what} {url} redirects to {printable(newurl)}, not an http(s) address; refused")
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    opener = urllib.request.build_opener(HttpOnly)
    request = urllib.request.Request(url, headers={"User-Agent": "ctseg", "Accept": "application/geo+json, */*"})
    try:
        with opener.open(request, timeout=60) as answer:
            data = answer.read(limit + 1)
    except urllib.error.HTTPError as err:
        if err.code == 404:
            raise CtsegError(f"{what} {url}: HTTP 404, nothing at that address; check the URL") from None
        raise CtsegError(f"{what} {url}: HTTP {err.code} ({printable(str(err.reason), 80)})") from None
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise CtsegError(f"{what} {url} cannot be reached ({printable(str(reason), 120)}); check the address and "
                         "the network") from None  # fmt: skip
    if len(data) > limit:
        raise CtsegError(f"{what} {url} is over {limit:,} bytes; is it the right address?")
    return data
