"""The paper's grid configs (5 data sets × 3 models × 5 schemes = 75 files) written from one table.

Every grid config is the CT paper's recipe (docs/design.md §1.11) with three things varied: the data set (its data
module, prepared folder and notes), the model (DS, UF, PF) and the contrastive scheme. The files are committed so
that a user reads a whole recipe in one file; ``tests/test_configs.py`` checks that each committed file is what
:func:`render` writes. After changing the table, write them again with::

    python -m ctseg.configs._generate
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent


@dataclass(frozen=True)
class _DataSet:
    module: str  #: the data module's class name under ``ctseg.data``
    title: str  #: how the first comment line names the data set
    notes: tuple[str, ...] = ()  #: comment lines after "Prepare the data first"
    paper_augment: bool = False  #: the authors' ``train_aug`` (the ISPRS sets, as the paper ran them)
    val_batch_size: int | None = None  #: for 1024² validation crops


_DATA_SETS = {
    "potsdam": _DataSet("PotsdamDataModule", "ISPRS Potsdam", paper_augment=True),
    "vaihingen": _DataSet("VaihingenDataModule", "ISPRS Vaihingen", paper_augment=True),
    "dubai": _DataSet("DubaiDataModule", "Dubai aerial (Humans in the Loop)"),
    "loveda": _DataSet(
        "LoveDADataModule",
        "LoveDA (Urban + Rural; Train → fit, Val → validation)",
        (
            "#   (DOWNLOAD_DIR: Train/ and Val/ as Train.zip and Val.zip unpack; Test/ has no masks and is skipped)",
            "# Prepared crops are the whole 1024² images (Val is scored image by image, every pixel once);",
            "#   training takes random 512² crops of them (the data module's augmentation).",
        ),
        val_batch_size=8,
    ),
    "uavid": _DataSet(
        "UAVidDataModule",
        "UAVid (4K UAV frames; train sequences → fit, val sequences → validation)",
        (
            "#   (DOWNLOAD_DIR: uavid_train/ and uavid_val/ with seqN/Images and seqN/Labels; uavid_test/ is skipped)",
            "# Prepared crops: 1024² at native resolution, the last row / column aligned to the frame's border (every",
            "#   pixel kept, val pixels scored once); training takes random 512² crops of them.",
        ),
        val_batch_size=8,
    ),
}

_SWIN_WEIGHTS = (
    "# Encoder weights: the authors' Swin loaded a checkpoint that does not fit it, so in effect it started from",
    "#   scratch (docs/design.md §3.2) — as this config does; --model.pretrained PATH loads a local file that fits.",
)
_PF_WEIGHTS = (
    "# Encoder weights (local file, never downloaded): the authors started PF from timm's poolformer_s12 ImageNet",
    "#   weights, loaded where shapes match: add --model.pretrained PATH --model.allow_partial true.",
)
#: short name → (model preset, description, note on encoder weights)
_MODELS = {
    "ds": ("ds-paper", "DS: Swin + DCSwin", _SWIN_WEIGHTS),
    "uf": ("uf-paper", "UF: Swin + UNetFormer", _SWIN_WEIGHTS),
    "pf": ("pf-paper", "PF: PoolFormer + DCSwin", _PF_WEIGHTS),
}
#: short name → (scheme, description)
_SCHEMES = {
    "baseline": ("none", "no contrastive loss"),
    "cl": ("ct-cl", "CT with the paper's CL loss"),
    "infonce": ("ct-infonce", "CT with InfoNCE"),
    "ms": ("ms", "multi-scale contrast (Pissas et al.), weight 0.1"),
    "mscs": ("mscs", "multi- and cross-scale contrast (Pissas et al.), weight 0.1"),
}


def grid_names() -> list[str]:
    """``data set/model-scheme`` of every grid config, e.g. ``potsdam/ds-cl``."""
    return [f"{d}/{m}-{s}" for d in _DATA_SETS for m in _MODELS for s in _SCHEMES]


def render(name: str) -> str:
    """The text of the grid config ``name`` (``potsdam/ds-cl``)."""
    dataset, _, rest = name.partition("/")
    model_key, _, scheme_key = rest.partition("-")
    data = _DATA_SETS[dataset]
    model, model_text, weights = _MODELS[model_key]
    scheme, scheme_text = _SCHEMES[scheme_key]
    lines = [
        f"# The CT paper's recipe (docs/design.md §1.11) on {data.title}: {model_text}; "
        f"scheme {scheme} ({scheme_text}).",
        "# AdamW lr 8e-5, weight decay 0.01, constant lr, batch 32, 50 epochs, 512² crops, gradient clip 1.0;",
        "# bf16 mixed precision on a GPU that has it; checkpoints: the 2 best on val/mf1 (the authors' selection) and "
        "the last.",
        f"# Prepare the data first:  ctseg prepare {dataset} --src DOWNLOAD_DIR --dst data/{dataset}",
        *data.notes,
        f"# One run:                 ctseg fit --config {name}",
        f"# Three seeds + results:   ctseg grid --configs {name} --seeds 3 --out runs/grid/{dataset}",
        *weights,
        "seed_everything: 0",
        "trainer:",
        "  max_epochs: 50",
        "  gradient_clip_val: 1.0",
        f"  default_root_dir: runs/{name}",
        "checkpoint:",
        "  monitor: val/mf1",
        "  mode: max",
        "  save_top_k: 2",
        "model:",
        f"  model: {model}",
        "  img_size: 512",
        f"  scheme: {scheme}",
        "  lr: 8.0e-05",
        "  weight_decay: 0.01",
        "data:",
        f"  class_path: ctseg.data.{data.module}",
        "  init_args:",
        f"    root: data/{dataset}",
        "    batch_size: 32",
    ]
    if data.val_batch_size:
        lines.append(
            f"    val_batch_size: {data.val_batch_size}         # 1024² validation crops: 8 hold the pixels of 32 "
            "training crops"
        )
    lines.append("    image_size: 512")
    if data.paper_augment:
        lines.append(
            "    augment: paper            # the authors' train_aug (docs/design.md §1.12, ctseg.data.transforms); "
            "default: ctseg's own"
        )
    lines += [
        "    augment_on_device: true   # workers only read uint8 crops; augmentation runs batched on the GPU",
        "    decoded_cache: true       # decode the crops once into <root>/decoded (ctseg.data.decoded)",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    for name in grid_names():
        path = HERE / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(name), encoding="utf-8")
    print(f"wrote {len(grid_names())} grid configs under {HERE}")


if __name__ == "__main__":
    main()
