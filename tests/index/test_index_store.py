"""Segments, manifest, model checks, removal, compaction, generations, and crash safety (kill -9)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from rsretrieve.index.ann import touch_lists
from rsretrieve.index.filters import QueryFilter
from rsretrieve.index.hilbert import hilbert_key
from rsretrieve.index.search import Searcher
from rsretrieve.index.store import IndexMismatchError, IndexStore, merge_plan

from .conftest import DIM, brute_mask, brute_topk, make_tiles, queries, subset

WRITER = Path(__file__).with_name("_kill_writer.py")


@pytest.fixture()
def small(tmp_path):
    tiles = make_tiles(6000, seed=2)
    st = IndexStore.create(tmp_path / "idx", DIM, "model-a")
    st.add_segment(**subset(tiles, slice(0, 3000)), factory=None)
    st.add_segment(**subset(tiles, slice(3000, None)), factory="IVF16,Flat")
    return tiles, st


def test_manifest_names_model_dim_sensor_table_and_segments(small):
    tiles, st = small
    man = json.loads((st.root / st.generation / "manifest.json").read_text())
    assert (man["model_checksum"], man["dim"], man["version"]) == ("model-a", 128, 2)
    assert man["sensors"] == sorted(set(tiles["sensor_names"][:3000])) + sorted(
        set(tiles["sensor_names"][3000:]) - set(tiles["sensor_names"][:3000]))
    assert [e["rows"] for e in man["segments"]] == [3000, 3000]
    assert man["segments"][0]["ann"] is None and man["segments"][1]["ann"]["factory"] == "IVF16,Flat"
    assert (st.root / "current").read_text() == st.generation


def test_segment_rows_are_sorted_by_hilbert_key_of_their_centroid(small):
    _, st = small
    for seg in st.segments:
        assert (np.diff(seg.hkey) >= 0).all()
        assert (seg.hkey == hilbert_key(seg.lon, seg.lat)).all()


def test_columns_and_vectors_round_trip_by_tile_id(small):
    tiles, st = small
    ids, vecs = st.load_vectors()
    order = np.argsort(ids)
    assert (ids[order] == tiles["tile_ids"]).all()
    assert np.array_equal(vecs[order], tiles["vectors"])
    pick = tiles["tile_ids"][[5, 4000, 17]]
    assert np.array_equal(st.get_vectors(pick), tiles["vectors"][[5, 4000, 17]])
    with pytest.raises(KeyError, match="tile 7 is not in the index"):
        st.get_vectors([7])


def test_other_model_or_dim_is_refused_with_message(small):
    _, st = small
    with pytest.raises(IndexMismatchError) as exc:
        IndexStore.open(st.root, expect_model_checksum="model-b", expect_dim=128)
    assert str(exc.value) == (f"index at {st.root} was built with model model-a (dim 128); this model is model-b "
                              "(dim 128): re-run `rsretrieve index`")
    with pytest.raises(IndexMismatchError, match=r"this model is model-a \(dim 64\)"):
        IndexStore.open(st.root, expect_model_checksum="model-a", expect_dim=64)


def test_missing_index_and_duplicate_tiles_are_refused(small, tmp_path):
    tiles, st = small
    with pytest.raises(FileNotFoundError, match="no index at .*: run `rsretrieve index` first"):
        IndexStore.open(tmp_path / "nothing")
    with pytest.raises(ValueError, match="3000 tile ids are indexed already"):
        st.add_segment(**subset(tiles, slice(0, 3000)))


@pytest.mark.parametrize("exact_max_rows", [10**9, 100])  # exact scans, and the IVF segment through its index
def test_removed_scenes_are_never_returned(small, exact_max_rows):
    tiles, st = small
    gone = np.unique(tiles["scene_ids"])[::3]
    removed = st.remove_scenes(gone)
    dead = np.isin(tiles["scene_ids"], gone)
    assert removed == dead.sum()
    assert sorted(st.indexed_tile_ids().tolist()) == tiles["tile_ids"][~dead].tolist()
    reopened = IndexStore.open(st.root)
    q = tiles["vectors"][np.flatnonzero(dead)[:20]]  # each query is a removed tile itself
    for flt in (None, QueryFilter(sensors={"sentinel1", "sentinel2", "enmap"}), QueryFilter(one_per_cell=True)):
        result = Searcher(reopened, exact_max_rows=exact_max_rows).search(q, 10, flt)
        assert not set(result.tile_ids.ravel().tolist()) & set(tiles["tile_ids"][dead].tolist())
    exact = Searcher(reopened, exact_max_rows=10**9).search(q[:3], 10)
    for i in range(3):
        assert exact.tile_ids[i].tolist() == brute_topk(tiles, q[i], ~dead, 10)[0].tolist()


def test_filtered_search_leaves_the_removed_rows_mask_alone(small):
    """A filter over a whole segment with removed rows once wrote its matches into the segment's mask of live rows."""
    tiles, st = small
    st.remove_scenes(np.unique(tiles["scene_ids"])[:3])
    store = IndexStore.open(st.root)
    before = [seg.alive_mask().copy() for seg in store.segments]
    searcher = Searcher(store, exact_max_rows=10**9)
    q = queries(tiles, 2)
    for flt in (QueryFilter(start=date(2019, 1, 1), end=date(2019, 12, 31)), QueryFilter(sensors={"enmap"})):
        searcher.search(q, 5, flt)
    assert all(np.array_equal(b, seg.alive_mask()) for b, seg in zip(before, store.segments))
    flt = QueryFilter(sensors={"sentinel1"})
    result = searcher.search(q, 10, flt)
    alive = ~np.isin(tiles["scene_ids"], np.unique(tiles["scene_ids"])[:3])
    for i in range(2):
        ids, _ = brute_topk(tiles, q[i], brute_mask(tiles, flt) & alive, 10)
        assert result.tile_ids[i].tolist() == ids.tolist()


