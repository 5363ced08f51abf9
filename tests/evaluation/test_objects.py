"""Object-level scores (``ctseg evaluate PRED.gpkg --truth TRUTH.gpkg``): matching against a brute-force reference,
ties, thresholds, PoLiS and boundary F1 by hand, CRS handling, the CLI's JSON and its one-line errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pyproj
import pytest
import shapely
from shapely import affinity
from shapely.geometry import Point, Polygon, box

from ctseg.cli.entry import main
from ctseg.evaluation.footprints import evaluate_footprints
from ctseg.evaluation.objects import match_objects, object_scores
from ctseg.evaluation.polis import boundary_match, polis

TOP_KEYS = ("precision", "recall", "f1", "tp", "fp", "fn", "mean_iou")


def _write(path, geoms, classes=None, crs="EPSG:32631"):
    import pyogrio.raw

    driver = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".fgb": "FlatGeobuf", ".shp": "ESRI Shapefile"}[path.suffix]
    fields = [np.asarray(classes, dtype=object)] if classes is not None else []
    wkb = (
        np.asarray(shapely.to_wkb(np.asarray(geoms, dtype=object)), dtype=object) if len(geoms) else np.zeros(0, object)
    )
    pyogrio.raw.write(path, wkb, fields, ["class"] if classes is not None else [], driver=driver,
                      geometry_type="Polygon", crs=crs)  # fmt: skip
    return path


# --- the hand-written reference: every pair, exact IoU, greedy by (IoU desc, truth index, prediction index) ---


def _reference(truth, pred, thr):
    pairs = []
    for i, t in enumerate(truth):
        for j, p in enumerate(pred):
            inter = t.intersection(p).area
            if inter <= 0:
                continue
            iou = inter / t.union(p).area
            if iou >= thr:
                pairs.append((-iou, i, j))
    pairs.sort()
    used_t, used_p, matches = set(), set(), []
    for neg, i, j in pairs:
        if i not in used_t and j not in used_p:
            used_t.add(i)
            used_p.add(j)
            matches.append((i, j, -neg))
    return matches


def _scene(seed, n=120):
    """Random rotated rectangles (truth) and predictions: jittered / scaled copies, misses, extras, merges."""
    rng = np.random.default_rng(seed)
    truth = []
    for _ in range(n):
        x, y = rng.uniform(0, 400, 2)
        w, h = rng.uniform(4, 20, 2)
        truth.append(affinity.rotate(box(x, y, x + w, y + h), rng.uniform(0, 90)))
    pred = []
    for t in truth:
        r = rng.random()
        if r < 0.15:
            continue  # missed
        g = affinity.translate(t, *rng.normal(0, 1.5, 2))
        g = affinity.scale(g, *rng.uniform(0.7, 1.3, 2))
        pred.append(g)
        if r > 0.9:
            pred.append(affinity.translate(t, *rng.normal(0, 3, 2)))  # a duplicate competing for the same truth
    for _ in range(15):  # false alarms
        x, y = rng.uniform(0, 400, 2)
        pred.append(box(x, y, x + 8, y + 8))
    order = rng.permutation(len(pred))
    return truth, [pred[k] for k in order]


@pytest.mark.parametrize("seed,thr", [(0, 0.5), (1, 0.3), (2, 0.75)])
def test_matching_equals_the_brute_force_reference(seed, thr):
    truth, pred = _scene(seed)
    ref = _reference(truth, pred, thr)
    ti, pi, iou = match_objects(truth, pred, thr)
    assert sorted(zip(ti.tolist(), pi.tolist(), strict=True)) == sorted((i, j) for i, j, _ in ref)
    s = object_scores(truth, pred, iou=thr)
    tp = len(ref)
    assert (s["tp"], s["fp"], s["fn"]) == (tp, len(pred) - tp, len(truth) - tp)
    assert s["precision"] == pytest.approx(tp / len(pred)) and s["recall"] == pytest.approx(tp / len(truth))
    assert s["f1"] == pytest.approx(2 * tp / (len(pred) + len(truth)))
    assert s["mean_iou"] == pytest.approx(sum(v for *_, v in ref) / tp)
    assert 0 < tp < len(truth)


def test_ties_go_to_the_lower_truth_then_the_lower_prediction():
    t = box(0, 0, 10, 10)
    left, right = box(-2, 0, 8, 10), box(2, 0, 12, 10)  # both IoU 8/12 with t
    assert match_objects([t], [right, left], 0.5)[1].tolist() == [0]
    assert match_objects([t], [left, right], 0.5)[1].tolist() == [0]
    # one prediction, equal IoU with two truths: the lower truth index wins, the other is a miss
    t0, t1, wide = box(0, 0, 10, 10), box(10, 0, 20, 10), box(0, 0, 20, 10)
    ti, pi, iou = match_objects([t1, t0], [wide], 0.5)
    assert ti.tolist() == [0] and iou.tolist() == [0.5]
    assert _reference([t1, t0], [wide], 0.5) == [(0, 0, 0.5)]


def test_one_prediction_over_two_truths_matches_at_most_one():
    t0, t1 = box(0, 0, 10, 10), box(10, 0, 20, 10)
    wide = box(0, 0, 18, 10)  # IoU 10/18 with t0, 8/20 with t1
    s = object_scores([t0, t1], [wide], iou=0.5)
    assert (s["tp"], s["fp"], s["fn"]) == (1, 0, 1) and s["matches"] == [[0, 0, pytest.approx(10 / 18)]]
    assert object_scores([t0, t1], [wide], iou=0.3)["tp"] == 1  # still one-to-one below 0.4


def test_iou_exactly_at_the_threshold_matches():
    t, half = box(0, 0, 10, 10), box(0, 0, 10, 5)  # IoU exactly 0.5
    assert object_scores([t], [half], iou=0.5)["tp"] == 1
    assert object_scores([t], [half], iou=0.5000001)["tp"] == 0
    with pytest.raises(ValueError):
        match_objects([t], [half], 0.0)


def test_polis_by_hand():
    unit = box(0, 0, 1, 1)
    # two vertices of each square lie on the other's edges, two are 0.1 away: (0.1 + 0.1) / 8 per half
    assert polis([unit], [affinity.translate(unit, 0.1)])[0] == pytest.approx(0.05)
    # [0,1]² vs [0,2]²: A's vertex (1,1) is 1 from ∂B; B's (2,0), (2,2), (0,2) are 1, √2, 1 from ∂A
    assert polis([unit], [box(0, 0, 2, 2)])[0] == pytest.approx((1 + 2 + math.sqrt(2)) / 8)
    # distance to the boundary, not to the vertices: B's vertex (0.5, -0.5) is 0.5 from A's bottom edge
    tri = Polygon([(0.5, -0.5), (1, 1), (0, 1)])
    by_hand = (sum(Point(v).distance(tri.exterior) for v in [(0, 0), (1, 0), (1, 1), (0, 1)]) / 8
               + sum(Point(v).distance(unit.exterior) for v in [(0.5, -0.5), (1, 1), (0, 1)]) / 6)  # fmt: skip
    assert by_hand == pytest.approx(2 * 0.5 / math.sqrt(2.5) / 8 + 0.5 / 6)  # (0,0), (1,0): 0.5/√2.5 from its legs
    assert polis([unit], [tri])[0] == pytest.approx(by_hand)
    assert polis([unit], [unit])[0] == 0


@pytest.mark.parametrize("shift,tol,expected", [(0.5, 1.0, 1.0), (2.0, 1.0, 0.5), (3.0, 0.5, 0.4), (15.0, 1.0, 0.0)])
def test_boundary_f1_on_shifted_squares(shift, tol, expected):
    # T = [0,10]², P = T shifted by s along x, d < s: P's bottom and top edges lie on T's for 10 - s and come
    # within d of T's corner for d more; its left edge is within d of T's bottom / top edges for d at each end;
    # its right edge is s from T: (2 (10 - s + d) + 2d) / 40 = (20 - 2s + 4d) / 40, the same for the recall
    t = box(0, 0, 10, 10)
    bm = boundary_match([t], [affinity.translate(t, shift)], tol)
    assert bm["precision"][0] == pytest.approx(expected, abs=1e-9)
    assert bm["recall"][0] == pytest.approx(expected, abs=1e-9)
    assert bm["f1"][0] == pytest.approx(expected, abs=1e-9)


def test_boundary_f1_mean_and_micro():
    t = [box(0, 0, 10, 10), box(20, 0, 30, 10)]
    p = [affinity.translate(t[0], 0.5), box(20, 0, 25, 10)]  # IoU 0.905 and 0.5
    s = object_scores(t, p, iou=0.5, tolerance=1.0)
    # second pair by hand: P's boundary near T's for 10 + 5 + 5 + 2 of 30, T's near P's for 10 + 6 + 6 of 40
    pr, rc = 22 / 30, 22 / 40
    assert s["boundary_f1"] == pytest.approx((1 + 2 * pr * rc / (pr + rc)) / 2)
    mp, mr = (40 + 22) / 70, (40 + 22) / 80
    assert s["boundary_precision"] == pytest.approx(mp) and s["boundary_recall"] == pytest.approx(mr)
    assert s["boundary_f1_micro"] == pytest.approx(2 * mp * mr / (mp + mr))
    assert s["polis"] == pytest.approx((0.25 + 10 / 8) / 2)


def test_empty_prediction_file(tmp_path):
    truth = _write(tmp_path / "t.gpkg", [box(0, 0, 10, 10), box(20, 0, 30, 10)], ["building"] * 2)
    pred = _write(tmp_path / "p.gpkg", [])
    s = evaluate_footprints(pred, truth, class_name="building")
    assert (s["tp"], s["fp"], s["fn"], s["precision"], s["recall"], s["f1"]) == (0, 0, 2, None, 0.0, 0.0)
    assert s["mean_iou"] is None and s["polis"] is None and s["boundary_f1"] is None
    assert any("no 'class' field" in n for n in s["notes"])


def test_crs_mismatch_truth_geographic_prediction_utm(tmp_path):
    rng = np.random.default_rng(3)
    utm = [box(x, y, x + 12, y + 9) for x, y in rng.uniform(500_000, 501_000, (30, 2)) + [0, 5_540_000]]
    to_ll = pyproj.Transformer.from_crs("EPSG:32631", "EPSG:4326", always_xy=True)
    ll = shapely.transform(np.asarray(utm, dtype=object), lambda xy: np.column_stack(to_ll.transform(*xy.T)))
    truth = _write(tmp_path / "t.geojson", ll, crs="EPSG:4326")
    pred = _write(tmp_path / "p.gpkg", [affinity.translate(g, 0.3) for g in utm], crs="EPSG:32631")
    s = evaluate_footprints(pred, truth)
    assert s["tp"] == 30 and s["fp"] == 0 and s["fn"] == 0
    assert "EPSG:32631" in s["crs"] and s["units"] == "metre"
    assert any("geographic" in n and "UTM zone 31N" in n for n in s["notes"])
    assert s["mean_iou"] == pytest.approx(11.7 / 12.3, abs=1e-4)  # a 0.3 m shift of a 12 m wide box
    assert s["polis"] == pytest.approx(0.15, abs=1e-3)
    # the other way round: a projected truth keeps its CRS, the geographic prediction is brought to it
    back = evaluate_footprints(truth, pred)
    assert back["tp"] == 30 and any("reprojected from WGS 84" in n for n in back["notes"])


def test_cli_end_to_end_writes_the_json(tmp_path, capsys):
    t = [box(0, 0, 10, 10), box(20, 0, 30, 10), box(40, 0, 50, 10), box(60, 0, 70, 10)]
    p = [affinity.translate(t[0], 0.5), box(20, 0, 25, 10), box(100, 100, 110, 110), box(60, 0, 70, 10)]
    truth = _write(tmp_path / "t.gpkg", t, ["building", "building", "building", "road"])
    pred = _write(tmp_path / "p.fgb", p, ["building", "building", "building", "road"])
    (out_dir := tmp_path / "out").mkdir()
    out = out_dir / "s.json"
    assert main(["evaluate", str(pred), "--truth", str(truth), "--class", "building", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| precision | 0.6667 |" in printed and "| TP / FP / FN | 2 / 1 / 1 |" in printed
    s = json.loads(out.read_text())
    assert [p.name for p in out_dir.iterdir()] == ["s.json"]  # atomic: no temporary left beside it
    assert {k: s[k] for k in TOP_KEYS} == {"precision": pytest.approx(2 / 3), "recall": pytest.approx(2 / 3),
                                           "f1": pytest.approx(2 / 3), "tp": 2, "fp": 1, "fn": 1,
                                           "mean_iou": pytest.approx((95 / 105 + 0.5) / 2)}  # fmt: skip
    assert s["format"] == "ctseg-object-scores" and s["class"] == "building" and s["iou_threshold"] == 0.5
    assert s["boundary_tolerance"] == 1.0 and s["boundary_step"] == 0.1 and len(s["matches"]) == 2
    assert main(["evaluate", str(pred), "--truth", str(truth), "--iou", "0.6", "--boundary-tolerance", "2"]) == 0
    assert "2 / 2 / 2" in capsys.readouterr().out  # all classes: the road pair matches, the half box does not


def _one_error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ctseg: error: "), err
    return err[0]


def test_error_lines_and_nothing_written(tmp_path, capsys):
    truth = _write(tmp_path / "t.gpkg", [box(0, 0, 10, 10)], ["building"])
    pred = _write(tmp_path / "p.gpkg", [box(0, 0, 10, 10)], ["building"])
    out = tmp_path / "s.json"
    base = ["--out", str(out)]
    msg = _one_error(capsys, ["evaluate", str(tmp_path / "none.gpkg"), "--truth", str(truth), *base])
    assert "none.gpkg does not exist" in msg
    for bad in ("0", "1.5", "-0.1"):
        msg = _one_error(capsys, ["evaluate", str(pred), "--truth", str(truth), "--iou", bad, *base])
        assert f"--iou {float(bad)}" in msg and "(0, 1]" in msg
    msg = _one_error(capsys, ["evaluate", str(pred), "--truth", str(truth), "--class", "road", *base])
    assert "no feature of class 'road'" in msg and "building" in msg and str(truth) in msg
    (tmp_path / "labels").mkdir()
    msg = _one_error(capsys, ["evaluate", str(pred), "--truth", str(tmp_path / "labels"), *base])
    assert "not a vector file" in msg and "labels" in msg
    tif = tmp_path / "pred.tif"
    tif.write_bytes(b"II*\x00" + bytes(100))
    msg = _one_error(capsys, ["evaluate", str(tif), "--truth", str(truth), *base])
    assert "pred.tif is not a vector file" in msg
    msg = _one_error(capsys, ["evaluate", str(pred), "--truth", str(truth), "--dataset", "dubai", *base])
    assert "--dataset" in msg
    msg = _one_error(
        capsys, ["evaluate", str(tmp_path), "--truth", str(tmp_path), "--iou", "0.5", "--dataset", "dubai"]
    )
    assert "--iou" in msg and "not vector files" in msg
    assert not out.exists()


def _polis_loop(a, b):
    def vertices(g):
        return [c for ring in shapely.get_parts(g.boundary) for c in list(ring.coords)[:-1]]

    va, vb = vertices(a), vertices(b)
    return (sum(Point(v).distance(b.boundary) for v in va) / (2 * len(va))
            + sum(Point(v).distance(a.boundary) for v in vb) / (2 * len(vb)))  # fmt: skip


def test_polis_equals_a_loop_on_irregular_polygons_in_small_chunks(monkeypatch):
    import ctseg.evaluation.polis as polis_module

    monkeypatch.setattr(polis_module, "CHUNK", 7)  # many chunks, each with mixed segment counts
    rng = np.random.default_rng(5)
    truth, pred = [], []
    for k in range(12):
        blob = Point(rng.uniform(0, 50, 2)).buffer(rng.uniform(2, 6), quad_segs=int(rng.integers(1, 9)))
        if k % 3 == 0:
            blob = blob.difference(blob.centroid.buffer(1.0))  # a hole
        if k % 4 == 1:
            blob = shapely.union(blob, affinity.translate(blob, 20, 0))  # two parts
        truth.append(blob)
        pred.append(affinity.rotate(affinity.translate(blob, *rng.normal(0, 0.5, 2)), rng.uniform(-10, 10)))
    got = polis(truth, pred)
    assert got == pytest.approx([_polis_loop(a, b) for a, b in zip(truth, pred, strict=True)], rel=1e-9)
