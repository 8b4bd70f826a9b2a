"""Query inputs a reviewer found mishandled: a tile file whose pixels were cut short, dates with an offset, empty
values, a GeoJSON ``crs`` below the top level, outputs that are links or FIFOs, and an output failure after the
search."""

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import threading

import pytest
from rasterio.shutil import copy as rio_copy

from rsretrieve.data.catalog import Catalog
from rsretrieve.files import write_file_atomic
from rsretrieve.index.filters import region_from_geojson
from rsretrieve.index.query import QueryError, _when
from rsretrieve.workspace import Workspace
from tests.conftest import ROOT, make_workspace, run_cli


def _one_line_error(r) -> str:
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0].removeprefix("rsretrieve query: error: ")


def _s2_file(ws) -> str:
    with Catalog(ws / "catalog.sqlite") as cat:
        return [s for s in cat.scenes() if s["sensor"] == "sentinel2"][0]["files"]["*"]


def test_a_tile_file_whose_pixels_were_cut_short_is_named_with_the_reason(small_workspace, tmp_path):
    # a COG keeps its header first: cut short by a download, it opens, and only reading its pixels fails. The error
    # named the workspace ("ws: Read failed. See previous exception for details."), and the API raised rasterio's
    cut = tmp_path / "S2B_MSIL2A_20230627T023916_CUT.tif"
    rio_copy(_s2_file(small_workspace), cut, driver="COG")
    os.truncate(cut, int(cut.stat().st_size * 0.6))
    line = _one_line_error(run_cli("query", "-w", small_workspace, "--tile", cut, "-k", "1"))
    assert line.startswith(f"{cut}: its pixels cannot be read (truncated or damaged): {cut.name}, band ")
    with pytest.raises(QueryError, match="its pixels cannot be read"):
        Workspace.open(small_workspace).query(cut, k=1)


@pytest.mark.parametrize(("value", "flag", "want"), [
    # fromisoformat read a date and its offset as that date at the offset's hour, in UTC
    ("2023-07-03+05:00", "start", dt.datetime(2023, 7, 3, tzinfo=dt.timezone(dt.timedelta(hours=5)))),
    ("2023-07-03-0300", "end", dt.datetime.combine(dt.date(2023, 7, 3), dt.time.max,
                                                   tzinfo=dt.timezone(dt.timedelta(hours=-3)))),
    # a date alone is the whole day; with Z it was its first second only
    ("2023-07-03Z", "end", dt.datetime.combine(dt.date(2023, 7, 3), dt.time.max, tzinfo=dt.timezone.utc)),
    ("20230703Z", "start", dt.datetime(2023, 7, 3, tzinfo=dt.timezone.utc)),
    ("2023-07-03", "end", dt.date(2023, 7, 3)),
    ("2023-07-03T05:00Z", "start", dt.datetime(2023, 7, 3, 5, tzinfo=dt.timezone.utc)),
    ("2023-07-03 05:00:00+02:00", "start", dt.datetime(2023, 7, 3, 5, tzinfo=dt.timezone(dt.timedelta(hours=2)))),
    ("2023-W27", "end", dt.date(2023, 7, 3)),  # an ISO week date: its Monday
    ("2023-W27-7Z", "end", dt.datetime.combine(dt.date(2023, 7, 9), dt.time.max, tzinfo=dt.timezone.utc)),
])
def test_dates_with_an_offset_mean_the_day_there(value, flag, want):
    assert _when(value, flag) == want


@pytest.mark.parametrize("value", ["2023-07-03x05", "2023-07-03T", "2023-7-3", ""])
def test_a_date_with_another_separator_is_refused(value):
    with pytest.raises(QueryError, match=f"start must be an ISO date .* got {value!r}"):
        _when(value, "start")  # 2023-07-03x05 was read as 05:00


def test_a_date_only_end_with_z_keeps_the_whole_day(small_workspace):
    w = Workspace.open(small_workspace)
    with Catalog(small_workspace / "catalog.sqlite") as cat:
        t = next(t for t in cat.tiles("t.sensor = 'sentinel1'"))
        when = dt.datetime.fromisoformat(cat.scene(t["scene_id"])["acquired"].replace("Z", "+00:00"))
    day = when.astimezone(dt.timezone.utc).date().isoformat()
    plain = [h.tile_id for h in w.query(tile_id=t["tile_id"], k=5, end=day).hits]
    assert t["tile_id"] in plain
    assert [h.tile_id for h in w.query(tile_id=t["tile_id"], k=5, end=day + "Z").hits] == plain


