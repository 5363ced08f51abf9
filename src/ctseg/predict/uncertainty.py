"""``ctseg predict --uncertainty`` / ``--uncertain-windows N``: where the model is unsure, as a raster and as a
short list of places for a labeller.

* ``<stem>_entropy.tif``: the per-pixel normalised entropy H = −Σ_k p_k log p_k / log K of the blended (and
  TTA-averaged) probabilities (:mod:`ctseg.inference.entropy`), in [0, 1] — 0 where the model is sure, 1 where
  every class is equally likely. A COG like the probabilities' (:class:`ctseg.predict.write.StreamedCOG`): one
  band stored as float16 (a uint8 scale would have no value left for nodata between 0 and 1 inclusive), NaN at
  nodata, average overviews, the tag ``CTSEG_ENTROPY`` holding the formula. Streamed row by row with the other
  rasters. With ``--tta`` a second band, ``tta_variance`` (tag ``CTSEG_TTA_VARIANCE``): how much the three
  flipped passes disagree, V = (1/T) Σ_t Σ_k (p_tk − p̄_k)² per window, blended with the windows' weights
  (:func:`ctseg.inference.blend.blend_windows`), in [0, 2/3] — 0 where the flips agree.
* ``<stem>_uncertain.gpkg``: the N cells of highest mean entropy as polygons in the map's CRS. The cells are
  fixed squares of the window size on the raster's grid, from its top-left corner (those at the right and bottom
  edges cut to the raster); a cell's mean is over its valid pixels, as stored in the entropy raster (float16),
  and cells without any are left out. Attributes: ``rank`` (1 = most uncertain; equal means keep row-major
  order), ``mean_entropy``, and one column per class name: the share of the cell's valid pixels predicted as
  that class. Memory: one row of cells' sums and a heap of N cells, whatever the raster's size.
"""

from __future__ import annotations

import heapq
import os
from pathlib import Path

import numpy as np

from ctseg.predict.write import StreamedCOG

__all__ = ["ENTROPY_TAG", "TTA_VARIANCE_TAG", "TopCells", "entropy_writer"]

#: Metadata tag of ``<stem>_entropy.tif``: what its values are.
ENTROPY_TAG = "CTSEG_ENTROPY"
#: Metadata tag of its second band (``--tta``): what the TTA variance is.
TTA_VARIANCE_TAG = "CTSEG_TTA_VARIANCE"


def entropy_writer(
    target: Path, height: int, width: int, georef: dict, nodata: bool, workdir: Path | None, tta: bool = False
):
    """The float16 entropy COG (module docstring); ``nodata``: whether the input has nodata (NaN there);
    ``tta``: with the TTA variance as band 2."""
    tags = {ENTROPY_TAG: "-sum_k p_k log p_k / log K"}
    if tta:
        tags[TTA_VARIANCE_TAG] = "1/T sum_t sum_k (p_tk - mean_t p_tk)^2 per window, blended; T = 3 flips"
    return StreamedCOG(
        target, height=height, width=width, count=2 if tta else 1, dtype="float32", float16=True,
        crs=georef.get("crs"), transform=georef.get("transform"), nodata=float("nan") if nodata else None,
        tags=tags, descriptions=["entropy", "tta_variance"] if tta else ["entropy"], resampling="average",
        workdir=workdir,
    )  # fmt: skip


