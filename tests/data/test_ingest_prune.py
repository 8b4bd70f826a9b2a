"""``ingest --prune``: catalogued scenes under the run's paths whose band files are gone (deleted or moved from the
archive) are taken out, each with a line; nothing else is touched, nothing without ``--prune``, nothing outside the
paths, and nothing while discover could not read part of them."""

import os
import sqlite3

from rsretrieve.cli import main
from rsretrieve.data import ingest as ingest_mod
from rsretrieve.data.catalog import Catalog
from rsretrieve.data.ingest import ingest
from tests.conftest import make_workspace, s1_scene, save_untrained_model

ORIGIN = (600_000.0, 5_400_000.0)


def _scene(folder, day):
    return s1_scene(folder / f"S1A_IW_GRDH_1SDV_202307{day:02d}T053000_dB.tif", seed=day, crs="EPSG:32632",
                    origin=ORIGIN)


def _tiles(db):
    con = sqlite3.connect(db)
    rows = {k: n for k, n in con.execute("SELECT key, n_tiles FROM scenes")}
    ids = sorted(r[0] for r in con.execute("SELECT tile_id FROM tiles"))
    con.close()
    return rows, ids


def test_scenes_whose_files_are_gone_are_pruned_with_a_line(tmp_path, capsys):
    a, b, c = _scene(tmp_path / "archive", 5), _scene(tmp_path / "archive", 6), _scene(tmp_path / "elsewhere", 7)
    ws = tmp_path / "ws"
    assert main(["ingest", str(tmp_path / "archive"), str(c), "--workspace", str(ws)]) == 0
    before, ids = _tiles(ws / "catalog.sqlite")
    assert len(before) == 3
    a.unlink()
    c.unlink()
    capsys.readouterr()
    # without --prune: kept, as before
    assert main(["ingest", str(tmp_path / "archive"), "--workspace", str(ws)]) == 0
    assert _tiles(ws / "catalog.sqlite") == (before, ids)
    capsys.readouterr()
    assert main(["ingest", str(tmp_path / "archive"), "--workspace", str(ws), "--prune"]) == 0
    out, err = capsys.readouterr()
    assert "; 0 rejected; 1 pruned\n" in out
    assert err.splitlines() == [f"pruned: {a}: its file {a.name} is gone: its {before[str(a)]} tiles are removed from "
                                "the catalog (the next `rsretrieve index` drops their vectors)"]
    after, after_ids = _tiles(ws / "catalog.sqlite")
    # the scene outside the run's paths stays, though its file is gone too; the other keeps its tile ids
    assert after == {k: n for k, n in before.items() if k != str(a)} and str(c) in after
    assert set(after_ids) < set(ids) and len(after_ids) == len(ids) - before[str(a)]
    assert str(b) in after


def test_nothing_is_pruned_while_part_of_the_paths_could_not_be_read(tmp_path, monkeypatch):
    a = _scene(tmp_path / "archive", 5)
    db = tmp_path / "ws" / "catalog.sqlite"
    with Catalog(db, tile_m=480) as cat:
        assert ingest([tmp_path / "archive"], cat).added == 1
    a.unlink()
    real = ingest_mod.discover
    monkeypatch.setattr(ingest_mod, "discover", lambda paths: (lambda r: (r[0], r[1] + [ingest_mod.Problem(
        str(tmp_path / "archive" / "x"), "cannot read folder: Permission denied")]))(real(paths)))
    with Catalog(db, tile_m=480) as cat:
        report = ingest([tmp_path / "archive"], cat, prune=True)
        assert report.pruned == [] and len(cat.scenes()) == 1
    monkeypatch.setattr(ingest_mod, "discover", real)
    with Catalog(db, tile_m=480) as cat:
        report = ingest([tmp_path / "archive"], cat, prune=True)
        assert [p.path for p in report.pruned] == [str(a)] and cat.scenes() == []
        assert report.to_dict()["pruned"] == [{"path": str(a), "reason": report.pruned[0].reason}]


def test_index_names_a_gone_file_and_the_way_out(tmp_path, capsys):
    """A scene file deleted from the archive stopped `rsretrieve index` with GDAL's message alone; it now says how
    to take such scenes out, and after `ingest --prune` the index is built from the rest."""
    ws = make_workspace(tmp_path, index=False)
    save_untrained_model(ws)
    with Catalog(ws / "catalog.sqlite") as cat:
        gone = sorted(cat.scenes(), key=lambda s: s["key"])[0]
    (f,) = set(gone["files"].values())
    os.unlink(f)
    capsys.readouterr()
    assert main(["index", "--workspace", str(ws)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rsretrieve index: error: {f}: No such file or directory: the scene {gone['key']} is "
                          "catalogued but its file is gone (deleted or moved): put it back, or take such scenes out "
                          f"with `rsretrieve ingest ARCHIVE --workspace {ws} --prune`")
    assert main(["ingest", str(tmp_path / "archive"), "--workspace", str(ws), "--prune"]) == 0
    assert main(["index", "--workspace", str(ws)]) == 0
    out = capsys.readouterr().out
    with Catalog(ws / "catalog.sqlite") as cat:
        n = len(cat.tiles(columns=["tile_id"]))
    assert f"index: {n} tiles embedded and added, 0 removed; {n} tiles indexed" in out
