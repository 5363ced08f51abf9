"""The paper-grid configs (configs/{potsdam,vaihingen,dubai,loveda,uavid}/) parse with the ``ctseg fit``
LightningCLI parser."""

import contextlib
import io

import pytest
import yaml
from helpers.paths import REPO

from ctseg.cli.entry import main
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
        names = {p.stem for p in (REPO / "configs" / dataset).glob("*.yaml")}
        assert names == {f"{m}-{s}" for m in MODELS for s in SCHEME_FILES}


@pytest.mark.parametrize("dataset, model, scheme", GRID, ids=[f"{d}/{m}-{s}" for d, m, s in GRID])
def test_grid_config_parses_with_paper_recipe(dataset, model, scheme):
    path = REPO / "configs" / dataset / f"{model}-{scheme}.yaml"
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


CPU_STUDY = REPO / "configs" / "dubai" / "cpu"


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
