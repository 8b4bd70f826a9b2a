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
    listed = json.loads(capsys.readouterr().out)["scene_list"]
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


def test_a_name_is_a_key_before_a_band_file_before_a_companion_and_never_a_guess(tmp_path, monkeypatch):
    """An earlier version's scene keyed ``pc/TCI.tif`` beside the item whose companion that file is now: ``--remove
    TCI.tif`` (relative) took out the item, the first scene with that file anywhere. A key comes first, then band
    files, then companions; two scenes at the same level are refused."""
    import pytest

    from rsretrieve.cli import UsageError, _scene_named

    (tmp_path / "pc").mkdir()
    tci, b1 = str(tmp_path / "pc" / "TCI.tif"), str(tmp_path / "pc" / "B01.tif")
    item = {"key": str(tmp_path / "pc" / "item.json"), "files": {"B01": b1}, "aux": {"TCI": tci}}
    old = {"key": tci, "files": {"*": tci}, "aux": {}}
    twin = {"key": str(tmp_path / "pc") + os.sep, "files": {"B01": b1}, "aux": {}}
    monkeypatch.chdir(tmp_path / "pc")
    assert _scene_named("TCI.tif", [item, old]) is old and _scene_named(tci, [item, old]) is old
    assert _scene_named("B01.tif", [item, old]) is item
    monkeypatch.chdir(tmp_path)
    assert _scene_named("pc", [item, twin]) is twin  # a folder's key without its trailing separator
    with pytest.raises(UsageError, match=r"^--remove pc/B01.tif: a file of several catalogued scenes \("):
        _scene_named("pc/B01.tif", [item, twin])


def test_remove_given_twice_takes_out_the_scenes_of_both(tmp_path, capsys):
    ws = make_workspace(tmp_path, index=False)
    with Catalog(ws / "catalog.sqlite") as cat:
        keys = sorted(s["key"] for s in cat.scenes())
    capsys.readouterr()
    # argparse kept only the last --remove: the first scene stayed, and the run said nothing of it
    assert main(["catalog", "--workspace", str(ws), "--remove", keys[0], "--remove", keys[1], "--json"]) == 0
    assert sorted(r["key"] for r in json.loads(capsys.readouterr().out)["removed"]) == keys[:2]
    with Catalog(ws / "catalog.sqlite") as cat:
        assert sorted(s["key"] for s in cat.scenes()) == keys[2:]


def test_an_empty_or_foreign_database_is_not_a_workspace_and_is_left_as_it_was(tmp_path, capsys):
    import sqlite3

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "catalog.sqlite").write_bytes(b"")
    con = sqlite3.connect(tmp_path / "foreign.sqlite")
    con.execute("CREATE TABLE foo (x)")
    con.commit()
    con.close()
    (tmp_path / "other").mkdir()
    os.replace(tmp_path / "foreign.sqlite", tmp_path / "other" / "catalog.sqlite")
    for ws in (tmp_path / "empty", tmp_path / "other"):
        before = (ws / "catalog.sqlite").read_bytes()
        capsys.readouterr()
        # a TypeError traceback (no tile size), after rsretrieve's tables were written into the file
        assert main(["catalog", "--workspace", str(ws)]) == 2
        assert capsys.readouterr().err == (
            f"rsretrieve catalog: error: {ws / 'catalog.sqlite'} is not an rsretrieve catalog: an empty file or "
            "another program's SQLite database (it has no meta table); run `rsretrieve ingest` into a new "
            "workspace\n")
        assert (ws / "catalog.sqlite").read_bytes() == before
