"""Local STAC items: assets with local hrefs are ingested as one scene with the item's datetime."""

import json
from datetime import datetime, timezone

import numpy as np
import pystac
import pytest

from rsretrieve.data.catalog import Catalog
from rsretrieve.data.ingest import ingest
from tests.conftest import write_tif


def test_stac_item_with_per_band_assets(tmp_path):
    d = tmp_path / "item"
    rng = np.random.default_rng(0)
    for pol, mean in (("VV", -12.0), ("VH", -19.0)):
        write_tif(d / f"{pol.lower()}.tif", (mean + rng.standard_normal((96, 96))).astype("float32"),
                  nodata=float("nan"))
    item = pystac.Item(id="s1-test", geometry=None, bbox=None,
                       datetime=datetime(2021, 5, 4, 3, 2, 1, tzinfo=timezone.utc),
                       properties={"platform": "sentinel-1a"})
    for pol in ("VV", "VH"):
        item.add_asset(pol.lower(), pystac.Asset(href=f"./{pol.lower()}.tif", roles=["data"],
                                                 extra_fields={"eo:bands": [{"name": pol}]}))
    item.set_self_href(str(d / "item.json"))
    item.make_asset_hrefs_relative()
    item.save_object(include_self_link=False)
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        report = ingest([d], cat)
        assert report.problems == [] and report.added == 1  # the two tifs are not ingested a second time
        (s,) = cat.scenes()
        assert s["sensor"] == "sentinel1" and s["acquired"] == "2021-05-04T03:02:01Z"
        assert s["key"] == str(d / "item.json") and set(s["files"]) == {"VV", "VH"}
        assert s["n_tiles"] >= 4


def test_stac_item_with_only_remote_assets_is_rejected(tmp_path):
    item = pystac.Item(id="remote", geometry=None, bbox=None, datetime=datetime(2021, 1, 1, tzinfo=timezone.utc),
                       properties={})
    item.add_asset("B04", pystac.Asset(href="https://example.invalid/B04.tif", roles=["data"]))
    item.set_self_href(str(tmp_path / "remote.json"))
    item.save_object(include_self_link=False)
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        report = ingest([tmp_path / "remote.json"], cat)
    assert [str(p) for p in report.problems] == [
        f"{tmp_path / 'remote.json'}: STAC item has no raster asset with a local href"]


S2_COMMON = {"B01": "coastal", "B02": "blue", "B03": "green", "B04": "red", "B05": "rededge1", "B06": "rededge2",
             "B07": "rededge3", "B08": "nir", "B8A": "nir08", "B09": "nir09", "B11": "swir16", "B12": "swir22"}


def _s2_item(d, band_name, props, scl="SCL.tif"):
    """A Sentinel-2 L2A item with local assets: 12 bands (DN + 1000: baseline 05.09), SCL and the 3-band
    true-colour ``visual`` asset (role data, as both providers list it)."""
    item = pystac.Item(id="S2B_32UQD_20230705_0_L2A", geometry=None, bbox=None,
                       datetime=datetime(2023, 7, 5, 10, 15, 59, tzinfo=timezone.utc), properties=props)
    for b, common in S2_COMMON.items():
        write_tif(d / f"{b}.tif", np.full((48, 48), 1500, np.uint16), crs="EPSG:32632", origin=(600_000, 5_400_000),
                  nodata=0)
        item.add_asset(common, pystac.Asset(href=f"./{b}.tif", roles=["data"], extra_fields={
            "eo:bands": [{"name": band_name(b, common), "common_name": common}]}))
    cloud = np.full((24, 24), 4, np.uint8)
    cloud[:, :12] = 9  # SCL: cloud of high probability on the left half
    write_tif(d / scl, cloud, crs="EPSG:32632", origin=(600_000, 5_400_000), res=20)
    item.add_asset("scl", pystac.Asset(href=f"./{scl}", roles=["data"]))
    write_tif(d / "TCI.tif", np.full((3, 48, 48), 90, np.uint8), crs="EPSG:32632", origin=(600_000, 5_400_000))
    item.add_asset("visual", pystac.Asset(href="./TCI.tif", roles=["data"], extra_fields={
        "eo:bands": [{"name": "red"}, {"name": "green"}, {"name": "blue"}]}))
    item.set_self_href(str(d / "item.json"))
    item.make_asset_hrefs_relative()
    item.save_object(include_self_link=False)