@pytest.mark.parametrize(("args", "message"), [
    (["--tile", ""], "tile must not be empty, got ''"),  # searched the working folder for scenes
    (["--tile-id", "1", "--within", ""], "within must not be empty, got ''"),  # "region file . cannot be read"
    (["--tile-id", "1", "--geojson", ""], "--geojson needs a file name, got ''"),
    (["--tile-id", "1", "--geojson", "OUT/same.png", "--png", "OUT/same.png"],
     "--geojson and --png name the same file OUT/same.png; give each its own"),
])
def test_empty_values_and_one_file_for_two_outputs_are_refused(small_workspace, tmp_path, args, message):
    args = [a.replace("OUT", str(tmp_path)) for a in args]
    assert _one_line_error(run_cli("query", "-w", small_workspace, *args)) == message.replace("OUT", str(tmp_path))
    assert not (tmp_path / "same.png").exists()


def test_the_api_refuses_an_empty_sensor_and_a_bbox_that_is_a_number(small_workspace):
    w = Workspace.open(small_workspace)
    with pytest.raises(QueryError, match="^sensor must not be empty, got ''$"):  # was: no sensor given
        w.query(_s2_file(small_workspace), sensor="", k=1)
    with pytest.raises(QueryError, match="^bbox must be W,S,E,N .*, got 5$"):  # a TypeError before
        w.query(tile_id=1, bbox=5, k=1)


@pytest.mark.parametrize(("doc", "where"), [
    ({"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {}, "crs": "CRS",
                                                 "geometry": "POLY"}]}, "feature 0"),
    ({"type": "Feature", "properties": {}, "geometry": "POLY_WITH_CRS"}, "the geometry of the Feature"),
])
def test_a_crs_below_the_top_level_is_refused_as_at_the_top(doc, where):
    # coordinates in metres under a feature's or a geometry's crs were searched as degrees
    crs = {"type": "name", "properties": {"name": "EPSG:3857"}}
    poly = {"type": "Polygon", "coordinates": [[[10, 40], [11, 40], [11, 41], [10, 40]]]}
    text = json.dumps(doc).replace('"CRS"', json.dumps(crs)).replace('"POLY"', json.dumps(poly))
    text = text.replace('"POLY_WITH_CRS"', json.dumps({**poly, "crs": crs}))
    with pytest.raises(ValueError) as e:
        region_from_geojson(json.loads(text), "region file r.geojson")
    assert str(e.value) == (f"region file r.geojson has CRS 'EPSG:3857' ({where}); only EPSG:4326 / CRS84 lon/lat "
                            "is accepted")


def test_a_link_output_replaces_the_file_it_points_to_and_stays_a_link(small_workspace, tmp_path):
    target = tmp_path / "kept" / "hits.geojson"
    target.parent.mkdir()
    target.write_text("earlier")
    link = tmp_path / "hits.geojson"
    link.symlink_to(target)
    r = run_cli("query", "-w", small_workspace, "--tile-id", "1", "-k", "2", "--geojson", link)
    assert r.returncode == 0, r.stderr
    assert link.is_symlink() and os.readlink(link) == str(target)  # the rename replaced the link itself
    assert json.loads(target.read_text())["type"] == "FeatureCollection"


def test_a_fifo_is_written_into_not_replaced(tmp_path):
    fifo = tmp_path / "out.geojson"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(open(fifo, "rb").read()), daemon=True)
    reader.start()
    write_file_atomic(fifo, lambda p: p.write_bytes(b'{"type": "FeatureCollection"}'))
    reader.join(10)
    assert got == [b'{"type": "FeatureCollection"}']
    assert fifo.is_fifo()  # a regular file took its place


def test_a_write_that_fails_names_the_file_not_its_temporary(tmp_path):
    import errno

    def full_disk(tmp):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp))

    target = tmp_path / "new" / "hits.geojson"  # a missing folder is made
    with pytest.raises(OSError) as e:
        write_file_atomic(target, full_disk)
    assert (e.value.errno, e.value.filename) == (errno.ENOSPC, str(target))
    assert list((tmp_path / "new").iterdir()) == []  # the temporary file removed


