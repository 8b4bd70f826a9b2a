"""``rsretrieve catalog --scenes`` lists the scenes; ``--remove SCENE...`` takes scenes out by key or by one of their
files (there was only ``Catalog.remove_scene`` in Python), all named ones or none, and the next ``index`` drops
their vectors."""

import json
import os

from rsretrieve.cli import main
from rsretrieve.data.catalog import Catalog
from tests.conftest import make_workspace


def test_scenes_are_listed_and_removed_by_key_or_file_and_the_index_drops_them(tmp_path, capsys, monkeypatch):
    ws = make_workspace(tmp_path)
    capsys.readouterr()
    assert main(["catalog", "--workspace", str(ws), "--scenes", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["scenes"]
    with Catalog(ws / "catalog.sqlite") as cat:
        scenes = sorted(cat.scenes(), key=lambda s: s["key"])
    assert [s["key"] for s in listed] == [s["key"] for s in scenes] and len(scenes) >= 3
    by_key, by_file = scenes[0], scenes[1]
    f = next(iter(by_file["files"].values()))
    monkeypatch.chdir(os.path.dirname(f))  # a file named by a relative path
    before = (ws / "catalog.sqlite").read_bytes()
    # an unknown name among known ones: exit 2, and nothing removed
    assert main(["catalog", "--workspace", str(ws), "--remove", by_key["key"], "nope.tif"]) == 2
    assert capsys.readouterr().err.strip() == (
        "rsretrieve catalog: error: --remove nope.tif: no catalogued scene has this key or file (`rsretrieve catalog "
        "--workspace WS --scenes` lists them); nothing was removed")
    assert (ws / "catalog.sqlite").read_bytes() == before
    assert main(["catalog", "--workspace", str(ws), "--remove", by_key["key"], os.path.basename(f),
                 by_key["key"]]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == [f"removed: {s['key']}: its {s['n_tiles']} {s['sensor']} tiles are taken out of the catalog (the "
                       "next `rsretrieve index` drops their vectors; an ingest of its path adds it again)"
                       for s in (by_key, by_file)]
    with Catalog(ws / "catalog.sqlite") as cat:
        assert sorted(s["key"] for s in cat.scenes()) == [s["key"] for s in scenes[2:]]
    assert main(["index", "--workspace", str(ws)]) == 0
    n = by_key["n_tiles"] + by_file["n_tiles"]
    assert f"index: 0 tiles embedded and added, {n} removed;" in capsys.readouterr().out
    assert main(["ingest", os.path.dirname(f), "--workspace", str(ws)]) == 0  # its path ingested again: back
    with Catalog(ws / "catalog.sqlite") as cat:
        assert by_file["key"] in {s["key"] for s in cat.scenes()}
