"""The catalog at archive scale: removing or replacing a scene finds its R*Tree entries by id (2 * tile_id + part,
in catalogs that wrote them so) or by the boxes of its tile footprints (entries with automatic ids, as catalogs
written before have), never by its tile_id column (the R*Tree cannot look it up: a delete by tile id scanned every
entry, 1.3 s per scene at a million tiles), and leaves the R*Tree exactly as a full scan would."""

import random
import sqlite3

import pytest
from shapely.geometry import MultiPolygon, box

from rsretrieve.data.catalog import Catalog, SceneRow, TileRow
from tests.conftest import sqlite_steps


def _scene(key, lon0, n=400, lat0=50.0, footprint=None):
    """A scene of ``n`` 0.005-degree tiles in rows of 20 from (lon0, lat0); ``lon0`` 179.9025 puts the last column
    across the antimeridian (two footprint parts, two R*Tree entries)."""
    tiles = []
    for i in range(n):
        w, s = lon0 + 0.005 * (i % 20), lat0 + 0.005 * (i // 20)
        e, nn = w + 0.005, s + 0.005
        if e > 180:
            geom = MultiPolygon([box(w, s, 180, nn), box(-180, s, e - 360, nn)])
        else:
            geom = box(w, s, e, nn)
        boxes = [g.bounds for g in getattr(geom, "geoms", [geom])]
        tiles.append(TileRow(f"c{key}_{i}", 32633, i // 20, i % 20, 0, 0, 48, 48, 1.0, 1.0, 0.0, (w + e) / 2 - 360 * (
            (w + e) / 2 > 180), (s + nn) / 2, footprint or geom.wkt, boxes))
    scene = SceneRow(key=key, fingerprint="f", sensor="sentinel2", layout="stacked", files={"*": key}, aux={},
                     crs="EPSG:32633", transform=[10, 0, 0, 0, -10, 0], width=960, height=960, res_m=10.0,
                     acquired="2021-01-01T00:00:00Z", acquired_ts=1609459200, west=lon0, south=lat0,
                     east=lon0 + 0.1, north=lat0 + 0.1, footprint=box(lon0, lat0, lon0 + 0.1, lat0 + 0.1).wkt,
                     grid_epsg=32633, valid_fraction=1.0, cloud_fraction=0.0, ingested_at="now")
    return scene, tiles


def _rtree(cat):
    return sorted(tuple(r) for r in cat.conn.execute("SELECT * FROM tile_rtree"))


def _automatic_ids(cat, first=None):
    """Rewrite the R*Tree as catalogs written before the ids 2 * tile_id + part have it: the same entries with
    automatic ids in the order they were written (here shuffled), from ``first`` on when given."""
    rows = cat.conn.execute("SELECT min_lon, max_lon, min_lat, max_lat, tile_id FROM tile_rtree").fetchall()
    random.Random(0).shuffle(rows)
    with cat.transaction() as c:
        c.execute("DELETE FROM tile_rtree")
        if c.execute("SELECT 1 FROM sqlite_master WHERE name = 'scene_rtree'").fetchone():
            c.execute("DELETE FROM scene_rtree")
        if first is not None and rows:
            c.execute("INSERT INTO tile_rtree VALUES (?,?,?,?,?,?)", (first, *rows.pop()))
        c.executemany("INSERT INTO tile_rtree (min_lon, max_lon, min_lat, max_lat, tile_id) VALUES (?,?,?,?,?)", rows)


#: a catalog whose scenes have R*Tree ids 2 * tile_id + part, or automatic ids (written before them)
FORMATS = ("by_id", "automatic")


@pytest.mark.parametrize("fmt", FORMATS)
def test_removing_a_scene_costs_the_same_in_a_catalog_ten_times_larger(tmp_path, fmt):
    steps = []
    for n_others in (2, 20):
        with Catalog(tmp_path / f"c{n_others}.sqlite", tile_m=480) as cat:
            for j in range(n_others):
                cat.write_scene(*_scene(f"/s{j}.tif", lon0=1.0 + j))
            cat.write_scene(*_scene("/gone.tif", lon0=0.5))
            if fmt == "automatic":
                _automatic_ids(cat)
            steps.append(sqlite_steps(cat, lambda: cat.remove_scene("/gone.tif")))
            assert len(_rtree(cat)) == 400 * n_others
    # a scan of every R*Tree entry made it grow with the catalog (about 10x here)
    assert steps[1] < 2 * steps[0] + 5, steps


