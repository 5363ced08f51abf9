"""A model file's metadata, checked against an allow-list before anything is built from it.

A ctseg model file (safetensors or ONNX export, ``ctseg fit`` checkpoint) carries, beside its tensors, the
metadata that rebuilds the architecture and reads its output. That metadata comes from whoever made the file, so
it is read as **data**: every key is on an allow-list with a checked type and range, and nothing in it is
followed — no weights path (``pretrained``), no class path, no free keyword arguments for timm
(``encoder_kwargs.checkpoint_path``, ``pretrained_cfg_overlay`` …). The weights come from the file itself.

======================  =================================================================================
key                     accepted
======================  =================================================================================
``config.name``         a registered preset (:func:`ctseg.models.list_models`)
``config.num_classes``  an integer ``1 ≤ K ≤`` :data:`MAX_CLASSES` (class maps are 8-bit, 255 is ignore)
``config.encoder``      ``None`` or a name of letters, digits, ``_ . -`` (at most 128 characters)
``config.img_size``     a multiple of 32 in ``[32, 8192]``
``config.in_chans``     an integer ``1 ≤ C ≤`` :data:`MAX_BANDS`
``config.stage_norm``   ``auto``, ``layernorm``, ``groupnorm`` or ``none``
decoder options         the preset decoder's own options (top level or ``decoder_kwargs``): finite numbers,
                        booleans, ``None`` or at most 16 integers, each ``|v| ≤ 2^16``
``encoder_kwargs``      only :data:`ENCODER_KEYS` (rates, sizes: numbers or short integer lists)
``class_names``         ``K`` strings of at most 200 characters
``ignore_index``        an integer in ``[0, 255]``
``eval_classes``        ``None`` or distinct integers in ``[0, K)``
``dataset``             ``None`` or a short name
``data_info``           a :class:`~ctseg.data.definitions.DatasetInfo` whose classes and bands agree with the
                        config, with ``len(mean) = len(std) = C``, every ``mean`` finite and every ``std``
                        finite and ``> 0`` (a NaN mean or a zero std would map every pixel to NaN)
======================  =================================================================================

The weights are checked against the architecture before it is allocated: :func:`check_weights` builds the
model on PyTorch's ``meta`` device (shapes only, no memory) and compares every tensor's name and shape with
the file's, so an absurd architecture (billions of parameters) or a tampered tensor is one error line, never an
allocation or a ``size mismatch`` traceback. Every refusal is one :class:`~ctseg.errors.CtsegError` line that
names the file and the key.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ctseg.errors import CtsegError

__all__ = [
    "ENCODER_KEYS",
    "MAX_BANDS",
    "MAX_CLASSES",
    "ModelSpec",
    "check_data_info",
    "check_model_metadata",
    "check_task_hparams",
    "check_weights",
]

#: Largest class count a model file may declare (class maps are uint8; 255 is the ignore index).
MAX_CLASSES = 255
#: Largest band count a model file may declare.
MAX_BANDS = 1024
#: The timm constructor arguments a model file may set through ``encoder_kwargs``: architecture numbers only.
ENCODER_KEYS = frozenset(
    {
        "in_chans",
        "drop_rate",
        "drop_path_rate",
        "attn_drop_rate",
        "proj_drop_rate",
        "pos_drop_rate",
        "window_size",
        "mlp_ratio",
        "embed_dim",
        "embed_dims",
        "depths",
        "layers",
        "num_heads",
        "layer_scale_init_value",
        "res_scale_init_value",
    }
)
_STAGE_NORMS = ("auto", "layernorm", "groupnorm", "none")
_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,128}")
_NUMBER_LIMIT = 1 << 16


@dataclass(frozen=True)
class ModelSpec:
    """Checked metadata: ``config`` rebuilds the architecture (``build_model(**config)``, never a path in it)."""

    config: dict[str, Any]
    class_names: list[str]
    ignore_index: int
    eval_classes: list[int] | None
    dataset: str | None
    data_info: Any  # DatasetInfo | None

    def metadata(self) -> dict[str, Any]:
        """The checked values under the export's metadata keys (``config``, ``class_names`` …)."""
        from ctseg.data.definitions import info_to_json

        info = None if self.data_info is None else info_to_json(self.data_info)
        return {
            "config": dict(self.config),
            "dataset": self.dataset,
            "class_names": list(self.class_names),
            "ignore_index": self.ignore_index,
            "eval_classes": self.eval_classes,
            "data_info": info,
        }


