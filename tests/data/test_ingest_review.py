"""Defects found by a review of ``ingest`` and ``catalog`` pointed at real archives: malformed STAC items and CRSs
that are not on the Earth are rejected in one line each (they stopped the run with a traceback), ``--prune`` reaches
scenes found through a linked folder, an earlier version's duplicate of a scene is merged into it, and an edited STAC
item or sidecar is read again."""

import json
import os

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin

from rsretrieve.cli import main
from rsretrieve.data.catalog import Catalog
from rsretrieve.data.ingest import ingest
from tests.conftest import s1_scene, write_tif

ORIGIN = (600_000.0, 5_400_000.0)


def _s1_pair(folder):
    """A Sentinel-1 product as two band files VV.tif and VH.tif (dB), 960 m of ground."""
    rng = np.random.default_rng(0)
    for pol, mean in (("VV", -12.0), ("VH", -19.0)):
        write_tif(folder / f"{pol}.tif", (mean + rng.standard_normal((96, 96))).astype("float32"), crs="EPSG:32632",
                  origin=ORIGIN, nodata=float("nan"))
    return folder


def _item(folder, assets, properties=None):
    doc = {"type": "Feature", "stac_version": "1.0.0", "id": "x", "geometry": None,
           "properties": {"datetime": "2021-05-04T03:02:01Z"} if properties is None else properties,
           "assets": assets}
    (folder / "item.json").write_text(json.dumps(doc))
    return folder / "item.json"


_BANDS = {"vv": {"href": "./VV.tif", "roles": ["data"], "eo:bands": [{"name": "VV"}]},
          "vh": {"href": "./VH.tif", "roles": ["data"], "eo:bands": [{"name": "VH"}]}}


@pytest.mark.parametrize("assets, properties, why", [
    ([{"href": "./VV.tif"}], None, "its assets are a list, not an object of assets by key"),
    ({"vv": "./VV.tif"}, None, "asset 'vv' is a string, not an object"),
    ({"vv": {"href": None}}, None, "asset 'vv': its href is null, not a string"),
    ({"vv": {"href": "./VV\u0000.tif"}}, None, "asset 'vv': its href holds a NUL character"),  # ValueError
    ({"vv": {"href": "./VV.tif", "eo:bands": ["VV"]}}, None, "asset 'vv': its eo:bands lists a string, not a band "
                                                             "object"),
    ({"vv": {"href": "./VV.tif", "roles": [1]}}, None, "asset 'vv': its roles are a list, not a list of strings"),
    (_BANDS, [1], "its properties are a list, not an object"),
    (_BANDS, None, None),  # properties null
])
def test_a_malformed_stac_item_is_rejected_in_one_line_and_the_run_goes_on(tmp_path, capsys, assets, properties, why):
    """Each of these items stopped the whole ingest with a traceback (AttributeError, TypeError) from discover."""
    bad = _s1_pair(tmp_path / "bad")
    item = _item(bad, assets, properties)
    if why is None:
        doc = json.loads(item.read_text())
        doc["properties"] = None
        item.write_text(json.dumps(doc))
        why = "its properties are null, not an object"
    good = s1_scene(tmp_path / "good" / "S1A_IW_GRDH_1SDV_20230706T053000_dB.tif", crs="EPSG:32632", origin=ORIGIN)
    assert main(["ingest", str(tmp_path), "--workspace", str(tmp_path / "ws")]) == 1
    out, err = capsys.readouterr()
    assert err.splitlines() == [f"rejected: {item}: cannot read STAC item: {why}; the 2 rasters beside it are left "
                                "out until it can be read"]
    with Catalog(tmp_path / "ws" / "catalog.sqlite") as cat:
        assert [s["key"] for s in cat.scenes()] == [str(good)]


def test_a_stac_asset_whose_one_role_is_a_string_is_read_by_that_role(tmp_path):
    """``"roles": "metadata"`` (a string, not a list) was tested as ``"data" in "metadata"``: a substring, so the
    asset was taken for a band."""
    d = _s1_pair(tmp_path / "item")
    write_tif(d / "thumb.tif", np.zeros((1, 8, 8), np.uint8), crs="EPSG:32632", origin=ORIGIN)
    _item(d, {**{k: {**a, "roles": "data"} for k, a in _BANDS.items()},
              "thumb": {"href": "./thumb.tif", "roles": "metadata", "eo:bands": [{"name": "VV"}]}})
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        report = ingest([d / "item.json"], cat)
        assert report.problems == [] and report.added == 1
        (s,) = cat.scenes()
        assert s["files"] == {"VH": str(d / "VH.tif"), "VV": str(d / "VV.tif")}


