"""Ingest is idempotent and resumable: kill -9 at any moment, run again, get the catalog of an uninterrupted run."""

import os
import random
import sqlite3

import pytest

from rsretrieve.data.synthetic import make_archive
from tests.conftest import kill_cli_when, run_cli


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    out = tmp_path_factory.mktemp("archive")
    make_archive(out, scenes=12, sensors=("sentinel1", "sentinel2", "enmap"), seed=3, size_m=4800)
    return out


def dump(ws) -> dict:
    """The catalog's content without row ids or ingest times."""
    con = sqlite3.connect(ws / "catalog.sqlite")
    scenes = sorted(con.execute("SELECT key, fingerprint, sensor, layout, acquired, west, south, east, north,"
                                " valid_fraction, cloud_fraction, n_tiles FROM scenes"))
    tiles = sorted(con.execute("SELECT s.key, t.cell_id, t.col_off, t.row_off, t.width, t.height, t.coverage,"
                               " t.valid_fraction, t.cloud_fraction, t.footprint FROM tiles t JOIN scenes s"
                               " ON s.scene_id = t.scene_id"))
    rtree = con.execute("SELECT COUNT(*) FROM tile_rtree").fetchone()[0]
    labels = sorted(con.execute("SELECT * FROM cell_labels"))
    orphans = con.execute("SELECT COUNT(*) FROM tile_rtree WHERE tile_id NOT IN (SELECT tile_id FROM tiles)"
                          ).fetchone()[0]
    con.close()
    return {"scenes": scenes, "tiles": tiles, "rtree": rtree, "labels": labels, "orphans": orphans}


def test_ingest_twice_adds_nothing(archive, tmp_path):
    ws = tmp_path / "ws"
    r1 = run_cli("ingest", archive, "-w", ws)
    assert r1.returncode == 0, r1.stderr
    first = dump(ws)
    r2 = run_cli("ingest", archive, "-w", ws)
    assert r2.returncode == 0 and "0 scenes added, 0 replaced, 48 already in the catalog" in r2.stdout
    assert dump(ws) == first
    assert len(first["scenes"]) == 36 and first["rtree"] >= len(first["tiles"]) > 0


def test_a_changed_file_is_re_ingested_in_place(archive, tmp_path):
    ws = tmp_path / "ws"
    run_cli("ingest", archive, "-w", ws)
    f = sorted((archive / "sentinel1").glob("*.tif"))[0]
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    r = run_cli("ingest", archive, "-w", ws)
    assert "0 scenes added, 1 replaced, 47 already in the catalog" in r.stdout
    assert len(dump(ws)["scenes"]) == 36


def _scenes_committed(ws) -> int:
    """Scenes in the catalog as a reader sees them while an ingest writes it (0 before it exists)."""
    try:
        con = sqlite3.connect(f"file:{ws / 'catalog.sqlite'}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute("SELECT COUNT(*) FROM scenes").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:  # not created yet, or its schema not yet committed
        return 0


def test_kill_9_at_random_moments_then_resume_equals_uninterrupted(archive, tmp_path):
    ref = tmp_path / "ref"
    assert run_cli("ingest", archive, "-w", ref).returncode == 0
    expected = dump(ref)
    total = len(expected["scenes"])
    ws = tmp_path / "ws"
    rng = random.Random(7)
    kills = 0
    for _ in range(3):
        # kill at a random moment after a random number of further scenes are committed: inside a scene's read,
        # tiling or transaction (a time fraction of the first run is no guide: resumed runs have less to do)
        target = min(_scenes_committed(ws) + rng.randint(1, 8), total - 1)
        kills += kill_cli_when(["ingest", archive, "-w", ws], lambda: _scenes_committed(ws) >= target,
                               delay=rng.uniform(0.0, 0.15))
        partial = dump(ws)
        assert partial["orphans"] == 0  # never a tile footprint without its tile
        assert all(s in expected["scenes"] for s in partial["scenes"])  # only whole scenes
    assert kills == 3
    r = run_cli("ingest", archive, "-w", ws)
    assert r.returncode == 0, r.stderr
    assert dump(ws) == expected
