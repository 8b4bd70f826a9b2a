"""Index update run as a subprocess by test_index_store.py and killed with SIGKILL at random moments.

Usage: python _kill_writer.py INDEX_DIR MODEL_CHECKSUM. Adds the tiles of ``make_tiles(N_TILES, seed=3)`` not yet
indexed, 400 per segment, then compacts and publishes. It prints a line before each step ("ready" once imports are
done, "add", "compact", "publish", "done") so that the test can kill it inside any step.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from conftest import DIM, make_tiles  # noqa: E402

from rsretrieve.index.store import IndexStore  # noqa: E402

N_TILES = 4000


def main(root: str, model: str) -> None:
    tiles = make_tiles(N_TILES, seed=3)
    store = IndexStore.open_for_update(root, DIM, model)
    print("ready", flush=True)
    step = 0
    while True:
        missing = np.flatnonzero(~np.isin(tiles["tile_ids"], store.indexed_tile_ids()))
        if missing.size == 0:
            break
        batch = missing[:400]
        print("add", flush=True)
        store.add_segment(**{k: v[batch] for k, v in tiles.items()}, factory="IVF8,Flat" if step % 3 == 0 else None)
        step += 1
    if len(store.segments) > 1:
        print("compact", flush=True)
        store.compact(factory=None)
    if not store.published:
        print("publish", flush=True)
        store.publish()
    print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
