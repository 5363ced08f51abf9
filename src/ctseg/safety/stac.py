"""STAC items named on the command line: the JSON read as data, one asset of it followed.

**What is read.** A STAC **Item** (a GeoJSON ``Feature`` with ``stac_version``) from a local ``.json`` /
``.geojson`` file or fetched from an ``http(s)://`` address (at most
:data:`~ctseg.safety.documents.MAX_BYTES`, nesting bounded: :func:`ctseg.safety.documents.parse_json`), then
built with ``pystac`` (nothing fetched by it: no links, no extensions' schemas, no migration). A Catalog, a
Collection or a FeatureCollection is refused in one line.

**What is followed: one asset.** ``--asset KEY``, by default the first of :data:`DEFAULT_ASSETS` whose media type
is a (Geo)TIFF. The user named the item, so fetching the raster it names *is* what the user asked for: an asset
at an ``http(s)`` / ``s3`` / ``gs`` / ``az`` address is read (:mod:`ctseg.safety.remote`) without
``--allow-remote``, on whatever host it names. Nothing else of the item is followed (links, other assets,
alternate hrefs). A relative href is resolved against the item's own address; an item fetched from the network
may name only network assets (a ``file://`` href there is refused). A local item's local asset must lie in the
item's folder (symbolic links followed), as a VRT's sources must, unless ``--allow-outside``; it is then opened
like any local raster (:func:`ctseg.safety.rasters.open_raster`: a VRT's sources walked).

The outputs of an item's asset are named by the item's ``id`` (:func:`~ctseg.safety.remote.safe_stem`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

from ctseg.errors import CtsegError
from ctseg.safety.documents import MAX_BYTES, parse_json
from ctseg.safety.raster_formats import is_regular_file, printable
from ctseg.safety.raster_policy import current_policy
from ctseg.safety.remote import URL_SCHEMES, RasterSource, fetch, is_address, remote_raster, safe_stem

__all__ = ["DEFAULT_ASSETS", "ITEM_SUFFIXES", "is_item_name", "item_raster", "pick_asset", "read_item"]

#: File / URL suffixes read as STAC items.
ITEM_SUFFIXES = (".json", ".geojson")
#: The assets taken without ``--asset``: the first of these keys whose media type is a (Geo)TIFF.
DEFAULT_ASSETS = ("visual", "image", "data")


def is_item_name(text: str) -> bool:
    """True for a local path or an address whose path ends in ``.json`` / ``.geojson``."""
    path = urlsplit(text).path if is_address(text) else text
    return path.lower().endswith(ITEM_SUFFIXES)


def _is_tiff(media_type: str | None) -> bool:
    return (media_type or "").replace(" ", "").lower().startswith(("image/tiff", "image/geotiff"))


def read_item(source: str) -> tuple[Any, bool]:
    """``(pystac.Item, remote)`` of the item at ``source`` (a local file or an ``http(s)`` URL); one line for
    anything that is not a readable STAC item."""
    import pystac

    what = f"STAC item {printable(source)}"
    remote = is_address(source)
    if remote:
        if urlsplit(source).scheme.lower() not in ("http", "https"):
            raise CtsegError(f"{what}: ctseg fetches STAC items over http(s); give the item's https address, or "
                             "download it and pass the file")  # fmt: skip
        data, href = fetch(source, "STAC item", MAX_BYTES), source
    else:
        path = Path(source)
        if not is_regular_file(path):
            raise CtsegError(f"{what} does not exist or is not a file")
        with open(path, "rb") as fh:
            data = fh.read(MAX_BYTES + 1)
        href = str(path.absolute())
    doc = parse_json(data, what, fix="give a STAC item's JSON")
    kind = doc.get("type") if isinstance(doc, dict) else type(doc).__name__
    if kind != "Feature" or "stac_version" not in doc:
        kind = "GeoJSON without stac_version" if kind == "Feature" else f"type {printable(str(kind), 40)!r}"
        raise CtsegError(f"{what} is not a STAC item ({kind}; a Catalog, Collection or FeatureCollection?); give "
                         "one item's JSON")  # fmt: skip
    try:
        item = pystac.Item.from_dict(doc, href=href, migrate=False, preserve_dict=False)
    except Exception as err:  # pystac raises many kinds for a malformed item
        text = printable(" ".join(str(err).split()) or type(err).__name__, 120)
        raise CtsegError(f"{what} is not a valid STAC item ({text})") from None
    return item, remote


def _listing(item) -> str:
    shown = [f"{key} ({asset.media_type or 'no type'})" for key, asset in list(item.assets.items())[:24]]
    more = len(item.assets) - len(shown)
    return ", ".join(shown) + (f", … {more} more" if more > 0 else "") if shown else "none"


def pick_asset(item, key: str | None, source: str) -> tuple[str, Any]:
    """``(key, asset)``: ``key`` (``--asset``) if given, else the first of :data:`DEFAULT_ASSETS` with a (Geo)TIFF
    media type; one line listing the item's assets otherwise."""
    what = f"STAC item {printable(source)}"
    if key is not None:
        if key not in item.assets:
            raise CtsegError(f"--asset {key}: {what} has no asset {key!r}; its assets: {_listing(item)}")
        return key, item.assets[key]
    for name in DEFAULT_ASSETS:
        if name in item.assets and _is_tiff(item.assets[name].media_type):
            return name, item.assets[name]
    raise CtsegError(
        f"{what} has no GeoTIFF asset named {', '.join(DEFAULT_ASSETS)}; its assets: {_listing(item)}; pick the "
        "raster with --asset KEY"
    )


def item_raster(source: str, key: str | None = None) -> RasterSource:
    """The raster input of the STAC item at ``source``: its asset ``key`` (default: :func:`pick_asset`),
    named by the item's id; the href checked as the module docstring says."""
    item, remote = read_item(source)
    key, asset = pick_asset(item, key, source)
    href = (asset.href or "").strip()
    stem = safe_stem(str(item.id))
    about = f"asset {key!r} of STAC item {printable(source)}"
    if not href:
        raise CtsegError(f"{about} has no href")
    if remote and not is_address(href):
        href = urljoin(source, href)
    scheme = urlsplit(href).scheme.lower() if "://" in href else ""
    if is_address(href) and (scheme in URL_SCHEMES or href.startswith("/vsi")):
        return remote_raster(href, f"{printable(href)} ({about})", stem)
    if scheme == "file" and remote:
        raise CtsegError(f"{about} names the local file {printable(href)}; an item from the network may name "
                         "network assets only")  # fmt: skip
    if scheme not in ("", "file"):
        raise CtsegError(f"{about} names {printable(href)}; ctseg reads {', '.join(s + '://' for s in URL_SCHEMES)} "
                         "assets and local files")  # fmt: skip
    local = unquote(urlsplit(href).path) if scheme == "file" else href
    folder = Path(os.path.realpath(Path(source).absolute().parent))
    path = Path(local) if Path(local).is_absolute() else Path(source).absolute().parent / local
    real = Path(os.path.realpath(path))
    if folder not in real.parents and not current_policy().allow_outside:
        raise CtsegError(f"{about} names {printable(href)}, outside the item's folder {folder}; pass "
                         "--allow-outside if you trust it (or move the file under that folder)")  # fmt: skip
    return RasterSource(str(path), stem, f"{path} ({about})", remote=False)
