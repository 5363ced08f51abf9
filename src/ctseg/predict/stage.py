"""All or nothing per input: the staging folders of ``ctseg predict`` (the output protocol of :mod:`ctseg.predict.run`).

Every output of one input is written into a staging folder of its own inside the output folder,
``<out>/.ctseg-predict-<stem>-<random>/``, which its process holds locked while it lives
(:class:`ctseg.staging.LockedFolder`). When every file of the set is complete, :meth:`Stage.seal` writes the
completion record ``done.json`` (the stem and the file names; written under a temporary name and renamed, so it
is whole or absent), then :meth:`Stage.commit` renames each file into the output folder and removes the staging
folder. Commits, and the recovery below, hold a short lock on the output folder, so the sets of two parallel
predicts into one folder never interleave.

:func:`recover` runs at the start of every predict into an output folder, on the staging folders of processes
that are gone (a live process's folder is locked and never touched): with a completion record the renames are
finished (rolled forward: the set was complete), without one the folder is deleted (rolled back). After a kill
at any instruction, the next run therefore sees each input's outputs complete or absent; :func:`pending` tells
``--skip-existing`` that a live process is still writing a stem. Temporary files of older ctseg versions
(``.<stem>_pred.XXXXXXXX.part.tif`` …, written beside the outputs) are removed once over a minute old.
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from collections.abc import Iterable
from pathlib import Path

from ctseg.errors import CtsegError
from ctseg.predict.failures import write_error
from ctseg.staging import LOCK_FILE, ORPHAN_AGE, LockedFolder, dead_folders, folder_lock, remove_tree

__all__ = ["PREFIX", "RECORD", "Stage", "clean_legacy", "is_pending", "pending", "recover"]

#: Name prefix of the staging folders in the output folder.
PREFIX = ".ctseg-predict-"
#: The completion record inside a staging folder.
RECORD = "done.json"
_STEM_CHARS = 64  # of the stem in a staging folder's name (the full stem is in its lock file)
_RANDOM_CHARS = 8  # tempfile.mkdtemp's random part


def _prefix(stem: str) -> str:
    return f"{PREFIX}{stem[:_STEM_CHARS]}-"


def output_names(stem: str) -> set[str]:
    """Every file name ``ctseg predict`` may write for input ``<stem>`` (:mod:`ctseg.predict.plan`)."""
    names = {f"{stem}_pred.tif", f"{stem}_pred.png", f"{stem}_probs.tif", f"{stem}_conf.tif", f"{stem}.png",
             f"{stem}_legend.png", f"{stem}_overlay.png", f"{stem}_pred.tif.aux.xml", f"{stem}_pred.qml",
             f"{stem}_entropy.tif", f"{stem}_uncertain.gpkg"}  # fmt: skip
    return names | {f"{stem}{suffix}" for suffix in (".gpkg", ".geojson", ".json")}


class Stage:
    """The staging folder of one input's outputs in ``out_dir`` (module docstring)."""

    def __init__(self, out_dir: Path, stem: str, shown: Path | None = None):
        self.out_dir, self.stem = Path(out_dir), stem
        try:
            self._folder = LockedFolder(self.out_dir, _prefix(stem), {"stem": stem})
        except OSError as err:  # a full disk, a folder made read-only meanwhile: one line (``shown``: the output)
            raise write_error(shown or self.out_dir / stem, err) from None
        self.dir = self._folder.path
        self._names: list[str] = []

    def staged(self, target: Path) -> Path:
        """Where ``target`` (a file of the output folder) is written until the commit."""
        return self.dir / target.name

    def seal(self, targets: Iterable[Path], shown: Path) -> None:
        """Write the completion record of ``targets`` (all written into the folder); ``shown``: the output a
        failure names."""
        names = [t.name for t in targets]
        missing = [n for n in names if not (self.dir / n).is_file()]
        if missing:
            raise RuntimeError(f"{self.dir}: {missing} were not written")
        tmp = self.dir / f".{RECORD}.tmp"
        try:
            tmp.write_text(json.dumps({"stem": self.stem, "files": names}))
            os.replace(tmp, self.dir / RECORD)
        except OSError as err:
            raise write_error(shown, err) from None
        self._names = names

    def commit(self) -> list[Path]:
        """Rename the sealed files into the output folder, then remove the staging folder; the final paths."""
        done: list[Path] = []
        with folder_lock(self.out_dir):
            try:
                for name in self._names:
                    os.replace(self.dir / name, self.out_dir / name)
                    done.append(self.out_dir / name)
            except OSError as err:
                self._folder.release()  # sealed: the next predict into this folder finishes the renames
                raise CtsegError(
                    f"cannot move {self.out_dir / self._names[len(done)]} into place ({err.strerror or err}); the "
                    f"next ctseg predict into {self.out_dir} completes the outputs of {self.stem}"
                ) from None
            except BaseException:  # Ctrl-C between two renames: as a kill, the next run finishes them
                self._folder.release()
                raise
            self._folder.remove()
        return done

    def discard(self) -> None:
        """Delete the folder and everything written into it."""
        self._folder.remove()


