"""LightningCLI wiring for ``ctseg fit | validate | test``.

* the model is always :class:`ctseg.training.SegmentationTask`; the data module is any LightningDataModule
  given by ``data.class_path`` (ours expose ``.info``, a :class:`~ctseg.data.DatasetInfo`);
* ``num_classes``, ``ignore_index``, class names, evaluated classes, the input bands (``in_chans``) and the whole
  data set description (``data_info``, kept in checkpoints for ``ctseg predict``) are linked from the data module;
* defaults: bf16 mixed precision on a GPU that has it, fp32 on CPU; gradient-norm clip 1.0; CSV and TensorBoard
  logs (:func:`default_loggers`) and checkpoints (best ``val/miou`` and ``last``) under ``runs/``; no third-party
  tips or notices about the libraries' internals (:mod:`ctseg.training.quiet`); exact mid-epoch resume
  (:class:`~ctseg.training.resume.ExactResume`, added to the trainer's callbacks unless a config already names it).

Argument and config errors are turned into one line (:class:`~ctseg.errors.CtsegError`).
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.cli import LightningCLI

from ctseg.errors import CtsegError
from ctseg.training.callbacks import ScoreCheckpoint as ModelCheckpoint
from ctseg.training.cli_help import DESCRIPTIONS, PlainHelpFormatter, usage
from ctseg.training.config_checks import (
    check_ckpt_path,
    check_class_count,
    check_hardware,
    check_scheme_options,
    check_values,
    newest_checkpoint,
    warn_overridden_by_checkpoint,
)
from ctseg.training.quiet import quiet_third_party
from ctseg.training.resume import ExactResume
from ctseg.training.task import SegmentationTask


def default_precision() -> str:
    """``"bf16-mixed"`` on a CUDA device with bf16, else ``"32-true"``."""
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def _import_data_modules() -> None:
    """Import ctseg's data modules before the parser is built: jsonargparse then lists them under ``--data`` in
    ``--help`` and accepts their short names (``--data FolderDataModule``)."""
    import ctseg.data.datamodules  # noqa: F401
    import ctseg.data.synthetic.dataset  # noqa: F401


def default_loggers(root: str) -> list:
    """A run's logs unless its config names a logger: CSV first (``ROOT/lightning_logs/version_N/metrics.csv``,
    beside the run's ``config.yaml``; what ``ctseg report`` reads) and TensorBoard
    (``ROOT/tensorboard/version_N``, for ``tensorboard --logdir ROOT``) when the ``tensorboard`` package is there."""
    from lightning.pytorch.loggers import CSVLogger

    loggers: list = [CSVLogger(save_dir=root, name="lightning_logs")]
    try:
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(save_dir=root, name="tensorboard", default_hp_metric=False))
    except ModuleNotFoundError:  # tensorboard is a dependency; a trimmed install keeps the CSV log
        pass
    return loggers


class CtsegLightningCLI(LightningCLI):
    """LightningCLI with ctseg's links, checkpoint defaults, exact resume and one-line errors."""

    def _instantiate_trainer(self, config: dict, callbacks: list) -> L.Trainer:
        # Exact mid-epoch resume (ctseg.training.resume.ExactResume) by default; once, also when a config names it.
        given = config.get("callbacks")
        given = [] if given is None else given if isinstance(given, list) else [given]
        if not any(isinstance(c, ExactResume) for c in [*given, *callbacks]):
            callbacks = [*callbacks, ExactResume()]
        if config.get("logger") in (None, True):  # the default: both logs, under the run's own folder
            config = {**config, "logger": default_loggers(config.get("default_root_dir") or "runs")}
        return super()._instantiate_trainer(config, callbacks)

    def init_parser(self, **kwargs):
        # Plain-text help; a subcommand's parser (it has a description) gets a short usage line.
        kwargs.setdefault("formatter_class", PlainHelpFormatter)
        if "description" in kwargs:
            subcommand = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] in self.subcommands() else "fit"
            kwargs.setdefault("usage", usage(subcommand))
            kwargs["description"] = DESCRIPTIONS.get(subcommand, kwargs["description"])
        return super().init_parser(**kwargs)

    def add_core_arguments_to_parser(self, parser) -> None:
        # ctseg's own options (model, data) before the trainer's, in --help as in the config file.
        parser.add_lightning_class_args(self._model_class, "model", subclass_mode=self.subclass_mode_model)
        parser.add_lightning_class_args(self._datamodule_class, "data", subclass_mode=self.subclass_mode_data)
        parser.add_lightning_class_args(self.trainer_class, "trainer")
        parser.set_defaults({f"trainer.{k}": v for k, v in self.trainer_defaults.items() if k != "callbacks"})

    def add_arguments_to_parser(self, parser) -> None:
        # "checkpoint": best val/miou + last.ckpt at every validation; "step_checkpoint": every N training steps
        # as well (off until --step_checkpoint.every_n_train_steps N), also refreshing last.ckpt for resuming.
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_lightning_class_args(ModelCheckpoint, "step_checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/miou",
                "checkpoint.mode": "max",
                "checkpoint.save_last": True,
                "checkpoint.filename": "best-{epoch}-{step}",
                "checkpoint.enable_version_counter": False,  # one last.ckpt, shared with step_checkpoint
                "step_checkpoint.every_n_train_steps": 0,
                "step_checkpoint.save_top_k": 1,
                "step_checkpoint.save_last": True,
                "step_checkpoint.filename": "step-{step}",
                "step_checkpoint.enable_version_counter": False,
            }
        )
        parser.link_arguments("data.info", "model.num_classes", compute_fn=_num_classes, apply_on="instantiate")
        parser.link_arguments("data.info", "model.ignore_index", compute_fn=_ignore, apply_on="instantiate")
        parser.link_arguments("data.info", "model.class_names", compute_fn=_names, apply_on="instantiate")
        parser.link_arguments("data.info", "model.eval_classes", compute_fn=_eval, apply_on="instantiate")
        parser.link_arguments("data.info", "model.dataset", compute_fn=_dataset, apply_on="instantiate")
        parser.link_arguments("data.info", "model.in_chans", compute_fn=_in_chans, apply_on="instantiate")
        parser.link_arguments("data.info", "model.data_info", compute_fn=_info_json, apply_on="instantiate")

    def parse_arguments(self, parser, args) -> None:
        super().parse_arguments(parser, args)
        # Before LightningCLI seeds (and logs) anything: a wrong device request is the only line printed.
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else self.config
        check_hardware(config.trainer)
        check_values(config)
        check_scheme_options(config.get("model"))
        # Before LightningCLI's _parse_ckpt_path reads the checkpoint's hyper-parameters (the path may come from
        # the command line or a config file); each file is read once, here.
        root = config.trainer.get("default_root_dir") or "runs"
        hparams = check_ckpt_path(config.get("ckpt_path"), root)
        self._ckpt_hparams = hparams
        if hparams:
            check_class_count(hparams, config.get("data"))
        warn_overridden_by_checkpoint(config.get("model"), hparams, sys.argv[1:])

    def _set_seed(self) -> None:
        """Lightning's seeding without its ``Seed set to N`` log line: an error found after seeding is then the
        only line the user sees (the seed is in the run's ``config.yaml`` and ``results.json``)."""
        from lightning.fabric.utilities.seed import seed_everything

        seed = self._get(self.config, "seed_everything")
        if seed is False:
            return
        seed = seed_everything(None if seed is True else seed, workers=True, verbose=False)
        (self.config[self.subcommand] if self.subcommand else self.config)["seed_everything"] = seed

    def _parse_ckpt_path(self) -> None:
        """Lightning merges a ``--ckpt_path`` file's hyper-parameters into the model config; here it merges only
        what :func:`~ctseg.safety.model_spec.check_task_hparams` let through of the file read (and scanned) once
        in :meth:`parse_arguments` — never a path the file names (``pretrained``)."""
        if not self.config.get("subcommand"):
            return
        ckpt_path = self.config[self.config.subcommand].get("ckpt_path")
        hparams = dict(getattr(self, "_ckpt_hparams", None) or {})
        if not (ckpt_path and Path(ckpt_path).is_file()) or not hparams:
            return
        from ctseg.safety.model_spec import check_task_hparams

        arguments = set(inspect.signature(SegmentationTask.__init__).parameters) - {"self"}
        hparams = check_task_hparams(hparams, ckpt_path, arguments)
        if "_class_path" in hparams:
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        self.config = self.parser.parse_object({self.config.subcommand: {"model": hparams}}, self.config)

    def before_instantiate_classes(self) -> None:
        # A fixed checkpoint folder (not one per logger version) so that `--ckpt_path last` finds the last
        # checkpoint of a killed run when the same command is started again.
        config = self.config[self.subcommand] if self.subcommand else self.config
        root = config.trainer.get("default_root_dir") or "runs"
        if config.get("ckpt_path") == "last":
            newest = newest_checkpoint(root)
            if newest is not None:  # the newest checkpoint written, whichever callback wrote it (checked above)
                config.ckpt_path = str(newest)
        if "weights_only" in config:  # Lightning's own load: torch's restricted unpickler, whatever torch's default
            if config.weights_only is False:
                raise CtsegError(
                    "--weights_only false: ctseg checkpoints hold only tensors and plain data and are always "
                    "loaded with weights_only; leave the option out"
                )
            config.weights_only = True
        for key in ("checkpoint", "step_checkpoint"):
            if config.get(key) is not None and not config[key].get("dirpath"):
                config[key].dirpath = str(Path(root) / "checkpoints")


