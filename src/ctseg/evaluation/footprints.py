"""``ctseg evaluate PRED --truth TRUTH`` with two vector files: object scores of predicted footprints
(:mod:`ctseg.evaluation.objects`).

**Files.** Both are read through :mod:`ctseg.safety.vector_files` (GeoPackage, GeoJSON, Shapefile or
FlatGeobuf, by their first bytes; one layer with geometries). A feature without geometry, or whose geometry has
no area, is dropped with a note; an invalid polygon is repaired (:func:`shapely.make_valid`, its polygonal part
kept) with a note.

**Class.** ``--class NAME`` keeps the features whose ``class`` attribute (what ``ctseg vectorize`` writes) is
``NAME``; a file without a ``class`` field is taken whole, with a note. A truth file with no feature of the class
is an error; a prediction without one scores as an empty prediction (with a note naming the classes it holds).

**CRS.** Both files are scored in the truth's CRS (the prediction reprojected with pyproj). When that CRS is
geographic (degrees), both are reprojected to the WGS 84 UTM zone of the truth's centroid so that distances and
areas are metric; ``crs`` and ``notes`` in the JSON say which CRS was used and why. Files without a CRS are
taken as they are (both, or it is an error).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ctseg.errors import CtsegError
from ctseg.evaluation.objects import object_scores

__all__ = [
    "VECTOR_SUFFIXES",
    "check_settings",
    "evaluate_footprints",
    "format_object_scores",
    "is_vector_input",
    "read_footprints",
    "run_evaluate_objects",
]

#: File names taken as vector files even before they exist (a missing one is then said as such).
VECTOR_SUFFIXES = (".gpkg", ".geojson", ".json", ".shp", ".fgb")


def is_vector_input(path: str | os.PathLike) -> bool:
    """Whether ``path`` is meant as a vector file: a regular file whose first bytes name one of the vector formats,
    or a path with a vector file's suffix (a missing or broken one is then reported by the vector reader)."""
    from ctseg.safety.vector_files import vector_driver

    path = Path(path).expanduser()
    if path.suffix.lower() in VECTOR_SUFFIXES:
        return True
    if not path.is_file():
        return False
    try:
        vector_driver(path)
    except CtsegError:
        return False
    return True


def _polygonal(geoms: np.ndarray) -> tuple[np.ndarray, int]:
    """``geoms`` with invalid ones repaired to their polygonal part; and how many were repaired."""
    import shapely

    bad = ~shapely.is_valid(geoms) & ~shapely.is_missing(geoms)
    out = geoms.copy()
    if bad.any():
        fixed = shapely.make_valid(geoms[bad])
        for k, g in zip(np.flatnonzero(bad), fixed, strict=True):
            parts = [p for p in shapely.get_parts(g) if shapely.get_type_id(p) in (3, 6)]
            out[k] = shapely.union_all(parts) if parts else None
    return out, int(bad.sum())


def read_footprints(path: str | os.PathLike, class_name: str | None, what: str, *, required: bool) -> dict[str, Any]:
    """The polygons of ``path`` (of ``class_name`` when given; module docstring): ``geoms``, ``fids``, ``crs``
    (a :class:`pyproj.CRS` or ``None``), ``notes``, ``path``."""
    import pyproj
    import shapely

    from ctseg.safety.vector_files import layer_info, read_features

    path = Path(path).expanduser()
    info = layer_info(path, what)
    fields = [str(f) for f in info.get("fields", [])]
    columns = ["class"] if "class" in fields else []
    fids, wkb, values = read_features(path, info["layer"], columns, what=what)
    geoms = shapely.from_wkb(np.asarray(wkb, dtype=object), on_invalid="ignore") if len(fids) else np.zeros(0, object)
    fids = np.asarray(fids)
    notes: list[str] = []
    if class_name is not None and not columns:
        notes.append(f"{what} {path} has no 'class' field: all its {len(fids)} features taken as {class_name!r}")
    elif columns:
        names = np.asarray([str(v) for v in values[0]], dtype=object)
        present = sorted(set(names.tolist()))
        if class_name is None:
            if len(present) > 1:
                notes.append(
                    f"{what} {path} holds classes {', '.join(present[:10])}: all scored; pick one with --class"
                )
        else:
            keep = names == class_name
            if not keep.any() and len(fids):
                held = ", ".join(present[:10]) + (" …" if len(present) > 10 else "")
                if required:
                    raise CtsegError(
                        f"{what} {path} has no feature of class {class_name!r} (its classes: {held}); "
                        "give one of those with --class"
                    )
                notes.append(f"{what} {path} has no feature of class {class_name!r} (its classes: {held})")
            geoms, fids = geoms[keep], fids[keep]
    geoms, repaired = _polygonal(geoms)
    if repaired:
        notes.append(f"{what} {path}: {repaired} invalid geometries repaired (shapely.make_valid)")
    area = np.asarray(shapely.area(geoms), dtype=float) if len(geoms) else np.zeros(0)
    ok = np.isfinite(area) & (area > 0)
    if (~ok).any():
        notes.append(f"{what} {path}: {int((~ok).sum())} features without polygon area dropped")
    geoms, fids = geoms[ok], fids[ok]
    if required and not len(geoms):
        kind = f" of class {class_name!r}" if class_name is not None and columns else ""
        raise CtsegError(f"{what} {path} holds no polygons{kind} to score against; give a file of reference footprints")
    crs = pyproj.CRS.from_user_input(info["crs"]) if info.get("crs") else None
    return {"geoms": geoms, "fids": fids, "crs": crs, "notes": notes, "path": path}