@pytest.mark.parametrize("fmt", ("by_id", "automatic", "mixed"))
def test_remove_and_replace_leave_the_rtree_of_the_other_scenes_as_it_was(tmp_path, fmt):
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        cat.write_scene(*_scene("/keep.tif", lon0=179.9025))
        cat.write_scene(*_scene("/beside.tif", lon0=179.9025, lat0=50.05))  # overlaps /across.tif's box
        if fmt == "mixed":  # the other scenes written before the ids, /across.tif after
            _automatic_ids(cat)
        keep = _rtree(cat)
        cat.write_scene(*_scene("/across.tif", lon0=179.9025, lat0=50.02))  # tiles across the antimeridian
        if fmt == "automatic":
            _automatic_ids(cat)
            keep = [r for r in _rtree(cat) if r[-1] <= 800]
        assert len(keep) == 2 * (400 + 20)
        assert len(_rtree(cat)) == len(keep) + 400 + 20  # one column of tiles in two parts
        cat.write_scene(*_scene("/across.tif", lon0=179.9025, lat0=50.03, n=60))  # replaced
        if fmt == "automatic":
            _automatic_ids(cat)
            keep = [r for r in _rtree(cat) if r[-1] <= 800]
        assert len(_rtree(cat)) == len(keep) + 60 + 3
        assert cat.remove_scene("/across.tif")
        assert _rtree(cat) == keep
        ids = {r[0] for r in cat.conn.execute("SELECT tile_id FROM tiles")}
        assert {r[-1] for r in keep} == ids


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_scene_whose_footprints_do_not_parse_is_still_removed_whole(tmp_path, fmt):
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        cat.write_scene(*_scene("/keep.tif", lon0=10.0))
        scene, tiles = _scene("/odd.tif", lon0=10.0, lat0=50.01)
        tiles[7].footprint = "not wkt"
        cat.write_scene(scene, tiles)
        if fmt == "automatic":
            _automatic_ids(cat)
        keep = [r for r in _rtree(cat) if r[-1] <= 400]
        assert cat.remove_scene("/odd.tif")
        assert _rtree(cat) == keep
    con = sqlite3.connect(tmp_path / "c.sqlite")
    assert con.execute("SELECT COUNT(*) FROM tile_rtree WHERE tile_id NOT IN (SELECT tile_id FROM tiles)"
                       ).fetchone()[0] == 0
    con.close()


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_rtree_deletes_of_a_scene_removal_look_ids_or_boxes_up(tmp_path, fmt):
    """Every statement a removal runs on the R*Tree looks entries up by id (an R*Tree query plan ``INDEX 1:``) or
    constrains its box columns (``INDEX 2:<constraints>``), none scans it whole (``INDEX 2:`` with no constraint)."""
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        cat.write_scene(*_scene("/keep.tif", lon0=10.0))
        cat.write_scene(*_scene("/gone.tif", lon0=10.0, lat0=50.01))
        if fmt == "automatic":
            _automatic_ids(cat)
        sql = []
        cat.conn.set_trace_callback(sql.append)
        try:
            assert cat.remove_scene("/gone.tif")
        finally:
            cat.conn.set_trace_callback(None)
        on_rtree = [s for s in sql if s.lstrip().upper().startswith("DELETE") and "tile_rtree" in s]
        assert on_rtree
        for s in on_rtree:
            plan = [r[3] for r in cat.conn.execute("EXPLAIN QUERY PLAN " + s)]
            scans = [p for p in plan if p.startswith("SCAN tile_rtree VIRTUAL TABLE INDEX")]
            assert scans and all(p != "SCAN tile_rtree VIRTUAL TABLE INDEX 2:" for p in scans), (s, plan)
            by_id = all(p == "SCAN tile_rtree VIRTUAL TABLE INDEX 1:" for p in scans)
            assert by_id == (fmt == "by_id"), (s, plan)


def test_new_scenes_have_rtree_ids_from_their_tile_ids_and_are_removed_without_reading_footprints(
        tmp_path, monkeypatch):
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        cat.write_scene(*_scene("/keep.tif", lon0=10.0, n=30))
        cat.write_scene(*_scene("/gone.tif", lon0=179.9025, n=40))  # two of its tiles across the antimeridian
        ids = {}
        for rid, tile_id in cat.conn.execute("SELECT id, tile_id FROM tile_rtree"):
            ids.setdefault(tile_id, []).append(rid)
        ids = {t: sorted(v) for t, v in ids.items()}
        assert ids == {t: [2 * t] for t in range(1, 31)} | {
            t: [2 * t, 2 * t + 1] if (t - 30) % 20 == 0 else [2 * t] for t in range(31, 71)}
        keep = _rtree(cat)[:30]

        def no_parsing(footprints):
            raise AssertionError("footprints parsed for a scene whose R*Tree ids are known")

        monkeypatch.setattr("rsretrieve.data.catalog._rtree_windows", no_parsing)
        assert cat.remove_scene("/gone.tif")
        assert _rtree(cat) == keep
        assert cat.conn.execute("SELECT COUNT(*) FROM scene_rtree").fetchone()[0] == 1  # /keep.tif's


