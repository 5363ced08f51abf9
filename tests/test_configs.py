"""The paper-grid configs (configs/{potsdam,vaihingen,dubai,loveda,uavid}/) parse with the ``ctseg fit``
LightningCLI parser."""

import contextlib
import io
import re
from pathlib import Path

import pytest
import yaml

from ctseg.cli.entry import main
from ctseg.configs import CONFIG_DIR
from ctseg.contrastive.schemes import SCHEMES
from ctseg.models import list_models

DATASETS = {
    "potsdam": "PotsdamDataModule",
    "vaihingen": "VaihingenDataModule",
    "dubai": "DubaiDataModule",
    "loveda": "LoveDADataModule",
    "uavid": "UAVidDataModule",
}
#: Data sets prepared as 1024² crops: validation batches of 8 (the pixels of 32 training crops of 512²).
LARGE_EVAL_CROPS = ("loveda", "uavid")
MODELS = {"ds": "ds-paper", "uf": "uf-paper", "pf": "pf-paper"}
SCHEME_FILES = {"baseline": "none", "cl": "ct-cl", "infonce": "ct-infonce", "ms": "ms", "mscs": "mscs"}
GRID = [(d, m, s) for d in DATASETS for m in MODELS for s in SCHEME_FILES]


def test_every_grid_config_exists():
    for dataset in DATASETS:
        names = {p.stem for p in (CONFIG_DIR / dataset).glob("*.yaml")}
        assert names == {f"{m}-{s}" for m in MODELS for s in SCHEME_FILES}


@pytest.mark.parametrize("dataset, model, scheme", GRID, ids=[f"{d}/{m}-{s}" for d, m, s in GRID])
def test_grid_config_parses_with_paper_recipe(dataset, model, scheme):
    path = CONFIG_DIR / dataset / f"{model}-{scheme}.yaml"
    cfg = yaml.safe_load(path.read_text())
    assert cfg["model"]["model"] == MODELS[model] and cfg["model"]["model"] in list_models()
    assert cfg["model"]["scheme"] == SCHEME_FILES[scheme] and cfg["model"]["scheme"] in SCHEMES
    assert cfg["model"]["lr"] == 8e-5 and cfg["model"]["weight_decay"] == 0.01 and cfg["model"]["img_size"] == 512
    assert cfg["trainer"]["max_epochs"] == 50 and cfg["trainer"]["gradient_clip_val"] == 1.0
    data = cfg["data"]
    assert data["class_path"].endswith(DATASETS[dataset])
    assert data["init_args"] == {
        "root": f"data/{dataset}",
        "batch_size": 32,
        **({"val_batch_size": 8} if dataset in LARGE_EVAL_CROPS else {}),
        "image_size": 512,
        "augment_on_device": True,  # the fast pipeline (issue 7): uint8 crops from the decoded cache
        "decoded_cache": True,
        **({"augment": "paper"} if dataset in ("potsdam", "vaihingen") else {}),  # the authors' train_aug
    }
    assert cfg["checkpoint"] == {"monitor": "val/mf1", "mode": "max", "save_top_k": 2}  # the authors' selection
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(path), "--print_config"])
    assert exit_info.value.code in (0, None)
    resolved = yaml.safe_load(out.getvalue())
    assert resolved["model"]["scheme"] == SCHEME_FILES[scheme]
    assert resolved["trainer"]["max_epochs"] == 50
    assert resolved["data"]["class_path"] == data["class_path"]
    assert resolved["data"]["init_args"]["val_batch_size"] == data["init_args"].get("val_batch_size")


CPU_STUDY = CONFIG_DIR / "dubai" / "cpu"


def test_cpu_study_configs_share_one_budget():
    """The Dubai CPU study: every config has the same trainer, data and optimiser settings; only the scheme
    and its options differ (issue 10: same budget and augmentations for all)."""
    configs = {p.stem: yaml.safe_load(p.read_text()) for p in sorted(CPU_STUDY.glob("*.yaml"))}
    assert {"baseline", "cl", "infonce", "mscs"} <= set(configs)
    schemes = {name: cfg["model"]["scheme"] for name, cfg in configs.items()}
    assert schemes["baseline"] == "none" and schemes["cl"] == "ct-cl" and schemes["infonce"] == "ct-infonce"
    assert schemes["mscs"] == "mscs"

    def budget(cfg):
        trainer = {k: v for k, v in cfg["trainer"].items() if k != "default_root_dir"}
        model = {k: v for k, v in cfg["model"].items() if k not in ("scheme", "scheme_options")}
        return trainer, model, cfg["data"], cfg["seed_everything"]

    reference = budget(configs["baseline"])
    for name, cfg in configs.items():
        assert budget(cfg) == reference, name
        assert cfg["trainer"]["default_root_dir"].endswith(f"/{name}")


