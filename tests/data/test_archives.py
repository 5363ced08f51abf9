"""Release archives as downloaded: ``ctseg prepare`` reads the publishers' zips in place.

Each data set's tiny fake release (tests/helpers/make_*.py) is prepared once unpacked and once zipped the way its
publisher ships it — Potsdam ``2_Ortho_RGB.zip`` (a folder inside) with ``5_Labels_all*.zip`` (files at the top),
Vaihingen ``ISPRS_semantic_labeling_Vaihingen.zip`` with its ground-truth zips (files at the top), LoveDA
``Train.zip`` / ``Val.zip`` / ``Test.zip``, UAVid ``uavid_v1.5_official_release_image.zip`` — and both give the
same crop bytes and the same manifest, paths aside. Crafted archives (a ``..`` or absolute member, a symbolic
link, absurd declared sizes, a VRT member) are refused in one line with nothing written; nothing is ever extracted.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import stat
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers.make_isprs import PALETTE, make_potsdam, make_vaihingen, write_geotiff
from helpers.make_loveda import write_loveda
from helpers.make_uavid import write_uavid

from ctseg.cli.entry import main
from ctseg.data import prepare_dataset
from ctseg.data.sets.isprs import discover_isprs
from ctseg.data.walk import file_size, is_file, subfolders, walk_folders
from ctseg.errors import CtsegError
from ctseg.safety.archives import MAX_MEMBER_BYTES, archive_member, list_archive
from ctseg.safety.rasters import check_raster


# ------------------------------------------------------------------------------------------------- helpers
def members(folder: Path, prefix: str = "") -> dict[str, Path]:
    """Member name (``prefix`` + the path below ``folder``) → file, for every file under ``folder``."""
    return {prefix + p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}


def zip_release(archive: Path, files: dict[str, Path]) -> Path:
    archive.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
        for name, path in files.items():
            out.write(path, name)
    return archive


def prepared(dst: Path) -> tuple[dict[str, bytes], dict]:
    """(crop files → bytes, the manifest without the paths of the source and of each tile, nor its time)."""
    files = {p.relative_to(dst).as_posix(): p.read_bytes() for p in sorted(dst.rglob("*"))
             if p.is_file() and p.name != "manifest.json" and not p.name.startswith(".")}  # fmt: skip
    manifest = json.loads((dst / "manifest.json").read_text())
    for key in ("source", "created"):
        manifest.pop(key)
    for row in manifest["tiles"]:
        row.pop("image"), row.pop("label")
    return files, manifest


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))}  # fmt: skip


@pytest.fixture(autouse=True)
def _no_extraction(monkeypatch):
    """Nothing is ever unpacked: zipfile's extract calls fail the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("an archive was extracted")

    monkeypatch.setattr(zipfile.ZipFile, "extract", refuse)
    monkeypatch.setattr(zipfile.ZipFile, "extractall", refuse)


def same_crops(name: str, unpacked: Path, zipped: Path, tmp_path: Path, **kwargs) -> dict:
    """Prepare both sources (the zipped one left untouched) and compare; returns the zipped run's manifest."""
    before = snapshot(zipped)
    workers = kwargs.pop("workers", 1)
    a = prepare_dataset(name, unpacked, tmp_path / "out_unpacked", workers=1, progress=False, **kwargs)
    b = prepare_dataset(name, zipped, tmp_path / "out_zipped", workers=workers, progress=False, **kwargs)
    files_a, manifest_a = prepared(a)
    files_b, manifest_b = prepared(b)
    assert files_a and sorted(files_a) == sorted(files_b)
    assert [k for k in files_a if files_a[k] != files_b[k]] == []
    assert manifest_a == manifest_b
    assert snapshot(zipped) == before  # read in place: nothing written beside the archives
    return json.loads((b / "manifest.json").read_text())


