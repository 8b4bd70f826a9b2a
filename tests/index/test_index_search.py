"""The planner: exact mode equals numpy brute force, ANN mode stays inside the filter with high recall."""

from __future__ import annotations

from datetime import date, datetime

import faiss
import numpy as np
import pytest
from shapely.geometry import MultiPolygon, Polygon, box

from rsretrieve.index import filters as filters_mod
from rsretrieve.index import search as search_mod
from rsretrieve.index.filters import CompiledFilter, QueryFilter
from rsretrieve.index.search import Searcher
from rsretrieve.index.store import IndexStore

from .conftest import DIM, brute_mask, brute_topk, queries, subset

#: most of the first region, less a hole: rows of every kind (wholly inside, outside, near an edge)
HOLED = Polygon([(-9, 37), (29, 39), (25, 59), (3, 50), (-9, 58)], holes=[[(0, 42), (14, 42), (14, 52), (0, 47)]])

FILTERS = {
    "bbox": QueryFilter(bbox=(-5, 40, 10, 50)),
    "antimeridian_bbox": QueryFilter(bbox=(175, -22, -175, -12)),
    "polygon": QueryFilter(polygon=Polygon([(72, 10), (88, 12), (80, 28), (74, 20)])),
    "multipolygon": QueryFilter(polygon=MultiPolygon([box(0, 45, 5, 50), box(120, -30, 125, -25)])),
    "polygon_with_hole_and_time": QueryFilter(polygon=HOLED, start=date(2018, 1, 1), end=date(2021, 6, 30)),
    "multipolygon_with_hole": QueryFilter(polygon=MultiPolygon([HOLED, Polygon([(72, 10), (88, 12), (80, 28)])])),
    "time_range": QueryFilter(start=datetime(2019, 1, 1), end=datetime(2019, 12, 31, 23, 59, 59)),
    "sensor_set": QueryFilter(sensors={"enmap"}),
    "exclusion": QueryFilter(exclude_scene_ids=set(range(0, 150, 2)), exclude_cell_ids={"c000001", "c000002"}),
    "bbox_and_polygon": QueryFilter(bbox=(-5, 40, 20, 55), polygon=HOLED, start=date(2018, 1, 1)),
    "combined": QueryFilter(bbox=(-10, 36, 30, 60), start=date(2018, 1, 1), end=date(2020, 12, 31),
                            sensors={"sentinel2", "enmap"}, exclude_scene_ids={3, 4, 5}),
    "nothing_matches": QueryFilter(bbox=(-30, -60, -29, -59)),
}


def _check_exact(result, tiles, q, flt, k):
    mask = brute_mask(tiles, flt)
    for i in range(q.shape[0]):
        ids, scores = brute_topk(tiles, q[i], mask, k, flt.one_per_cell)
        n = ids.size
        assert result.tile_ids[i, :n].tolist() == ids.tolist()
        np.testing.assert_allclose(result.scores[i, :n], scores, rtol=0, atol=1e-5)
        assert (result.tile_ids[i, n:] == -1).all() and np.isneginf(result.scores[i, n:]).all()


@pytest.mark.parametrize("parallel_rows", [filters_mod.PARALLEL_ROWS, 1], ids=["one_thread", "parallel"])
@pytest.mark.parametrize("name", FILTERS)
def test_exact_mode_equals_brute_force_topk(store, tiles, name, parallel_rows, monkeypatch):
    monkeypatch.setattr(filters_mod, "PARALLEL_ROWS", parallel_rows)  # 1: every scan on all of numba's threads
    flt = FILTERS[name]
    q = queries(tiles, 4)
    # one query; a batch scanned at once as a few queries, or for its rows; a batch gathered for BLAS
    for nq, few, most, rows in ((1, 8, 32, 8192), (4, 8, 32, 8192), (4, 2, 8, 0), (4, 2, 2, 0)):
        monkeypatch.setattr(search_mod, "SCAN_FEW_QUERIES", few)
        monkeypatch.setattr(search_mod, "SCAN_MAX_QUERIES", most)
        monkeypatch.setattr(search_mod, "SCAN_BATCH_ROWS", rows)
        result = Searcher(store, exact_max_rows=10**9).search(q[:nq], 10, flt)
        assert result.plan["mode"] == "exact"
        assert result.plan["candidates"] == brute_mask(tiles, flt).sum()
        _check_exact(result, tiles, q[:nq], flt, 10)


