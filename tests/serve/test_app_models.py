"""The service while the workspace changes under it: a model retrained and re-indexed, an index of another model, the
index folder removed; and the errors that must stay JSON one-liners (an unexpected exception, a filter an upload
cannot use)."""

import json
import shutil

import pytest
from fastapi.testclient import TestClient

from rsretrieve.data.catalog import Catalog
from rsretrieve.index.indexer import index_workspace, model_checksum
from rsretrieve.serve import create_app
from rsretrieve.workspace import Workspace
from tests.conftest import save_untrained_model


@pytest.fixture
def ws(small_workspace, tmp_path):
    """A copy of the shared small workspace that a test may change (its scene files stay where they are)."""
    return shutil.copytree(small_workspace, tmp_path / "ws")


def _hits(c, tile_id, k=5):
    r = c.post("/query", data={"tile_id": str(tile_id), "filters": json.dumps({"k": k})})
    assert r.status_code == 200, r.text
    return [(f["properties"]["tile_id"], round(f["properties"]["score"], 5)) for f in r.json()["features"]
            if f["properties"]["role"] == "hit"]


def _api_hits(ws, tile_id, k=5):
    w = Workspace.open(ws)
    try:
        return [(h.tile_id, round(h.score, 5)) for h in w.query(tile_id=tile_id, k=k).hits]
    finally:
        w.close()


def test_a_model_retrained_and_reindexed_is_taken_up_and_so_is_an_index_of_another_model(ws):
    with Catalog(ws / "catalog.sqlite") as cat:
        tid = cat.tiles("t.sensor = 'sentinel1'")[0]["tile_id"]
    mpath = ws / "checkpoints" / "default" / "model.pt"
    old_sum = model_checksum(mpath)
    api = Workspace.open(ws)  # a long-lived Python API workspace follows the same way
    with TestClient(create_app(ws)) as c:
        old = _hits(c, tid)
        assert [(h.tile_id, round(h.score, 5)) for h in api.query(tile_id=tid, k=5).hits] == old

        save_untrained_model(ws, seed=11)  # `rsretrieve train` replaced the model; its index is not built yet
        new_sum = model_checksum(mpath)
        assert new_sum != old_sum
        assert _hits(c, tid) == old  # the old model with its own index, not the new model with the old index
        assert c.get("/health").json()["model_checksum"] == old_sum

        index_workspace(ws)  # publishes the new model's generation, prunes the old one
        h = c.get("/health").json()
        assert h["model_checksum"] == new_sum and h["tiles_indexed"] == 120
        new = _hits(c, tid)
        assert new != old and new == _api_hits(ws, tid)  # what a fresh process answers
        assert [(x.tile_id, round(x.score, 5)) for x in api.query(tile_id=tid, k=5).hits] == new

        save_untrained_model(ws, name="other", seed=12)
        with TestClient(create_app(ws, model="default")) as pinned:  # `serve --model default`
            index_workspace(ws, model_name="other")  # `rsretrieve index --model other`: the index is other's now
            # without --model, the service answers with the index's model, as the API and a fresh `serve` do (it
            # kept answering with the old model from a pruned generation, new tiles never found, health "ok")
            other = _hits(c, tid)
            assert other != new and other == _api_hits(ws, tid)
            h = c.get("/health").json()
            assert (h["model"], h["model_checksum"]) == ("other", model_checksum(ws / "checkpoints" / "other" /
                                                                                  "model.pt"))
            # told its model, the service keeps it: from the generation it holds (the other's index has no room
            # for it), as before
            assert _hits(pinned, tid) == new
            assert pinned.get("/health").json()["model"] == "default"
    api.close()


def test_a_removed_index_folder_leaves_health_and_queries_answering_from_the_snapshot(ws):
    with TestClient(create_app(ws)) as c:
        before = _hits(c, 1)
        shutil.rmtree(ws / "index")
        r = c.get("/health")
        assert r.status_code == 200, r.text
        assert r.json()["tiles_indexed"] == 120
        assert _hits(c, 1) == before
        index_workspace(ws)  # rebuilt: taken up again
        assert c.get("/health").json()["tiles_indexed"] == 120 and _hits(c, 1) == before


def test_an_unexpected_exception_is_a_json_500_in_one_line(small_workspace, monkeypatch):
    import rsretrieve.serve.app as app_module

    def broken(engine, tile_id):
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(app_module, "_preview_png", broken)
    with TestClient(create_app(small_workspace), raise_server_exceptions=False) as c:
        r = c.get("/tiles/1/preview.png")
        assert r.status_code == 500 and r.headers["content-type"] == "application/json"
        assert r.json() == {"detail": "internal error in GET /tiles/1/preview.png: RuntimeError: disk on fire"}
        assert c.get("/health").status_code == 200  # the service goes on


