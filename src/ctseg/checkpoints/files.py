"""Inference checkpoints: export a trained model without its training-only parts, and load models back.

Every file is read without running any of its code (:mod:`ctseg.safety.pickles`). Three kinds are read:

* ``ctseg export`` output (format version 2) — a **safetensors** file, which holds tensors and a string
  header only and so cannot carry code. The weights are the Segmentor's (no projection heads, no optimiser
  state); the header's metadata holds one entry, ``"ctseg"``, a JSON string ``{"format": "ctseg-model",
  "version": 2, "config": {...}, "dataset": "potsdam" | null, "class_names": [...], "ignore_index": 255,
  "eval_classes": [...] | null, "data_info": {...} | null}``; ``build_model(**config)`` rebuilds the
  architecture (``config["in_chans"]``: input bands, written only when not 3), and ``data_info`` is the data
  set's :class:`~ctseg.data.definitions.DatasetInfo` as :func:`~ctseg.data.definitions.info_to_json` writes it
  (classes, palette, band layout, dtype, normalisation, nodata; absent from files of earlier ctseg, which
  load as 3-band uint8 models). Equal inputs give byte-identical files;
* the version-1 exports of earlier ctseg (a ``torch.save`` dict of the same fields plus ``state_dict``),
  loaded with the static pickle scan and ``weights_only=True``;
* Lightning checkpoints written by ``ctseg fit``, loaded the same way; their ``hyper_parameters`` may
  name only ctseg's own task class (``_class_path``) and Lightning's CLI instantiator (``_instantiator``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ctseg.data.definitions import DatasetInfo
from ctseg.errors import CtsegError
from ctseg.io import atomic_path, write_error
from ctseg.safety.documents import parse_json
from ctseg.safety.model_spec import MAX_CLASSES, check_model_metadata, check_weights
from ctseg.safety.pickles import UnsafeFileError, is_safetensors, load_torch_file, short_reason, unsafe_message

if TYPE_CHECKING:  # ctseg.models (timm, torchvision) is imported only where a PyTorch model is built
    from ctseg.models import Segmentor

#: The ``format`` entry of an export's metadata.
FORMAT = "ctseg-model"
#: The export format's version (the ``version`` entry of its metadata).
VERSION = 2
#: The file suffix of an export.
SUFFIX = ".safetensors"
#: The only import paths a ctseg training checkpoint may name (Lightning imports them when loading).
ALLOWED_HPARAM_NAMES = {
    "_class_path": {"ctseg.training.SegmentationTask"},
    "_instantiator": {"lightning.pytorch.cli.instantiate_module"},
}


@dataclass
class LoadedModel:
    """A model ready for inference, with what is needed to score and colour its output.

    ``info``: the training data set's description stored in the file (``data_info``); ``None`` for files of
    earlier ctseg (then ``dataset`` names a registered data set, if any). ``in_chans``: the model's input bands.
    """

    model: Segmentor
    dataset: str | None
    class_names: list[str]
    ignore_index: int
    eval_classes: list[int] | None
    info: DatasetInfo | None = None

    @property
    def in_chans(self) -> int:
        return int(getattr(self.model.encoder, "in_chans", 3))


def check_hparams(obj: dict[str, Any], path: str | os.PathLike) -> None:
    """Refuse a training checkpoint whose model hyper-parameters name code to import other than ctseg's own.

    LightningCLI builds ``hyper_parameters._class_path`` when given ``--ckpt_path`` and Lightning's
    ``load_from_checkpoint`` calls ``_instantiator``: plain strings in a pickle-free file that would still run
    code. (``datamodule_hyper_parameters`` is never read by ctseg; it names the user's data module.)
    """
    hp = obj.get("hyper_parameters")
    if not isinstance(hp, dict):
        return
    for key, allowed in ALLOWED_HPARAM_NAMES.items():
        if key in hp and hp[key] not in allowed:
            raise UnsafeFileError(
                f"checkpoint {path} names code to import (hyper_parameters.{key} = {str(hp[key])[:80]!r}); "
                "refusing to load it (loading it could run code). Re-export it with ctseg export from a trusted copy."
            )


def read_checkpoint(path: str | os.PathLike, *, mmap: bool = False) -> dict[str, Any]:
    """The contents of a ctseg file (any of the three kinds) as a dict, read without running code.

    A safetensors export comes back in the version-1 layout (``config``, ``state_dict``, ...), so callers
    see one shape. ``mmap``: memory-map torch files' tensors (cheap checks of large checkpoints).
    """
    path = Path(path)
    if not path.is_file():
        raise CtsegError(f"checkpoint {path} does not exist; pass a file written by 'ctseg fit' or 'ctseg export'")
    if is_safetensors(path):
        return _read_safetensors(path)
    obj = load_torch_file(path, "checkpoint", mmap=mmap)
    if not isinstance(obj, dict):
        raise CtsegError(f"checkpoint {path} is not a ctseg checkpoint (no dict inside)")
    check_hparams(obj, path)
    return obj


def _read_safetensors(path: Path) -> dict[str, Any]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = fh.metadata() or {}
            state = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise CtsegError(f"checkpoint {path} cannot be read ({short_reason(err)}); is it a ctseg export?") from None
    if "ctseg" not in meta:
        raise CtsegError(f"checkpoint {path} is a safetensors file but not a ctseg export (no ctseg metadata)")
    info = parse_json(meta["ctseg"], f"checkpoint {path}: its ctseg metadata")
    if not isinstance(info, dict) or info.get("format") != FORMAT or not isinstance(info.get("config"), dict):
        raise CtsegError(f"checkpoint {path}: its ctseg metadata is not a ctseg model (no format / model config)")
    return {**info, "state_dict": state}


def _default_names(k: Any) -> list[str] | None:
    """``class_0 …`` for checkpoints that name no classes (``None`` for a class count the spec check refuses)."""
    if isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= MAX_CLASSES:
        return [f"class_{i}" for i in range(k)]
    return None


def _from_lightning(obj: dict[str, Any], path: Path) -> dict[str, Any]:
    hp = obj.get("hyper_parameters")
    state = obj.get("state_dict")
    if not isinstance(hp, dict) or "model" not in hp or not isinstance(state, dict):
        raise CtsegError(f"checkpoint {path} is not a ctseg training checkpoint (no model hyper-parameters)")
    net_state = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
    if not net_state:
        raise CtsegError(f"checkpoint {path} holds no model weights under 'net.'")
    options = hp.get("model_options") or {}
    if not isinstance(options, dict):
        raise CtsegError(f"model {path}: hyper_parameters.model_options is not a mapping; is it a ctseg checkpoint?")
    k = hp.get("num_classes")
    config = {"name": hp["model"], "num_classes": k, "encoder": hp.get("encoder"), "img_size": hp.get("img_size", 512)}
    config.update(options)
    in_chans = hp.get("in_chans", 3)
    if in_chans is not None and in_chans != 3:  # as build_model records it: only when not 3
        config["in_chans"] = in_chans
    return {
        "format": FORMAT,
        "version": 1,
        "config": config,
        "state_dict": net_state,
        "dataset": hp.get("dataset"),
        "class_names": hp.get("class_names") or _default_names(k),
        "ignore_index": hp.get("ignore_index", 255),
        "eval_classes": hp.get("eval_classes"),
        "data_info": hp.get("data_info"),
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
    return model_from(read_for_export(path), path, device)


def model_from(data: dict[str, Any], path: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedModel:
    """The model of :func:`read_for_export`'s contents of ``path`` (so an export reads the file once).

    The metadata is checked against the allow-list of :mod:`ctseg.safety.model_spec` and the weights against the
    architecture (on the ``meta`` device) before the model is allocated; nothing the file names is followed.
    """
    spec = check_model_metadata(data, path)
    check_weights(spec, data.get("state_dict"), path)
    config = dict(spec.config)
    from ctseg.models import build_model

    model = build_model(config.pop("name"), config.pop("num_classes"), **config)
    model.load_state_dict(data["state_dict"], strict=True)
    model.to(device).eval()
    return LoadedModel(model, spec.dataset, spec.class_names, spec.ignore_index, spec.eval_classes, spec.data_info)


EXPORT_KEYS = ("config", "dataset", "class_names", "ignore_index", "eval_classes", "data_info")


def export_metadata(data: dict[str, Any]) -> dict[str, Any]:
    """The ``"ctseg"`` metadata of an export (module docstring) from :func:`read_checkpoint`-like contents
    (also stored by the ONNX export, :mod:`ctseg.checkpoints.onnx_export`)."""
    return {"format": FORMAT, "version": VERSION, **{k: data.get(k) for k in EXPORT_KEYS}}


def read_for_export(ckpt: str | os.PathLike) -> dict[str, Any]:
    """The contents of a checkpoint in the export layout (``config``, ``state_dict``, ``class_names`` …)."""
    ckpt = Path(ckpt)
    data = _normalise(read_checkpoint(ckpt), ckpt)
    spec = check_model_metadata(data, ckpt)
    return {**data, **spec.metadata()}


def export_model(ckpt: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write the inference-only form of a checkpoint to ``out`` (a ``.safetensors`` file), atomically.

    The file holds the Segmentor's tensors (no projection heads, no optimiser) and the JSON metadata of the
    module docstring; it cannot carry code, so it is the form to share. ``overwrite``: replace an existing
    ``out`` (refused otherwise).
    """
    ckpt, out = Path(ckpt), Path(out)
    if out.suffix != SUFFIX:
        raise CtsegError(
            f"export output {out}: name it *{SUFFIX} (ctseg export writes safetensors weights with JSON metadata, "
            "a format that cannot carry code)"
        )
    if out.is_dir():
        raise CtsegError(f"export output {out} is a folder; name a file")
    if out.exists() and not overwrite:
        raise CtsegError(f"export output {out} already exists; pass --overwrite to replace it")
    data = read_for_export(ckpt)
    model_from(data, ckpt)  # proves the weights rebuild the model before anything is written
    if not out.parent.exists():
        raise CtsegError(f"output folder {out.parent} does not exist; create it first")
    if not out.parent.is_dir():
        raise CtsegError(f"output folder {out.parent} exists and is not a folder; choose another path")
    from safetensors.torch import save_file

    # One metadata entry: safetensors writes a map's entries in no fixed order, and equal inputs should give
    # byte-identical files (so a SHA-256 identifies the model).
    meta = {"ctseg": json.dumps(export_metadata(data), sort_keys=True)}
    seen: set[int] = set()
    tensors: dict[str, torch.Tensor] = {}
    for key, value in data["state_dict"].items():
        value = value.detach().cpu().contiguous()
        ident = value.untyped_storage().data_ptr()
        tensors[key] = value.clone() if ident in seen else value  # safetensors refuses shared memory
        seen.add(ident)
    from safetensors import SafetensorError

    try:
        with atomic_path(out) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
    except (OSError, SafetensorError) as err:  # read-only folder, disk full: atomic_path left nothing behind
        raise CtsegError(write_error(out, err)) from None
    return out


def load_onnx_model(path: str | os.PathLike, device: str | torch.device = "cpu", *, threads: int | None = None):
    """An ONNX export as a :class:`LoadedModel` (its ``model`` a :class:`~ctseg.inference.onnx.OnnxSegmentor`, run
    by onnxruntime), as :func:`load_model` is for PyTorch files."""
    from ctseg.inference.onnx import OnnxSegmentor

    model = OnnxSegmentor(path, device, threads=threads)
    meta = model.meta
    return LoadedModel(
        model,  # type: ignore[arg-type]
        meta["dataset"],
        list(meta["class_names"]),
        meta["ignore_index"],
        meta["eval_classes"],
        model.info,
    )


__all__ = [
    "FORMAT",
    "LoadedModel",
    "export_metadata",
    "export_model",
    "load_model",
    "load_onnx_model",
    "model_from",
    "read_checkpoint",
    "read_for_export",
    "unsafe_message",
]
