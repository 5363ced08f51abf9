"""Tiny LoveDA look-alikes: PNGs in the release's exact layout, naming and format.

``{Train,Val,Test}/{Urban,Rural}/images_png/N.png`` (RGB) with ``masks_png/N.png`` (8-bit grey, values 0–7; Test
without masks), numbered as the release numbers its images; ``Train.zip`` / ``Val.zip`` / ``Test.zip`` hold
these folders as they are.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

#: (split folder, domain) → image numbers, as in the release (Train Rural 0–1365, Train Urban 1366–2521, …).
RELEASE = {
    ("Train", "Rural"): (0, 1),
    ("Train", "Urban"): (1366,),
    ("Val", "Rural"): (2522,),
    ("Val", "Urban"): (3514, 3515),
    ("Test", "Rural"): (4191,),
}
SIZE = (80, 96)  # (H, W); LoveDA's are 1024 × 1024


def write_loveda(root, layout=RELEASE, size=SIZE, seed=0) -> dict[str, np.ndarray]:
    """Write the layout under ``root``; returns tile id → mask values (H, W) uint8 of every image with a mask."""
    rng = np.random.default_rng(seed)
    values = {}
    for (split, domain), numbers in layout.items():
        for n in numbers:
            mask = rng.integers(0, 8, size, dtype=np.uint8)  # 0 = no-data, 1–7 = the classes
            mask[:8, :8] = 0
            mask[8:20, 8:30] = 2  # a building block
            image = (np.stack([mask * 30, 255 - mask * 20, rng.integers(0, 256, size)], -1)).astype(np.uint8)
            folder = root / split / domain
            (folder / "images_png").mkdir(parents=True, exist_ok=True)
            Image.fromarray(image, "RGB").save(folder / "images_png" / f"{n}.png")
            if split != "Test":
                (folder / "masks_png").mkdir(parents=True, exist_ok=True)
                Image.fromarray(mask, "L").save(folder / "masks_png" / f"{n}.png")
                values[f"{domain.lower()}/{n}"] = mask
    return values
