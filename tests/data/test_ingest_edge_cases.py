"""Scenes a review found mishandled: each is tiled right or refused in one line, and the rest of the run committed."""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine, from_origin

from rsretrieve.data.catalog import Catalog
from rsretrieve.data.grid import Cell, parse_cell_id
from rsretrieve.data.ingest import ingest
from tests.conftest import ROOT, s1_scene, write_tif

S2 = "S2A_MSIL2A_20200101T100000"


def _s2(path, transform, crs="EPSG:32633", height=100, width=140, interleave="pixel", seed=0):
    """A 12-band uint16 Sentinel-2 L2A file, every pixel valid (500..2999, nodata 0)."""
    data = np.random.default_rng(seed).integers(500, 3000, (12, height, width)).astype("uint16")
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", count=12, height=height, width=width, dtype="uint16", crs=crs,
                       transform=transform, nodata=0, interleave=interleave) as dst:
        dst.write(data)
    return path


def _rejected(stderr):
    return [line for line in stderr.splitlines() if line.startswith("rejected: ")]


def _tiles(ws):
    con = sqlite3.connect(ws / "catalog.sqlite")
    rows = con.execute("SELECT s.key, t.cell_id, t.col_off, t.row_off, t.width, t.height FROM tiles t "
                       "JOIN scenes s USING(scene_id)").fetchall()
    con.close()
    return rows


# -- 1: geographic scenes next to the antimeridian ------------------------------------------------------------------
def _window_centre_matches_cell(transform, cell_id, c0, r0, w, h):
    """The tile window's centre, through the scene's transform, is the cell's centre (mod 360) within 1.5 px."""
    lon, lat = transform @ (c0 + w / 2, r0 + h / 2)
    clon, clat = Cell(*parse_cell_id(cell_id)).center_lonlat()
    dlon = (lon - clon + 180.0) % 360.0 - 180.0
    return abs(dlon) <= 1.5 * transform.a and abs(lat - clat) <= 1.5 * abs(transform.e)


def test_epsg4326_scenes_at_the_antimeridian_are_tiled_in_zone_1_and_60_windows_on_the_cells(cli, tmp_path):
    d = tmp_path / "archive"
    t_west = from_origin(-179.999, -17.0, 0.0001, 0.0001)  # just east of -180: zone 1, west cells reach past it
    t_cross = from_origin(179.99, -17.0, 0.0001, 0.0001)  # 179.99 .. 180.01: across the antimeridian
    t_east = from_origin(179.985, -17.0, 0.0001, 0.0001)  # just west of +180: zone 60
    west = _s2(d / "w" / f"{S2}_x.tif", t_west, crs="EPSG:4326")
    cross = _s2(d / "c" / f"{S2}_y.tif", t_cross, crs="EPSG:4326", width=200)
    east = _s2(d / "e" / f"{S2}_z.tif", t_east, crs="EPSG:4326")
    good = s1_scene(d / "S1A_IW_GRDH_1SDV_20210101T000000_good.tif")
    r = cli("ingest", d, "--workspace", tmp_path / "ws")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "WindowError" not in r.stderr
    assert "4 scenes added" in r.stdout
    tiles = _tiles(tmp_path / "ws")
    by_scene = {k: [t for t in tiles if t[0] == k] for k in (str(west), str(cross), str(east), str(good))}
    assert all(by_scene.values()), {k: len(v) for k, v in by_scene.items()}
    assert {t[1][:3] for t in by_scene[str(west)]} == {"01S"}
    assert {t[1][:3] for t in by_scene[str(east)]} == {"60S"}
    assert {t[1][:3] for t in by_scene[str(cross)]} <= {"01S", "60S"}  # its centre is on 180: never zone 31
    for key, transform in ((str(west), t_west), (str(cross), t_cross), (str(east), t_east)):
        for _, cid, c0, r0, w, h in by_scene[key]:
            assert _window_centre_matches_cell(transform, cid, c0, r0, w, h), (key, cid, c0, r0, w, h)
    # 1.4 km x 1.1 km at 480 m: the westernmost column of cells (west of -180) is kept where it is covered
    assert min(c0 for *_, c0, _, _, _ in by_scene[str(west)]) < 0
    # the crossing scene has tiles on both sides of 180 degrees (~1 km each side)
    lons = [(t_cross @ (c0 + w / 2, 0))[0] for _, _, c0, _, w, _ in by_scene[str(cross)]]
    assert min(lons) < 180.0 < max(lons)


