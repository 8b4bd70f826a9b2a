"""Adding a sensor (configs/add_sensor.yaml) and indexing the new model: the other sensors' vectors are taken from
the published index (bit-identical), only the new sensor's tiles are embedded."""

import json
import shutil

import numpy as np
import pytest
import torch

from rsretrieve.data.catalog import Catalog
from rsretrieve.data.ingest import ingest
from rsretrieve.data.synthetic import make_archive
from rsretrieve.index.indexer import index_workspace
from rsretrieve.index.store import IndexMismatchError, IndexStore
from rsretrieve.model.checkpoint import load_model
from tests.conftest import save_untrained_model

S1S2 = ["sentinel1", "sentinel2"]


@pytest.fixture(scope="module")
def added(tmp_path_factory):
    """S1 + S2 + Landsat 8 ingested; ``default`` (S1 + S2) indexed; ``with_l8`` = default plus a landsat8 branch."""
    root = tmp_path_factory.mktemp("addsensor")
    make_archive(root / "archive", scenes=2, seed=3, size_m=1440, sensors=("sentinel1", "sentinel2", "landsat8"))
    ws = root / "ws"
    with Catalog(ws / "catalog.sqlite", tile_m=480) as cat:
        ingest([root / "archive"], cat)
    base = save_untrained_model(ws, sensors=S1S2)
    first = index_workspace(ws)
    model = load_model(base)
    model.freeze_shared()
    model.add_sensor("landsat8")
    with torch.no_grad():  # as if trained: the new branch is no longer a copy of Sentinel-2's
        for p in model.branches["landsat8"].parameters():
            p.add_(0.01 * torch.randn_like(p))
    (ws / "checkpoints" / "with_l8").mkdir()
    model.save(ws / "checkpoints" / "with_l8" / "model.pt")
    return root, ws, first


def _counts(ws):
    with Catalog(ws / "catalog.sqlite") as cat:
        out = {}
        for t in cat.tiles():
            out[t["sensor"]] = out.get(t["sensor"], 0) + 1
        return out


def test_a_model_that_added_a_sensor_reuses_the_other_sensors_vectors(added, tmp_path):
    root, ws, first = added
    counts = _counts(ws)
    assert first["skipped_sensors"] == {"landsat8": counts["landsat8"]}
    ws = shutil.copytree(ws, tmp_path / "ws")
    old_ids, old_vecs = IndexStore.open(ws / "index").load_vectors()
    out = index_workspace(ws, "with_l8")
    # only Landsat 8 went through the model; S1 and S2 were copied from the published generation
    assert out["added"] == counts["landsat8"]
    assert out["reused"] == counts["sentinel1"] + counts["sentinel2"]
    assert out["reused_sensors"] == {"sentinel1": counts["sentinel1"], "sentinel2": counts["sentinel2"]}
    store = IndexStore.open(ws / "index")
    assert store.ntotal == sum(counts.values()) and store.model_name == "with_l8"
    np.testing.assert_array_equal(store.get_vectors(old_ids), old_vecs)  # bit-identical, the same tiles
    # and the same as embedding everything with the new model (a reference index built from scratch)
    ref = shutil.copytree(ws, tmp_path / "ref")
    shutil.rmtree(ref / "index")
    full = index_workspace(ref, "with_l8")
    assert full["reused"] == 0 and full["added"] == sum(counts.values())
    ids, vecs = IndexStore.open(ref / "index").load_vectors()
    np.testing.assert_array_equal(store.get_vectors(ids), vecs)


def test_an_index_written_before_fingerprints_finds_its_model_file(added, tmp_path):
    """An index of an earlier version has no per-sensor fingerprints: they come from the model file it names."""
    _, ws, _ = added
    ws = shutil.copytree(ws, tmp_path / "ws")
    gen = IndexStore.current_generation(ws / "index")
    path = ws / "index" / gen / "manifest.json"
    man = json.loads(path.read_text())
    man.pop("sensor_fingerprints")
    man.pop("model_name")
    path.write_text(json.dumps(man))
    bare = shutil.copytree(ws, tmp_path / "bare")
    out = index_workspace(ws, "with_l8")
    assert out["reused"] == sum(v for k, v in _counts(ws).items() if k != "landsat8")
    # without the model file no fingerprint is known: everything is embedded again, nothing is guessed
    (bare / "checkpoints" / "default" / "model.pt").unlink()
    out = index_workspace(bare, "with_l8")
    assert out["reused"] == 0 and out["added"] == sum(_counts(bare).values())


