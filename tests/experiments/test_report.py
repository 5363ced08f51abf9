"""``ctseg grid`` (dry run, one real tiny run, resume) and ``ctseg report`` (Table 1 numbers, figures)."""

import csv
import json
import os
import shutil
import statistics
from pathlib import Path

import pytest
from helpers.tiny import TINY_CONFIG
from PIL import Image

from ctseg.cli.entry import main
from ctseg.configs import CONFIG_DIR

CLASSES = ["impervious_surface", "building", "low_vegetation", "tree", "car", "clutter"]
#: (model, scheme) → mIoU of seeds 0, 1, 2 …; per-class IoU of a run = mIoU + 0.01 · class index.
FAKE = {
    ("pf-paper", "none"): [0.70, 0.72, 0.77],
    ("pf-paper", "ct-cl"): [0.74, 0.75],
    ("pf-paper", "ct-infonce"): [0.71],
    ("ds-paper", "none"): [0.60, 0.64],
    ("ds-paper", "ct-cl"): [0.66, 0.62],
}


@pytest.fixture
def fake_runs(tmp_path, tiny):
    """Hand-written results.json files with known numbers (checkpoint and CSV log of the tiny run, linked or copied
    into each run's folder: ``ctseg report`` opens no file a results.json names outside its own folder)."""
    real = json.loads((tiny / "results.json").read_text())
    log = next(tiny.rglob("metrics.csv"))
    ckpt = Path(real["checkpoint"])
    root = tmp_path / "runs"
    for (model, scheme), mious in FAKE.items():
        for seed, miou in enumerate(mious):
            run = root / f"{model}-{scheme}" / f"seed{seed}"
            run.mkdir(parents=True)
            try:
                os.link(ckpt, run / ckpt.name)  # 39 MB: a hard link where the file system allows it
            except OSError:
                shutil.copy(ckpt, run / ckpt.name)
            res = {
                **real,
                "checkpoint": str(run / ckpt.name),
                "log_dir": str(run),
                "config_name": f"{model}-{scheme}",
                "dataset": "synthetic",
                "model": model,
                "scheme": scheme,
                "seed": seed,
                "miou": miou,
                "mf1": miou + 0.1,
                "oa": 0.9,
                "iou": {c: miou + 0.01 * i for i, c in enumerate(CLASSES)},
                "mbiou": miou - 0.3,
                "mbf1": miou - 0.2,
                "biou": {c: miou - 0.3 + 0.01 * i for i, c in enumerate(CLASSES)},
                "bf1": {c: miou - 0.2 + 0.01 * i for i, c in enumerate(CLASSES)},
            }
            (run / "results.json").write_text(json.dumps(res))
            shutil.copy(log, run / "metrics.csv")
    return root


def test_tiny_grid_run_writes_results(tiny):
    res = json.loads((tiny / "results.json").read_text())
    for key in ("miou", "mf1", "oa", "iou", "f1", "config_name", "model", "scheme", "seed", "dataset",
                "wall_seconds", "checkpoint", "checkpoint_sha256"):  # fmt: skip
        assert key in res, key
    assert (res["model"], res["scheme"], res["seed"], res["dataset"]) == ("pf-tiny", "ct-cl", 0, "synthetic")
    assert set(res["iou"]) == set(CLASSES) and 0.0 <= res["miou"] <= 1.0
    # boundary IoU / F1 at the default tolerance, logged by the test step (test/biou, test/biou_<class> …)
    assert res["boundary_tolerance"] == 3 and res["boundary"] == {}
    assert (res["boundary_definition"], res["boundary_tolerance_shape"]) == ("ctseg", "square")  # as ctseg evaluate's
    assert set(res["biou"]) == set(res["bf1"]) == set(CLASSES)
    assert 0.0 <= res["mbiou"] <= 1.0 and 0.0 <= res["mbf1"] <= 1.0
    assert 0.0 <= res["contrastive_clipped"] <= 1.0  # the fraction of CT steps clipped (paper reduction)
    assert res["checkpoint_kind"] == "best" and len(res["checkpoint_sha256"]) == 64
    assert res["checkpoint_monitor"] == "val/miou" and 0.0 <= res["checkpoint_score"] <= 1.0
    assert res["fixed_data"] is False and res["data"]["init_args"]["seed"] == 0  # the data seed follows the seed
    from ctseg.experiments.grid import sha256_file

    assert sha256_file(res["checkpoint"]) == res["checkpoint_sha256"]
    log = next(tiny.rglob("metrics.csv")).read_text()
    assert "train/seg" in log
    for key in ("val/biou", "val/bf1", "val/biou_building", "val/bf1_building", "test/biou", "test/bf1_car"):
        assert key in log, key
    # CT's per-stage statistics and the loss before its clip are logged (log_every_n_steps 1 in the tiny config)
    for key in ("train/contrastive_unclipped", "train/classes_s0", "train/pos_pairs_s3", "train/neg_pairs_s0"):
        assert key in log, key


