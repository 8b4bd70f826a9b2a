"""Query by a tile file with ``--point``: the cell and pixels are those ingest cuts from the same file, whatever its
CRS, next to the antimeridian, across a zone border, and on a cell's edge."""

import json

import numpy as np
import pytest
from pyproj import Transformer
from rasterio.transform import from_origin

from rsretrieve.data.catalog import Catalog
from rsretrieve.data.ingest import ingest
from rsretrieve.data.tiles import read_scene_tiles
from rsretrieve.index.query import QueryError, tile_from_file
from tests.conftest import run_cli, s2_file

S2 = "S2A_MSIL2A_20200101T100000"


def _catalog_tile(tmp_path, path, cell_id):
    """The pixels ingest cuts for ``cell_id`` from ``path``, read as the index reads them."""
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        if not cat.scenes():
            report = ingest([path], cat)
            assert report.added == 1 and not report.problems
        scene = cat.scenes()[0]
        tiles = cat.tiles("t.cell_id = ?", (cell_id,))
        assert len(tiles) == 1, f"{cell_id} is not a catalog tile of {path}"
        return dict(read_scene_tiles(scene, tiles, 480.0))[tiles[0]["tile_id"]]


def _antimeridian_file(tmp_path):
    return s2_file(tmp_path / "q" / f"{S2}_am.tif", from_origin(179.99, -17.0, 0.0001, 0.0001), "EPSG:4326", 100, 200)


@pytest.mark.parametrize("lon", [179.995, -179.995])
def test_a_point_on_either_side_of_the_antimeridian_in_a_lonlat_file_is_its_catalog_tile(tmp_path, lon):
    """The file runs 179.99 .. 180.01 and is tiled in zone 1: -179.995 was refused as outside it, and 179.995 was
    put in a zone-60 cell the catalog does not have."""
    f = _antimeridian_file(tmp_path)
    q = tile_from_file(f, 480.0, point=(lon, -17.005))
    x, y = Transformer.from_crs(4326, 32701, always_xy=True).transform(lon, -17.005)
    assert q.cell_id == f"01S_480m_r{int(y // 480)}_c{int(x // 480)}"
    np.testing.assert_array_equal(q.array, _catalog_tile(tmp_path, f, q.cell_id))


def test_a_point_in_the_other_zone_of_a_laea_file_across_a_zone_border_is_its_catalog_tile(tmp_path):
    """A 4 km EPSG:3035 file across 12 E is tiled in zone 32 (its centre's); a point east of 12 E was put in a
    zone-33 cell, with a window of other ground than the catalog's tile of that point."""
    x, y = Transformer.from_crs(4326, 3035, always_xy=True).transform(12.0, 50.0)
    f = s2_file(tmp_path / "q" / f"{S2}_laea.tif", from_origin(x - 3000, y + 600, 10, 10), "EPSG:3035", 120, 400)
    q = tile_from_file(f, 480.0, point=(12.01, 49.999))
    x, y = Transformer.from_crs(4326, 32632, always_xy=True).transform(12.01, 49.999)
    assert q.cell_id == f"32N_480m_r{int(y // 480)}_c{int(x // 480)}"
    np.testing.assert_array_equal(q.array, _catalog_tile(tmp_path, f, q.cell_id))


def test_a_point_on_a_cell_edge_is_in_the_cell_east_and_north_of_it(tmp_path):
    """Corners and edges given as the lon/lat of the cell's corner (as copied from a footprint) come back from the
    projection a few nanometres to either side: they went to the west / south cell at random."""
    x0, y0 = 480 * 1000, 480 * 10400  # the file's north-west corner is a cell corner
    f = s2_file(tmp_path / "q" / f"{S2}_edge.tif", from_origin(x0, y0, 10, 10), "EPSG:32633")
    to_ll = Transformer.from_crs(32633, 4326, always_xy=True)
    for dx, dy, want in [(480, -480, "r10399_c1001"), (0, -480, "r10399_c1000"), (480, -10, "r10399_c1001"),
                         (480, -960 + 10, "r10398_c1001")]:
        q = tile_from_file(f, 480.0, point=to_ll.transform(x0 + dx, y0 + dy))
        assert q.cell_id == f"33N_480m_{want}", (dx, dy)
        np.testing.assert_array_equal(q.array, _catalog_tile(tmp_path, f, q.cell_id))
    # on the file's east edge the point's cell is the one east of the file: outside it, said in one line
    with pytest.raises(QueryError, match=r"^point [0-9.]+,[0-9.]+ \(lon,lat\) is outside .*, which covers lon"):
        tile_from_file(f, 480.0, point=to_ll.transform(x0 + 960 - 1e-7, y0 - 300))