# -- 2: geotransforms that are not north-up -------------------------------------------------------------------------
def test_rotated_and_south_up_geotransforms_are_rejected_in_one_line_others_committed(cli, tmp_path):
    d = tmp_path / "archive"
    _s2(d / f"{S2}_rot.tif", from_origin(400_000, 5_400_000, 10, 10) @ Affine.rotation(20))
    _s2(d / f"{S2}_shear.tif", Affine(10, 2, 400_000, 0, -10, 5_400_000))
    _s2(d / f"{S2}_southup.tif", Affine(10, 0, 400_000, 0, 10, 5_398_000))
    good = s1_scene(d / "S1A_IW_GRDH_1SDV_20210101T000000_good.tif")
    r = cli("ingest", d, "--workspace", tmp_path / "ws")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    rejected = _rejected(r.stderr)
    assert len(rejected) == 3, r.stderr
    for name, reason in ((f"{S2}_rot.tif", "rotated or sheared geotransform"),
                         (f"{S2}_shear.tif", "rotated or sheared geotransform"),
                         (f"{S2}_southup.tif", "south-up geotransform (positive pixel height): flip it to north-up")):
        line = next(x for x in rejected if f"{d / name}: " in x)
        assert reason in line, line
    assert "warp it to a north-up grid first, e.g. gdalwarp" in next(x for x in rejected if "_rot.tif" in x)
    assert {t[0] for t in _tiles(tmp_path / "ws")} == {str(good)}


# -- 3: a band ingest does not read is truncated -------------------------------------------------------------------
def test_truncated_band_that_ingest_does_not_read_is_rejected_naming_file_and_band(cli, tmp_path):
    d = tmp_path / "archive"
    # band-interleaved: band k's pixels are the k-th 28 000-byte run, so cutting 1.5 bands off the end loses the
    # tail of band 11 and all of band 12, which ingest (B2, B3, B4: the 10 m reference and the cloud test) never reads
    p = _s2(tmp_path / "src" / f"{S2}_cut.tif", from_origin(400_000, 5_400_000, 10, 10), interleave="band")
    full = p.read_bytes()
    (d / p.name).parent.mkdir(parents=True)
    (d / p.name).write_bytes(full[: len(full) - int(1.5 * 140 * 100 * 2)])
    good = s1_scene(d / "S1A_IW_GRDH_1SDV_20210101T000000_good.tif")
    r = cli("ingest", d, "--workspace", tmp_path / "ws")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    (line,) = _rejected(r.stderr)
    # the scene is the file: its name is said once, by the path the line starts with
    assert line.startswith(f"rejected: {d / p.name}: truncated or unreadable (band 11): "), line
    assert line.count(p.name) == 1, line
    assert {t[0] for t in _tiles(tmp_path / "ws")} == {str(good)}


def test_truncated_b12_of_a_real_bigearthnet_product_is_rejected(real_data, tmp_path):
    src = real_data / "bigearthnet_mm" / "S2" / "S2A_MSIL2A_20170613T101031_87_48"
    d = tmp_path / src.name
    shutil.copytree(src, d)
    (b12,) = d.glob("*_B12.tif")
    os.chmod(b12, 0o644)
    with open(b12, "r+b") as f:
        f.truncate(1500)
    good = s1_scene(tmp_path / "S1A_IW_GRDH_1SDV_20210101T000000_good.tif")
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        report = ingest([d, good], cat)
        # the scene is the product (its key the folder and prefix): the band file at fault is named
        assert [p.reason.split(": ")[:2] for p in report.problems] == [[b12.name, "truncated or unreadable (band 1)"]]
        assert [s["key"] for s in cat.scenes()] == [str(good)]


