"""A query with a large k: each hit's scene is read from the catalog once per scene, not once per hit (3 s of a
`query -k 100000` at a million tiles), and a hit's dict is built without asdict's deep copy (5 s there)."""

from dataclasses import asdict

from rsretrieve.workspace import Workspace


def test_a_query_reads_each_scene_of_its_hits_once(small_workspace):
    ws = Workspace.open(small_workspace)
    try:
        engine = ws.engine()
        calls = []
        real = engine.catalog.scene
        engine.catalog.scene = lambda sid: calls.append(sid) or real(sid)
        try:
            res = ws.query(tile_id=3, k=10_000)
        finally:
            del engine.catalog.scene
        scenes = {h.scene_id for h in res.hits}
        assert len(res.hits) > 10 * len(scenes)  # many hits per scene
        # each hit's scene once, and the query tile's own scene once more (read to cut the query tile)
        assert sorted(calls) == sorted([*scenes, res.query.scene_id])
        for h in res.hits:  # and each hit still carries its own scene's key and date
            s = real(h.scene_id)
            assert (h.scene, h.acquired) == (s["key"], s["acquired"])
    finally:
        ws.close()


def test_hit_dicts_are_what_asdict_gave_keys_in_order(small_workspace):
    ws = Workspace.open(small_workspace)
    try:
        res = ws.query(tile_id=3, k=50)
    finally:
        ws.close()
    for h in res.hits:
        d = h.to_dict()
        assert d == asdict(h) and list(d) == list(asdict(h))
    assert [h["tile_id"] for h in res.to_dict()["hits"]] == [h.tile_id for h in res.hits]
