"""Symbolic links in an archive: linked folders and files are followed, a link cycle ends the walk of that branch,
and a file reachable by several paths is one scene (keyed by its resolved path, whichever path led to it)."""

import json
import os
import shutil
import sqlite3

import pytest

from rsretrieve.data.catalog import Catalog
from rsretrieve.data.discover import discover
from rsretrieve.data.ingest import ingest
from tests.conftest import s1_scene

S1 = "S1A_IW_GRDH_1SDV_2021010{}T000000_{}.tif"


def _scene(folder, i, name):
    return s1_scene(folder / S1.format(i, name), seed=i, origin=(500_000.0 + 1000 * i, 5_000_000.0))


def _keys(ws):
    con = sqlite3.connect(ws / "catalog.sqlite")
    keys = sorted(k for (k,) in con.execute("SELECT key FROM scenes"))
    con.close()
    return keys


def test_scenes_in_a_symlinked_subfolder_are_ingested_keyed_by_their_real_path(cli, tmp_path):
    archive, disk = tmp_path / "archive", tmp_path / "other_disk" / "s2_scenes"
    here = _scene(archive / "s1", 1, "here")
    there = [_scene(disk, 2, "there"), _scene(disk / "deeper", 3, "deeper")]
    os.symlink(disk, archive / "s2")  # ARCHIVE/s2 -> a folder elsewhere
    r = cli("ingest", archive, "--workspace", tmp_path / "ws")
    assert r.returncode == 0, r.stderr
    assert "3 scenes added" in r.stdout
    assert _keys(tmp_path / "ws") == sorted(map(str, [here, *there]))
    # the same files through their own folder are the same scenes: nothing added twice
    r2 = cli("ingest", disk, "--workspace", tmp_path / "ws")
    assert r2.returncode == 0 and "0 scenes added, 0 replaced, 2 already in the catalog" in r2.stdout


def test_a_link_cycle_ends_and_every_scene_is_ingested_once(tmp_path):
    archive = tmp_path / "archive"
    a = _scene(archive / "a", 1, "a")
    b = _scene(archive / "a" / "b", 2, "b")
    os.symlink("..", archive / "a" / "b" / "up")  # a/b/up -> a: a cycle
    os.symlink(archive, archive / "a" / "root")  # a/root -> archive: a cycle through the top
    os.symlink("self", archive / "self")  # a link to itself: refused in one line
    sources, problems = discover([archive])
    assert sorted(s.key for s in sources) == sorted(map(str, [a, b]))
    assert [str(p) for p in problems] == [
        f"{archive / 'self'}: cannot read: too many levels of symbolic links (a cycle of links)"]


def test_a_file_reachable_by_several_paths_is_one_scene(tmp_path):
    archive = tmp_path / "archive"
    a = _scene(archive / "a", 1, "a")
    os.symlink(archive / "a", archive / "b")  # the folder a, twice
    os.symlink(a, archive / S1.format(1, "alias"))  # the file, under another name
    sources, problems = discover([archive, archive / "b", a])  # and named on the command line, twice more
    assert problems == []
    assert [s.key for s in sources] == [str(a)]
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        report = ingest([archive, archive / "b"], cat)
        assert (report.added, report.problems) == (1, [])
        assert [s["key"] for s in cat.scenes()] == [str(a)]


def test_a_per_band_product_in_a_symlinked_folder_is_one_scene(real_data, tmp_path):
    src = real_data / "bigearthnet_mm" / "S2" / "S2A_MSIL2A_20170613T101031_87_48"
    store = tmp_path / "store" / src.name
    shutil.copytree(src, store)
    archive = tmp_path / "archive"
    archive.mkdir()
    os.symlink(store.parent, archive / "S2")
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        report = ingest([archive], cat)
        assert report.problems == [] and report.added == 1
        (s,) = cat.scenes()
        assert (s["sensor"], s["key"]) == ("sentinel2", str(store / "S2A_MSIL2A_20170613T101031_87_48*"))
        assert len(s["files"]) == 12


@pytest.mark.parametrize("target", ["gone", "gone_dir/"])
def test_a_dangling_link_inside_a_folder_is_reported_and_the_rest_ingested(tmp_path, target):
    archive = tmp_path / "archive"
    a = _scene(archive, 1, "a")
    os.symlink(tmp_path / target, archive / "dangling")
    sources, problems = discover([archive])
    assert [s.key for s in sources] == [str(a)]
    assert [str(p) for p in problems] == [
        f"{archive / 'dangling'}: cannot read: No such file or directory (broken symbolic link)"]


@pytest.mark.parametrize("prune", [False, True])
def test_a_link_cycle_or_broken_link_given_as_a_path_is_rejected_and_the_rest_ingested(cli, tmp_path, prune):
    """A cycle of links named on the command line is one rejected line, as one inside a folder is (``Path.resolve``
    raised RuntimeError on it: a traceback, nothing committed)."""
    a = _scene(tmp_path / "archive", 1, "a")
    os.symlink("loop2", tmp_path / "loop1")
    os.symlink("loop1", tmp_path / "loop2")
    os.symlink("gone", tmp_path / "brokenlink.tif")
    r = cli("ingest", tmp_path / "loop1", tmp_path / "brokenlink.tif", tmp_path / "archive",
            "--workspace", tmp_path / "ws", *(["--prune"] if prune else []))
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "1 scenes added" in r.stdout and "2 rejected" in r.stdout
    assert f"rejected: {tmp_path / 'loop1'}: cannot read: too many levels of symbolic links (a cycle of links)" \
        in r.stderr.splitlines()
    assert f"rejected: {tmp_path / 'brokenlink.tif'}: cannot read: No such file or directory (broken symbolic link)" \
        in r.stderr.splitlines()
    assert _keys(tmp_path / "ws") == [str(a)]
    # the cycle on its own: one rejected line, exit 1
    r2 = cli("ingest", tmp_path / "loop1", "--workspace", tmp_path / "ws")
    assert r2.returncode == 1 and "Traceback" not in r2.stderr, r2.stderr
    assert "1 rejected" in r2.stdout and _keys(tmp_path / "ws") == [str(a)]


def test_a_stac_asset_that_is_a_cycle_of_links_is_refused_and_the_rest_ingested(tmp_path):
    archive = tmp_path / "archive"
    a = _scene(archive / "a", 1, "a")
    item_dir = archive / "item"
    item_dir.mkdir()
    os.symlink("b.tif", item_dir / "a.tif")
    os.symlink("a.tif", item_dir / "b.tif")
    item = {"type": "Feature", "stac_version": "1.0.0", "id": "x", "geometry": None, "links": [],
            "properties": {"datetime": "2021-01-01T00:00:00Z"},
            "assets": {"vv": {"href": "a.tif", "roles": ["data"], "eo:bands": [{"name": "VV"}]}}}
    (item_dir / "item.json").write_text(json.dumps(item))
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        report = ingest([archive, item_dir / "item.json"], cat)
        assert report.added == 1 and [s["key"] for s in cat.scenes()] == [str(a)]
    reasons = {p.path: p.reason for p in report.problems}
    assert reasons[str(item_dir / "a.tif")] == reasons[str(item_dir / "b.tif")] == (
        "cannot read: too many levels of symbolic links (a cycle of links)")
    assert reasons[str(item_dir / "item.json")].startswith("cannot read: ")
