"""The ``ctseg`` command: thin — parses, dispatches to the sub-command's module (:data:`COMMANDS`), turns user
errors into one line (exit code 2).

Each sub-command is one module of ``ctseg.cli`` with ``HELP`` (and ``EPILOG``), ``add_arguments(parser)`` declaring
its flags and ``run(args, extra) -> int`` calling the library; flags several commands share come from
:mod:`ctseg.cli.flags`. ``extra`` holds the options ``ctseg grid`` passes on to every run (empty for the others).
``--allow-remote`` / ``--allow-outside`` are applied here, around the run.

Subcommands:
    fit | validate | test   LightningCLI with YAML configs (``--config FILE`` and dotted overrides)
    demo                    baseline vs CT on built-in synthetic data, table + figures (CPU, minutes)
    prepare                 turn a data set download or your own image/label folder into crops (--list)
    predict                 segment rasters of any size by sliding windows, streamed into COGs (ctseg.predict)
    export                  write the inference-only model of a checkpoint: safetensors or ONNX (ctseg.checkpoints)
    vectorize               polygons (GeoPackage / GeoJSON) of classes of a predicted class map (ctseg.vectorize)
    grid                    configs × seeds: fit, test the best checkpoint, results.json (ctseg.experiments.grid)
    report                  Table 1 (Markdown + CSV) and figures from results.json files (ctseg.experiments.report)
    evaluate                score prediction files against label files: region + boundary metrics (ctseg.evaluation)
    configs                 list the configs shipped in the package, or print one (ctseg.configs)
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from types import ModuleType

from ctseg.cli import configs, demo, evaluate, export, grid, predict, prepare, report, vectorize
from ctseg.cli.allocator import tune_allocator
from ctseg.errors import CtsegError

LIGHTNING_COMMANDS = ("fit", "validate", "test")
#: sub-command → its module (``HELP``, ``EPILOG``, ``add_arguments``, ``run``), in the order ``--help`` lists them.
COMMANDS: dict[str, ModuleType] = {
    "demo": demo,
    "prepare": prepare,
    "predict": predict,
    "export": export,
    "vectorize": vectorize,
    "grid": grid,
    "report": report,
    "evaluate": evaluate,
    "configs": configs,
}


def _fail(message: str) -> int:
    print(f"ctseg: error: {message}", file=sys.stderr)
    return 2


def _run_lightning(argv: list[str]) -> int:
    from ctseg.training.lightning_cli import build_cli

    build_cli(_packaged_configs(argv))
    return 0


def _packaged_configs(argv: list[str]) -> list[str]:
    """``--config NAME`` / ``-c NAME`` / ``--config=NAME``: a packaged config's file where no file ``NAME``
    exists (:func:`ctseg.configs.resolve_config`; a real path always wins)."""
    from ctseg.configs import resolve_config

    def resolve(value: str) -> str:
        found = resolve_config(value)
        if not os.path.exists(found) and not any(c in value for c in ":{\n"):  # not inline YAML: a missing file
            raise CtsegError(
                f"{argv[0]}: --config {value}: no such file, and no packaged config of that name "
                "('ctseg configs' lists them)"
            )
        return found

    out: list[str] = []
    for i, arg in enumerate(argv):
        if i and argv[i - 1] in ("--config", "-c"):
            arg = resolve(arg)
        elif arg.startswith("--config="):
            arg = "--config=" + resolve(arg.removeprefix("--config="))
        out.append(arg)
    return out


class _OneLineParser(argparse.ArgumentParser):
    """argparse with ctseg's error style: one line on stderr naming the problem, exit code 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"ctseg: error: {self.prog}: {message} (see '{self.prog} --help')\n")


def _parser() -> argparse.ArgumentParser:
    """The top-level parser: one sub-parser per entry of :data:`COMMANDS`, its flags from the module's
    ``add_arguments``."""
    parser = _OneLineParser(
        prog="ctseg",
        description="Aerial-image segmentation with the Contrastive Transformer scheme.",
        epilog="Training: ctseg fit --config demo/ct-cl [--trainer.max_epochs 5 ...] "
        "(also: validate, test; see ctseg fit --help; 'ctseg configs' lists the packaged configs).",
    )
    sub = parser.add_subparsers(
        parser_class=_OneLineParser,
        dest="command",
        metavar="{" + ",".join((*LIGHTNING_COMMANDS, *COMMANDS)) + "}",
    )
    for name in LIGHTNING_COMMANDS:
        sub.add_parser(name, help=f"LightningCLI {name} with a YAML config", add_help=False)
    for name, module in COMMANDS.items():
        module.add_arguments(sub.add_parser(name, help=module.HELP, epilog=getattr(module, "EPILOG", None)))
    return parser


def _split_extra(argv: list[str]) -> tuple[list[str], list[str]]:
    """``[..., "--", extra...]`` → (before, extra)."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, []


__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never wait on the network for timm
    tune_allocator()  # large tensors from the heap, not fresh mappings (ctseg.cli.allocator)
    from ctseg.safety.rasters import allowing, apply_gdal_guards

    apply_gdal_guards()  # forced: no Python pixel functions, no raw VRT bands, no MEM::: pointers
    try:
        if argv and argv[0] in LIGHTNING_COMMANDS:
            return _run_lightning(argv)
        argv, extra = _split_extra(argv) if argv and argv[0] == "grid" else (argv, [])
        args = _parser().parse_args(argv)
        if args.command in COMMANDS:
            allow = {"remote": getattr(args, "allow_remote", False), "outside": getattr(args, "allow_outside", False)}
            with allowing(**allow):  # what a VRT input may name; default: only files under its own folder
                return COMMANDS[args.command].run(args, extra)
        _parser().print_help()
        return 2
    except CtsegError as err:
        return _fail(str(err))
    except KeyboardInterrupt:
        return _fail("interrupted")
    except BrokenPipeError:  # stdout closed early (`ctseg configs | head`): no traceback, no flush error at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
