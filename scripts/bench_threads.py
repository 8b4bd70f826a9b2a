"""numba's threading layer under the parallel exact scan: OpenMP against TBB, on an idle machine and beside a busy one.

    python scripts/bench_threads.py [--n 1000000] [--nq 200] [--rounds 3] [--sweep 0.0001,0.01,0.1] [--workdir DIR]
        [--no-doc]

Builds the index of ``scripts/bench_search.py`` (its synthetic vectors, one ``IVF,Flat`` segment) and its bbox and
polygon + time filters selecting 0.01%, 1% and 10% of the tiles (``--sweep``), then times single queries
(``Searcher.search`` with a new ``QueryFilter`` each, as the search benchmark does) in child processes, one per
setting:

- ``omp``: ``NUMBA_THREADING_LAYER=omp``, numba's threads on OpenMP;
- ``tbb``: ``NUMBA_THREADING_LAYER=tbb``, on Intel TBB (the ``tbb`` wheel, loaded by ``rsretrieve.index.kernels``);
- ``1 thread``: ``NUMBA_NUM_THREADS=1``, no parallel scan.

Each setting runs idle and ``busy``: beside one process spinning on one core (another user of a shared machine),
started before the child and stopped after it. Children run in rounds, the settings in turn, so the machine's slow
and fast phases fall on all of them; p50 and p99 are over all rounds. Writes the section "threads" of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _benchdoc import publish, scratch_dir  # noqa: E402

SETTINGS = {"omp": {"NUMBA_THREADING_LAYER": "omp"}, "tbb": {"NUMBA_THREADING_LAYER": "tbb"},
            "1 thread": {"NUMBA_NUM_THREADS": "1"}}
SWEEP = "0.0001,0.01,0.1"


def child(index: Path, nq: int, sweep: tuple[float, ...]) -> None:
    """Time the filters' queries in this process; print one JSON line: layer, threads, latencies in us per filter."""
    import bench_search as B
    import numba

    from rsretrieve.index.filters import QueryFilter
    from rsretrieve.index.search import Searcher
    from rsretrieve.index.store import IndexStore

    store = IndexStore.open(index, "bench-model", B.D)
    seg = store.segments[0]
    searcher = Searcher(store)
    searcher.warm_up()
    q = B.noisy_queries(seg.vectors, nq, seed=1)
    out = {}
    for kind, share, flt in B.make_filters(seg, seg.n, sweep=sweep):
        fields = {"bbox": flt.bbox, "polygon": flt.polygon, "start": flt.start, "end": flt.end}
        times = []
        for i in range(B.WARM_UP + nq):
            t = time.perf_counter()
            searcher.search(q[i % nq][None], 10, QueryFilter(**fields))
            times.append(time.perf_counter() - t)
        out[f"{kind} {share:.2%}".replace(".00%", "%")] = [x * 1e6 for x in times[B.WARM_UP:]]
    print(json.dumps({"layer": numba.threading_layer(), "threads": numba.get_num_threads(), "us": out}))


def run_child(index: Path, nq: int, sweep: str, env: dict[str, str], busy: bool) -> dict:
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        got = subprocess.run([sys.executable, __file__, "--child", str(index), "--nq", str(nq), "--sweep", sweep],
                             env={**os.environ, **env}, capture_output=True, text=True, check=True)
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    return json.loads(got.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--nq", type=int, default=200, help="queries per filter and child")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sweep", default=SWEEP, help="shares of the tiles the filters select (comma-separated)")
    ap.add_argument("--workdir", help="where the index is built (kept and reused when given)")
    ap.add_argument("--no-doc", action="store_true", help="print only, do not touch docs/benchmarks.md")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(Path(args.child), args.nq, tuple(float(v) for v in args.sweep.split(",")))
    import bench_search as B

    with scratch_dir(args.workdir, "bench_threads_") as work:
        index = work / "index"
        if not (index / "current").exists():
            B.build(work, B.Synth(args.n, 0), f"IVF{4 * int(np.sqrt(args.n))},Flat")
        lat: dict[tuple[str, bool], dict[str, list[float]]] = {}
        seen: dict[str, tuple[str, int]] = {}
        loads = [os.getloadavg()[0]]
        for r in range(args.rounds):
            for busy in (False, True):
                for name, env in SETTINGS.items():
                    got = run_child(index, args.nq, args.sweep, env, busy)
                    seen[name] = (got["layer"], got["threads"])
                    for f, us in got["us"].items():
                        lat.setdefault((name, busy), {}).setdefault(f, []).extend(us)
                    print(f"round {r + 1} {'busy' if busy else 'idle'} {name}: " + ", ".join(
                        f"{f} p50 {np.percentile(v, 50):.0f} us" for f, v in got["us"].items()), flush=True)
        loads.append(os.getloadavg()[0])
        filters = list(next(iter(lat.values())))
        lines = ["## numba's threading layer under the parallel scan (`scripts/bench_threads.py`)", "",
                 f"{args.n:,} vectors of the search benchmark, its bbox and polygon + time filters; single queries, "
                 f"each with a new `QueryFilter` (the filter's building included), k = 10; {args.nq} queries per "
                 f"filter in each of {args.rounds} rounds, the settings in turn within a round. Settings (layer and "
                 "threads numba reported): " + "; ".join(
                     f"`{n}`: `{' '.join(f'{k}={v}' for k, v in SETTINGS[n].items())}` ({seen[n][0]}, {seen[n][1]} "
                     f"threads)" for n in SETTINGS) + ". `busy`: beside one "
                 f"process spinning on one core. Load average before -> after: {loads[0]:.1f} -> {loads[1]:.1f}.",
                 "", "p50 / p99 in us:", "",
                 "| setting | " + " | ".join(filters) + " |", "|---|" + "---:|" * len(filters)]
        for busy in (False, True):
            for name in SETTINGS:
                cells = [f"{np.percentile(v, 50):.0f} / {np.percentile(v, 99):.0f}"
                         for v in (lat[(name, busy)][f] for f in filters)]
                lines.append(f"| {name}{', busy' if busy else ''} | " + " | ".join(cells) + " |")
        lines += ["", f"Command: `python scripts/bench_threads.py --n {args.n} --rounds {args.rounds} --sweep "
                  f"{args.sweep}`"]
        publish("threads", lines, write=not args.no_doc)


if __name__ == "__main__":
    main()
