"""Running ``ctseg prepare`` safely: the process pool that cuts the tiles, and the all-or-nothing write of ``dst``.

* :func:`run_tiles` cuts tiles in this process or in a pool of ``forkserver`` (``spawn``) workers. A worker's
  error comes back as the one line it raised (a crop it could not write: :class:`~ctseg.data.crops.CropWriteError`,
  picklable); tiles not started are dropped and the running ones end unseen, so nothing else reaches stderr.
  Workers exit as soon as the main process is gone (SIGKILL, an out-of-memory kill): none is left waiting for
  work or writing into a temporary folder that the next prepare deletes.
* :func:`check_nesting`: ``dst`` neither is, nor is inside, nor holds ``src``.
* :func:`writing`, :func:`make_parents`, :func:`discard`: the driver's own writes as one line naming ``dst`` (a
  full disk said as such), and what a failed prepare removes again.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from ctseg.errors import CtsegError
from ctseg.io import write_error


def pool_context():
    """``forkserver`` (``spawn`` where missing), never ``fork``: unsafe once torch runs threads."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def worker_init(policy) -> None:
    """Pool initializer: the main process's raster policy (``--allow-remote`` / ``--allow-outside``), and an exit
    as soon as the main process is gone — a ``ctseg prepare`` killed outright leaves no worker behind (one would
    otherwise wait for work forever, or write into a temporary folder the next prepare is deleting)."""
    from ctseg.safety.rasters import set_policy

    set_policy(policy)
    parent = multiprocessing.parent_process()
    if parent is not None and parent.sentinel is not None:
        threading.Thread(target=_exit_with, args=(parent.sentinel,), name="ctseg-parent-watch", daemon=True).start()


def _exit_with(sentinel: int) -> None:
    from multiprocessing.connection import wait as wait_for

    wait_for([sentinel])  # readable once the main process has ended
    os._exit(1)


def run_tiles(
    cut: Callable[..., dict[str, Any]], tiles, info, settings, out: Path, workers: int, progress: bool, stats: bool
) -> list[dict[str, Any]]:
    """``cut(tile, info, settings, out, stats)`` for every tile (:func:`ctseg.data.crops.cut_tile`), in ``workers``
    processes, largest tiles first; the results in the order they end. The first error is raised here."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(tiles), unit="tile", desc=f"prepare {info.name}", disable=not progress, file=sys.stderr)
    results = []
    try:
        if workers <= 1 or len(tiles) <= 1:
            for tile in tiles:
                results.append(cut(tile, info, settings, out, stats))
                bar.update(1)
            return results
        # Largest tiles first so that one big tile does not run alone at the end.
        from ctseg.data.walk import file_size  # an archive member's declared size

        order = sorted(tiles, key=lambda t: -file_size(t.image))
        from ctseg.safety.rasters import current_policy  # the workers get --allow-remote / -outside

        with ProcessPoolExecutor(max_workers=min(workers, len(tiles)), mp_context=pool_context(),
                                 initializer=worker_init, initargs=(current_policy(),)) as pool:  # fmt: skip
            pending = {pool.submit(cut, tile, info, settings, out, stats) for tile in order}
            try:
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        results.append(future.result())  # re-raises a worker's error here
                        bar.update(1)
            except BaseException:
                for future in pending:
                    future.cancel()
                raise
        return results
    finally:
        bar.close()


def check_nesting(src: Path, dst: Path) -> None:
    """One line when ``dst`` is ``src``, inside it or holds it (symbolic links followed): a prepare inside its
    own source would read its crops as source images the next time (``--overwrite``: a split of its own)."""
    src_real, dst_real = src.resolve(), dst.resolve()
    if dst_real == src_real:
        raise CtsegError(f"destination {dst} is the source folder {src.absolute()}; choose a --dst outside --src")
    if src_real in dst_real.parents:
        raise CtsegError(
            f"destination {dst} is inside the source folder {src.absolute()}: a later prepare would read its crops "
            "as source images; choose a --dst outside --src"
        )
    if dst_real in src_real.parents:
        raise CtsegError(f"destination {dst} would contain the source folder {src.absolute()}; choose another --dst")


@contextlib.contextmanager
def writing(dst: Path) -> Iterator[None]:
    """An ``OSError`` of the driver's own writes (folders, manifest, rename) as one line naming ``dst``."""
    try:
        yield
    except OSError as err:
        raise CtsegError(write_error(dst, err)) from None


def make_parents(folder: Path) -> list[Path]:
    """``mkdir -p folder``; returns the folders it created, deepest first (to remove them again on failure)."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    return missing


def discard(tmp: Path | None, created: Sequence[Path]) -> None:
    """Remove what a failed prepare wrote: its temporary folder and the (empty) folders it made above ``dst``."""
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)
    for folder in created:
        try:
            folder.rmdir()
        except OSError:
            break  # not empty (another prepare's, or the old dst a kill left) or already gone
