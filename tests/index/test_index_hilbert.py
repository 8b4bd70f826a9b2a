"""The Hilbert encoder and the box-to-key-ranges decomposition."""

from __future__ import annotations

import numpy as np
import pytest

from rsretrieve.index.hilbert import box_key_ranges, grid_xy, hilbert_index, hilbert_key, merge_ranges


def _reference(x: int, y: int, order: int) -> int:
    """The classic scalar xy2d, bit by bit."""
    n, d, s = 1 << order, 0, 1 << (order - 1)
    while s > 0:
        rx, ry = int(x & s > 0), int(y & s > 0)
        d += s * s * ((3 * rx) ^ ry)
        if ry == 0:
            if rx == 1:
                x, y = n - 1 - x, n - 1 - y
            x, y = y, x
        s //= 2
    return d


def test_order1_visits_the_four_quadrants_in_u_order():
    assert hilbert_index(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 0]), 1).tolist() == [0, 1, 2, 3]


def test_order2_table_by_hand():
    # rows from north (y=3) to south (y=0), columns x=0..3
    expected = [[5, 6, 9, 10],
                [4, 7, 8, 11],
                [3, 2, 13, 12],
                [0, 1, 14, 15]]
    got = [[int(hilbert_index(np.array([x]), np.array([y]), 2)[0]) for x in range(4)] for y in (3, 2, 1, 0)]
    assert got == expected


@pytest.mark.parametrize("order", [1, 3, 5, 7, 16, 17])
def test_matches_scalar_reference(order):
    rng = np.random.default_rng(order)
    x, y = rng.integers(0, 1 << order, 300), rng.integers(0, 1 << order, 300)
    assert hilbert_index(x, y, order).tolist() == [_reference(int(a), int(b), order) for a, b in zip(x, y)]


@pytest.mark.parametrize("order", [2, 4, 6])
def test_consecutive_keys_are_neighbouring_cells(order):
    n = 1 << order
    xs, ys = (a.ravel() for a in np.meshgrid(np.arange(n), np.arange(n)))
    d = hilbert_index(xs, ys, order)
    assert sorted(d.tolist()) == list(range(n * n))  # a bijection
    o = np.argsort(d)
    assert (np.abs(np.diff(xs[o])) + np.abs(np.diff(ys[o])) == 1).all()


def test_grid_covers_whole_lon_lat_range():
    x, y = grid_xy(np.array([-180.0, 0.0, 180.0]), np.array([-90.0, 0.0, 90.0]), 16)
    assert x.tolist() == [0, 32768, 65535] and y.tolist() == [0, 32768, 65535]


def test_nearby_points_have_nearby_keys_more_often_than_random():
    rng = np.random.default_rng(0)
    lon, lat = rng.uniform(-180, 180, 2000), rng.uniform(-90, 90, 2000)
    k0 = hilbert_key(lon, lat)
    k1 = hilbert_key(np.clip(lon + 0.01, -180, 180), lat)
    near = np.median(np.abs(k1 - k0))
    far = np.median(np.abs(k0 - np.roll(k0, 1)))
    assert near * 1e4 < far


@pytest.mark.parametrize("box", [(5.0, 40.0, 15.0, 50.0), (-179.9, -89.0, 179.9, 89.0), (12.3, 45.6, 12.31, 45.61),
                                 (100.0, -10.0, 100.0, -9.0)])
def test_key_ranges_cover_every_point_of_the_box(box):
    w, s, e, n = box
    rng = np.random.default_rng(1)
    lon, lat = rng.uniform(w, e, 5000), rng.uniform(s, n, 5000)
    lon[:4], lat[:4] = [w, e, w, e], [s, s, n, n]  # the corners too
    starts, stops = box_key_ranges(w, s, e, n, max_cells=256)
    keys = hilbert_key(lon, lat)
    pos = np.searchsorted(starts, keys, side="right") - 1
    assert (pos >= 0).all() and (keys < stops[pos]).all()
    assert (starts[1:] > stops[:-1]).all()  # sorted, disjoint, not touching (merged)
    assert starts.size <= 256


def test_merge_ranges_joins_overlapping_and_touching():
    s, e = merge_ranges(np.array([10, 0, 5, 30]), np.array([20, 5, 8, 31]))
    assert s.tolist() == [0, 10, 30] and e.tolist() == [8, 20, 31]


def test_rect_hilbert_equals_hilbert_index_of_each_cell():
    from rsretrieve.index.hilbert import rect_hilbert
    rng = np.random.default_rng(3)
    for level in range(1, 20):
        n = 1 << level
        x0, y0 = int(rng.integers(0, n)), int(rng.integers(0, n))
        x1, y1 = min(n - 1, x0 + int(rng.integers(0, 40))), min(n - 1, y0 + int(rng.integers(0, 40)))
        xs, ys = np.meshgrid(np.arange(x0, x1 + 1), np.arange(y0, y1 + 1), indexing="ij")
        ref = hilbert_index(xs.ravel(), ys.ravel(), level).reshape(xs.shape)
        assert (rect_hilbert(level, x0, x1, y0, y1) == ref).all()


def test_box_ranges_cover_the_cells_of_box_cells_with_their_flags():
    from rsretrieve.index.hilbert import box_cells, box_ranges, cell_ranges, merge_ranges
    rng = np.random.default_rng(4)
    for _ in range(200):
        w, s = rng.uniform(-180, 170), rng.uniform(-90, 80)
        e, n = min(180, w + 30 * rng.random() ** 3), min(90, s + 1e-6 + 20 * rng.random() ** 3)
        for max_cells in (4, 256, 1024):
            got = box_ranges(w, s, e, n, max_cells=max_cells)
            assert (np.diff(got[0]) > 0).all() and (got[1] > got[0]).all()
            ref = cell_ranges(*box_cells(w, s, e, n, max_cells=max_cells))
            for flag in (0, 1):
                a = merge_ranges(got[0][got[2] == flag], got[1][got[2] == flag])
                b = merge_ranges(ref[0][ref[2] == flag], ref[1][ref[2] == flag])
                assert all((u == v).all() for u, v in zip(a, b))
