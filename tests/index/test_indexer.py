"""`rsretrieve index`: resumable after kill -9, removes vectors of removed scenes, switches models atomically."""

import shutil

import numpy as np

from rsretrieve.data.catalog import Catalog
from rsretrieve.data.ingest import ingest
from rsretrieve.data.synthetic import make_archive
from rsretrieve.index.indexer import index_workspace, model_checksum
from rsretrieve.index.query import run_query
from rsretrieve.index.store import IndexStore
from rsretrieve.workspace import Workspace
from tests.conftest import kill_cli_when, make_workspace, run_cli, save_untrained_model


def _catalog_ids(ws):
    with Catalog(ws / "catalog.sqlite") as cat:
        return sorted(t["tile_id"] for t in cat.tiles())


def _indexed_rows(ws) -> int:
    """Rows in the index as a reader sees them while ``rsretrieve index`` updates it."""
    try:
        return IndexStore.open(ws / "index").ntotal
    except Exception:  # noqa: BLE001 - between a writer's steps any failure to open reads as "no progress yet"
        return -1


def test_kill_9_during_an_index_update_keeps_the_old_index_and_resumes(tmp_path):
    ws = make_workspace(tmp_path, scenes=2, size_m=1920)  # indexed: the "previous index"
    before = IndexStore.open(ws / "index").ntotal
    make_archive(tmp_path / "more", scenes=6, seed=11, size_m=3840)
    with Catalog(ws / "catalog.sqlite") as cat:
        ingest([tmp_path / "more"], cat)
    total = len(_catalog_ids(ws))
    ref = tmp_path / "ref"
    shutil.copytree(ws, ref)
    assert run_cli("index", "-w", ref, "--segment-rows", "300").returncode == 0
    kills = 0
    # kill after the first new segment, after the next one, and once every segment is added (inside the compaction,
    # the publish or the warm-up): progress-based, since a resumed run has less to embed than the first
    for stage in ("first", "next", "all"):
        now = _indexed_rows(ws)
        goal = total if stage == "all" else now + 1
        kills += kill_cli_when(["index", "-w", ws, "--segment-rows", "300"], lambda: _indexed_rows(ws) >= goal,
                               delay=0.0 if stage != "all" else 0.05)
        # after every kill the index opens, holds at least the old tiles, and queries run
        store = IndexStore.open(ws / "index")
        assert store.ntotal >= before
        res = Workspace.open(ws).query(tile_id=1, k=5)
        assert len(res.hits) == 5
    assert kills == 3
    r = run_cli("index", "-w", ws, "--json")
    assert r.returncode == 0, r.stderr
    store = IndexStore.open(ws / "index")
    assert sorted(store.indexed_tile_ids().tolist()) == _catalog_ids(ws)
    ref_ids, ref_vecs = IndexStore.open(ref / "index").load_vectors()
    ids, vecs = store.load_vectors()
    order, ref_order = np.argsort(ids), np.argsort(ref_ids)
    np.testing.assert_allclose(vecs[order], ref_vecs[ref_order], atol=1e-5)  # same vectors as uninterrupted


def test_index_is_incremental_and_removes_removed_scenes(tmp_path):
    ws = make_workspace(tmp_path, scenes=2, size_m=1440)
    again = index_workspace(ws)
    assert again["added"] == 0 and again["removed"] == 0
    assert again["warm_up_s"] >= 0  # the search kernels compiled (or loaded) for this index
    with Catalog(ws / "catalog.sqlite") as cat:
        scene = cat.scenes("sentinel1")[0]
        n = scene["n_tiles"]
        cat.remove_scene(scene["key"])
    out = index_workspace(ws)
    assert out["removed"] == n and out["added"] == 0
    assert sorted(IndexStore.open(ws / "index").indexed_tile_ids().tolist()) == _catalog_ids(ws)


