"""A handed raster is pixels, never a list of places to read (``ctseg.safety.rasters``; issue 27, finding 2).

A VRT — or a ``.tif`` holding VRT XML — names its sources; crafted, it would make ``ctseg predict`` /
``vectorize`` contact an address or read any file. A local HTTP server (127.0.0.1, an ephemeral port, a
thread) stands for the network: every refused input must leave it without a single request, exit 2 with
exactly one ``ctseg: error:`` line naming the source, write nothing, and never reach GDAL (``rasterio.open``
is watched). ``--allow-remote`` / ``--allow-outside`` lift the refusals, and a user's own VRT over tiles in its
folder predicts without any flag.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import rasterio
from helpers.range_server import RangeServer
from helpers.tiny import save_task_checkpoint
from rasterio.transform import from_origin

from ctseg.cli.entry import _parser, main
from ctseg.errors import CtsegError
from ctseg.safety import rasters
from ctseg.safety.rasters import GDAL_GUARDS, SourcePolicy, allowing, check_raster, current_policy

TRANSFORM = from_origin(500_000.0, 4_650_000.0, 0.5, 0.5)
#: The one file the loopback server serves.
REMOTE = "remote.tif"


# --------------------------------------------------------------------------------------------------- helpers
def _tif(path: Path, data: np.ndarray) -> Path:
    with rasterio.open(path, "w", driver="GTiff", height=data.shape[1], width=data.shape[2], count=data.shape[0],
                       dtype=data.dtype, crs="EPSG:32633", transform=TRANSFORM) as dst:  # fmt: skip
        dst.write(data)
    return path


def _rgb(seed: int = 0, size: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (3, size, size), dtype=np.uint8)


def _vrt(path: Path, sources: list[str], *, bands: int = 3, size: int = 64, relative: int = 1, band_extra: str = "",
         body_extra: str = "") -> Path:  # fmt: skip
    """A VRT of ``bands`` bands, each reading band b of every source (paths as written into the XML)."""
    parts = [f'<VRTDataset rasterXSize="{size}" rasterYSize="{size}">']
    for b in range(1, bands + 1):
        parts.append(f'<VRTRasterBand dataType="Byte" band="{b}"{band_extra}>{body_extra}')
        for source in sources:
            parts.append(f'<SimpleSource><SourceFilename relativeToVRT="{relative}">{source}</SourceFilename>'
                         f'<SourceBand>{b}</SourceBand></SimpleSource>')  # fmt: skip
        parts.append("</VRTRasterBand>")
    parts.append("</VRTDataset>")
    path.write_text("\n".join(parts))
    return path


@pytest.fixture
def server(tmp_path_factory):
    """A loopback HTTP server (tests/helpers/range_server.py) serving one GeoTIFF as ``remote.tif``."""
    from rasterio.io import MemoryFile

    with MemoryFile() as mem:
        with mem.open(driver="GTiff", height=64, width=64, count=3, dtype="uint8", crs="EPSG:32633",
                      transform=TRANSFORM) as dst:  # fmt: skip
            dst.write(_rgb(9))
        payload = bytes(mem.read())
    folder = tmp_path_factory.mktemp("served")
    (folder / REMOTE).write_bytes(payload)
    with RangeServer(folder) as srv:
        yield srv


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return save_task_checkpoint(tmp_path_factory.mktemp("untrusted-rasters") / "rgb.ckpt")


@pytest.fixture
def gdal_opens(monkeypatch) -> list[str]:
    """Every path handed to ``rasterio.open`` (GDAL) from here on."""
    seen: list[str] = []
    real = rasterio.open

    def watched(fp, *args, **kwargs):
        seen.append(os.fspath(fp))
        return real(fp, *args, **kwargs)

    monkeypatch.setattr(rasterio, "open", watched)
    return seen


def _one_line(capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ctseg: error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _predict(ckpt: Path, inp: Path, out: Path, *extra: str) -> int:
    return main(["predict", "--ckpt", str(ckpt), str(inp), "--out", str(out), "--device", "cpu", "--window", "64",
                 "--no-color", *extra])  # fmt: skip


def _vectorize(inp: Path, out: Path, *extra: str) -> int:
    return main(["vectorize", str(inp), "--classes", "1", "--out", str(out), *extra])


# ------------------------------------------------------------------------------------------- the network
@pytest.mark.parametrize("name", ["mosaic.vrt", "scene.tif"])
@pytest.mark.parametrize("command", ["predict", "vectorize"])
def test_network_source_is_refused_before_any_request(command, name, server, ckpt, tmp_path, capsys, gdal_opens):
    source = f"/vsicurl/{server.url(REMOTE)}"
    bands = 3 if command == "predict" else 1
    inp = _vrt(tmp_path / name, [source], bands=bands, relative=0)
    if name.endswith(".tif"):  # a BOM and blank lines before the XML: still a VRT to GDAL
        inp.write_bytes(b"\xef\xbb\xbf\n  " + inp.read_bytes())
    out = tmp_path / ("out" if command == "predict" else "polygons.gpkg")
    rc = _predict(ckpt, inp, out) if command == "predict" else _vectorize(inp, out)
    assert rc == 2
    _one_line(capsys, str(inp), source, "--allow-remote")
    assert not out.exists() and server.requests == 0 and gdal_opens == []


def test_network_confidence_raster_is_refused(server, tmp_path, capsys, gdal_opens):
    classes = _tif(tmp_path / "scene_pred.tif", np.ones((1, 64, 64), np.uint8))
    conf = _vrt(tmp_path / "conf.tif", [f"/vsicurl/{server.url(REMOTE)}"], bands=1, relative=0)
    out = tmp_path / "polygons.gpkg"
    assert _vectorize(classes, out, "--confidence", str(conf)) == 2
    _one_line(capsys, str(conf), server.url(REMOTE))
    assert not out.exists() and server.requests == 0 and str(conf) not in gdal_opens


@pytest.mark.parametrize("source", ["/vsis3/bucket/k.tif", "/vsicurl_streaming/{url}", "{url}", "WMS:{url}",
                                    "/vsizip//vsicurl/{url}/a.tif", "vrt:///vsicurl/{url}?bands=1"])  # fmt: skip
def test_every_network_form_is_refused(source, server, tmp_path):
    source = source.format(url=server.url(REMOTE))
    inp = _vrt(tmp_path / "m.vrt", [source], relative=0)
    with pytest.raises(CtsegError, match="network source; pass --allow-remote"):
        check_raster(inp)
    assert server.requests == 0


def test_service_description_named_tif_is_refused(server, ckpt, tmp_path, capsys, gdal_opens):
    wms = tmp_path / "tiles.tif"
    wms.write_text(f'<GDAL_WMS><Service name="TMS"><ServerUrl>{server.url(REMOTE)}?${{z}}/${{x}}/${{y}}</ServerUrl>'
                   "</Service><DataWindow><TileLevel>1</TileLevel></DataWindow></GDAL_WMS>")  # fmt: skip
    assert _predict(ckpt, wms, tmp_path / "out", "--allow-remote", "--allow-outside") == 2
    _one_line(capsys, str(wms), "<GDAL_WMS>")
    stac = tmp_path / "item.tif"
    stac.write_text('{"stac_version": "1.0.0", "assets": {"b": {"href": "' + server.url(REMOTE) + '"}}}')
    assert _vectorize(stac, tmp_path / "p.gpkg") == 2
    _one_line(capsys, str(stac), "JSON")
    assert server.requests == 0 and gdal_opens == [] and not (tmp_path / "out").exists()


def test_allow_remote_lifts_the_refusal(server, ckpt, tmp_path, capsys):
    inp = _vrt(tmp_path / "remote.vrt", [f"/vsicurl/{server.url(REMOTE)}"], relative=0)
    assert _predict(ckpt, inp, tmp_path / "out", "--allow-remote") == 0
    assert (tmp_path / "out" / "remote_pred.tif").is_file()
    assert ("GET", REMOTE) in server.calls  # what the user named is read


# ------------------------------------------------------------------------------------------- local files
def test_files_outside_the_vrt_folder_are_never_opened(ckpt, tmp_path, capsys, gdal_opens, monkeypatch):
    folder = tmp_path / "city"
    folder.mkdir()
    outside = _tif(tmp_path / "outside.tif", _rgb(1))
    sniffed: list[Path] = []
    real_head = rasters._head
    monkeypatch.setattr(rasters, "_head", lambda path, *a: sniffed.append(Path(path)) or real_head(path, *a))
    for inp, source in ((_vrt(folder / "passwd.vrt", ["/etc/passwd"], relative=0), "/etc/passwd"),
                        (_vrt(folder / "up.vrt", ["../outside.tif"]), "../outside.tif")):  # fmt: skip
        assert _predict(ckpt, inp, tmp_path / "out") == 2
        _one_line(capsys, str(inp), source, "outside the VRT's folder", "--allow-outside")
        assert _vectorize(inp, tmp_path / "p.gpkg") == 2
        _one_line(capsys, str(inp), source)
    assert not {str(folder / "passwd.vrt"), str(folder / "up.vrt")} & set(gdal_opens)
    assert not (tmp_path / "out").exists()
    assert {p.name for p in sniffed} == {"passwd.vrt", "up.vrt"}  # not even ctseg read the targets
    gdal_opens.clear()
    assert _predict(ckpt, folder / "up.vrt", tmp_path / "out", "--allow-outside") == 0
    assert (tmp_path / "out" / "up_pred.tif").is_file() and str(folder / "up.vrt") in gdal_opens
    assert outside.is_file()


def test_symlink_out_of_the_folder_is_outside(tmp_path):
    folder = tmp_path / "city"
    folder.mkdir()
    (folder / "tile.tif").symlink_to(_tif(tmp_path / "elsewhere.tif", _rgb(2)))
    with pytest.raises(CtsegError, match="names tile.tif, outside the VRT's folder"):
        check_raster(_vrt(folder / "m.vrt", ["tile.tif"]))


def test_nested_vrt_is_walked(server, tmp_path, capsys, ckpt):
    (tmp_path / "sub").mkdir()
    inner = _vrt(tmp_path / "sub" / "inner.vrt", [f"/vsicurl/{server.url(REMOTE)}"], relative=0)
    outer = _vrt(tmp_path / "outer.vrt", ["sub/inner.vrt"])
    assert _predict(ckpt, outer, tmp_path / "out") == 2
    _one_line(capsys, str(outer), "inner.vrt", server.url(REMOTE))
    _vrt(inner, ["../../escape.tif"])
    with pytest.raises(CtsegError, match=r"inner\.vrt .*names \.\./\.\./escape\.tif, outside"):
        check_raster(outer)
    assert server.requests == 0


def test_python_pixel_function_is_refused_and_inert(tmp_path, capsys, ckpt, monkeypatch):
    marker = tmp_path / "ran"
    _tif(tmp_path / "a.tif", _rgb(3))
    code = (f"<PixelFunctionLanguage>Python</PixelFunctionLanguage><PixelFunctionType>f</PixelFunctionType>"
            f"<PixelFunctionCode><![CDATA[\ndef f(in_ar, out_ar, *args, **kwargs):\n"
            f"    open({str(marker)!r}, 'w').close()\n    out_ar[:] = in_ar[0]\n]]></PixelFunctionCode>")  # fmt: skip
    inp = _vrt(tmp_path / "py.vrt", ["a.tif"], band_extra=' subClass="VRTDerivedRasterBand"', body_extra=code)
    monkeypatch.setenv("GDAL_VRT_ENABLE_PYTHON", "YES")
    assert _predict(ckpt, inp, tmp_path / "out", "--allow-remote", "--allow-outside") == 2
    _one_line(capsys, str(inp), "Python pixel function")
    assert os.environ["GDAL_VRT_ENABLE_PYTHON"] == "NO"  # forced by ctseg.cli.entry.main, whatever was set
    assert all(os.environ[k] == v for k, v in GDAL_GUARDS.items())
    with rasterio.open(inp) as ds:  # GDAL itself, past ctseg's walk: the code does not run
        with pytest.raises(rasterio.errors.RasterioError):
            ds.read(1)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("xml", "needle"),
    [
        ('<VRTRasterBand subClass="VRTRawRasterBand"><SourceFilename relativetoVRT="1">a.tif</SourceFilename>'
         "</VRTRasterBand>", "raw band"),
        ("<VRTRasterBand><Overview><SourceFilename>/etc/hosts</SourceFilename></Overview></VRTRasterBand>",
         "/etc/hosts, outside"),
        ("<VRTRasterBand><MaskBand><VRTRasterBand><SimpleSource><SourceFilename relativeToVRT='1'>../x.tif"
         "</SourceFilename></SimpleSource></VRTRasterBand></MaskBand></VRTRasterBand>", "../x.tif, outside"),
        ("<GDALWarpOptions><SourceDataset relativeToVRT='0'>/etc/hosts</SourceDataset></GDALWarpOptions>",
         "/etc/hosts, outside"),
        ("<Metadata domain='GEOLOCATION'><MDI key='X_DATASET'>/etc/hosts</MDI></Metadata>", "/etc/hosts"),
        ("<VRTRasterBand><SimpleSource><sourcefilename relativeToVRT='1'>/vsizip/a.zip/a.tif</sourcefilename>"
         "</SimpleSource></VRTRasterBand>", "GDAL virtual file path"),
        ("<VRTRasterBand><SimpleSource><SourceFilename>NETCDF:\"a.nc\":v</SourceFilename></SimpleSource>"
         "</VRTRasterBand>", "connection string"),
        ("<VRTRasterBand><SimpleSource><SourceFilename>&lt;VRTDataset&gt;&lt;VRTRasterBand&gt;&lt;SimpleSource"
         "&gt;&lt;SourceFilename&gt;/etc/hosts&lt;/SourceFilename&gt;&lt;/SimpleSource&gt;&lt;/VRTRasterBand&gt;"
         "&lt;/VRTDataset&gt;</SourceFilename></SimpleSource></VRTRasterBand>", "/etc/hosts, outside"),
        ("<VRTRasterBand><SimpleSource><SourceFilename relativeToVRT='1'>vrt://../x.tif?bands=1</SourceFilename>"
         "</SimpleSource></VRTRasterBand>", "../x.tif, outside"),
        ("<VRTRasterBand><SimpleSource><SourceFilename relativeToVRT='1'>notes.txt</SourceFilename>"
         "</SimpleSource></VRTRasterBand>", "not a GeoTIFF"),
        ("<VRTRasterBand><SimpleSource><SourceFilename relativeToVRT='1'>tiles.tif</SourceFilename>"
         "</SimpleSource></VRTRasterBand>", "names tiles.tif: "),
    ],
    ids=["raw-band", "overview", "mask-band", "warped", "geolocation", "vsizip", "connection", "inline-vrt",
         "vrt-url", "not-a-raster", "service-source"],
)  # fmt: skip
def test_every_way_a_vrt_names_a_file(xml, needle, tmp_path):
    (tmp_path / "notes.txt").write_text("not a raster\n")
    (tmp_path / "tiles.tif").write_text("<GDAL_WMS><Service name='TMS'><ServerUrl>http://127.0.0.1:9/</ServerUrl>"
                                        "</Service></GDAL_WMS>")  # fmt: skip
    inp = tmp_path / "m.vrt"
    inp.write_text(f'<VRTDataset rasterXSize="64" rasterYSize="64">{xml}</VRTDataset>')
    with pytest.raises(CtsegError, match=re.escape(needle)):
        check_raster(inp)


def test_doctype_pointer_markers_and_sidecars_are_refused(tmp_path):
    tile = _tif(tmp_path / "a.tif", _rgb(4))
    bomb = tmp_path / "bomb.vrt"
    bomb.write_text('<!DOCTYPE x [<!ENTITY a "aaaa">]><VRTDataset rasterXSize="1" rasterYSize="1">&a;</VRTDataset>')
    with pytest.raises(CtsegError, match="DOCTYPE"):
        check_raster(bomb)
    hidden = tmp_path / "photo.jpg"
    hidden.write_bytes(b"\xff\xd8\xff\xfe\x01\x01<VRTDataset><VRTRasterBand>")
    with pytest.raises(CtsegError, match="<vrtdataset"):
        check_raster(hidden)
    ovr = tmp_path / "a.tif.ovr"
    _vrt(ovr, [f"{tmp_path}/../x.tif"], relative=0)
    with pytest.raises(CtsegError, match=r"a\.tif\.ovr, beside raster"):
        check_raster(tile)
    ovr.unlink()
    assert check_raster(tile) == "GTiff"


# ------------------------------------------------------------------------------------------ what still works
def test_own_vrt_over_local_tiles_predicts_without_flags(ckpt, tmp_path, capsys):
    folder = tmp_path / "city"
    (folder / "tiles").mkdir(parents=True)
    _tif(folder / "tiles" / "t0.tif", _rgb(5))
    _tif(folder / "t1.tif", _rgb(6))
    absolute = str((folder / "t1.tif").resolve())
    mosaic = _vrt(folder / "city.vrt", ["tiles/t0.tif"])
    _vrt(folder / "abs.vrt", [absolute], relative=0)  # gdalbuildvrt's absolute form, inside the folder
    _vrt(folder / "nested.vrt", ["city.vrt"])
    for inp in (mosaic, folder / "abs.vrt", folder / "nested.vrt"):
        assert _predict(ckpt, inp, tmp_path / "out") == 0, capsys.readouterr().err
        assert (tmp_path / "out" / f"{inp.stem}_pred.tif").is_file()
    with rasterio.open(tmp_path / "out" / "city_pred.tif") as pred:
        assert pred.read(1).shape == (64, 64)


def test_flags_on_every_raster_command_and_worker_processes():
    for argv in (["prepare", "folder"], ["evaluate", "p", "--truth", "t", "--dataset", "x"],
                 ["vectorize", "x.tif", "--classes", "1", "--out", "x.gpkg"],
                 ["predict", "x.tif", "--ckpt", "c", "--out", "o"]):  # fmt: skip
        args = _parser().parse_args([*argv, "--allow-remote", "--allow-outside"])
        assert args.allow_remote and args.allow_outside
    assert current_policy() == SourcePolicy()
    with allowing(remote=True):
        from ctseg.data.prepare import _pool_context

        with ProcessPoolExecutor(1, mp_context=_pool_context(), initializer=rasters.set_policy,
                                 initargs=(current_policy(),)) as pool:  # fmt: skip
            assert pool.submit(current_policy).result(timeout=60) == SourcePolicy(allow_remote=True)
    assert current_policy() == SourcePolicy()
