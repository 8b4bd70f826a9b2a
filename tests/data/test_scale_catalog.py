"""The catalog at archive scale: removing or replacing a scene finds its R*Tree entries by the boxes of its tile
footprints (the R*Tree cannot look up its tile_id column: a delete by tile id scanned every entry, 1.3 s per scene
at a million tiles), and leaves the R*Tree exactly as a full scan would."""

import sqlite3

from shapely.geometry import MultiPolygon, box

from rsretrieve.data.catalog import Catalog, SceneRow, TileRow


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


def _steps(cat, fn):
    """SQLite virtual-machine steps (in thousands) that ``fn`` makes on the catalog's connection."""
    n = [0]

    def tick():
        n[0] += 1
        return 0

    cat.conn.set_progress_handler(tick, 1000)
    try:
        fn()
    finally:
        cat.conn.set_progress_handler(None, 0)
    return n[0]


def test_removing_a_scene_costs_the_same_in_a_catalog_ten_times_larger(tmp_path):
    steps = []
    for n_others in (2, 20):
        with Catalog(tmp_path / f"c{n_others}.sqlite", tile_m=480) as cat:
            for j in range(n_others):
                cat.write_scene(*_scene(f"/s{j}.tif", lon0=1.0 + j))
            cat.write_scene(*_scene("/gone.tif", lon0=0.5))
            steps.append(_steps(cat, lambda: cat.remove_scene("/gone.tif")))
            assert len(_rtree(cat)) == 400 * n_others
    # a scan of every R*Tree entry made it grow with the catalog (about 10x here)
    assert steps[1] < 2 * steps[0] + 5, steps


def test_remove_and_replace_leave_the_rtree_of_the_other_scenes_as_it_was(tmp_path):
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        cat.write_scene(*_scene("/keep.tif", lon0=179.9025))
        cat.write_scene(*_scene("/beside.tif", lon0=179.9025, lat0=50.05))  # overlaps /across.tif's box
        keep = _rtree(cat)
        cat.write_scene(*_scene("/across.tif", lon0=179.9025, lat0=50.02))  # tiles across the antimeridian
        assert len(keep) == 2 * (400 + 20)
        assert len(_rtree(cat)) == len(keep) + 400 + 20  # one column of tiles in two parts
        cat.write_scene(*_scene("/across.tif", lon0=179.9025, lat0=50.03, n=60))  # replaced
        assert len(_rtree(cat)) == len(keep) + 60 + 3
        assert cat.remove_scene("/across.tif")
        assert _rtree(cat) == keep
        ids = {r[0] for r in cat.conn.execute("SELECT tile_id FROM tiles")}
        assert {r[-1] for r in keep} == ids


def test_a_scene_whose_footprints_do_not_parse_is_still_removed_whole(tmp_path):
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        cat.write_scene(*_scene("/keep.tif", lon0=10.0))
        keep = _rtree(cat)
        scene, tiles = _scene("/odd.tif", lon0=10.0, lat0=50.01)
        tiles[7].footprint = "not wkt"
        cat.write_scene(scene, tiles)
        assert cat.remove_scene("/odd.tif")
        assert _rtree(cat) == keep
    con = sqlite3.connect(tmp_path / "c.sqlite")
    assert con.execute("SELECT COUNT(*) FROM tile_rtree WHERE tile_id NOT IN (SELECT tile_id FROM tiles)"
                       ).fetchone()[0] == 0
    con.close()


def test_the_rtree_deletes_of_a_scene_removal_look_boxes_up(tmp_path):
    """Every statement a removal runs on the R*Tree constrains its box columns (an R*Tree query plan
    ``INDEX 2:<constraints>``), none scans it whole (``INDEX 2:`` with no constraint)."""
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        cat.write_scene(*_scene("/keep.tif", lon0=10.0))
        cat.write_scene(*_scene("/gone.tif", lon0=10.0, lat0=50.01))
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
            scans = [p for p in plan if p.startswith("SCAN tile_rtree VIRTUAL TABLE INDEX 2:")]
            assert scans and all(p != "SCAN tile_rtree VIRTUAL TABLE INDEX 2:" for p in scans), (s, plan)


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