def test_automatic_ids_above_twice_the_next_tile_id_keep_new_scenes_on_automatic_ids(tmp_path):
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        cat.write_scene(*_scene("/old.tif", lon0=10.0, n=30))
        _automatic_ids(cat, first=1000)  # ids 1000..1029: 2 * tile_id would collide from tile 500 on
        cat.write_scene(*_scene("/new.tif", lon0=11.0, n=30))  # tiles 31..60
        assert cat.conn.execute("SELECT COUNT(*) FROM scene_rtree").fetchone()[0] == 0
        assert [r[0] for r in cat.conn.execute("SELECT id FROM tile_rtree WHERE tile_id > 30 ORDER BY id")
                ] == list(range(1030, 1060))
        keep = [r for r in _rtree(cat) if r[-1] <= 30]
        assert cat.remove_scene("/new.tif")
        assert _rtree(cat) == keep


def test_a_scene_with_ids_whose_entries_changed_since_is_still_removed_whole(tmp_path):
    """Fewer entries found by id than were written (one written again with an automatic id here, one deleted): the
    rest are looked up by box, and the full scan runs only if still fewer are found."""
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        cat.write_scene(*_scene("/keep.tif", lon0=10.0))
        cat.write_scene(*_scene("/gone.tif", lon0=10.0, lat0=50.01))
        keep = _rtree(cat)[:400]
        cat.conn.execute("INSERT INTO tile_rtree (min_lon, max_lon, min_lat, max_lat, tile_id) SELECT min_lon,"
                         " max_lon, min_lat, max_lat, tile_id FROM tile_rtree WHERE id = ?", (2 * 401,))
        cat.conn.execute("DELETE FROM tile_rtree WHERE id = ?", (2 * 401,))
        assert cat.remove_scene("/gone.tif")
        assert _rtree(cat) == keep
        cat.write_scene(*_scene("/gone.tif", lon0=10.0, lat0=50.01))
        cat.conn.execute("DELETE FROM tile_rtree WHERE id = ?", (2 * 1000,))
        assert cat.remove_scene("/gone.tif")
        assert _rtree(cat) == keep


def _reference_tiles(cat, where="", args=()):
    """Catalog.tiles() as it was written first: each sqlite3.Row made a dict."""
    cat.conn.row_factory = sqlite3.Row
    q = ("SELECT t.*, l.scheme AS label_scheme, l.label, l.label_name FROM tiles t"
         " LEFT JOIN primary_labels l ON l.cell_id = t.cell_id" + (f" WHERE {where}" if where else "")
         + " ORDER BY t.tile_id")
    return [dict(r) for r in cat.conn.execute(q, args)]


def test_tile_rows_are_the_dicts_they_were_and_columns_picks_keys(tmp_path):
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        cat.write_scene(*_scene("/a.tif", lon0=10.0, n=30))
        cat.write_scene(*_scene("/b.tif", lon0=10.0, n=30, lat0=50.2))
        cells = [f"c/a.tif_{i}" for i in range(0, 30, 3)]
        cat.write_labels([(c, "corine", 211, "arable", 0.9, "/lc.tif") for c in cells])
        cat.write_labels([(c, "igbp", 12, "crops", 0.95, "/lc2.tif") for c in cells[:4]])
        for where, args in (("", ()), ("t.tile_id IN (3, 5, 40)", ()), ("l.label = ?", (211,))):
            got, want = cat.tiles(where, args), _reference_tiles(cat, where, args)
            assert got == want and [list(r) for r in got] == [list(r) for r in want]
        full = cat.tiles()
        assert sum(r["label"] is not None for r in full) == 10
        assert {r["label_scheme"] for r in full if r["tile_id"] <= 10 and r["label"] is not None} == {"igbp"}
        cols = ("tile_id", "sensor", "label_scheme", "label")
        assert cat.tiles(columns=cols) == [{k: r[k] for k in cols} for r in full]
        assert cat.tiles("t.scene_id = ?", (2,), columns=["lon"]) == [{"lon": r["lon"]} for r in full
                                                                         if r["scene_id"] == 2]
        for bad in (("tile_id", "footprint; DROP TABLE tiles"), ("nope",), ()):
            try:
                cat.tiles(columns=bad)
            except ValueError as e:
                assert "c.sqlite: tiles(columns=...)" in str(e)
            else:
                raise AssertionError(f"columns={bad!r} was taken")
        assert len(cat.tiles()) == 60
