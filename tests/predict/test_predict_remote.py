"""Remote imagery by area of interest: ``ctseg predict`` of a box of a COG served over HTTP (a local server on
127.0.0.1 with range requests, :mod:`helpers.range_server`), directly or through a STAC item, ``--aoi`` polygons,
and the one-line errors of addresses, items and regions.

The model is an untrained pf-tiny (the class maps only have to agree); windows of 64 px with overlap 0.25 (a
48-px step) keep it fast. The box's offset and size are multiples of the step plus one window, and the rasters'
sizes too, so the box's window grid is the whole raster's grid shifted: away from the box's edge (16 px, the
windows' overlap, where the whole raster's windows beyond the box also count) its class map is bit-identical
to the whole raster's.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from helpers.range_server import RangeServer
from helpers.tiny import save_task_checkpoint
from rasterio._env import get_gdal_config
from rasterio.transform import from_origin
from rasterio.windows import Window

from ctseg.cli.entry import main
from ctseg.errors import CtsegError
from ctseg.predict.run import run_predict
from ctseg.safety.aoi import read_aoi
from ctseg.safety.raster_policy import allowing
from ctseg.safety.stac import item_raster

X0, Y0, RES = 500_000.0, 4_100_000.0, 0.5
CRS = "EPSG:32633"
COG = "image/tiff; application=geotiff; profile=cloud-optimized"
BIG, SMALL = 2080, 448  # 64 + 48 k: the window grid of 64-px windows at overlap 0.25 steps by exactly 48 px
#: The box of the bit-identity test, in pixels of SMALL: (col, row, width, height).
BOX = (96, 144, 160, 160)
RUN = {"window": 64, "overlap": 0.25, "batch_size": 8, "device": "cpu", "progress": False}


def _cog(path: Path, size: int, block: int, seed: int) -> Path:
    """A tiled, DEFLATE-compressed 3-band uint8 COG in UTM 33N (noise: it compresses to nothing)."""
    data = np.random.default_rng(seed).integers(0, 255, (3, size, size), dtype=np.uint8)
    profile = {"driver": "COG", "height": size, "width": size, "count": 3, "dtype": "uint8", "crs": CRS,
               "transform": from_origin(X0, Y0, RES, RES), "blocksize": block, "compress": "deflate"}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def _bbox(col: int, row: int, width: int, height: int) -> str:
    """The map coordinates of a pixel window, as ``--bbox`` takes them."""
    return f"{X0 + col * RES},{Y0 - (row + height) * RES},{X0 + (col + width) * RES},{Y0 - row * RES}"


def _item(item_id: str, assets: dict) -> str:
    return json.dumps({"type": "Feature", "stac_version": "1.0.0", "id": item_id, "geometry": None, "links": [],
                       "properties": {"datetime": "2024-01-01T00:00:00Z"}, "assets": assets})  # fmt: skip


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The served folder (two COGs, STAC items, files that are not rasters), its server and a checkpoint."""
    root = tmp_path_factory.mktemp("remote")
    served = root / "served"
    served.mkdir()
    _cog(served / "big.tif", BIG, 256, 0)
    _cog(served / "small.tif", SMALL, 128, 1)
    (served / "item.json").write_text(_item("scene-2024", {
        "thumbnail": {"href": "thumb.png", "type": "image/png"},
        "visual": {"href": "small.tif", "type": COG},
        "analytic": {"href": "big.tif", "type": COG},
    }))  # fmt: skip
    (served / "bare.json").write_text(
        _item(
            "bare",
            {
                "thumbnail": {"href": "t.png", "type": "image/png"},
                "metadata": {"href": "m.xml", "type": "application/xml"},
            },
        )
    )
    (served / "page.html").write_text("<html><body>not a raster</body></html>")
    (served / "bucket").mkdir()
    (served / "bucket" / "small.tif").write_bytes((served / "small.tif").read_bytes())
    ckpt = save_task_checkpoint(root / "model.ckpt")
    with RangeServer(served) as server:
        yield {"root": root, "served": served, "server": server, "ckpt": ckpt}