@pytest.mark.parametrize("crs, origin, why", [
    (CRS.from_wkt('LOCAL_CS["lab bench",UNIT["metre",1]]'), (0.0, 960.0),
     "its CRS 'lab bench' is neither geographic nor projected (a local, engineering or geocentric CRS), so its pixels "
     "have no place on the grid: georeference it in a geographic or projected CRS first, e.g. gdalwarp -t_srs"),
    (CRS.from_string("IAU_2015:49900"), (10.0, 10.0),
     "its CRS 'Mars (2015) - Sphere / Ocentric' cannot be transformed to WGS 84 (EPSG:4326): Source and target "
     "ellipsoid do not belong to the same celestial body (Mars vs Earth); the grid's cells are on the Earth"),
])
def test_a_file_whose_crs_is_not_on_the_earth_is_rejected_in_one_line(tmp_path, capsys, crs, origin, why):
    """A local CRS stopped in rasterio's CRSError ("Linear units factor is not defined"), a Mars CRS in PROJ's error
    with the CRS's whole PROJJSON; both printed a traceback and an "unexpected error" line. The same for a band file
    and a land-cover raster."""
    res = 10.0 if crs.is_projected or not crs.is_geographic else 0.0001
    profile = dict(driver="GTiff", width=96, height=96, count=12, dtype="uint16", crs=crs,
                   transform=from_origin(*origin, res, res))
    stack = tmp_path / "a" / "S2A_MSIL2A_20230705T101559_stack.tif"
    stack.parent.mkdir()
    with rasterio.open(stack, "w", **profile) as d:
        d.write(np.full((12, 96, 96), 1500, np.uint16))
    lc = tmp_path / "a" / "field_landcover.tif"
    with rasterio.open(lc, "w", **{**profile, "count": 1, "dtype": "uint8"}) as d:
        d.write(np.full((1, 96, 96), 3, np.uint8))
    vv = tmp_path / "b" / "VV.tif"
    vv.parent.mkdir()
    for pol in ("VV", "VH"):
        with rasterio.open(vv.parent / f"{pol}.tif", "w", **{**profile, "count": 1, "dtype": "float32"}) as d:
            d.write(np.full((1, 96, 96), -12.0, np.float32))
    assert main(["ingest", str(tmp_path / "a"), str(tmp_path / "b"), "--workspace", str(tmp_path / "ws")]) == 1
    _, err = capsys.readouterr()
    assert sorted(err.splitlines()) == sorted([f"rejected: {lc}: {why}", f"rejected: {stack}: {why}",
                                               f"rejected: {vv.parent}/: band file VH.tif: {why}"])


def test_prune_reaches_the_scenes_of_a_folder_linked_into_the_archive(tmp_path, capsys):
    """``archive/linked -> ../disk2/s1``: its scenes are keyed by their resolved paths (under disk2), which lie under
    no path of the run, so ``ingest archive --prune`` never took out one whose file was deleted there. A scene of
    disk2 not reached through the link stays (it is not under the run's paths)."""
    disk2 = tmp_path / "disk2"
    a = s1_scene(disk2 / "s1" / "S1A_IW_GRDH_1SDV_20230705T053000_dB.tif", seed=5, crs="EPSG:32632", origin=ORIGIN)
    b = s1_scene(disk2 / "s1" / "S1A_IW_GRDH_1SDV_20230706T053000_dB.tif", seed=6, crs="EPSG:32632", origin=ORIGIN)
    c = s1_scene(disk2 / "other" / "S1A_IW_GRDH_1SDV_20230708T053000_dB.tif", seed=8, crs="EPSG:32632",
                 origin=ORIGIN)
    own = s1_scene(tmp_path / "archive" / "S1A_IW_GRDH_1SDV_20230707T053000_dB.tif", seed=7, crs="EPSG:32632",
                   origin=ORIGIN)
    os.symlink(disk2 / "s1", tmp_path / "archive" / "linked")
    ws = str(tmp_path / "ws")
    assert main(["ingest", str(tmp_path / "archive"), str(c), "--workspace", ws]) == 0
    a.unlink()
    c.unlink()
    capsys.readouterr()
    assert main(["ingest", str(tmp_path / "archive"), "--workspace", ws, "--prune"]) == 0
    out, err = capsys.readouterr()
    assert "; 0 rejected; 1 pruned\n" in out
    assert err.splitlines() == [f"pruned: {a}: its file {a.name} is gone: its 4 tiles are removed from the catalog "
                                "(the next `rsretrieve index` drops their vectors)"]
    with Catalog(tmp_path / "ws" / "catalog.sqlite") as cat:
        assert sorted(s["key"] for s in cat.scenes()) == sorted([str(b), str(c), str(own)])


