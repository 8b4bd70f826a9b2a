"""A prune (the end of every `rsretrieve index` run) killed while it deletes an old generation: later updates, of
any model, and readers are not stopped by what it left.

The kill lands at a deterministic point: a child process prunes with ``shutil.rmtree`` replaced by one that deletes
the generation's manifest first and then SIGKILLs its own process (rmtree's order is the directory's).
"""

import subprocess
import sys
from pathlib import Path

import numpy as np

from rsretrieve.index.store import IndexStore
from tests.index.conftest import DIM, make_tiles, subset

_PRUNE_KILLED_IN_RMTREE = """
import os, signal, sys
from pathlib import Path
import rsretrieve.index.store as store
def rmtree_killed(path, *args, **kwargs):
    (Path(path) / "manifest.json").unlink()
    os.kill(os.getpid(), signal.SIGKILL)
store.shutil.rmtree = rmtree_killed
store.IndexStore.prune(sys.argv[1], keep=0)
"""


def test_a_prune_killed_inside_rmtree_stops_no_later_update(tmp_path):
    root = tmp_path / "idx"
    tiles = make_tiles(600, seed=4)
    old = IndexStore.create(root, DIM, "model-a")
    old.add_segment(**subset(tiles, slice(0, 600)), factory=None)
    new = IndexStore.open_for_update(root, DIM, "model-b")
    new.add_segment(**subset(tiles, slice(0, 600)), factory=None)
    new.publish()
    r = subprocess.run([sys.executable, "-c", _PRUNE_KILLED_IN_RMTREE, str(root)], cwd=Path(__file__).parents[2],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == -9, r.stderr
    # readers get the published index; an update of the published model, and one of the old model (switching
    # back), both open (the latter used to fail: "index generation ... has no manifest.json")
    st = IndexStore.open(root, expect_model_checksum="model-b")
    assert st.ntotal == 600
    assert IndexStore.open_for_update(root, DIM, "model-b").generation == new.generation
    back = IndexStore.open_for_update(root, DIM, "model-a")
    assert back.generation not in (old.generation, new.generation) and back.ntotal == 0
    back.add_segment(**subset(tiles, slice(0, 600)), factory=None)
    back.publish()
    # the next prune removes what the killed one left, and the old snapshot of model-b still searches
    IndexStore.prune(root, keep=0)
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".lock")) == ["current", back.generation]
    ids, vecs = IndexStore.open(root, expect_model_checksum="model-a").load_vectors()
    assert np.array_equal(np.sort(ids), np.sort(tiles["tile_ids"]))
    assert st.get_vectors(ids[:3]).shape == (3, DIM)
