"""Opening a catalog takes the write lock only to create or migrate its schema: a query or ``status`` beside a long
ingest transaction opens and reads at once (WAL readers see the last commit), instead of waiting up to the 60 s busy
timeout for ``BEGIN IMMEDIATE`` and then failing with "database is locked"."""

import sqlite3
import subprocess
import sys
import threading

from shapely.geometry import box

from rsretrieve.data.catalog import Catalog, SceneRow, TileRow


def _scene(key, n=2):
    scene = SceneRow(key=key, fingerprint="f1", sensor="sentinel1", layout="full", files={"*": key}, aux={},
                     crs="EPSG:32633", transform=[10, 0, 0, 0, -10, 0], width=96, height=96, res_m=10.0,
                     acquired="2021-01-01T00:00:00Z", acquired_ts=1609459200, west=10.0, south=50.0, east=10.1,
                     north=50.1, footprint=box(10, 50, 10.1, 50.1).wkt, grid_epsg=32633, valid_fraction=1.0,
                     cloud_fraction=0.0, ingested_at="now")
    tiles = [TileRow(f"33N_480m_r{i}_c0", 32633, i, 0, 0, 48 * i, 48, 48, 1.0, 1.0, 0.0, 10.0 + 0.01 * i, 50.05,
                     box(10.0 + 0.01 * i, 50.0, 10.005 + 0.01 * i, 50.005).wkt,
                     [(10.0 + 0.01 * i, 50.0, 10.005 + 0.01 * i, 50.005)]) for i in range(n)]
    return scene, tiles


def _catalog(tmp_path):
    path = tmp_path / "ws" / "catalog.sqlite"
    with Catalog(path, tile_m=480) as cat:
        cat.write_scene(*_scene("/a.tif", 2))
    return path


_READ = """
import sys
from rsretrieve.data.catalog import Catalog
with Catalog(sys.argv[1]) as cat:
    print(cat.counts()["tiles"], len(cat.tiles()), cat.tile_ids_in_bbox(9, 49, 11, 51))
"""


def test_another_process_opens_and_reads_while_an_ingest_holds_the_write_lock(tmp_path):
    path = _catalog(tmp_path)
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # an ingest in the middle of a scene: written, not committed
    writer.execute("DELETE FROM tiles WHERE tile_id = 1")
    try:
        # before: the reader's BEGIN IMMEDIATE waited for the writer (60 s, then "database is locked")
        r = subprocess.run([sys.executable, "-c", _READ, str(path)], capture_output=True, text=True, timeout=30)
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert r.returncode == 0, r.stderr
    assert r.stdout.split(maxsplit=2) == ["2", "2", "[1, 2]\n"]  # the last commit, not the writer's delete


def test_two_catalogs_open_side_by_side_while_one_writes(tmp_path):
    path = _catalog(tmp_path)
    with Catalog(path) as writer:
        with writer.transaction() as c:  # what write_scene holds while it writes a scene
            c.execute("DELETE FROM tiles WHERE tile_id = 2")
            got = {}

            def read():
                with Catalog(path) as reader, Catalog(path) as other:
                    got["counts"] = (reader.counts()["tiles"], other.counts()["tiles"])

            t = threading.Thread(target=read, daemon=True)
            t.start()
            t.join(timeout=10)
            done = not t.is_alive()
        t.join()
    assert done and got["counts"] == (2, 2)


def _names(con):
    return {r[0] for r in con.execute("SELECT name FROM sqlite_master")}


def test_a_fresh_catalog_gets_its_schema(tmp_path):
    path = tmp_path / "ws" / "catalog.sqlite"
    with Catalog(path) as cat:  # fresh: created, without a grid size yet
        assert {"meta", "scenes", "tiles", "tile_rtree", "cell_labels", "primary_labels", "tile_cells",
                "tiles_count_insert"} <= _names(cat.conn)
        assert cat.meta("schema_version") == "2" and cat.tile_m is None
        assert cat.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        cat.write_scene(*_scene("/a.tif", 2))
        assert cat.counts()["tiles"] == 2


def test_what_an_open_must_write_is_still_written(tmp_path):
    """The write path stays for what needs it: a grid size to record, a part of the schema missing (a dropped
    index, a catalog from before the counts)."""
    path = tmp_path / "ws" / "catalog.sqlite"
    Catalog(path).close()
    with Catalog(path, tile_m=480) as cat:
        assert cat.tile_m == 480.0
    con = sqlite3.connect(path)
    con.execute("DROP INDEX scenes_acquired")
    con.execute("DROP TRIGGER tiles_count_insert")
    con.commit()
    con.close()
    with Catalog(path) as cat:
        assert {"scenes_acquired", "tiles_count_insert"} <= _names(cat.conn)
        cat.write_scene(*_scene("/a.tif", 3))
        assert cat.counts()["tiles"] == 3 and cat.tile_m == 480.0
