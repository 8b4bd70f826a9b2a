"""The compiled exact scan: the same answers as the numpy path and as brute force, check by check."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import shapely
from shapely.geometry import MultiPolygon, Polygon

from rsretrieve.index import kernels
from rsretrieve.index.filters import CompiledFilter, QueryFilter
from rsretrieve.index.region import Region
from rsretrieve.index.search import Searcher
from rsretrieve.index.segment import TIME_UNKNOWN, encode
from rsretrieve.index.store import IndexStore

from .conftest import brute_mask, brute_topk, queries, subset
from .test_index_search import FILTERS

pytestmark = pytest.mark.skipif(not kernels.AVAILABLE, reason="numba is not installed: the numpy path is used")

I64 = np.iinfo(np.int64)


def _scan(x, q, k, starts, stops, inside=None, *, time=None, lo=I64.min, hi=I64.max, alive=None, sensor=None,
          sensor_ok=None, scene=None, excl_scenes=(), cell=None, excl_cells=(), geo_mode=0, lon=None, lat=None,
          bbox=(), rast_states=None, rast_params=None, codes=False, rings=None, parts=None):
    n = x.shape[0]
    starts, stops = np.asarray(starts, np.int64), np.asarray(stops, np.int64)
    scan = kernels.scan_topk if parts is None else functools.partial(kernels.scan_topk_parallel, parts)
    s, r, matched, pending = scan(
        x, np.atleast_2d(q), k, starts, stops,
        np.ones(starts.size, np.int8) if inside is None else np.asarray(inside, np.int8),
        time is not None, np.zeros(n, np.int64) if time is None else time, lo, hi,
        np.zeros(0, bool) if alive is None else alive, np.zeros(n, np.int16) if sensor is None else sensor,
        np.zeros(0, bool) if sensor_ok is None else sensor_ok, np.zeros(n, np.int64) if scene is None else scene,
        np.asarray(excl_scenes, np.int64), np.zeros(n, np.int32) if cell is None else cell,
        np.asarray(excl_cells, np.int32), geo_mode, np.zeros(n) if lon is None else lon,
        np.zeros(n) if lat is None else lat, np.asarray(bbox, np.float64),
        np.zeros(0, np.int8) if rast_states is None else rast_states,
        np.zeros((0, 8)) if rast_params is None else rast_params, *_codes(x, codes),
        *(rings or (np.zeros((0, 2)), np.zeros(1, np.int64), np.zeros(0, np.int64))))
    if np.ndim(q) == 2:
        return s, r, matched, pending
    found = r[0] >= 0  # one query: its top-k without the padding
    return s[0][found], r[0][found], matched, pending


def _codes(x, on):
    """The segment's scalar codes of ``x`` (``on``) or the empty ones of a segment without them."""
    return encode(x) if on else (np.zeros((0, x.shape[1]), np.uint8), np.zeros((3, x.shape[1])))


def _truth(x, q, rows, k):
    scores = x[rows] @ q
    order = np.lexsort((rows, -scores.astype(np.float64)))[:k]  # descending score, then ascending row
    return scores[order], rows[order]