# ----------------------------------------------------------------------------------------- equal crops
def test_potsdam_release_zips_give_the_crops_of_the_unpacked_folders(tmp_path):
    unpacked = tmp_path / "unpacked"
    made = make_potsdam(unpacked, tiles=("2_10", "2_13"), size=(130, 150))
    zipped = tmp_path / "zips"
    zip_release(zipped / "2_Ortho_RGB.zip", members(unpacked / "2_Ortho_RGB", "2_Ortho_RGB/"))
    zip_release(zipped / "5_Labels_all.zip", members(unpacked / "5_Labels_all"))
    zip_release(zipped / "5_Labels_all_noBoundary.zip", members(unpacked / "5_Labels_all_noBoundary"))
    rgbir = {"4_Ortho_RGBIR/top_potsdam_2_10_RGBIR.tif": made["2_10"].image}  # the other products may sit beside
    zip_release(zipped / "4_Ortho_RGBIR.zip", rgbir)
    zip_release(zipped / "3_Ortho_IRRG.zip", {"3_Ortho_IRRG/top_potsdam_2_10_IRRG.tif": made["2_10"].image})
    manifest = same_crops("potsdam", unpacked, zipped, tmp_path, crop=100, resize=64)
    rows = {row["tile"]: row for row in manifest["tiles"]}
    assert rows["2_10"]["image"] == str(zipped / "2_Ortho_RGB.zip/2_Ortho_RGB/top_potsdam_2_10_RGB.tif")
    assert rows["2_13"]["label"] == str(zipped / "5_Labels_all_noBoundary.zip/top_potsdam_2_13_label_noBoundary.tif")


def test_vaihingen_release_zips_give_the_crops_of_the_unpacked_folders(tmp_path):
    unpacked = tmp_path / "unpacked"
    make_vaihingen(unpacked, areas=(1, 2), size=(120, 110))
    zipped = tmp_path / "zips"
    release = "ISPRS_semantic_labeling_Vaihingen"
    zip_release(zipped / f"{release}.zip", members(unpacked / release))
    eroded = "ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE"
    zip_release(zipped / f"{eroded}.zip", members(unpacked / eroded))
    same_crops("vaihingen", unpacked, zipped, tmp_path, crop=100, resize=64)


def test_vaihingen_complete_ground_truth_beside_top_is_the_labels(tmp_path):
    """The ..._ground_truth_COMPLETE release holds the labels at its top, named like the images: unpacked beside
    top/ (or zipped), they are labels — not a second image of each area to delete ("keep one of them")."""
    release = tmp_path / "release"
    made = make_vaihingen(release, areas=(1, 2), size=(120, 110))
    base = release / "ISPRS_semantic_labeling_Vaihingen"
    complete = {made[a].label.name: write_geotiff(tmp_path / "complete" / made[a].label.name, PALETTE[made[a].classes],
                                                  georeferenced=False) for a in made}  # fmt: skip
    reference = prepare_dataset("vaihingen", release, tmp_path / "out_reference", crop=100, resize=64, workers=1,
                                progress=False)  # fmt: skip
    shutil.rmtree(base / "gts_for_participants")
    for name, path in complete.items():  # unpacked into the same folder as top/
        shutil.copy(path, base / name)
    tiles, notes = discover_isprs("vaihingen", release)
    assert {t.tile: t.label.parent for t in tiles} == {"area1": base, "area2": made["area2"].eroded.parent}
    assert all(t.image.parent.name == "top" for t in tiles)
    assert any("taken as labels" in n and "_ground_truth_COMPLETE" in n for n in notes)
    beside = prepare_dataset("vaihingen", release, tmp_path / "out_beside", crop=100, resize=64, workers=1,
                             progress=False)  # fmt: skip
    assert prepared(beside)[0] == prepared(reference)[0]

    zipped = tmp_path / "zips"  # and as downloaded: the labels at the top of the ground-truth zip
    zip_release(zipped / "ISPRS_semantic_labeling_Vaihingen.zip", members(base / "top", "top/"))
    zip_release(zipped / "ISPRS_semantic_labeling_Vaihingen_ground_truth_COMPLETE.zip", complete)
    eroded = "ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE"
    zip_release(zipped / f"{eroded}.zip", members(release / eroded))
    out = prepare_dataset("vaihingen", zipped, tmp_path / "out_zipped", crop=100, resize=64, workers=1, progress=False)
    assert prepared(out)[0] == prepared(reference)[0]


def test_loveda_release_zips_give_the_crops_of_the_unpacked_folders(tmp_path, capsys):
    unpacked = tmp_path / "unpacked"
    write_loveda(unpacked)
    zipped = tmp_path / "zips"
    for split in ("Train", "Val", "Test"):
        zip_release(zipped / f"{split}.zip", members(unpacked / split, f"{split}/"))
    capsys.readouterr()
    same_crops("loveda", unpacked, zipped, tmp_path, workers=2)  # the workers read the members too
    err = capsys.readouterr().err
    assert f"loveda: skipping {zipped / 'Test.zip' / 'Test'}" in err


def test_uavid_release_zip_gives_the_crops_of_the_unpacked_folders(tmp_path):
    unpacked = tmp_path / "unpacked"
    top = "uavid_v1.5_official_release_image"
    write_uavid(unpacked / top, frames=("000000",))
    zipped = tmp_path / "zips"
    zip_release(zipped / f"{top}.zip", members(unpacked / top, f"{top}/"))
    same_crops("uavid", unpacked, zipped, tmp_path, crop=32)


