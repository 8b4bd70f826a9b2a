"""A catalog written by an earlier version of ingest's reading rules (``INGEST_RULES``): each of its scenes is read
once more. One read otherwise now (a Sentinel-2 product of baseline 05.09, catalogued before its DN offset was read)
is replaced; one read the same keeps its tiles, their ids and so its vectors; one the new rules refuse leaves the
catalog, and its rejection says the file did not change. A second run reads nothing again."""

import sqlite3

import numpy as np

from rsretrieve.cli import main
from rsretrieve.data.catalog import Catalog
from rsretrieve.data.discover import SceneSource
from rsretrieve.data.ingest import INGEST_RULES, fingerprint, ingest, process_scene
from rsretrieve.sensors import get_sensor
from tests.conftest import s1_scene, write_tif

NEW = "S2B_MSIL2A_20230705T101559_N0509_R065_T32UQD_20230705T133327"
ORIGIN = (600_000.0, 5_400_000.0)


def _archive(root):
    """A Sentinel-2 product of baseline 05.09 (DN = reflectance x 10000 + 1000, a bright surface of 0.27) and a
    Sentinel-1 scene, on the same 960 m of ground."""
    s2 = np.full((12, 96, 96), 2700 + 1000, np.uint16)
    write_tif(root / f"{NEW}.tif", s2, crs="EPSG:32632", origin=ORIGIN, nodata=0)
    s1_scene(root / "S1A_IW_GRDH_1SDV_20230706T053000_20230706T053025_049000_05E4D2_1A2B_dB.tif",
             crs="EPSG:32632", origin=ORIGIN)
    return root


def _as_earlier_version(db, **layout):
    """Make the catalog what ingest before rules were recorded left: bare fingerprints, and the layouts it read."""
    con = sqlite3.connect(db)
    for key, stored in con.execute("SELECT key, fingerprint FROM scenes").fetchall():
        con.execute("UPDATE scenes SET fingerprint = ? WHERE key = ?", (stored.split(" ")[0], key))
    for key, name in layout.items():
        con.execute("UPDATE scenes SET layout = ? WHERE key LIKE ?", (name, f"%{key}%"))
    con.commit()
    con.close()


def _as_landsat7(cat, path, key=None):
    """Catalog ``path`` as a Landsat 7 scene under ``key`` (its path), as an earlier version took an 8-bit RGB file."""
    cat.write_scene(*process_scene(SceneSource(key=str(key or path), files={"*": str(path)}), 480, sensor="landsat7"))


def _ingest(db, paths, **kw):
    with Catalog(db, tile_m=480) as cat:
        return ingest(paths, cat, **kw)


def _sql(db, statement, *args):
    con = sqlite3.connect(db)
    con.execute(statement, args)
    con.commit()
    con.close()


def _rows(db):
    con = sqlite3.connect(db)
    out = {k: (sid, layout, fp) for k, sid, layout, fp in
           con.execute("SELECT key, scene_id, layout, fingerprint FROM scenes")}
    tiles = {k: sorted(r[0] for r in con.execute("SELECT tile_id FROM tiles t JOIN scenes s USING (scene_id) "
                                                 "WHERE s.key = ?", (k,))) for k in out}
    con.close()
    return out, tiles