def _utm(geoms: np.ndarray, crs: Any) -> Any:
    """The WGS 84 UTM CRS of the zone holding the centroid of ``geoms`` (in the geographic ``crs``)."""
    import pyproj
    import shapely

    centre = shapely.centroid(shapely.geometrycollections(geoms))
    lon, lat = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(centre.x, centre.y)
    zone = min(60, max(1, int((lon + 180.0) // 6.0) + 1))
    return pyproj.CRS.from_epsg((32600 if lat >= 0 else 32700) + zone), (lon, lat)


def _reproject(side: dict[str, Any], target: Any, what: str) -> None:
    import pyproj
    import shapely

    if side["crs"] == target or not len(side["geoms"]):
        return
    tr = pyproj.Transformer.from_crs(side["crs"], target, always_xy=True)
    out = shapely.transform(side["geoms"], lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
    bounds = shapely.bounds(out)
    if not np.isfinite(bounds).all():
        raise CtsegError(
            f"{what} {side['path']} cannot be reprojected from {side['crs'].to_string()} to {target.to_string()} "
            "(coordinates outside that CRS's area); check the file's CRS"
        )
    side["geoms"] = out


def _name(crs: Any) -> str:
    return f"{crs.name} ({crs.to_string()})"


def _common_crs(truth: dict[str, Any], pred: dict[str, Any]) -> tuple[str | None, list[str]]:
    """Reproject both sides in place to the CRS they are scored in; (its name, notes)."""
    for side, other in ((truth, pred), (pred, truth)):
        if side["crs"] is None and not len(side["geoms"]):
            side["crs"] = other["crs"]  # nothing to place: an empty file's CRS does not matter
    if truth["crs"] is None and pred["crs"] is None:
        return None, ["neither file has a CRS: coordinates compared as they are, in their map units"]
    for side, other, w1, w2 in ((truth, pred, "--truth file", "prediction file"), (pred, truth, "prediction file",
                                                                                     "--truth file")):  # fmt: skip
        if side["crs"] is None:
            raise CtsegError(
                f"{w1} {side['path']} has no CRS but {w2} {other['path']} is in {_name(other['crs'])}; "
                "assign its CRS (ogr2ogr -a_srs EPSG:XXXX out.gpkg IN)"
            )
    target, notes = truth["crs"], []
    if target.is_geographic:
        target, (lon, lat) = _utm(truth["geoms"], truth["crs"])
        notes.append(
            f"the truth's CRS {_name(truth['crs'])} is geographic: both files reprojected to {_name(target)}, the UTM "
            f"zone of the truth's centroid ({lon:.4f}, {lat:.4f}), so distances and areas are in metres"
        )
    elif pred["crs"] != target:
        notes.append(f"prediction reprojected from {_name(pred['crs'])} to the truth's CRS {_name(target)}")
    _reproject(truth, target, "--truth file")
    _reproject(pred, target, "prediction file")
    return _name(target), notes


def evaluate_footprints(
    pred: str | os.PathLike,
    truth: str | os.PathLike,
    *,
    iou: float = 0.5,
    class_name: str | None = None,
    tolerance: float = 1.0,
) -> dict[str, Any]:
    """Object scores of the footprints in ``pred`` against those in ``truth`` (module docstring;
    :func:`ctseg.evaluation.objects.object_scores` for the keys). ``matches`` hold the features' ids
    (``[truth fid, prediction fid, IoU]``)."""
    check_settings(iou, tolerance)
    t = read_footprints(truth, class_name, "--truth file", required=True)
    p = read_footprints(pred, class_name, "prediction file", required=False)
    crs, notes = _common_crs(t, p)
    scores = object_scores(t["geoms"], p["geoms"], iou=iou, tolerance=tolerance)
    scores["matches"] = [[int(t["fids"][a]), int(p["fids"][b]), v] for a, b, v in scores["matches"]]
    return {
        "format": "ctseg-object-scores",
        "version": 1,
        **scores,
        "class": class_name,
        "crs": crs,
        "units": "map units" if crs is None else (_units(t["crs"]) if not t["crs"].is_geographic else "metre"),
        "tie_break": "IoU descending, then lower truth index, then lower prediction index (file order)",
        "notes": t["notes"] + p["notes"] + notes,
        "pred": str(p["path"].resolve()),
        "truth": str(t["path"].resolve()),
    }


def _units(crs: Any) -> str:
    axes = crs.axis_info
    return axes[0].unit_name if axes else "map units"


def check_settings(iou: float, tolerance: float) -> None:
    """``--iou`` in (0, 1] and ``--boundary-tolerance`` > 0, or one line saying so."""
    if not (isinstance(iou, int | float) and 0.0 < float(iou) <= 1.0):
        raise CtsegError(f"--iou {iou} is out of range: give a threshold in (0, 1], e.g. --iou 0.5")
    if not (isinstance(tolerance, int | float) and np.isfinite(tolerance) and tolerance > 0):
        raise CtsegError(f"--boundary-tolerance {tolerance} must be > 0 (map units, metres after reprojection)")


def _f(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.4f}"


def format_object_scores(scores: dict[str, Any]) -> str:
    """A short Markdown table of :func:`evaluate_footprints` scores, then the notes."""
    cls = "" if scores["class"] is None else f" of class {scores['class']!r}"
    units = scores["units"]
    d = scores["boundary_tolerance"]
    rows = [
        ("precision", _f(scores["precision"])), ("recall", _f(scores["recall"])), ("F1", _f(scores["f1"])),
        ("TP / FP / FN", f"{scores['tp']} / {scores['fp']} / {scores['fn']}"),
        ("mean IoU of matches", _f(scores["mean_iou"])), (f"PoLiS ({units})", _f(scores["polis"])),
        (f"boundary F1 (d={d:g} {units}, mean)", _f(scores["boundary_f1"])),
        (f"boundary F1 (d={d:g} {units}, micro)", _f(scores["boundary_f1_micro"])),
    ]  # fmt: skip
    lines = [
        f"{scores['pred_count']} predicted vs {scores['truth_count']} reference footprints{cls}, matched at "
        f"IoU >= {scores['iou_threshold']:g}; CRS {scores['crs'] or 'none'}",
        "",
        "| score | value |",
        "|---|---:|",
        *(f"| {k} | {v} |" for k, v in rows),
    ]
    lines += [f"note: {n}" for n in scores["notes"]]
    return "\n".join(lines)


def run_evaluate_objects(
    pred: str | os.PathLike,
    truth: str | os.PathLike,
    *,
    iou: float = 0.5,
    class_name: str | None = None,
    tolerance: float = 1.0,
    out: str | os.PathLike | None = None,
) -> str:
    """``ctseg evaluate PRED --truth TRUTH`` on two vector files: score, write ``out`` (JSON, atomically) when
    given; returns the table text. Both inputs must be vector files (one line otherwise)."""
    from ctseg.evaluation.files import check_out, write_scores

    check_settings(iou, tolerance)
    for path, what, other in ((pred, "prediction", truth), (truth, "--truth", pred)):
        if not is_vector_input(path):
            raise CtsegError(
                f"{what} {path} is not a vector file but {other} is: object scores need two vector files "
                "(GeoPackage, GeoJSON, Shapefile, FlatGeobuf); class maps are scored as two folders of rasters"
            )
    path = check_out(out)
    scores = evaluate_footprints(pred, truth, iou=iou, class_name=class_name, tolerance=tolerance)
    write_scores(path, scores)
    return format_object_scores(scores)
