"""``ingest --prune``: catalogued scenes under the run's paths whose band files are gone (deleted or moved from the
archive) are taken out, each with a line; nothing else is touched, nothing without ``--prune``, nothing outside the
paths, and nothing while discover could not read part of them."""

import os
import sqlite3

from rsretrieve.cli import main
from rsretrieve.data import ingest as ingest_mod
from rsretrieve.data.catalog import Catalog
from rsretrieve.data.ingest import ingest
from tests.conftest import make_workspace, s1_scene, save_untrained_model

ORIGIN = (600_000.0, 5_400_000.0)


def _scene(folder, day):
    return s1_scene(folder / f"S1A_IW_GRDH_1SDV_202307{day:02d}T053000_dB.tif", seed=day, crs="EPSG:32632",
                    origin=ORIGIN)


def _tiles(db):
    con = sqlite3.connect(db)
    rows = {k: n for k, n in con.execute("SELECT key, n_tiles FROM scenes")}
    ids = sorted(r[0] for r in con.execute("SELECT tile_id FROM tiles"))
    con.close()
    return rows, ids


def test_scenes_whose_files_are_gone_are_pruned_with_a_line(tmp_path, capsys):
    a, b, c = _scene(tmp_path / "archive", 5), _scene(tmp_path / "archive", 6), _scene(tmp_path / "elsewhere", 7)
    ws = tmp_path / "ws"
    assert main(["ingest", str(tmp_path / "archive"), str(c), "--workspace", str(ws)]) == 0
    before, ids = _tiles(ws / "catalog.sqlite")
    assert len(before) == 3
    a.unlink()
    c.unlink()
    capsys.readouterr()
    # without --prune: kept, as before
    assert main(["ingest", str(tmp_path / "archive"), "--workspace", str(ws)]) == 0
    assert _tiles(ws / "catalog.sqlite") == (before, ids)
    capsys.readouterr()
    assert main(["ingest", str(tmp_path / "archive"), "--workspace", str(ws), "--prune"]) == 0
    out, err = capsys.readouterr()
    assert "; 0 rejected; 1 pruned\n" in out
    assert err.splitlines() == [f"pruned: {a}: its file {a.name} is gone: its {before[str(a)]} tiles are removed from "
                                "the catalog (the next `rsretrieve index` drops their vectors)"]
    after, after_ids = _tiles(ws / "catalog.sqlite")
    # the scene outside the run's paths stays, though its file is gone too; the other keeps its tile ids
    assert after == {k: n for k, n in before.items() if k != str(a)} and str(c) in after
    assert set(after_ids) < set(ids) and len(after_ids) == len(ids) - before[str(a)]
    assert str(b) in after


def test_nothing_is_pruned_while_part_of_the_paths_could_not_be_read(tmp_path, monkeypatch):
    a = _scene(tmp_path / "archive", 5)
    db = tmp_path / "ws" / "catalog.sqlite"
    with Catalog(db, tile_m=480) as cat:
        assert ingest([tmp_path / "archive"], cat).added == 1
    a.unlink()
    real = ingest_mod.discover
    monkeypatch.setattr(ingest_mod, "discover", lambda paths, *a, **k: (lambda r: (r[0], r[1] + [ingest_mod.Problem(
        str(tmp_path / "archive" / "x"), "cannot read folder: Permission denied")]))(real(paths)))
    with Catalog(db, tile_m=480) as cat:
        report = ingest([tmp_path / "archive"], cat, prune=True)
        assert report.pruned == [] and len(cat.scenes()) == 1
    monkeypatch.setattr(ingest_mod, "discover", real)
    with Catalog(db, tile_m=480) as cat:
        report = ingest([tmp_path / "archive"], cat, prune=True)
        assert [p.path for p in report.pruned] == [str(a)] and cat.scenes() == []
        assert report.to_dict()["pruned"] == [{"path": str(a), "reason": report.pruned[0].reason}]


