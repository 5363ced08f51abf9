"""``ctseg evaluate``: pairing, decoding with the data set's protocol, region + boundary scores, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image

from ctseg.cli.entry import main
from ctseg.data.definitions import DUBAI
from ctseg.evaluation.metrics import BoundaryMetrics, SegmentationMetrics, boundary_scores


def _blocky(rng, h, w, values, cell=6):
    coarse = rng.choice(np.asarray(values), size=(h // cell + 1, w // cell + 1))
    return np.kron(coarse, np.ones((cell, cell), dtype=coarse.dtype))[:h, :w]


def _write_tif(path: Path, classes: np.ndarray) -> None:
    profile = dict(driver="GTiff", height=classes.shape[0], width=classes.shape[1], count=1, dtype="uint8")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(classes.astype(np.uint8)[None])


def _dubai_case(root: Path, sizes=((40, 50), (33, 47))):
    """Colour-coded Dubai truth (with Unlabeled pixels) and predictions as predict writes them: <stem>_pred.tif
    with its colour companion <stem>_pred.png. Returns (pred dir, truth dir, [(pred classes, truth classes)])."""
    rng = np.random.default_rng(0)
    preds, truths = root / "pred", root / "truth"
    preds.mkdir(parents=True)
    truths.mkdir()
    arrays = []
    for i, (h, w) in enumerate(sizes):
        truth = _blocky(rng, h, w, range(5)).astype(np.uint8)
        truth[rng.random((h, w)) < 0.03] = 255
        rgb = np.asarray(DUBAI.colors, np.uint8)[np.minimum(truth, 4)]
        rgb[truth == 255] = DUBAI.ignore_colors[0]
        Image.fromarray(rgb).save(truths / f"img_{i}.png")
        pred = np.where(rng.random((h, w)) < 0.2, rng.integers(0, 5, (h, w)), np.minimum(truth, 4)).astype(np.uint8)
        pred = np.roll(pred, 1, axis=1)
        _write_tif(preds / f"img_{i}_pred.tif", pred)
        Image.fromarray(DUBAI.colorize(pred)).save(preds / f"img_{i}_pred.png")  # predict's colour PNG: skipped
        _write_tif(preds / f"img_{i}_conf.tif", np.full((h, w), 200))  # and its confidence map
        arrays.append((pred, truth))
    return preds, truths, arrays


def _expected(arrays, k, tolerances=(3,), eval_classes=None):
    region = SegmentationMetrics(k, eval_classes=eval_classes)
    boundary = BoundaryMetrics(k, list(tolerances), eval_classes=eval_classes)
    for pred, truth in arrays:
        p, t = torch.as_tensor(pred.astype(np.int64))[None], torch.as_tensor(truth.astype(np.int64))[None]
        region.update(p, t)
        boundary.update(p, t)
    return region.compute(), boundary.compute()


def test_colour_labels_and_predict_output(tmp_path, capsys):
    preds, truths, arrays = _dubai_case(tmp_path)
    out = tmp_path / "scores.json"
    argv = ["evaluate", str(preds), "--truth", str(truths), "--dataset", "dubai", "--out", str(out), "--tolerance",
            "3", "1"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "dubai: 2 file pair(s)" in printed and "| building |" in printed and "bIoU (d=1)" in printed
    scores = json.loads(out.read_text())
    region, boundary = _expected(arrays, 5, (3, 1))
    assert scores["pairs"] == 2 and scores["dataset"] == "dubai"
    assert scores["pixels"] == sum(int((t != 255).sum()) for _, t in arrays)
    assert scores["miou"] == pytest.approx(region["miou"].item()) and scores["oa"] == pytest.approx(region["oa"].item())
    assert scores["iou"]["road"] == pytest.approx(region["iou"][2].item())
    assert scores["boundary_tolerance"] == 3
    assert scores["mbiou"] == pytest.approx(boundary["mbiou"].item())
    assert scores["bf1"]["water"] == pytest.approx(boundary["bf1"][4].item())
    assert scores["boundary"]["1"]["biou"]["land"] == pytest.approx(boundary["biou@1"][1].item())
    assert [Path(p).name for p, _ in scores["files"]] == ["img_0_pred.tif", "img_1_pred.tif"]
    # the accumulated scores are sums over both files, not a mean of per-file ratios
    one = boundary_scores(torch.as_tensor(arrays[0][0])[None].long(), torch.as_tensor(arrays[0][1])[None].long(), 5)
    assert not torch.allclose(one["biou"], boundary["biou"], equal_nan=True)


def test_index_labels_and_index_pngs(tmp_path):
    """LoveDA-style index masks (values 1–7, 0 = no label) against index-PNG predictions <stem>.png."""
    from ctseg.data.registry import get_dataset
    from ctseg.evaluation.files import evaluate_folder, format_scores

    info = get_dataset("loveda").info
    rng = np.random.default_rng(1)
    (tmp_path / "p").mkdir()
    (tmp_path / "t").mkdir()
    arrays = []
    for i in range(3):
        values = _blocky(rng, 30, 36, range(8)).astype(np.uint8)  # 0 = no label
        truth = np.where(values == 0, 255, values - 1).astype(np.uint8)
        pred = np.where(rng.random(values.shape) < 0.1, rng.integers(0, 7, values.shape), truth % 255)
        pred = np.where(truth == 255, 0, pred).astype(np.uint8)
        Image.fromarray(values).save(tmp_path / "t" / f"{i}.png")
        Image.fromarray(pred).save(tmp_path / "p" / f"{i}.png")
        arrays.append((pred, truth))
    scores = evaluate_folder(tmp_path / "p", tmp_path / "t", info)
    region, boundary = _expected(arrays, 7)
    assert scores["miou"] == pytest.approx(region["miou"].item())
    assert scores["mbf1"] == pytest.approx(boundary["mbf1"].item())
    assert "| forest |" in format_scores(scores)


def test_a_prepared_folder_manifest_gives_the_definition(tmp_path, capsys):
    from helpers.make_folder import make_jpeg_folder

    from ctseg.data.prepare import prepare_dataset

    labels = make_jpeg_folder(tmp_path / "src", count=2, h=48, w=40)
    prepare_dataset("folder", tmp_path / "src", tmp_path / "data", classes=tmp_path / "src" / "classes.yaml",
                    crop=32, val_fraction=0.5, workers=1, progress=False)  # fmt: skip
    (tmp_path / "p").mkdir()
    for stem, values in labels.items():  # a perfect prediction (classes 0–2 = values 1–3; nodata where unlabelled)
        _write_tif(tmp_path / "p" / f"{stem}_pred.tif", np.where(values == 0, 255, values.astype(int) - 1))
    argv = ["evaluate", str(tmp_path / "p"), "--truth", str(tmp_path / "src" / "masks"), "--manifest",
            str(tmp_path / "data" / "manifest.json"), "--out", str(tmp_path / "s.json")]  # fmt: skip
    assert main(argv) == 0
    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["dataset"] == "mine" and scores["miou"] == 1.0 and scores["mbiou"] == 1.0 and scores["mbf1"] == 1.0
    assert scores["eval_classes"] == [0, 1] and "water*" in capsys.readouterr().out  # not averaged into the means


def test_large_images_in_strips_give_the_same_sums(monkeypatch):
    import ctseg.evaluation.files as ev

    rng = np.random.default_rng(2)
    truth = _blocky(rng, 150, 40, range(4), cell=5).astype(np.int64)
    truth[rng.random(truth.shape) < 0.02] = 255
    pred = np.where(rng.random(truth.shape) < 0.15, rng.integers(0, 4, truth.shape), np.minimum(truth, 3))
    pred[rng.random(truth.shape) < 0.01] = 255
    whole = BoundaryMetrics(4, [3, 5])
    whole.update(torch.as_tensor(pred)[None], torch.as_tensor(truth)[None])
    monkeypatch.setattr(ev, "STRIP_BUDGET", 1)  # 64-row strips
    region, strips = SegmentationMetrics(4), BoundaryMetrics(4, [3, 5])
    ev._score_pair(pred, truth, region, strips, torch.device("cpu"))
    assert torch.equal(strips.counts, whole.counts)
    full = SegmentationMetrics(4)
    full.update(torch.as_tensor(pred)[None], torch.as_tensor(truth)[None])
    assert torch.equal(region.confmat, full.confmat)


def _one_error(capsys, argv) -> str:
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse's own one-line errors
        code = exit.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ctseg: error:"), err
    return err[0]


def test_bad_input_is_one_line(tmp_path, capsys):
    preds, truths, _ = _dubai_case(tmp_path)
    base = ["evaluate", str(preds), "--truth", str(truths), "--dataset", "dubai"]
    for bad in ("0", "-1"):
        assert "tolerance" in _one_error(capsys, [*base, "--tolerance", bad])
    assert "--tolerance" in _one_error(capsys, [*base, "--tolerance", "1.5"])
    # a prediction value outside the classes names the file, the value and a pixel
    _write_tif(preds / "img_0_pred.tif", np.full((40, 50), 7))
    err = _one_error(capsys, base)
    assert "img_0_pred.tif" in err and "value 7" in err and "0–4" in err
    # different sizes name both files and both sizes
    _write_tif(preds / "img_0_pred.tif", np.zeros((40, 49)))
    err = _one_error(capsys, base)
    assert "img_0_pred.tif" in err and "img_0.png" in err and "40 × 49" in err and "40 × 50" in err
    # a prediction without a label, and a label without a prediction
    _write_tif(preds / "img_0_pred.tif", np.zeros((40, 50)))
    _write_tif(preds / "extra_pred.tif", np.zeros((4, 4)))
    assert "no label" in (err := _one_error(capsys, base)) and "extra_pred.tif" in err
    (preds / "extra_pred.tif").unlink()
    (preds / "img_1_pred.tif").unlink()
    (preds / "img_1_pred.png").unlink()
    (preds / "img_1_conf.tif").unlink()
    assert "no prediction" in (err := _one_error(capsys, base)) and "img_1.png" in err
    # no data set given, a folder data set without its manifest, an empty prediction folder
    assert "required" in _one_error(capsys, ["evaluate", str(preds), "--truth", str(truths)])
    assert "--manifest" in _one_error(capsys, [*base[:-1], "folder"])
    (tmp_path / "empty").mkdir()
    err = _one_error(capsys, ["evaluate", str(tmp_path / "empty"), "--truth", str(truths), "--dataset", "dubai"])
    assert "no prediction files" in err


def test_out_that_cannot_be_written_is_one_line(tmp_path, capsys, monkeypatch):
    """A disk that fills while scores.json is written: one line naming --out, no file or temporary left."""
    import errno

    import ctseg.io

    preds, truths, _ = _dubai_case(tmp_path)
    real = ctseg.io.atomic_path

    def full(path, text):
        with real(path) as tmp:
            tmp.write_text(text[:10])
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ctseg.io, "write_text_atomic", full)
    (tmp_path / "scores").mkdir()
    out = tmp_path / "scores" / "s.json"
    err = _one_error(capsys, ["evaluate", str(preds), "--truth", str(truths), "--dataset", "dubai", "--out", str(out)])
    assert f"--out {out}" in err and "No space left on device" in err
    assert list((tmp_path / "scores").iterdir()) == []


def test_the_published_definitions_are_named_and_used(tmp_path, capsys):
    preds, truths, arrays = _dubai_case(tmp_path)
    out = tmp_path / "scores.json"
    argv = ["evaluate", str(preds), "--truth", str(truths), "--dataset", "dubai", "--out", str(out),
            "--boundary", "reference", "--boundary-shape", "disk"]  # fmt: skip
    assert main(argv) == 0
    assert "boundary definition: reference, F1 tolerance disk" in capsys.readouterr().out
    scores = json.loads(out.read_text())
    expected = BoundaryMetrics(5, 3, definition="reference", tolerance_shape="disk")
    for pred, truth in arrays:
        expected.update(torch.as_tensor(pred.astype(np.int64))[None], torch.as_tensor(truth.astype(np.int64))[None])
    res = expected.compute()
    assert scores["boundary_definition"] == "reference" and scores["boundary_tolerance_shape"] == "disk"
    assert scores["mbiou"] == pytest.approx(res["mbiou"].item()) and scores["mbf1"] == pytest.approx(res["mbf1"].item())
    assert scores["boundary_tolerance_m"] is None  # PNG labels: no georeference
    assert _one_error(capsys, argv[:-1] + ["circle"])


def test_tolerances_in_metres_for_georeferenced_rasters(tmp_path):
    from rasterio.transform import from_origin

    from ctseg.evaluation.files import _metres, pixel_metres

    paths = []
    for name in ("a_pred.tif", "a.tif"):
        path = tmp_path / name
        profile = dict(driver="GTiff", height=8, width=8, count=1, dtype="uint8", crs="EPSG:32640",
                       transform=from_origin(500000, 2700000, 0.5, 0.5))  # fmt: skip
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(np.zeros((1, 8, 8), np.uint8))
        paths.append(path)
    assert pixel_metres(paths[0]) == 0.5
    assert _metres([("a", paths[0], paths[1])], (3, 1)) == [1.5, 0.5]
    plain = tmp_path / "b.tif"
    _write_tif(plain, np.zeros((8, 8)))
    assert pixel_metres(plain) is None and _metres([("a", paths[0], plain)], (3,)) is None
