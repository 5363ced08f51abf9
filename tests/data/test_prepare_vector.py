"""``ctseg prepare vector``: polygons in EPSG:4326 rasterised on UTM scenes, checked against a route of the test's
own (pyproj for the reprojection, shapely's point-in-polygon on pixel centres for the rasterisation), the class
order, background / ignore, ``--extent``, ``--all-touched``, the sources (folder, list, VRT, four vector formats),
the error lines and a prepared folder the folder data module reads."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pyproj
import pytest
import shapely
from helpers.make_vector import NO_BACKGROUND_YAML, PIXEL, UTM, City, make_vector, to_lonlat, write_labels
from PIL import Image

from ctseg.cli.entry import main
from ctseg.data.prepare import prepare_dataset

#: A pixel centre this close to a polygon's edge (in pixels) may fall either way: GDAL and shapely round apart.
EDGE = 1e-3


def _prepare(city: City, dst: Path, **kwargs) -> dict:
    kwargs.setdefault("classes", city.classes_file)
    kwargs.setdefault("labels", city.labels)
    kwargs.setdefault("class_field", "class")
    src = kwargs.pop("src", city.root / "scenes")
    prepare_dataset("vector", src, dst, crop=kwargs.pop("crop", 64), workers=1, progress=False, **kwargs)
    return json.loads((dst / "manifest.json").read_text())


def _utm(city: City) -> list:
    """The polygons as written (EPSG:4326) carried to the scenes' CRS by pyproj — not the library's route."""
    move = pyproj.Transformer.from_crs("EPSG:4326", UTM, always_xy=True)
    return list(shapely.transform(np.array(city.lonlat, dtype=object),
                                  lambda xy: np.column_stack(move.transform(*xy.T))))  # fmt: skip


def _centres(city: City, tile: str, row: int, col: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    x0, y0, _, _ = city.grids[tile]
    return np.meshgrid(x0 + (col + np.arange(size) + 0.5) * PIXEL, y0 - (row + np.arange(size) + 0.5) * PIXEL)


def _expected(city, polys, tile, row, col, size, order, fill) -> tuple[np.ndarray, np.ndarray]:
    """(class map by centre-in-polygon, later class in ``order`` winning; pixels whose centre is within EDGE of an
    edge) of the window; ``fill`` where no polygon is."""
    xs, ys = _centres(city, tile, row, col, size)
    out = np.full(xs.shape, fill, dtype=np.uint8)
    near = np.zeros(xs.shape, dtype=bool)
    for index, name in enumerate(order):
        for poly, cls in zip(polys, city.classes, strict=True):
            if cls == name:
                out[shapely.contains_xy(poly, xs, ys)] = index
    for poly in polys:
        near |= shapely.dwithin(poly.boundary, shapely.points(xs, ys), EDGE * PIXEL)
    return out, near


def _crops(dst: Path, manifest: dict):
    for record in manifest["crops"]:
        yield record, np.array(Image.open(dst / record["mask"]))


def _inside(record: dict, size: int) -> np.ndarray:
    """Pixels of the crop the mask scores: its scored box (evaluation splits), inside the image (padding out)."""
    keep = np.zeros((size, size), dtype=bool)
    t, left, b, r = record.get("scored", [0, 0, size, size])
    keep[t:b, left:r] = True
    return keep


@pytest.fixture(scope="module")
def city(tmp_path_factory) -> City:
    return make_vector(tmp_path_factory.mktemp("vector") / "city")


@pytest.fixture(scope="module")
def prepared(city, tmp_path_factory) -> tuple[Path, dict]:
    dst = tmp_path_factory.mktemp("vector-out") / "city"
    return dst, _prepare(city, dst)


# --------------------------------------------------------------------------------------------------- the masks
def test_masks_match_an_independent_reprojection_and_rasterisation(city, prepared):
    dst, manifest = prepared
    polys = _utm(city)
    compared = edge = 0
    for record, mask in _crops(dst, manifest):
        row, col = record["offset"]
        expected, near = _expected(city, polys, record["tile"], row, col, 64, ["background", "building", "road"], 0)
        h, w = city.grids[record["tile"]][2:]
        keep = _inside(record, 64)
        keep[h - row :] = keep[:, w - col :] = False  # beyond the image: padding (no crop here is)
        assert (mask[~keep] == 255).all()
        differ = keep & (mask != expected)
        assert not (differ & ~near).any(), (record["image"], np.argwhere(differ & ~near)[:5])
        compared += int(keep.sum()) if "scored" in record else 0
        edge += int(differ.sum())
        image = np.array(Image.open(dst / record["image"]))
        import rasterio

        with rasterio.open(city.scenes[record["tile"]]) as src:
            source = np.moveaxis(src.read(window=((row, row + 64), (col, col + 64))), 0, -1)
        np.testing.assert_array_equal(image, source)
    (held,) = manifest["settings"]["splits"]["val"]
    assert compared == np.prod(city.grids[held][2:])  # every pixel of the held-out scene scored once
    assert edge <= 5, edge  # pixel centres on an edge: none or nearly none


def test_the_manifest_records_the_labels_and_a_prepared_folder_loads(city, prepared):
    dst, manifest = prepared
    options = manifest["settings"]["options"]
    assert options["labels"] == str(city.labels.absolute()) and options["class_field"] == "class"
    assert len(options["labels_sha256"]) == 64 and "all_touched" not in options and "extent" not in options
    assert {t["label"] for t in manifest["tiles"]} == {str(city.labels.absolute())}
    assert {t["label_kind"] for t in manifest["tiles"]} == {"vector"}
    info = manifest["dataset"]
    assert info["classes"] == ["background", "building", "road"] and info["name"] == "city"
    assert info["colors"][1] == [0xE3, 0x1A, 0x1C] and info["bands"] == 3 and info["dtype"] == "uint8"
    assert sorted(manifest["settings"]["splits"]) == ["train", "val"]  # one of the two scenes held out
    (train,) = manifest["settings"]["splits"]["train"]
    assert manifest["statistics"]["pixels"] == np.prod(city.grids[train][2:])
    from ctseg.data import FolderDataModule

    dm = FolderDataModule(root=str(dst), batch_size=2, num_workers=0, image_size=64)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 64, 64) and int(batch["mask"].max()) in (2, 255)


def test_a_fit_of_two_steps_on_the_prepared_folder(city, prepared, tmp_path):
    import torch
    from helpers.tiny import tiny_config

    dst, _ = prepared
    data = f"class_path: ctseg.data.FolderDataModule\ninit_args:\n  root: {dst}\n  image_size: 64\n  batch_size: 2\n"
    config = tmp_path / "fit.yaml"
    config.write_text(tiny_config(data=data + "  num_workers: 0\n"))
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["fit", "--config", str(config), "--trainer.default_root_dir", str(tmp_path / "run")]) == 0
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 2 and ckpt["hyper_parameters"]["class_names"] == ["background", "building", "road"]


def test_later_classes_win_and_the_order_is_the_classes_files(city, tmp_path):
    swapped = tmp_path / "swapped.yaml"
    swapped.write_text("classes:\n  - {name: road, value: road}\n  - {name: building, value: building}\n")
    manifest = _prepare(city, tmp_path / "out", classes=swapped, split_tiles={"train": ["scene_0"]})
    polys = _utm(city)
    building = next(p for p, c in zip(polys[::-1], city.classes[::-1], strict=True) if c == "building")  # crossing
    roads = shapely.union_all([p for p, c in zip(polys, city.classes, strict=True) if c == "road"])
    assert shapely.intersection(building, roads).area > 20  # m²: the generator put it on the crossing
    for record, mask in _crops(tmp_path / "out", manifest):
        row, col = record["offset"]
        xs, ys = _centres(city, "scene_0", row, col, 64)
        both = shapely.contains_xy(shapely.intersection(building, roads).buffer(-PIXEL), xs, ys)
        assert (mask[both] == 1).all()  # building (listed last now) over road
        only_road = shapely.contains_xy(roads.buffer(-PIXEL), xs, ys) & ~shapely.contains_xy(
            shapely.union_all([p for p, c in zip(polys, city.classes, strict=True) if c == "building"]).buffer(PIXEL),
            xs, ys)  # fmt: skip
        assert (mask[only_road] == 0).all()
        assert (mask[~shapely.contains_xy(shapely.union_all(polys).buffer(PIXEL), xs, ys)] == 255).all()  # no bg


def test_without_background_uncovered_pixels_are_ignore_and_counted_as_label(city, tmp_path):
    classes = tmp_path / "classes.yaml"
    classes.write_text(NO_BACKGROUND_YAML)
    manifest = _prepare(city, tmp_path / "out", classes=classes)
    polys = _utm(city)
    uncovered = 0
    for record, mask in _crops(tmp_path / "out", manifest):
        row, col = record["offset"]
        expected, near = _expected(city, polys, record["tile"], row, col, 64, ["building", "road"], 255)
        keep = _inside(record, 64)
        assert not (keep & (mask != expected) & ~near).any()
        uncovered += int((keep & (expected == 255)).sum())
    label = sum(row["ignore"]["label"] for row in manifest["summary"].values())
    assert abs(label - uncovered) <= 2 and label > 1000  # the summary's "label" cause: no polygon there


def test_extent_makes_pixels_outside_it_ignore(city, tmp_path):
    x0, y0, h, w = city.grids["scene_0"]
    half = shapely.box(x0 - 50, y0 - h * PIXEL - 50, x0 + 37.3, y0 + 50)  # the west part of scene_0 only
    mercator = pyproj.Transformer.from_crs(UTM, "EPSG:3857", always_xy=True)
    extent = write_labels(tmp_path / "extent.geojson",
                          [shapely.transform(half, lambda xy: np.column_stack(mercator.transform(*xy.T)))], [1],
                          name="id", crs="EPSG:3857")  # fmt: skip
    manifest = _prepare(city, tmp_path / "out", extent=extent)
    assert manifest["settings"]["options"]["extent"] == str(extent.absolute())
    polys = _utm(city)
    for record, mask in _crops(tmp_path / "out", manifest):
        row, col = record["offset"]
        xs, ys = _centres(city, record["tile"], row, col, 64)
        outside = ~shapely.contains_xy(half, xs, ys)
        keep = _inside(record, 64)
        edge = np.abs(xs - (x0 + 37.3)) < EDGE * PIXEL
        assert (mask[keep & outside & ~edge] == 255).all()
        expected, near = _expected(city, polys, record["tile"], row, col, 64, ["background", "building", "road"], 0)
        assert not (keep & ~outside & (mask != expected) & ~near & ~edge).any()
    scene_1 = [m for r, m in _crops(tmp_path / "out", manifest) if r["tile"] == "scene_1"]
    assert scene_1 and all((m == 255).all() for m in scene_1)  # wholly outside the extent


def test_all_touched_burns_the_pixels_polygons_touch(city, tmp_path):
    centre = _prepare(city, tmp_path / "centre", classes=city.classes_file, split_tiles={"train": ["scene_1"]})
    touched = _prepare(city, tmp_path / "touched", all_touched=True, split_tiles={"train": ["scene_1"]})
    assert touched["settings"]["options"]["all_touched"] is True
    polys = _utm(city)
    grown = 0
    for (record, a), (_, b) in zip(_crops(tmp_path / "centre", centre), _crops(tmp_path / "touched", touched),
                                   strict=True):  # fmt: skip
        row, col = record["offset"]
        x0, y0, _, _ = city.grids["scene_1"]
        changed = np.argwhere(a != b)
        for r, c in changed:  # each changed pixel's square meets a polygon of the class it got
            left, top = x0 + (col + c) * PIXEL, y0 - (row + r) * PIXEL
            square = shapely.box(left, top - PIXEL, left + PIXEL, top)
            assert any(shapely.intersects(square, p) for p, cls in zip(polys, city.classes, strict=True)
                       if ["background", "building", "road"].index(cls) == b[r, c]), (r, c)  # fmt: skip
        grown += len(changed)
        # a background pixel in the all-touched mask touches no polygon
        for r, c in np.argwhere(b == 0)[::97]:
            left, top = x0 + (col + c) * PIXEL, y0 - (row + r) * PIXEL
            square = shapely.box(left, top - PIXEL, left + PIXEL, top)
            assert not any(shapely.intersects(square.buffer(-1e-6), p) for p in polys)
    assert grown > 100  # the boundary pixels


# ------------------------------------------------------------------------------------------------- the sources
@pytest.mark.parametrize("suffix", [".geojson", ".shp", ".fgb"])
def test_other_vector_formats_give_the_same_masks(city, prepared, tmp_path, suffix):
    labels = write_labels(tmp_path / f"labels{suffix}", city.lonlat, city.classes)
    manifest = _prepare(city, tmp_path / "out", labels=labels)
    for (record, a), (_, b) in zip(_crops(tmp_path / "out", manifest), _crops(*prepared), strict=True):
        np.testing.assert_array_equal(a, b, err_msg=record["mask"])


def test_a_list_and_a_vrt_as_sources(city, prepared, tmp_path):
    listing = city.root / "images.txt"
    listing.write_text("# the scenes\nscenes/scene_0.tif\n\nscenes/scene_1.tif\n")
    manifest = _prepare(city, tmp_path / "listed", src=listing)
    for (record, a), (_, b) in zip(_crops(tmp_path / "listed", manifest), _crops(*prepared), strict=True):
        np.testing.assert_array_equal(a, b, err_msg=record["mask"])
    # one VRT mosaicking both scenes, with the 20 m between them nodata
    x0, y0, h0, w0 = city.grids["scene_0"]
    x1, _, h1, w1 = city.grids["scene_1"]
    width, height = round((x1 - x0) / PIXEL) + w1, max(h0, h1)
    sources = "".join(
        f'<SimpleSource><SourceFilename relativeToVRT="1">scenes/{stem}.tif</SourceFilename><SourceBand>{{b}}'
        f'</SourceBand><SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/><DstRect xOff="{round((x - x0) / PIXEL)}"'
        f' yOff="0" xSize="{w}" ySize="{h}"/></SimpleSource>'
        for stem, (x, _, h, w) in city.grids.items()
    )
    bands = "".join(f'<VRTRasterBand dataType="Byte" band="{b}"><NoDataValue>0</NoDataValue>'
                    f"{sources.format(b=b)}</VRTRasterBand>" for b in (1, 2, 3))  # fmt: skip
    vrt = city.root / "mosaic.vrt"
    vrt.write_text(f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}"><SRS>{UTM}</SRS>'
                   f"<GeoTransform>{x0}, {PIXEL}, 0, {y0}, 0, -{PIXEL}</GeoTransform>{bands}</VRTDataset>")  # fmt: skip
    manifest = _prepare(city, tmp_path / "mosaic", src=vrt)
    assert [t["tile"] for t in manifest["tiles"]] == ["mosaic"] and manifest["tiles"][0]["width"] == width
    mosaic = City(city.root, {}, {"mosaic": (x0, y0, height, width)}, city.utm, city.lonlat, city.classes)
    polys = _utm(city)
    gap = 0
    for record, mask in _crops(tmp_path / "mosaic", manifest):
        row, col = record["offset"]
        expected, near = _expected(mosaic, polys, "mosaic", row, col, 64, ["background", "building", "road"], 0)
        xs, _ = _centres(mosaic, "mosaic", row, col, 64)
        nodata = (xs > x0 + w0 * PIXEL) & (xs < x1)
        nodata |= (np.arange(64)[:, None] + row >= h1) & (xs > x1)  # below scene_1
        assert (mask[nodata] == 255).all()
        assert not ((mask != expected) & ~near & ~nodata).any()
        gap += int(nodata.sum())
    assert gap > 0 and manifest["summary"]["train"]["ignore"]["nodata"] == gap


def test_streaming_reads_only_the_features_near_each_row_of_windows(city, tmp_path, monkeypatch):
    from ctseg.safety import vector_files

    calls = []
    original = vector_files.read_features

    def spy(path, layer, columns, **kwargs):
        fids, wkb, fields = original(path, layer, columns, **kwargs)
        calls.append((kwargs.get("bbox"), len(fids)))
        return fids, wkb, fields

    monkeypatch.setattr(vector_files, "read_features", spy)
    _prepare(city, tmp_path / "out", split_tiles={"train": ["scene_0"]}, crop=32)
    banded = [n for bbox, n in calls if bbox is not None]
    assert len(banded) == 6  # one read per row of windows: 192 / 32 rows of scene_0 (scene_1 in no split)
    assert max(banded) < len(city.utm) / 2, banded


def test_a_geographic_image_with_projected_labels(small, tmp_path):
    """Crops are in pixels whatever the CRS: an EPSG:4326 scene (degrees) takes UTM polygons like any other."""
    import rasterio
    from rasterio.transform import from_origin

    x0, y0, _, _ = small.grids["scene_0"]
    (lon0, lat0), dlon, dlat = to_lonlat([shapely.Point(x0, y0)])[0].coords[0], 7.5e-6, 4.5e-6  # about 0.5 m
    src = tmp_path / "geographic"
    src.mkdir()
    with rasterio.open(src / "scene.tif", "w", driver="GTiff", height=64, width=80, count=3, dtype="uint8",
                       crs="EPSG:4326", transform=from_origin(lon0, lat0, dlon, dlat)) as dst:  # fmt: skip
        dst.write(np.random.default_rng(0).integers(0, 255, (3, 64, 80), dtype=np.uint8))
    labels = write_labels(tmp_path / "utm.fgb", small.utm, small.classes, crs=UTM)
    manifest = _prepare(small, tmp_path / "out", src=src, labels=labels, crop=32)
    lonlat = to_lonlat(small.utm)  # the test's own route: pyproj, vertex by vertex
    for record, mask in _crops(tmp_path / "out", manifest):
        row, col = record["offset"]
        xs, ys = np.meshgrid(lon0 + (col + np.arange(32) + 0.5) * dlon, lat0 - (row + np.arange(32) + 0.5) * dlat)
        expected = np.zeros(xs.shape, dtype=np.uint8)
        near = np.zeros(xs.shape, dtype=bool)
        for index, name in enumerate(["background", "building", "road"]):
            for poly, cls in zip(lonlat, small.classes, strict=True):
                if cls == name:
                    expected[shapely.contains_xy(poly, xs, ys)] = index
                near |= shapely.dwithin(poly.boundary, shapely.points(xs, ys), EDGE * dlat)
        assert not ((mask != expected) & ~near).any(), record["mask"]
    assert {r["tile"] for r in manifest["crops"]} == {"scene"} and len(manifest["crops"]) == 2 * 3
    assert manifest["pixels"]["train"]["building"] > 50 and manifest["pixels"]["train"]["road"] > 50


# --------------------------------------------------------------------------------------------------- the errors
def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def _fails(argv: list[str], root: Path, *needles: str) -> str:
    before = _snapshot(root)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    lines = err.getvalue().strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("ctseg: error: "), err.getvalue()
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert _snapshot(root) == before
    return lines[0]


def _argv(city: City, dst: Path, *extra: str, labels: Path | None = None, field: str = "class") -> list[str]:
    return ["prepare", "vector", "--src", str(city.root / "scenes"), "--labels", str(labels or city.labels),
            "--class-field", field, "--classes", str(city.classes_file), "--dst", str(dst), "--crop", "64",
            "--workers", "1", *extra]  # fmt: skip


@pytest.fixture
def small(tmp_path) -> City:
    return make_vector(tmp_path / "city", scenes={"scene_0": (64, 80)}, buildings=6)


def test_an_unlisted_class_value_names_the_feature_and_the_values(small, tmp_path):
    labels = write_labels(tmp_path / "odd.gpkg", small.lonlat, [*small.classes[:-2], "parking", small.classes[-1]])
    line = _fails(
        _argv(small, tmp_path / "out", labels=labels),
        tmp_path,
        str(labels),
        "feature 8 has class = 'parking'",
        "listed: 'building', 'road'",
    )  # fmt: skip  (GeoPackage feature ids count from 1)
    assert "1 feature(s)" in line


def test_numbers_match_numbers_and_text_is_told_apart(small, tmp_path):
    codes = [1 if c == "building" else 2 for c in small.classes]
    labels = write_labels(tmp_path / "codes.gpkg", small.lonlat, codes, name="code")
    numeric = tmp_path / "numeric.yaml"
    numeric.write_text("classes:\n  - {name: ground}\n  - {name: building, value: 1}\n  - {name: road, value: 2.0}\n"
                       "background: ground\n")  # fmt: skip
    manifest = _prepare(small, tmp_path / "out", labels=labels, class_field="code", classes=numeric)
    assert manifest["dataset"]["classes"] == ["ground", "building", "road"]
    text = write_labels(tmp_path / "text.gpkg", small.lonlat, [str(c) for c in codes], name="code")
    argv = _argv(small, tmp_path / "out2", labels=text, field="code")
    argv[argv.index("--classes") + 1] = str(numeric)
    _fails(argv, tmp_path, "code = '1'", "listed: 1, 2", "write value: '1' in quotes")


def test_a_missing_class_field_lists_the_fields(small, tmp_path):
    _fails(_argv(small, tmp_path / "out", field="kind"), tmp_path, "--class-field kind", "its fields: class")


def test_labels_that_overlap_no_image(small, tmp_path):
    far = [shapely.affinity.translate(p, 3.0, 0.0) for p in small.lonlat]  # 3° east: another UTM zone's land
    labels = write_labels(tmp_path / "far.gpkg", far, small.classes)
    _fails(_argv(small, tmp_path / "out", labels=labels), tmp_path, str(labels), "overlaps any of the 1 image(s)")


def test_an_extent_that_overlaps_no_image(small, tmp_path):
    x0, y0, _, _ = small.grids["scene_0"]
    extent = write_labels(tmp_path / "away.gpkg", to_lonlat([shapely.box(x0 + 500, y0 - 100, x0 + 600, y0)]), [1],
                          name="id")  # fmt: skip
    _fails([*_argv(small, tmp_path / "out"), "--extent", str(extent)], tmp_path, f"extent file {extent}",
           "overlap none of the 1 image(s)")  # fmt: skip


def test_geometries_that_are_not_polygons(small, tmp_path):
    lines = [p.boundary if i == 2 else p for i, p in enumerate(small.lonlat)]
    labels = write_labels(tmp_path / "lines.gpkg", lines, small.classes)
    _fails(_argv(small, tmp_path / "out", labels=labels), tmp_path, "feature 3 is a LineString", "buffer")


def test_an_image_without_georeference(small, tmp_path):
    import rasterio

    path = small.scenes["scene_0"]
    with rasterio.open(path) as src:
        pixels = src.read()
    Image.fromarray(np.moveaxis(pixels, 0, -1)).save(path.with_suffix(".png"))
    path.unlink()
    _fails(_argv(small, tmp_path / "out"), tmp_path, "scene_0.png has no georeference")


def test_labels_without_a_crs_and_missing_flags(small, tmp_path):
    labels = write_labels(tmp_path / "nocrs.gpkg", small.lonlat, small.classes, crs=None)
    _fails(_argv(small, tmp_path / "out", labels=labels), tmp_path, "declares no CRS")
    argv = _argv(small, tmp_path / "out")
    del argv[argv.index("--class-field") : argv.index("--class-field") + 2]
    _fails(argv, tmp_path, "needs --class-field FIELD")
    bad = tmp_path / "labels.kml"
    bad.write_text("<kml/>")
    _fails(_argv(small, tmp_path / "out", labels=bad), tmp_path, "is not a GeoPackage, GeoJSON")


def test_invalid_polygons_are_repaired_and_counted(small, tmp_path):
    from ctseg.data.registry import PrepareOptions
    from ctseg.data.sets.vector import discover_vector

    x0, y0, _, _ = small.grids["scene_0"]
    square = shapely.box(x0 + 25, y0 - 30, x0 + 35, y0 - 20)
    bowtie = shapely.Polygon([(x0 + 2, y0 - 2), (x0 + 20, y0 - 20), (x0 + 20, y0 - 2), (x0 + 2, y0 - 20)])
    assert not bowtie.is_valid
    labels = write_labels(tmp_path / "bowtie.gpkg", to_lonlat([square, bowtie]), ["road", "building"])
    options = PrepareOptions(classes=small.classes_file, labels=labels, class_field="class")
    _, notes = discover_vector(small.root / "scenes", None, options)
    assert [n for n in notes if "repaired 1 invalid polygon(s)" in n and "(feature ids 2)" in n], notes
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        assert main([*_argv(small, tmp_path / "out", labels=labels), "--split", "train=scene_0"]) == 0
    assert [line for line in err.getvalue().splitlines() if "repaired" in line] == [notes[-1]]  # once, on success
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    mask = next(m for r, m in _crops(tmp_path / "out", manifest) if r["offset"] == [0, 0])
    # make_valid keeps both triangles of the bow-tie: the left and right ones (its vertical sides), not the top
    assert mask[22, 8] == 1 and mask[22, 36] == 1 and mask[8, 22] == 0 and mask[50, 60] == 2


def test_the_benchmark_runs_at_toy_size():
    import subprocess
    import sys

    from helpers.paths import REPO

    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "prepare_vector.py"), "--size", "600",
                          "--footprints", "200", "--crop", "256", "--workers", "1"],
                         capture_output=True, text=True, timeout=240)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    row = json.loads(res.stdout)
    assert row["crops"] == 9 and row["features"] == 200 + 2 and row["peak_rss_mib"] > 0
