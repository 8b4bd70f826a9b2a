"""The filtered-search planner: exact scans of the matching rows when selective, ANN when broad.

Per segment, the filter is first tried on a fixed sample of the segment's rows: the share of the sample inside the
filter's box (a few comparisons) and, only when that share is not already selective, the whole filter. A possibly
selective filter gets its Hilbert key ranges turned into row ranges (``np.searchsorted``); when those rows, or the
matches estimated from a sample of them, number at most ``exact_max_rows``, or the filter keeps less than
``ann_min_selectivity`` of the segment, or the segment has no ANN index, the matches are materialised by vectorised
column checks (rows in grid cells wholly inside the geometry skip the geometric test, polygons are rasterised so that
only rows near an edge need shapely) and scanned exactly: for one query in one compiled pass over the row ranges that
checks, scores and keeps the top-k (:mod:`rsretrieve.index.kernels`), for a batch by a gather and BLAS. The
single-query scan scores rows from the segment's uint8 codes and re-scores from the float32 vectors only rows
that could still enter the top-k: about 5 ns per row in the ranges at d = 128 on the benchmark machine (codes of
1% of 1M vectors stay in cache), so a 10% filter over 1M vectors (100k matches) still costs 1-4 ms,
and plain filtered IVF needs a search width of hundreds of lists to keep recall@10 at 0.95 when the filtered
region is unlike the query (``scripts/bench_search.py`` measures both). Broader
filters search the segment's ANN index without materialising anything: an over-fetch of ``k / selectivity`` hits
at a search width scaled by ``selectivity ** -0.5``, every hit checked against the filter, widened 4x per round for
the queries still short of ``k`` matches; past ``max_fetch`` those queries (unlike the filtered region: more widening
finds matches but not the best ones) finish on the exact scan, one compiled pass per query for up to four queries;
larger batches on the ANN index with a FAISS ``IDSelectorBitmap`` of the materialised matches and a width scaled by
``1 / selectivity`` (CPU), or on the exact scan. Segments merge into an exact top-k over their union.
``one_per_cell`` over-fetches and de-duplicates by ground cell until ``k`` distinct cells are found or the matches
run out: a top-k is never truncated and called filtered. Unfiltered queries of a one-segment index with an exact-code
ANN index go straight to FAISS's C entry point (``search_c``) once the queries pass the planner's own checks.

GPU: classic FAISS GPU indexes ignore ``IDSelector`` without a word (faiss issues 3114, 3924). The planner never
relies on it: ANN hits are always re-checked on the CPU, the GPU path never passes a selector, and it falls back to
the exact CPU scan when widening reaches the GPU's largest k.
"""

from __future__ import annotations

import logging
import math
import time
from datetime import datetime

import faiss
import numpy as np

from shapely.geometry import box

from rsretrieve.index import kernels
from rsretrieve.index.ann import ann_params, ann_search, touch_lists
from rsretrieve.index.filters import CompiledFilter, QueryFilter
from rsretrieve.index.segment import Segment
from rsretrieve.index.store import IndexStore

log = logging.getLogger(__name__)

#: matches below which a segment with an ANN index is still scanned exactly, at d = 128 (scaled by 128 / d)
EXACT_MAX_ROWS_128 = 65_536
#: exact batches of up to ``SCAN_MAX_QUERIES`` queries over at least ``SCAN_BATCH_ROWS`` rows (up to
#: ``SCAN_FEW_QUERIES`` over fewer) are scanned in one compiled pass, the rows checked once for all queries; larger
#: batches gather the matching vectors for FAISS's BLAS search, which then costs less per query (measured on 1M
#: rows, 2 threads, us/query old -> scan: 1% batches of 8 297 -> 153, of 32 150 -> 111, of 64 96 -> 102; 0.1%
#: batches of 8 35 -> 25, of 32 12 -> 19)
SCAN_MAX_QUERIES = 32
SCAN_FEW_QUERIES = 8
SCAN_BATCH_ROWS = 8192
_GPU_MAX_K = 2048  # largest k classic FAISS GPU indexes accept