def test_cli_query_by_a_point_across_the_antimeridian(small_workspace, tmp_path):
    f = _antimeridian_file(tmp_path)
    r = run_cli("query", "--workspace", small_workspace, "--tile", f, "--point", "-179.995,-17.005", "-k", "1",
                "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["query"]["cell_id"].startswith("01S_480m_")
    r = run_cli("query", "--workspace", small_workspace, "--tile", f, "--point", "-179.98,-17.005")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [
        f"rsretrieve query: error: point -179.98,-17.005 (lon,lat) is outside {f}, which covers lon "
        "179.9900..-179.9900, lat -17.0100..-17.0000"]


def test_excluding_the_own_cell_leaves_out_the_same_ground_tiled_in_the_other_zone(tmp_path):
    """Two scenes of one place across 12 E, one delivered in zone 32 and one in zone 33 (as Sentinel-2 tiles of a
    zone boundary's overlap are): each is tiled in its own zone, so the query tile's own ground came back, under the
    other zone's cell id, as the best hit of a search that excludes the query's cell."""
    from rsretrieve.workspace import Workspace
    from rsretrieve.data.grid import Cell, parse_cell_id
    from rsretrieve.index.indexer import index_workspace
    from tests.conftest import save_untrained_model

    files = []
    for epsg in (32632, 32633):
        x, y = Transformer.from_crs(4326, epsg, always_xy=True).transform(12.0, 45.0)
        x0, y0 = 480.0 * (x // 480) - 960, 480.0 * (y // 480) + 960  # on the zone's grid: whole cells
        files.append(s2_file(tmp_path / "a" / f"S2A_MSIL2A_2020010{epsg % 10}T100000_{epsg}.tif",
                             from_origin(x0, y0, 10, 10), f"EPSG:{epsg}", 192, 192))
    ws = tmp_path / "ws"
    with Catalog(ws / "catalog.sqlite", tile_m=480) as cat:
        report = ingest(files, cat)
        assert report.added == 2 and not report.problems
        tile = next(t for t in cat.tiles("t.cell_id LIKE '32N%'") if t["coverage"] == 1.0)
    save_untrained_model(ws, sensors=["sentinel2"])
    index_workspace(ws)
    w = Workspace.open(ws)
    try:
        mine = Cell(*parse_cell_id(tile["cell_id"])).footprint()

        def shared(hits, least=0.5):
            return [h.cell_id for h in hits if h.cell_id.startswith("33N")
                    and mine.intersection(Cell(*parse_cell_id(h.cell_id)).footprint()).area >= least * mine.area]

        plain = w.query(tile_id=tile["tile_id"], k=50)
        assert shared(plain.hits)  # the other zone's cell covering most of the query's ground is in the index
        res = w.query(tile_id=tile["tile_id"], k=50, exclude_own_cell=True)
        assert res.hits and not shared(res.hits) and tile["cell_id"] not in {h.cell_id for h in res.hits}
        assert {h.cell_id for h in plain.hits} - {h.cell_id for h in res.hits} == {tile["cell_id"], *shared(plain.hits)}
        # the other zone's cells with only a part of its ground (the grids are rotated) stay: other ground mostly
        assert set(shared(plain.hits, 1e-3)) - set(shared(plain.hits)) <= {h.cell_id for h in res.hits}
        # one best hit per ground: the two zones' cells on one ground count as one cell (both came back)
        feet = {}
        for k in (3, 50):
            one = w.query(tile_id=tile["tile_id"], k=k, one_per_cell=True).hits
            assert [h.rank for h in one] == list(range(1, len(one) + 1))
            assert len(one) == k or k == 50 and len(one) > 3
            for h in one:
                feet.setdefault(h.cell_id, Cell(*parse_cell_id(h.cell_id)).footprint())
            for i, a in enumerate(one):
                for b in one[:i]:
                    assert feet[a.cell_id].intersection(feet[b.cell_id]).area < 0.5 * feet[a.cell_id].area, (a, b)
    finally:
        w.close()


def test_one_per_cell_keeps_a_cell_of_another_zone_that_shares_only_a_sliver_of_a_hit_s_ground():
    """Two zones' grids are rotated against each other: a 34N cell shares ground with 3-4 cells of zone 33, one
    covering most of it and others a sliver. The sliver's cell is other ground and stays; the cell covering most of
    it is the same cell and goes, whichever of the two comes first."""
    from types import SimpleNamespace

    from rsretrieve.data.grid import Cell, ground_neighbours, parse_cell_id
    from rsretrieve.index.query import Hit, QueryEngine
    from tests.conftest import cells_over

    b = cells_over(18.0, 45.0, 18.0001, 45.0001, 32634)[0]
    mine = Cell(*parse_cell_id(b)).footprint()
    share = {a: mine.intersection(Cell(*parse_cell_id(a)).footprint()).area / mine.area
             for a in ground_neighbours([b], cells_over(17.97, 44.98, 18.03, 45.02, 32633), overlap=True)[b]}
    big, small = max(share, key=share.get), min(share, key=share.get)
    assert share[big] > 0.5 > 0.1 > share[small]
    engine = object.__new__(QueryEngine)  # only the de-duplication: hits in a given order, no index
    engine.store = SimpleNamespace(ntotal=3)
    for order, kept in (([b, big, small], [b, small]), ([big, small, b], [big, small]), ([small, b, big], [small, b])):
        hits = [Hit(i + 1, i, 1.0 - i / 10, "sentinel2", c, None, 0, "x", 0.0, 0.0, "") for i, c in enumerate(order)]
        out, _ = engine._one_per_ground(None, 3, None, hits, {})
        assert [(h.rank, h.cell_id) for h in out] == list(enumerate(kept, 1)), order