def test_compact_merges_segments_and_drops_removed_rows(small):
    tiles, st = small
    st.remove_scenes([0, 1])
    q = queries(tiles, 3)
    flt = QueryFilter(bbox=(-10, 36, 30, 60))
    before = Searcher(st, exact_max_rows=10**9).search(q, 10, flt)
    st.compact(factory=None)
    after = IndexStore.open(st.root)
    alive = (~np.isin(tiles["scene_ids"], [0, 1])).sum()
    assert len(after.segments) == 1 and after.segments[0].n == after.ntotal == alive
    assert not after.segments[0].has_deleted
    assert np.array_equal(Searcher(after, exact_max_rows=10**9).search(q, 10, flt).tile_ids, before.tile_ids)
    left = sorted(p.name for p in (st.root / st.generation).iterdir())
    assert left == sorted(["manifest.json", after.segments[0].name])  # old segments and temp files cleaned up


@pytest.mark.parametrize("alive, dead, plan", [
    ([10_000_000, 100], [0, 0], []),  # a few new rows beside a large segment: left as they are
    ([10_000_000, 100, 100], [0, 0, 0], [1, 2]),  # small ones merge among themselves
    ([50_000] * 5, [0] * 5, [0, 1, 2, 3, 4]),  # segments of one run (or a new model's generation): all
    ([1000, 300], [0, 0], [0, 1]),  # the next one is under 4x the smaller ones: merged too
    ([1_000_000, 200_000, 100], [0, 0, 0], []),
    ([1_000_000, 200_000, 60_000], [0, 0, 0], [0, 1, 2]),  # merged ones reach the next size: a cascade
    ([1_000_000, 100], [400_000, 0], [0, 1]),  # more than a quarter removed: rewritten
    ([1_000_000], [400_000], [0]),
    ([1_000_000], [100], []),  # a few removed rows stay masked
])
def test_merge_plan_is_size_tiered(alive, dead, plan):
    assert merge_plan(alive, dead) == plan


def test_merging_small_segments_leaves_a_large_one_untouched(tmp_path):
    """A few new rows beside a large segment are merged among themselves only, and search is unchanged."""
    tiles = make_tiles(4300, seed=4)
    st = IndexStore.create(tmp_path / "idx", DIM, "model-a")
    big = st.add_segment(**subset(tiles, slice(0, 4000)), factory=None)
    big_files = {p.name: p.stat().st_mtime_ns for p in (st.root / st.generation / big).iterdir()}
    for a in (4000, 4100, 4200):
        st.add_segment(**subset(tiles, slice(a, a + 100)), factory=None)
    q = queries(tiles, 3)
    flt = QueryFilter(bbox=(-10, 36, 30, 60))
    before = Searcher(st, exact_max_rows=10**9).search(q, 10, flt)
    merged = st.merge_small(factory=None)
    after = IndexStore.open(st.root)
    assert [s.name for s in after.segments] == [big, merged] and [s.n for s in after.segments] == [4000, 300]
    assert {p.name: p.stat().st_mtime_ns for p in (st.root / st.generation / big).iterdir()} == big_files
    assert np.array_equal(Searcher(after, exact_max_rows=10**9).search(q, 10, flt).tile_ids, before.tile_ids)
    assert st.merge_small(factory=None) is None  # nothing left to gain


