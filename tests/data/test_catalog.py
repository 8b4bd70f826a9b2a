import pytest
from shapely.geometry import box

from rsretrieve.data.catalog import Catalog, SceneRow, TileRow


def _scene(key, n_tiles=2, lon0=10.0):
    scene = SceneRow(key=key, fingerprint="f1", sensor="sentinel1", layout="full", files={"*": key}, aux={},
                     crs="EPSG:32633", transform=[10, 0, 0, 0, -10, 0], width=96, height=96, res_m=10.0,
                     acquired="2021-01-01T00:00:00Z", acquired_ts=1609459200, west=lon0, south=50.0,
                     east=lon0 + 0.1, north=50.1, footprint=box(lon0, 50, lon0 + 0.1, 50.1).wkt, grid_epsg=32633,
                     valid_fraction=1.0, cloud_fraction=0.0, ingested_at="now")
    tiles = [TileRow(f"33N_480m_r{i}_c0", 32633, i, 0, 0, 48 * i, 48, 48, 1.0, 1.0, 0.0, lon0 + 0.01 * i, 50.05,
                     box(lon0 + 0.01 * i, 50.0, lon0 + 0.01 * i + 0.005, 50.005).wkt,
                     [(lon0 + 0.01 * i, 50.0, lon0 + 0.01 * i + 0.005, 50.005)]) for i in range(n_tiles)]
    return scene, tiles


def test_write_replace_and_remove_scene(tmp_path):
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        cat.write_scene(*_scene("/a.tif", 3))
        assert cat.counts()["tiles"] == 3
        cat.write_scene(*_scene("/a.tif", 2))  # same key: replaced, not duplicated
        assert (cat.counts()["scenes"], cat.counts()["tiles"]) == (1, 2)
        assert cat.conn.execute("SELECT COUNT(*) FROM tile_rtree").fetchone()[0] == 2
        assert cat.remove_scene("/a.tif") and not cat.remove_scene("/a.tif")
        assert cat.counts()["tiles"] == 0 and cat.conn.execute("SELECT COUNT(*) FROM tile_rtree").fetchone()[0] == 0


def test_failed_scene_write_leaves_nothing_behind(tmp_path):
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        scene, tiles = _scene("/a.tif", 2)
        tiles.append(tiles[0])  # duplicate (scene, cell): the UNIQUE constraint fails mid-transaction
        with pytest.raises(Exception, match="UNIQUE"):
            cat.write_scene(scene, tiles)
        assert (cat.counts()["scenes"], cat.counts()["tiles"]) == (0, 0)
        assert cat.conn.execute("SELECT COUNT(*) FROM tile_rtree").fetchone()[0] == 0


def test_rtree_bbox_query_including_antimeridian(tmp_path):
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        cat.write_scene(*_scene("/a.tif", 3, lon0=10.0))
        cat.write_scene(*_scene("/b.tif", 2, lon0=179.98))
        ids_a = [t["tile_id"] for t in cat.tiles("t.scene_id = 1")]
        assert cat.tile_ids_in_bbox(10.0, 49.9, 10.012, 50.2) == ids_a[:2]
        assert cat.tile_ids_in_bbox(11.0, 49.9, 12.0, 50.2) == []
        ids_b = [t["tile_id"] for t in cat.tiles("t.scene_id = 2")]
        # W > E crosses the antimeridian: 179.97 .. -179.0 contains the tiles at 179.98 and 179.99
        assert cat.tile_ids_in_bbox(179.97, 49.0, -179.0, 51.0) == ids_b


def test_workspace_grid_size_is_fixed(tmp_path):
    Catalog(tmp_path / "c.sqlite", tile_m=480).close()
    with pytest.raises(ValueError, match="grid has 480 m tiles, not 240 m"):
        Catalog(tmp_path / "c.sqlite", tile_m=240)
    with Catalog(tmp_path / "c.sqlite") as cat:
        assert cat.tile_m == 480.0 and cat.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_export_writes_every_exterior_ring_counter_clockwise(tmp_path):
    # footprints split at the antimeridian came out clockwise beside counter-clockwise cells
    import dataclasses

    import geopandas as gpd
    from shapely import MultiPolygon
    from shapely.geometry.polygon import orient

    from rsretrieve.data.export import export_geoparquet

    scene, tiles = _scene("/b.tif", 2, lon0=179.98)
    split = MultiPolygon([orient(box(179.99, 50.0, 180.0, 50.005), -1),
                          orient(box(-180.0, 50.0, -179.99, 50.005), -1)])
    tiles[0] = dataclasses.replace(tiles[0], footprint=split.wkt)
    tiles[1] = dataclasses.replace(tiles[1], footprint=orient(box(179.99, 50.01, 179.995, 50.015), -1).wkt)
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        cat.write_scene(scene, tiles)
        assert export_geoparquet(cat, tmp_path / "t.parquet") == 2
    geoms = gpd.read_parquet(tmp_path / "t.parquet").geometry
    rings = [p.exterior for g in geoms for p in getattr(g, "geoms", [g])]
    assert len(rings) == 3 and all(r.is_ccw for r in rings)
    assert geoms.iloc[0].equals(split)  # the same ground