def test_an_earlier_versions_scenes_are_read_again_once(tmp_path, capsys):
    archive = _archive(tmp_path / "archive")
    ws = tmp_path / "ws"
    assert main(["ingest", str(archive), "--workspace", str(ws)]) == 0
    db = ws / "catalog.sqlite"
    scenes, tiles = _rows(db)
    s1 = next(k for k in scenes if "S1A" in k)
    s2 = next(k for k in scenes if NEW in k)
    assert scenes[s2][1] == "full+N0400" and scenes[s1][1] == "full"
    assert all(fp == f"{fingerprint([k])} rules={INGEST_RULES}" for k, (_, _, fp) in scenes.items())
    con = sqlite3.connect(db)
    clouds = [r[0] for r in con.execute("SELECT t.cloud_fraction FROM tiles t JOIN scenes s USING (scene_id) "
                                        "WHERE s.key = ?", (s2,))]
    con.close()
    assert clouds and set(clouds) == {0.0}  # 0.27 is below the cloud test's 0.30; read without the offset, 0.37
    _as_earlier_version(db, **{NEW: "full"})
    capsys.readouterr()

    assert main(["ingest", str(archive), "--workspace", str(ws)]) == 0
    out = capsys.readouterr().out
    assert ("ingest: 0 scenes added, 1 replaced, 1 already in the catalog (1 of them read again under this "
            "version's rules, unchanged), ") in out
    after, after_tiles = _rows(db)
    # the Sentinel-2 product is read with its offset now: new ids (the index drops the old vectors, embeds these)
    assert after[s2][1] == "full+N0400" and after[s2][0] != scenes[s2][0]
    assert not set(after_tiles[s2]) & set(tiles[s2])
    # the Sentinel-1 scene is read the same: its ids stay, so its vectors do
    assert after[s1][:2] == scenes[s1][:2] and after_tiles[s1] == tiles[s1]
    assert all(fp.endswith(f" rules={INGEST_RULES}") for _, _, fp in after.values())

    assert main(["ingest", str(archive), "--workspace", str(ws)]) == 0
    assert "0 scenes added, 0 replaced, 2 already in the catalog, " in capsys.readouterr().out
    assert _rows(db) == (after, after_tiles)


def test_an_unchanged_scene_is_read_again_as_the_sensor_it_was_catalogued_as(tmp_path):
    """An 8-bit RGB file forced to Landsat 7 (``--sensor landsat7``) is read again as Landsat 7 (not refused for its
    name); one of a sensor this run does not define stays, and its line says why and what to do."""
    ortho = tmp_path / "archive" / "ortho.tif"
    write_tif(ortho, np.full((3, 48, 48), 90, np.uint8), crs="EPSG:32632", origin=ORIGIN, nodata=0)
    s1 = s1_scene(tmp_path / "archive" / "S1A_IW_GRDH_1SDV_20230706T053000_dB.tif", crs="EPSG:32632", origin=ORIGIN)
    db = tmp_path / "ws" / "catalog.sqlite"
    with Catalog(db, tile_m=480) as cat:
        assert ingest([ortho], cat, sensor="landsat7").added == 1
        assert ingest([s1], cat).added == 1
    _as_earlier_version(db)
    # the S1 scene as one of a user's sensor that this run does not define
    _sql(db, "UPDATE scenes SET sensor = 'mysat' WHERE key = ?", str(s1))
    before = _rows(db)
    report = _ingest(db, [tmp_path / "archive"])
    assert (report.added, report.replaced, report.removed, report.skipped, report.reread) == (0, 0, 0, 1, 1)
    (p,) = report.problems
    assert p.path == str(s1)
    assert p.reason == ("catalogued as mysat, a sensor this run does not define (a user's sensor whose definition is "
                        "not in RSRETRIEVE_SENSOR_DIRS now); its earlier version stays in the catalog")
    after = _rows(db)
    assert after[1] == before[1] and {k: v[:2] for k, v in after[0].items()} == {k: v[:2] for k, v in before[0].items()}
    assert after[0][str(ortho)][2].endswith(f" rules={INGEST_RULES}") and " rules=" not in after[0][str(s1)][2]


