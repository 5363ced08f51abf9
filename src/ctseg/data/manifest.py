"""The prepared folder's ``manifest.json``: format, versions, settings, and reading it back.

Layout of a prepared folder (one folder, written atomically by :func:`ctseg.data.prepare.prepare_dataset`)::

    DST/
      images/<tile>_r<row>_c<col>.tif   (C, H, W) TIFF, ZSTD (any band count / dtype; 3-band uint8: RGB, or
                                        Vaihingen's IR-R-G), or .png: RGB, folders prepared before issue 33
      masks/<tile>_r<row>_c<col>.png    single-channel uint8 class indices, 255 = ignore
      manifest.json                     data set, settings, source tiles and one record per crop

``manifest.json`` holds ``format`` (``"ctseg-prepared"``), ``version``, ``dataset`` (the
:class:`~ctseg.data.definitions.DatasetInfo` as :func:`~ctseg.data.definitions.info_to_json` writes it — classes,
colours or label values, bands, dtype, band selection, nodata and the normalisation statistics), ``settings``
(what the folder was made from and with: compared on the next prepare), ``size`` and ``mask_size`` (per split),
``pixels`` (per split and class), ``tiles`` and ``crops``. Each crop record holds ``image`` and ``mask`` (paths
relative to DST), ``tile`` (source tile id), ``group`` (the unit the split is made of), ``offset`` ``[row, col]``
of the crop's top-left corner in the source tile (source pixels, before any resize) and ``split``; crops of an
evaluation split also hold ``scored`` (:mod:`ctseg.data.crops`). ``summary`` (written since the groups layout of
``ctseg prepare folder``; optional — older folders read without it, :func:`split_summary`) holds per split the
numbers ``ctseg prepare`` prints: ``groups``, ``images`` (source images), ``crops``, ``pixels`` (mask pixels, ignore
included) and ``ignore``, the ignore pixels by cause (:data:`IGNORE_CAUSES`; they add up to ``pixels[split].ignore``).

Versions: **3** (this one) added the band layout (``bands``, ``dtype``, ``band_indices``, ``nodata``), index
labels (``label_values``, ``ignore_values``) and GeoTIFF crops; version-2 folders (3-band uint8, PNG) still
load and count as prepared with the same settings. **2** keeps evaluation masks at the label's resolution and
scores each source pixel once; version-1 folders (resized test masks, overlaps counted twice) must be
prepared again: their evaluation splits are refused.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from ctseg.data.definitions import DatasetInfo, info_from_json
from ctseg.errors import CtsegError
from ctseg.safety.documents import read_json

MANIFEST = "manifest.json"
FORMAT = "ctseg-prepared"
FORMAT_VERSION = 3
#: Oldest version whose evaluation splits are read (and whose folders count as prepared).
MIN_EVAL_VERSION = 2
#: A manifest lists every crop (about 200 bytes each): 1 GiB is millions of crops, and still a bound.
MAX_MANIFEST_BYTES = 1 << 30
#: Entries a prepared folder may contain; anything else means "not ours" and is never deleted
#: (``decoded``: the default decoded-crop cache, :mod:`ctseg.data.decoded`).
OWN_ENTRIES = {"images", "masks", "decoded", MANIFEST}
#: Why a prepared mask pixel is ignore (:mod:`ctseg.data.crops`), in the order they take precedence: outside an
#: image smaller than the crop; already scored by an earlier, overlapping evaluation crop; no image data; the data
#: set's own ignore label.
IGNORE_CAUSES = ("padding", "overlap", "nodata", "label")
_SUMMARY_COUNTS = ("groups", "images", "crops", "pixels")
_HINT = "prepare it first with `ctseg prepare <dataset> --src DOWNLOAD --dst FOLDER`"


def load_manifest(root: str | os.PathLike) -> dict[str, Any]:
    """Read and check ``root/manifest.json``; a missing or garbled one raises :class:`CtsegError`."""
    root = Path(root).expanduser()
    path = root / MANIFEST
    if not root.is_dir():
        raise CtsegError(f"prepared data folder {root} does not exist; {_HINT}")
    if not path.is_file():
        raise CtsegError(f"{root} is not a prepared data folder (no {MANIFEST}); {_HINT}")
    manifest = read_json(path, "manifest", max_bytes=MAX_MANIFEST_BYTES, fix="it is unreadable; prepare the data again")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CtsegError(f'{path} is not a ctseg manifest (expected "format": "{FORMAT}")')
    if int(manifest.get("version", 0)) > FORMAT_VERSION:
        raise CtsegError(
            f"{path} was written by a newer ctseg (format version {manifest['version']}); upgrade ctseg or prepare "
            "the data again with this one"
        )
    try:
        for key in ("name", "classes", "colors"):
            manifest["dataset"][key]
        for record in manifest["crops"]:
            record["image"], record["mask"], record["tile"], record["offset"], record["split"]
            for key in ("image", "mask"):
                if not _inside(record[key]):
                    raise CtsegError(
                        f"{path} names the crop file {str(record[key])[:80]!r}, which is not inside the prepared "
                        "folder; a manifest lists only the folder's own files — prepare the data again"
                    )
    except (KeyError, TypeError):
        raise CtsegError(f"{path} is garbled (missing dataset or crop fields); prepare the data again") from None
    if "summary" in manifest and not _summary_ok(manifest["summary"]):
        raise CtsegError(
            f"{path} is garbled (its summary is not split → counts and ignore pixels by cause); prepare the data again"
        )
    return manifest


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _summary_ok(summary: object) -> bool:
    """The ``summary`` block's shape: split → known counts (non-negative integers) and ``ignore`` by known cause."""
    if not isinstance(summary, dict):
        return False
    for row in summary.values():
        if not isinstance(row, dict) or not set(row) <= {*_SUMMARY_COUNTS, "ignore"}:
            return False
        if not all(_count(row[key]) for key in _SUMMARY_COUNTS if key in row):
            return False
        causes = row.get("ignore", {})
        if not isinstance(causes, dict) or not set(causes) <= set(IGNORE_CAUSES):
            return False
        if not all(map(_count, causes.values())):
            return False
    return True