class SearchResult:
    """Ranked hits for each query.

    Attributes:
        tile_ids: (nq, k) int64, best first; -1 where fewer than k tiles match.
        scores: (nq, k) float32 inner products, descending; -inf where fewer than k tiles match.
        plan: what ran: ``mode`` ("exact", "ann" or "mixed"), ``candidates`` (matching tiles; estimated for ANN
            segments), and per segment details.
    """

    def __init__(self, tile_ids: np.ndarray, scores: np.ndarray, plan: dict, cells: np.ndarray | None = None,
                 hits: list[tuple[Segment, np.ndarray]] | None = None) -> None:
        self.tile_ids, self.scores, self.plan = tile_ids, scores, plan
        self._cells, self._hits = cells, hits

    @property
    def cell_ids(self) -> np.ndarray:
        """(nq, k) ground cell id (str) of each hit, "" where fewer than k tiles match."""
        if self._cells is None:
            seg, rows = self._hits[0]
            self._cells = _cells_of(seg, rows)
        return self._cells

    def __repr__(self) -> str:
        return f"SearchResult(tile_ids={self.tile_ids!r}, scores={self.scores!r}, plan={self.plan!r})"


class Searcher:
    """Searches a snapshot of an :class:`IndexStore`: the segments it holds when the searcher is made (make a new
    searcher to see later writes).

    Args:
        store: the open index.
        exact_max_rows: matches up to which a segment with an ANN index is scanned exactly (default
            ``EXACT_MAX_ROWS_128 * 128 / d``, from the cost model measured by ``scripts/bench_search.py``); an
            eighth of it for unfiltered queries.
        use_gpu: "auto" (GPU when faiss sees one), True or False.
        trust_selector: use FAISS selectors in the CPU fallback; default: on CPU only (GPU indexes ignore them).
        overfetch: a broad filter of selectivity s first fetches ``overfetch * k / s`` ANN hits.
        max_fetch: the most ANN hits fetched per query before the selector / exact fallback. A query still short
            of matches after a widening or two is unlike the filtered region: its true neighbours lie in lists far
            from it, where more widening finds matches but not the best ones (measured at 15% selectivity: recall@10
            0.942 with 4096, 0.965 with 512), so it finishes on the exact scan.
        width_exponent: the first ANN round searches at ``width * s ** -width_exponent`` (nprobe / efSearch).
        ann_min_selectivity: filters keeping less than this share of a segment are scanned exactly however many
            tiles match: below it, post-filtered ANN (and plain FAISS with a selector) lose recall when the
            filtered region is unlike the query (measured: 0.89 at 10%, 0.98 at 20% on the benchmark data).
    """

    def __init__(self, store: IndexStore, *, exact_max_rows: int | None = None, use_gpu: bool | str = "auto",
                 trust_selector: bool | None = None, overfetch: float = 1.5, max_fetch: int = 512,
                 width_exponent: float = 0.5, ann_min_selectivity: float = 0.15) -> None:
        self.store, self.segments, self.sensors, self.dim = store, list(store.segments), store.sensors, store.dim
        self.overfetch, self.max_fetch, self.width_exponent = overfetch, max_fetch, width_exponent
        self.ann_min_selectivity = ann_min_selectivity
        self.exact_max_rows = exact_max_rows or max(1024, EXACT_MAX_ROWS_128 * 128 // self.dim)
        self.gpu = faiss.get_num_gpus() > 0 if use_gpu == "auto" else bool(use_gpu)
        self.trust_selector = (not self.gpu) if trust_selector is None else trust_selector
        self._ann: dict[str, faiss.Index] = {}
        self._width_limit = {seg.name: faiss.extract_index_ivf(seg.ann).nlist if seg.ann_info["param"] == "nprobe"
                             else 4096 for seg in self.segments if seg.ann is not None}
        if self.gpu:
            self._res = faiss.StandardGpuResources()
        for seg in self.segments:
            if seg.ann is not None:
                self._ann[seg.name] = faiss.index_cpu_to_gpu(self._res, 0, seg.ann) if self.gpu else seg.ann
        # the unfiltered fast path: one segment searched through its ANN index with fixed parameters
        only = self.segments[0] if len(self.segments) == 1 else None
        self._fast = None
        if only is not None and only.name in self._ann and not only.has_deleted and only.n > self.exact_max_rows \
                and only.ann_info["rerank"] == 1:
            # FAISS's C entry point, without the Python wrapper's checks: search() makes them once, cheaper
            self._fast = (only, self._ann[only.name].search_c, ann_params(only.ann_info, only.ann_info["width"]),
                          {"mode": "ann", "candidates": only.n,
                           "segments": [{"segment": only.name, "mode": "ann", "candidates": only.n}]})

    def warm_up(self) -> float:
        """Compile the kernels of filtered search (:mod:`rsretrieve.index.kernels`) for this index's column types,
        or load them from numba's cache, with a few tiny queries, and page in the ANN indexes' memory-mapped lists
        (:func:`rsretrieve.index.ann.touch_lists`), so that a user's first queries do not pay for either; returns
        the seconds it took."""
        t0 = time.perf_counter()
        if not self.gpu:  # the memory-mapped IVF lists paged in (a GPU copy holds its own)
            for seg in self.segments:
                if seg.ann is not None:
                    touch_lists(seg.ann)
        if not kernels.AVAILABLE or not self.segments:
            return time.perf_counter() - t0
        seg = self.segments[0]
        q = np.array(seg.vectors[:1], dtype=np.float32)  # writable, as a model's output: see search()
        lon, lat, d = float(seg.lon[0]), float(seg.lat[0]), 1e-3
        bbox = (max(lon - d, -180.0), max(lat - d, -90.0), min(lon + d, 180.0), min(lat + d, 90.0))
        self.search(q, 1, QueryFilter(bbox=bbox, start=datetime(1970, 1, 1)))  # box ranges and the scan
        cf = CompiledFilter(QueryFilter(polygon=box(*bbox)), self.sensors)  # rasters, their ranges, their scan
        ranges = cf.row_ranges(seg)
        cf.scan(seg, q, 1, ranges)
        if kernels.threads() > 1:  # long scans cut into parts on several threads (compiling it takes ~20 s)
            cf.scan(seg, q, 1, ranges, parts=2)
        self.search(q, 1, QueryFilter(polygon=box(*bbox)))  # a small polygon: covered by its box
        return time.perf_counter() - t0

    def search(self, queries: np.ndarray, k: int = 10, flt: QueryFilter | None = None) -> SearchResult:
        """Top-``k`` tiles by inner product for each query among the tiles matching ``flt``.

        Args:
            queries: (nq, d) or (d,) float32, L2-normalised embeddings.
            k: results per query, positive.
            flt: filter; None matches every indexed tile.
        """
        if flt is None and self._fast is not None and type(k) is int and k > 0 and type(queries) is np.ndarray \
                and queries.ndim == 2 and queries.dtype == np.float32 and queries.shape[1] == self.dim \
                and queries.flags.c_contiguous:  # the unfiltered fast path: checks as cheap as FAISS's own
            seg, search_c, params, plan = self._fast
            nq = queries.shape[0]
            scores, rows = np.empty((nq, k), np.float32), np.empty((nq, k), np.int64)
            search_c(nq, faiss.swig_ptr(queries), k, faiss.swig_ptr(scores), faiss.swig_ptr(rows), params)
            full = rows[0, -1] >= 0 if nq == 1 else nq == 0 or rows[:, -1].min() >= 0  # FAISS pads with -1 last
            if not full:  # FAISS pads missing hits with -FLT_MAX: -inf, as the other paths
                scores = np.where(rows >= 0, scores, -np.inf).astype(np.float32)
            tiles = seg.tile_id.take(rows) if full else np.where(rows >= 0, seg.tile_id.take(rows), -1)
            return SearchResult(tiles, scores, dict(plan), hits=[(seg, rows)])
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        fast = isinstance(queries, np.ndarray) and queries.ndim == 2 and queries.dtype == np.float32 \
            and queries.flags.c_contiguous and queries.flags.writeable
        # a writable copy otherwise: numba compiles a kernel apart for read-only arrays (a memory-mapped query), and
        # warm_up() compiles the writable one
        q = queries if fast else np.array(np.atleast_2d(np.asarray(queries, dtype=np.float32)), order="C")
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries must have shape (nq, {self.dim}), got {np.shape(queries)}")
        k = int(k)
        if flt is None and self._fast is not None:  # queries of another dtype or layout, k a numpy integer
            return self.search(q, k)
        flt = flt or QueryFilter()
        per_cell = flt.one_per_cell
        cf = None if flt.is_trivial else CompiledFilter(flt, self.sensors)
        parts, plan_segs, total = [], [], 0
        for seg in self.segments:
            scores, rows, info = self._search_segment(seg, q, k, cf, per_cell)
            parts.append((seg, scores, rows))
            plan_segs.append(info)
            total += info["candidates"]
        modes = {p["mode"] for p in plan_segs if p["candidates"]}
        plan = {"mode": modes.pop() if len(modes) == 1 else "mixed" if modes else "exact", "candidates": total,
                "segments": plan_segs}
        return _merge(parts, q.shape[0], k, per_cell, plan)

    # ------------------------------------------------------------------------------------------- one segment
    def _search_segment(self, seg: Segment, q: np.ndarray, k: int, cf: CompiledFilter | None,
                        per_cell: bool) -> tuple[np.ndarray, np.ndarray, dict]:
        index = self._ann.get(seg.name)
        thr, ranges, est = self.exact_max_rows, None, float(seg.n_alive)
        if index is None:
            broad = False
            if cf is not None and cf.needs_hint:
                cf.size_hint(cf.box_estimate(seg))
        elif cf is None:
            # unfiltered: the ANN index from an eighth of exact_max_rows rows on. Scanning every row exactly costs
            # about 60 ns a row, the ANN search a tenth of a millisecond: a 50,000-row segment beside a large one
            # (with an IVF index on the large one's lists, IndexStore._trained_ann) took 3 ms a query scanned
            broad = seg.n_alive > max(thr // 8, self.ann_min_selectivity * seg.n)
        else:  # a sample of the segment first; only a possibly selective filter pays for its key ranges
            limit = max(4 * thr, self.ann_min_selectivity * seg.n)
            box = cf.box_estimate(seg)  # when the box is selective on the sample, so is the filter: skip the test
            est = box if box is not None and box <= limit else cf.quick_estimate(seg)
            broad = est > limit
            if not broad:
                cf.size_hint(box)
                ranges = cf.row_ranges(seg)
                if int((ranges[1] - ranges[0]).sum()) > thr:
                    est = cf.estimate(seg, ranges)
                    broad = est > max(thr, self.ann_min_selectivity * seg.n)
        if not broad:
            scan = q.shape[0] <= SCAN_FEW_QUERIES
            if cf is not None and not scan and q.shape[0] <= SCAN_MAX_QUERIES:
                ranges = cf.row_ranges(seg) if ranges is None else ranges
                scan = int((ranges[1] - ranges[0]).sum()) >= SCAN_BATCH_ROWS
            if cf is not None and scan and not per_cell:
                got = cf.scan(seg, q, k, ranges)
                if got is not None:
                    scores, rows, matched = got
                    return scores, rows, {"segment": seg.name, "mode": "exact", "candidates": matched}
            rows = seg.alive_rows() if cf is None else cf.rows(seg, ranges)
            plan = {"segment": seg.name, "mode": "exact", "candidates": int(rows.size)}
            return (*_exact(seg, q, k, rows, per_cell), plan)
        est = max(est, 1.0)
        plan = {"segment": seg.name, "mode": "ann", "candidates": int(round(est)), "estimated": cf is not None}
        if cf is None and not seg.has_deleted and not per_cell:
            return (*ann_search(index, seg.ann_info, seg.vectors, q, k, seg.ann_info["width"]), plan)
        return (*self._ann_post_filter(seg, index, q, k, cf, per_cell, est / seg.n, plan), plan)

    def _ann_post_filter(self, seg: Segment, index: faiss.Index, q: np.ndarray, k: int, cf: CompiledFilter | None,
                         per_cell: bool, selectivity: float, plan: dict) -> tuple[np.ndarray, np.ndarray]:
        """ANN search over-fetching ``k / selectivity`` hits at a width scaled by ``selectivity ** -0.5``, keeping
        the hits that match; queries short of ``k`` matches (or distinct cells) are widened 4x per round, and past
        ``max_fetch`` finish on the selector path (CPU) or the exact scan (GPU)."""
        info = seg.ann_info
        limit = self._width_limit[seg.name]
        cap = self.max_fetch if not self.gpu else _GPU_MAX_K // int(info["rerank"])
        s = max(selectivity, 1e-6)
        want = k * (4 if per_cell else 1)
        kk = min(seg.n, cap, math.ceil(want * self.overfetch / s) + 8)
        width = min(limit, math.ceil(info["width"] * s ** -self.width_exponent))
        out_s, out_r = np.full((q.shape[0], k), -np.inf, np.float32), np.full((q.shape[0], k), -1, np.int64)
        todo, rounds, used = np.arange(q.shape[0]), 0, (width, kk)
        while todo.size:
            rounds += 1
            used = (width, kk)
            scores, rows = ann_search(index, info, seg.vectors, q[todo], kk, width)
            ok = rows >= 0
            ok[ok] = _matches(seg, cf, rows[ok])
            short = []
            for j, i in enumerate(todo):
                sc, r = scores[j][ok[j]], rows[j][ok[j]]
                if per_cell:
                    sc, r = _best_per_cell(seg, sc, r, k)
                seen_all = kk >= seg.n or (width >= limit and int((rows[j] >= 0).sum()) < kk)
                if r.size >= k or seen_all:
                    out_s[i], out_r[i] = _pad(sc[:k], k, -np.inf, np.float32)[0], _pad(r[:k], k, -1, np.int64)[0]
                else:
                    short.append(i)
            todo = np.array(short, dtype=np.int64)
            if todo.size and kk >= cap:
                plan["fallback"] = int(todo.size)
                out_s[todo], out_r[todo] = self._fallback(seg, index, q[todo], k, cf, per_cell, limit)
                break
            kk, width = min(seg.n, cap, kk * 4), min(limit, width * 2)
        plan.update(width=int(used[0]), fetch=int(used[1]), rounds=rounds)  # those of the last round
        return out_s, out_r

    def _fallback(self, seg: Segment, index: faiss.Index, q: np.ndarray, k: int, cf: CompiledFilter | None,
                  per_cell: bool, limit: int) -> tuple[np.ndarray, np.ndarray]:
        """Matches far from the queries: a few queries scanned exactly, one compiled pass each; more materialise
        the matches and search them with a FAISS selector (CPU) or exactly."""
        if cf is not None and not per_cell and q.shape[0] <= 4 and kernels.AVAILABLE:  # a few queries: scanned
            return cf.scan(seg, np.ascontiguousarray(q), k)[:2]  # in one compiled pass over the ranges (exact)
        rows = seg.alive_rows() if cf is None else cf.rows(seg)
        if not self.trust_selector or per_cell or rows.size <= 4 * self.exact_max_rows:
            return _exact(seg, q, k, rows, per_cell)
        mask = np.zeros(seg.n, dtype=bool)
        mask[rows] = True
        bitmap = np.packbits(mask, bitorder="little")
        sel = faiss.IDSelectorBitmap(seg.n, faiss.swig_ptr(bitmap))
        width = min(limit, math.ceil(seg.ann_info["width"] * seg.n / rows.size))
        scores, got = ann_search(index, seg.ann_info, seg.vectors, q, k, width, sel)
        bad = (got >= 0) & ~mask[np.maximum(got, 0)]
        if bad.any():  # never expected on CPU: the selector is trusted but still verified
            log.warning("ANN index returned %d rows outside the filter; dropped", int(bad.sum()))
            scores, got = np.where(bad, -np.inf, scores), np.where(bad, -1, got)
        return scores, got


def _matches(seg: Segment, cf: CompiledFilter | None, rows: np.ndarray) -> np.ndarray:
    """Which ``rows`` of ``seg`` match ``cf`` (None: which are not removed)."""
    return cf.check(seg, rows) if cf is not None else seg.alive_mask()[rows]


def _exact(seg: Segment, q: np.ndarray, k: int, rows: np.ndarray, per_cell: bool) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k (or best-per-cell top-k) over ``rows`` of ``seg``: ((nq, k) scores, (nq, k) rows)."""
    nq = q.shape[0]
    if rows.size == 0:
        return np.full((nq, k), -np.inf, np.float32), np.full((nq, k), -1, np.int64)
    if not per_cell:
        kk = min(k, rows.size)
        if nq == 1 and rows.size < seg.n:
            vals, ids = np.empty((1, kk), np.float32), np.empty((1, kk), np.int64)
            faiss.knn_inner_products_by_idx(faiss.swig_ptr(q), faiss.swig_ptr(seg.vectors), faiss.swig_ptr(rows),
                                            q.shape[1], 1, seg.n, rows.size, kk, faiss.swig_ptr(vals),
                                            faiss.swig_ptr(ids))
            if kk == k:
                return vals, ids
        else:
            whole = rows.size == seg.n
            vals, pos = faiss.knn(q, seg.vectors if whole else seg.vectors[rows], kk,
                                  metric=faiss.METRIC_INNER_PRODUCT)
            ids = pos if whole else rows[pos]
        return _pad(vals, k, -np.inf, np.float32), _pad(ids, k, -1, np.int64)
    scores = faiss.pairwise_distances(q, seg.vectors[rows], metric=faiss.METRIC_INNER_PRODUCT)  # (nq, n_rows)
    out_s, out_r = [], []
    for i in range(nq):
        m = min(rows.size, 4 * k)
        while True:
            top = np.argpartition(-scores[i], m - 1)[:m] if m < rows.size else np.arange(rows.size)
            top = top[np.argsort(-scores[i][top], kind="stable")]
            s, r = _best_per_cell(seg, scores[i][top], rows[top], k)
            if r.size >= k or m >= rows.size:
                break
            m = min(rows.size, m * 4)
        out_s.append(_pad(s, k, -np.inf, np.float32))
        out_r.append(_pad(r, k, -1, np.int64))
    return np.vstack(out_s), np.vstack(out_r)


def _best_per_cell(seg: Segment, scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """From hits sorted by descending score, the first (best) hit of each cell, at most ``k``."""
    _, first = np.unique(seg.cell[rows], return_index=True)
    first = np.sort(first)[:k]
    return scores[first], rows[first]


def _pad(a: np.ndarray, k: int, fill: float, dtype: type) -> np.ndarray:
    a = np.atleast_2d(np.asarray(a, dtype=dtype))
    if a.shape[1] >= k:
        return a[:, :k]
    return np.concatenate([a, np.full((a.shape[0], k - a.shape[1]), fill, dtype=dtype)], axis=1)


def _cells_of(seg: Segment, rows: np.ndarray) -> np.ndarray:
    """Cell ids (object array of str, "" for rows < 0) of ``rows`` of ``seg``."""
    valid = rows >= 0
    return np.where(valid, seg.cell_names[seg.cell[np.where(valid, rows, 0)]], "").astype(object)


def _merge(parts: list[tuple[Segment, np.ndarray, np.ndarray]], nq: int, k: int, per_cell: bool,
           plan: dict) -> SearchResult:
    """Exact top-k over the union of per-segment top-k lists (best hit per cell first when ``per_cell``)."""
    if not parts:
        return SearchResult(np.full((nq, k), -1, np.int64), np.full((nq, k), -np.inf, np.float32), plan,
                            cells=np.full((nq, k), "", dtype=object))
    if len(parts) == 1:
        seg, scores, rows = parts[0]
        full = rows.size == 0 or rows.min() >= 0
        return SearchResult(seg.tile_id.take(rows) if full else np.where(rows >= 0, seg.tile_id.take(
            np.maximum(rows, 0)), -1), scores, plan, hits=[(seg, rows)])
    tiles = np.concatenate([np.where(r >= 0, sg.tile_id[np.maximum(r, 0)], -1) for sg, _, r in parts], axis=1)
    cells = np.concatenate([_cells_of(sg, r) for sg, _, r in parts], axis=1)
    scores = np.concatenate([p[1] for p in parts], axis=1)
    order = np.argsort(-scores, axis=1, kind="stable")
    scores, tiles, cells = (np.take_along_axis(a, order, 1) for a in (scores, tiles, cells))
    if per_cell:
        for i in range(nq):
            valid = np.flatnonzero(tiles[i] >= 0)
            _, first = np.unique(cells[i][valid], return_index=True)
            keep = valid[np.sort(first)][:k]
            scores[i, :k], tiles[i, :k], cells[i, :k] = (_pad(a[i][keep][None], k, f, a.dtype)[0] for a, f in
                                                         ((scores, -np.inf), (tiles, -1), (cells, "")))
    return SearchResult(tiles[:, :k], scores[:, :k], plan, cells=cells[:, :k])