class TopCells:
    """The ``n`` cells of side ``cell`` with the highest mean entropy, fed rows in order (module docstring)."""

    def __init__(self, n: int, height: int, width: int, cell: int, classes) -> None:
        self.n, self.height, self.width, self.cell = int(n), int(height), int(width), int(cell)
        self.classes = list(classes)
        self.ncx = -(-self.width // self.cell)
        self._starts = np.arange(0, self.width, self.cell)
        self._heap: list[tuple[float, int, int, int, np.ndarray]] = []  # (mean, -order, cy, cx, class counts)
        self._row = 0
        self._reset()

    def _reset(self) -> None:
        self._sum = np.zeros(self.ncx, np.float64)
        self._count = np.zeros(self.ncx, np.int64)
        self._classes = np.zeros((self.ncx, len(self.classes)), np.int64)

    def add(self, top: int, entropy: np.ndarray, classes: np.ndarray) -> None:
        """Rows ``[top, top + n)``: ``entropy`` float (NaN at nodata), ``classes`` uint8 (255 at nodata)."""
        if top != self._row:
            raise ValueError(f"rows from {top} do not follow row {self._row}")
        done = 0
        while done < entropy.shape[0]:
            stop = min(entropy.shape[0], done + self.cell - (top + done) % self.cell)
            self._accumulate(entropy[done:stop], classes[done:stop])
            self._row = top + stop
            if self._row % self.cell == 0 or self._row == self.height:
                self._close((self._row - 1) // self.cell)
            done = stop

    def _accumulate(self, entropy: np.ndarray, classes: np.ndarray) -> None:
        valid = ~np.isnan(entropy)
        self._sum += np.add.reduceat(np.where(valid, entropy, 0).astype(np.float64).sum(0), self._starts)
        self._count += np.add.reduceat(valid.sum(0), self._starts)
        k = len(self.classes)
        cols = np.broadcast_to(np.arange(self.width) // self.cell, classes.shape)
        ok = valid & (classes < k)
        flat = np.bincount(cols[ok] * k + classes[ok], minlength=self.ncx * k)
        self._classes += flat.reshape(self.ncx, k)

    def _close(self, cy: int) -> None:
        for cx in np.flatnonzero(self._count):
            mean = float(self._sum[cx] / self._count[cx])
            item = (mean, -(cy * self.ncx + int(cx)), cy, int(cx), self._classes[cx] / self._count[cx])
            if len(self._heap) < self.n:
                heapq.heappush(self._heap, item)
            elif item[:2] > self._heap[0][:2]:
                heapq.heapreplace(self._heap, item)
        self._reset()

    def ranked(self) -> list[tuple[int, float, tuple[int, int, int, int], np.ndarray]]:
        """``(rank, mean, (col0, row0, col1, row1) in pixels, class shares)``, most uncertain first."""
        out = []
        for rank, (mean, _, cy, cx, shares) in enumerate(sorted(self._heap, key=lambda t: t[:2], reverse=True), 1):
            x0, y0 = cx * self.cell, cy * self.cell
            box = (x0, y0, min(x0 + self.cell, self.width), min(y0 + self.cell, self.height))
            out.append((rank, mean, box, shares))
        return out

    def write(self, out: str | os.PathLike, georef: dict) -> Path:
        """The ranked cells as a GeoPackage layer of polygons in ``georef``'s CRS (its ``transform``: pixel →
        map)."""
        import pyogrio.raw
        import shapely

        from ctseg.io import set_default_mode

        transform, crs = georef.get("transform"), georef.get("crs")
        geoms, rows = [], {"rank": [], "mean_entropy": []}
        names = [n if n not in rows else f"share_{n}" for n in self.classes]
        shares: list[list[float]] = [[] for _ in names]
        for rank, mean, (x0, y0, x1, y1), share in self.ranked():
            corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
            geoms.append(shapely.Polygon([transform @ c if transform is not None else c for c in corners]))
            rows["rank"].append(rank)
            rows["mean_entropy"].append(mean)
            for i, s in enumerate(share):
                shares[i].append(float(s))
        wkb = shapely.to_wkb(np.array(geoms, dtype=object)) if geoms else np.array([], dtype=object)
        data = [np.array(rows["rank"], np.int32), np.array(rows["mean_entropy"], np.float64)]
        data += [np.array(s, np.float64) for s in shares]
        out = Path(out)
        pyogrio.raw.write(
            str(out), wkb, data, ["rank", "mean_entropy", *names], layer=out.stem, driver="GPKG",
            geometry_type="Polygon", crs=crs.to_wkt() if crs is not None else None, promote_to_multi=False,
        )  # fmt: skip
        set_default_mode(out)
        return out