@pytest.mark.parametrize("small_rows", [0, 10**9])
@pytest.mark.parametrize("name", ["bbox", "antimeridian_bbox", "polygon", "multipolygon", "polygon_with_hole_and_time",
                                  "multipolygon_with_hole", "combined"])
def test_exact_mode_equals_brute_force_with_coarse_or_fine_covers(store, tiles, name, small_rows, monkeypatch):
    """The cover of the geometry is sized by the rows estimated in its box: both sizes give the exact answer."""
    monkeypatch.setattr(filters_mod, "SMALL_BOX_ROWS", small_rows)
    sizes, hint = [], CompiledFilter.size_hint

    def recording(self, rows):
        hint(self, rows)
        sizes.append(self.box_cells)
    monkeypatch.setattr(CompiledFilter, "size_hint", recording)
    flt = FILTERS[name]
    q = queries(tiles, 2, seed=17)
    result = Searcher(store, exact_max_rows=10**9).search(q, 10, flt)
    assert sizes[0] == (filters_mod.SMALL_BOX_CELLS if small_rows else filters_mod.BOX_CELLS)
    assert result.plan["candidates"] == brute_mask(tiles, flt).sum()
    _check_exact(result, tiles, q, flt, 10)


@pytest.mark.parametrize("name", ["polygon", "multipolygon", "polygon_with_hole_and_time", "multipolygon_with_hole"])
def test_small_polygon_covered_by_its_boxes_without_rasters_is_exact(store, tiles, name, monkeypatch):
    """Few rows in a polygon's box: its parts' boxes are the cover and every row is tested exactly (no rasters)."""
    monkeypatch.setattr(filters_mod, "SMALL_BOX_ROWS", 10**9)
    monkeypatch.setattr(filters_mod, "POLYGON_BOX_ROWS", 10**9)
    regions, init = [], CompiledFilter.__init__

    def recording(self, *a, **kw):
        init(self, *a, **kw)
        regions.append(self)
    monkeypatch.setattr(CompiledFilter, "__init__", recording)
    flt = FILTERS[name]
    q = queries(tiles, 3, seed=23)
    for nq in (1, 3):
        result = Searcher(store, exact_max_rows=10**9).search(q[:nq], 10, flt)
        assert regions[-1].polygon_by_box and regions[-1].region._rasters is None
        assert result.plan["candidates"] == brute_mask(tiles, flt).sum()
        _check_exact(result, tiles, q[:nq], flt, 10)


def test_unfiltered_exact_equals_brute_force(store, tiles):
    q = queries(tiles, 3)
    _check_exact(Searcher(store, exact_max_rows=10**9).search(q, 7), tiles, q, QueryFilter(), 7)


@pytest.mark.parametrize("flt", [QueryFilter(one_per_cell=True), QueryFilter(bbox=(-10, 36, 30, 60), one_per_cell=True),
                                 QueryFilter(sensors={"sentinel1"}, one_per_cell=True)])
def test_one_per_cell_exact_returns_distinct_cells_equal_to_brute_force(store, tiles, flt):
    q = queries(tiles, 3, seed=5)
    result = Searcher(store, exact_max_rows=10**9).search(q, 20, flt)
    for i in range(3):
        assert len(set(result.cell_ids[i].tolist())) == 20
    _check_exact(result, tiles, q, flt, 20)


def test_tiles_of_one_cell_are_similar_so_one_per_cell_changes_the_answer(store, tiles):
    q = queries(tiles, 1, seed=5)
    plain = Searcher(store).search(q, 20).cell_ids[0]
    assert len(set(plain.tolist())) < 20  # the filter is not vacuous on this data


BROAD = QueryFilter(start=date(2017, 1, 1), end=date(2022, 12, 31))  # ~74% of the tiles, ~7k of the IVF segment


