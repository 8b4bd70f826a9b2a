"""Filtered search: our planner against FAISS baselines on the same vectors; tables in docs/benchmarks.md.

    OMP_NUM_THREADS=2 python scripts/bench_search.py [--n 1000000] [--n-big 10000000] [--quick] [--no-doc]

One run, one set of synthetic vectors (d=128, clustered, L2-normalised; tiles spread over 8 regions, one across the
antimeridian, times 2017-2024, 3 sensors, ~4 tiles per ground cell). Part 1 (N = --n, IVF-Flat segment): unfiltered
and bbox/polygon + time filters selecting 0.01% to 50% of the tiles, single queries and batches, p50/p99; baselines
FAISS flat, flat + IDSelectorBatch / IDSelectorBitmap, post-filtering an over-fetched flat top-100, flat over only the
filtered subset, plain IVF / HNSW with an IDSelectorBitmap; recall@10 against the exact filtered top-10. Our times
include building the filter (key ranges, rows), the baselines get the filtered id set for free. Part 2 (N = --n-big,
IVF-PQ segment re-ranked from the raw vectors): build time, memory, latency and recall.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import resource
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import faiss
import numpy as np
import shapely
from shapely.geometry import Polygon, box

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _benchdoc import DOC, kept_subsection, publish, scratch_dir  # noqa: E402

from rsretrieve.index.filters import QueryFilter  # noqa: E402
from rsretrieve.index.search import EXACT_MAX_ROWS_128, Searcher  # noqa: E402
from rsretrieve.index.segment import TIME_UNKNOWN  # noqa: E402
from rsretrieve.index.store import IndexStore  # noqa: E402

log = logging.getLogger("bench_search")
D = 128
REGIONS = ((-10, 36, 30, 60, .25), (-15, 10, 30, 20, .1), (70, 8, 90, 30, .15), (100, 20, 140, 45, .15),
           (-75, -15, -45, 5, .1), (-105, 30, -80, 48, .15), (170, -25, 190, -10, .05), (115, -35, 150, -15, .05))
T0 = int(datetime(2017, 1, 1, tzinfo=timezone.utc).timestamp())
T1 = int(datetime(2025, 1, 1, tzinfo=timezone.utc).timestamp())
CENTRE = (10.0, 48.0)  # filters grow around central Europe
SWEEP = (0.0001, 0.001, 0.01, 0.1, 0.15, 0.3, 0.5)  # 15%: where the planner switches from exact to ANN
CENTRE_NORM = 4.5  # cluster centres vs ~3.9 for the low-rank cell/tile variation: neighbours span some IVF lists


class Synth:
    """Tiles generated chunk by chunk: a tile copies its cell's place and latent, vectors = cluster centre + a
    low-rank cell/tile variation + sensor offset + noise. Regions prefer their own clusters."""

    def __init__(self, n: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.n, self.seed, m = n, seed, max(n // 4, 1)
        share = np.array([r[4] for r in REGIONS])
        region = rng.choice(len(REGIONS), m, p=share / share.sum())
        bx = np.array([r[:4] for r in REGIONS], dtype=float)
        lon = rng.uniform(bx[region, 0], bx[region, 2])
        self.cell_lon = np.where(lon > 180, lon - 360, lon)
        self.cell_lat = rng.uniform(bx[region, 1], bx[region, 3])
        n_clusters = 2048
        self.centres = rng.standard_normal((n_clusters, D)).astype(np.float32) / np.sqrt(D)
        own = rng.integers(0, n_clusters, (len(REGIONS), 300))
        self.cluster = np.where(rng.random(m) < 0.8, own[region, rng.integers(0, 300, m)],
                                rng.integers(0, n_clusters, m))
        self.bases = (rng.standard_normal((16, 16, D)) * 0.9 / np.sqrt(D)).astype(np.float32)
        self.latent = rng.standard_normal((m, 16)).astype(np.float32)
        self.sensor_off = rng.standard_normal((3, D)).astype(np.float32) / np.sqrt(D)

    def chunk(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Tiles ``start..stop-1``: the columns of ``IndexStore.add_segment`` plus ``vectors``."""
        rng = np.random.default_rng([self.seed, start])
        n = stop - start
        cell = rng.integers(0, self.cell_lon.size, n)
        sensor = rng.choice(3, n, p=[.4, .4, .2])
        z = self.latent[cell] + 0.4 * rng.standard_normal((n, 16)).astype(np.float32)
        cl = self.cluster[cell]
        x = self.centres[cl] * CENTRE_NORM
        for g in range(16):
            m = cl % 16 == g
            x[m] += z[m] @ self.bases[g]
        x += 0.25 * self.sensor_off[sensor] + 0.03 * rng.standard_normal((n, D)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        t = rng.integers(T0, T1, n)
        t[rng.random(n) < 0.01] = TIME_UNKNOWN
        return {"vectors": x, "tile_ids": np.arange(start, stop, dtype=np.int64),
                "lon": np.clip(self.cell_lon[cell] + rng.uniform(-.002, .002, n), -180, 180),
                "lat": self.cell_lat[cell], "time": t, "sensor_names": np.array(["s1", "s2", "enmap"])[sensor],
                "cell_ids": cell.astype(str), "scene_ids": (cell // 64) * 8 + sensor}


def build(root: Path, synth: Synth, factory: str) -> tuple[IndexStore, dict]:
    """Generate all tiles (vectors into a memory-mapped .npy) and add them as one segment; timings in seconds."""
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    src = np.lib.format.open_memmap(root / "source_vectors.npy", mode="w+", dtype=np.float32, shape=(synth.n, D))
    cols: dict[str, list] = {}
    for a in range(0, synth.n, 1 << 20):
        c = synth.chunk(a, min(synth.n, a + (1 << 20)))
        src[a:a + c["tile_ids"].size] = c.pop("vectors")
        for k, v in c.items():
            cols.setdefault(k, []).append(v)
    cols = {k: np.concatenate(v) for k, v in cols.items()}
    t_gen = time.perf_counter() - t0
    store = IndexStore.create(root / "index", D, "bench-model")
    t0 = time.perf_counter()
    store.add_segment(src, **cols, factory=factory)
    t_add = time.perf_counter() - t0
    del src
    (root / "source_vectors.npy").unlink()
    rss0 = rss_mb()
    store = IndexStore.open(root / "index", "bench-model", D)
    seg = store.segments[0]
    return store, {"gen_s": t_gen, "add_s": t_add, "ann_s": seg.ann_info["build_s"], "ann": seg.ann_info,
                   "rss_open_mb": rss_mb() - rss0, "load": os.getloadavg()}


def make_filters(seg, n: int, kinds: tuple[str, ...] = ("bbox", "polygon"),
                 sweep: tuple[float, ...] = SWEEP) -> list[tuple[str, float, QueryFilter]]:
    """bbox / polygon + time filters around CENTRE selecting each ``sweep`` fraction of the tiles (bisection)."""
    end = T0 + int(0.7 * (T1 - T0))
    in_time = (seg.time >= T0) & (seg.time <= end)
    tf = in_time.mean()
    out = []
    for kind in kinds:
        for s in sweep:
            lo, hi = 0.0, 400.0
            for _ in range(30):
                r = (lo + hi) / 2
                geom = _shape(kind, r)
                got = (in_time & _inside(geom, seg.lon, seg.lat)).sum() / n
                lo, hi = (r, hi) if got < s else (lo, r)
            geom = _shape(kind, hi)
            flt = (QueryFilter(bbox=geom.bounds, start=datetime.fromtimestamp(T0, timezone.utc),
                               end=datetime.fromtimestamp(end, timezone.utc)) if kind == "bbox" else
                   QueryFilter(polygon=geom, start=datetime.fromtimestamp(T0, timezone.utc),
                               end=datetime.fromtimestamp(end, timezone.utc)))
            out.append((kind, s, flt))
    log.info("time window keeps %.3f of the tiles", tf)
    return out


def _shape(kind: str, r: float):
    x, y = CENTRE
    if kind == "bbox":
        g = box(x - 1.5 * r, y - r, x + 1.5 * r, y + r)
    else:
        ang = np.linspace(0, 2 * np.pi, 13)[:-1]
        rad = r * np.array([1, .8, .95, .7, 1, .85, .9, .75, 1, .8, .95, .9])
        g = Polygon(np.c_[x + 1.5 * rad * np.cos(ang), y + rad * np.sin(ang)])
    return g.intersection(box(-180, -90, 180, 90))


def _inside(geom, lon, lat) -> np.ndarray:
    w, s, e, n = geom.bounds
    m = (lon >= w) & (lon <= e) & (lat >= s) & (lat <= n)
    if geom.geom_type != "Polygon" or not geom.equals(box(*geom.bounds)):
        idx = np.flatnonzero(m)
        m[idx] = shapely.intersects_xy(geom, lon[idx], lat[idx])
    return m


#: untimed calls before each method is timed: the first few queries after another method's run are 2-4x slower
#: on this machine (caches and the other vCPU still busy with the previous method), which would set a p99 of 200
#: queries by themselves; every method, baselines included, gets the same warm-up
WARM_UP = 5
#: OpenMP threads FAISS uses by default in this process (``OMP_NUM_THREADS``); baselines are also timed with 1
FAISS_THREADS = faiss.omp_get_max_threads()


def timed(fn, items) -> tuple[np.ndarray, list]:
    """Run ``fn`` on each item after ``WARM_UP`` untimed calls; (latencies in ms, results)."""
    for it in items[:WARM_UP]:
        fn(it)
    lat, res = [], []
    for it in items:
        t = time.perf_counter_ns()
        res.append(fn(it))
        lat.append((time.perf_counter_ns() - t) / 1e6)
    return np.array(lat), res


def fastest(fn, items, faiss_threads: bool) -> tuple[np.ndarray, list, int | None]:
    """:func:`timed` once, or (``faiss_threads``) with 1 and with ``FAISS_THREADS`` OpenMP threads: (latencies,
    results, thread count) of the run with the lower p50 (thread count None when not varied)."""
    best = None
    for threads in (sorted({1, FAISS_THREADS}) if faiss_threads else [None]):
        if threads is not None:
            faiss.omp_set_num_threads(threads)
        lat, res = timed(fn, items)
        if best is None or pct(lat)[0] < pct(best[0])[0]:
            best = (lat, res, threads)
    faiss.omp_set_num_threads(FAISS_THREADS)
    return best


def _rows(sub: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Positions in a subset (-1: none) as rows of the segment."""
    return np.where(pos >= 0, sub[np.maximum(pos, 0)], -1)


def paired(q: np.ndarray, raw, ours, rounds: int = 2) -> tuple[float, float]:
    """p50 latencies (ms) of ``raw`` and ``ours`` timed alternately on each single query (order swapped every
    query), so that both see the same moments of a shared machine."""
    raw(q[:1]), ours(q[:1])
    lat = {0: [], 1: []}
    for r in range(rounds):
        for i in range(len(q)):
            for which in ((0, 1) if (i + r) % 2 else (1, 0)):
                fn = raw if which == 0 else ours
                t = time.perf_counter_ns()
                fn(q[i:i + 1])
                lat[which].append((time.perf_counter_ns() - t) / 1e6)
    return float(np.percentile(lat[0], 50)), float(np.percentile(lat[1], 50))


def recall(found: list[np.ndarray], truth: np.ndarray) -> float:
    return float(np.mean([len(set(f[f >= 0].tolist()) & set(t[t >= 0].tolist())) / max(1, (t >= 0).sum())
                          for f, t in zip(found, truth)]))


def pct(a: np.ndarray) -> tuple[float, float]:
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def rss_mb(kind: str = "VmRSS") -> float:
    """Resident memory of this process in MB: VmRSS (all), RssAnon (heap) or RssFile (mapped files, reclaimable)."""
    for line in open("/proc/self/status"):
        if line.startswith(kind + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def noisy_queries(x: np.ndarray, nq: int, seed: int) -> np.ndarray:
    """Noisy copies of random stored vectors, (nq, d) float32, L2-normalised."""
    rng = np.random.default_rng(seed)
    q = np.asarray(x[np.sort(rng.integers(0, x.shape[0], nq))]) + 0.03 * rng.standard_normal((nq, D)).astype(np.float32)
    return np.ascontiguousarray(q / np.linalg.norm(q, axis=1, keepdims=True), dtype=np.float32)


class Bench:
    """Runs methods on single queries and batches and collects one table row per method."""

    def __init__(self, q: np.ndarray, batch: int, n_batches: int, tile_to_row: np.ndarray) -> None:
        self.q, self.rows, self.t2r = q, [], tile_to_row
        rng = np.random.default_rng(0)
        self.batches = [q[np.sort(rng.choice(len(q), min(batch, len(q)), replace=False))] for _ in range(n_batches)]

    def run(self, label: str, method: str, fn, truth: np.ndarray | None, nq: int | None = None,
            batch_fn=None, tiles: bool = False, extra: dict | None = None, faiss_threads: bool = False) -> dict:
        """``fn(q (1, d)) -> rows (k,)`` (or tile ids when ``tiles``); ``batch_fn(q (b, d))`` optional.
        ``faiss_threads``: a FAISS baseline, timed with 1 and with all of ``FAISS_THREADS`` OpenMP threads, the
        faster kept (by p50; single queries and batches each at their own): on this 2-core VM one thread has been
        up to 2.8x faster for single flat queries in some phases and slower in others, and a baseline is measured
        at its best."""
        qs = [self.q[i:i + 1] for i in range(nq or len(self.q))]
        lat, found, threads = fastest(fn, qs, faiss_threads)
        found = [self.t2r[np.asarray(f)[np.asarray(f) >= 0]] if tiles else np.asarray(f) for f in found]
        row = {"filter": label, "method": method, "p50": pct(lat)[0], "p99": pct(lat)[1],
               "recall": recall(found, truth[:len(found)]) if truth is not None else float("nan"),
               "threads": threads}
        if batch_fn is not None:  # batches at their own faster count (BLAS-bound: usually more threads)
            blat, _, row["batch_threads"] = fastest(batch_fn, self.batches, faiss_threads)
            row["batch_p50"] = pct(blat)[0] / len(self.batches[0])
            row["batch_p99"] = pct(blat)[1] / len(self.batches[0])
        row.update(extra or {})
        self.rows.append(row)
        log.info("%-28s %-34s p50 %8.3f ms  p99 %8.3f ms  recall %.3f  threads %s", label, method, row["p50"],
                 row["p99"], row["recall"], threads or "-")
        return row


def part1(args, root: Path) -> tuple[str, list[str]]:
    n, k = args.n, 10
    nlist = int(min(4096, 2 ** round(math.log2(4 * math.sqrt(n)))))
    factory = args.factory or f"IVF{nlist},Flat"
    store, bt = build(root, Synth(n, seed=0), factory)
    seg = store.segments[0]
    searcher = Searcher(store)
    file0 = rss_mb("RssFile")
    bt["warm_s"] = searcher.warm_up()  # as `serve` does at start: kernels compiled or loaded, mapped IVF lists paged in
    bt["warm_mb"] = rss_mb("RssFile") - file0
    x = seg.vectors
    t2r = np.empty(n, np.int64)
    t2r[seg.tile_id] = np.arange(n)
    q = noisy_queries(x, args.nq, seed=1)
    bench = Bench(q, args.batch, 20, t2r)
    nq_slow = min(args.nq, 50)
    flat = faiss.IndexFlatIP(D)
    flat.add(np.asarray(x))
    truth_all = flat.search(q, k)[1]
    width = seg.ann_info["width"]
    ivf_params = faiss.SearchParametersIVF(nprobe=width)
    f_flat = bench.run("none", "FAISS IndexFlatIP", lambda qq: flat.search(qq, k)[1][0], truth_all, nq_slow,
                       lambda qq: flat.search(qq, k), faiss_threads=True)
    f_ivf = bench.run("none", f"FAISS {factory} nprobe={width}",
                      lambda qq: seg.ann.search(qq, k, params=ivf_params)[1][0], truth_all, None,
                      lambda qq: seg.ann.search(qq, k, params=ivf_params), faiss_threads=True)
    f_ours = bench.run("none", "ours (planner)", lambda qq: searcher.search(qq, k).tile_ids[0], truth_all, None,
                       lambda qq: searcher.search(qq, k), tiles=True)
    again = bench.run("none", f"FAISS {factory} nprobe={width}, again after ours",
                      lambda qq: seg.ann.search(qq, k, params=ivf_params)[1][0], truth_all, None,
                      lambda qq: seg.ann.search(qq, k, params=ivf_params), faiss_threads=True)
    # raw FAISS measured before and after ours, the faster of the two kept as the bar: a load spike on a shared
    # machine during one of them must not flatter the overhead or the sweep
    f_ivf = {**f_ivf, "p50": min(f_ivf["p50"], again["p50"]), "batch_p50": min(f_ivf["batch_p50"], again["batch_p50"])}
    f_ours["paired"] = paired(q, lambda qq: seg.ann.search(qq, k, params=ivf_params),
                              lambda qq: searcher.search(qq, k))
    hnsw, ef = None, 0
    if not args.no_hnsw:
        t0 = time.perf_counter()
        hnsw = faiss.IndexHNSWFlat(D, 32, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = 40
        hnsw.add(np.asarray(x))
        bt["hnsw_s"] = time.perf_counter() - t0
        for ef in (16, 32, 64, 128, 256, 512):
            if recall(list(hnsw.search(q, k, params=faiss.SearchParametersHNSW(efSearch=ef))[1]), truth_all) >= .95:
                break
        hp = faiss.SearchParametersHNSW(efSearch=ef)
        bench.run("none", f"FAISS HNSW32 ef={ef}", lambda qq: hnsw.search(qq, k, params=hp)[1][0], truth_all,
                  faiss_threads=True)
    sweep = []
    for kind, s, flt in make_filters(seg, n):
        lo, hi = flt.time_range()
        mask = (seg.time >= lo) & (seg.time <= hi) & _inside(flt.polygon if flt.polygon is not None
                                                              else box(*flt.bbox), seg.lon, seg.lat)
        sub = np.flatnonzero(mask)
        label = f"{kind}+time {100 * mask.mean():.3g}%"
        sub_index = faiss.IndexFlatIP(D)
        sub_index.add(np.asarray(x[sub]))
        truth = _rows(sub, sub_index.search(q, k)[1])
        r_sub = bench.run(label, "FAISS flat over the subset only",
                          lambda qq: _rows(sub, sub_index.search(qq, k)[1][0]),
                          truth, None, lambda qq: sub_index.search(qq, k), faiss_threads=True)
        sel_b = faiss.IDSelectorBatch(sub.size, faiss.swig_ptr(sub))
        p_b = faiss.SearchParameters(sel=sel_b)
        r_batch = bench.run(label, "FAISS flat + IDSelectorBatch", lambda qq: flat.search(qq, k, params=p_b)[1][0],
                            truth, nq_slow, lambda qq: flat.search(qq, k, params=p_b), faiss_threads=True)
        bitmap = np.packbits(mask, bitorder="little")
        sel_m = faiss.IDSelectorBitmap(n, faiss.swig_ptr(bitmap))
        p_m = faiss.SearchParameters(sel=sel_m)
        bench.run(label, "FAISS flat + IDSelectorBitmap", lambda qq: flat.search(qq, k, params=p_m)[1][0], truth,
                  nq_slow, faiss_threads=True)

        def post(qq):
            ids = flat.search(qq, 10 * k)[1][0]
            return ids[mask[ids]][:k]
        bench.run(label, "FAISS flat top-100, post-filtered", post, truth, nq_slow, faiss_threads=True)
        p_ivf = faiss.SearchParametersIVF(nprobe=width, sel=sel_m)
        bench.run(label, f"FAISS IVF nprobe={width} + IDSelectorBitmap",
                  lambda qq: seg.ann.search(qq, k, params=p_ivf)[1][0], truth, faiss_threads=True)
        wide = wide_nprobe(seg.ann, q, k, sel_m, truth, width)
        if wide is not None and wide != width:  # how wide plain filtered IVF must search for recall@10 >= 0.95
            p_w = faiss.SearchParametersIVF(nprobe=wide, sel=sel_m)
            bench.run(label, f"FAISS IVF nprobe={wide} + IDSelectorBitmap (narrowest with recall >= 0.95)",
                      lambda qq: seg.ann.search(qq, k, params=p_w)[1][0], truth, faiss_threads=True)
        if hnsw is not None:
            p_h = faiss.SearchParametersHNSW(efSearch=ef, sel=sel_m)
            bench.run(label, f"FAISS HNSW32 ef={ef} + IDSelectorBitmap",
                      lambda qq: hnsw.search(qq, k, params=p_h)[1][0], truth, faiss_threads=True)
        fields = {"bbox": flt.bbox, "polygon": flt.polygon, "start": flt.start, "end": flt.end}
        plans = []

        def ours(qq):
            res = searcher.search(qq, k, QueryFilter(**fields))
            plans.append(res.plan)
            return res.tile_ids[0]
        r_ours = bench.run(label, "ours (planner)", ours, truth, None,
                           lambda qq: searcher.search(qq, k, QueryFilter(**fields)), tiles=True)
        modes = sorted({p["mode"] for p in plans})
        r_ours["method"] = f"ours (planner: {'/'.join(modes)})"
        forced = None
        if kind == "bbox" and s >= 0.01:  # the ANN path the planner did not pick, for the cost model
            f_s = Searcher(store, exact_max_rows=1, ann_min_selectivity=0.0)
            forced = bench.run(label, "ours, ANN path forced (not chosen)",
                               lambda qq: f_s.search(qq, k, QueryFilter(**fields)).tile_ids[0], truth, tiles=True)
        sweep.append({"kind": kind, "target": s, "sel": mask.mean(), "n": sub.size, "ours": r_ours, "sub": r_sub,
                      "batch": r_batch, "modes": modes, "forced": forced})
    disk = {p.name: p.stat().st_size for p in (store.root / store.generation / seg.name).iterdir()}
    mem = {"raw": disk["vectors.npy"] / n, "ann": disk.get("ann.faiss", 0) / n, "codes": _codes_bytes(disk) / n,
           "cols": sum(v for kk, v in disk.items() if kk not in _NOT_COLUMNS) / n}
    return report1(args, n, factory, bt, mem, bench.rows, f_flat, f_ivf, f_ours, sweep)


_NOT_COLUMNS = ("vectors.npy", "ann.faiss", "ann.json", "codes.npy", "codes_params.npy")


def _codes_bytes(disk: dict[str, int]) -> int:
    return disk.get("codes.npy", 0) + disk.get("codes_params.npy", 0)


def wide_nprobe(index, q: np.ndarray, k: int, sel, truth: np.ndarray, start: int) -> int | None:
    """Smallest nprobe (doubling from ``start``) at which IVF + ``sel`` reaches recall@10 >= 0.95 (batched search);
    None when even nprobe = nlist does not."""
    nlist = faiss.extract_index_ivf(index).nlist
    nprobe = start
    while True:
        found = index.search(q, k, params=faiss.SearchParametersIVF(nprobe=nprobe, sel=sel))[1]
        if recall(list(found), truth) >= 0.95:
            return nprobe
        if nprobe >= nlist:
            return None
        nprobe = min(2 * nprobe, nlist)


def _fmt(v: float, digits: int = 3) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def table(rows: list[dict], flat_p50: float) -> list[str]:
    out = ["| filter | method | FAISS threads | p50 ms | p99 ms | batch p50 ms/query | recall@10 | "
           "p50 speed-up vs flat |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        threads = r.get("threads") or "-"
        if r.get("batch_threads") and r["batch_threads"] != r.get("threads"):
            threads = f"{threads} (batches {r['batch_threads']})"
        out.append(f"| {r['filter']} | {r['method']} | {threads} | {_fmt(r['p50'])} | "
                   f"{_fmt(r['p99'])} | "
                   f"{_fmt(r.get('batch_p50'))} | {_fmt(r['recall'])} | {flat_p50 / r['p50']:.1f}x |")
    return out


def report1(args, n, factory, bt, mem, rows, f_flat, f_ivf, f_ours, sweep) -> tuple[str, list[str]]:
    flat = f_flat["p50"]
    checks = []
    for sw in sweep:
        if sw["target"] == 0.01:  # single queries and batches, p50 and p99: each against the same baseline figure
            o, b = sw["ours"], sw["batch"]
            ratios = {f"{how} {q}": (f_flat[key] / o[key], b[key] / o[key])
                      for how, sfx in (("single", ""), ("batched", "batch_")) for q in ("p50", "p99")
                      for key in [sfx + q]}
            ok = sw["modes"] == ["exact"] and o["recall"] == 1.0 and all(a >= 100 and c >= 5 for a, c in
                                                                         ratios.values())
            checks.append(f"- 1% {sw['kind']}+time: modes {sw['modes']}, recall@10 {o['recall']:.3f}; against flat "
                          "(target >= 100x) / flat + IDSelectorBatch (target >= 5x): "
                          + ", ".join(f"{k} {a:.0f}x / {c:.1f}x" for k, (a, c) in ratios.items())
                          + f": **{'met' if ok else 'NOT met'}**")
    worst_r = min(sw["ours"]["recall"] for sw in sweep)
    ratios = [(sw["ours"]["p50"] / min(sw["sub"]["p50"], f_ivf["p50"]), sw) for sw in sweep]
    worst = max(ratios, key=lambda t: t[0])
    checks.append(f"- sweep 0.01%-50% (bbox and polygon), recall: lowest recall@10 {worst_r:.3f} (target >= 0.95): "
                  f"**{'met' if worst_r >= .95 else 'NOT met'}**")
    n_ok = sum(r <= 1.5 for r, _ in ratios)
    checks.append(f"- sweep 0.01%-50% (bbox and polygon), speed: p50 within 1.5x of the better of (flat over the "
                  f"subset, unfiltered ANN) at {n_ok} of {len(ratios)} filters, worst {worst[0]:.2f}x at "
                  f"{worst[1]['kind']} {100 * worst[1]['sel']:.3g}%; per filter: "
                  + ", ".join(f"{sw['kind'][0]}{100 * sw['sel']:.2g}%={r:.2f}" for r, sw in ratios)
                  + f": **{'met' if worst[0] <= 1.5 else 'NOT met'}**")
    sweep_table = ["| filter | our plan | ours p50 ms | flat over the subset p50 ms | unfiltered ANN p50 ms | "
                   "ours / better of the two (target <= 1.5) | recall@10 |", "|---|---|---:|---:|---:|---:|---:|"]
    for r, sw in ratios:
        sub, ann = sw["sub"]["p50"], f_ivf["p50"]
        sweep_table.append(f"| {sw['kind']}+time {100 * sw['sel']:.3g}% | {'/'.join(sw['modes'])} | "
                           f"{sw['ours']['p50']:.3f} | {sub:.3f} | {ann:.3f} | {r:.2f} vs "
                           f"{'subset' if sub <= ann else 'ANN'} | {sw['ours']['recall']:.3f} |")
    sp = flat / f_ivf["p50"]
    checks.append(f"- unfiltered ANN ({factory}): recall@10 {f_ivf['recall']:.3f}, {sp:.0f}x flat (targets >= 0.95, "
                  f">= 20x): **{'met' if f_ivf['recall'] >= .95 and sp >= 20 else 'NOT met'}**")
    raw_p50, ours_p50 = f_ours["paired"]
    over = ours_p50 / raw_p50 - 1
    checks.append(f"- unfiltered overhead of the planner over raw FAISS on the same index, timed alternately query by "
                  f"query ({ours_p50 * 1000:.0f} vs {raw_p50 * 1000:.0f} us p50): {100 * over:+.1f}% (separate runs in "
                  f"the table: {100 * (f_ours['p50'] / f_ivf['p50'] - 1):+.1f}% p50, "
                  f"{100 * (f_ours['batch_p50'] / f_ivf['batch_p50'] - 1):+.1f}% batched) (target <= 10%): "
                  f"**{'met' if over <= .10 else 'NOT met'}**")
    exact = [(sw["n"], sw["ours"]["p50"]) for sw in sweep if sw["modes"] == ["exact"] and sw["kind"] == "bbox"]
    fit = np.polyfit(*zip(*exact), 1) if len(exact) > 1 else (math.nan, math.nan)
    forced = "; ".join(f"{100 * sw['sel']:.2g}%: p50 {sw['forced']['p50']:.2f} ms, recall@10 "
                       f"{sw['forced']['recall']:.3f}" for sw in sweep if sw["forced"])
    checks.append(f"- cost model behind the exact/ANN switch (bbox): exact scan p50 ~ {fit[1]:.2f} ms + "
                  f"{1e6 * fit[0]:.0f} ns x matching tiles; the post-filtered ANN path, forced: {forced}. The planner "
                  f"scans exactly up to max({max(1024, EXACT_MAX_ROWS_128 * 128 // D):,} matches, 15% of a segment): "
                  "below ~15-20% selectivity ANN recall falls when the filtered region is unlike the query")
    lines = [f"### N = {n:,} vectors, d = {D}, one segment `{factory}`", "",
             f"Build: synthetic vectors {bt['gen_s']:.1f} s; `add_segment` {bt['add_s']:.1f} s (Hilbert sort, "
             f"atomic write, ANN {bt['ann_s']:.1f} s incl. nprobe calibration to {bt['ann']['width']} for recall@10 "
             f"{bt['ann']['recall']:.3f})" + (f"; HNSW32 baseline {bt['hnsw_s']:.1f} s." if "hnsw_s" in bt else "."),
             f"Memory per vector: raw float32 {mem['raw']:.0f} B (memory-mapped), uint8 codes {mem['codes']:.0f} B "
             f"(memory-mapped, read first by exact scans), columns {mem['cols']:.1f} B, "
             f"ANN index {mem['ann']:.0f} B; RSS growth on opening the index {bt['rss_open_mb']:.0f} MB "
             f"({bt['rss_open_mb'] * 2 ** 20 / n:.0f} B/vector: columns, vectors and the IVF lists are "
             f"memory-mapped); `Searcher.warm_up()`, which `serve` runs at start and this benchmark before its "
             f"queries, took {bt['warm_s']:.2f} s and paged {bt['warm_mb']:.0f} MB of mapped files in (mostly the "
             "IVF lists).",
             f"Queries: {args.nq} noisy copies of random tiles, one at a time (flat-based baselines: the first "
             f"{min(args.nq, 50)}) and 20 batches of {args.batch}, each method after {WARM_UP} untimed calls; k = 10; "
             "`OMP_NUM_THREADS` = "
             f"{FAISS_THREADS}; every FAISS baseline is timed with 1 and with {FAISS_THREADS} OpenMP threads and "
             "kept at the faster (column \"FAISS threads\"; single queries and batches each at their own): on this "
             "VM either can be faster, by up to 2.8x for single flat queries; load average during the run "
             f"{bt['load'][0]:.1f} -> "
             f"{os.getloadavg()[0]:.1f} (the machine is shared: p99 values include other users' work).",
             "Our times include everything from the user's filter values on: building and validating the "
             "`QueryFilter`, the sample estimate, key ranges and column checks, the search and the merge. The "
             "baselines are handed the filtered id set / bitmap for free.", "", "Targets of issue 4:", "", *checks, "",
             "The sweep against its target, filter by filter (\"flat over the subset\" is a flat index built "
             "beforehand over exactly the matching vectors; the better of it and unfiltered ANN is the bar):", "",
             *sweep_table, "", *table(rows, flat)]
    return "\n".join(lines), checks


def part2(args, root: Path) -> str:
    n, k = args.n_big, 10
    t_peak0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    store, bt = build(root, Synth(n, seed=1), args.big_factory)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    anon, mapped = rss_mb("RssAnon"), rss_mb("RssFile")
    seg = store.segments[0]
    searcher = Searcher(store)
    x = seg.vectors
    t2r = np.empty(n, np.int64)
    t2r[seg.tile_id] = np.arange(n)
    q = noisy_queries(x, args.nq_big, seed=2)
    bench = Bench(q, args.batch, 10, t2r)
    t0 = time.perf_counter()
    truth_all = faiss.knn(q, x, k, metric=faiss.METRIC_INNER_PRODUCT)[1]
    t_gt = (time.perf_counter() - t0) / len(q)
    f_flat = bench.run("none", "exact scan (faiss.knn, memory-mapped)",
                       lambda qq: faiss.knn(qq, x, k, metric=faiss.METRIC_INNER_PRODUCT)[1][0], truth_all, 3,
                       faiss_threads=True)
    width = seg.ann_info["width"]
    p_raw = faiss.SearchParametersIVF(nprobe=width)
    bench.run("none", f"FAISS {args.big_factory} nprobe={width}, no re-rank",
              lambda qq: seg.ann.search(qq, k, params=p_raw)[1][0], truth_all, faiss_threads=True)
    bench.run("none", "ours (planner, re-rank x8 from raw)", lambda qq: searcher.search(qq, k).tile_ids[0], truth_all,
              None, lambda qq: searcher.search(qq, k), tiles=True)
    for kind, s, flt in make_filters(seg, n, ("bbox",), (0.001, 0.01, 0.1)):
        lo, hi = flt.time_range()
        mask = (seg.time >= lo) & (seg.time <= hi) & _inside(box(*flt.bbox), seg.lon, seg.lat)
        sub = np.flatnonzero(mask)
        truth = _rows(sub, faiss.knn(q, np.asarray(x[sub]), k, metric=faiss.METRIC_INNER_PRODUCT)[1])
        plans = []

        def ours(qq, flt=flt):
            res = searcher.search(qq, k, QueryFilter(bbox=flt.bbox, start=flt.start, end=flt.end))
            plans.append(res.plan["mode"])
            return res.tile_ids[0]
        r = bench.run(f"bbox+time {100 * mask.mean():.3g}%", "ours (planner)", ours, truth, None,
                      lambda qq, flt=flt: searcher.search(qq, k, QueryFilter(bbox=flt.bbox, start=flt.start,
                                                                               end=flt.end)), tiles=True)
        r["method"] = f"ours (planner: {'/'.join(sorted(set(plans)))})"
    disk = {p.name: p.stat().st_size for p in (store.root / store.generation / seg.name).iterdir()}
    lines = [f"### N = {n:,} vectors, d = {D}, one segment `{args.big_factory}` (compressed)", "",
             f"Build: synthetic vectors {bt['gen_s']:.0f} s (written to a memory-mapped .npy in 1M chunks); "
             f"`add_segment` {bt['add_s']:.0f} s in all, of which the ANN index {bt['ann_s']:.0f} s (IVF trained on "
             f"{min(n, 64 * faiss.extract_index_ivf(seg.ann).nlist, 500_000):,} sampled vectors, nprobe "
             f"calibrated to {width} for recall@10 "
             f"{bt['ann']['recall']:.3f} after exact re-ranking of the top 80 from the raw vectors).",
             f"Memory: ANN index {disk['ann.faiss'] / n:.0f} B/vector "
             f"({disk['ann.faiss'] / 2 ** 30:.2f} GiB, its IVF lists memory-mapped), columns "
             f"{sum(v for kk, v in disk.items() if kk not in _NOT_COLUMNS) / n:.0f} B/vector, uint8 codes "
             f"{_codes_bytes(disk) / n:.0f} B/vector and raw float32 {disk['vectors.npy'] / n:.0f} B/vector on "
             f"disk, memory-mapped (read only by exact scans and re-ranking); peak RSS of the benchmark process {peak:.0f} MB (before this part "
             f"{t_peak0:.0f} MB), counting pages of memory-mapped files; after the build {anon:.0f} MB heap + "
             f"{mapped:.0f} MB mapped file pages, after the searches {rss_mb('RssAnon'):.0f} MB heap + "
             f"{rss_mb('RssFile'):.0f} MB mapped (heap grows little on opening the index: the allocator reuses "
             "memory freed after the build).",
             f"Exact ground truth: faiss.knn over the memory-mapped vectors, {1000 * t_gt:.0f} ms/query in a batch "
             f"of {len(q)}; {len(q)} queries, batches of {args.batch}.", "", *table(bench.rows, f_flat["p50"])]
    return "\n".join(lines)


def kept_part2() -> str:
    """Part 2 as the search section of docs/benchmarks.md holds it now, with a line saying when it was measured."""
    found = kept_subsection("search", r"### N = [\d,]+ vectors, d = \d+, one segment `[^`]*` \(compressed\)")
    if found is None:
        raise SystemExit(f"--keep-big: {DOC} holds no part 2 to keep; run without --keep-big")
    body, stamp = found
    kept = re.search(r"\n\n_Kept from an earlier run of this script \(measured ([^)]*)\)[^\n]*$", body)
    if kept is not None:  # kept before: the stamp of the run that measured it
        body, stamp = body[:kept.start()], kept.group(1)
    return body + (f"\n\n_Kept from an earlier run of this script (measured {stamp}), not re-measured in this one "
                   "(`--keep-big`); the code may have changed since: run without `--keep-big` to measure it again._")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="vectors in part 1")
    ap.add_argument("--n-big", type=int, default=10_000_000, help="vectors in part 2 (0: skip)")
    ap.add_argument("--quick", action="store_true", help="smoke run: --n 20000 --n-big 200000, no doc")
    ap.add_argument("--nq", type=int, default=200)
    ap.add_argument("--nq-big", type=int, default=100)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--factory", help="part 1 ANN factory (default IVF{4 sqrt(n)},Flat)")
    ap.add_argument("--big-factory", default="IVF4096,PQ32")
    ap.add_argument("--no-hnsw", action="store_true", help="skip the HNSW baseline of part 1")
    ap.add_argument("--workdir", help="where the indexes are built (default: a temp dir, removed)")
    ap.add_argument("--no-doc", action="store_true", help="print only, do not touch docs/benchmarks.md")
    ap.add_argument("--keep-big", action="store_true",
                    help="skip part 2 and keep its section from docs/benchmarks.md as it is, marked as kept")
    args = ap.parse_args()
    if args.quick:
        args.no_doc = True
        args.n = 20_000 if args.n == ap.get_default("n") else args.n
        args.n_big = 200_000 if args.n_big == ap.get_default("n_big") else args.n_big
        args.big_factory = "IVF512,PQ32" if args.big_factory == "IVF4096,PQ32" else args.big_factory
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    with scratch_dir(args.workdir, "bench_search_") as work:
        text1, checks = part1(args, work / "p1")
        met = [c.split(":")[0][2:] for c in checks if c.endswith("**met**")]
        missed = [c.split(":")[0][2:] for c in checks if c.endswith("**NOT met**")]
        parts = ["## Filtered search (`scripts/bench_search.py`)", "",
                 f"In this run, targets met: {'; '.join(met) or 'none'}. Not met: {'; '.join(missed) or 'none'} "
                 "(numbers below).", "", text1]
        shutil.rmtree(work / "p1")
        if args.keep_big:
            parts += ["", kept_part2()]
        elif args.n_big:
            parts += ["", part2(args, work / "p2")]
        publish("search", parts, write=not args.no_doc)


if __name__ == "__main__":
    main()