def test_another_runs_options_and_a_newer_versions_stamps_change_nothing(tmp_path):
    """A scene catalogued with --min-coverage 0.1 (tiles 15% covered) is read again under the default 0.25: the
    same reading, its tiles kept. Under --sensor another sensor's scenes are not read again; a newer version's stamp
    is left as it is."""
    archive = _archive(tmp_path / "archive")
    s1 = next(archive.glob("S1A*"))
    edge = s1_scene(tmp_path / "archive" / "S1A_IW_GRDH_1SDV_20230707T053000_dB.tif", size=60, crs="EPSG:32632",
                    origin=(ORIGIN[0] + 5_000.0, ORIGIN[1]))  # 600 m: cells 15-67% covered
    db = tmp_path / "ws" / "catalog.sqlite"
    with Catalog(db, tile_m=480) as cat:
        assert ingest([archive], cat, min_coverage=0.1).added == 3
        covers = sorted(t["coverage"] for t in cat.tiles() if t["scene_id"] == cat.scene_by_key(str(edge))["scene_id"])
    assert covers[0] < 0.25 <= covers[-1]
    _as_earlier_version(db)
    _sql(db, "UPDATE scenes SET fingerprint = fingerprint || ' rules=99' WHERE key = ?", str(s1))
    before = _rows(db)
    with Catalog(db, tile_m=480) as cat:
        report = ingest([archive], cat, sensor="sentinel1")
        assert report.problems == [] and (report.skipped, report.reread) == (3, 1)  # the edge scene, read again
        report = ingest([archive], cat)
        assert report.problems == [] and (report.skipped, report.reread, report.replaced) == (3, 1, 0)  # the S2 one
    after = _rows(db)
    assert after[1] == before[1] and {k: v[:2] for k, v in after[0].items()} == {k: v[:2] for k, v in before[0].items()}
    assert after[0][str(s1)][2].endswith(" rules=99")


def test_a_changed_file_of_an_earlier_version_is_replaced_as_before(tmp_path):
    """Files and rules both changed: it is read again and replaced, never taken for a mere re-check."""
    archive = _archive(tmp_path / "archive")
    db = tmp_path / "ws" / "catalog.sqlite"
    assert _ingest(db, [archive]).added == 2
    _as_earlier_version(db)
    before, before_tiles = _rows(db)
    s1 = next(k for k in before if "S1A" in k)
    s1_scene(s1, seed=1, crs="EPSG:32632", origin=ORIGIN)  # rewritten: other values
    report = _ingest(db, [archive])
    assert (report.added, report.replaced, report.skipped, report.reread) == (0, 1, 1, 1)
    after, after_tiles = _rows(db)
    assert after[s1][0] != before[s1][0] and not set(after_tiles[s1]) & set(before_tiles[s1])


