"""Assigning source groups (tiles, sequences, folders) to splits, and natural sort order."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from ctseg.errors import CtsegError

#: The split trained on; every other split is an evaluation split (native-size masks, no pixel scored twice).
TRAIN_SPLIT = "train"
_SPLIT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


def natural_key(text: str) -> tuple:
    """Sort key that orders ``2_9`` before ``2_10`` and ``area2`` before ``area10``."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text))


def is_eval_split(split: str) -> bool:
    """Whether ``split`` is scored (every split but :data:`TRAIN_SPLIT`): native-size masks, no pixel twice."""
    return split != TRAIN_SPLIT


def check_split_name(split: str, what: str = "split_tiles") -> str:
    if not _SPLIT_NAME.fullmatch(str(split)):
        raise CtsegError(f"{what}: invalid split name {split!r} (letters, digits, '-' and '_', starting with a letter)")
    return str(split)


def resolve_splits(
    groups: Iterable[str],
    default: Mapping[str, Sequence[str]],
    split_tiles: Mapping[str, Iterable[str]] | None,
    normalize=lambda g: g,
    what: str = "tile",
) -> tuple[dict[str, str], list[str]]:
    """Assign each found group to a split.

    Args:
        groups: the groups (split units) found in the source folder.
        default: the data set's split → groups.
        split_tiles: user override, split name → groups. Groups not listed go to ``"train"`` when ``"train"`` is
            not a key, else they are skipped. Listing a group that was not found is an error.
        normalize: maps a user-written group id to the canonical one (``"3"`` → ``"tile3"``).

    Returns:
        (group → split, groups skipped because they are in no split).
    """
    found = sorted(set(groups), key=natural_key)
    assignment: dict[str, str] = {}
    if split_tiles is None:
        for split, members in default.items():
            for group in members:
                assignment[group] = split
        chosen = {g: assignment[g] for g in found if g in assignment}
        return chosen, [g for g in found if g not in assignment]
    if isinstance(split_tiles, str | bytes) or not isinstance(split_tiles, Mapping):
        raise CtsegError("split_tiles must map split names to lists of tile ids, e.g. {'test': ['tile3']}")
    for split, members in split_tiles.items():
        check_split_name(split)
        if isinstance(members, str):
            members = [members]
        for raw in members:
            group = normalize(str(raw))
            if group not in found:
                shown = ", ".join(found[:10]) + (f" and {len(found) - 10} more" if len(found) > 10 else "")
                raise CtsegError(
                    f"split_tiles: {what} {raw!r} (split {split!r}) was not found in the source; found: {shown}"
                )
            if group in assignment and assignment[group] != split:
                raise CtsegError(f"split_tiles: {what} {raw!r} is listed in both {assignment[group]!r} and {split!r}")
            assignment[group] = str(split)
    if TRAIN_SPLIT not in split_tiles:
        for group in found:
            assignment.setdefault(group, TRAIN_SPLIT)
    return assignment, [g for g in found if g not in assignment]