def test_index_names_a_gone_file_and_the_way_out(tmp_path, capsys):
    """A scene file deleted from the archive stopped `rsretrieve index` with GDAL's message alone; it now says how
    to take such scenes out, and after `ingest --prune` the index is built from the rest."""
    ws = make_workspace(tmp_path, index=False)
    save_untrained_model(ws)
    with Catalog(ws / "catalog.sqlite") as cat:
        gone = sorted(cat.scenes(), key=lambda s: s["key"])[0]
    (f,) = set(gone["files"].values())
    os.unlink(f)
    capsys.readouterr()
    assert main(["index", "--workspace", str(ws)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rsretrieve index: error: {f}: No such file or directory: the scene {gone['key']} is "
                          "catalogued but its file is gone (deleted or moved): put it back, or take such scenes out "
                          f"with `rsretrieve ingest ARCHIVE --workspace {ws} --prune`")
    assert main(["ingest", str(tmp_path / "archive"), "--workspace", str(ws), "--prune"]) == 0
    assert main(["index", "--workspace", str(ws)]) == 0
    out = capsys.readouterr().out
    with Catalog(ws / "catalog.sqlite") as cat:
        n = len(cat.tiles(columns=["tile_id"]))
    assert f"index: {n} tiles embedded and added, 0 removed; {n} tiles indexed" in out


def _refuse_lstat(monkeypatch, blocked, errno_=13, why="Permission denied"):
    """``os.lstat`` of ``blocked`` fails as on a file in a folder this user may not search (we run as root here,
    whom chmod does not stop) or on a stale network share."""
    real = os.lstat
    blocked = {str(b) for b in blocked}

    def lstat(path, *a, **k):
        if str(path) in blocked:
            raise OSError(errno_, why, str(path))
        return real(path, *a, **k)

    monkeypatch.setattr(os, "lstat", lstat)


def test_a_file_that_cannot_be_looked_at_is_not_gone(tmp_path, monkeypatch, capsys):
    """A band file that exists but cannot be looked at now (permission denied, an I/O error, a stale share) counted as
    gone: --prune deleted its scene, and the same run then rejected the file as unreadable. Only a file the system
    says does not exist is gone; the other is kept with a line, and `rsretrieve index` does not send to --prune."""
    a, b = _scene(tmp_path / "archive", 5), _scene(tmp_path / "archive", 6)
    ws = tmp_path / "ws"
    assert main(["ingest", str(tmp_path / "archive"), "--workspace", str(ws)]) == 0
    before, _ = _tiles(ws / "catalog.sqlite")
    b.unlink()
    _refuse_lstat(monkeypatch, [a])
    capsys.readouterr()
    main(["ingest", str(tmp_path / "archive"), "--workspace", str(ws), "--prune"])
    err = capsys.readouterr().err.splitlines()
    assert f"not pruned: {a}: cannot look at {a}: Permission denied: kept" in err
    assert any(line.startswith(f"pruned: {b}: its file {b.name} is gone") for line in err)
    assert _tiles(ws / "catalog.sqlite")[0] == {str(a): before[str(a)]}
    save_untrained_model(ws)
    capsys.readouterr()
    assert main(["index", "--workspace", str(ws)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rsretrieve index: error: {a}: Permission denied: the file of the scene {a} cannot be "
                          "looked at now (not a case for --prune): run `rsretrieve index` again once it can be read")


def test_broken_links_do_not_turn_pruning_off_and_an_unreadable_folder_says_so(tmp_path, monkeypatch, capsys):
    """A dangling link or an item cut short elsewhere under PATH hides nothing, yet turned --prune off for the whole
    run without a word; a folder that cannot be listed still turns it off, now with one line saying so."""
    a, _ = _scene(tmp_path / "archive", 5), _scene(tmp_path / "archive", 6)
    ws = tmp_path / "ws"
    assert main(["ingest", str(tmp_path / "archive"), "--workspace", str(ws)]) == 0
    a.unlink()
    (tmp_path / "archive" / "stale.tif").symlink_to(tmp_path / "nowhere.tif")
    (tmp_path / "archive" / "item.json").write_text('{"type": "Feature", "stac_version": "1.0.0", "ass')
    capsys.readouterr()
    assert main(["ingest", str(tmp_path / "archive"), "--workspace", str(ws), "--prune"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert [line.split(":")[0] for line in err] == ["pruned", "rejected", "rejected"]
    assert len(_tiles(ws / "catalog.sqlite")[0]) == 1
    b = _scene(tmp_path / "archive", 7)
    assert main(["ingest", str(b), "--workspace", str(ws)]) == 0
    b.unlink()
    real = ingest_mod.discover
    monkeypatch.setattr(ingest_mod, "discover", lambda paths, *a, **k: (lambda r: (r[0], r[1] + [ingest_mod.Problem(
        str(tmp_path / "archive" / "x"), "cannot read folder: Permission denied")]))(real(paths)))
    capsys.readouterr()
    main(["ingest", str(tmp_path / "archive"), "--workspace", str(ws), "--prune"])
    err = capsys.readouterr().err.splitlines()
    assert f"not pruned: {tmp_path / 'archive' / 'x'}: nothing is pruned in this run: this folder or file could not " \
           "be read, and what it holds would look gone" in err
    assert str(b) in _tiles(ws / "catalog.sqlite")[0]


def test_a_stac_items_scene_is_pruned_when_its_item_or_a_file_under_the_path_is_gone(tmp_path):
    """A deleted STAC item left its scene in the catalog beside a second scene of the same files (its rasters read
    alone); and with the item in items/ and its assets in data/, pruning data/ found nothing (only the key, the
    item's path, was looked at). Under --sensor, only that sensor's scenes are pruned."""
    import pystac
    from datetime import datetime, timezone

    def item(path, files):
        it = pystac.Item(id=path.stem, geometry=None, bbox=None, datetime=datetime(2023, 7, 5, tzinfo=timezone.utc),
                         properties={})
        for pol, f in zip(("VV", "VH"), files):
            it.add_asset(pol.lower(), pystac.Asset(href=str(f), roles=["data"], extra_fields={"eo:bands": [
                {"name": pol}]}))
        it.set_self_href(str(path))
        it.save_object(include_self_link=False)

    def pols(folder, day):
        import numpy as np
        from tests.conftest import write_tif
        rng = np.random.default_rng(day)
        out = []
        for pol, mean in (("vv", -12.0), ("vh", -19.0)):
            out.append(folder / f"{pol}.tif")
            write_tif(out[-1], (mean + rng.standard_normal((96, 96))).astype("float32"), crs="EPSG:32632",
                      origin=ORIGIN, nodata=float("nan"))
        return out

    item(tmp_path / "beside" / "item.json", pols(tmp_path / "beside", 1))
    far = pols(tmp_path / "data" / "x", 2)
    item(tmp_path / "items" / "x.json", far)
    s2 = tmp_path / "data" / "S2B_MSIL2A_20230705T101559_N0509_R065_T32UQD_20230705T133327.tif"
    from tests.conftest import write_tif
    import numpy as np
    write_tif(s2, np.full((12, 48, 48), 1500, np.uint16), crs="EPSG:32632", origin=ORIGIN, nodata=0)
    db = tmp_path / "ws" / "catalog.sqlite"
    with Catalog(db, tile_m=480) as cat:
        assert ingest([tmp_path], cat).added == 3
    (tmp_path / "beside" / "item.json").unlink()
    far[0].unlink()
    s2.unlink()
    with Catalog(db, tile_m=480) as cat:
        report = ingest([tmp_path / "beside", tmp_path / "data"], cat, prune=True, sensor="sentinel1")
        assert sorted(p.path for p in report.pruned) == [str(tmp_path / "beside" / "item.json"),
                                                          str(tmp_path / "items" / "x.json")]
        assert report.pruned[0].reason.startswith("its file item.json is gone")
        keys = sorted(s["key"] for s in cat.scenes())
        # the sentinel2 scene stays (another sensor); the item's rasters, alone now, are not catalogued a second time
        # (one band each, lower-case names: no scene), nor is the item's scene kept beside them
        assert keys == [str(s2)]


def test_a_land_cover_raster_that_is_gone_is_pruned_with_its_labels(tmp_path):
    """Deleting a land-cover raster left its labels in the catalog (train and evaluate still used them) and --prune
    said nothing; now its labels go with a line. Under --sensor (labels are no sensor's) they stay."""
    from rsretrieve.data.synthetic import make_archive

    make_archive(tmp_path / "archive", scenes=2, sensors=("sentinel1",), seed=3, size_m=1920)
    db = tmp_path / "ws" / "catalog.sqlite"
    with Catalog(db, tile_m=480) as cat:
        ingest([tmp_path / "archive"], cat)
        sources = cat.label_sources()
        labelled = len(cat.labels())
    assert len(sources) == 2 and labelled > 0
    gone = sorted(sources)[0]
    os.unlink(gone)
    with Catalog(db, tile_m=480) as cat:
        assert ingest([tmp_path / "archive"], cat, prune=True, sensor="sentinel1").pruned == []
        assert len(cat.labels()) == labelled
        report = ingest([tmp_path / "archive"], cat, prune=True)
        (p,) = report.pruned
        assert p.path == gone and p.reason.startswith("this land-cover raster is gone: its labels of ")
        assert list(cat.label_sources()) == sorted(sources)[1:] and 0 < len(cat.labels()) < labelled


def test_pruning_a_deleted_folder_by_its_own_name_says_to_give_its_parent(tmp_path, capsys):
    a = _scene(tmp_path / "archive" / "one", 5)
    ws = tmp_path / "ws"
    assert main(["ingest", str(tmp_path / "archive"), "--workspace", str(ws)]) == 0
    before = _tiles(ws / "catalog.sqlite")
    a.unlink()
    (tmp_path / "archive" / "one").rmdir()
    capsys.readouterr()
    assert main(["ingest", str(tmp_path / "archive" / "one"), "--workspace", str(ws), "--prune"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"rsretrieve ingest: error: nothing to ingest: no such file or directory: {tmp_path / 'archive' / 'one'}; "
        "--prune looks under paths that exist: give the folder that held it"]
    assert _tiles(ws / "catalog.sqlite") == before
    assert main(["ingest", str(tmp_path / "archive"), "--workspace", str(ws), "--prune"]) == 0
    assert _tiles(ws / "catalog.sqlite") == ({}, [])


def test_files_catalogued_in_one_scene_are_not_catalogued_again_in_another(tmp_path):
    """A STAC item deleted, its band files then grouped by their names: a second scene of the same files was added
    beside the item's (every search hit twice). It is refused with a line pointing to --prune, which takes the item's
    scene out so that the files are catalogued once. A band file named on its own after its folder was ingested is
    refused the same way."""
    import numpy as np
    import pystac
    from datetime import datetime, timezone

    from tests.conftest import write_tif

    d = tmp_path / "item"
    rng = np.random.default_rng(0)
    it = pystac.Item(id="s1", geometry=None, bbox=None, datetime=datetime(2023, 7, 5, tzinfo=timezone.utc),
                     properties={})
    for pol, mean in (("VV", -12.0), ("VH", -19.0)):
        f = d / f"S1A_IW_GRDH_1SDV_20230705T053000_{pol}.tif"
        write_tif(f, (mean + rng.standard_normal((96, 96))).astype("float32"), crs="EPSG:32632", origin=ORIGIN,
                  nodata=float("nan"))
        it.add_asset(pol.lower(), pystac.Asset(href=f"./{f.name}", roles=["data"],
                                               extra_fields={"eo:bands": [{"name": pol}]}))
    it.set_self_href(str(d / "item.json"))
    it.make_asset_hrefs_relative()
    it.save_object(include_self_link=False)
    db = tmp_path / "ws" / "catalog.sqlite"
    with Catalog(db, tile_m=480) as cat:
        assert ingest([d], cat).added == 1
        (d / "item.json").unlink()
        report = ingest([d], cat)
        (p,) = report.problems
        assert p.path == str(d / "S1A_IW_GRDH_1SDV_20230705T053000*") and p.reason.startswith(
            f"its file S1A_IW_GRDH_1SDV_20230705T053000_VH.tif is already catalogued as part of the scene "
            f"{d / 'item.json'}, found otherwise before")
        assert report.added == 0 and [s["key"] for s in cat.scenes()] == [str(d / "item.json")]
        report = ingest([d], cat, prune=True)
        assert report.problems == [] and len(report.pruned) == 1 and report.added == 1
        (scene,) = cat.scenes()
        assert scene["key"] == p.path
    a = _scene(tmp_path / "archive", 5)
    with Catalog(db, tile_m=480) as cat:
        assert ingest([tmp_path / "archive"], cat).added == 1
        n = len(cat.scenes())
        report = ingest([d / "S1A_IW_GRDH_1SDV_20230705T053000_VV.tif"], cat)
        assert report.added == 0 and "is already catalogued as part of the scene" in report.problems[0].reason
        assert len(cat.scenes()) == n and str(a) in {s["key"] for s in cat.scenes()}
