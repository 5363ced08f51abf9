"""Inference checkpoints: export a trained model without its training-only parts, and load models back.

An exported file (``ctseg export CKPT OUT``) is a ``torch.save`` dict::

    {"format": "ctseg-model", "version": 1,
     "config": {...},            # build_model(**config) rebuilds the architecture
     "state_dict": {...},        # the Segmentor's weights only: no projection heads, no optimiser state
     "dataset": "potsdam" | None, "class_names": [...], "ignore_index": 255, "eval_classes": [...] | None}

:func:`load_model` reads that format and Lightning checkpoints written by ``ctseg fit`` alike.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ctseg.errors import CtsegError
from ctseg.io import atomic_path
from ctseg.models import Segmentor, build_model

FORMAT = "ctseg-model"


@dataclass
class LoadedModel:
    """A model ready for inference, with what is needed to score and colour its output."""

    model: Segmentor
    dataset: str | None
    class_names: list[str]
    ignore_index: int
    eval_classes: list[int] | None


def _read(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CtsegError(f"checkpoint {path} does not exist; pass a file written by 'ctseg fit' or 'ctseg export'")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # truncated, not a torch file, ...
        raise CtsegError(
            f"checkpoint {path} cannot be read ({type(err).__name__}); is it a ctseg checkpoint?"
        ) from None
    if not isinstance(obj, dict):
        raise CtsegError(f"checkpoint {path} is not a ctseg checkpoint (no dict inside)")
    return obj


def _from_lightning(obj: dict[str, Any], path: Path) -> dict[str, Any]:
    hp = obj.get("hyper_parameters")
    state = obj.get("state_dict")
    if not isinstance(hp, dict) or "model" not in hp or not isinstance(state, dict):
        raise CtsegError(f"checkpoint {path} is not a ctseg training checkpoint (no model hyper-parameters)")
    net_state = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
    if not net_state:
        raise CtsegError(f"checkpoint {path} holds no model weights under 'net.'")
    config = {
        "name": hp["model"],
        "num_classes": hp["num_classes"],
        "encoder": hp.get("encoder"),
        "img_size": hp.get("img_size", 512),
        **(hp.get("model_options") or {}),
    }
    return {
        "format": FORMAT,
        "version": 1,
        "config": config,
        "state_dict": net_state,
        "dataset": hp.get("dataset"),
        "class_names": hp.get("class_names") or [f"class_{i}" for i in range(hp["num_classes"])],
        "ignore_index": hp.get("ignore_index", 255),
        "eval_classes": hp.get("eval_classes"),
    }


def _normalise(obj: dict[str, Any], path: Path) -> dict[str, Any]:
    if obj.get("format") == FORMAT:
        return obj
    if "hyper_parameters" in obj:
        return _from_lightning(obj, path)
    raise CtsegError(f"checkpoint {path} is not a ctseg checkpoint (neither 'ctseg fit' nor 'ctseg export' output)")


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a model for inference (eval mode) from an exported file or a ``ctseg fit`` checkpoint."""
    path = Path(path)
    data = _normalise(_read(path), path)
    config = dict(data["config"])
    model = build_model(config.pop("name"), config.pop("num_classes"), **config)
    missing, unexpected = model.load_state_dict(data["state_dict"], strict=False)
    if missing or unexpected:
        raise CtsegError(
            f"checkpoint {path} does not match its model ({len(missing)} missing, {len(unexpected)} unexpected "
            "tensors); was it written by another ctseg version?"
        )
    model.to(device).eval()
    return LoadedModel(
        model, data.get("dataset"), list(data["class_names"]), data["ignore_index"], data.get("eval_classes")
    )


def export_model(ckpt: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write the inference-only form of a checkpoint (no projection heads, no optimiser) to ``out`` atomically."""
    ckpt, out = Path(ckpt), Path(out)
    data = _normalise(_read(ckpt), ckpt)
    load_model(ckpt)  # proves the weights rebuild the model before anything is written
    if not out.parent.exists():
        raise CtsegError(f"output folder {out.parent} does not exist; create it first")
    if not out.parent.is_dir():
        raise CtsegError(f"output folder {out.parent} exists and is not a folder; choose another path")
    try:
        with atomic_path(out) as tmp:
            torch.save(data, tmp)
    except OSError as err:  # read-only folder, OUT is a folder, disk full: atomic_path left nothing behind
        raise CtsegError(f"output {out} cannot be written ({err.strerror or err}); choose a writable path") from None
    return out