@pytest.fixture(scope="module")
def vecs():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((500, 24)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, x[7] + np.float32(0.1)


@pytest.mark.parametrize("codes", [False, True], ids=["vectors", "codes"])
def test_each_check_of_the_kernel_equals_its_definition(vecs, codes):
    x, q = vecs
    n = x.shape[0]
    rng = np.random.default_rng(0)
    time = rng.integers(0, 100, n)
    time[::17] = I64.min  # unknown: never matches a time filter
    alive = rng.random(n) > 0.1
    sensor = rng.integers(0, 3, n).astype(np.int16)
    scene = rng.integers(0, 40, n)
    cell = rng.integers(0, 60, n).astype(np.int32)
    lon, lat = rng.uniform(-180, 180, n), rng.uniform(-60, 60, n)
    starts, stops, inside = [0, 120, 300], [100, 250, 500], [1, 0, 0]
    in_ranges = np.zeros(n, bool)
    near = np.zeros(n, bool)
    for a, b, i in zip(starts, stops, inside):
        in_ranges[a:b] = True
        near[a:b] = not i
    bbox = (170.0, -20.0, -170.0, 30.0)  # across the antimeridian
    in_box = ((lon >= 170) | (lon <= -170)) & (lat >= -20) & (lat <= 30)
    ok = (in_ranges & (time >= 10) & (time <= 80) & alive & (sensor != 1) & ~np.isin(scene, [3, 9])
          & ~np.isin(cell, [0, 5, 59]))
    sensor_ok = np.array([True, False, True])
    common = dict(time=time, lo=10, hi=80, alive=alive, sensor=sensor, sensor_ok=sensor_ok, scene=scene,
                  excl_scenes=[3, 9], cell=cell, excl_cells=[0, 5, 59], lon=lon, lat=lat, codes=codes)
    for geo_mode, want in ((0, ok), (1, ok & (in_box | ~near))):
        s, r, matched, pending = _scan(x, q, 10, starts, stops, inside, geo_mode=geo_mode, bbox=bbox, **common)
        assert matched == want.sum() and pending.size == 0
        ts, tr = _truth(x, q, np.flatnonzero(want), 10)
        assert r.tolist() == tr.tolist()
        np.testing.assert_allclose(s, ts, rtol=0, atol=1e-6)
    # geo_mode 2: rows of ranges not wholly inside go back unscored, after the bbox when there is one
    for bb, box_ok in (((), np.ones(n, bool)), (bbox, in_box)):
        s, r, matched, pending = _scan(x, q, 10, starts, stops, inside, geo_mode=2, bbox=bb, **common)
        assert pending.tolist() == np.flatnonzero(ok & near & box_ok).tolist()
        assert matched == (ok & ~near).sum()
        assert r.tolist() == _truth(x, q, np.flatnonzero(ok & ~near), 10)[1].tolist()


@pytest.mark.parametrize("codes", [False, True], ids=["vectors", "codes"])
@pytest.mark.parametrize("long", [False, True], ids=["compacted", "whole_spans"])
def test_a_batch_gives_each_query_the_answer_it_gets_alone(vecs, codes, long):
    """The rows are checked once for all queries of a batch; each query's top-k, scores and the match count are
    those of the query scanned alone, bit for bit, for k from 1 to more than the matches (past ``_SPAN_ROWS``
    rows, dense spans are scored whole)."""
    rng = np.random.default_rng(11)
    if long:
        x = rng.standard_normal((kernels._SPAN_ROWS + 4000, 16)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    else:
        x = vecs[0]
    n = x.shape[0]
    qs = x[rng.integers(0, n, 6)] + np.float32(0.05) * rng.standard_normal((6, x.shape[1])).astype(np.float32)
    qs = np.ascontiguousarray(qs / np.linalg.norm(qs, axis=1, keepdims=True), dtype=np.float32)
    time = rng.integers(0, 100, n)
    lon, lat = rng.uniform(-10, 10, n), rng.uniform(-10, 10, n)
    common = dict(time=time, lo=10, hi=80, lon=lon, lat=lat, codes=codes, bbox=(-5.0, -5.0, 5.0, 5.0))
    starts, stops = ([0, 120, 300], [100, 250, n]) if long else ([0, 120, 300], [100, 250, 500])
    for geo_mode in (0, 1, 2):
        for k in (1, 10, 400):
            bs, br, bm, bp = _scan(x, qs, k, starts, stops, [1, 0, 1], geo_mode=geo_mode, **common)
            assert bs.shape == br.shape == (6, k)
            for i in range(6):
                s, r, m, p = _scan(x, qs[i], k, starts, stops, [1, 0, 1], geo_mode=geo_mode, **common)
                assert br[i, :r.size].tolist() == r.tolist() and (br[i, r.size:] == -1).all()
                assert bs[i, :s.size].tobytes() == s.tobytes() and np.isneginf(bs[i, s.size:]).all()
                assert bm == m and bp.tolist() == p.tolist()


def test_split_ranges_cuts_the_rows_into_parts_of_about_equal_size():
    starts, stops, inside = np.array([0, 10, 50, 51]), np.array([7, 40, 51, 90]), np.array([1, 0, 1, 0], np.int8)
    rows = np.concatenate([np.arange(a, b) for a, b in zip(starts, stops)])
    flag = np.repeat(inside, stops - starts)
    for parts in (1, 2, 3, 7, 200):
        ps, pe, pi, count = kernels._split_ranges(starts, stops, inside, parts)
        got = [np.concatenate([np.arange(a, b) for a, b in zip(ps[p, :count[p]], pe[p, :count[p]])] or [[]])
               for p in range(parts)]
        assert np.concatenate(got).tolist() == rows.tolist()  # every row once, in order
        assert np.concatenate([np.repeat(pi[p, :count[p]], pe[p, :count[p]] - ps[p, :count[p]])
                               for p in range(parts)]).tolist() == flag.tolist()
        sizes = [g.size for g in got]
        assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("codes", [False, True], ids=["vectors", "codes"])
def test_the_parallel_scan_gives_the_one_thread_answer(vecs, codes):
    """Parts of the ranges scanned at once and merged: the same top-k (scores bit for bit), match count and
    pending rows, for single queries and a batch, in every geometric mode, whatever the number of parts."""
    x, _ = vecs
    n = x.shape[0]
    rng = np.random.default_rng(12)
    qs = np.ascontiguousarray(x[rng.integers(0, n, 5)] + np.float32(0.05) * rng.standard_normal(
        (5, x.shape[1])).astype(np.float32), dtype=np.float32)
    time = rng.integers(0, 100, n)
    lon, lat = rng.uniform(-10, 10, n), rng.uniform(-10, 10, n)
    starts, stops, inside = [0, 120, 300, 499], [100, 250, 480, 500], [1, 0, 1, 0]
    for geo_mode in (0, 1, 2):
        args = dict(time=time, lo=10, hi=80, lon=lon, lat=lat, codes=codes, bbox=(-5.0, -5.0, 5.0, 5.0),
                    geo_mode=geo_mode)
        for q in (qs[:1], qs):
            for k in (1, 10, 400):
                want = _scan(x, q, k, starts, stops, inside, **args)
                for parts in (1, 2, 3, 8):
                    got = _scan(x, q, k, starts, stops, inside, parts=parts, **args)
                    assert got[0].tobytes() == want[0].tobytes() and got[1].tolist() == want[1].tolist()
                    assert got[2] == want[2] and got[3].tolist() == want[3].tolist()


@pytest.mark.parametrize("codes", [False, True], ids=["vectors", "codes"])
def test_ties_and_short_lists_rank_like_a_stable_sort(vecs, codes):
    x, q = vecs
    x = np.repeat(x[:50], 4, axis=0)  # every score four times
    rows = np.arange(x.shape[0])
    for k in (1, 3, 10, 200, 500):
        s, r = kernels.score_topk(x, q, k, rows)
        ts, tr = _truth(x, q, rows, k)
        assert r.tolist() == tr.tolist()
        np.testing.assert_allclose(s, ts, rtol=0, atol=1e-6)
        s, r, matched, _ = _scan(x, q, k, [0], [x.shape[0]], codes=codes)
        assert r.tolist() == tr.tolist() and matched == x.shape[0]
    s, r, matched, _ = _scan(x, q, 10, [5], [8], codes=codes)
    assert matched == 3 and r.tolist() == _truth(x, q, np.arange(5, 8), 10)[1].tolist()
    s, r, matched, _ = _scan(x, q, 10, [], [], codes=codes)
    assert matched == 0 and s.size == r.size == 0


def test_codes_never_change_the_top_k_even_below_their_resolution():
    # vectors that differ by far less than one code step: the codes cannot order them, the bound must send
    # every contender back to its float32 vector, and the answer is the float32 one
    rng = np.random.default_rng(5)
    base = rng.standard_normal(32).astype(np.float32)
    x = base + rng.standard_normal((3000, 32)).astype(np.float32) * np.float32(1e-4)
    x[::7] = rng.standard_normal((x[::7].shape[0], 32))  # and some spread, so that the grid is coarse
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    codes, params = encode(x)
    assert (params[1] > 20 * 1e-4).all()  # the near-copies share codes (their spread is below 1e-4)
    for seed in range(5):
        q = (base + rng.standard_normal(32).astype(np.float32) * np.float32(0.01)).astype(np.float32)
        q /= np.linalg.norm(q)
        for k in (1, 10, 100):
            s, r, _, _ = _scan(x, q, k, [0, 1500], [1000, 3000], codes=True)
            fs, fr, _, _ = _scan(x, q, k, [0, 1500], [1000, 3000])
            # the float32 scan's answer, bit for bit (numpy's sums, in another order, rank these near-copies
            # differently in the last bits; the scores agree to float32 precision)
            assert r.tolist() == fr.tolist() and s.tolist() == fs.tolist()
            np.testing.assert_allclose(s, _truth(x, q, np.r_[0:1000, 1500:3000], k)[0], rtol=0, atol=1e-6)


def test_code_error_bound_holds_on_every_row(vecs):
    x, _ = vecs
    codes, params = encode(x)
    rng = np.random.default_rng(2)
    for _ in range(20):
        q = rng.standard_normal(x.shape[1]).astype(np.float32)
        q /= np.linalg.norm(q)
        cw, scale, c0, margin = kernels._code_query(q, params)
        assert cw.dtype == np.int16 and np.abs(cw).max() <= 32767
        approx = (codes.astype(np.int64) @ cw.astype(np.int64)) * scale + c0
        assert np.abs(approx - x.astype(np.float64) @ q).max() <= margin
        assert margin < 0.05  # and it is a useful bound: a few code steps, not the whole range


@pytest.mark.parametrize("name", FILTERS)
def test_planner_gives_the_same_answer_with_and_without_the_kernel(store, tiles, name, monkeypatch):
    flt = FILTERS[name]
    q = queries(tiles, 3, seed=11)
    searcher = Searcher(store, exact_max_rows=10**9)
    with_kernel = [searcher.search(q[i:i + 1], 10, flt) for i in range(3)]
    monkeypatch.setattr(kernels, "AVAILABLE", False)
    without = [searcher.search(q[i:i + 1], 10, flt) for i in range(3)]
    mask = brute_mask(tiles, flt)
    for i, (a, b) in enumerate(zip(with_kernel, without)):
        assert a.tile_ids.tolist() == b.tile_ids.tolist()
        np.testing.assert_allclose(a.scores, b.scores, rtol=0, atol=1e-5)
        assert a.plan["candidates"] == b.plan["candidates"] == mask.sum()
        ids, _ = brute_topk(tiles, q[i], mask, 10)
        assert a.tile_ids[0, :ids.size].tolist() == ids.tolist()


def test_kernel_skips_removed_rows(tiles, tmp_path):
    st = IndexStore.create(tmp_path / "index", tiles["vectors"].shape[1], "m")
    st.add_segment(**subset(tiles, slice(0, 6000)), factory=None)
    gone = np.unique(tiles["scene_ids"][:6000])[::2]
    st.remove_scenes(gone)
    store = IndexStore.open(st.root)
    flt = QueryFilter(bbox=(-10, 36, 30, 60))
    alive = np.zeros(tiles["tile_ids"].size, bool)
    alive[:6000] = ~np.isin(tiles["scene_ids"][:6000], gone)
    q = queries(tiles, 2, seed=2)
    for i in range(2):
        got = Searcher(store, exact_max_rows=10**9).search(q[i:i + 1], 10, flt)
        ids, _ = brute_topk(tiles, q[i], brute_mask(tiles, flt) & alive, 10)
        assert got.tile_ids[0].tolist() == ids.tolist()
        assert got.plan["candidates"] == (brute_mask(tiles, flt) & alive).sum()


def test_scan_returns_none_without_numba(store, tiles, monkeypatch):
    monkeypatch.setattr(kernels, "AVAILABLE", False)
    cf = CompiledFilter(FILTERS["bbox"], store.sensors)
    assert cf.scan(store.segments[0], queries(tiles, 1)[0], 5) is None


@pytest.mark.parametrize("name", ["polygon", "multipolygon_with_hole"])
def test_raster_state_in_the_kernel_equals_region_classify(name):
    from rsretrieve.index.region import INSIDE, NEAR, Region
    region = Region(FILTERS[name].polygon, max_cells=64)
    states, params = region.raster_params()
    w, s, e, n = region.geom.bounds
    rng = np.random.default_rng(1)
    x, y = rng.uniform(w - 2, e + 2, 3000), rng.uniform(s - 2, n + 2, 3000)
    per_part = [r.classify(x, y) for *_, r in region.part_cells()]
    inside = np.any([p == INSIDE for p in per_part], axis=0)
    near = np.any([p == NEAR for p in per_part], axis=0) & ~inside
    want = np.where(inside, 1, np.where(near, 2, 0))
    got = np.array([kernels._raster_state(states, params, a, b) for a, b in zip(x, y)])
    assert got.tolist() == want.tolist()
    assert (want == 1).any() and (want == 2).any() and (want == 0).any()
    exact = region(x, y)
    assert exact[got == 1].all() and not exact[got == 0].any()


@pytest.mark.parametrize("contained", [True, False])
@pytest.mark.parametrize("name", ["polygon", "multipolygon_with_hole", "polygon_with_hole_and_time"])
def test_compiled_raster_equals_the_numpy_raster(name, contained, monkeypatch):
    from rsretrieve.index import region as region_mod
    from rsretrieve.index.region import Raster, _rings
    geom = FILTERS[name].polygon
    rings = [r for p in getattr(geom, "geoms", [geom]) for r in _rings(p)]
    fine = 12
    n = 1 << fine
    w, s, e, nn = geom.bounds
    x0, y0 = int((w + 180) * n / 360), int((s + 90) * n / 180)
    x1, y1 = int((e + 180) * n / 360), int((nn + 90) * n / 180)
    if contained:
        box = (x0 - 1, y0 - 1, x1 - x0 + 3, y1 - y0 + 3)
    else:  # a rectangle cutting through the region: edges clipped onto its border
        box = (x0 + (x1 - x0) // 3, y0 + (y1 - y0) // 4, (x1 - x0) // 2, (y1 - y0) // 2)
    compiled = Raster(rings, fine, *box, contained=contained)
    monkeypatch.setattr(region_mod, "USE_KERNEL", False)
    plain = Raster(rings, fine, *box, contained=contained)
    assert np.array_equal(compiled._flat, plain._flat)
    assert np.array_equal(compiled._mark_cells, plain._mark_cells)
    assert np.array_equal(compiled.state, plain.state)
    assert {1, 2} <= set(np.unique(plain._flat).tolist())
    for bits in (1, 2, 3):
        monkeypatch.setattr(region_mod, "USE_KERNEL", True)
        c = compiled.coarse(bits)
        monkeypatch.setattr(region_mod, "USE_KERNEL", False)
        assert np.array_equal(c, plain.coarse(bits))


@pytest.mark.parametrize("max_cells", [1, 4, 16, 256, 1024])
@pytest.mark.parametrize("box", [(-5, 40, 10, 50), (-10, 36, 30, 60), (0.001, 45.0, 0.002, 45.001),
                                 (-180, -90, 180, 90), (179.99, -20, 180, -10)])
def test_compiled_box_row_ranges_equal_the_numpy_cover(store, box, max_cells):
    from rsretrieve.index import hilbert
    seg = store.segments[0]
    ks, ke, kf = hilbert.box_ranges(*box, max_cells=max_cells)
    a, b = np.searchsorted(seg.hkey, ks), np.searchsorted(seg.hkey, ke)
    keep = b > a
    got = kernels.box_row_ranges(seg.hkey, *map(float, box), hilbert.HILBERT_ORDER, max_cells, True,
                                 hilbert._DIGITS, hilbert._STATES)
    assert got[0].tolist() == a[keep].tolist() and got[1].tolist() == b[keep].tolist()
    assert got[2].tolist() == kf[keep].tolist()


@pytest.mark.parametrize("max_cells", [1, 16, 64, 1024])
@pytest.mark.parametrize("geom", ["polygon", "polygon_with_hole_and_time", "world"])
def test_one_call_polygon_cover_equals_the_raster_built_step_by_step(store, geom, max_cells):
    """``polygon_row_ranges`` (rings to rows in one call) gives the raster and the rows of ``Region.part_cells``
    and ``rect_row_ranges``, bit for bit, on every segment (the first builds the raster, the next reuse it)."""
    from rsretrieve.index import hilbert
    from rsretrieve.index.region import Region
    poly = Polygon([(-179, -89), (179, -89), (179, 89), (-179, 89)]) if geom == "world" else FILTERS[geom].polygon
    fused, steps = Region(poly, max_cells=max_cells), Region(poly, max_cells=max_cells)
    for seg in store.segments:
        got = fused.one_part_row_ranges(seg.hkey)
        level, x0, y0, raster = steps.part_cells()[0]
        if level == 0:
            want = ([0], [seg.n], [0])
        else:
            cover = np.ascontiguousarray(raster.coarse(raster.fine - level).T)
            want = kernels.rect_row_ranges(seg.hkey, level, x0, y0, cover, hilbert.HILBERT_ORDER, hilbert._DIGITS,
                                           hilbert._STATES)
        assert [a.tolist() for a in got] == [list(map(int, a)) for a in want]
        (fl, fx, fy, fr), = fused.part_cells()
        assert (fl, fx, fy) == (level, x0, y0)
        assert (fr.fine, fr.x0, fr.y0, fr.nx, fr.ny) == (raster.fine, raster.x0, raster.y0, raster.nx, raster.ny)
        assert np.array_equal(fr._flat, raster._flat) and np.array_equal(fr._mark_cells, raster._mark_cells)
        assert np.array_equal(fr.state, raster.state)
        assert [a.tolist() for a in fused.raster_params()] == [a.tolist() for a in steps.raster_params()]


@pytest.mark.parametrize("name", ["bbox", "antimeridian_bbox", "polygon", "combined"])
def test_box_estimate_is_the_same_with_and_without_the_kernel(store, name, monkeypatch):
    cf = CompiledFilter(FILTERS[name], store.sensors)
    got = [cf.box_estimate(seg) for seg in store.segments]
    monkeypatch.setattr(kernels, "AVAILABLE", False)
    assert got == [cf.box_estimate(seg) for seg in store.segments] and min(got) > 0


@pytest.mark.parametrize("small", [False, True])
@pytest.mark.parametrize("name", ["bbox", "antimeridian_bbox", "polygon", "polygon_with_hole_and_time", "multipolygon",
                                  "combined"])
def test_row_ranges_are_the_same_with_and_without_the_kernel(store, name, small, monkeypatch):
    def ranges(available):
        monkeypatch.setattr(kernels, "AVAILABLE", available)
        cf = CompiledFilter(FILTERS[name], store.sensors)
        cf.size_hint(10.0 if small else None)
        return [[a.tolist() for a in cf.row_ranges(seg)] for seg in store.segments]
    assert ranges(True) == ranges(False)


def test_warm_up_compiles_every_kernel_for_the_index_types_and_changes_nothing(store, tiles):
    searcher = Searcher(store)
    q = queries(tiles, 1, seed=4)
    before = searcher.search(q, 10, FILTERS["polygon_with_hole_and_time"])
    assert searcher.warm_up() >= 0
    for fn in (kernels.scan_topk, kernels.score_topk, kernels.box_row_ranges, kernels.rect_row_ranges,
               kernels.raster_states, kernels.raster_coarse, kernels.count_in_box, kernels.polygon_row_ranges,
               *([kernels.scan_topk_parallel] if kernels.threads() > 1 else [])):
        assert fn.signatures, fn
    readonly = [sig for sig in kernels.scan_topk.signatures if not sig[0].mutable]
    assert readonly  # the memory-mapped vectors of a real segment
    after = searcher.search(q, 10, FILTERS["polygon_with_hole_and_time"])
    assert after.tile_ids.tolist() == before.tile_ids.tolist()


_FIRST_QUERY = """
import json, sys
import numba, numpy as np
from rsretrieve.index import kernels
from rsretrieve.index.filters import QueryFilter
from rsretrieve.index.search import Searcher
from rsretrieve.index.store import IndexStore
st = IndexStore.open(sys.argv[1])
searcher = Searcher(st)
searcher.warm_up()
fns = [kernels.scan_topk, *([kernels.scan_topk_parallel] if kernels.threads() > 1 else [])]
query = numba.typeof(np.zeros((1, st.dim), np.float32))  # a model's output: writable
ready = {fn.__name__: any(query in sig for sig in fn.signatures) for fn in fns}
count = {fn.__name__: len(fn.signatures) for fn in fns}
seg = st.segments[0]
q = np.ascontiguousarray(seg.vectors[:2])  # a read-only (memory-mapped) query of a user's
assert not q.flags.writeable
lon, lat = float(seg.lon[0]), float(seg.lat[0])
searcher.search(q, 5, QueryFilter(bbox=(lon - 0.01, lat - 0.01, lon + 0.01, lat + 0.01)))
print(json.dumps({"ready": ready, "more": {fn.__name__: len(fn.signatures) - count[fn.__name__] for fn in fns}}))
"""


def test_warm_up_compiles_the_scan_for_a_writable_query_and_a_read_only_one_needs_no_other(store):
    # warm_up's own query was a view of the memory-mapped vectors, read-only, which numba types apart from a
    # writable array: the first real query (a model's output) compiled the scan again, ~25 s with an empty cache
    import json
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", _FIRST_QUERY, str(store.root)], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert all(out["ready"].values()), out
    assert not any(out["more"].values()), out


def test_a_segment_without_codes_is_scanned_from_its_vectors_with_the_same_answer(tiles, tmp_path):
    st = IndexStore.create(tmp_path / "index", tiles["vectors"].shape[1], "m")
    st.add_segment(**subset(tiles, slice(0, 6000)), factory=None)
    seg_dir = st.root / st.generation / st.segments[0].name
    assert (seg_dir / "codes.npy").exists() and st.segments[0].codes is not None
    flt = FILTERS["combined"]
    q = queries(tiles, 4, seed=8)
    with_codes = [Searcher(st).search(q[i:i + 1], 10, flt) for i in range(4)]
    for name in ("codes.npy", "codes_params.npy"):  # as a segment written before codes existed
        (seg_dir / name).unlink()
    old = IndexStore.open(st.root)
    assert old.segments[0].codes is None
    for i, a in enumerate(with_codes):
        b = Searcher(old).search(q[i:i + 1], 10, flt)
        assert a.tile_ids.tolist() == b.tile_ids.tolist() and a.scores.tolist() == b.scores.tolist()


@pytest.mark.parametrize("geom", [
    Polygon([(0, 0), (10, 0), (10, 10), (0, 10)], [[(2, 2), (4, 2), (4, 4), (2, 4)]]),  # a hole
    MultiPolygon([Polygon([(0, 0), (5, 0), (0, 5)]), Polygon([(6, 6), (9, 6), (9, 9), (6, 9)])]),
    Polygon([(0, 0), (3, 1), (6, 0), (5, 5), (3, 2), (1, 5)]),  # concave, vertices level with each other
], ids=["hole", "multipolygon", "concave"])
def test_point_test_of_the_scan_is_shapely_away_from_edges_and_undecided_on_them(geom):
    region = Region(geom)
    xy, start, part = region.rings()
    rng = np.random.default_rng(1)
    pts = rng.uniform(-1, 11, (4000, 2))
    verts = np.concatenate([xy, (xy[:-1] + xy[1:]) / 2])  # on the boundary: vertices and edge midpoints
    pts = np.concatenate([pts, verts, verts + 1e-12, verts + 1e-3, np.round(pts[:500])])
    truth = shapely.intersects_xy(geom, pts[:, 0], pts[:, 1])
    state = np.zeros(len(pts), np.int8)
    n = len(pts)
    kernels._point_states(xy, start, part, pts[:, 0].copy(), pts[:, 1].copy(), np.arange(n), n, state)
    decided = state != 2
    assert (state[decided] == truth[decided]).all()
    on_edge = shapely.distance(geom.boundary, shapely.points(pts)) <= 1e-9
    assert (state[on_edge] == 2).all() and not (state[~on_edge] == 2).any()  # undecided exactly within reach


def test_scan_with_the_polygon_rings_returns_only_edge_rows_and_the_same_top_k(vecs):
    x, q = vecs
    n = x.shape[0]
    rng = np.random.default_rng(4)
    lon, lat = rng.uniform(0, 10, n), rng.uniform(0, 10, n)
    lon[:20], lat[:20] = 2.0, rng.uniform(2, 4, 20)  # on the hole's edge
    geom = Polygon([(0, 0), (10, 0), (10, 10), (0, 10)], [[(2, 2), (4, 2), (4, 4), (2, 4)]])
    rings = Region(geom).rings()
    for codes in (False, True):
        _, _, matched0, pending0 = _scan(x, q, 10, [0], [n], [0], geo_mode=2, lon=lon, lat=lat, codes=codes)
        s, r, matched, pending = _scan(x, q, 10, [0], [n], [0], geo_mode=2, lon=lon, lat=lat, codes=codes,
                                       rings=rings)
        assert matched0 == 0 and pending0.size == n  # without rings: every row to the caller
        assert pending.tolist() == list(range(20))  # with them: only the rows on an edge
        inside = shapely.intersects_xy(geom, lon, lat)
        assert matched == inside[20:].sum()
        assert r.tolist() == _truth(x, q, 20 + np.flatnonzero(inside[20:]), 10)[1].tolist()


def test_a_polygon_of_many_vertices_is_left_to_shapely_with_the_same_answer(store, tiles):
    ang = np.linspace(0, 2 * np.pi, 401)[:-1]  # 400 vertices: more than the scan's point test visits
    geom = Polygon(np.c_[10 + 14 * np.cos(ang), 48 + 9 * np.sin(ang)])
    flt = QueryFilter(polygon=geom)
    assert CompiledFilter(flt, store.sensors).region.rings() is None
    q = queries(tiles, 3, seed=12)
    searcher = Searcher(store, exact_max_rows=10**9)
    mask = brute_mask(tiles, flt)
    assert mask.sum() > 100
    for i in range(3):
        result = searcher.search(q[i:i + 1], 10, flt)
        ids, _ = brute_topk(tiles, q[i], mask, 10)
        assert result.plan["candidates"] == mask.sum() and result.tile_ids[0, :ids.size].tolist() == ids.tolist()


@pytest.mark.parametrize("d", [8, 128, 1024, 4096])
def test_integer_code_sums_stay_exact_at_their_extremes(d):
    # the largest weights against the largest codes: the int32 sums of the code scan must not wrap
    q = np.full(d, d ** -0.5, np.float32)
    q[::2] *= -1
    params = np.stack([np.full(d, -1.0), np.full(d, 2 / 255), np.zeros(d)])
    cw, scale, c0, margin = kernels._code_query(q, params)
    codes = np.full((2, d), 255, np.uint8)
    codes[1, ::2] = 0  # only the positive weights: the largest sum there is
    for row in range(2):
        want = int(codes[row].astype(np.int64) @ cw.astype(np.int64))
        assert kernels._idot(codes, row, cw) == want
        assert kernels._idot4(codes, row, row, row, row, cw) == (want,) * 4
    assert abs(int(codes[1].astype(np.int64) @ cw.astype(np.int64))) < 2 ** 31
    exact = codes.astype(np.float64) @ (q.astype(np.float64) * params[1]) + c0
    approx = (codes.astype(np.int64) @ cw.astype(np.int64)) * scale + c0
    assert np.abs(approx - exact).max() <= margin


@pytest.mark.parametrize("keep", [0.2, 0.5, 0.7, 1.0])
def test_long_scans_scoring_whole_spans_give_the_float32_answer(keep):
    # past _SPAN_ROWS rows in the ranges, dense spans are scored whole from their codes and only the matches
    # offered; sparse spans, exclusions and polygon edge rows keep the compacted path: the same top-k either way
    rng = np.random.default_rng(int(keep * 10))
    n, d = kernels._SPAN_ROWS + 12_000, 16
    x = rng.standard_normal((n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    time = np.where(rng.random(n) < keep, 5, 50).astype(np.int64)
    time[rng.random(n) < 0.001] = TIME_UNKNOWN
    starts, stops = [0, 3, 40_000], [1, 30_000, n]  # a one-row range, and spans cut at every _BLOCK
    rows = np.r_[0:1, 3:30_000, 40_000:n]
    assert rows.size >= kernels._SPAN_ROWS
    scene = rng.integers(0, 50, n)
    for seed in range(3):
        q = rng.standard_normal(d).astype(np.float32)
        q /= np.linalg.norm(q)
        for k, excl in ((1, ()), (10, ()), (100, ()), (10, (3, 7))):
            got = _scan(x, q, k, starts, stops, time=time, lo=0, hi=10, scene=scene, excl_scenes=excl, codes=True)
            flt = _scan(x, q, k, starts, stops, time=time, lo=0, hi=10, scene=scene, excl_scenes=excl)
            ok = rows[(time[rows] >= 0) & (time[rows] <= 10) & ~np.isin(scene[rows], excl)]
            assert got[2] == flt[2] == ok.size
            assert got[1].tolist() == flt[1].tolist() and got[0].tolist() == flt[0].tolist()
            np.testing.assert_allclose(got[0], _truth(x, q, ok, k)[0], rtol=0, atol=1e-5)