def _num_classes(info) -> int:
    return info.num_classes


def _ignore(info) -> int:
    return info.ignore_index


def _names(info) -> list[str]:
    return list(info.classes)


def _dataset(info) -> str:
    return info.name


def _in_chans(info) -> int:
    return int(getattr(info, "bands", 3))


def _info_json(info) -> dict:
    from ctseg.data.definitions import info_to_json

    return info_to_json(info)


def _eval(info) -> list[int] | None:
    return None if info.eval_classes is None else list(info.eval_classes)


def build_cli(
    args: list[str], *, run: bool = True, root: str = "runs", context: str | None = None
) -> CtsegLightningCLI:
    """Build (and with ``run`` execute) ctseg's LightningCLI for ``args``.

    Args:
        args: with ``run``, the subcommand first (``["fit", "--config", "x.yaml"]``); without, options only.
        root: ``trainer.default_root_dir`` default.
        context: prefix of one-line errors (default: the subcommand).
    """
    quiet_third_party()
    _import_data_modules()
    defaults: dict = {"precision": default_precision(), "gradient_clip_val": 1.0, "default_root_dir": root}
    saved_argv = sys.argv
    # LightningCLI reads sys.argv itself when running and warns when it sees both sys.argv and args.
    sys.argv = [saved_argv[0] if saved_argv else "ctseg", *(args if run else [])]
    try:
        return CtsegLightningCLI(
            SegmentationTask,
            L.LightningDataModule,
            subclass_mode_data=True,
            seed_everything_default=0,
            trainer_defaults=defaults,
            parser_kwargs={"exit_on_error": False},
            save_config_kwargs={"overwrite": True},
            run=run,
            **({} if run else {"args": args}),
        )
    except CtsegError:
        raise
    except Exception as err:  # jsonargparse / config errors → one line
        cause: BaseException | None = err  # jsonargparse wraps a class's own CtsegError (e.g. a data module's)
        while cause is not None and not isinstance(cause, CtsegError):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            raise cause from None
        if type(err).__name__ in ("ArgumentError", "NSKeyError") or "jsonargparse" in type(err).__module__:
            where = context or (args[0] if args else "ctseg")
            raise CtsegError(f"{where}: {' '.join(str(err).split())}") from None
        raise
    finally:
        sys.argv = saved_argv


if __name__ == "__main__":
    build_cli(sys.argv[1:])