@pytest.mark.parametrize("trust_selector, max_fetch", [(True, 4096), (True, 16), (False, 16)])
def test_ann_mode_stays_inside_filter_with_high_recall(store, tiles, trust_selector, max_fetch):
    """Post-filtered ANN; with max_fetch=16 every query ends on the fallback (IVF + IDSelectorBitmap, or exact)."""
    q = queries(tiles, 40, seed=7)
    searcher = Searcher(store, exact_max_rows=1000, trust_selector=trust_selector, max_fetch=max_fetch)
    result = searcher.search(q, 10, BROAD)
    assert result.plan["mode"] == "mixed"  # exact on the segment without ANN index, ANN on the IVF segment
    assert {s["mode"] for s in result.plan["segments"]} == {"exact", "ann"}
    assert (result.plan["segments"][1].get("fallback", 0) > 0) == (max_fetch == 16)
    mask = brute_mask(tiles, BROAD)
    allowed = set(tiles["tile_ids"][mask].tolist())
    assert set(result.tile_ids.ravel().tolist()) <= allowed
    recall = np.mean([len(set(brute_topk(tiles, q[i], mask, 10)[0].tolist()) & set(result.tile_ids[i].tolist())) / 10
                      for i in range(q.shape[0])])
    assert recall >= 0.95


def test_a_single_query_short_of_matches_after_widening_finishes_exactly(store, tiles):
    """Past ``max_fetch`` a single query (or a few) is scanned exactly: the brute-force top-k, not the ANN's."""
    q = queries(tiles, 3, seed=9)
    searcher = Searcher(store, exact_max_rows=1000, max_fetch=8)  # fewer hits than k: every query falls back
    for i in range(3):
        result = searcher.search(q[i:i + 1], 10, BROAD)
        assert result.plan["segments"][1].get("fallback") == 1
        _check_exact(result, tiles, q[i:i + 1], BROAD, 10)


def test_ann_one_per_cell_gives_k_distinct_cells_inside_filter(store, tiles):
    q = queries(tiles, 10, seed=9)
    flt = QueryFilter(start=date(2017, 1, 1), end=date(2022, 12, 31), one_per_cell=True)
    result = Searcher(store, exact_max_rows=1000).search(q, 10, flt)
    allowed = set(tiles["tile_ids"][brute_mask(tiles, flt)].tolist())
    for i in range(10):
        assert len(set(result.cell_ids[i].tolist())) == 10
        assert set(result.tile_ids[i].tolist()) <= allowed


@pytest.mark.parametrize("k", [0, -3, 2.5, True])
def test_bad_k_is_refused(store, tiles, k):
    with pytest.raises(ValueError, match=r"^k must be a positive integer, got "):
        Searcher(store).search(queries(tiles, 1), k)


def test_query_of_wrong_dimension_is_refused(store):
    with pytest.raises(ValueError, match=r"^queries must have shape \(nq, 128\), got \(1, 64\)$"):
        Searcher(store).search(np.ones((1, 64), np.float32), 5)


@pytest.mark.skipif(faiss.get_num_gpus() == 0, reason="faiss sees no GPU")
def test_gpu_results_all_satisfy_the_filter(store, tiles):
    """Classic GPU indexes ignore IDSelector: the planner must re-check every hit itself."""
    q = queries(tiles, 20, seed=11)
    for flt in (BROAD, QueryFilter(bbox=(-10, 36, 30, 60)), QueryFilter(sensors={"enmap"})):
        searcher = Searcher(store, exact_max_rows=100, use_gpu=True)
        assert searcher.gpu and not searcher.trust_selector
        result = searcher.search(q, 10, flt)
        allowed = set(tiles["tile_ids"][brute_mask(tiles, flt)].tolist())
        assert set(result.tile_ids.ravel().tolist()) - {-1} <= allowed
        assert (result.tile_ids >= 0).all()


def test_filter_below_ann_min_selectivity_is_scanned_exactly_however_many_match(store, tiles):
    """~2.5% of the IVF segment (~250 tiles > exact_max_rows=100): still exact, as post-filtered ANN loses recall."""
    flt = QueryFilter(sensors={"enmap"}, start=date(2019, 1, 1), end=date(2019, 12, 31))
    q = queries(tiles, 3, seed=13)
    result = Searcher(store, exact_max_rows=100).search(q, 10, flt)
    assert [s["mode"] for s in result.plan["segments"]] == ["exact", "exact"]
    assert result.plan["segments"][1]["candidates"] > 100
    _check_exact(result, tiles, q, flt, 10)


