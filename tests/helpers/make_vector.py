"""A tiny generated city for ``ctseg prepare vector``: UTM GeoTIFF scenes and building footprints + roads as polygons
in EPSG:4326, with a class attribute, and ``classes.yaml``::

    ROOT/scenes/scene_0.tif   3-band uint8, EPSG:32633, 0.5 m pixels (scene_1 beside it, 20 m east)
    ROOT/labels.gpkg          one layer "labels": polygons in EPSG:4326, field "class" = building | road
    ROOT/classes.yaml         background (no value), building, road — later classes win: a road over a building

:func:`make_vector` returns a :class:`City`: the scenes' grids and every polygon in both CRSs, in file order, so
tests can check the prepared masks by a route of their own. The images are drawn from the polygons (grey
ground, red-ish roofs, yellow-ish roads, noise), so a model can learn something from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: The scenes' CRS, pixel size (m) and the top-left corner of scene_0.
UTM = "EPSG:32633"
PIXEL = 0.5
ORIGIN = (500000.0, 6000000.0)
#: stem → (height, width) in pixels.
SCENES = {"scene_0": (192, 256), "scene_1": (128, 256)}
#: Gap between two scenes (m).
GAP = 20.0
CLASSES_YAML = """\
name: city
classes:
  - {name: background, color: "#d9d9d9"}
  - {name: building, value: building, color: "#e31a1c"}
  - {name: road, value: road, color: "#ffff99"}
background: background
"""
#: The same classes without a background: pixels no polygon covers are ignore.
NO_BACKGROUND_YAML = """\
name: city
classes:
  - {name: building, value: building}
  - {name: road, value: road}
"""
_DRAW = {"building": (180, 60, 50), "road": (230, 220, 120)}


@dataclass
class City:
    """What :func:`make_vector` wrote: scene paths and grids, the polygons (UTM and EPSG:4326) with their class."""

    root: Path
    scenes: dict[str, Path]
    grids: dict[str, tuple[float, float, int, int]]  # stem → (x0, y0, height, width); pixels PIXEL m
    utm: list = field(default_factory=list)  # shapely polygons in EPSG:32633, file order
    lonlat: list = field(default_factory=list)  # the same in EPSG:4326, as written
    classes: list[str] = field(default_factory=list)

    @property
    def labels(self) -> Path:
        return self.root / "labels.gpkg"

    @property
    def classes_file(self) -> Path:
        return self.root / "classes.yaml"


def to_lonlat(geoms):
    """UTM 33N polygons → EPSG:4326 (lon, lat), vertex by vertex with pyproj."""
    import pyproj
    import shapely

    move = pyproj.Transformer.from_crs(UTM, "EPSG:4326", always_xy=True)
    return list(shapely.transform(np.array(geoms, dtype=object), lambda xy: np.column_stack(move.transform(*xy.T))))


def write_labels(path: Path, geoms, values, name: str = "class", crs: str | None = "EPSG:4326", driver=None) -> Path:
    """Polygons with one attribute ``name`` (strings or numbers) as a vector file (driver from the suffix)."""
    import pyogrio.raw
    import shapely

    drivers = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".shp": "ESRI Shapefile", ".fgb": "FlatGeobuf"}
    values = np.array(values, dtype=object if isinstance(values[0], str) else None)
    pyogrio.raw.write(path, np.array(shapely.to_wkb(geoms), dtype=object), [values], [name],
                      geometry_type="Unknown", crs=crs, driver=driver or drivers[path.suffix],
                      **({"layer": "labels"} if path.suffix == ".gpkg" else {}))  # fmt: skip
    return path


def _rectangle(rng: np.random.Generator, cx: float, cy: float, lo: float = 6.0, hi: float = 16.0):
    import shapely

    w, h, angle = rng.uniform(lo, hi), rng.uniform(lo, hi), rng.uniform(0, np.pi)
    corners = np.array([(-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2)])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return shapely.Polygon(corners @ rot.T + (cx, cy))


def _road(x0: float, y0: float, x1: float, y1: float, width: float = 7.0):
    import shapely

    return shapely.LineString([(x0, y0), (x1, y1)]).buffer(width / 2, cap_style="flat")


def make_vector(root: Path, scenes: dict[str, tuple[int, int]] = SCENES, buildings: int = 40, seed: int = 0) -> City:
    """Write the scenes, ``labels.gpkg`` and ``classes.yaml`` under ``root`` (module docstring)."""
    import rasterio
    import shapely
    from rasterio.transform import from_origin

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "scenes").mkdir()
    city = City(root, {}, {})
    x = ORIGIN[0]
    for stem, (h, w) in scenes.items():
        city.grids[stem] = (x, ORIGIN[1], h, w)
        x += w * PIXEL + GAP
    west, east = ORIGIN[0], x - GAP
    south = ORIGIN[1] - max(h for h, _ in scenes.values()) * PIXEL
    # two roads across every scene and one north-south through scene_0; buildings anywhere, a few over the roads
    mid = (ORIGIN[1] + south) / 2
    roads = [_road(west - 10, mid + 7, east + 10, mid - 5), _road(west + 40, ORIGIN[1] + 10, west + 55, south - 10)]
    houses = [_rectangle(rng, rng.uniform(west - 5, east + 5), rng.uniform(south - 5, ORIGIN[1] + 5))
              for _ in range(buildings)]  # fmt: skip
    houses.append(_rectangle(rng, west + 47, mid + 1))  # on the crossing: the roads win there
    city.utm = houses[: buildings // 2] + roads[:1] + houses[buildings // 2 :] + roads[1:]
    city.classes = ["building"] * (buildings // 2) + ["road"] + ["building"] * (len(houses) - buildings // 2) + ["road"]
    city.lonlat = to_lonlat(city.utm)
    write_labels(root / "labels.gpkg", city.lonlat, city.classes)
    (root / "classes.yaml").write_text(CLASSES_YAML)
    for stem, (x0, y0, h, w) in city.grids.items():
        xs, ys = np.meshgrid(x0 + (np.arange(w) + 0.5) * PIXEL, y0 - (np.arange(h) + 0.5) * PIXEL)
        image = np.full((h, w, 3), (120, 130, 110), dtype=np.float64)
        for kind in ("building", "road"):
            for geom, cls in zip(city.utm, city.classes, strict=True):
                if cls == kind:
                    image[shapely.contains_xy(geom, xs, ys)] = _DRAW[kind]
        image = np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)
        path = root / "scenes" / f"{stem}.tif"
        with rasterio.open(path, "w", driver="GTiff", height=h, width=w, count=3, dtype="uint8", crs=UTM,
                           transform=from_origin(x0, y0, PIXEL, PIXEL)) as dst:  # fmt: skip
            dst.write(np.moveaxis(image, -1, 0))
        city.scenes[stem] = path
    return city


if __name__ == "__main__":  # docs/vector-labels.md: python tests/helpers/make_vector.py demo_city
    import argparse

    parser = argparse.ArgumentParser(description="write a tiny city: UTM GeoTIFF scenes, EPSG:4326 polygons")
    parser.add_argument("out", type=Path)
    parser.add_argument("--buildings", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.out.exists():
        parser.error(f"{args.out} exists; choose a new folder")
    city = make_vector(args.out, buildings=args.buildings, seed=args.seed)
    print(f"wrote {len(city.scenes)} scenes, {len(city.utm)} polygons (labels.gpkg) and classes.yaml to {args.out}")
