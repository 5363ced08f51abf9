"""Blocks of ``ctseg vectorize`` polygonised in worker processes (``--workers N``).

GDAL's polygonize, through :func:`rasterio.features.shapes`, holds Python's GIL, so threads do not run two blocks
at once; processes do. Each worker opens the class raster (and the statistics rasters) itself and runs
:func:`ctseg.vectorize.blocks.block_parts` on the windows it is sent. The polygons come back as coordinate arrays
(:func:`shapely.to_ragged_array`: one float64 array of vertices and two of offsets per batch, not one pickled
object per polygon) and are rebuilt with :func:`shapely.from_ragged_array`, vertex for vertex. The main process
takes the results in the order of the blocks and merges the polygons cut by block edges as it does without
workers (:func:`ctseg.vectorize.blocks.stream_parts`), so the output is the same file whatever the number of
workers.

Each worker is a fresh interpreter, ``python -m ctseg.vectorize.workers``, that imports only numpy, rasterio and
shapely: nothing of the caller is re-run (unlike ``multiprocessing``'s spawn, which re-imports the caller's
script, so a script without an ``if __name__ == "__main__"`` guard would break) and nothing is forked (safe beside
threads the caller holds, e.g. torch's under ``ctseg predict --vector``). Blocks go to the workers in turn and
their results are read back in the same turn, ``AHEAD`` blocks per worker in flight at most, so memory stays
bounded by a few blocks. Messages are length-prefixed pickles over the worker's stdin and stdout (between two
processes of this run only; no file is unpickled). The workers' start-up, ~0.3 s, is paid in parallel. A raster
of fewer than :data:`MIN_BLOCKS` blocks is done in the calling process unless the caller asks for workers.
"""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from ctseg.errors import CtsegError

#: With the default worker count, rasters of fewer blocks than this are vectorised in the calling process (the
#: workers' start-up would cost more than they save).
MIN_BLOCKS = 16
#: At most this many workers by default.
MAX_DEFAULT_WORKERS = 8
#: Blocks sent to one worker ahead of the one being read.
AHEAD = 3

__all__ = ["MAX_DEFAULT_WORKERS", "MIN_BLOCKS", "BlockPool", "resolve_workers"]


def resolve_workers(workers: int | None, n_blocks: int) -> int:
    """The number of worker processes to use for ``n_blocks`` blocks (1: none, the calling process does it).

    ``None``: the CPUs this process may run on (at most :data:`MAX_DEFAULT_WORKERS`), from :data:`MIN_BLOCKS`
    blocks on; ``0`` or ``1``: none; ``N``: ``N`` workers (no more than there are blocks)."""
    if workers is None:
        if n_blocks < MIN_BLOCKS:
            return 1
        try:
            cpus = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            cpus = os.cpu_count() or 1
        return max(1, min(cpus, MAX_DEFAULT_WORKERS, n_blocks))
    check_workers(workers)
    return max(1, min(int(workers), n_blocks))


def check_workers(workers: object, flag: str = "--workers") -> None:
    """A one-line :class:`CtsegError` naming ``flag`` unless ``workers`` is a whole number ``>= 0``."""
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 0:
        raise CtsegError(f"{flag} {workers!r}: give a number of processes >= 0 (0 or 1: none)")


# --------------------------------------------------------------------------------------------- messages
def _send(stream, message) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(data)))
    stream.write(data)
    stream.flush()


def _receive(stream):
    """The next message, or ``None`` at the end of the stream."""
    head = stream.read(8)
    if len(head) < 8:
        return None
    (size,) = struct.unpack("<Q", head)
    data = stream.read(size)
    if len(data) < size:
        return None
    return pickle.loads(data)


def _encode(polys: np.ndarray) -> tuple:
    """Polygons → ``(geometry type, vertices, offsets)`` (empty tuple for none)."""
    import shapely

    if not len(polys):
        return ()
    geom_type, coords, offsets = shapely.to_ragged_array(polys)
    return int(geom_type), coords, offsets


def _decode(encoded: tuple) -> np.ndarray:
    import shapely

    if not encoded:
        return np.empty(0, dtype=object)
    geom_type, coords, offsets = encoded
    return shapely.from_ragged_array(shapely.GeometryType(geom_type), coords, offsets)


