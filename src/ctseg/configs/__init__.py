"""The configs shipped inside the package, named by their path under ``ctseg/configs`` without ``.yaml``.

``potsdam/ds-cl`` … ``uavid/uf-mscs`` are the CT paper's grid (data set / model-scheme; written from one table by
:mod:`ctseg.configs._generate`), ``demo/*`` the built-in synthetic demo, ``dubai/cpu/*`` the Dubai CPU study and
``folder/*`` starting points for a user's own prepared folder. ``ctseg configs`` lists them (``ctseg configs NAME``
prints one); ``ctseg fit --config NAME`` and ``ctseg grid --configs NAME`` take a name wherever no file of that
name exists (a real path always wins), and ``ctseg grid`` also takes patterns of names (``'potsdam/*'``).
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path

__all__ = ["config_path", "expand_configs", "list_configs", "resolve_config"]

#: The folder holding the packaged YAML files.
CONFIG_DIR = Path(__file__).parent


def list_configs() -> list[str]:
    """Names of every packaged config, sorted (``demo/ct-cl``, ``potsdam/ds-cl`` …)."""
    return sorted(p.relative_to(CONFIG_DIR).with_suffix("").as_posix() for p in CONFIG_DIR.rglob("*.yaml"))


def config_path(name: str) -> Path | None:
    """The file of the packaged config ``name`` (``potsdam/ds-cl`` or ``potsdam/ds-cl.yaml``), or ``None``."""
    stem = name.removesuffix(".yaml").removesuffix(".yml")
    if not stem or stem.startswith(("/", ".")) or "\\" in stem or ".." in stem.split("/"):
        return None
    return CONFIG_DIR / f"{stem}.yaml" if stem in set(list_configs()) else None


def resolve_config(value: str | os.PathLike) -> str:
    """``value`` unchanged when it names an existing file (or is not a packaged name), else the packaged file's path.

    A real path always wins, so a user's own ``potsdam/ds-cl.yaml`` in the working folder is the one used."""
    text = os.fspath(value)
    if Path(text).exists():
        return text
    found = config_path(text)
    return text if found is None else str(found)


def expand_configs(values: list[str]) -> list[str]:
    """Each of ``values`` resolved by :func:`resolve_config`; a glob pattern that names no file but matches packaged
    names (``potsdam/*``, ``'*/ds-cl'``) becomes those configs' files, in name order."""
    out: list[str] = []
    for value in values:
        pattern = os.fspath(value).removesuffix(".yaml")
        matches = [] if Path(value).exists() or not any(c in pattern for c in "*?[") else [
            str(CONFIG_DIR / f"{name}.yaml") for name in list_configs() if fnmatch.fnmatchcase(name, pattern)
        ]  # fmt: skip
        out.extend(matches or [resolve_config(value)])
    return out