def _record(folder: Path) -> tuple[str, list[str]] | None:
    """(stem, file names) of a staging folder's completion record; ``None`` when there is none (not sealed).
    Raises ``ValueError`` for a record that is not one of ours."""
    try:
        text = (folder / RECORD).read_text()
    except FileNotFoundError:
        return None
    record = json.loads(text)
    stem, names = record.get("stem"), record.get("files")
    if not isinstance(stem, str) or not isinstance(names, list):
        raise ValueError("not a ctseg completion record")
    allowed = output_names(stem)
    if not all(isinstance(n, str) and n in allowed for n in names):
        raise ValueError("names a file ctseg predict does not write")
    return stem, names


def recover(out_dir: Path) -> tuple[list[str], int]:
    """Finish or undo the staging folders of dead predicts in ``out_dir`` (module docstring); returns (the stems
    whose outputs were completed, the number of unfinished folders deleted)."""
    completed, removed = [], 0
    for folder in dead_folders(out_dir, PREFIX):
        try:
            record = _record(folder)
        except (OSError, ValueError):
            continue  # not a record ctseg wrote: left alone
        if record is None:
            remove_tree(folder)
            removed += 1
            continue
        stem, names = record
        try:
            for name in names:
                src = folder / name
                try:
                    mode = src.lstat().st_mode
                except FileNotFoundError:
                    continue  # moved before the kill
                if stat.S_ISREG(mode):
                    os.replace(src, out_dir / name)
        except OSError:
            continue  # e.g. a folder now in the way: left for a later run
        remove_tree(folder)
        completed.append(stem)
    return completed, removed


def pending(out_dir: Path) -> set[str]:
    """The stems whose staging folders are in ``out_dir`` (after :func:`recover`: live processes writing them)."""
    stems: set[str] = set()
    try:
        names = [n for n in os.listdir(out_dir) if n.startswith(PREFIX)]
    except OSError:
        return stems
    for name in names:
        try:
            owner = json.loads((out_dir / name / LOCK_FILE).read_text())
            stems.add(str(owner["stem"]))
        except (OSError, ValueError, KeyError, TypeError):  # being made: its name tells the stem (maybe cut)
            stems.add(name[len(PREFIX) : -_RANDOM_CHARS - 1])
    return stems


def is_pending(stem: str, stems: set[str]) -> bool:
    """Whether ``stem`` is among :func:`pending`'s (a name cut at 64 characters counts for every longer stem)."""
    return stem in stems or stem[:_STEM_CHARS] in stems


_LEGACY = re.compile(r"^\.(?P<stem>.+)\.[a-z0-9_]{8}\.(?:part\.tif|tmp\.tif|png\.tmp\.png)$")


def clean_legacy(out_dir: Path, names: Iterable[str]) -> int:
    """Remove the temporary files that older ctseg versions wrote beside the outputs ``names`` and a kill left
    (``.<name stem>.XXXXXXXX.part.tif`` / ``.tmp.tif`` / ``.png.tmp.png``), once over a minute old."""
    stems = {Path(n).stem for n in names}
    removed = 0
    try:
        entries = [n for n in os.listdir(out_dir) if n.startswith(".")]
    except OSError:
        return 0
    for name in entries:
        match = _LEGACY.match(name)
        if not match or match.group("stem") not in stems:
            continue
        path = out_dir / name
        try:
            st = path.lstat()
            if stat.S_ISREG(st.st_mode) and time.time() - st.st_mtime > ORPHAN_AGE:
                path.unlink()
                removed += 1
        except OSError:
            continue
    return removed
