import pytest
from pyproj import Transformer
from shapely.geometry import MultiPolygon, box

from rsretrieve.data.grid import Cell, cell_id, cells_covering, grid_epsg_for, parse_cell_id, to_lonlat, utm_epsg
from tests.conftest import cells_over


@pytest.mark.parametrize(("lon", "lat", "epsg"), [(9.0, 50.0, 32632), (-0.1, 51.5, 32630), (-70.0, -10.0, 32719),
                                                    (179.9, 65.0, 32660), (-180.0, 0.0, 32601), (180.0, 0.0, 32601)])
def test_utm_zone_of_a_point(lon, lat, epsg):
    assert utm_epsg(lon, lat) == epsg


def test_grid_zone_is_the_scene_utm_zone_or_the_zone_of_its_centre():
    assert grid_epsg_for("EPSG:32633", 20.0, 48.0) == 32633  # own zone wins even if the centre is in 34
    assert grid_epsg_for("EPSG:25832", 9.0, 50.0) == 32632  # ETRS89 / UTM 32N
    assert grid_epsg_for("EPSG:4326", 73.3, 30.45) == 32643
    assert grid_epsg_for("EPSG:4326", 73.3, -30.45) == 32743


def test_cell_id_round_trip_and_bounds():
    c = Cell(32633, 480.0, 11129, 842)
    assert c.id == "33N_480m_r11129_c842" == cell_id(32633, 480, 11129, 842)
    assert parse_cell_id(c.id) == (32633, 480.0, 11129, 842)
    assert c.bounds == (842 * 480, 11129 * 480, 843 * 480, 11130 * 480)
    assert Cell(32718, 480, 5, 6).id == "18S_480m_r5_c6"


def test_cells_covering_counts_by_hand():
    # a 960 m square aligned on the grid covers exactly 2 x 2 cells; shifted by 10 m it touches 3 x 3
    assert len(cells_covering((4800, 9600, 5760, 10560), 32633, 480)) == 4
    cells = cells_covering((4810, 9610, 5770, 10570), 32633, 480)
    assert len(cells) == 9
    assert cells[0].row == 22 and cells[0].col == 10  # north-west first: reading order


def test_cell_centre_matches_pyproj():
    c = Cell(32633, 480, 11129, 842)
    lon, lat = c.center_lonlat()
    x, y = Transformer.from_crs(4326, 32633, always_xy=True).transform(lon, lat)
    assert x == pytest.approx(842 * 480 + 240, abs=1e-3) and y == pytest.approx(11129 * 480 + 240, abs=1e-3)


def test_footprint_across_the_antimeridian_is_split_in_two():
    x, y = Transformer.from_crs(4326, 32660, always_xy=True).transform(180.0, 65.5)
    cell = Cell(32660, 480, int(y // 480), int(x // 480))
    fp = cell.footprint()
    assert isinstance(fp, MultiPolygon) and len(fp.geoms) == 2
    east, west = sorted(fp.geoms, key=lambda g: g.bounds[0], reverse=True)
    assert east.bounds[2] == pytest.approx(180.0) and west.bounds[0] == pytest.approx(-180.0)
    assert east.bounds[0] > 179.98 and west.bounds[2] < -179.98


def test_footprint_in_4326_of_a_geographic_box_is_unchanged():
    fp = to_lonlat(box(10, 20, 11, 21), "EPSG:4326")
    assert fp.bounds == pytest.approx((10, 20, 11, 21))


@pytest.mark.parametrize(("a", "b", "box_"), [
    ((32660, 480.0), (32601, 480.0), (179.97, 44.98, 180.03, 45.02)),  # across the antimeridian, zones 60N | 1N
    ((32633, 480.0), (32733, 480.0), (14.98, -0.02, 15.02, 0.02)),  # the north and south grids at the equator
    ((32633, 480.0), (32633, 1000.0), (14.98, 44.98, 15.02, 45.02)),  # one zone, two cell sizes
], ids=["antimeridian", "equator", "cell-sizes"])
def test_ground_neighbours_match_the_footprints(a, b, box_):
    import shapely

    from rsretrieve.data.grid import ground_neighbours

    src = cells_over(*box_, *a)
    dst = cells_over(*box_, *b)
    feet = {c: Cell(*parse_cell_id(c)).footprint() for c in src + dst}
    tree = shapely.STRtree([feet[c] for c in dst])
    strict, loose = ground_neighbours(src, dst, overlap=True), ground_neighbours(src, dst)
    assert strict and all(strict.values()) and all(loose.values())  # no source with an empty list
    found = 0
    for c in src:
        area = {dst[j]: feet[c].intersection(feet[dst[j]]).area for j in tree.query(feet[c], predicate="intersects")}
        big = {d for d, v in area.items() if v > 1e-3 * feet[c].area}
        assert big <= set(strict.get(c, [])) <= set(area), c  # every real overlap, nothing that does not touch
        assert set(strict.get(c, [])) <= set(loose.get(c, [])) and set(area) <= set(loose.get(c, [])), c
        half = set(ground_neighbours([c], dst, overlap=True, min_share=0.5).get(c, []))  # most of the ground
        smaller = {d: min(feet[c].area, feet[d].area) for d in area}
        assert {d for d, v in area.items() if v > 0.51 * smaller[d]} <= half, c
        assert half <= {d for d, v in area.items() if v > 0.49 * smaller[d]}, c
        found += len(big)
    assert found >= len(src)  # the two grids cover the same ground
    assert ground_neighbours(src, src) == {} and ground_neighbours([], dst) == {}
    # both grids at once, each pair projected one way and mirrored: the same as each direction on its own
    both = ground_neighbours(src + dst, src + dst, overlap=True, symmetric=True)
    each = {**strict, **ground_neighbours(dst, src, overlap=True)}
    assert {c: sorted(v) for c, v in both.items()} == {c: sorted(v) for c, v in each.items()}