def test_a_contact_sheet_that_fails_leaves_no_geojson_either(tmp_path):
    ws = make_workspace(tmp_path, scenes=1, size_m=960)
    s2 = next((tmp_path / "archive" / "sentinel2").glob("*.tif"))
    shutil.move(s2, tmp_path / "moved.tif")  # a hit's scene file, moved away after ingest
    r = run_cli("query", "-w", ws, "--tile-id", "1", "--target-sensors", "sentinel2", "-k", "2", "--geojson",
                tmp_path / "hits.geojson", "--png", tmp_path / "sheet.png")
    assert "--png: cannot read tile" in _one_line_error(r)
    assert not (tmp_path / "hits.geojson").exists() and not (tmp_path / "sheet.png").exists()


def test_a_link_cycle_and_a_broken_link_are_named_as_links(small_workspace, tmp_path):
    (tmp_path / "a.tif").symlink_to(tmp_path / "b.tif")
    (tmp_path / "b.tif").symlink_to(tmp_path / "a.tif")
    (tmp_path / "broken.tif").symlink_to(tmp_path / "nothing.tif")
    w = Workspace.open(small_workspace)
    with pytest.raises(QueryError) as e:  # both were "no such file or directory"
        w.query(tmp_path / "a.tif", k=1)
    assert str(e.value) == f"{tmp_path / 'a.tif'}: too many levels of symbolic links (a cycle of links)"
    with pytest.raises(QueryError) as e:
        w.query(tmp_path / "broken.tif", k=1)
    assert str(e.value) == f"{tmp_path / 'broken.tif'}: a link to {tmp_path / 'nothing.tif'}, which does not exist"


def test_a_mask_file_given_as_the_query_tile_is_named_as_a_companion(small_workspace, real_data):
    mask = next(real_data.glob("enmap_hyspecnet11k/*/*-QL_PIXELMASK.TIF"), None)
    if mask is None:
        pytest.skip(f"no EnMAP QL_PIXELMASK file under {real_data}")
    with pytest.raises(QueryError) as e:  # "not a raster file (.TIF)": it is one
        Workspace.open(small_workspace).query(mask, k=1)
    assert str(e.value) == (f"{mask}: named as a scene's mask or auxiliary file (a companion of a scene), not as a "
                            "scene: give the scene's own file")


def test_a_link_to_a_missing_file_makes_that_file_and_a_cycle_is_refused(tmp_path):
    (tmp_path / "dangling.geojson").symlink_to("made.geojson")
    write_file_atomic(tmp_path / "dangling.geojson", lambda p: p.write_bytes(b"{}"))
    assert (tmp_path / "dangling.geojson").is_symlink()  # it was replaced by a regular file
    assert (tmp_path / "made.geojson").read_bytes() == b"{}"
    (tmp_path / "c1").symlink_to("c2")
    (tmp_path / "c2").symlink_to("c1")
    with pytest.raises(OSError) as e:  # a regular file replaced one link of the cycle
        write_file_atomic(tmp_path / "c1", lambda p: p.write_bytes(b"{}"))
    assert e.value.filename == str(tmp_path / "c1") and "cycle of links" in e.value.strerror
    assert (tmp_path / "c1").is_symlink() and (tmp_path / "c2").is_symlink()


def test_dev_stdout_redirected_to_a_file_is_refused_and_the_file_kept(small_workspace, tmp_path):
    # the file behind /dev/stdout was replaced by the GeoJSON: what the shell had appended to it was lost, and the
    # table printed after it went to the replaced file
    log = tmp_path / "q.log"
    log.write_text("earlier\n")
    with open(log, "a") as out:
        r = subprocess.run([sys.executable, "-m", "rsretrieve.cli", "query", "-w", str(small_workspace), "--tile-id",
                            "1", "-k", "2", "--geojson", "/dev/stdout"], stdout=out, stderr=subprocess.PIPE,
                           text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 2 and r.stderr == (f"rsretrieve query: error: --geojson /dev/stdout: a link to the file "
                                              f"{log} (a redirected standard stream?); name that file instead\n")
    assert log.read_text() == "earlier\n"
