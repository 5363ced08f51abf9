"""Checks ``ctseg fit | validate | test`` runs before anything is built or trained, each a one-line
:class:`~ctseg.errors.CtsegError`: hardware requests the machine cannot meet, option values, scheme options, a
``--ckpt_path`` (read once, without running code; ``last`` resolved) against the data module's classes and bands,
and model options a checkpoint replaces (warned about)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from ctseg.errors import CtsegError
from ctseg.io import check_writable_root
from ctseg.safety.pickles import load_torch_file


def check_class_count(hparams: dict, data) -> None:
    """One line when the ``--ckpt_path`` model was trained for another number of classes, or on images of another
    band count or dtype, than the data module has (checked before anything is seeded, logged or written; ctseg's
    data modules only; checkpoints written before ctseg knew bands took 3 bands)."""
    ckpt_k = hparams.get("num_classes")
    info = _data_info(data)
    if info is None:
        return
    name = str(getattr(data, "class_path", "?")).rpartition(".")[2]
    if ckpt_k is not None and int(ckpt_k) != info.num_classes:
        raise CtsegError(
            f"--ckpt_path {hparams.get('_path')} was trained for {ckpt_k} classes ({hparams.get('dataset') or '?'}), "
            f"but the data module ({name}, {info.name}) has {info.num_classes}; use a checkpoint of this data set, "
            "or the data it was trained on"
        )
    ckpt_bands, ckpt_dtype = int(hparams.get("in_chans") or 3), None
    layout = f"{ckpt_bands} band{'s' if ckpt_bands != 1 else ''}"
    stored = hparams.get("data_info")
    if isinstance(stored, dict):
        from ctseg.data.definitions import info_from_json

        try:
            stored_info = info_from_json(stored)
            layout, ckpt_dtype = stored_info.band_layout(), stored_info.dtype
        except (KeyError, TypeError, ValueError):
            pass
    if ckpt_bands == int(getattr(info, "bands", 3)) and ckpt_dtype in (None, getattr(info, "dtype", "uint8")):
        return
    raise CtsegError(
        f"--ckpt_path {hparams.get('_path')} was trained on {layout} images ({hparams.get('dataset') or '?'}), but "
        f"the data module ({name}, {info.name}) has {info.band_layout()}; use a checkpoint of this data set, or the "
        "data it was trained on"
    )


def _data_info(data):
    """The :class:`~ctseg.data.DatasetInfo` of a ctseg data module from its parsed ``data`` group, or None."""
    class_path = str(getattr(data, "class_path", "") or "")
    if not class_path.startswith("ctseg."):
        return None
    import importlib

    module, _, name = class_path.rpartition(".")
    try:
        init = data.get("init_args") or {}
        kwargs = init.as_dict() if hasattr(init, "as_dict") else dict(init)
        dm = getattr(importlib.import_module(module), name)(**kwargs)
        return dm.info
    except Exception:  # the data module's own error is reported where it is built
        return None


def newest_checkpoint(root: str | os.PathLike) -> Path | None:
    """What ``--ckpt_path last`` resumes from: the newest ``*.ckpt`` in ``<root>/checkpoints`` (``last.ckpt`` on a
    tie). A step or best checkpoint is written just before ``last.ckpt`` is refreshed; a kill in between left
    ``last.ckpt`` one save behind, so Lightning's own choice (``last*.ckpt``) could lose those steps."""
    folder = Path(root) / "checkpoints"
    found = [p for p in folder.glob("*.ckpt") if p.is_file()] if folder.is_dir() else []
    if not found:
        return None
    return max(found, key=lambda p: (p.stat().st_mtime_ns, p.name.startswith("last")))


def _given_options(argv: list[str], prefix: str) -> dict[str, str]:
    """``--model.lr 0.5`` / ``--model.lr=0.5`` on the command line → ``{"lr": "0.5"}``."""
    out = {}
    for i, arg in enumerate(argv):
        if not arg.startswith(prefix):
            continue
        key, eq, value = arg[len(prefix) :].partition("=")
        if not eq:
            value = argv[i + 1] if i + 1 < len(argv) else ""
        out[key] = value
    return out


def warn_overridden_by_checkpoint(model, hparams: dict, argv: list[str]) -> None:
    """One warning line per ``--model.X`` given on the command line that the checkpoint's hyper-parameters
    replace (LightningCLI applies a ``--ckpt_path`` file's model settings over the command line)."""
    if model is None or not hparams:
        return
    for key, given in _given_options(argv, "--model.").items():
        if key.startswith("_") or key not in hparams or _same_value(given, hparams[key]):
            continue
        print(
            f"ctseg: warning: --model.{key} {given} is replaced by the checkpoint's {hparams[key]!r} "
            f"({hparams.get('_path')}); its weights need the checkpoint's model settings",
            file=sys.stderr,
            flush=True,
        )


