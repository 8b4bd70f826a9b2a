"""Catalog.counts() reads counts that triggers keep in the transactions that write tiles and labels (grouping a
million tiles took 1.4 s): they must equal a recount of the tables after every kind of write, including writes that
roll back and writes by a plain SQLite connection, and a catalog written before them gets them on first open."""

import random
import sqlite3

import pytest
from shapely.geometry import box

from rsretrieve.data.catalog import Catalog, SceneRow, TileRow
from tests.conftest import sqlite_steps

SENSORS = ("sentinel1", "sentinel2", "enmap")


def _recount(cat):
    """counts() as it was first written: every number grouped from the tiles, scenes and labels tables."""
    c = cat.conn
    per = {r[0]: {"scenes": r[1]} for r in c.execute(
        "SELECT sensor, COUNT(*) FROM scenes GROUP BY sensor ORDER BY sensor")}
    for r in c.execute("SELECT sensor, COUNT(*), COUNT(DISTINCT cell_id), AVG(valid_fraction) FROM tiles"
                       " GROUP BY sensor"):
        per.setdefault(r[0], {"scenes": 0}).update(tiles=r[1], cells=r[2], mean_valid_fraction=round(r[3], 4))
    t0, t1 = c.execute("SELECT MIN(acquired), MAX(acquired) FROM scenes").fetchone()
    return {
        "scenes": c.execute("SELECT COUNT(*) FROM scenes").fetchone()[0],
        "tiles": c.execute("SELECT COUNT(*) FROM tiles").fetchone()[0],
        "cells": c.execute("SELECT COUNT(DISTINCT cell_id) FROM tiles").fetchone()[0],
        "labelled_cells": c.execute("SELECT COUNT(DISTINCT cell_id) FROM cell_labels").fetchone()[0],
        "label_schemes": dict(c.execute("SELECT scheme, COUNT(*) FROM cell_labels GROUP BY scheme ORDER BY scheme")
                              .fetchall()),
        "first_acquired": t0,
        "last_acquired": t1,
        "tile_m": cat.tile_m,
        "sensors": per,
    }


def _same(cat):
    got, want = cat.counts(), _recount(cat)
    assert got == want
    assert list(got["sensors"]) == list(want["sensors"])  # the order JSON shows too
    return got


def _scene(key, sensor, cells, rnd, day=1):
    """A scene of ``sensor`` with one tile on each of ``cells`` (names ``c<i>``), random valid fractions."""
    tiles = [TileRow(f"c{i}", 32633, i, 0, 0, 0, 48, 48, 1.0, rnd.random(), 0.0, 10.0 + 0.01 * i, 50.0,
                     box(10.0 + 0.01 * i, 50.0, 10.005 + 0.01 * i, 50.005).wkt,
                     [(10.0 + 0.01 * i, 50.0, 10.005 + 0.01 * i, 50.005)]) for i in cells]
    scene = SceneRow(key=key, fingerprint=str(rnd.random()), sensor=sensor, layout="stacked", files={"*": key},
                     aux={}, crs="EPSG:32633", transform=[10, 0, 0, 0, -10, 0], width=96, height=96, res_m=10.0,
                     acquired=f"2021-01-{day:02d}T00:00:00Z", acquired_ts=1609459200 + 86400 * day, west=10.0,
                     south=50.0, east=10.5, north=50.1, footprint=box(10.0, 50.0, 10.5, 50.1).wkt, grid_epsg=32633,
                     valid_fraction=1.0, cloud_fraction=0.0, ingested_at="now")
    return scene, tiles