def test_grid_resumes_and_dry_run_lists(tiny, capsys, tmp_path):
    base = tiny.parent.parent
    cfg = base / "tiny-ct-cl.yaml"
    before = (tiny / "results.json").stat().st_mtime_ns
    assert main(["grid", "--configs", str(cfg), "--seeds", "1", "--out", str(base)]) == 0
    assert (tiny / "results.json").stat().st_mtime_ns == before  # finished runs are skipped
    capsys.readouterr()
    out = tmp_path / "plan"
    paper = str(CONFIG_DIR / "potsdam/pf-cl.yaml")
    argv = ["grid", "--configs", str(cfg), paper, "--seeds", "3", "--out", str(out)]
    assert main([*argv, "--dry-run", "--", "--trainer.max_epochs", "1"]) == 0
    printed = capsys.readouterr().out
    assert "6 runs" in printed
    for stem in ("tiny-ct-cl", "pf-cl"):
        for seed in range(3):
            assert f"{out / stem / f'seed{seed}'}" in printed
    assert "--seed_everything 2" in printed and "--trainer.max_epochs 1" in printed
    assert "--seed_everything 2 --trainer.default_root_dir" in printed and "--data.init_args.seed 2" in printed
    assert not out.exists()


def test_grid_varies_the_data_seed_unless_fixed_data(tmp_path, capsys):
    paper = str(CONFIG_DIR / "potsdam/pf-cl.yaml")
    argv = ["grid", "--configs", paper, "--seeds", "2", "--first-seed", "3", "--out", str(tmp_path), "--dry-run"]
    for flags, data_seeded in (([], True), (["--data-seed"], True), (["--fixed-data"], False)):
        assert main([*argv, *flags]) == 0
        printed = capsys.readouterr().out
        assert ("--data.init_args.seed 3" in printed and "--data.init_args.seed 4" in printed) is data_seeded
        assert ("--data.init_args.seed" in printed) is data_seeded
    with pytest.raises(SystemExit) as info:  # argparse's one-line error, exit code 2
        main([*argv, "--fixed-data", "--data-seed"])
    assert info.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_grid_tests_the_best_checkpoint_by_the_monitored_metric(tmp_path):
    """``checkpoint.monitor`` / ``checkpoint.mode`` decide which checkpoint the grid tests: here the validation
    with the LOWEST val/mf1 of four (mode min), not the last, nor the best val/miou."""
    cfg = tmp_path / "mon.yaml"
    cfg.write_text(TINY_CONFIG)
    extra = ["--checkpoint.monitor", "val/mf1", "--checkpoint.mode", "min", "--trainer.max_steps", "4",
             "--trainer.val_check_interval", "1"]  # fmt: skip
    assert main(["grid", "--configs", str(cfg), "--seeds", "1", "--out", str(tmp_path), "--", *extra]) == 0
    res = json.loads((tmp_path / "mon" / "seed0" / "results.json").read_text())
    with open(next((tmp_path / "mon").rglob("metrics.csv")), newline="") as fh:
        mf1 = [float(r["val/mf1"]) for r in csv.DictReader(fh) if r["val/mf1"]]
    assert len(mf1) == 4
    k = mf1.index(min(mf1))  # validation k ran after k + 1 training steps
    assert res["checkpoint_monitor"] == "val/mf1" and res["checkpoint_kind"] == "best"
    assert res["checkpoint_score"] == pytest.approx(min(mf1))
    assert Path(res["checkpoint"]).name == f"best-epoch={k // 2}-step={k + 1}.ckpt"  # 2 batches an epoch