def _fail(path: str | os.PathLike, text: str) -> CtsegError:
    return CtsegError(f"model {path}: {text}; is it a ctseg model file from a trusted source?")


def _short(value: Any) -> str:
    """``repr`` of a value for an error line, never longer than 60 characters (and never ``str`` of a huge one)."""
    if isinstance(value, (dict, list, tuple)):
        return f"a {type(value).__name__} of {len(value)} items"
    text = repr(value) if isinstance(value, (str, int, float, bool, type(None))) else type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."


def _int(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _option_value(value: Any) -> bool:
    """A decoder / encoder option value: a finite number, a boolean, ``None`` or at most 16 bounded integers."""
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, int):
        return abs(value) <= _NUMBER_LIMIT
    if isinstance(value, float):
        return math.isfinite(value) and abs(value) <= _NUMBER_LIMIT
    if isinstance(value, (list, tuple)):
        return len(value) <= 16 and all(_int(v, -_NUMBER_LIMIT, _NUMBER_LIMIT) for v in value)
    return False


def _check_options(options: Any, allowed: set[str] | frozenset[str], where: str, path) -> dict[str, Any]:
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise _fail(path, f"{where} is {_short(options)}, not a mapping")
    for key, value in options.items():
        if key not in allowed:
            raise _fail(
                path,
                f"{where} sets {_short(key)}, which a model file may not set (accepted: {', '.join(sorted(allowed))})",
            )
        if not _option_value(value):
            raise _fail(path, f"{where}.{key} is {_short(value)}; expected a finite number or a few integers")
    return dict(options)


def check_config(config: Any, path: str | os.PathLike) -> dict[str, Any]:
    """The architecture keys of a model file's ``config``, checked (module table); a new dict of them only."""
    from ctseg.models.registry import decoder_options, get_preset, list_models

    if not isinstance(config, dict):
        raise _fail(path, f"its model config is {_short(config)}, not a mapping")
    name = config.get("name")
    preset = get_preset(name) if isinstance(name, str) else None
    if preset is None:
        raise _fail(path, f"config.name {_short(name)} is not a ctseg model (one of {', '.join(list_models())})")
    k = config.get("num_classes")
    if not _int(k, 1, MAX_CLASSES):
        raise _fail(path, f"config.num_classes {_short(k)} is not a class count in 1..{MAX_CLASSES}")
    out: dict[str, Any] = {"name": name, "num_classes": k}
    encoder = config.get("encoder")
    if encoder is not None and not (isinstance(encoder, str) and _NAME.fullmatch(encoder)):
        raise _fail(path, f"config.encoder {_short(encoder)} is not an encoder name")
    out["encoder"] = encoder
    img = config.get("img_size", 512)
    if not _int(img, 32, 8192) or img % 32:
        raise _fail(path, f"config.img_size {_short(img)} is not a multiple of 32 in 32..8192")
    out["img_size"] = img
    if "in_chans" in config:
        if not _int(config["in_chans"], 1, MAX_BANDS):
            raise _fail(path, f"config.in_chans {_short(config['in_chans'])} is not a band count in 1..{MAX_BANDS}")
        out["in_chans"] = config["in_chans"]
    if config.get("pretrained") not in (None, False):
        raise _fail(
            path,
            "config.pretrained names a weights file; a model file carries its own weights and may "
            "not name another file",
        )
    if "stage_norm" in config:
        if config["stage_norm"] not in _STAGE_NORMS:
            choices = ", ".join(_STAGE_NORMS)
            raise _fail(path, f"config.stage_norm {_short(config['stage_norm'])} is not one of {choices}")
        out["stage_norm"] = config["stage_norm"]
    if "drop_path_rate" in config:
        rate = config["drop_path_rate"]
        if not (isinstance(rate, (int, float)) and not isinstance(rate, bool) and 0 <= rate < 1):
            raise _fail(path, f"config.drop_path_rate {_short(rate)} is not a rate in [0, 1)")
        out["drop_path_rate"] = rate
    decoder = decoder_options()[preset.decoder]
    if "decoder_kwargs" in config and config["decoder_kwargs"] is not None:
        out["decoder_kwargs"] = _check_options(config["decoder_kwargs"], decoder, "config.decoder_kwargs", path)
    if "encoder_kwargs" in config and config["encoder_kwargs"] is not None:
        out["encoder_kwargs"] = _check_options(config["encoder_kwargs"], ENCODER_KEYS, "config.encoder_kwargs", path)
    known = {
        "name",
        "num_classes",
        "encoder",
        "img_size",
        "in_chans",
        "pretrained",
        "stage_norm",
        "drop_path_rate",
        "decoder_kwargs",
        "encoder_kwargs",
        "allow_partial",
    }
    extra = {key: value for key, value in config.items() if key not in known}
    out.update(_check_options(extra, decoder, "config", path))
    return out