def test_counts_equal_a_recount_after_ingest_replace_remove_and_rollback(tmp_path):
    rnd = random.Random(7)
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        assert _same(cat)["tiles"] == 0
        keys = []
        for _ in range(60):
            op = rnd.random()
            if op < 0.45 or not keys:  # a new scene, or a re-ingest of a changed one (other cells, sensor, values)
                key = f"/s{rnd.randrange(12)}.tif"
                cells = rnd.sample(range(40), rnd.randrange(0, 15))
                cat.write_scene(*_scene(key, rnd.choice(SENSORS), cells, rnd, day=rnd.randrange(1, 28)))
                keys.append(key)
            elif op < 0.6:
                key = rnd.choice(keys)
                present = cat.scene_by_key(key) is not None
                assert cat.remove_scene(key) == present
                keys = [k for k in keys if k != key]
            elif op < 0.7:
                key = rnd.choice(keys)
                found = cat.scene_by_key(key)
                if found is not None:
                    assert cat.remove_scene_version(key, "not it") is None
                    assert cat.remove_scene_version(key, found["fingerprint"]) == found["n_tiles"]
            elif op < 0.8:  # a write that fails half way: the UNIQUE (scene, cell) constraint on the last tile
                scene, tiles = _scene(f"/s{rnd.randrange(12)}.tif", rnd.choice(SENSORS), [1, 2, 3], rnd)
                with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
                    cat.write_scene(scene, tiles + tiles[:1])
            elif op < 0.9:  # labels: a source replaced, overlapping schemes, a source removed
                src = f"/lc{rnd.randrange(3)}.tif"
                scheme = rnd.choice(("corine", "igbp"))
                cells = rnd.sample(range(40), rnd.randrange(1, 20))
                cat.write_labels([(f"c{i}", scheme, i % 5, f"k{i % 5}", 0.5, src) for i in cells], source=src,
                                 stamp="s")
                cat.write_labels([(f"c{cells[0]}", scheme, 9, "k9", 0.9, src)])  # INSERT OR REPLACE of one label
            else:
                cat.remove_labels(f"/lc{rnd.randrange(3)}.tif")
            _same(cat)
        assert _same(cat)["tiles"] > 0 and _same(cat)["labelled_cells"] > 0

        # a transaction interrupted after its writes: nothing of it is counted
        before = _same(cat)
        with pytest.raises(KeyboardInterrupt):
            with cat.transaction() as c:
                c.execute("DELETE FROM tile_rtree")
                c.execute("DELETE FROM tiles")
                c.execute("DELETE FROM cell_labels")
                assert cat.counts()["tiles"] == 0 and cat.counts()["labelled_cells"] == 0  # seen inside it
                raise KeyboardInterrupt
        assert _same(cat) == before

        # plain SQL on the Catalog's connection: tiles moved to another cell / sensor, values changed, labels moved
        c = cat.conn
        tid = c.execute("SELECT MIN(tile_id) FROM tiles").fetchone()[0]
        c.execute("UPDATE tiles SET cell_id = 'elsewhere', valid_fraction = 0.125 WHERE tile_id = ?", (tid,))
        _same(cat)
        c.execute("UPDATE tiles SET sensor = 'landsat8' WHERE tile_id IN (SELECT tile_id FROM tiles LIMIT 3)")
        _same(cat)
        c.execute("UPDATE tiles SET acquired_ts = acquired_ts + 1")  # no counted column: no trigger
        c.execute("UPDATE cell_labels SET scheme = 'igbp' WHERE rowid IN (SELECT rowid FROM cell_labels LIMIT 2)"
                  " AND NOT EXISTS (SELECT 1 FROM cell_labels l2 WHERE l2.cell_id = cell_labels.cell_id"
                  " AND l2.scheme = 'igbp')")
        c.execute("UPDATE cell_labels SET cell_id = cell_id || '_moved' WHERE rowid = (SELECT MAX(rowid)"
                  " FROM cell_labels)")
        _same(cat)

    # a plain connection (an older rsretrieve, a script): the triggers are in the file
    con = sqlite3.connect(tmp_path / "c.sqlite")
    con.execute("DELETE FROM tiles WHERE scene_id = (SELECT MIN(scene_id) FROM scenes)")
    con.execute("UPDATE tiles SET valid_fraction = valid_fraction / 2")
    con.execute("DELETE FROM cell_labels WHERE scheme = 'corine'")
    con.commit()
    con.close()
    with Catalog(tmp_path / "c.sqlite") as cat:
        _same(cat)
        for key in {r["key"] for r in cat.scenes()}:
            cat.remove_scene(key)
        for src in ("/lc0.tif", "/lc1.tif", "/lc2.tif"):
            cat.remove_labels(src)
        cat.conn.execute("DELETE FROM cell_labels")  # the labels moved above have no source left
        got = _same(cat)
        assert (got["tiles"], got["cells"], got["labelled_cells"], got["sensors"]) == (0, 0, 0, {})
        assert cat.conn.execute("SELECT COUNT(*) FROM tile_cells").fetchone()[0] == 0


def _drop_counts(path):
    """Rewrite a catalog as rsretrieve wrote it before the counts: no count tables, no triggers."""
    con = sqlite3.connect(path)
    for kind, name in con.execute("SELECT type, name FROM sqlite_master WHERE type IN ('table', 'trigger')"
                                  " AND name IN ('tile_cells', 'sensor_counts', 'scheme_counts', 'totals')"
                                  " OR type = 'trigger'").fetchall():
        con.execute(f"DROP {kind} {name}")
    con.commit()
    con.close()


def test_a_catalog_written_before_the_counts_gets_them_on_first_open(tmp_path):
    rnd = random.Random(3)
    path = tmp_path / "c.sqlite"
    with Catalog(path, tile_m=480) as cat:
        cat.write_scene(*_scene("/a.tif", "sentinel1", range(10), rnd))
        cat.write_scene(*_scene("/b.tif", "sentinel2", range(5, 20), rnd))
        cat.write_labels([(f"c{i}", "corine", 1, "k", 0.5, "/lc.tif") for i in range(8)])
        want = _recount(cat)
    _drop_counts(path)
    con = sqlite3.connect(path)
    con.execute("DELETE FROM tiles WHERE cell_id = 'c0'")  # written without triggers: nothing counted it
    con.commit()
    con.close()
    with Catalog(path) as cat:
        assert cat.conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger'").fetchone()[0] == 6
        got = _same(cat)
        assert (got["tiles"], got["cells"]) == (want["tiles"] - 1, want["cells"] - 1)  # c0 was only in /a.tif
        cat.write_scene(*_scene("/a.tif", "enmap", range(30, 33), rnd))  # and kept from then on
        assert _same(cat)["sensors"]["enmap"]["tiles"] == 3


def test_counts_cost_the_same_in_a_catalog_ten_times_larger(tmp_path):
    rnd = random.Random(1)
    steps = []
    for n_scenes in (2, 20):
        with Catalog(tmp_path / f"c{n_scenes}.sqlite", tile_m=480) as cat:
            for j in range(n_scenes):
                cells = range(400 * j, 400 * (j + 1))
                cat.write_scene(*_scene(f"/s{j}.tif", SENSORS[j % 3], cells, rnd, day=1 + j))
                cat.write_labels([(f"c{i}", "corine", 1, "k", 0.5, f"/lc{j}.tif") for i in cells])
            assert cat.counts()["tiles"] == 400 * n_scenes
            steps.append(sqlite_steps(cat, cat.counts))
    # grouping the tiles and labels made it grow with the catalog (about 10x here, 1.4 s at a million tiles)
    assert steps[1] < 2 * steps[0] + 5, steps