def _as_earlier_version(db):
    """Make the catalog's stamps what ingest before reading rules were recorded left (bare fingerprints)."""
    import sqlite3

    con = sqlite3.connect(db)
    con.execute("UPDATE scenes SET fingerprint = substr(fingerprint, 1, instr(fingerprint, ' ') - 1)"
                " WHERE instr(fingerprint, ' ') > 0")
    con.commit()
    con.close()


def test_an_earlier_versions_scene_of_a_stac_items_band_files_is_merged_into_the_item(tmp_path, capsys):
    """An earlier version catalogued a product's band files as a scene (its STAC item was downloaded later). This
    version catalogues the item, a second scene of the same files; the earlier one stayed beside it ("not a scene
    now"), so every tile of the product was catalogued, and indexed, twice. Its files all being the item's bands, it
    is taken out; a scene under other rules keeps its line (a TCI of its own: no one's part)."""
    d = _s1_pair(tmp_path / "archive" / "s1")
    ws = tmp_path / "ws"
    assert main(["ingest", str(tmp_path / "archive"), "--workspace", str(ws)]) == 0
    _as_earlier_version(ws / "catalog.sqlite")
    item = _item(d, _BANDS)
    capsys.readouterr()
    assert main(["ingest", str(tmp_path / "archive"), "--workspace", str(ws)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("ingest: 1 scenes added, 0 replaced, 0 already in the catalog, 4 tiles;")
    assert err.splitlines() == [
        f"taken out: {d}/: now read as part of the scene {item}: its earlier version as a sentinel1 scene (4 tiles) is "
        "removed from the catalog, so that its pixels are not indexed twice (the next `rsretrieve index` drops its "
        "vectors)"]
    with Catalog(ws / "catalog.sqlite") as cat:
        assert [s["key"] for s in cat.scenes()] == [str(item)]
        assert cat.counts()["tiles"] == 4
    assert main(["ingest", str(tmp_path / "archive"), "--workspace", str(ws)]) == 0
    assert capsys.readouterr().err == ""


def test_an_earlier_versions_duplicate_stays_while_part_of_the_run_could_not_be_read(tmp_path, monkeypatch):
    from rsretrieve.data import ingest as ingest_mod

    d = _s1_pair(tmp_path / "archive" / "s1")
    db = tmp_path / "ws" / "catalog.sqlite"
    with Catalog(db, tile_m=480) as cat:
        assert ingest([tmp_path / "archive"], cat).added == 1
    _as_earlier_version(db)
    item = _item(d, _BANDS)
    real = ingest_mod.discover
    monkeypatch.setattr(ingest_mod, "discover", lambda paths, *a, **k: (lambda r: (r[0], r[1] + [ingest_mod.Problem(
        str(tmp_path / "archive" / "x"), "cannot read folder: Permission denied")]))(real(paths, *a)))
    with Catalog(db, tile_m=480) as cat:
        report = ingest([tmp_path / "archive"], cat)
        assert report.added == 1 and report.retired == [] and [p.path for p in report.unseen] == [f"{d}/"]
        assert sorted(s["key"] for s in cat.scenes()) == sorted([f"{d}/", str(item)])


def _scenes(db):
    with Catalog(db) as cat:
        return {s["key"]: (s["scene_id"], s["acquired"]) for s in cat.scenes()}


def test_an_edited_stac_item_is_read_again(tmp_path, capsys):
    """A STAC item whose datetime was corrected after ingest: its rasters unchanged, the run skipped it as "already in
    the catalog" for good, and the catalog kept the wrong date. It is read again now; an item touched but saying the
    same keeps its scene, its tile ids and so its vectors."""
    d = _s1_pair(tmp_path / "archive")
    item = _item(d, _BANDS)
    ws = tmp_path / "ws"
    assert main(["ingest", str(d), "--workspace", str(ws)]) == 0
    (sid, acquired), = _scenes(ws / "catalog.sqlite").values()
    assert acquired == "2021-05-04T03:02:01Z"
    doc = json.loads(item.read_text())
    doc["properties"]["datetime"] = "2021-05-14T03:02:01Z"
    item.write_text(json.dumps(doc))
    capsys.readouterr()
    assert main(["ingest", str(d), "--workspace", str(ws)]) == 0
    assert capsys.readouterr().out.startswith("ingest: 0 scenes added, 1 replaced, 0 already in the catalog, 4 tiles")
    (sid2, acquired), = _scenes(ws / "catalog.sqlite").values()
    assert acquired == "2021-05-14T03:02:01Z" and sid2 != sid
    item.write_text(json.dumps(doc, indent=1))  # the same, written again
    assert main(["ingest", str(d), "--workspace", str(ws)]) == 0
    assert capsys.readouterr().out.startswith("ingest: 0 scenes added, 0 replaced, 1 already in the catalog, 0 tiles")
    assert _scenes(ws / "catalog.sqlite") == {str(item): (sid2, acquired)}


def test_a_sidecar_added_after_ingest_gives_its_scene_a_date_and_an_older_stamp_is_kept(tmp_path, capsys):
    """An Earth Engine export ``export_1.tif`` ingested before its ``export_1.json`` was downloaded has no date; the
    sidecar's later arrival changed nothing (the raster was unchanged). A scene stamped by a version that did not
    record its sidecars keeps its tiles when the sidecar is older than its ingest (nothing is read), and is read
    again when the sidecar is newer."""
    import sqlite3
    import time

    stack = tmp_path / "a" / "export_1.tif"
    write_tif(stack, np.full((12, 96, 96), 1500, np.uint16), crs="EPSG:32632", origin=ORIGIN, nodata=0,
              tags={"RSRETRIEVE_SENSOR": "sentinel2"})
    other = tmp_path / "b" / "export_2.tif"
    write_tif(other, np.full((12, 96, 96), 1500, np.uint16), crs="EPSG:32632", origin=ORIGIN, nodata=0,
              tags={"RSRETRIEVE_SENSOR": "sentinel2"})
    (other.parent / "export_2.json").write_text(json.dumps({"DATE_ACQUIRED": "2020-03-04"}))
    old = time.time() - 3600
    os.utime(other.parent / "export_2.json", (old, old))
    ws = tmp_path / "ws"
    assert main(["ingest", str(tmp_path / "a"), str(tmp_path / "b"), "--workspace", str(ws)]) == 0
    before = _scenes(ws / "catalog.sqlite")
    assert before[str(stack)][1] is None and before[str(other)][1] == "2020-03-04T00:00:00Z"
    # the stamps an earlier version wrote: no metadata recorded
    con = sqlite3.connect(ws / "catalog.sqlite")
    con.execute("UPDATE scenes SET fingerprint = substr(fingerprint, 1, instr(fingerprint, ' ') - 1) || ' rules=' ||"
                " substr(fingerprint, instr(fingerprint, ' rules=') + 7)")
    con.commit()
    con.close()
    time.sleep(0.05)
    (stack.parent / "export_1.json").write_text(json.dumps({"DATE_ACQUIRED": "2020-03-05"}))
    capsys.readouterr()
    assert main(["ingest", str(tmp_path / "a"), str(tmp_path / "b"), "--workspace", str(ws)]) == 0
    assert capsys.readouterr().out.startswith("ingest: 0 scenes added, 1 replaced, 1 already in the catalog")
    after = _scenes(ws / "catalog.sqlite")
    assert after[str(stack)][1] == "2020-03-05T00:00:00Z" and after[str(other)] == before[str(other)]
    with Catalog(ws / "catalog.sqlite") as cat:
        assert all(" meta=" in s["fingerprint"] for s in cat.scenes())