def summarize(tiles: Iterable[tuple[str, str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """The manifest's ``summary`` from (split, group, :func:`~ctseg.data.crops.cut_tile` result) of every tile."""
    rows: dict[str, dict[str, Any]] = {}
    groups: dict[str, set[str]] = {}
    for split, group, result in tiles:
        row = rows.setdefault(split, {"groups": 0, "images": 0, "crops": 0, "pixels": 0,
                                      "ignore": dict.fromkeys(IGNORE_CAUSES, 0)})  # fmt: skip
        groups.setdefault(split, set()).add(group)
        row["groups"] = len(groups[split])
        row["images"] += 1
        row["crops"] += len(result["records"])
        row["pixels"] += int(result["counts"].sum())
        for cause, count in result["causes"].items():
            row["ignore"][cause] += int(count)
    return dict(sorted(rows.items()))


def split_summary(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per split (sorted): ``groups``, ``images``, ``crops``, ``pixels``, ``ignore`` (total), ``causes`` (cause →
    pixels, or ``None`` for a folder prepared before they were counted) and ``classes`` (class → pixels).

    Read from the manifest's ``summary`` where present, else worked out from its crops and pixel counts.
    """
    classes = list(manifest["dataset"]["classes"])
    pixels = manifest.get("pixels") or {}
    stored = manifest.get("summary") or {}
    crops: dict[str, list[dict[str, Any]]] = {}
    for record in manifest["crops"]:
        crops.setdefault(record["split"], []).append(record)
    out: dict[str, dict[str, Any]] = {}
    for split in sorted(set(crops) | set(pixels) | set(stored)):
        counts = pixels.get(split) or {}
        records = crops.get(split, [])
        row = stored.get(split) or {}
        by_class = {name: int(counts.get(name, 0)) for name in classes}
        causes = row.get("ignore")
        ignore = sum(causes.values()) if causes is not None else int(counts.get("ignore", 0))
        out[split] = {
            "groups": row.get("groups", len({r.get("group", r["tile"]) for r in records})),
            "images": row.get("images", len({r["tile"] for r in records})),
            "crops": row.get("crops", len(records)),
            "pixels": row.get("pixels", sum(by_class.values()) + ignore),
            "ignore": ignore,
            "causes": None if causes is None else {cause: int(causes.get(cause, 0)) for cause in IGNORE_CAUSES},
            "classes": by_class,
        }
    return out


def _inside(name: object) -> bool:
    """True for a relative path below the folder (``train/images/x.png``): no root, drive or ``..`` part."""
    if not isinstance(name, str) or not name or "\\" in name or "\x00" in name:
        return False
    parts = PurePosixPath(name)
    return not parts.is_absolute() and ".." not in parts.parts and not PureWindowsPath(name).drive


def info_from_manifest(manifest: dict[str, Any]) -> DatasetInfo:
    """The :class:`DatasetInfo` stored in a manifest (the registered object when it is the same)."""
    try:
        return info_from_json(manifest["dataset"])
    except (KeyError, TypeError, ValueError) as err:
        raise CtsegError(f"{MANIFEST}: garbled data set definition ({err}); prepare the data again") from None


def comparable_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings without the version (a version-2 folder made with the same settings is still prepared)."""
    return {k: v for k, v in settings.items() if k != "version"}


def existing_state(dst: Path, wanted: dict[str, Any]) -> tuple[str, str]:
    """('absent' | 'complete' | 'different' | 'partial' | 'foreign', explanation) for a destination folder."""
    if not dst.exists():
        return "absent", ""
    if not dst.is_dir():
        return "foreign", f"{dst} exists and is not a folder"
    entries = {p.name for p in dst.iterdir()}
    if not entries:
        return "absent", ""
    if not entries <= OWN_ENTRIES:
        extra = sorted(entries - OWN_ENTRIES)[:3]
        return "foreign", f"{dst} holds files that are not prepared crops ({', '.join(extra)})"
    try:
        manifest = read_json(dst / MANIFEST, "manifest", max_bytes=MAX_MANIFEST_BYTES)
        settings = manifest["settings"]
        crops = manifest["crops"]
    except Exception:
        return "partial", f"{dst} has no readable {MANIFEST}"
    version = manifest.get("version") if isinstance(manifest, dict) else None
    if isinstance(version, int) and version < MIN_EVAL_VERSION:
        return "different", (
            f"{dst} was prepared by an older ctseg (format version {version}: test masks resized and overlapping "
            f"border pixels scored twice; version {FORMAT_VERSION} keeps them at the label's resolution, each "
            "pixel once)"
        )
    if comparable_settings(settings) != comparable_settings(wanted):
        a, b = comparable_settings(settings), comparable_settings(wanted)
        diff = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        return "different", f"{dst} was prepared with different settings ({', '.join(diff)})"
    for record in crops:
        for key in ("image", "mask"):
            if not (dst / record[key]).is_file():
                return "partial", f"{dst} is incomplete ({record[key]} is missing)"
    return "complete", ""