def test_selective_box_skips_the_sample_test_and_is_scanned_exactly(store, tiles, monkeypatch):
    """The share of the segment's sample inside the filter's box bounds its matches: a small box goes straight to
    its key ranges (no test of the whole filter on the sample) and is scanned exactly."""
    def refuse(self, seg):
        raise AssertionError("quick_estimate called for a selective box")
    monkeypatch.setattr(CompiledFilter, "quick_estimate", refuse)
    flt = QueryFilter(polygon=Polygon([(-9, 37), (0, 38), (-4, 45)]), start=date(2018, 1, 1))
    q = queries(tiles, 2, seed=3)
    result = Searcher(store, exact_max_rows=1000).search(q, 10, flt)
    assert [s["mode"] for s in result.plan["segments"]] == ["exact", "exact"]
    _check_exact(result, tiles, q, flt, 10)


@pytest.mark.parametrize("flt", [BROAD, QueryFilter(bbox=(-180, -90, 180, 90), start=date(2017, 1, 1)),
                                 QueryFilter(polygon=box(-179, -89, 179, 89), start=date(2017, 1, 1))])
def test_broad_filter_is_estimated_on_the_sample_and_searched_by_ann(store, tiles, flt, monkeypatch):
    calls = []
    original = CompiledFilter.quick_estimate
    monkeypatch.setattr(CompiledFilter, "quick_estimate", lambda self, seg: calls.append(seg.name) or original(self, seg))
    result = Searcher(store, exact_max_rows=1000).search(queries(tiles, 2, seed=4), 10, flt)
    assert [s["mode"] for s in result.plan["segments"]] == ["exact", "ann"]  # the first segment has no ANN index
    assert calls == [store.segments[1].name]
    assert set(result.tile_ids.ravel().tolist()) <= set(tiles["tile_ids"][brute_mask(tiles, flt)].tolist())


@pytest.mark.parametrize("name", ["bbox", "antimeridian_bbox", "polygon", "multipolygon", "combined"])
def test_box_estimate_is_never_below_the_sample_estimate(store, name):
    cf = CompiledFilter(FILTERS[name], store.sensors)
    for seg in store.segments:
        assert cf.box_estimate(seg) >= cf.quick_estimate(seg)
    assert CompiledFilter(QueryFilter(sensors={"enmap"}), store.sensors).box_estimate(store.segments[0]) is None


def test_unfiltered_fast_path_pads_missing_hits_with_minus_one(tiles, tmp_path):
    """One segment with an ANN index: unfiltered queries go straight to FAISS; hits it lacks come back as -1."""
    st = IndexStore.create(tmp_path / "one", DIM, "model-a")
    st.add_segment(**subset(tiles, slice(0, 6000)), factory="IVF64,Flat")
    searcher = Searcher(IndexStore.open(st.root), exact_max_rows=1000)
    assert searcher._fast is not None
    q = queries(tiles, 3, seed=21)
    full = searcher.search(q, 10)
    assert full.plan["mode"] == "ann" and (full.tile_ids >= 0).all()
    short = searcher.search(q, 3000)  # more than the few lists searched hold
    assert (short.tile_ids[:, -1] == -1).all() and np.isneginf(short.scores[:, -1]).all()
    valid = short.tile_ids >= 0
    assert set(short.tile_ids[valid].tolist()) <= set(tiles["tile_ids"][:6000].tolist())
    assert short.tile_ids[:, :10].tolist() == full.tile_ids.tolist()


def test_unfiltered_fast_path_takes_every_query_form_and_checks_like_the_general_path(tiles, tmp_path):
    """float64, 1-D and non-contiguous queries and numpy integer k give the fast path's answer; bad input fails."""
    st = IndexStore.create(tmp_path / "one", DIM, "model-a")
    st.add_segment(**subset(tiles, slice(0, 6000)), factory="IVF64,Flat")
    searcher = Searcher(IndexStore.open(st.root), exact_max_rows=1000)
    q = queries(tiles, 4, seed=22)
    ref = searcher.search(q, 10)
    for other in (q.astype(np.float64), np.asfortranarray(q)):
        assert searcher.search(other, np.int64(10)).tile_ids.tolist() == ref.tile_ids.tolist()
    assert searcher.search(q[1], 10).tile_ids.tolist() == ref.tile_ids[1:2].tolist()
    assert searcher.search(q[:0], 10).tile_ids.shape == (0, 10)
    with pytest.raises(ValueError, match=r"^k must be a positive integer"):
        searcher.search(q, 0)
    with pytest.raises(ValueError, match=r"^queries must have shape"):
        searcher.search(q[:, :64], 10)