def test_a_new_model_builds_beside_the_old_index_and_switches_atomically(tmp_path):
    ws = make_workspace(tmp_path, scenes=2, size_m=1440)
    old = Workspace.open(ws)
    engine = old.engine()
    old_hits = [h.tile_id for h in run_query(engine, tile_id=2, k=5).hits]
    old_checksum = IndexStore.open(ws / "index").model_checksum
    save_untrained_model(ws, seed=9)  # "retrained": the index no longer matches
    # until the new model's index is published, the workspace keeps answering with the old model and index
    assert [h.tile_id for h in old.query(tile_id=2, k=5).hits] == old_hits
    out = index_workspace(ws)
    assert out["model_checksum"] != old_checksum
    assert IndexStore.open(ws / "index").model_checksum == out["model_checksum"]
    # the engine opened before the switch keeps answering from its snapshot of the old generation (old model)
    assert [h.tile_id for h in run_query(engine, tile_id=2, k=5).hits] == old_hits
    assert engine.store.model_checksum == old_checksum
    # the long-lived workspace (the service's) takes up the new model with its index, as a new one does
    new = Workspace.open(ws)
    new_hits = [h.tile_id for h in new.query(tile_id=2, k=5).hits]
    assert len(new_hits) == 5 and new_hits != old_hits
    assert [h.tile_id for h in old.query(tile_id=2, k=5).hits] == new_hits
    assert old.engine().store.model_checksum == out["model_checksum"]
    old.close()
    new.close()


def test_a_replaced_last_scene_gets_new_tile_ids_and_the_index_re_embeds_it(tmp_path):
    """SQLite hands the largest rowid out again once its row is deleted: without the catalog's high-water marks a
    re-ingested last scene kept its tile ids, so the index kept its old vectors and places (and filtered queries
    returned tiles from the old ground)."""
    ws = make_workspace(tmp_path, scenes=2, size_m=1440)
    with Catalog(ws / "catalog.sqlite") as cat:
        scenes = cat.scenes()
        last = max(scenes, key=lambda s: s["scene_id"])
        other = next(s for s in scenes if s["sensor"] == last["sensor"] and s["scene_id"] != last["scene_id"])
        old_ids = {t["tile_id"] for t in cat.tiles() if t["scene_id"] == last["scene_id"]}
        top = max(t["tile_id"] for t in cat.tiles())
    path = next(iter(last["files"].values()))
    shutil.copyfile(next(iter(other["files"].values())), path)  # new content (another site) in place
    with Catalog(ws / "catalog.sqlite") as cat:
        report = ingest([path], cat)
        assert report.replaced == 1
        new = [t for t in cat.tiles() if t["scene_id"] not in {s["scene_id"] for s in scenes}]
    assert new and min(t["tile_id"] for t in new) > top  # no id handed out twice
    out = index_workspace(ws)
    assert out["removed"] == len(old_ids) and out["added"] == len(new)
    assert sorted(IndexStore.open(ws / "index").indexed_tile_ids().tolist()) == _catalog_ids(ws)
    lon, lat = new[0]["lon"], new[0]["lat"]
    bbox = (lon - 0.01, lat - 0.01, lon + 0.01, lat + 0.01)
    hits = Workspace.open(ws).query(tile_id=new[0]["tile_id"], bbox=bbox, k=20).hits
    assert hits and all(bbox[0] <= h.lon <= bbox[2] and bbox[1] <= h.lat <= bbox[3] for h in hits)


def test_index_re_embeds_tiles_whose_catalog_row_no_longer_matches_the_vector(tmp_path):
    """A catalog written before the high-water marks may already hold re-used ids: a tile whose scene, date or
    place differs from what the index stored is treated as a new tile."""
    ws = make_workspace(tmp_path, scenes=2, size_m=1440)
    with Catalog(ws / "catalog.sqlite") as cat:
        scene = cat.scenes("sentinel2")[0]
        cat.conn.execute("UPDATE tiles SET acquired_ts = acquired_ts + 86400 WHERE scene_id = ?",
                         (scene["scene_id"],))
    out = index_workspace(ws)
    assert out["removed"] == scene["n_tiles"] and out["added"] == scene["n_tiles"]
    assert index_workspace(ws)["removed"] == 0  # and then nothing more