def test_truncated_file_of_a_stac_item_is_rejected_naming_the_file(tmp_path):
    """The scene of a STAC item is keyed by the item: its stacked file at fault is named in the reason."""
    full = s1_scene(tmp_path / "src" / "vvvh.tif").read_bytes()
    d = tmp_path / "archive"
    d.mkdir()
    (d / "vvvh.tif").write_bytes(full[: len(full) * 2 // 3])
    item = {"type": "Feature", "stac_version": "1.0.0", "id": "cut", "geometry": None, "links": [],
            "properties": {"datetime": "2021-01-01T00:00:00Z", "platform": "sentinel-1a"},
            "assets": {"data": {"href": "vvvh.tif", "roles": ["data"], "eo:bands": [{"name": "VV"}, {"name": "VH"}]}}}
    (d / "item.json").write_text(json.dumps(item))
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        report = ingest([d / "item.json"], cat)
    assert [(p.path, p.reason.split(" (")[0]) for p in report.problems] == [
        (str(d / "item.json"), "vvvh.tif: truncated or unreadable")]


# -- 4: scenes that make no tile -------------------------------------------------------------------------------------
def test_scene_smaller_than_a_cell_is_rejected_not_committed_with_zero_tiles(cli, tmp_path):
    d = tmp_path / "archive"
    tiny = write_tif(d / f"{S2}_tiny.tif", np.full((12, 5, 5), 1000, "uint16"), nodata=0)  # 50 m x 50 m
    good = s1_scene(d / "S1A_IW_GRDH_1SDV_20210101T000000_good.tif")
    r = cli("ingest", d, "--workspace", tmp_path / "ws")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert _rejected(r.stderr) == [f"rejected: {tiny}: no grid cell of 480 m is covered to --min-coverage 0.25 "
                                   "(the scene is 5 x 5 px of 10 m); nothing to tile"]
    assert "1 scenes added" in r.stdout and {t[0] for t in _tiles(tmp_path / "ws")} == {str(good)}


def test_scene_much_smaller_than_a_large_tile_size_is_rejected(tmp_path):
    p = s1_scene(tmp_path / "S1A_IW_GRDH_1SDV_20210101T000000_x.tif", size=200)  # 2 km at 10 m
    with Catalog(tmp_path / "c.sqlite", tile_m=100_000) as cat:
        report = ingest([p], cat)
        assert report.added == 0 and cat.scenes() == []
    assert [p.reason for p in report.problems] == [
        "no grid cell of 100000 m is covered to --min-coverage 0.25 (the scene is 200 x 200 px of 10 m); nothing "
        "to tile"]


# -- 5: STAC item with a time range ---------------------------------------------------------------------------------
def test_stac_item_with_null_datetime_is_acquired_at_its_start_datetime(tmp_path):
    s1_scene(tmp_path / "vvvh.tif")
    item = {"type": "Feature", "stac_version": "1.0.0", "id": "range", "geometry": None, "links": [],
            "properties": {"datetime": None, "start_datetime": "2021-01-01T06:30:00Z",
                           "end_datetime": "2021-01-02T00:00:00Z"},
            "assets": {"data": {"href": "vvvh.tif", "roles": ["data"],
                                "eo:bands": [{"name": "VV"}, {"name": "VH"}]}}}
    (tmp_path / "range.json").write_text(json.dumps(item))
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        report = ingest([tmp_path / "range.json"], cat)
        assert report.problems == [] and report.added == 1
        (s,) = cat.scenes()
    assert s["acquired"] == "2021-01-01T06:30:00Z"


# -- 6: workers die with the parent ---------------------------------------------------------------------------------
def _children(pid):
    """PIDs of the pool workers (multiprocessing spawn_main) whose parent is ``pid``."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and b"spawn_main" in cmd:
            out.append(int(entry))
    return out


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_kill_9_of_ingest_with_workers_takes_the_workers_down_too(tmp_path):
    d = tmp_path / "archive"
    for i in range(40):
        s1_scene(d / f"S1A_IW_GRDH_1SDV_202101{i % 28 + 1:02d}T000000_{i}.tif", seed=i, size=384,
                 origin=(500_000.0 + 4000 * i, 5_000_000.0))
    p = subprocess.Popen([sys.executable, "-m", "rsretrieve.cli", "ingest", str(d), "--workspace",
                          str(tmp_path / "ws"), "--workers", "2"], cwd=ROOT, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        t_end = time.monotonic() + 120
        while len(workers := _children(p.pid)) < 2 and p.poll() is None and time.monotonic() < t_end:
            time.sleep(0.01)
        assert len(workers) == 2 and p.poll() is None, "the ingest ended before its workers were seen"
        p.send_signal(signal.SIGKILL)
        p.wait()
        t_end = time.monotonic() + 10
        while any(map(_alive, workers)) and time.monotonic() < t_end:
            time.sleep(0.05)
        left = [w for w in workers if _alive(w)]
        for w in left:  # do not leave them behind if the test fails
            os.kill(w, signal.SIGKILL)
        assert left == []
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


# -- 7: Landsat Collection 2 companions ----------------------------------------------------------------------------
LANDSAT_COMPANIONS = ["QA_PIXEL", "QA_RADSAT", "SR_QA_AEROSOL", "ST_B10", "ST_QA", "ST_TRAD", "ST_URAD", "ST_DRAD",
                      "ST_ATRAN", "ST_EMIS", "ST_EMSD", "ST_CDIST"]


def test_landsat_c2_l2_companion_files_are_attached_as_aux_not_rejected(tmp_path):
    prefix = "LC08_L2SP_044034_20200927_20201006_02_T1"
    d = tmp_path / prefix
    rng = np.random.default_rng(0)
    kw = dict(crs="EPSG:32610", origin=(499_200.0, 4_200_000.0), res=30.0)  # on cell corners
    for b in range(1, 8):
        write_tif(d / f"{prefix}_SR_B{b}.TIF", rng.integers(7000, 20000, (64, 64)).astype("uint16"), nodata=0, **kw)
    for name in LANDSAT_COMPANIONS:
        write_tif(d / f"{prefix}_{name}.TIF", np.ones((64, 64), "uint16"), **kw)
    (d / f"{prefix}_MTL.txt").write_text("GROUP = LANDSAT_METADATA_FILE\n")
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        report = ingest([d], cat)
        assert report.problems == [] and report.added == 1
        (s,) = cat.scenes()
    assert s["sensor"] == "landsat8" and sorted(s["aux"]) == sorted(LANDSAT_COMPANIONS)
    assert s["aux"]["QA_PIXEL"] == str(d / f"{prefix}_QA_PIXEL.TIF")
    assert s["n_tiles"] == 16  # 64 px x 30 m = 1920 m = 4 x 4 cells of 480 m, at a cell-aligned origin