# ------------------------------------------------------------------------------------------- the walk
def test_an_archive_is_walked_as_the_folder_it_unpacks_into(tmp_path):
    write_loveda(tmp_path / "x", {("Train", "Urban"): (1366,)})
    archive = zip_release(tmp_path / "dl" / "Train.zip", members(tmp_path / "x" / "Train", "Train/"))
    with zipfile.ZipFile(archive, "a") as out:
        out.writestr("__MACOSX/Train/Urban/images_png/._1366.png", b"resource fork")  # macOS's zip adds these
    image = archive / "Train/Urban/images_png/1366.png"
    assert archive_member(image) == (archive, "Train/Urban/images_png/1366.png")
    assert archive_member(archive) == (archive, "") and archive_member(tmp_path / "dl") is None
    assert archive_member(tmp_path / "dl" / "nothing" / "a.png") is None
    assert is_file(image) and not is_file(archive / "Train/Urban/images_png/9.png")
    assert file_size(image) == (tmp_path / "x/Train/Urban/images_png/1366.png").stat().st_size
    assert list(subfolders(archive)) == ["train"]
    assert [p.relative_to(tmp_path / "dl").as_posix() for p in walk_folders(tmp_path / "dl")][1:] == [
        "Train.zip", "Train.zip/Train", "Train.zip/Train/Urban", "Train.zip/Train/Urban/images_png",
        "Train.zip/Train/Urban/masks_png",
    ]  # fmt: skip


# ------------------------------------------------------------------------------------- crafted archives
def _release_with(tmp_path: Path, name: str, data: bytes, info: zipfile.ZipInfo | None = None) -> Path:
    """A Potsdam source whose 2_Ortho_RGB.zip holds one more member (``info`` or ``name``)."""
    src = tmp_path / "src"
    unpacked = tmp_path / "unpacked"
    make_potsdam(unpacked, tiles=("2_10",), size=(60, 70))
    zip_release(src / "5_Labels_all.zip", members(unpacked / "5_Labels_all"))
    archive = zip_release(src / "2_Ortho_RGB.zip", members(unpacked / "2_Ortho_RGB", "2_Ortho_RGB/"))
    with zipfile.ZipFile(archive, "a") as out:
        out.writestr(info or zipfile.ZipInfo(name), data)
    shutil.rmtree(unpacked)
    return src


def _symlink(tmp_path):
    info = zipfile.ZipInfo("2_Ortho_RGB/top_potsdam_2_11_RGB.tif")
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return _release_with(tmp_path, "", b"/etc/passwd", info), ["symbolic link", "top_potsdam_2_11_RGB.tif"]


def _declared(tmp_path, size: int) -> Path:
    """A stored member whose headers (the local one and the central one) declare ``size`` bytes uncompressed."""
    src = _release_with(tmp_path, "2_Ortho_RGB/bomb.tif", b"x" * 64)
    archive = src / "2_Ortho_RGB.zip"
    data = bytearray(archive.read_bytes())
    for found in re.finditer(rb"PK\x01\x02", bytes(data)):
        start = found.start()
        length = struct.unpack_from("<H", data, start + 28)[0]
        if data[start + 46 : start + 46 + length] == b"2_Ortho_RGB/bomb.tif":
            struct.pack_into("<I", data, start + 24, size)
            struct.pack_into("<I", data, struct.unpack_from("<I", data, start + 42)[0] + 22, size)
            break
    else:
        raise AssertionError("no central header for the member")
    archive.write_bytes(bytes(data))
    return src


CRAFTED = {
    "zip-slip": lambda t: (_release_with(t, "../../evil.tif", b"owned"), ["'..'", "../../evil.tif"]),
    "absolute": lambda t: (_release_with(t, "/tmp/ctseg-evil.tif", b"owned"), ["absolute", "/tmp/ctseg-evil.tif"]),
    "backslash-slip": lambda t: (_release_with(t, "a\\..\\..\\evil.tif", b"owned"), ["'..'"]),
    "symlink": _symlink,
    "size-bomb": lambda t: (_declared(t, 0xFFFF_FFF0), ["4,294,967,280 bytes", f"{MAX_MEMBER_BYTES:,}", "bomb.tif"]),
    "ratio-bomb": lambda t: (_declared(t, 500_000_000), ["500,000,000 bytes uncompressed from 64", "bomb.tif"]),
    "not-a-zip": lambda t: (_not_a_zip(t), ["not a readable zip file", "2_Ortho_RGB.zip"]),
}


