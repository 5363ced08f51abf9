"""Tiny UAVid look-alikes: frames in the release's exact layout, naming and format.

``uavid_{train,val,test}/seqN/Images/000000.png`` (RGB) with ``seqN/Labels/000000.png`` (RGB colour labels;
test sequences without Labels); ``uavid_v1.5_official_release_image.zip`` holds them in a folder of its name.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ctseg.data.sets.uavid import UAVID_COLORS

PALETTE = np.asarray(UAVID_COLORS, np.uint8)
#: split folder → sequence numbers (the release: 20 train, 7 val and 15 test sequences).
RELEASE = {"uavid_train": (1, 2), "uavid_val": (16,), "uavid_test": (21,)}
FRAMES = ("000000", "000100")
SIZE = (70, 100)  # (H, W); UAVid's are 2160 × 3840 (or × 4096)


def write_uavid(root, layout=RELEASE, frames=FRAMES, size=SIZE, seed=0) -> dict[str, np.ndarray]:
    """Write the layout under ``root``; returns frame id → class indices (H, W) of every labelled frame."""
    rng = np.random.default_rng(seed)
    out = {}
    for folder, numbers in layout.items():
        for n in numbers:
            seq = root / folder / f"seq{n}"
            for frame in frames:
                classes = rng.integers(0, 8, size, dtype=np.uint8)
                classes[10:30, 20:60] = 0  # a building
                image = np.stack([classes * 25, rng.integers(0, 256, size), 200 - classes * 20], -1).astype(np.uint8)
                (seq / "Images").mkdir(parents=True, exist_ok=True)
                Image.fromarray(image, "RGB").save(seq / "Images" / f"{frame}.png")
                if "test" not in folder:
                    (seq / "Labels").mkdir(parents=True, exist_ok=True)
                    Image.fromarray(PALETTE[classes], "RGB").save(seq / "Labels" / f"{frame}.png")
                    out[f"seq{n}/{frame}"] = classes
    return out