@pytest.mark.parametrize("name", sorted(p.stem for p in CPU_STUDY.glob("*.yaml")))
def test_cpu_study_config_parses(name):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(CPU_STUDY / f"{name}.yaml"), "--print_config"])
    assert exit_info.value.code in (0, None)
    resolved = yaml.safe_load(out.getvalue())
    assert resolved["model"]["model"] == "pf-tiny" and resolved["trainer"]["max_steps"] == 500


# ------------------------------------------------------------------------------------------- packaged configs
def test_grid_configs_are_what_the_table_writes():
    """The 75 grid files are committed for reading; each must be exactly what ``ctseg.configs._generate`` writes."""
    from ctseg.configs._generate import grid_names, render

    assert len(grid_names()) == len(GRID) == 75
    stale = [name for name in grid_names() if (CONFIG_DIR / f"{name}.yaml").read_text(encoding="utf-8") != render(name)]
    assert stale == [], f"run: python -m ctseg.configs._generate ({stale[:3]} …)"


def test_every_packaged_config_spells_the_data_module_one_way():
    from ctseg.configs import list_configs

    paths = {name: yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())["data"]["class_path"]
             for name in list_configs()}  # fmt: skip
    assert len(paths) == 92
    assert {name: p for name, p in paths.items() if not re.fullmatch(r"ctseg\.data\.[A-Za-z]+DataModule", p)} == {}


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exit_info:  # LightningCLI's --print_config exits
            code = exit_info.code or 0
    return code, out.getvalue(), err.getvalue()


def test_ctseg_configs_lists_and_prints_the_packaged_configs():
    from ctseg.configs import list_configs

    code, out, _ = _run(["configs"])
    assert code == 0
    listed = [line.split()[0] for line in out.splitlines()[1:] if line.strip() and "/" in line.split()[0]]
    assert listed == list_configs() and "potsdam/ds-cl" in listed and "demo/ct-cl" in listed
    assert "potsdam/ds-cl  " in out and "ds-paper" in out.split("potsdam/ds-cl")[1].splitlines()[0]
    code, out, _ = _run(["configs", "potsdam/ds-cl"])
    assert code == 0 and out == (CONFIG_DIR / "potsdam" / "ds-cl.yaml").read_text(encoding="utf-8")
    code, out, err = _run(["configs", "potsdam/ds-cll"])
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert err.startswith("ctseg: error: configs: no packaged config 'potsdam/ds-cll'; did you mean potsdam/ds-cl")


def test_fit_config_takes_a_packaged_name_and_a_real_path_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = _run(["fit", "--config", "potsdam/ds-cl", "--print_config"])
    assert code == 0 and yaml.safe_load(out)["data"]["class_path"] == "ctseg.data.PotsdamDataModule"
    code, out, _ = _run(["fit", "--config=demo/ct-cl.yaml", "--print_config"])
    assert code == 0 and yaml.safe_load(out)["model"]["scheme"] == "ct-cl"
    mine = tmp_path / "potsdam" / "ds-cl"  # a user's own file of the same name is the one used
    mine.parent.mkdir()
    mine.write_text((CONFIG_DIR / "demo" / "baseline.yaml").read_text())
    code, out, _ = _run(["fit", "--config", "potsdam/ds-cl", "--print_config"])
    assert code == 0 and yaml.safe_load(out)["model"]["model"] == "pf-tiny"
    code, out, err = _run(["fit", "--config", "demo/nope"])
    assert code == 2 and err == (
        "ctseg: error: fit: --config demo/nope: no such file, and no packaged config of that name "
        "('ctseg configs' lists them)\n"
    )
    assert not (tmp_path / "runs").exists()


def test_grid_takes_packaged_names_and_patterns(tmp_path):
    from ctseg.configs import expand_configs

    assert [Path(p).relative_to(CONFIG_DIR).as_posix() for p in expand_configs(["potsdam/ds-*", "demo/ct-cl"])] == [
        f"potsdam/ds-{s}.yaml" for s in ("baseline", "cl", "infonce", "ms", "mscs")
    ] + ["demo/ct-cl.yaml"]
    code, out, _ = _run(["grid", "--configs", "vaihingen/*-cl", "--seeds", "1", "--out", str(tmp_path), "--dry-run"])
    assert code == 0 and out.startswith("grid: 3 runs (3 configs × 1 seeds)")
    assert not any(tmp_path.iterdir())


def test_the_wheel_ships_every_packaged_config_and_the_license(tmp_path):
    """A ``pip install`` of the wheel can run the paper grid: its configs are inside the package."""
    import subprocess
    import sys
    import zipfile

    from helpers.paths import REPO

    from ctseg.configs import list_configs

    res = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path),
         str(REPO)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    (wheel,) = tmp_path.glob("ctseg-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"ctseg/configs/{name}.yaml" for name in list_configs()} <= names
    assert "ctseg/configs/__init__.py" in names and any(n.endswith("licenses/LICENSE") for n in names)
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)