def _not_a_zip(tmp_path):
    src = tmp_path / "src"
    make_potsdam(src, tiles=("2_10",), size=(60, 70))
    (src / "2_Ortho_RGB.zip").write_bytes(b"<html>a login page, not the archive</html>\n")
    return src


@pytest.mark.parametrize("case", CRAFTED)
def test_a_crafted_archive_is_refused_in_one_line_with_nothing_written(case, tmp_path, capsys, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # a relative member would land here if it were written
    src, needles = CRAFTED[case](tmp_path)
    before = snapshot(tmp_path)
    capsys.readouterr()
    code = main(["prepare", "potsdam", "--src", str(src), "--dst", str(tmp_path / "out"), "--workers", "1"])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ctseg: error: archive "), err
    for needle in [str(src / "2_Ortho_RGB.zip"), *needles]:
        assert needle in lines[0], (needle, lines[0])
    assert snapshot(tmp_path) == before
    assert not Path("/tmp/ctseg-evil.tif").exists()


def test_a_vrt_member_is_refused_and_a_vrt_still_cannot_name_an_archive(tmp_path, capsys):
    secret = tmp_path / "secret.tif"
    write_geotiff(secret, np.zeros((60, 70, 3), np.uint8))
    vrt = (f'<VRTDataset rasterXSize="70" rasterYSize="60"><VRTRasterBand dataType="Byte" band="1"><SimpleSource>'
           f"<SourceFilename>{secret}</SourceFilename></SimpleSource></VRTRasterBand></VRTDataset>")  # fmt: skip
    src = _release_with(tmp_path, "2_Ortho_RGB/top_potsdam_2_11_RGB.tif", vrt.encode())
    make_potsdam(tmp_path / "labels", tiles=("2_11",), size=(60, 70))
    shutil.copy(tmp_path / "labels/5_Labels_all/top_potsdam_2_11_label.tif", src)
    capsys.readouterr()
    assert main(["prepare", "potsdam", "--src", str(src), "--dst", str(tmp_path / "out"), "--workers", "1"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "2_Ortho_RGB.zip/2_Ortho_RGB/top_potsdam_2_11_RGB.tif is a VRT" in lines[0], lines
    assert not (tmp_path / "out").exists()
    outside = tmp_path / "mosaic.vrt"  # a VRT on disk may not reach into a zip either (without --allow-outside)
    member = src / "2_Ortho_RGB.zip" / "2_Ortho_RGB/top_potsdam_2_10_RGB.tif"
    outside.write_text(vrt.replace(str(secret), f"/vsizip/{member}"))
    with pytest.raises(CtsegError, match=r"GDAL virtual file path.*--allow-outside"):
        check_raster(outside)


def test_archive_listing_is_checked_once_per_version(tmp_path):
    archive = zip_release(tmp_path / "a.zip", {"x/y.png": write_geotiff(tmp_path / "y.tif", np.zeros((4, 4, 3), "u1"))})
    first = list_archive(archive)
    assert first.folders[""] == (("x",), ()) and first.folders["x"] == ((), ("y.png",))
    assert list_archive(archive) is first
    with zipfile.ZipFile(archive, "a") as out:
        out.writestr("../z", b"")
    with pytest.raises(CtsegError, match=r"'\.\.'"):
        list_archive(archive)


# -------------------------------------------------------------------------------------- what the user hears
def test_potsdam_with_only_rgbir_images_names_the_rgb_download(tmp_path, capsys):
    unpacked = tmp_path / "unpacked"
    made = make_potsdam(unpacked, tiles=("2_10", "2_13"), size=(60, 70))
    src = tmp_path / "src"
    zip_release(src / "4_Ortho_RGBIR.zip", {f"4_Ortho_RGBIR/top_potsdam_{t}_RGBIR.tif": made[t].image for t in made})
    zip_release(src / "5_Labels_all.zip", members(unpacked / "5_Labels_all"))
    capsys.readouterr()
    assert main(["prepare", "potsdam", "--src", str(src), "--dst", str(tmp_path / "out")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    needles = ("only 2 tile(s) of other bands", "top_potsdam_2_10_RGBIR.tif", "top_potsdam_X_Y_RGB.tif",
               "2_Ortho_RGB.zip", "ISPRS 2D Semantic Labeling Contest's Potsdam download page", str(src))  # fmt: skip
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_notes_reach_a_stderr_that_is_not_a_terminal(tmp_path, capsys):
    """CI logs: the notes are plain stderr lines (after the crops are written), not only on a terminal."""
    src = tmp_path / "src"
    make_potsdam(src, tiles=("2_10", "2_13", "9_9"), size=(60, 70))
    capsys.readouterr()
    assert main(["prepare", "potsdam", "--src", str(src), "--dst", str(tmp_path / "out"), "--workers", "1"]) == 0
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert "potsdam: skipping 1 tile(s) in no split: 9_9" in lines
    assert any(line.startswith("potsdam: found 2 of 38 tiles (missing: ") for line in lines)
    assert "\r" not in err and "Traceback" not in err  # no progress bar in a log
    assert "crops" in out  # the summary table


def test_a_damaged_member_is_one_line_naming_it(tmp_path, capsys):
    unpacked = tmp_path / "unpacked"
    make_potsdam(unpacked, tiles=("2_10",), size=(60, 70))
    src = tmp_path / "src"
    zip_release(src / "5_Labels_all.zip", members(unpacked / "5_Labels_all"))
    archive = zip_release(src / "2_Ortho_RGB.zip", members(unpacked / "2_Ortho_RGB", "2_Ortho_RGB/"))
    info = zipfile.ZipFile(archive).infolist()[0]
    data = bytearray(archive.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + 200  # inside the member's deflated bytes
    data[start : start + 50] = bytes(50)
    archive.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["prepare", "potsdam", "--src", str(src), "--dst", str(tmp_path / "out")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ctseg: error: cannot read {archive}/2_Ortho_RGB/"), lines
    assert "damaged download" in lines[0] and not (tmp_path / "out").exists()


def test_a_tiff_header_is_read_from_the_first_bytes_only_when_they_hold_it_all(tmp_path):
    """read_header of a TIFF member decompresses only its first bytes when its one directory and the tag data lie
    there (as GDAL writes a new file); otherwise (a directory rewritten at the end, overviews) the member is read
    whole — the same header both ways."""
    import rasterio
    from rasterio.enums import Resampling

    from ctseg.data.raster import read_header
    from ctseg.safety.archives import HEADER_BYTES, tiff_header_size

    profile = {"driver": "GTiff", "height": 700, "width": 600, "count": 3, "dtype": "uint8"}  # over HEADER_BYTES
    first = tmp_path / "first.tif"
    with rasterio.open(first, "w", nodata=9, **profile) as ds:
        ds.write(np.full((3, 700, 600), 9, np.uint8))
    last = shutil.copy(first, tmp_path / "last.tif")
    with rasterio.open(last, "r+") as ds:  # the directory grows: GDAL rewrites it at the end of the file
        ds.update_tags(note="x" * 5000)
    pyramid = shutil.copy(first, tmp_path / "pyramid.tif")
    with rasterio.open(pyramid, "r+") as ds:
        ds.build_overviews([2, 4], Resampling.nearest)
    head = first.read_bytes()[:HEADER_BYTES]
    assert 0 < tiff_header_size(head) < 4096 and tiff_header_size(head[:200]) is None
    assert tiff_header_size(last.read_bytes()[:HEADER_BYTES]) is None
    assert tiff_header_size(pyramid.read_bytes()) is None and tiff_header_size(b"\x89PNG\r\n\x1a\n") is None
    archive = zip_release(tmp_path / "a.zip", {p.name: p for p in (first, last, pyramid)})
    for name in ("first.tif", "last.tif", "pyramid.tif"):
        header = read_header(archive / name)
        assert header == read_header(tmp_path / name) and header.nodata == 9 and header.height == 700


def test_a_zip_beside_its_unpacked_copy(tmp_path):
    """ISPRS: identical copies, the unpacked one is read; LoveDA / UAVid: a release folder found twice is one line."""
    make_potsdam(tmp_path / "p", tiles=("2_10", "2_13"), size=(60, 70))
    zip_release(tmp_path / "p/2_Ortho_RGB.zip", members(tmp_path / "p/2_Ortho_RGB", "2_Ortho_RGB/"))
    tiles, _ = discover_isprs("potsdam", tmp_path / "p")
    assert [t.image.parent for t in tiles] == [tmp_path / "p/2_Ortho_RGB"] * 2
    write_loveda(tmp_path / "l", {("Train", "Urban"): (1366,)})
    zip_release(tmp_path / "l/Train.zip", members(tmp_path / "l/Train", "Train/"))
    with pytest.raises(CtsegError, match=r"Train/ found twice: .*/l/Train and .*/l/Train\.zip/Train; keep one"):
        prepare_dataset("loveda", tmp_path / "l", tmp_path / "out", workers=1, progress=False)