def test_sentinel2_items_as_planetary_computer_and_earth_search_list_them(tmp_path):
    """Planetary Computer names each band asset's eo:band B04; Earth Search v1 names it ``red`` (its file B04.tif).
    Both are one sentinel2 scene, read with the baseline's offset, SCL and the true-colour image attached, and no
    band file ingested a second time (the visual asset made the whole item its 3-band TCI file, rejected)."""
    cases = {"pc": (lambda b, common: b, {"s2:processing_baseline": "05.09"}, "T32UQD_20230705T101559_SCL_20m.tif"),
             "es": (lambda b, common: common, {"s2:processing_baseline": "05.09",
                                               "earthsearch:boa_offset_applied": False}, "SCL.tif")}
    for name, (band_name, props, scl) in cases.items():
        _s2_item(tmp_path / name, band_name, props, scl)
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        report = ingest([tmp_path], cat)
        assert report.problems == [] and report.added == 2
        for s in cat.scenes():
            assert s["sensor"] == "sentinel2" and s["layout"] == "full+N0400", s["key"]
            assert set(s["files"]) == set(S2_COMMON) and len(s["aux"]) == 2 and "TCI" in s["aux"]
            assert s["acquired"] == "2023-07-05T10:15:59Z"
            assert s["cloud_fraction"] == pytest.approx(0.5)  # the item's SCL, whatever its file's name


def test_a_file_beside_a_stac_item_is_not_its_asset(tmp_path):
    """Another acquisition's SCL (all cloud) beside the item: the item's own SCL asset decides, not the stray."""
    _s2_item(tmp_path / "pc", lambda b, common: b, {"s2:processing_baseline": "05.09"},
             "T32UQD_20230705T101559_SCL_20m.tif")
    write_tif(tmp_path / "pc" / "S2A_MSIL2A_20230610T101559_N0509_R065_T32UQD_20230610T150000_SCL.tif",
              np.full((24, 24), 9, np.uint8), crs="EPSG:32632", origin=(600_000, 5_400_000), res=20)
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        report = ingest([tmp_path / "pc"], cat)
        assert report.problems == [] and report.added == 1
        (s,) = cat.scenes()
        assert s["cloud_fraction"] == pytest.approx(0.5) and len(s["aux"]) == 2