def check_data_info(stored: Any, path: str | os.PathLike, num_classes: int, bands: int):
    """The stored ``data_info`` as a :class:`~ctseg.data.definitions.DatasetInfo` (``None`` when absent), refused
    when unreadable, when it disagrees with the model, or when its statistics are not finite with ``std > 0``."""
    from ctseg.data.definitions import info_from_json

    if stored is None:
        return None
    if not isinstance(stored, dict):
        raise _fail(path, f"its data set description (data_info) is {_short(stored)}, not a mapping")
    try:
        info = info_from_json(stored)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as err:
        raise _fail(
            path, f"its data set description (data_info) is unreadable ({type(err).__name__}: {_short(str(err))})"
        ) from None
    if info.num_classes != num_classes or not all(isinstance(c, str) and len(c) <= 200 for c in info.classes):
        raise _fail(path, f"data_info has {info.num_classes} class names for a {num_classes}-class model")
    if len(info.colors) != num_classes or any(not all(0 <= v <= 255 for v in c) or len(c) != 3 for c in info.colors):
        raise _fail(path, f"data_info.colors is not {num_classes} RGB colours in 0..255")
    if info.bands != bands:
        raise _fail(path, f"data_info has {info.bands} bands for a model of {bands} input bands")
    if len(info.mean) != bands or len(info.std) != bands:
        raise _fail(path, f"data_info has {len(info.mean)} means and {len(info.std)} stds for {bands} bands")
    if not all(math.isfinite(v) for v in info.mean):
        raise _fail(path, "data_info.mean holds a value that is not finite (NaN or inf); every pixel would be NaN")
    if not all(math.isfinite(v) and v > 0 for v in info.std):
        raise _fail(path, "data_info.std holds a value that is not finite and > 0; every pixel would be NaN or inf")
    if info.dtype not in ("uint8", "uint16", "int16", "uint32", "int32", "float32", "float64"):
        raise _fail(path, f"data_info.dtype {_short(info.dtype)} is not a raster sample type")
    if not 0 <= info.ignore_index <= 255:
        raise _fail(path, f"data_info.ignore_index {info.ignore_index} is not in 0..255")
    if info.band_indices is not None and (
        len(info.band_indices) != bands or not all(1 <= b <= 65535 for b in info.band_indices)
    ):
        raise _fail(path, f"data_info.band_indices is not {bands} band numbers from 1")
    if info.eval_classes is not None and not all(0 <= c < num_classes for c in info.eval_classes):
        raise _fail(path, f"data_info.eval_classes holds a class outside 0..{num_classes - 1}")
    return info