def test_a_scene_now_read_as_a_companion_is_taken_out_with_a_line(tmp_path, capsys):
    """Before these rules a product's 8-bit true-colour TCI.tif was catalogued as a Landsat 7 scene (by its band
    count), beside the product itself; it is now the product's companion: the Landsat 7 scene leaves the catalog, and
    the line names the product. Another scene's ids are kept; a second run takes nothing out."""
    folder = tmp_path / "archive" / NEW
    for b in get_sensor("sentinel2").band_names:
        write_tif(folder / f"{b}.tif", np.full((1, 48, 48), 3700, np.uint16), crs="EPSG:32632", origin=ORIGIN,
                  nodata=0)
    tci = write_tif(folder / "TCI.tif", np.full((3, 48, 48), 90, np.uint8), crs="EPSG:32632", origin=ORIGIN, nodata=0)
    s1 = s1_scene(tmp_path / "archive" / "S1A_IW_GRDH_1SDV_20230706T053000_dB.tif", crs="EPSG:32632", origin=ORIGIN)
    ws = tmp_path / "ws"
    db = ws / "catalog.sqlite"
    # what the earlier version had: the TCI as a Landsat 7 scene, the bands without it, the S1 scene
    with Catalog(db, tile_m=480) as cat:
        _as_landsat7(cat, tci)
        assert ingest([s1], cat).added == 1
    _as_earlier_version(db)
    before, before_tiles = _rows(db)
    capsys.readouterr()

    assert main(["ingest", str(tmp_path / "archive"), "--workspace", str(ws)]) == 0
    out, err = capsys.readouterr()
    assert "ingest: 1 scenes added, 0 replaced, 1 already in the catalog (1 of them read again under this " in out
    after, after_tiles = _rows(db)
    (product,) = set(after) - {str(s1)}
    assert product.startswith(str(folder))
    assert err.splitlines() == [
        f"taken out: {tci}: now read as the companion TCI of the scene {product}: its earlier "
        "version as a landsat7 scene (1 tiles) is removed from the catalog (the next `rsretrieve index` drops its "
        "vectors)"]
    assert len(after) == 2 and after[product][1] == "full+N0400"
    assert after[str(s1)][:2] == before[str(s1)][:2] and after_tiles[str(s1)] == before_tiles[str(s1)]
    assert main(["ingest", str(tmp_path / "archive"), "--workspace", str(ws), "--json"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and '"retired": []' in out


def test_a_scene_no_longer_found_as_one_but_nobodys_companion_stays_with_a_line(tmp_path):
    """A true-colour TCI.tif in a folder of its own (no product beside it to attach to) was catalogued as a Landsat 7
    scene; this version finds no scene there. It is not deleted on a guess: it stays, and a line says what it is now,
    in a run over its folder only (not under another --sensor, nor over other paths); one a newer version stamped is
    left alone."""
    tci = write_tif(tmp_path / "archive" / "tci" / "TCI.tif", np.full((3, 48, 48), 90, np.uint8), crs="EPSG:32632",
                    origin=ORIGIN, nodata=0)
    pvi = write_tif(tmp_path / "archive" / "pvi" / "L2A_PVI.tif", np.full((3, 48, 48), 90, np.uint8),
                    crs="EPSG:32632", origin=ORIGIN, nodata=0)
    s1 = s1_scene(tmp_path / "archive" / "s1" / "S1A_IW_GRDH_1SDV_20230706T053000_dB.tif", crs="EPSG:32632",
                  origin=ORIGIN)
    db = tmp_path / "ws" / "catalog.sqlite"
    with Catalog(db, tile_m=480) as cat:
        for f in (tci, pvi):
            _as_landsat7(cat, f)
        assert ingest([s1], cat).added == 1
    _as_earlier_version(db)
    _sql(db, "UPDATE scenes SET fingerprint = fingerprint || ' rules=99' WHERE key = ?", str(pvi))
    before = _rows(db)
    with Catalog(db, tile_m=480) as cat:
        report = ingest([tmp_path / "archive"], cat, sensor="sentinel1")
        assert report.retired == report.unseen == report.problems == []
        report = ingest([tmp_path / "archive" / "s1"], cat)
        assert report.retired == report.unseen == report.problems == []
        report = ingest([tmp_path / "archive"], cat)
    assert report.problems == report.retired == [] and [str(p) for p in report.unseen] == [
        f"{tci}: no longer read as a scene (a file beside a STAC item, or a product's companion): its earlier version "
        "as a landsat7 scene stays in the catalog (`rsretrieve catalog --remove` takes it out)"]
    assert sorted(_rows(db)[0]) == sorted(before[0])


def _product_with_tci(folder):
    for b in get_sensor("sentinel2").band_names:
        write_tif(folder / f"{b}.tif", np.full((1, 48, 48), 3700, np.uint16), crs="EPSG:32632", origin=ORIGIN,
                  nodata=0)
    tci = write_tif(folder / "TCI.tif", np.full((3, 48, 48), 90, np.uint8), crs="EPSG:32632", origin=ORIGIN, nodata=0)
    return tci


def test_a_companion_is_taken_out_only_once_its_product_is_catalogued_and_all_was_read(tmp_path, monkeypatch):
    """The TCI of a product, once a Landsat 7 scene, stays (with its line) while discover could not read part of the
    run's paths, while the product itself is refused, or when the TCI's catalogued key lies outside the run's paths;
    it is taken out once the product is catalogued by this version."""
    from rsretrieve.data import ingest as ingest_mod

    folder = tmp_path / "archive" / NEW
    tci = _product_with_tci(folder)
    db = tmp_path / "ws" / "catalog.sqlite"
    # the earlier version's catalog: the TCI as Landsat 7, also under a key outside the archive (a STAC item)
    with Catalog(db, tile_m=480) as cat:
        _as_landsat7(cat, tci)
        item = str(tmp_path / "items" / "tci.json")
        _as_landsat7(cat, tci, key=item)
    _as_earlier_version(db)
    real = ingest_mod.discover
    with Catalog(db, tile_m=480) as cat:
        write_tif(folder / "SCL.tif", np.full((1, 24, 24), 9, np.uint8), crs="EPSG:32633", origin=ORIGIN, res=20.0)
        report = ingest([tmp_path / "archive"], cat)  # the product's SCL is on other ground: the product is refused
        assert report.added == 0 and report.retired == [] and [p.path for p in report.unseen] == [str(tci)]
        (folder / "SCL.tif").unlink()
        monkeypatch.setattr(ingest_mod, "discover", lambda paths, *a, **k: (lambda r: (r[0], r[1] + [ingest_mod.Problem(
            str(tmp_path / "archive" / "x"), "cannot read folder: Permission denied")]))(real(paths)))
        report = ingest([tmp_path / "archive"], cat)
        assert report.added == 1 and report.retired == [] and [p.path for p in report.unseen] == [str(tci)]
        assert report.unseen[0].reason.startswith(f"now read as the companion TCI of the scene {folder}/ while this "
                                                  "run could not read all its paths: ")
        assert {str(tci), item} <= set(_rows(db)[0])
        monkeypatch.setattr(ingest_mod, "discover", real)
        report = ingest([tmp_path / "archive"], cat)
        assert [p.path for p in report.retired] == [str(tci)] and report.unseen == []
    assert item in _rows(db)[0]  # its key is not under the run's paths


def test_a_scene_whose_companions_are_new_is_read_again_and_a_refusal_keeps_it(tmp_path):
    """A product catalogued by earlier rules, its band files unchanged, now has an SCL beside it (which the earlier
    rules did not attach): read again, as the files it was read from are unchanged; the SCL is in another CRS and
    refuses it, so the earlier version stays and the line says why."""
    folder = tmp_path / "archive" / NEW
    for b in get_sensor("sentinel2").band_names:
        write_tif(folder / f"{b}.tif", np.full((1, 48, 48), 3700, np.uint16), crs="EPSG:32632", origin=ORIGIN,
                  nodata=0)
    db = tmp_path / "ws" / "catalog.sqlite"
    assert _ingest(db, [folder]).added == 1
    _as_earlier_version(db)
    before = _rows(db)
    write_tif(folder / "SCL.tif", np.full((1, 24, 24), 9, np.uint8), crs="EPSG:32633", origin=ORIGIN, res=20.0)
    report = _ingest(db, [folder])
    assert (report.added, report.replaced, report.removed) == (0, 0, 0)
    (p,) = report.problems
    assert p.reason == ("quality mask SCL.tif is in EPSG:32633, the scene in EPSG:32632: it must be on the scene's "
                        "ground; its earlier version stays in the catalog: its files are unchanged since an earlier "
                        "version of rsretrieve ingested them, and this refusal may come from this run's options or "
                        "sensor definitions (run ingest as it was run then) or from this version's rules "
                        "(`rsretrieve catalog --remove` takes it out)")
    assert _rows(db) == before


def test_a_companion_like_file_beside_another_sensors_scene_stays(tmp_path):
    """A folder's only scene takes any companion-like file beside it: a TCI.tif beside a Sentinel-1 scene, catalogued
    as Landsat 7 by an earlier version, is not Sentinel-1's companion, so it is not taken out (helper-45)."""
    tci = write_tif(tmp_path / "archive" / "TCI.tif", np.full((3, 48, 48), 90, np.uint8), crs="EPSG:32632",
                    origin=ORIGIN, nodata=0)
    s1 = s1_scene(tmp_path / "archive" / "S1A_IW_GRDH_1SDV_20230706T053000_dB.tif", crs="EPSG:32632", origin=ORIGIN)
    db = tmp_path / "ws" / "catalog.sqlite"
    with Catalog(db, tile_m=480) as cat:
        _as_landsat7(cat, tci)
    _as_earlier_version(db)
    report = _ingest(db, [tmp_path / "archive"])
    assert report.added == 1 and report.retired == [] and [str(p) for p in report.unseen] == [
        f"{tci}: now read as the companion TCI of the scene {s1}: its earlier version as a landsat7 scene stays in the "
        "catalog (`rsretrieve catalog --remove` takes it out)"]
    assert str(tci) in _rows(db)[0]
