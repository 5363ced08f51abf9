"""``ctseg configs``: the configs shipped in the package (:mod:`ctseg.configs`) — list them, or print one."""

from __future__ import annotations

import argparse
import difflib

HELP = "list the configs shipped with ctseg, or print one (ctseg configs potsdam/ds-cl)"
EPILOG = (
    "A name works wherever a config file does: ctseg fit --config demo/ct-cl; ctseg grid --configs potsdam/ds-cl "
    "potsdam/ds-baseline. To change one, print it into a file: ctseg configs folder/cpu-cl > mine.yaml"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", metavar="NAME", help="print this config's YAML (e.g. potsdam/ds-cl)")


def _summary(path) -> str:
    """``model · scheme · data module`` of one config file (ours: plain YAML, read safely)."""
    import yaml

    cfg = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    model, data = cfg.get("model") or {}, cfg.get("data") or {}
    module = str(data.get("class_path", "")).rpartition(".")[2].removesuffix("DataModule")
    return f"{model.get('model', '?'):<9} {model.get('scheme', 'none'):<11} {module}"


def run(args: argparse.Namespace, extra: list[str]) -> int:
    from ctseg.configs import config_path, list_configs
    from ctseg.errors import CtsegError

    names = list_configs()
    if args.name:
        path = config_path(args.name)
        if path is None:
            close = difflib.get_close_matches(args.name, names, n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise CtsegError(f"configs: no packaged config {args.name!r}; {hint}'ctseg configs' lists them")
        print(path.read_text(encoding="utf-8"), end="")
        return 0
    from ctseg.configs import CONFIG_DIR

    width = max(map(len, names))
    print(f"{'name':<{width}}  {'model':<9} {'scheme':<11} data")
    for name in names:
        print(f"{name:<{width}}  {_summary(CONFIG_DIR / f'{name}.yaml')}")
    print(f"\n{len(names)} configs; a name works as a file: ctseg fit --config demo/ct-cl")
    return 0