def test_grid_rejects_clashing_config_names(tmp_path, capsys):
    argv = ["grid", "--configs", str(CONFIG_DIR / "potsdam/pf-cl.yaml"), str(CONFIG_DIR / "dubai/pf-cl.yaml")]
    assert main(argv) == 2
    assert "pf-cl" in capsys.readouterr().err


def _csv_rows(path):
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    header = rows[0]
    return {(r[0], r[1]): dict(zip(header[2:], r[2:], strict=True)) for r in rows[1:]}


def test_report_numbers_and_figures(fake_runs, tmp_path):
    out = tmp_path / "report"
    assert main(["report", str(fake_runs), "--out", str(out), "--highlight", "ct-cl", "--device", "cpu"]) == 0
    rows = _csv_rows(out / "table.csv")
    labels = {"pf-paper": "PF", "ds-paper": "DS", "none": "baseline", "ct-cl": "CL", "ct-infonce": "InfoNCE"}
    for (model, scheme), mious in FAKE.items():
        col = f"{labels[model]} {labels[scheme]}"
        assert rows[("synthetic", "runs (seeds)")][col] == str(len(mious))
        assert float(rows[("synthetic", "mIoU")][col]) == pytest.approx(statistics.mean(mious), abs=1e-6)
        std = rows[("synthetic", "mIoU std")][col]
        if len(mious) > 1:
            assert float(std) == pytest.approx(statistics.stdev(mious), abs=1e-6)  # sample std, ddof = 1
        else:
            assert std == ""
        for i, c in enumerate(CLASSES):
            star = "*" if c == "clutter" else ""
            got = float(rows[("synthetic", f"IoU {c}{star}")][col])
            assert got == pytest.approx(statistics.mean(mious) + 0.01 * i, abs=1e-6)
        bmean = statistics.mean(mious) - 0.3
        assert float(rows[("synthetic", "boundary IoU")][col]) == pytest.approx(bmean, abs=1e-6)
        assert float(rows[("synthetic", "boundary F1")][col]) == pytest.approx(bmean + 0.1, abs=1e-6)
        if len(mious) > 1:
            assert float(rows[("synthetic", "boundary IoU std")][col]) == pytest.approx(
                statistics.stdev(mious), abs=1e-6
            )
        got = float(rows[("synthetic", "bIoU building")][col])
        assert got == pytest.approx(bmean + 0.01, abs=1e-6)
        assert float(rows[("synthetic", "bF1 clutter*")][col]) == pytest.approx(bmean + 0.15, abs=1e-6)
    md = (out / "table.md").read_text()
    assert "| boundary IoU | 0.320 | **0.340** | 0.430 | **0.445** | 0.410 |" in md
    assert "### synthetic: boundary IoU / F1 per class (d = 3 px)" in md
    assert "boundary definition: ctseg, square" in md
    assert "| bIoU building | 0.330 | **0.350** | 0.440 | **0.455** | 0.420 |" in md
    assert "| | DS baseline | DS CL | PF baseline | PF CL | PF InfoNCE |" in md
    assert "| mIoU | 0.620 | **0.640** | 0.730 | **0.745** | 0.710 |" in md
    assert "| mIoU std | 0.0283 | 0.0283 | 0.0361 | 0.0071 | – |" in md
    with open(out / "runs.csv", newline="") as fh:
        runs = list(csv.DictReader(fh))
    assert len(runs) == sum(len(m) for m in FAKE.values())
    assert sorted(float(r["miou"]) for r in runs) == pytest.approx(sorted(v for m in FAKE.values() for v in m))
    assert sorted(float(r["mbiou"]) for r in runs) == pytest.approx(sorted(v - 0.3 for m in FAKE.values() for v in m))
    assert all(r["checkpoint_sha256"] for r in runs)
    assert all(0.0 <= float(r["contrastive_clipped"]) <= 1.0 for r in runs)  # from results.json
    runs_md = (out / "runs.md").read_text()
    assert runs_md.count("\n| synthetic |") == len(runs)
    for name in ("qualitative.png", "patch_sampling.png", "curves.png"):
        with Image.open(out / name) as img:
            assert img.size[0] > 300 and img.size[1] > 200
    assert not [p for p in out.iterdir() if ".tmp" in p.name]


