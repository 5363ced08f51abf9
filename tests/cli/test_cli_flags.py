"""Each sub-command's flags are declared once, in its module under ``ctseg.cli`` (docs/design.md §13), and
``ctseg predict``'s flags cannot drift from :func:`ctseg.predict.run.run_predict`'s signature."""

from __future__ import annotations

import argparse
import inspect

import pytest

from ctseg.cli import predict as predict_cmd
from ctseg.cli.entry import COMMANDS, LIGHTNING_COMMANDS, main
from ctseg.predict.run import run_predict


def _actions(module) -> dict[str, argparse.Action]:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return {a.dest: a for a in parser._actions if a.dest != "help"}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_module_declares_its_flags_and_its_run(name, capsys):
    module = COMMANDS[name]
    assert module.HELP and callable(module.add_arguments) and callable(module.run)
    assert module.__name__ == f"ctseg.cli.{name}"
    with pytest.raises(SystemExit) as exit_:
        main([name, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for action in _actions(module).values():
        assert all(option in out for option in action.option_strings)


def test_the_top_level_help_lists_every_registered_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "{" + ",".join((*LIGHTNING_COMMANDS, *COMMANDS)) + "}" in out
    words = " ".join(out.split())
    for name, module in COMMANDS.items():
        assert f"{name} {' '.join(module.HELP.split()[:3])}" in words


def test_predict_flags_and_run_predict_keywords_match():
    """Every keyword of ``run_predict`` is set by a flag (or is one of the few the command leaves at its default),
    every flag sets a keyword (or is applied around the run), and their defaults agree."""
    params = inspect.signature(run_predict).parameters
    actions = _actions(predict_cmd)
    mapped = set(predict_cmd.POSITIONAL) | set(predict_cmd.KEYWORDS) | set(predict_cmd.NOT_FLAGS)
    assert mapped == set(params), "run_predict's signature and cli/predict.py's KEYWORDS differ"
    assert list(params)[: len(predict_cmd.POSITIONAL)] == list(predict_cmd.POSITIONAL)
    flag_dests = set(predict_cmd.POSITIONAL) | set(predict_cmd.KEYWORDS.values()) | set(predict_cmd.AROUND)
    assert flag_dests == set(actions), "a flag of ctseg predict reaches no run_predict keyword"
    for keyword, dest in predict_cmd.KEYWORDS.items():
        default = params[keyword].default
        flag_default = actions[dest].default
        if isinstance(default, tuple):
            default = list(default)
        assert flag_default == default, f"--{dest} defaults to {flag_default!r}, {keyword}={default!r}"


def test_predict_passes_every_flag_to_run_predict(monkeypatch, capsys):
    seen = {}

    def fake(*args, **kwargs):
        seen["args"], seen["kwargs"] = args, kwargs
        return []

    monkeypatch.setattr("ctseg.predict.run.run_predict", fake)
    argv = ["predict", "a.tif", "b.tif", "--inputs", "l.txt", "--ckpt", "m.ckpt", "--out", "o", "--tta",
            "--window", "256", "--overlap", "0.5", "--batch-size", "2", "--no-color", "--png-max-mpx", "5",
            "--probs", "uint8", "--confidence", "--skip-existing", "--vector", ".gpkg", "--vector-classes", "1",
            "--overwrite", "--device", "cpu", "--dataset", "dubai", "--bands", "1,2,3", "--nodata", "0",
            "--format", "geotiff", "--overlay", "--asset", "visual", "--bbox", "1,2,3,4", "--bbox-crs", "EPSG:4326",
            "--aoi", "aoi.gpkg", "--regularize", "--regularize-tolerance", "1.5", "--uncertainty",
            "--uncertain-windows", "7", "--runtime", "onnx", "--vector-workers", "3"]  # fmt: skip
    assert main(argv) == 0
    assert seen["args"] == ("m.ckpt", ["a.tif", "b.tif"], "o")
    assert seen["kwargs"] == {
        "tta": True, "window": 256, "overlap": 0.5, "batch_size": 2, "color": False, "overwrite": True,
        "device": "cpu", "dataset": "dubai", "bands": "1,2,3", "nodata": "0", "out_format": "geotiff",
        "input_lists": ["l.txt"], "probs": "uint8", "confidence": True, "skip_existing": True, "png_max_mpx": 5.0,
        "vector": ".gpkg", "vector_classes": "1", "overlay": True, "asset": "visual", "bbox": "1,2,3,4",
        "bbox_crs": "EPSG:4326", "aoi": "aoi.gpkg", "regularize": True, "regularize_tolerance": 1.5,
        "uncertainty": True, "uncertain_windows": 7, "runtime": "onnx", "vector_workers": 3,
    }  # fmt: skip