@pytest.fixture(scope="module")
def item_box(site):
    """The box BOX of SMALL predicted through the STAC item's URL (its default asset, 'visual')."""
    server = site["server"]
    server.reset()
    out = site["root"] / "item-box"
    written = run_predict(site["ckpt"], [server.url("item.json")], out, bbox=_bbox(*BOX), color=False, **RUN)
    return {"out": out, "written": written, "paths": list(server.paths)}


def _read(path: Path) -> tuple[np.ndarray, dict]:
    with rasterio.open(path) as src:
        return src.read(1), {"transform": src.transform, "crs": src.crs, "nodata": src.nodata, "shape": src.shape}


def test_a_box_of_a_remote_cog_fetches_about_what_the_box_covers(site, tmp_path):
    server, served = site["server"], site["served"]
    col, row, width, height = 960, 480, 304, 304  # 2 × 3 of the COG's 256² tiles
    server.reset()
    run_predict(site["ckpt"], [server.url("big.tif")], tmp_path, bbox=_bbox(col, row, width, height), color=False,
                **RUN)  # fmt: skip
    classes, meta = _read(tmp_path / "big_pred.tif")
    with rasterio.open(served / "big.tif") as src:
        assert meta["transform"] == from_origin(X0 + col * RES, Y0 - row * RES, RES, RES)  # the source grid, offset
        assert meta["crs"] == src.crs and meta["shape"] == (height, width)
        tiles = {(c, r) for c in range(col // 256, (col + width - 1) // 256 + 1)
                 for r in range(row // 256, (row + height - 1) // 256 + 1)}  # fmt: skip
        covered = sum(int(src.get_tag_item(f"BLOCK_SIZE_{c}_{r}", "TIFF", bidx=1)) for c, r in tiles)
    size = (served / "big.tif").stat().st_size
    assert server.bytes_sent < covered + 64 * 1024, (server.bytes_sent, covered)  # the tiles and the header
    assert server.bytes_sent < size / 8, (server.bytes_sent, size)
    assert set(server.paths) == {"big.tif"}  # no folder listing, no .ovr / .msk / .aux.xml probed
    assert classes.max() < 4
    assert get_gdal_config("GDAL_DISABLE_READDIR_ON_OPEN") is None  # GDAL's options only around the read


def test_the_box_equals_the_same_box_of_a_local_full_prediction(site, item_box, tmp_path):
    assert [p.name for p in item_box["written"]][0] == "scene-2024_pred.tif"  # named by the item's id
    assert set(item_box["paths"]) == {"item.json", "small.tif"}  # the item and its one asset, nothing else
    boxed, meta = _read(item_box["out"] / "scene-2024_pred.tif")
    col, row, width, height = BOX
    run_predict(site["ckpt"], [site["served"] / "small.tif"], tmp_path, color=False, **RUN)
    with rasterio.open(tmp_path / "small_pred.tif") as full:
        assert meta["transform"] == from_origin(X0 + col * RES, Y0 - row * RES, RES, RES)
        assert meta["shape"] == (height, width)
        cut = full.read(1, window=Window(*BOX))
    edge = 16  # window − step: there the whole raster's windows beyond the box count too
    assert np.array_equal(boxed[edge:-edge, edge:-edge], cut[edge:-edge, edge:-edge])
    assert (boxed == cut).mean() > 0.5  # at the edge the two differ only where the model's context does


def test_aoi_writes_nodata_outside_its_polygons(site, item_box, tmp_path):
    col, row, width, height = BOX
    corners = [(col, row + height), (col + width, row + height), (col + 37.3, row)]  # pixels; bounds = BOX
    triangle = shapely.Polygon([(X0 + c * RES, Y0 - r * RES) for c, r in corners])
    aoi = tmp_path / "aoi.geojson"
    aoi.write_text(json.dumps({"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": CRS}},
                               "features": [{"type": "Feature", "properties": {},
                                             "geometry": shapely.geometry.mapping(triangle)}]}))  # fmt: skip
    out = tmp_path / "out"
    run_predict(site["ckpt"], [site["server"].url("item.json")], out, aoi=aoi, color=False, **RUN)
    classes, meta = _read(out / "scene-2024_pred.tif")
    boxed, _ = _read(item_box["out"] / "scene-2024_pred.tif")
    assert meta["shape"] == (height, width) and meta["nodata"] == 255
    cols, rows = np.meshgrid(np.arange(width) + col + 0.5, np.arange(height) + row + 0.5)
    xs, ys = X0 + cols * RES, Y0 - rows * RES
    inside = shapely.contains_xy(triangle, xs, ys)
    clear = shapely.distance(triangle.boundary, shapely.points(xs, ys)) > 1e-3 * RES  # centres on no edge
    assert (classes[~inside & clear] == 255).all() and 0.2 < inside.mean() < 0.8
    assert np.array_equal(classes[inside & clear], boxed[inside & clear])  # the same window, the same model


def test_s3_addresses_go_through_gdal_s3_with_its_environment_variables(site, tmp_path, monkeypatch):
    server = site["server"]
    for key, value in {"AWS_S3_ENDPOINT": f"127.0.0.1:{server.port}", "AWS_HTTPS": "NO",
                       "AWS_VIRTUAL_HOSTING": "FALSE", "AWS_NO_SIGN_REQUEST": "YES"}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    server.reset()
    col, row, width, height = 40, 200, 90, 70
    run_predict(site["ckpt"], ["s3://bucket/small.tif"], tmp_path, bbox=_bbox(col, row, width, height), color=False,
                **RUN)  # fmt: skip
    _, meta = _read(tmp_path / "small_pred.tif")
    assert meta["transform"] == from_origin(X0 + col * RES, Y0 - row * RES, RES, RES)
    assert meta["shape"] == (height, width) and set(server.paths) == {"bucket/small.tif"}


def test_skip_existing_reads_no_pixels(site, item_box):
    server = site["server"]
    server.reset()
    written = run_predict(site["ckpt"], [server.url("item.json")], item_box["out"], bbox=_bbox(*BOX), color=False,
                          skip_existing=True, **RUN)  # fmt: skip
    assert written == [] and server.bytes_sent < 20_000  # the item and the COG's header


def test_aoi_files_by_their_bytes(tmp_path):
    import pyogrio

    square = shapely.box(1.0, 2.0, 3.0, 4.0)
    plain = tmp_path / "plain.geojson"
    plain.write_text(json.dumps({"type": "Polygon", "coordinates": [list(square.exterior.coords)]}))
    assert read_aoi(plain).crs == "EPSG:4326" and read_aoi(plain).polygons[0].equals(square)  # RFC 7946
    gpkg = tmp_path / "aoi.gpkg"
    pyogrio.raw.write(gpkg, np.array([shapely.to_wkb(square)], dtype=object), [], [], driver="GPKG",
                      geometry_type="Polygon", crs=CRS)  # fmt: skip
    found = read_aoi(gpkg)
    assert found.polygons[0].equals(square) and "32633" in found.crs
    kml = tmp_path / "aoi.kml"
    kml.write_text('<?xml version="1.0"?><kml xmlns="http://www.opengis.net/kml/2.2"></kml>')
    with pytest.raises(CtsegError, match="not a GeoJSON, GeoPackage, Shapefile or FlatGeobuf file"):
        read_aoi(kml)
    points = tmp_path / "points.geojson"
    points.write_text(json.dumps({"type": "Point", "coordinates": [1, 2]}))
    with pytest.raises(CtsegError, match="holds no polygon"):
        read_aoi(points)


def test_a_local_item_names_local_assets_in_its_folder_only(tmp_path, site):
    folder = tmp_path / "catalog"
    folder.mkdir()
    (folder / "inside.json").write_text(_item("in", {"visual": {"href": "scene.tif", "type": COG}}))
    (folder / "outside.json").write_text(_item("out", {"visual": {"href": "../elsewhere/scene.tif", "type": COG}}))
    (folder / "remote.json").write_text(_item("far", {"visual": {"href": site["server"].url("small.tif"),
                                                                 "type": COG}}))  # fmt: skip
    found = item_raster(str(folder / "inside.json"))
    assert not found.remote and found.stem == "in" and Path(found.gdal) == folder / "scene.tif"
    with pytest.raises(CtsegError, match=r"outside the item's folder .*--allow-outside"):
        item_raster(str(folder / "outside.json"))
    with allowing(outside=True):
        assert not item_raster(str(folder / "outside.json")).remote
    far = item_raster(str(folder / "remote.json"))  # the asset the user's item names: no --allow-remote needed
    assert far.remote and far.gdal == "/vsicurl/" + site["server"].url("small.tif") and far.stem == "far"
    served = site["served"]
    (served / "pointer.json").write_text(_item("p", {"visual": {"href": "file:///etc/hostname", "type": COG}}))
    with pytest.raises(CtsegError, match="an item from the network may name network assets only"):
        item_raster(site["server"].url("pointer.json"))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


#: (case, the arguments after the model and out, what the one line must say).
ERRORS = [
    ("unreachable", lambda u: [f"http://127.0.0.1:{_closed_port()}/scene.tif"], ["cannot be reached"]),
    ("404", lambda u: [u("missing.tif")], ["missing.tif", "HTTP 404"]),
    ("not a raster", lambda u: [u("page.html")], ["page.html", "is not a GeoTIFF / COG"]),
    (
        "item without a raster",
        lambda u: [u("bare.json")],
        ["bare.json", "no GeoTIFF asset", "thumbnail (image/png)", "metadata (application/xml)", "--asset KEY"],
    ),
    (
        "asset not in the item",
        lambda u: [u("item.json"), "--asset", "B04"],
        ["--asset B04", "item.json", "no asset 'B04'", "thumbnail", "visual", "analytic"],
    ),
    (
        "box outside",
        lambda u: [u("small.tif"), "--bbox", "499000,4099000,499500,4099500"],
        [
            "--bbox 499000,4099000,499500,4099500 lies outside",
            "small.tif",
            "x 499000 to 499500",
            "x 500000 to 500224, y 4099776 to 4100000",
        ],
    ),
    (
        "box outside, in degrees",
        lambda u: [u("small.tif"), "--bbox", "10,45,10.1,45.1", "--bbox-crs", "EPSG:4326"],
        ["(EPSG:4326) lies outside", "raster covers x 500000 to 500224", "EPSG:32633"],
    ),
    ("malformed box", lambda u: [u("small.tif"), "--bbox", "1,2,3"], ["--bbox 1,2,3", "MINX,MINY,MAXX,MAXY"]),
    ("min above max", lambda u: [u("small.tif"), "--bbox", "3,2,1,4"], ["--bbox 3,2,1,4", "MINX,MINY,MAXX,MAXY"]),
    ("bbox and aoi", lambda u: [u("small.tif"), "--bbox", "1,2,3,4", "--aoi", "aoi.gpkg"], ["--bbox and --aoi"]),
    (
        "unknown crs",
        lambda u: [u("small.tif"), "--bbox", "1,2,3,4", "--bbox-crs", "EPSG:999999"],
        ["--bbox-crs EPSG:999999", "not a CRS"],
    ),
    ("asset without an item", lambda u: [u("small.tif"), "--asset", "visual"], ["--asset visual", "STAC item"]),
    ("other scheme", lambda u: ["ftp://127.0.0.1/scene.tif"], ["ftp://127.0.0.1/scene.tif", "https://"]),
]


@pytest.mark.parametrize("case, args, says", ERRORS, ids=[e[0] for e in ERRORS])
def test_one_error_line_and_nothing_written(site, tmp_path, capsys, case, args, says):
    out = tmp_path / "out"
    argv = ["predict", "--ckpt", str(site["ckpt"]), "--out", str(out), "--window", "64", "--device", "cpu"]
    capsys.readouterr()
    assert main(argv + args(site["server"].url)) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ctseg: error: "), err
    for part in says:
        assert part in lines[0], (part, lines[0])
    assert not out.exists()
