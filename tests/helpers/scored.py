"""Test helper (not a test): a prepared split's evaluation crops put back together from their scored boxes."""

from __future__ import annotations

import numpy as np

from ctseg.data import PreparedDataset
from ctseg.data.definitions import IGNORE_INDEX


def assemble(ds: PreparedDataset) -> dict[str, np.ndarray]:
    """Each tile's (frame's) mask rebuilt from the scored boxes of its evaluation crops; asserts each pixel is
    scored once."""
    sizes = {t["tile"]: (t["height"], t["width"]) for t in ds.manifest["tiles"]}
    out, hits = {}, {}
    for i, record in enumerate(ds.records):
        tile, (row, col) = record["tile"], record["offset"]
        top, left, bottom, right = record["scored"]
        full = out.setdefault(tile, np.full(sizes[tile], 254, np.uint8))
        count = hits.setdefault(tile, np.zeros(sizes[tile], np.int64))
        mask = ds[i]["mask"].numpy()
        assert (mask[:top] == IGNORE_INDEX).all() and (mask[:, :left] == IGNORE_INDEX).all()
        full[row + top : row + bottom, col + left : col + right] = mask[top:bottom, left:right]
        count[row + top : row + bottom, col + left : col + right] += 1
    for tile, count in hits.items():
        assert (count == 1).all(), f"{tile}: pixels scored {sorted(set(count.ravel()))} times"
    return out
