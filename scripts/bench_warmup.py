"""What the filtered-search kernels cost before the first query: numba compiling them, and loading them once cached.

    python scripts/bench_warmup.py [--rows 200000] [--no-doc]

Builds one index segment of synthetic vectors (d = 128, with the ANN index and uint8 codes that ``rsretrieve index``
writes) in a temporary folder, then times ``Searcher.warm_up()`` (what ``rsretrieve index`` and ``rsretrieve serve``
call) and the first filtered queries after it, each in a fresh Python process with an empty numba cache of its own
(``NUMBA_CACHE_DIR``): compiling with numba's default threads, loading the cache that run wrote, and compiling with
``NUMBA_NUM_THREADS=1`` (the multi-threaded scan is then neither compiled nor used). Writes the section "warmup" of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _benchdoc import publish  # noqa: E402

D = 128

#: run in a child process: open the index, time warm_up and the first queries, print one JSON line
_CHILD = r"""
import json, sys, time
from datetime import datetime, timezone
t0 = time.perf_counter()
import numpy as np
from rsretrieve.index import kernels
from rsretrieve.index.filters import QueryFilter
from rsretrieve.index.search import Searcher
from rsretrieve.index.store import IndexStore
t_import = time.perf_counter() - t0
store = IndexStore.open(sys.argv[1], "bench-warmup", 128)
s = Searcher(store)
warm = s.warm_up()
seg = store.segments[0]
q = np.array(seg.vectors[:1])  # writable, as a model's output (a read-only array is another numba signature)
start = datetime(2018, 1, 1, tzinfo=timezone.utc)
out = {"import_s": t_import, "warm_up_s": warm, "threads": kernels.threads()}
for name, flt in (("bbox", QueryFilter(bbox=(0.0, 40.0, 3.0, 43.0), start=start)),
                  ("polygon", QueryFilter(polygon=__import__("shapely").geometry.Polygon(
                      [(0, 40), (3, 40.5), (2.5, 43), (0.5, 42)]), start=start))):
    t = time.perf_counter()
    res = s.search(q, 10, flt)
    out[name + "_first_ms"] = 1e3 * (time.perf_counter() - t)
    out[name + "_plan"] = res.plan["mode"]
    t = time.perf_counter()
    s.search(q, 10, flt)
    out[name + "_second_ms"] = 1e3 * (time.perf_counter() - t)
print(json.dumps(out))
"""


def build(root: Path, rows: int) -> Path:
    """One segment of ``rows`` clustered unit vectors over a 10 x 10 degree area, 2017-2024, 2 sensors."""
    import numpy as np

    from rsretrieve.index.store import IndexStore

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((256, D)).astype(np.float32)
    x = centres[rng.integers(0, 256, rows)] + 0.5 * rng.standard_normal((rows, D)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    t0 = int(time.mktime((2017, 1, 1, 0, 0, 0, 0, 0, 0)))
    store = IndexStore.create(root / "index", D, "bench-warmup")
    cell = rng.integers(0, rows // 4, rows)
    store.add_segment(x, np.arange(rows), rng.uniform(-5, 5, rows), rng.uniform(38, 48, rows),
                      rng.integers(t0, t0 + 8 * 365 * 86400, rows), np.array(["s1", "s2"])[rng.integers(0, 2, rows)],
                      cell.astype(str), cell // 64)
    return root / "index"


def child(index: Path, cache: Path, threads: int | None) -> dict:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)}
    env.pop("NUMBA_NUM_THREADS", None)
    if threads is not None:
        env["NUMBA_NUM_THREADS"] = str(threads)
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _CHILD, str(index)], env=env, capture_output=True, text=True,
                         check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    got["process_s"] = time.perf_counter() - t
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--no-doc", action="store_true", help="print only, do not touch docs/benchmarks.md")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="rsretrieve-warmup-") as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        index = build(tmp, args.rows)
        build_s = time.perf_counter() - t
        runs = []
        for label, cache, threads in (("compiling (empty cache), numba's default threads", "a", None),
                                      ("loading the cache the run above wrote", "a", None),
                                      ("compiling (empty cache), NUMBA_NUM_THREADS=1", "b", 1)):
            got = child(index, tmp / f"cache-{cache}", threads)
            print(label, got, flush=True)
            runs.append((label, got))
    lines = ["## Kernel warm-up (`scripts/bench_warmup.py`)", "",
             f"`Searcher.warm_up()` (run by `rsretrieve index` after writing the index and by `rsretrieve serve` at "
             f"start) on one segment of {args.rows:,} vectors (d = {D}; built in {build_s:.0f} s), each row a fresh "
             f"process with its own numba cache folder; the first and second filtered query after it (one bbox + "
             f"time and one polygon + time query, exact scans), with a writable query vector as a model's output "
             f"is.", "",
             "| run | numba threads | import (s) | warm_up (s) | first bbox query (ms) | second (ms) "
             "| first polygon query (ms) | second (ms) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for label, g in runs:
        lines.append(f"| {label} | {g['threads']} | {g['import_s']:.1f} | {g['warm_up_s']:.1f} | "
                     f"{g['bbox_first_ms']:.2f} | {g['bbox_second_ms']:.2f} | {g['polygon_first_ms']:.2f} | "
                     f"{g['polygon_second_ms']:.2f} |")
    lines += ["", f"Load average at the end: {os.getloadavg()[0]:.2f}."]
    publish("warmup", lines, write=not args.no_doc)


if __name__ == "__main__":
    main()