def test_report_errors(tmp_path, capsys, fake_runs):
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no results.json" in err and len(err.splitlines()) == 1
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["report", str(fake_runs), "--out", str(blocker / "sub")]) == 2
    err = capsys.readouterr().err.strip()
    assert str(blocker) in err and len(err.splitlines()) == 1
    bad = tmp_path / "bad" / "results.json"
    bad.parent.mkdir()
    bad.write_text("{not json")
    assert main(["report", str(bad.parent), "--out", str(tmp_path / "r2")]) == 2
    assert "results.json" in capsys.readouterr().err


def test_unknown_highlight_is_one_line(fake_runs, tmp_path, capsys):
    assert main(["report", str(fake_runs), "--out", str(tmp_path / "r"), "--highlight", "ct-foo"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["ctseg: error: --highlight 'ct-foo': choose one of ct-cl, ct-infonce, ms, mscs"]
    assert not (tmp_path / "r").exists()


def test_a_missing_highlight_scheme_is_said(fake_runs, tmp_path, capsys):
    assert main(["report", str(fake_runs), "--out", str(tmp_path / "r"), "--highlight", "mscs", "--device", "cpu"]) == 0
    note = "report: no mscs run with a checkpoint beside a baseline; qualitative.png shows ct-cl"
    assert note in capsys.readouterr().out


def test_curves_use_the_recorded_log_shift_validation_and_name_missing_panels(fake_runs, tiny, monkeypatch):
    """The run's recorded log_dir is read (not the newest metrics.csv below the run), validation points sit at
    the number of steps done (the tiny run validates after 2 steps; Lightning logs it at step 1), and a panel
    no run logged is named."""
    import ctseg.experiments.figures
    from ctseg.experiments.report import collect_results, curves_figure, group_results

    decoy = fake_runs / "pf-paper-none" / "seed0" / "later" / "metrics.csv"
    decoy.parent.mkdir()
    decoy.write_text("epoch,step,val/miou,train/seg\n0,0,0.99,9.0\n")  # newer than the recorded log
    captured = {}
    monkeypatch.setattr(ctseg.experiments.figures, "plot_curves", lambda curves, path: captured.update(curves))
    results = [r for r in collect_results([fake_runs]) if r["scheme"] == "none"]
    notes = []
    curves_figure(group_results(results), Path("unused.png"), notes.append)
    [(name, series)] = [(n, c) for n, c in captured.items() if n.startswith("PF")]
    assert [x for x, _ in series["val/miou"]] == [2.0] and series["val/miou"][0][1] < 0.5
    assert [x for x, _ in series["train/seg"]] == [0.0, 1.0] and max(v for _, v in series["train/seg"]) < 9
    assert notes == []  # the tiny CT-CL log has train/contrastive too
    log = next(tiny.rglob("metrics.csv"))
    baseline_log = fake_runs / "base.csv"
    lines = log.read_text().splitlines()
    keep = [i for i, h in enumerate(lines[0].split(",")) if not h.startswith("train/contrastive")]
    baseline_log.write_text("\n".join(",".join(r.split(",")[i] for i in keep) for r in lines) + "\n")
    for r in results:  # a log folder inside each run's own folder (one elsewhere is not read)
        r["log_dir"] = str(Path(r["_path"]).parent / "baseline-log")
        Path(r["log_dir"]).mkdir()
        (Path(r["log_dir"]) / "metrics.csv").write_text(baseline_log.read_text())
    curves_figure(group_results(results), Path("unused.png"), notes.append)
    assert notes == ["report: curves.png has no panel for train/contrastive: no run logged it"]