def test_a_model_with_other_shared_weights_reuses_nothing(added, tmp_path):
    _, ws, _ = added
    ws = shutil.copytree(ws, tmp_path / "ws")
    save_untrained_model(ws, name="retrained", seed=7, sensors=[*S1S2, "landsat8"])
    out = index_workspace(ws, "retrained")
    assert out["reused"] == 0 and out["added"] == sum(_counts(ws).values())


def test_going_back_to_the_old_model_reuses_and_says_which_sensor_it_cannot_index(added, tmp_path):
    _, ws, _ = added
    ws = shutil.copytree(ws, tmp_path / "ws")
    index_workspace(ws, "with_l8")
    out = index_workspace(ws, "default")
    counts = _counts(ws)
    assert out["added"] == 0 and out["reused"] == counts["sentinel1"] + counts["sentinel2"]
    assert out["skipped_sensors"] == {"landsat8": counts["landsat8"]}


def test_a_search_with_another_model_than_the_index_names_the_index_model(added, tmp_path):
    _, ws, _ = added
    ws = shutil.copytree(ws, tmp_path / "ws")
    index_workspace(ws, "with_l8")
    with pytest.raises(IndexMismatchError, match=r"\(dim 128, indexed as --model with_l8\); this model is"):
        IndexStore.open(ws / "index", expect_model_checksum="0" * 16)


def test_queries_default_to_the_model_the_index_was_built_with(added, tmp_path):
    """After `index --model with_l8`, a query or a service naming no model answers with with_l8 (the default model
    could only be refused: an index holds one model's vectors)."""
    from rsretrieve.serve import create_app
    from rsretrieve.workspace import Workspace
    from tests.conftest import run_cli

    _, ws, _ = added
    ws = shutil.copytree(ws, tmp_path / "ws")
    assert Workspace.open(ws).indexed_model() == "default"
    index_workspace(ws, "with_l8")
    w = Workspace.open(ws)
    assert w.indexed_model() == "with_l8"
    tile = int(IndexStore.open(ws / "index").segments[0].tile_id[0])
    assert len(w.query(tile_id=tile, k=3, target_sensors=["landsat8"]).hits) == 3
    w.close()
    assert create_app(ws).state.health["model"] == "with_l8"
    r = run_cli("query", "-w", ws, "--tile-id", str(tile), "-k", "2", "--json")
    assert r.returncode == 0 and len(json.loads(r.stdout)["hits"]) == 2, r.stderr
    plan = json.loads(r.stdout)["plan"]  # which model answered
    assert (plan["model"], plan["model_checksum"]) == ("with_l8", IndexStore.open(ws / "index").model_checksum)
    r = run_cli("query", "-w", ws, "--tile-id", str(tile), "--model", "default")  # named: still checked
    assert r.returncode == 2 and "indexed as --model with_l8" in r.stderr


def test_a_later_index_run_naming_no_model_keeps_the_index_model(added, tmp_path):
    """`rsretrieve index` after `index --model with_l8` (say, after an ingest) went back to `default`: it rebuilt
    the index with the model that has no Landsat 8 branch, and Landsat 8 dropped out of every query."""
    from tests.conftest import run_cli

    _, ws, _ = added
    ws = shutil.copytree(ws, tmp_path / "ws")
    index_workspace(ws, "with_l8")
    r = run_cli("index", "-w", ws, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["model"] == "with_l8" and out["added"] == 0 and not out["skipped_sensors"]
    assert IndexStore.open(ws / "index").model_checksum == out["model_checksum"]
    r = run_cli("index", "-w", ws, "--model", "default", "--json")  # named: as told
    assert r.returncode == 0 and json.loads(r.stdout)["model"] == "default", r.stderr
    # the index's model deleted since: a bare `rsretrieve index` says where the name came from
    index_workspace(ws, "with_l8")
    shutil.rmtree(ws / "checkpoints" / "with_l8")
    r = run_cli("index", "-w", ws)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"rsretrieve index: error: the index was built with model 'with_l8', which is no longer in "
        f"{ws / 'checkpoints'}: name the model to index with (--model NAME)"]
