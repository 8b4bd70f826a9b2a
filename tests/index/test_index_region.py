"""Polygon rasters: the fast point test equals shapely's on every point, edges, vertices and holes included."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from shapely.geometry import MultiPolygon, Polygon, box

from rsretrieve.index import region as region_mod
from rsretrieve.index.hilbert import HILBERT_ORDER, cell_ranges, hilbert_key
from rsretrieve.index.region import INSIDE, NEAR, OUTSIDE, Raster, Region

STAR = Polygon([(10 + 6 * (1 if i % 2 == 0 else .45) * np.cos(a), 48 + 4 * (1 if i % 2 == 0 else .45) * np.sin(a))
                for i, a in enumerate(np.linspace(0, 2 * np.pi, 15)[:-1])])
HOLED = Polygon([(0, 0), (10, 0), (10, 10), (5, 6), (0, 10)], holes=[[(2, 2), (4, 2), (4, 4), (2, 4)],
                                                                       [(6, 1), (8, 1), (7, 3)]])
MULTI = MultiPolygon([HOLED, box(20, 20, 25, 23), Polygon([(10, 0), (12, -3), (14, 0)])])  # touches HOLED at (10, 0)
CIRCLE = Polygon(np.c_[100 + 3 * np.cos(np.linspace(0, 2 * np.pi, 3001)[:-1]),
                       -20 + 2 * np.sin(np.linspace(0, 2 * np.pi, 3001)[:-1])])  # many edges
EDGE_OF_WORLD = box(170, 80, 180, 90)  # on the grid's last column and row
GEOMS = {"star": STAR, "holed": HOLED, "multi": MULTI, "circle": CIRCLE, "edge_of_world": EDGE_OF_WORLD}


def _points(geom, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random points over the bounds (and a margin), plus every vertex, edge midpoints and points a hair off edges."""
    rng = np.random.default_rng(seed)
    w, s, e, n_ = geom.bounds
    lon = rng.uniform(w - 1, e + 1, n).clip(-180, 180)
    lat = rng.uniform(s - 1, n_ + 1, n).clip(-90, 90)
    coords = shapely.get_coordinates(shapely.get_rings(getattr(geom, "geoms", [geom])))
    mid = (coords[:-1] + coords[1:]) / 2
    off = mid + rng.normal(0, 1e-9, mid.shape)
    pts = np.concatenate([np.c_[lon, lat], coords, mid, off])
    return pts[:, 0].clip(-180, 180), pts[:, 1].clip(-90, 90)


@pytest.mark.parametrize("name", GEOMS)
def test_contains_equals_shapely_on_every_point(name):
    geom = GEOMS[name]
    region = Region(geom)
    region.part_cells()  # rasters built: contains() uses them whatever the number of points
    lon, lat = _points(geom, 20_000, seed=len(name))
    assert np.array_equal(region.contains(lon, lat), shapely.intersects_xy(geom, lon, lat))


@pytest.mark.parametrize("name", GEOMS)
def test_raster_states_agree_with_shapely(name):
    geom = GEOMS[name]
    region = Region(geom)
    lon, lat = _points(geom, 20_000, seed=7)
    truth = shapely.intersects_xy(geom, lon, lat)
    inside = np.zeros(lon.size, bool)
    near = np.zeros(lon.size, bool)
    for _, _, _, raster in region.part_cells():
        state = raster.classify(lon, lat)
        inside |= state == INSIDE
        near |= state == NEAR
    decided = ~near | inside
    assert truth[inside].all()
    assert not truth[decided & ~inside].any()
    rand = np.arange(lon.size) < 20_000
    rand &= (np.abs(lon) < 180) & (np.abs(lat) < 90)  # not clipped onto the end of the world (an edge of one box)
    assert near[rand].mean() < 0.1  # the exact test is left to a thin band along the edges


def test_sparse_crossings_give_the_same_raster(monkeypatch):
    """Polygons with many edges take the per-edge path for the crossings; both paths must agree."""
    rings = [shapely.get_coordinates(STAR)]
    level, x0, x1, y0, y1 = region_mod.box_extent(*STAR.bounds, max_cells=region_mod.MAX_CELLS)
    fine = level + region_mod.RASTER_BITS
    f = 1 << region_mod.RASTER_BITS
    args = (rings, fine, x0 * f, y0 * f, (x1 + 1 - x0) * f, (y1 + 1 - y0) * f)
    dense = Raster(*args)
    monkeypatch.setattr(region_mod, "_DENSE_CROSSINGS", 0)
    sparse = Raster(*args)
    assert np.array_equal(dense.state, sparse.state)
    assert {INSIDE, OUTSIDE, NEAR} <= set(np.unique(dense.state).tolist())


@pytest.mark.parametrize("name", GEOMS)
def test_key_cells_cover_every_point_and_flag_only_inside_cells(name):
    """Points of the region lie in the key cells; points in cells flagged inside are all in the region."""
    geom = GEOMS[name]
    region = Region(geom)
    lon, lat = _points(geom, 20_000, seed=3)
    truth = shapely.intersects_xy(geom, lon, lat)
    keys = hilbert_key(lon, lat)
    covered = np.zeros(lon.size, bool)
    flagged = np.zeros(lon.size, bool)
    for level, cx, cy, inside in region.key_cells():
        starts, stops, flags = cell_ranges(level, cx, cy, inside, order=HILBERT_ORDER)
        pos = np.searchsorted(starts, keys, side="right") - 1
        hit = (pos >= 0) & (keys < stops[np.maximum(pos, 0)])
        covered |= hit
        flagged |= hit & (flags[np.maximum(pos, 0)] == 1)
    assert covered[truth].all()
    assert truth[flagged].all()
    assert flagged.sum() > 0.2 * truth.sum()


def test_many_parts_fall_back_to_shapely():
    parts = MultiPolygon([box(i, 0, i + 0.5, 0.5) for i in range(region_mod.MAX_RASTER_PARTS + 1)])
    region = Region(parts)
    assert not region.rasterised and region.part_cells() == []
    lon, lat = _points(parts, 5000, seed=1)
    assert np.array_equal(region.contains(lon, lat), shapely.intersects_xy(parts, lon, lat))
    assert all(not inside.any() for *_, inside in region.key_cells())


@pytest.mark.parametrize("max_cells", [64, 1024])
@pytest.mark.parametrize("name", GEOMS)
def test_contains_equals_shapely_on_grid_lines_at_every_cover_size(name, max_cells):
    """Points exactly on the lines between fine cells (where a point's cell is decided by rounding) and random
    points, with coarse and fine covers."""
    geom = GEOMS[name]
    region = Region(geom, max_cells=max_cells)
    fine = region.part_cells()[0][3].fine
    w, s, e, n = geom.bounds
    rng = np.random.default_rng(max_cells)
    step_x, step_y = 360 / (1 << fine), 180 / (1 << fine)
    gx = (np.floor((w + 180) / step_x) + rng.integers(-2, int((e - w) / step_x) + 3, 4000)) * step_x - 180
    gy = (np.floor((s + 90) / step_y) + rng.integers(-2, int((n - s) / step_y) + 3, 4000)) * step_y - 90
    lon, lat = _points(geom, 4000, seed=max_cells)
    lon = np.concatenate([lon, gx, rng.uniform(w, e, 4000), gx]).clip(-180, 180)
    lat = np.concatenate([lat, rng.uniform(s, n, 4000), gy, gy]).clip(-90, 90)
    assert np.array_equal(region.contains(lon, lat), shapely.intersects_xy(geom, lon, lat))