def check_model_metadata(data: Any, path: str | os.PathLike) -> ModelSpec:
    """Check a model file's metadata (the export layout: ``config``, ``class_names``, ``ignore_index``,
    ``eval_classes``, ``dataset``, ``data_info``) against the allow-list of the module docstring.

    Returns a :class:`ModelSpec` holding only checked values; raises one :class:`~ctseg.errors.CtsegError` line.
    """
    if not isinstance(data, dict):
        raise _fail(path, f"its metadata is {_short(data)}, not a mapping")
    config = check_config(data.get("config"), path)
    k = config["num_classes"]
    bands = config.get("in_chans", 3)
    names = data.get("class_names")
    if not isinstance(names, list) or len(names) != k or not all(isinstance(n, str) and len(n) <= 200 for n in names):
        raise _fail(path, f"class_names is {_short(names)}, not {k} class names (strings of at most 200 characters)")
    ignore = data.get("ignore_index")
    if not _int(ignore, 0, 255):
        raise _fail(path, f"ignore_index {_short(ignore)} is not an integer in 0..255")
    evals = data.get("eval_classes")
    if evals is not None and not (
        isinstance(evals, list) and all(_int(c, 0, k - 1) for c in evals) and len(set(evals)) == len(evals)
    ):
        raise _fail(path, f"eval_classes {_short(evals)} is not a list of distinct classes in 0..{k - 1}")
    dataset = data.get("dataset")
    if dataset is not None and not (isinstance(dataset, str) and _NAME.fullmatch(dataset)):
        raise _fail(path, f"dataset {_short(dataset)} is not a data set name")
    info = check_data_info(data.get("data_info"), path, k, bands)
    return ModelSpec(config, list(names), ignore, None if evals is None else list(evals), dataset, info)


def check_weights(spec: ModelSpec, state: Any, path: str | os.PathLike) -> None:
    """Refuse weights whose names or shapes differ from the architecture of ``spec`` — found on PyTorch's
    ``meta`` device, so nothing is allocated for an architecture the file does not carry."""
    import torch

    from ctseg.models import build_model

    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise _fail(path, "its weights are not a mapping of names to tensors")
    config = dict(spec.config)
    try:
        with torch.device("meta"):
            skeleton = build_model(config.pop("name"), config.pop("num_classes"), **config)
    except CtsegError as err:
        raise _fail(path, f"its config does not build a model ({err})") from None
    want = {key: tuple(value.shape) for key, value in skeleton.state_dict().items()}
    have = {key: tuple(value.shape) for key, value in state.items()}
    missing = [key for key in want if key not in have]
    unexpected = [key for key in have if key not in want]
    reshaped = [key for key in want if key in have and want[key] != have[key]]
    if missing or unexpected or reshaped:
        first = (missing or unexpected or reshaped)[0]
        raise _fail(
            path,
            f"its weights do not match its model ({len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(reshaped)} of another shape, e.g. {_short(first)})",
        )


#: Hyper-parameters of a training checkpoint that are never taken from the file: paths the run reads. A resumed
#: run's weights come from the checkpoint itself, so the user's own ``--model.pretrained`` (or none) stands.
NOT_FROM_CHECKPOINT = frozenset({"pretrained"})


def check_task_hparams(hp: Any, path: str | os.PathLike, arguments: Iterable[str]) -> dict[str, Any]:
    """The ``hyper_parameters`` of a ``ctseg fit`` checkpoint as Lightning may merge them into the run's model
    config (``--ckpt_path``): only the task's own ``arguments`` (the caller passes
    :class:`~ctseg.training.SegmentationTask`'s; others dropped), :data:`NOT_FROM_CHECKPOINT` dropped, the
    architecture checked as a model file's ``config`` is (:func:`check_config`) and ``class_weights`` numbers or
    ``"inverse_frequency"``; one error line otherwise."""
    if not isinstance(hp, dict):
        raise _fail(path, "its hyper_parameters are not a mapping")
    accepted = set(arguments) - NOT_FROM_CHECKPOINT
    out = {key: value for key, value in hp.items() if key in accepted or key == "_class_path"}
    options = hp.get("model_options") or {}
    if not isinstance(options, dict):
        raise _fail(path, f"hyper_parameters.model_options is {_short(options)}, not a mapping")
    config = {"name": hp.get("model", "pf-tiny"), "num_classes": hp.get("num_classes", 6), **options}
    config.update({key: hp[key] for key in ("encoder", "img_size") if key in hp})
    if hp.get("in_chans", 3) != 3:
        config["in_chans"] = hp.get("in_chans")
    check_config(config, path)
    weights = hp.get("class_weights")
    if isinstance(weights, str) and weights != "inverse_frequency":
        raise _fail(path, f"hyper_parameters.class_weights {_short(weights)} is not numbers or 'inverse_frequency'")
    if hp.get("data_info") is not None:
        check_data_info(hp["data_info"], path, config["num_classes"], config.get("in_chans", 3))
    return out