def test_exclude_own_scene_on_an_upload_is_422_not_ignored(client, small_workspace):
    with Catalog(small_workspace / "catalog.sqlite") as cat:
        t = cat.tiles("t.sensor = 'sentinel1'")[0]
        path = next(iter(cat.scene(t["scene_id"])["files"].values()))
    data = open(path, "rb").read()
    flt = {"window": [t["col_off"], t["row_off"], t["width"], t["height"]], "k": 3}
    r = client.post("/query", data={"filters": json.dumps({**flt, "exclude_own_scene": True})},
                    files={"tile": ("scene.tif", data, "image/tiff")})
    assert r.status_code == 422
    assert r.json() == {"detail": "filter 'exclude_own_scene' applies to a tile_id: an uploaded tile is not matched "
                                  "to a catalog scene (query by the tile_id of a catalog tile to leave its scene out)"}
    for extra in ({}, {"exclude_own_scene": False}):  # the same upload without it is searched
        r = client.post("/query", data={"filters": json.dumps({**flt, **extra})},
                        files={"tile": ("scene.tif", data, "image/tiff")})
        assert r.status_code == 200 and [f["properties"]["role"] for f in r.json()["features"]] == [
            "hit", "hit", "hit", "query"]


def test_an_upload_of_no_known_sensor_names_the_sensor_filter_not_the_cli_flag(client, tmp_path):
    import numpy as np

    from tests.conftest import write_tif

    f = write_tif(tmp_path / "B2.tif", np.full((48, 48), 1000, np.uint16))
    r = client.post("/query", files={"tile": ("B2.tif", f.read_bytes(), "image/tiff")})
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert detail.startswith("uploaded tile: 1 band(s) of uint16 fit no registered sensor (")
    assert detail.endswith("); give the filter 'sensor' if it is one") and "--sensor" not in detail


def test_a_preview_of_a_tile_whose_scene_file_is_gone_answers_as_a_query_by_it(tmp_path):
    """Both name the tile and the file with the same one line and status (the preview was a 500 with other words)."""
    from pathlib import Path

    from tests.conftest import make_workspace

    ws = make_workspace(tmp_path, scenes=2, size_m=1440)
    with Catalog(ws / "catalog.sqlite") as cat:
        t = cat.tiles("t.sensor = 'sentinel2'")[0]
        other = cat.tiles("t.sensor = 'sentinel1'")[0]["tile_id"]
        path = cat.scene(t["scene_id"])["files"]["*"]
    Path(path).rename(path + ".moved")
    with TestClient(create_app(ws)) as c:
        preview = c.get(f"/tiles/{t['tile_id']}/preview.png")
        query = c.post("/query", data={"tile_id": str(t["tile_id"]), "filters": "{}"})
        assert preview.status_code == query.status_code == 422
        assert preview.json() == query.json() == {"detail": (
            f"cannot read tile {t['tile_id']} (sentinel2) from its scene file: {path}: No such file or directory "
            f"(moved, deleted or damaged since it was ingested)")}
        assert c.get(f"/tiles/{other}/preview.png").status_code == 200  # the other tiles are untouched


def test_following_the_index_model_keeps_its_model_while_the_index_cannot_be_read_or_its_model_loaded(ws, monkeypatch):
    import rsretrieve.index.query as query_mod
    from rsretrieve.index.store import IndexStore

    with Catalog(ws / "catalog.sqlite") as cat:
        tid = cat.tiles("t.sensor = 'sentinel1'")[0]["tile_id"]
    with TestClient(create_app(ws)) as c:
        ours = _hits(c, tid)
        # a generation pruned between reading `current` and its manifest (a concurrent `rsretrieve index`): the
        # index's model is not known for that moment, which is not "default"'s index
        save_untrained_model(ws, name="other", seed=12)
        index_workspace(ws, model_name="other")
        assert c.get("/health").json()["model"] == "other"
        real = IndexStore.manifest_of
        monkeypatch.setattr(IndexStore, "manifest_of", staticmethod(lambda *a: (_ for _ in ()).throw(
            FileNotFoundError("pruned"))))
        assert c.get("/health").json()["model"] == "other"  # it went back to default's stale snapshot
        monkeypatch.setattr(IndexStore, "manifest_of", staticmethod(real))
        # the index's model retrained since (its index refuses it): tried once, not at every request
        index_workspace(ws, model_name="default")
        assert c.get("/health").json()["model"] == "default"
        save_untrained_model(ws, name="third", seed=13)
        index_workspace(ws, model_name="third")
        save_untrained_model(ws, name="third", seed=14)
        loads = []
        engine_class = query_mod.QueryEngine

        class Counting(engine_class):
            def __init__(self, workspace, model_name="default"):
                loads.append(model_name)
                super().__init__(workspace, model_name)

        monkeypatch.setattr(query_mod, "QueryEngine", Counting)
        for _ in range(3):
            assert c.get("/health").json()["model"] == "default"
        assert loads.count("third") == 1
        index_workspace(ws, model_name="third")  # re-indexed with it: taken up at the next request
        assert c.get("/health").json()["model"] == "third" and loads.count("third") == 2
        assert _hits(c, tid) != ours


def test_a_model_refused_is_tried_again_once_its_permissions_change(ws):
    # a model.pt that could not be read, made readable with chmod (which changes its ctime only), was not tried
    # again until the index changed
    import os

    from rsretrieve.serve.worker import EngineWorker

    worker = EngineWorker(ws, follow=True)
    try:
        path = ws / "checkpoints" / "default" / "model.pt"
        before = worker.call(worker._stamp, "default")
        mtime = path.stat().st_mtime_ns
        os.chmod(path, 0o600)
        os.chmod(path, 0o644)
        assert path.stat().st_mtime_ns == mtime
        assert worker.call(worker._stamp, "default") != before
    finally:
        worker.close()
