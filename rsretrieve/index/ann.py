"""The optional ANN index of a segment: FAISS index building, search-width calibration, search and re-ranking.

A segment's ``ann.faiss`` holds a FAISS index whose ids are the segment's row numbers; ``ann.json`` says how to search
it: the factory, the search-width parameter (``nprobe`` or ``efSearch``) and the width calibrated at build time to
``TARGET_RECALL`` recall@10, and by how much to over-fetch for exact re-ranking from the raw vectors when the codes are
approximate (PQ). GPU copies of these indexes are made, and never trusted to apply a selector, by
:class:`rsretrieve.index.search.Searcher`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path

import faiss
import numpy as np

from rsretrieve.files import write_atomic
from rsretrieve.index.segment import _CHUNK

log = logging.getLogger(__name__)

#: segments with at least this many rows get an ANN index under ``factory="auto"``
ANN_MIN_ROWS = 1_000_000
#: recall@10 the search width of a segment's ANN index is calibrated to when it is built
TARGET_RECALL = 0.97


def auto_factory(n: int, dim: int) -> str | None:
    """The FAISS factory ``factory="auto"`` uses for a segment of ``n`` rows: exact below ``ANN_MIN_ROWS``,
    IVF-Flat up to 4M rows, IVF-PQ (re-ranked exactly from the raw vectors) above."""
    if n < ANN_MIN_ROWS:
        return None
    nlist = int(min(4096, 2 ** round(np.log2(4 * np.sqrt(n)))))
    return f"IVF{nlist},Flat" if n < 4_000_000 else f"IVF{nlist},PQ{dim // 4 if dim % 4 == 0 else dim}"


def check_factory(factory: str, dim: int) -> int:
    """Validate a FAISS factory string for vectors of ``dim`` before any work is done; returns the fewest rows a
    segment needs to train it (its IVF lists, 256 PQ centroids; 0 when nothing is trained).

    Raises:
        ValueError: FAISS cannot build ``factory`` (the message names it and FAISS's reason).
    """
    try:
        index = faiss.index_factory(int(dim), factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        reason = re.sub(r"^Error in .*? at \S+:\d+: ", "", lines[0]) if lines else ""
        raise ValueError(f"--factory {factory!r} is not a FAISS index factory string for {dim}-d vectors"
                         f"{': ' + reason if reason else ''} (examples: 'IVF1024,Flat', 'IVF4096,PQ32', "
                         f"'HNSW32')") from None
    idmap = [p.strip() for p in factory.split(",") if p.strip().startswith("IDMap")]  # also behind PCA32, OPQ8, ...
    if idmap:  # its add() refuses rows without ids: a traceback once every tile was embedded
        raise ValueError(f"--factory {factory!r}: a segment's ANN index is searched by row number, mapped to tile ids "
                         f"by rsretrieve; give the factory without {idmap[0]!r}")
    if index.is_trained:
        return 0
    ivf = faiss.try_extract_index_ivf(index)
    return max(ivf.nlist if ivf is not None else 0, 256 if "PQ" in factory else 0)


def build_ann(seg_dir: Path, vectors: np.ndarray, factory: str, seed: int = 0,
              trained: tuple[faiss.Index, dict] | None = None) -> dict:
    """Train and fill a FAISS index over ``vectors`` (ids = row numbers), calibrate its search width to
    ``TARGET_RECALL`` recall@10 on a sample of the rows, and write ``ann.faiss`` and ``ann.json``.

    ``trained``: (index, its ``ann.json`` info) of ``factory``, trained already (another segment's). Its copy,
    emptied, is filled instead of training one, so a segment too small to train its own IVF lists (or not worth it)
    still gets an ANN index, on the larger segment's lists and codebooks, searched at that one's width: the two
    then answer together as one IVF index over both would (same lists, same probes), whereas calibrating on the
    small segment's own rows (sparser: their neighbours lie in more lists) asked 256 lists of 4,096 for 50,000
    rows beside 1M, against 4."""
    n, d = vectors.shape
    if trained is not None:
        index = faiss.clone_index(trained[0])
        index.reset()
    else:
        index = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
    for part in (index, faiss.try_extract_index_ivf(index)):
        part = faiss.downcast_index(part) if part is not None else None
        if hasattr(part, "do_polysemous_training"):
            part.do_polysemous_training = False  # only useful for Hamming-distance search, and slow to train
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    if not index.is_trained:
        ivf = faiss.try_extract_index_ivf(index)
        ntrain = min(n, 64 * ivf.nlist if ivf is not None else 100_000, 500_000)
        index.train(np.ascontiguousarray(vectors[np.sort(rng.choice(n, ntrain, replace=False))]))
    for i in range(0, n, _CHUNK):
        index.add(np.ascontiguousarray(vectors[i:i + _CHUNK], dtype=np.float32))
    tail = factory.split(",")[-1].strip()
    exact_codes = tail == "Flat" or ("," not in factory and factory.startswith("HNSW"))
    info = {"file": "ann.faiss", "factory": factory, "rerank": 1 if exact_codes else 8,
            "param": "nprobe" if faiss.try_extract_index_ivf(index) is not None else
            "efSearch" if "HNSW" in factory else None, "width": 0}
    if trained is None:
        info.update(_calibrate(index, info, vectors, rng))
    else:
        info.update(width=int(trained[1]["width"]), recall=None, lists_of=trained[1]["lists_of"])
    info["build_s"] = round(time.perf_counter() - t0, 3)
    faiss.write_index(index, str(seg_dir / "ann.faiss"))
    with open(seg_dir / "ann.faiss", "rb+") as f:
        os.fsync(f.fileno())
    write_atomic(seg_dir / "ann.json", json.dumps(info).encode())
    log.info("built %s over %d rows in %.1f s: %s=%s gives recall@10 %.3f", factory, n, info["build_s"],
             info["param"], info["width"], info["recall"])
    return info


def read_ann(path: Path) -> faiss.Index:
    """A segment's ANN index, its inverted lists memory-mapped (read-only) rather than read.

    Reading the lists of a 1M-vector IVF4096,Flat index (522 MB) took 0.45 s of every query process's start; mapped,
    opening takes milliseconds and the lists are paged in as queries probe them (segments are immutable). FAISS's
    mapped lists prefetch every probed list on a pool of threads, which doubled the latency of a single query
    (measured 133 against 66 us p50 at nprobe 4): that prefetch is turned off, and searches then take the time of
    the lists read into memory. Indexes without inverted lists (HNSW) are read as they are.
    """
    index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
    lists = _mapped_lists(index)
    if lists is not None:
        lists.prefetch_nthread = 0
    return index


def _mapped_lists(index: faiss.Index) -> faiss.OnDiskInvertedLists | None:
    """The memory-mapped inverted lists of an IVF index (:func:`read_ann`); None for lists in memory or no IVF."""
    ivf = faiss.try_extract_index_ivf(index)
    lists = faiss.downcast_InvertedLists(ivf.invlists) if ivf is not None else None
    return lists if isinstance(lists, faiss.OnDiskInvertedLists) else None


def touch_lists(index: faiss.Index) -> int:
    """Read a byte of every page of an index's memory-mapped inverted lists (:func:`read_ann`), so that a service's
    first queries do not each pay the page faults of the lists they probe first (a fresh process's first 200
    queries at 30% selectivity: p99 39 ms against 1.3 ms); 40 ms for a 1M-vector IVF4096,Flat index whose file is in
    the page cache. Returns the bytes mapped (0: lists not mapped)."""
    lists = _mapped_lists(index)
    if lists is None or not lists.totsize:
        return 0
    mapped = faiss.rev_swig_ptr(lists.ptr, lists.totsize)
    int(mapped[::4096].sum())  # one read per 4 KiB page
    return int(lists.totsize)


def read_trained(path: Path) -> faiss.Index:
    """The ANN index at ``path``, trained, with its inverted lists emptied, in memory (a segment's own
    :func:`read_ann` copy is mapped read-only and cannot be cloned or reset): what :func:`build_ann` fills for a
    segment borrowing another's lists."""
    index = read_ann(path)
    ivf = faiss.extract_index_ivf(index)
    empty = faiss.ArrayInvertedLists(ivf.nlist, ivf.code_size)
    ivf.replace_invlists(empty, True)  # frees the mapped lists
    empty.this.disown()  # owned by the index now
    index.reset()  # ntotal of the index and of any wrapper around its IVF part
    return index


def ann_params(info: dict, width: int, sel: faiss.IDSelector | None = None) -> faiss.SearchParameters:
    """FAISS search parameters for a segment's ANN index at search width ``width`` with optional selector."""
    if info["param"] == "nprobe":
        return faiss.SearchParametersIVF(nprobe=int(width), sel=sel)
    if info["param"] == "efSearch":
        return faiss.SearchParametersHNSW(efSearch=int(width), sel=sel)
    return faiss.SearchParameters(sel=sel)


def ann_search(index: faiss.Index, info: dict, vectors: np.ndarray, q: np.ndarray, k: int,
               width: int, sel: faiss.IDSelector | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Search an ANN index; approximate codes are re-ranked exactly with the stored vectors.

    Args:
        q: (nq, d) float32 queries. k: results wanted per query. width: nprobe / efSearch.

    Returns:
        (scores, rows), each (nq, k): inner products (descending) and row numbers (-1 where fewer results).
    """
    rerank = int(info["rerank"])
    D, I = index.search(q, k * rerank, params=ann_params(info, max(width, k) if info["param"] == "efSearch"
                                                            else width, sel))
    if rerank == 1:  # FAISS pads missing hits with -FLT_MAX (inner product): -inf, as everywhere else
        return (D, I) if I[:, -1].min() >= 0 else (np.where(I >= 0, D, -np.inf).astype(np.float32), I)
    valid = I >= 0
    exact = np.einsum("qkd,qd->qk", vectors[np.where(valid, I, 0)], q)
    exact[~valid] = -np.inf
    top = np.argsort(-exact, axis=1, kind="stable")[:, :k]
    scores = np.take_along_axis(exact, top, 1)
    rows = np.where(np.isfinite(scores), np.take_along_axis(I, top, 1), -1)
    return scores, rows


def _calibrate(index: faiss.Index, info: dict, vectors: np.ndarray, rng: np.random.Generator,
               k: int = 10, nq: int = 64) -> dict:
    """Smallest search width reaching ``TARGET_RECALL`` recall@k on sample rows used as queries (self excluded)."""
    n = vectors.shape[0]
    if info["param"] is None:
        return {"width": 0, "recall": None}
    qrows = rng.choice(n, min(nq, n), replace=False)
    q = np.ascontiguousarray(vectors[qrows])
    _, gt = faiss.knn(q, np.ascontiguousarray(vectors), k + 1, metric=faiss.METRIC_INNER_PRODUCT)
    truth = [set(g[g != r][:k].tolist()) for g, r in zip(gt, qrows)]
    limit = faiss.extract_index_ivf(index).nlist if info["param"] == "nprobe" else 4096
    width, recall = 1 if info["param"] == "nprobe" else 16, 0.0
    while True:
        _, got = ann_search(index, info, vectors, q, k + 1, width)
        recall = float(np.mean([len(t & set(g[g != r][:k].tolist())) / k for t, g, r in zip(truth, got, qrows)]))
        if recall >= TARGET_RECALL or width >= limit:
            return {"width": int(width), "recall": round(recall, 4)}
        width = min(2 * width, limit)