# ----------------------------------------------------------------------------------------------- worker
def _serve(inp, out) -> None:
    """The worker's loop: the first message names the rasters and the caller's VRT source policy
    (:mod:`ctseg.safety.raster_policy`), each next one is a block window; every window is
    answered with ``("ok", parts)``, ``("error", one line)`` (a :class:`CtsegError`) or ``("crash", traceback)``."""
    import traceback
    import warnings

    from ctseg.safety.rasters import SourcePolicy, open_raster, set_policy
    from ctseg.vectorize.blocks import block_parts
    from ctseg.vectorize.stats import PixelStats

    warnings.simplefilter("ignore")  # notes on the rasters are the calling process's to give
    first = _receive(inp)
    if first is None:  # no caller (run by hand, or the caller is gone)
        return
    path, confidence_tif, entropy_tif, indices, (remote, outside) = first
    set_policy(SourcePolicy(allow_remote=remote, allow_outside=outside))  # what the caller allowed, no more
    src = stats = None
    failure = None
    try:
        src = open_raster(Path(path))
        stats = PixelStats(src, Path(path), confidence_tif, entropy_tif)
    except CtsegError as err:
        failure = ("error", str(err))
    except Exception:  # noqa: BLE001 - sent to the caller, who raises it
        failure = ("crash", traceback.format_exc())
    while (window := _receive(inp)) is not None:
        if failure is not None:
            _send(out, failure)
            continue
        try:
            parts = block_parts(src, stats, indices, window)
            reply = ("ok", [(i, _encode(p), rows, _encode(bp), brows) for i, p, rows, bp, brows in parts])
        except CtsegError as err:
            reply = ("error", str(err))
        except Exception:  # noqa: BLE001
            reply = ("crash", traceback.format_exc())
        _send(out, reply)


def main() -> None:
    """``python -m ctseg.vectorize.workers``: serve blocks on stdin / stdout (anything printed goes to stderr)."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    try:
        _serve(sys.stdin.buffer, out)
    except (BrokenPipeError, ConnectionResetError, KeyboardInterrupt):  # the caller stopped reading: end quietly
        pass


# ----------------------------------------------------------------------------------------------- caller
class BlockPool:
    """``workers`` processes running :func:`~ctseg.vectorize.blocks.block_parts` on the class raster ``path``
    (a context manager; the processes end on exit, also after an error)."""

    def __init__(self, path: os.PathLike | str, confidence_tif, entropy_tif, indices: list[int], workers: int) -> None:
        import ctseg
        from ctseg.safety.rasters import current_policy

        policy = current_policy()  # --allow-remote / --allow-outside, as in force in the caller
        env = dict(os.environ)
        root = str(Path(ctseg.__file__).resolve().parent.parent)  # the ctseg this process runs
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        args = (
            str(path),
            None if confidence_tif is None else str(confidence_tif),
            None if entropy_tif is None else str(entropy_tif),
            list(indices),
            (policy.allow_remote, policy.allow_outside),
        )
        self._procs: list[subprocess.Popen] = []
        try:
            for _ in range(workers):
                proc = subprocess.Popen(
                    [sys.executable, "-m", "ctseg.vectorize.workers"],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                )  # fmt: skip
                self._procs.append(proc)
                _send(proc.stdin, args)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> BlockPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """End the workers: end of their input, and of their output (a worker still sending a block that will not
        be read stops at once), then a kill for any still running after a few seconds."""
        for proc in self._procs:
            for stream in (proc.stdin, proc.stdout):
                try:
                    stream.close()
                except OSError:
                    pass
        for proc in self._procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs = []

    def map(self, windows: Iterable[tuple[int, int, int, int]]) -> Iterator[list]:
        """:func:`~ctseg.vectorize.blocks.block_parts` of each of ``windows``, in their order (block ``i`` goes
        to worker ``i mod workers``; at most :data:`AHEAD` blocks per worker ahead of the caller)."""
        n = len(self._procs)
        windows = iter(windows)
        sent: deque[subprocess.Popen] = deque()  # the worker of each block sent and not yet read, in order
        turn = 0

        def send_next() -> bool:
            nonlocal turn
            for window in windows:
                proc = self._procs[turn % n]
                turn += 1
                _send(proc.stdin, window)
                sent.append(proc)
                return True
            return False

        while len(sent) < AHEAD * n and send_next():
            pass
        while sent:
            proc = sent.popleft()
            reply = _receive(proc.stdout)
            if reply is None:
                code = proc.wait()
                raise RuntimeError(f"a ctseg vectorize worker ended (exit code {code}) before answering")
            kind, body = reply
            if kind == "error":
                raise CtsegError(body)
            if kind == "crash":
                raise RuntimeError(f"a ctseg vectorize worker failed:\n{body}")
            send_next()
            yield [(i, _decode(p), rows, _decode(bp), brows) for i, p, rows, bp, brows in body]


if __name__ == "__main__":
    main()