def _truncate(path):
    text = path.read_text()
    path.write_text(text[: len(text) // 2])  # a download cut short


def test_an_item_cut_short_is_reported_and_its_rasters_wait_for_it(tmp_path):
    """A STAC item that is not valid JSON: one line naming it and why, and the rasters beside it are not made into a
    scene of their own (they were: the 12 bands and the SCL, read without the item's baseline offset, as a second
    scene of the same files); a scene elsewhere in the same run is added as before."""
    _s2_item(tmp_path / "cut", lambda b, common: b, {"s2:processing_baseline": "05.09"})
    _s2_item(tmp_path / "whole", lambda b, common: b, {"s2:processing_baseline": "05.09"})
    _truncate(tmp_path / "cut" / "item.json")
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        report = ingest([tmp_path], cat)
        (problem,) = report.problems
        assert str(problem).startswith(f"{tmp_path / 'cut' / 'item.json'}: cannot read STAC item: not valid JSON: ")
        assert "(line " in str(problem)
        assert str(problem).endswith("; the 14 rasters beside it are left out until it can be read")
        assert report.added == 1
        assert [s["key"] for s in cat.scenes()] == [str(tmp_path / "whole" / "item.json")]


def test_an_item_cut_short_after_ingest_keeps_its_scene_and_adds_no_other(tmp_path):
    d = tmp_path / "pc"
    _s2_item(d, lambda b, common: b, {"s2:processing_baseline": "05.09"})
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        assert ingest([d], cat).added == 1
        before = [(s["key"], s["layout"], s["n_tiles"]) for s in cat.scenes()]
        _truncate(d / "item.json")
        report = ingest([d], cat, prune=True)
        assert report.added == 0 and len(report.problems) == 1 and not report.pruned
        assert [(s["key"], s["layout"], s["n_tiles"]) for s in cat.scenes()] == before


def test_json_that_is_not_a_stac_item_is_ignored_whatever_it_holds(tmp_path):
    """Sidecars and notes beside scenes: invalid JSON without ``stac_version`` (or not text) is no item, as before."""
    d = tmp_path / "s1"
    rng = np.random.default_rng(0)
    for pol, mean in (("VV", -12.0), ("VH", -19.0)):
        write_tif(d / f"S1A_IW_GRDH_1SDV_20210504T030201_{pol}.tif",
                  (mean + rng.standard_normal((96, 96))).astype("float32"), nodata=float("nan"))
    (d / "notes.json").write_text('{"comment": "half a')
    (d / "blob.json").write_bytes(b"\xff\xfe\x00garbage")
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        report = ingest([d], cat)
        assert report.problems == [] and report.added == 1


def test_an_item_supersedes_the_scene_its_files_made_without_it(tmp_path, capsys):
    """Band files ingested before their STAC item came (or while it was cut short) are a scene read without the
    item's properties (no baseline offset). The item, once it can be read, was refused as a second scene of the
    same files on every run, --prune or not; it now replaces that scene, which is taken out with a line."""
    from rsretrieve.cli import main

    d = tmp_path / "pc"
    _s2_item(d, lambda b, common: b, {"s2:processing_baseline": "05.09"})
    (d / "item.json").rename(tmp_path / "later.json")
    ws = tmp_path / "ws"
    assert main(["ingest", str(d), "--workspace", str(ws)]) == 0
    with Catalog(ws / "catalog.sqlite") as cat:
        (before,) = cat.scenes()
    assert before["key"] == str(d) + "/" and before["layout"] == "full"
    (tmp_path / "later.json").rename(d / "item.json")
    capsys.readouterr()
    assert main(["ingest", str(d), "--workspace", str(ws)]) == 0
    out, err = capsys.readouterr()
    assert "1 scenes added" in out
    assert err.splitlines() == [f"taken out: {d}/: its files are read with the STAC item {d / 'item.json'} now: its "
                                f"{before['n_tiles']} tiles are removed from the catalog (the next `rsretrieve index` "
                                "drops their vectors)"]
    with Catalog(ws / "catalog.sqlite") as cat:
        (after,) = cat.scenes()
    assert after["key"] == str(d / "item.json") and after["layout"] == "full+N0400"


def test_two_items_of_the_same_files_in_one_run_make_one_scene(tmp_path):
    d = tmp_path / "pc"
    _s2_item(d, lambda b, common: b, {"s2:processing_baseline": "05.09"})
    (d / "copy.json").write_text((d / "item.json").read_text())
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        report = ingest([d], cat)
        assert report.added == 1 and len(cat.scenes()) == 1
        (p,) = report.problems
        assert p.path == str(d / "item.json") and p.reason.startswith(
            f"its file B01.tif is already catalogued as part of the scene {d / 'copy.json'}")
        assert f"`rsretrieve catalog --remove {d / 'copy.json'}` takes that scene out" in p.reason


def test_an_item_superseding_a_scene_interrupted_leaves_no_second_scene(tmp_path, monkeypatch):
    """Interrupted between taking the superseded scene out and writing the item, the next run ends with the item
    alone (in the other order an interruption left both, the item then skipped as catalogued on every run)."""
    d = tmp_path / "pc"
    _s2_item(d, lambda b, common: b, {"s2:processing_baseline": "05.09"})
    (d / "item.json").rename(tmp_path / "later.json")
    db = tmp_path / "c.sqlite"
    with Catalog(db, tile_m=480) as cat:
        assert ingest([d], cat).added == 1
    (tmp_path / "later.json").rename(d / "item.json")

    def interrupted(self, key, fingerprint):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(Catalog, "remove_scene_version", interrupted)
        with Catalog(db, tile_m=480) as cat, pytest.raises(KeyboardInterrupt):
            ingest([d], cat)
    with Catalog(db, tile_m=480) as cat:
        report = ingest([d], cat)
        assert report.added == 1 and len(report.retired) == 1
        assert [s["key"] for s in cat.scenes()] == [str(d / "item.json")]


def test_a_refused_item_does_not_keep_out_a_good_one_nor_cost_the_scene_of_its_files(tmp_path):
    """Two items of the same files, the first (by name) refused: the files were claimed while planning, before either
    was read, so the good item was refused on every run with advice that could not work. And an item listing only
    four of a catalogued folder scene's twelve bands (refused) left the other eight to a new version of the folder's
    scene, whose refusal then deleted the complete, unchanged scene."""
    d = tmp_path / "pc"
    _s2_item(d, lambda b, common: b, {"s2:processing_baseline": "05.09"})
    doc = json.loads((d / "item.json").read_text())
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "B10.tif").write_bytes(b"II*\x00 cut short")
    doc["assets"]["cirrus"] = {"href": "../extra/B10.tif", "roles": ["data"], "eo:bands": [{"name": "B10"}]}
    (d / "copy.json").write_text(json.dumps(doc))
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        report = ingest([d], cat)
        assert report.added == 1 and [s["key"] for s in cat.scenes()] == [str(d / "item.json")]
        assert [p.path for p in report.problems] == [str(d / "copy.json")]
    e = tmp_path / "folder"
    _s2_item(e, lambda b, common: b, {"s2:processing_baseline": "05.09"})
    item = json.loads((e / "item.json").read_text())
    (e / "item.json").unlink()
    with Catalog(tmp_path / "d.sqlite", tile_m=480) as cat:
        assert ingest([e], cat).added == 1
        (before,) = cat.scenes()
        item["assets"] = {k: v for k, v in item["assets"].items() if k in ("blue", "green", "red", "nir")}
        (e / "item.json").write_text(json.dumps(item))
        report = ingest([e], cat)
        assert report.added == 0 and len(report.problems) == 2
        folder = next(p for p in report.problems if p.path == before["key"])
        assert folder.reason.endswith("; its earlier version stays in the catalog: its files are unchanged, and are "
                                      "found otherwise now (some taken by a STAC item, or files added beside them)")
        assert [(s["key"], s["scene_id"]) for s in cat.scenes()] == [(before["key"], before["scene_id"])]


def test_an_items_thumbnail_overview_and_metadata_rasters_are_left_out_quietly(tmp_path):
    """A ``thumb.tif`` (role ``thumbnail``), ``overview.tif`` (``overview``), a rendered ``preview.tif``
    (``visual``) and a ``granule.tif`` (``metadata``) beside the item's bands are the item's pictures, not scenes:
    each was rejected ("fit no registered sensor") and the run exited 1 over an item that was ingested. A raster of
    the folder the item does not list is still read as before."""
    d = tmp_path / "item"
    _s2_item(d, lambda b, common: b, {"s2:processing_baseline": "05.09"})
    item = pystac.Item.from_file(str(d / "item.json"))
    for key, role, count in (("thumbnail", "thumbnail", 3), ("overview", "overview", 1), ("preview", "visual", 3),
                             ("granule", "metadata", 1)):
        name = "thumb.tif" if key == "thumbnail" else f"{key}.tif"
        write_tif(d / name, np.full((count, 16, 16), 90, np.uint8), crs="EPSG:32632", origin=(600_000, 5_400_000),
                  res=30)
        item.add_asset(key, pystac.Asset(href=f"./{name}", roles=[role]))
    item.set_self_href(str(d / "item.json"))
    item.make_asset_hrefs_relative()
    item.save_object(include_self_link=False)
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        report = ingest([tmp_path], cat)
        assert report.problems == [] and report.added == 1
        (s,) = cat.scenes()
        assert set(s["files"]) == set(S2_COMMON) and set(s["aux"]) == {"SCL", "TCI"}
    # a raster the item does not list is not the item's: refused as before
    write_tif(d / "stray.tif", np.full((16, 16), 90, np.uint8), crs="EPSG:32632", origin=(600_000, 5_400_000), res=30)
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        report = ingest([tmp_path], cat)
        assert [p.path for p in report.problems] == [str(d / "stray.tif")] and report.skipped == 1
