"""`rsretrieve index` beside other commands on one workspace: a second index run while one is running, and an ingest
that changes the catalog while an index run reads it.

The first run is held at a deterministic point (inside its progress callback, or its first scene read) by a child
process that waits on its stdin, so the other command runs exactly while it is in the middle of its work.
"""

import shutil
import subprocess
import sys

import numpy as np

from rsretrieve.data.catalog import Catalog
from rsretrieve.index.indexer import index_workspace
from rsretrieve.index.store import IndexStore
from rsretrieve.workspace import Workspace
from tests.conftest import ROOT, make_workspace, run_cli, save_untrained_model

# index WS with model m2, 100 rows a segment; after the first scene it says "held" and waits for a line on stdin
_HELD_RUN = """
import sys
from rsretrieve.index.indexer import index_workspace
held = []
def progress(done, total, key):
    if not held:
        held.append(1)
        print("held", flush=True)
        sys.stdin.readline()
out = index_workspace(sys.argv[1], model_name="m2", segment_rows=100, progress=progress)
print("done", out["total"], flush=True)
"""

# `rsretrieve index WS`, where the first scene read first re-ingests every scene of ARCHIVE (files touched)
_INGEST_DURING_INDEX = """
import os, pathlib, subprocess, sys
import rsretrieve.index.indexer as indexer
from rsretrieve.cli import main
ws, archive = sys.argv[1], sys.argv[2]
read = indexer.read_scene_tiles
def read_after_ingest(*args, **kwargs):
    if not os.environ.get("INGESTED"):
        os.environ["INGESTED"] = "1"
        for f in pathlib.Path(archive).rglob("*"):
            if f.is_file() and "truth" not in f.parts:
                os.utime(f)
        r = subprocess.run([sys.executable, "-m", "rsretrieve.cli", "ingest", archive, "-w", ws])
        assert r.returncode == 0
    return read(*args, **kwargs)
indexer.read_scene_tiles = read_after_ingest
sys.exit(main(["index", "-w", ws, "--segment-rows", "100"]))
"""


def _vectors(ws) -> tuple[np.ndarray, np.ndarray]:
    ids, vecs = IndexStore.open(ws / "index").load_vectors()
    order = np.argsort(ids)
    return ids[order], vecs[order]


def _catalog_ids(ws) -> list[int]:
    with Catalog(ws / "catalog.sqlite") as cat:
        return sorted(t["tile_id"] for t in cat.tiles())


def test_a_second_index_run_is_refused_while_one_runs_and_the_first_completes(tmp_path):
    ws = make_workspace(tmp_path, scenes=2, size_m=1920)  # indexed with model default
    save_untrained_model(ws, name="m2", seed=9)
    ref = tmp_path / "ref"
    shutil.copytree(ws, ref)
    index_workspace(ref, model_name="m2", segment_rows=100)  # what the held run must end with
    before = [h.tile_id for h in Workspace.open(ws).query(tile_id=2, k=5).hits]
    published = IndexStore.current_generation(ws / "index")
    child = subprocess.Popen([sys.executable, "-c", _HELD_RUN, str(ws)], cwd=ROOT, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held", child.stderr.read()
        staged = [g for g in (ws / "index").glob("gen-*") if g.name != published]
        assert len(staged) == 1  # the m2 generation being built, unpublished
        for extra in ([], ["--model", "m2"]):
            r = run_cli("index", "-w", ws, *extra)
            assert r.returncode == 2 and r.stdout == "", r.stderr
            assert r.stderr == (f"rsretrieve index: error: another `rsretrieve index` (process {child.pid}) is "
                                f"updating the index in {ws / 'index'}: wait for it to finish, then run this command "
                                "again (queries keep answering from the published index meanwhile)\n")
        # nothing of either run was undone: the published index answers as before, the staged one is still there
        assert IndexStore.current_generation(ws / "index") == published and staged[0].is_dir()
        assert [h.tile_id for h in Workspace.open(ws).query(tile_id=2, k=5).hits] == before
        out, err = child.communicate("go\n", timeout=300)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0 and out.split()[0] == "done", err
    ids, vecs = _vectors(ws)
    ref_ids, ref_vecs = _vectors(ref)
    assert np.array_equal(ids, ref_ids) and np.allclose(vecs, ref_vecs, atol=1e-6)  # as if run alone
    assert IndexStore.open(ws / "index").model_checksum == IndexStore.open(ref / "index").model_checksum
    assert run_cli("index", "-w", ws, "--model", "m2").returncode == 0  # the lock went with its process


def test_an_ingest_during_an_index_run_is_reported_and_the_next_run_catches_up(tmp_path):
    ws = make_workspace(tmp_path, scenes=2, size_m=1920, index=False)
    save_untrained_model(ws)
    listed = _catalog_ids(ws)
    r = subprocess.run([sys.executable, "-c", _INGEST_DURING_INDEX, str(ws), str(tmp_path / "archive")], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    # the scenes replaced meanwhile were skipped (no "no scene with id" traceback), and the run says so
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        "warning: the catalog changed while this run read it (an ingest ran meanwhile): run `rsretrieve index` "
        "again to index the scenes it added or replaced")
    now = _catalog_ids(ws)
    assert set(now).isdisjoint(listed)  # every scene was re-ingested under new tile ids
    out = index_workspace(ws)
    assert not out["catalog_changed"]
    ids, vecs = _vectors(ws)
    assert ids.tolist() == now
    fresh = tmp_path / "fresh"  # the same catalog indexed in one uninterrupted run
    shutil.copytree(ws, fresh, ignore=shutil.ignore_patterns("index"))
    index_workspace(fresh)
    fresh_ids, fresh_vecs = _vectors(fresh)
    assert np.array_equal(ids, fresh_ids) and np.allclose(vecs, fresh_vecs, atol=1e-6)