def _same_value(given: str, stored) -> bool:
    if isinstance(stored, bool) or given.lower() in ("true", "false"):
        return given.lower() == str(stored).lower()
    try:
        return float(given) == float(stored)
    except (TypeError, ValueError):
        return given == str(stored)


def check_values(config) -> None:
    """One-line errors for values the parser accepts but training cannot use, before anything is written."""
    model, trainer, data = config.get("model"), config.get("trainer"), config.get("data")
    if model is not None:
        for key, low, example in (("lr", 0.0, "8e-5"), ("weight_decay", None, "0.01")):
            value = model.get(key)
            if value is None:
                continue
            if (low is not None and not value > low) or (low is None and value < 0):
                need = "positive" if low is not None else "zero or positive"
                raise CtsegError(f"--model.{key} {value}: must be {need} (e.g. {example})")
        size = model.get("img_size")
        if size is not None and (int(size) < 32 or int(size) % 32):
            example = max(32, int(size) // 32 * 32)
            raise CtsegError(f"--model.img_size {size}: must be a multiple of 32 (e.g. {example})")
    if trainer is not None:
        _check_trainer_numbers(trainer)
        check_writable_root(trainer.get("default_root_dir") or "runs", "--trainer.default_root_dir")
    devices = trainer.get("devices") if trainer is not None else None
    if isinstance(devices, float) or (isinstance(devices, str) and not _devices_text_ok(devices)):
        raise CtsegError(
            f"--trainer.devices {devices}: give a whole number of devices, a list of indices such as [0, 1], or auto"
        )
    init = (data.get("init_args") if hasattr(data, "get") else None) or {}
    for key in ("image_size", "val_image_size"):
        size = init.get(key) if hasattr(init, "get") else None
        if isinstance(size, int) and (size < 32 or size % 32):
            raise CtsegError(
                f"--data.init_args.{key} {size}: must be a multiple of 32, the encoders' input multiple "
                f"(e.g. {max(32, size // 32 * 32)} or {(size // 32 + 1) * 32})"
            )


#: Trainer counts Lightning refuses with a traceback: (key, smallest value, what it means).
_TRAINER_COUNTS = (
    ("max_steps", -1, "-1 (no limit) or a number of steps"),
    ("max_epochs", -1, "-1 (no limit) or a number of epochs"),
    ("min_steps", 0, "a number of steps"),
    ("min_epochs", 0, "a number of epochs"),
    ("accumulate_grad_batches", 1, "a number of batches ≥ 1"),
    ("log_every_n_steps", 0, "a number of steps"),
    ("check_val_every_n_epoch", 1, "a number of epochs ≥ 1, or null"),
    ("num_sanity_val_steps", -1, "-1 (all) or a number of batches"),
)


def _check_trainer_numbers(trainer) -> None:
    """One line for the trainer counts and fractions that Lightning would refuse with a traceback."""
    for key, low, what in _TRAINER_COUNTS:
        value = trainer.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise CtsegError(f"--trainer.{key} {value}: must be {what}")
    for key in ("limit_train_batches", "limit_val_batches", "limit_test_batches", "val_check_interval"):
        value = trainer.get(key)
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        # Lightning takes a whole float above 1 (2.0, as the parser may give "2") as a number of batches
        if not value >= 0 or (isinstance(value, float) and value > 1 and value % 1 and key != "val_check_interval"):
            raise CtsegError(f"--trainer.{key} {value}: must be a fraction in [0, 1] or a number of batches")


def _devices_text_ok(text: str) -> bool:
    text = text.strip()
    if text in ("auto", "-1"):
        return True
    parts = [p.strip() for p in text.strip("[]").split(",") if p.strip()]
    return bool(parts) and all(p.lstrip("-").isdigit() for p in parts)


def _requested_devices(devices) -> int | None:
    """How many devices a ``trainer.devices`` value asks for; ``None`` for "auto" / -1 (all there are)."""
    if devices is None or isinstance(devices, bool):
        return None
    if isinstance(devices, (list, tuple)):
        return len(devices)
    text = str(devices).strip()
    if text in ("auto", "-1", ""):
        return None
    if "," in text:  # Lightning reads "0,1" as device indices
        return len([d for d in text.split(",") if d.strip()])
    try:
        return int(text)
    except ValueError:
        return None  # Lightning reports anything else itself


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def check_hardware(trainer) -> None:
    """One-line errors (and one-line fallbacks) for devices and precision the machine does not have.

    * ``--trainer.accelerator gpu|cuda`` without a visible CUDA GPU, or more ``--trainer.devices`` than there
      are GPUs (or CPU cores, for CPU processes) → :class:`CtsegError` naming the number available and the fix;
    * a bf16 precision on a GPU without bf16 (pre-Ampere) → ``16-mixed``, said in one line on stderr.
      (On the CPU bf16 autocast runs everywhere, just slowly; it is left as asked.)

    ``trainer`` is the parsed ``trainer`` group (a mapping); it is changed in place for the fallback.
    """
    accelerator = str(trainer.get("accelerator") or "auto").lower()
    n_cuda = torch.cuda.device_count()
    if accelerator in ("gpu", "cuda") and n_cuda == 0:
        raise CtsegError(
            f"--trainer.accelerator {accelerator}: no CUDA GPU is visible on this machine; "
            "use --trainer.accelerator cpu (or auto)"
        )
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and n_cuda > 0)
    wanted = _requested_devices(trainer.get("devices"))
    if wanted is not None and accelerator not in ("tpu", "mps", "hpu", "xla"):
        have, what = (n_cuda, "CUDA GPU") if on_gpu else (_cpu_count(), "CPU core")
        if wanted > have:
            plural = "s" if have != 1 else ""
            raise CtsegError(
                f"--trainer.devices {trainer.get('devices')}: this machine has {have} {what}{plural}; "
                f"use --trainer.devices {have} (or auto)"
            )
    precision = str(trainer.get("precision") or "")
    if on_gpu and precision.startswith("bf16") and not torch.cuda.is_bf16_supported():
        trainer["precision"] = "16-mixed"
        note = f"ctseg: note: this GPU has no bf16; using --trainer.precision 16-mixed instead of {precision}"
        print(note, file=sys.stderr)


