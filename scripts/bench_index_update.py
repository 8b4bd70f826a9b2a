"""An index update that adds a few scenes to a large index: merging everything against size-tiered merging.

    python scripts/bench_index_update.py [--n 1000000] [--new 50000] [--nq 200] [--workdir DIR] [--no-doc]

One index of ``--n`` synthetic vectors of ``scripts/bench_search.py`` in one segment (``factory="auto"``: IVF-Flat
from 1M rows), copied twice. Into each copy the same ``--new`` tiles (about one Sentinel-2 granule of 480 m tiles) are
added as a new segment, the step ``rsretrieve index`` takes, then the segments are merged as the update ends:

- ``merge all``: every segment rewritten as one (re-sorted, its ANN index retrained), what each update did before;
- ``size-tiered``: ``IndexStore.merge_small``, what it does now (``rsretrieve.index.store.merge_plan``).

Then single queries (the bench's 1% bbox and polygon + time filters, and unfiltered) on the two results, one index
after the other query by query: the price of the extra segment. Writes the section "index_update" of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from shapely.geometry import box

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_search as B  # noqa: E402
from _benchdoc import publish, scratch_dir  # noqa: E402

from rsretrieve.index.filters import QueryFilter  # noqa: E402
from rsretrieve.index.search import Searcher  # noqa: E402
from rsretrieve.index.store import MERGE_RATIO, IndexStore  # noqa: E402


def _add(store: IndexStore, cols: dict) -> float:
    t = time.perf_counter()
    store.add_segment(**cols, factory="auto")
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="vectors in the index before the update")
    ap.add_argument("--new", type=int, default=50_000, help="vectors the update adds")
    ap.add_argument("--nq", type=int, default=200, help="queries per filter")
    ap.add_argument("--workdir", help="where the indexes are built (default: a temp dir, removed)")
    ap.add_argument("--no-doc", action="store_true", help="print only, do not touch docs/benchmarks.md")
    args = ap.parse_args()
    with scratch_dir(args.workdir, "bench_index_update_") as work:
        synth = B.Synth(args.n + args.new, 0)
        t = time.perf_counter()
        base = IndexStore.create(work / "base", B.D, "bench-model")
        for a in range(0, args.n, 1 << 20):
            c = synth.chunk(a, min(args.n, a + (1 << 20)))
            base.add_segment(c.pop("vectors"), **c, factory=None)
        base.compact("auto")
        build_s = time.perf_counter() - t
        new = synth.chunk(args.n, args.n + args.new)
        rows = {}
        for name, merge in (("merge all", lambda st: st.compact("auto")), ("size-tiered", lambda st: st.merge_small(
                "auto"))):
            root = work / name.replace(" ", "_")
            shutil.copytree(work / "base", root)
            st = IndexStore.open(root)
            add_s = _add(st, new)
            t = time.perf_counter()
            merge(st)
            merge_s = time.perf_counter() - t
            st = IndexStore.open(root)
            rows[name] = {"add": add_s, "merge": merge_s, "segments": [s.n for s in st.segments],
                          "ann": [(s.ann_info or {}).get("factory") for s in st.segments], "store": st}
        searchers = {name: Searcher(r["store"]) for name, r in rows.items()}
        for s in searchers.values():
            s.warm_up()
        one = rows["merge all"]["store"].segments[0]
        q = B.noisy_queries(one.vectors, args.nq, seed=1)
        filters = [("unfiltered", None)] + [(f"{kind}+time 1%", flt) for kind, _, flt in
                                            B.make_filters(one, one.n, sweep=(0.01,))]
        whole = rows["merge all"]["store"].segments[0]  # every vector, for the brute-force top-10
        lat, rec = {}, {}
        for label, flt in filters:
            fields = None if flt is None else {"bbox": flt.bbox, "polygon": flt.polygon, "start": flt.start,
                                               "end": flt.end}
            times = {name: [] for name in searchers}
            found = {name: [] for name in searchers}
            for i in range(-B.WARM_UP, args.nq):  # untimed calls first, then query i of q
                for name, s in searchers.items():  # one index after the other, query by query
                    t = time.perf_counter()
                    got = s.search(q[i][None], 10, None if fields is None else QueryFilter(**fields))
                    if i >= 0:
                        times[name].append(time.perf_counter() - t)
                        found[name].append(got.tile_ids[0])
            lat[label] = {name: np.array(v) * 1e3 for name, v in times.items()}
            match = np.ones(whole.n, bool) if flt is None else (
                (whole.time >= int(flt.start.timestamp())) & (whole.time <= int(flt.end.timestamp()))
                & B._inside(flt.polygon if flt.polygon is not None else box(*flt.bbox), whole.lon, whole.lat))
            rows_in = np.flatnonzero(match)
            truth = rows_in[np.argsort(-(q @ np.asarray(whole.vectors[rows_in]).T), axis=1)[:, :10]]
            truth = whole.tile_id[truth]
            rec[label] = {name: B.recall(f, truth) for name, f in found.items()}
        load = os.getloadavg()[0]
        a, b = rows["merge all"], rows["size-tiered"]
        lines = ["## Index update: a few scenes added to a large index (`scripts/bench_index_update.py`)", "",
                 f"An index of {args.n:,} vectors (d = {B.D}, the search benchmark's synthetic tiles) in one segment "
                 f"(built in {build_s:.0f} s); the update adds {args.new:,} vectors (about one Sentinel-2 granule of "
                 "480 m tiles) as a new segment, then merges, on two copies of the index. `merge all` rewrites every "
                 "segment as one, what each update did before; `size-tiered` merges only segments under "
                 f"{MERGE_RATIO}x smaller than the next (`IndexStore.merge_small`), what `rsretrieve index` does now. "
                 f"1-minute load average at the end: {load:.1f}.", "",
                 "| policy | add the new segment s | merge s | update total s | segments after (rows) | ANN |",
                 "|---|---:|---:|---:|---|---|"]
        for name, r in rows.items():
            lines.append(f"| {name} | {r['add']:.1f} | {r['merge']:.1f} | {r['add'] + r['merge']:.1f} | "
                         f"{', '.join(f'{n:,}' for n in r['segments'])} | "
                         f"{', '.join(str(f or 'exact') for f in r['ann'])} |")
        total_a, total_b = a["add"] + a["merge"], b["add"] + b["merge"]
        lines += ["", f"Size-tiered update: {total_a / max(total_b, 1e-9):.0f}x faster than merging all.", "",
                  f"Single queries after the update, k = 10, {args.nq} per filter, the two indexes in turn (p50 / "
                  "p99 ms; recall@10 against the brute-force top-10 of the matching vectors):", "",
                  "| filter | merge all (1 segment) | size-tiered | p50 ratio | recall@10 merge all / size-tiered |",
                  "|---|---:|---:|---:|---:|"]
        for label, v in lat.items():
            pa, pb = (np.percentile(v[name], [50, 99]) for name in ("merge all", "size-tiered"))
            lines.append(f"| {label} | {pa[0]:.3f} / {pa[1]:.3f} | {pb[0]:.3f} / {pb[1]:.3f} | {pb[0] / pa[0]:.2f} | "
                         f"{rec[label]['merge all']:.3f} / {rec[label]['size-tiered']:.3f} |")
        lines += ["", f"Command: `python scripts/bench_index_update.py --n {args.n} --new {args.new}`"]
        publish("index_update", lines, write=not args.no_doc)


if __name__ == "__main__":
    main()