def test_a_small_segment_beside_an_ivf_one_gets_an_ivf_index_on_its_lists(tmp_path):
    """Too small to train IVF lists, or to get an ANN under "auto", a segment added beside one with an IVF index is
    filled on that one's lists instead of being scanned exactly by every unfiltered query."""
    import faiss

    tiles = make_tiles(4300, seed=5)
    st = IndexStore.create(tmp_path / "idx", DIM, "model-a")
    st.add_segment(**subset(tiles, slice(0, 4000)), factory="IVF16,Flat")
    st.add_segment(**subset(tiles, slice(4000, 4100)), factory="auto")
    st.add_segment(**subset(tiles, slice(4100, 4110)), factory="IVF16,Flat")  # 10 rows: fewer than 16 lists
    st.add_segment(**subset(tiles, slice(4110, None)), factory=None)  # exact asked for: exact
    big, small, tiny, exact = IndexStore.open(st.root).segments
    assert exact.ann is None and "lists_of" not in big.ann_info
    for seg, n in ((small, 100), (tiny, 10)):
        assert seg.ann_info["factory"] == "IVF16,Flat" and seg.ann_info["lists_of"] == big.name
        assert seg.ann.ntotal == n
        assert seg.ann_info["width"] == big.ann_info["width"]  # searched as one index over both would be
        np.testing.assert_array_equal(faiss.extract_index_ivf(seg.ann).quantizer.reconstruct_n(0, 16),
                                      faiss.extract_index_ivf(big.ann).quantizer.reconstruct_n(0, 16))
        _, rows = seg.ann.search(np.ascontiguousarray(seg.vectors), 1, params=faiss.SearchParametersIVF(nprobe=16))
        assert (rows[:, 0] == np.arange(n)).all()  # ids are the segment's row numbers
    st.compact("auto")  # a rewrite of all of them decides afresh: under 1M rows, exact (the lists it replaces lend none)
    (whole,) = IndexStore.open(st.root).segments
    assert whole.n == 4300 and whole.ann is None


def test_ann_lists_are_memory_mapped_and_answer_as_when_read(tmp_path):
    """A segment's IVF lists are mapped read-only rather than read (a query process opens a 1M index in ms, not
    0.45 s), with FAISS's prefetch threads off (they doubled single-query latency); the answers are those of the
    index read into memory."""
    import faiss

    tiles = make_tiles(3000, seed=7)
    st = IndexStore.create(tmp_path / "idx", DIM, "model-a")
    st.add_segment(**subset(tiles, slice(0, None)), factory="IVF16,Flat")
    (seg,) = IndexStore.open(st.root).segments
    lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(seg.ann).invlists)
    assert isinstance(lists, faiss.OnDiskInvertedLists) and lists.prefetch_nthread == 0
    read = faiss.read_index(str(seg.path / seg.ann_info["file"]))
    assert isinstance(faiss.downcast_InvertedLists(faiss.extract_index_ivf(read).invlists), faiss.ArrayInvertedLists)
    q = queries(tiles, 20)
    params = faiss.SearchParametersIVF(nprobe=4)
    for got, want in zip(seg.ann.search(q, 10, params=params), read.search(q, 10, params=params)):
        np.testing.assert_array_equal(got, want)
    searcher = Searcher(IndexStore.open(st.root), exact_max_rows=100)
    searcher.warm_up()  # pages the mapped lists in (a service's first queries would pay their page faults)
    assert touch_lists(seg.ann) == (seg.path / seg.ann_info["file"]).stat().st_size
    assert touch_lists(read) == 0  # lists read into memory: nothing mapped
    res = searcher.search(q, 10)
    assert res.plan["mode"] == "ann"
    np.testing.assert_array_equal(res.tile_ids, seg.tile_id[read.search(q, 10, params=faiss.SearchParametersIVF(
        nprobe=seg.ann_info["width"]))[1]])