def check_scheme_options(model) -> None:
    """Build the scheme once on stand-in channels (4 stages, as every preset has) so that a bad
    ``--model.scheme_options`` value is one line before anything is seeded, logged or written."""
    if model is None:
        return
    from ctseg.contrastive.schemes import build_scheme

    scheme = model.get("scheme") or "none"
    options = model.get("scheme_options") or {}
    if hasattr(options, "as_dict"):
        options = options.as_dict()
    if not isinstance(options, dict):
        raise CtsegError(f"--model.scheme_options must be a mapping such as '{{hard_fraction: 0.25}}', got {options!r}")
    build_scheme(scheme, [8, 8, 8, 8], 2, ignore_index=int(model.get("ignore_index", 255)), **options)


def check_ckpt_path(path, root: str | os.PathLike | None = None) -> dict:
    """One-line errors for a ``--ckpt_path`` that does not exist, is not a Lightning checkpoint, or could run
    code when loaded (:mod:`ctseg.safety.pickles`) — checked before Lightning reads any of it.

    Returns the model hyper-parameters (plus ``_path``) of the file the run will load (``{}`` when none).
    ``last`` is resolved as ctseg resumes (:func:`newest_checkpoint`; Lightning's own ``last*.ckpt`` are checked
    too), ``hpc`` as Lightning does (``<root>/hpc_ckpt_*.ckpt``) when ``root`` is known; a file of that very name
    in the working folder is what Lightning would open first, so it is checked too.
    """
    if not path:
        return {}
    if str(path) in ("last", "best", "hpc", "registry"):
        files = [Path(str(path))] if Path(str(path)).is_file() else []
        newest = newest_checkpoint(root) if root is not None and str(path) == "last" else None
        if root is not None and str(path) == "last":
            files += sorted((Path(root) / "checkpoints").glob("last*.ckpt"))
        if root is not None and str(path) == "hpc":
            files += sorted(Path(root).glob("hpc_ckpt_*.ckpt"))
        hparams = {}
        for file in dict.fromkeys([*files, *([newest] if newest else [])]):
            found = check_ckpt_path(file)
            hparams = found if file == newest else hparams
        return hparams
    from ctseg.checkpoints.files import check_hparams

    path = Path(str(path))
    if not path.is_file():
        raise CtsegError(f"--ckpt_path {path} does not exist; give a checkpoint file, or 'last' to resume")
    ckpt = load_torch_file(path, "checkpoint", mmap=True)
    if not isinstance(ckpt, dict) or "pytorch-lightning_version" not in ckpt or "state_dict" not in ckpt:
        raise CtsegError(f"--ckpt_path {path} is not a training checkpoint written by 'ctseg fit'")
    check_hparams(ckpt, path)
    hp = ckpt.get("hyper_parameters")
    return {**hp, "_path": str(path)} if isinstance(hp, dict) else {}
