"""A tiny "city" for the README's mapping example: a grid of adjacent 4-band uint16 GeoTIFF tiles (the layout of
``make_folder.make_uint16_folder``, nodata 0) and a VRT mosaic over them, as ``gdalbuildvrt city.vrt *.tif``
writes it (simple sources).

    python tests/helpers/make_city.py city --grid 2 --size 256     # city/tile_r0_c0.tif … + city/city.vrt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

PIXEL = 0.5  # metres
ORIGIN = (500000.0, 6000000.0)  # UTM 33N


def write_vrt(path: Path, tiles: list[tuple[Path, int, int]], height: int, width: int, bands: int, size: int) -> Path:
    """A VRT of ``tiles`` (file, row offset, col offset in pixels) covering ``height`` × ``width``."""
    from rasterio.crs import CRS

    wkt = CRS.from_epsg(32633).to_wkt()
    parts = [f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">', f"  <SRS>{wkt}</SRS>",
             f"  <GeoTransform>{ORIGIN[0]}, {PIXEL}, 0, {ORIGIN[1]}, 0, {-PIXEL}</GeoTransform>"]  # fmt: skip
    for b in range(1, bands + 1):
        parts.append(f'  <VRTRasterBand dataType="UInt16" band="{b}"><NoDataValue>0</NoDataValue>')
        for tile, row, col in tiles:
            parts.append(
                f'    <SimpleSource><SourceFilename relativeToVRT="1">{tile.name}</SourceFilename>'
                f"<SourceBand>{b}</SourceBand>"
                f'<SrcRect xOff="0" yOff="0" xSize="{size}" ySize="{size}"/>'
                f'<DstRect xOff="{col}" yOff="{row}" xSize="{size}" ySize="{size}"/></SimpleSource>'
            )
        parts.append("  </VRTRasterBand>")
    parts.append("</VRTDataset>")
    path.write_text("\n".join(parts) + "\n")
    return path


def make_city(out: Path, grid: int = 2, size: int = 256, bands: int = 4, seed: int = 0) -> Path:
    """Write ``grid`` × ``grid`` tiles of ``size`` px into ``out`` and ``out/city.vrt``; returns the VRT."""
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(seed)
    out.mkdir(parents=True)
    tiles = []
    for r in range(grid):
        for c in range(grid):
            image = rng.integers(1, 60000, (bands, size, size), dtype=np.uint16)
            path = out / f"tile_r{r}_c{c}.tif"
            transform = from_origin(ORIGIN[0] + c * size * PIXEL, ORIGIN[1] - r * size * PIXEL, PIXEL, PIXEL)
            with rasterio.open(path, "w", driver="GTiff", height=size, width=size, count=bands, dtype="uint16",
                               nodata=0, crs="EPSG:32633", transform=transform, tiled=True) as dst:  # fmt: skip
                dst.write(image)
            tiles.append((path, r * size, c * size))
    return write_vrt(out / "city.vrt", tiles, grid * size, grid * size, bands, size)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="write a tiny tiled city (4-band uint16 GeoTIFFs + a VRT)")
    parser.add_argument("out", type=Path)
    parser.add_argument("--grid", type=int, default=2)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    if args.out.exists():
        parser.error(f"{args.out} exists; choose a new folder")
    print(f"wrote {make_city(args.out, args.grid, args.size)}")