def test_an_unfinished_first_index_is_not_served_and_the_next_run_completes_it(tmp_path):
    """The first run stages its generation unpublished: a query meanwhile (or after a kill) is told the index is
    not finished, instead of answering from an empty or partial index."""
    ws = make_workspace(tmp_path, scenes=2, size_m=1440, index=False)
    path = save_untrained_model(ws)
    IndexStore.open_for_update(ws / "index", dim=128, model_checksum=model_checksum(path))  # as killed after create
    r = run_cli("query", "-w", ws, "--tile-id", "1", "-k", "3")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "has not finished" in r.stderr and "run it again" in r.stderr
    out = index_workspace(ws)
    assert out["added"] == out["total"] == len(_catalog_ids(ws))
    assert len(Workspace.open(ws).query(tile_id=1, k=3).hits) == 3


def test_a_factory_given_to_an_up_to_date_index_rebuilds_it_and_later_runs_keep_it(tmp_path):
    """`rsretrieve index --factory F` on an index with nothing new to embed used to exit 0 and change nothing, and
    the next run without --factory merged the segments back without F's ANN index."""
    ws = make_workspace(tmp_path, scenes=2, size_m=1440)  # indexed by size: exact

    def factories():
        return [s.ann_info and s.ann_info["factory"] for s in IndexStore.open(ws / "index").segments]

    assert factories() == [None]
    out = index_workspace(ws, factory="HNSW32")
    assert out["added"] == 0 and out["compacted"] and out["factory"] == "HNSW32"
    assert factories() == ["HNSW32"]
    make_archive(tmp_path / "more", scenes=1, seed=11, size_m=1440)
    with Catalog(ws / "catalog.sqlite") as cat:
        ingest([tmp_path / "more"], cat)
    out = index_workspace(ws)  # new tiles, no factory given: the index's own
    assert out["added"] > 0 and out["factory"] == "HNSW32" and factories() == ["HNSW32"]
    save_untrained_model(ws, seed=9)  # another model: a new generation, with the same factory
    assert index_workspace(ws)["factory"] == "HNSW32" and factories() == ["HNSW32"]
    assert index_workspace(ws, factory="auto")["compacted"] and factories() == [None]
    assert index_workspace(ws)["factory"] == "auto" and factories() == [None]


def test_a_segment_size_below_one_row_is_refused_before_any_work(tmp_path):
    ws = make_workspace(tmp_path, scenes=2, size_m=1440, index=False)
    save_untrained_model(ws)
    r = run_cli("index", "-w", ws, "--segment-rows", "0")
    assert r.returncode == 2 and r.stderr.strip() == ("rsretrieve index: error: --segment-rows must be a positive "
                                                      "number of rows, got 0")
    assert not (ws / "index").exists()


def test_a_new_scene_beside_a_large_index_is_added_without_rewriting_it(tmp_path):
    """The update's new segment is merged with the smaller ones only (size-tiered): the large segment stays as it was
    (it used to be rewritten, re-sorted and its ANN index retrained for every new scene), and search sees both."""
    ws = make_workspace(tmp_path, scenes=5, size_m=1440)
    before = IndexStore.open(ws / "index")
    (big,) = [s.name for s in before.segments]
    make_archive(tmp_path / "more", scenes=1, seed=11, size_m=1440)
    with Catalog(ws / "catalog.sqlite") as cat:
        ingest([tmp_path / "more"], cat)
    out = index_workspace(ws)
    after = IndexStore.open(ws / "index")
    assert 0 < 4 * out["added"] <= before.ntotal and not out["compacted"]
    assert [s.name for s in after.segments][0] == big and len(after.segments) == 2
    assert after.ntotal == before.ntotal + out["added"] == len(_catalog_ids(ws))
    new = int(after.segments[1].tile_id[0])
    hits = Workspace.open(ws).query(tile_id=new, k=after.ntotal).hits
    assert sorted(h.tile_id for h in hits) == _catalog_ids(ws)  # every tile of both segments, the query's own too
    r = run_cli("index", "-w", ws, "--compact")  # on request, one segment
    assert r.returncode == 0 and "0 tiles embedded" in r.stdout and "  1 segment\n" in r.stdout, r.stdout + r.stderr
    assert len(IndexStore.open(ws / "index").segments) == 1 and IndexStore.open(ws / "index").ntotal == after.ntotal