def test_new_model_builds_beside_old_and_switches_atomically(small):
    tiles, st = small
    old_reader = IndexStore.open(st.root, expect_model_checksum="model-a")
    q = queries(tiles, 2)
    expected = Searcher(old_reader).search(q, 5).tile_ids
    new = IndexStore.open_for_update(st.root, DIM, "model-b")
    assert new.generation != st.generation and not new.published
    new.add_segment(**subset(tiles, slice(0, 2000)), factory=None)
    assert IndexStore.open(st.root).model_checksum == "model-a"  # readers opening meanwhile get the old index
    assert IndexStore.open_for_update(st.root, DIM, "model-b").generation == new.generation  # resumable
    new.publish()
    assert IndexStore.open(st.root, expect_model_checksum="model-b").ntotal == 2000
    assert IndexStore.prune(st.root, keep=0) == [st.generation]
    assert np.array_equal(Searcher(old_reader).search(q, 5).tile_ids, expected)  # old snapshot keeps working
    with pytest.raises(IndexMismatchError, match="built with model model-b"):
        IndexStore.open(st.root, expect_model_checksum="model-a")


def _run_writer(root: Path, model: str, kill_at: tuple[int, float] | None) -> list[str]:
    """Run the writer; with ``kill_at = (n, delay)``, SIGKILL it ``delay`` s after its n-th progress line."""
    proc = subprocess.Popen([sys.executable, str(WRITER), str(root), model], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines = [proc.stdout.readline().strip()]
    assert lines == ["ready"], proc.stderr.read()
    if kill_at is None:  # read through the same buffered pipe as readline (communicate() would skip its buffer)
        lines += proc.stdout.read().split()
        assert proc.wait(timeout=120) == 0 and lines[-1] == "done", (lines, proc.stderr.read())
        return lines
    while len(lines) <= kill_at[0] and lines[-1] not in ("done", ""):
        lines.append(proc.stdout.readline().strip())
    time.sleep(kill_at[1])
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return lines


def _assert_consistent(root: Path, tiles: dict, model: str, generation: str | None = None) -> int:
    """Open the index (or one generation), check every row against the source tiles and search it; row count."""
    st = IndexStore.open(root, expect_model_checksum=model, generation=generation)
    ids = st.indexed_tile_ids()
    assert np.unique(ids).size == ids.size
    pos = ids - tiles["tile_ids"][0]
    if ids.size:
        assert np.array_equal(st.get_vectors(ids), tiles["vectors"][pos])
        flt = QueryFilter(bbox=(-10, 36, 30, 60))
        result = Searcher(st, exact_max_rows=10**9).search(tiles["vectors"][:2], 5, flt)
        mask = brute_mask(tiles, flt) & np.isin(tiles["tile_ids"], ids)
        assert result.tile_ids[0].tolist() == brute_topk(tiles, tiles["vectors"][0], mask, 5)[0].tolist()
    return ids.size


def test_kill_9_during_update_leaves_previous_index_usable_and_rerun_completes(tmp_path):
    sys.path.insert(0, str(WRITER.parent))
    from _kill_writer import N_TILES
    tiles = make_tiles(N_TILES, seed=3)
    root, rnd = tmp_path / "idx", random.Random(0)
    steps_hit: set[str] = set()
    for model in ("model-1", "model-2"):  # build, then re-index with a new model beside the old one
        partial = []
        for _ in range(5):
            lines = _run_writer(root, model, kill_at=(rnd.randint(1, 6), rnd.uniform(0.0, 0.02)))
            steps_hit.add(lines[-1])
            if not IndexStore.exists(root):  # a first build is published only when complete; until then readers
                # are told so, and its staged generation is consistent
                assert model == "model-1"
                with pytest.raises(FileNotFoundError, match="has not finished"):
                    IndexStore.open(root)
                staged = [g.name for g in root.glob("gen-*")]
                assert len(staged) == 1
                partial.append(_assert_consistent(root, tiles, model, generation=staged[0]))
                continue
            current = IndexStore.open(root).model_checksum
            count = _assert_consistent(root, tiles, current)
            if model == "model-2" and current == "model-1":  # the old index serves until the new one is published
                assert count == N_TILES
                staged = [g.name for g in root.glob("gen-*") if g.name != IndexStore.open(root).generation]
                count = _assert_consistent(root, tiles, "model-2", generation=staged[0])
            partial.append(count)
        assert _run_writer(root, model, kill_at=None)[-1] == "done"
        assert _assert_consistent(root, tiles, model) == N_TILES
        st = IndexStore.open(root)
        assert len(st.segments) == 1
        assert not [p for p in (root / st.generation).iterdir() if p.name.startswith(".tmp")]
        assert any(0 < n < N_TILES for n in partial)  # kills landed in the middle of the update
    assert "add" in steps_hit
