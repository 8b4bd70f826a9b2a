"""Compiled kernels of filtered search (numba): the steps of a selective query that numpy does in many small passes.

- :func:`scan_topk`: one pass over a segment's candidate row ranges for a query (or a batch) that checks the
  filter's columns (time, removed rows, sensor, exclusions, the bbox or the polygon's rasters for rows not wholly
  inside the geometry), scores the matching rows and keeps the top-k. In numpy that is a dozen array passes, a
  materialised row list and a FAISS by-index scan over the ~70% of rows that match, which come in thousands of
  short runs. Long scans are cut into parts scanned on numba's threads at once (:func:`scan_topk_parallel`).
  Rows are scored from the segment's uint8 scalar codes (a quarter of the bytes of the vectors) and only those
  whose score could still reach the top-k again from the float32 vectors, so the answer is the float32 one.
  Points near a polygon's edge are tested against its rings (:func:`_point_states`); the few within 1e-9 degrees
  of an edge are returned unscored, checked with shapely (exact) and scored by :func:`score_topk`.
- :func:`box_row_ranges`, :func:`rect_row_ranges`: a box's (or a polygon raster's) cover cells, their Hilbert keys
  and the binary searches that turn them into row ranges, in one call.
- :func:`raster_states`, :func:`raster_coarse`: the fine and coarse cell states of a polygon's raster
  (:class:`rsretrieve.index.region.Raster`); :func:`polygon_row_ranges`: a one-part polygon's rings to its
  raster and its row ranges in one call.

Each computes what the numpy code computes (the raster and range kernels bit for bit, without fast-math; the scan
up to the summation order of the dot products), and the tests compare the two. Without numba (``AVAILABLE``
False) the numpy code runs. Compiled code is cached next to this file (numba ``cache=True``): the first call after
an install compiles for several seconds (``scripts/bench_search.py`` measures after a warm-up call).
"""

from __future__ import annotations

import ctypes
import math
import sys
from pathlib import Path

import numpy as np

try:
    import numba
except ImportError:  # pragma: no cover - numba is a dependency; the numpy path remains
    numba = None

from rsretrieve.index.segment import TIME_UNKNOWN

AVAILABLE = numba is not None
#: Intel TBB as the ``tbb`` wheel installs it, in the environment's lib/ (see :func:`_load_tbb`)
TBB_LIBRARY = Path(sys.prefix, "lib", "libtbb.so.12")


def _load_tbb() -> bool:
    """Load the ``tbb`` wheel's library so that numba runs its parallel loops on TBB rather than OpenMP.

    Why: with numba's OpenMP layer each thread gets a fixed share of :func:`scan_topk_parallel`'s parts and the
    call returns when the last share is done, so when another process holds a core the scan waits for the
    scheduler: beside a process spinning on one of 2 cores, 1% queries of 1M rows had a p99 of 8 ms on OpenMP
    against 0.3-0.8 ms on TBB, whose idle threads (the caller's included) take the parts no thread has started; on
    an idle machine the two were within about 10% of each other at p50, either way (``scripts/bench_threads.py``,
    docs/benchmarks.md).
    numba looks for ``libtbb.so.12`` on the loader's path only, where a virtual environment's lib/ is not; loaded
    here first by its path, it is found by name. Nothing is done where the user chose another layer
    (``NUMBA_THREADING_LAYER``, ``numba.config.THREADING_LAYER``) or the library is not there (numba then uses
    OpenMP).
    Returns whether the library was loaded.
    """
    if numba is None or numba.config.THREADING_LAYER not in ("default", "tbb") or not TBB_LIBRARY.is_file():
        return False
    try:
        ctypes.CDLL(str(TBB_LIBRARY), mode=ctypes.RTLD_GLOBAL)
    except OSError:
        return False
    return True


_load_tbb()


def threads() -> int:
    """Threads numba's parallel kernels may use (``NUMBA_NUM_THREADS``, ``numba.set_num_threads``); 1 without
    numba."""
    return numba.get_num_threads() if AVAILABLE else 1

_BLOCK = 256  # rows checked before they are scored together
#: in scans of at least _SPAN_ROWS rows (codes beyond the caches), a span of at least _SPAN_MIN rows with at least
#: this share (numerator, denominator) of matches is scored whole from its codes (:func:`_score_span`) rather
#: than compacted first; smaller scans read codes that stay in cache, where the skipped rows cost less than
#: scoring them (measured at 1% of 1M rows: 126 us compacted, 148 us whole spans; at 10%: 3.8 vs 2.3 ms)
_SPAN_ROWS = 1 << 16
_SPAN_MIN = 16
_SPAN_DENSITY = (3, 8)
_EDGE_EPS2 = 1e-18  # (degrees)**2: points closer to a polygon's edge than 1e-9 degrees are left to shapely


#: no fast-math: a score is the same float32 number whichever kernel computes it (one row or four, one thread or
#: many) on whichever CPU. With reassociation LLVM ordered each sum by the loop around it and the target's vector
#: width: on an AVX2 CPU (not on the AVX-512 one the kernels were first measured on) the four-row and one-row dot
#: products, and the parallel scan, disagreed in the last bit. :func:`_dot` fixes the order in the source instead.
_FASTMATH = False


def _njit(fn=None, **kw):
    if fn is None:
        return lambda f: _njit(f, **kw)
    return numba.njit(cache=True, nogil=True, fastmath=_FASTMATH, boundscheck=False, **kw)(fn) if AVAILABLE else fn


def _njit_parallel(fn):
    """Compiled with numba's parallel loops (``prange``), on numba's threads (``numba.get_num_threads()``)."""
    return numba.njit(cache=True, nogil=True, boundscheck=False, parallel=True)(fn) if AVAILABLE else fn


def _njit_exact(fn):
    """Compiled without fastmath: the raster's arithmetic is the numpy code's, operation for operation, and the
    point-in-polygon test's error bound holds."""
    return numba.njit(cache=True, nogil=True, boundscheck=False)(fn) if AVAILABLE else fn


@_njit
def _dot(matrix, row, w):
    """Inner product of row ``row`` of ``matrix`` (float32 vectors) with ``w`` (float32), in a fixed order: eight
    partial sums over ``j mod 8`` (for ``j < d - d % 8``), added pairwise, then the last ``d % 8`` terms in turn.
    Eight independent sums keep eight additions in flight where one sum would wait for each in turn."""
    d = w.size
    m = d - d % 8
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = np.float32(0.0)
    for j in range(0, m, 8):
        a0 += np.float32(matrix[row, j]) * w[j]
        a1 += np.float32(matrix[row, j + 1]) * w[j + 1]
        a2 += np.float32(matrix[row, j + 2]) * w[j + 2]
        a3 += np.float32(matrix[row, j + 3]) * w[j + 3]
        a4 += np.float32(matrix[row, j + 4]) * w[j + 4]
        a5 += np.float32(matrix[row, j + 5]) * w[j + 5]
        a6 += np.float32(matrix[row, j + 6]) * w[j + 6]
        a7 += np.float32(matrix[row, j + 7]) * w[j + 7]
    s = ((a0 + a4) + (a1 + a5)) + ((a2 + a6) + (a3 + a7))
    for j in range(m, d):
        s += np.float32(matrix[row, j]) * w[j]
    return s


@_njit(inline="always")
def _worse(hs, hr, a, b):
    """Whether heap entry ``a`` ranks below entry ``b``: a lower score, or an equal score and a higher row."""
    return hs[a] < hs[b] or (hs[a] == hs[b] and hr[a] > hr[b])


@_njit(inline="always")
def _swap(hs, hr, a, b):
    hs[a], hs[b] = hs[b], hs[a]
    hr[a], hr[b] = hr[b], hr[a]


@_njit
def _sift_down(hs, hr, k):
    """Restore the min-heap (scores ``hs``, rows ``hr``, worst at 0) after its root was replaced."""
    i = 0
    while True:
        c = 2 * i + 1
        if c >= k:
            return
        if c + 1 < k and _worse(hs, hr, c + 1, c):
            c += 1
        if not _worse(hs, hr, c, i):
            return
        _swap(hs, hr, i, c)
        i = c


@_njit(inline="always")
def _push(hs, hr, k, filled, score, row):
    """Offer (score, row) to the top-``k`` heap holding ``filled`` entries; returns the new count. Ties keep the
    lower row, as a stable sort by descending score does."""
    if filled < k:
        i = filled
        hs[i], hr[i] = score, row
        while i > 0 and _worse(hs, hr, i, (i - 1) // 2):  # sift up
            _swap(hs, hr, i, (i - 1) // 2)
            i = (i - 1) // 2
        return filled + 1
    if score > hs[0] or (score == hs[0] and row < hr[0]):
        hs[0], hr[0] = score, row
        _sift_down(hs, hr, k)
    return filled


@_njit
def _sorted_contains(sorted_values, v):
    if sorted_values.size == 0:
        return False
    i = np.searchsorted(sorted_values, v)
    return i < sorted_values.size and sorted_values[i] == v


@_njit
def _ranked(hs, hr, filled):
    """The heap's entries by descending score, ties by ascending row: (scores, rows)."""
    keys = np.empty(filled, np.float64)
    for i in range(filled):
        keys[i] = -hs[i]
    order = np.argsort(keys, kind="mergesort")
    out_s = np.empty(filled, np.float32)
    out_r = np.empty(filled, np.int64)
    i = 0
    while i < filled:
        j = i
        while j + 1 < filled and keys[order[j + 1]] == keys[order[i]]:
            j += 1
        tied = np.sort(hr[order[i:j + 1]])
        for m in range(j + 1 - i):
            out_s[i + m] = hs[order[i]]
            out_r[i + m] = tied[m]
        i = j + 1
    return out_s, out_r


@_njit(inline="always")
def _dot4(matrix, r0, r1, r2, r3, w):
    """:func:`_dot` of rows ``r0..r3`` (the same numbers, bit for bit)."""
    return _dot(matrix, r0, w), _dot(matrix, r1, w), _dot(matrix, r2, w), _dot(matrix, r3, w)


@_njit
def _score_block(vectors, q, rows, count, hs, hr, k, filled):
    """Score ``rows[:count]`` four at a time (:func:`_dot4`) into the heap."""
    i = 0
    while i + 4 <= count:
        r0, r1, r2, r3 = rows[i], rows[i + 1], rows[i + 2], rows[i + 3]
        s0, s1, s2, s3 = _dot4(vectors, r0, r1, r2, r3, q)
        if filled < k or s0 >= hs[0]:
            filled = _push(hs, hr, k, filled, s0, r0)
        if filled < k or s1 >= hs[0]:
            filled = _push(hs, hr, k, filled, s1, r1)
        if filled < k or s2 >= hs[0]:
            filled = _push(hs, hr, k, filled, s2, r2)
        if filled < k or s3 >= hs[0]:
            filled = _push(hs, hr, k, filled, s3, r3)
        i += 4
    while i < count:
        score = _dot(vectors, rows[i], q)
        if filled < k or score >= hs[0]:
            filled = _push(hs, hr, k, filled, score, rows[i])
        i += 1
    return filled


@_njit(inline="always")
def _idot(codes, row, w):
    """Inner product of the uint8 codes of row ``row`` with the int16 weights ``w``, exact, in int32 (every partial
    sum is truncated to int32, which lets LLVM keep the products 16-bit and use the CPU's multiply-add of pairs:
    about 1.6x faster than converting the codes to float32, measured; :func:`_code_query` keeps the sum in
    range)."""
    s = np.int32(0)
    for j in range(w.size):
        s = np.int32(s + np.int32(np.int32(codes[row, j]) * np.int32(w[j])))
    return s


@_njit(inline="always")
def _idot4(codes, r0, r1, r2, r3, w):
    """:func:`_idot` of four rows."""
    s0 = np.int32(0)
    s1 = np.int32(0)
    s2 = np.int32(0)
    s3 = np.int32(0)
    for j in range(w.size):
        wj = np.int32(w[j])
        s0 = np.int32(s0 + np.int32(np.int32(codes[r0, j]) * wj))
        s1 = np.int32(s1 + np.int32(np.int32(codes[r1, j]) * wj))
        s2 = np.int32(s2 + np.int32(np.int32(codes[r2, j]) * wj))
        s3 = np.int32(s3 + np.int32(np.int32(codes[r3, j]) * wj))
    return s0, s1, s2, s3


@_njit
def _code_query(q, params):
    """The query against a segment's scalar codes (``params``: offset, step, error per dimension; see
    :func:`rsretrieve.index.segment.write_codes`): int16 weights ``cw`` of the codes, their ``scale``, the
    constant term ``c0`` (a row's code score is ``c0 + scale * sum(cw * code)``), and the bound on how far a code
    score can be from the row's float32 score.

    The bound adds: the codes' error (``sum(|q_j| * error_j)``); the rounding of the weights to integers (each
    weight is off by at most half a unit of ``scale``, times a code of at most 255: summed exactly per dimension);
    and the rounding of the float32 sum of the vector's score, taken at four times the usual bound (``d`` units of
    2**-24 of the sum of magnitudes). The integer sum itself is exact: its weights are at most
    ``(2**31 - 1) // (255 * d)`` in magnitude, so no sum of ``d`` products leaves int32."""
    d = q.size
    w = np.empty(d, np.float64)
    c0 = 0.0
    err = 0.0
    mag = 0.0
    top = 0.0
    for j in range(d):
        qj = np.float64(q[j])
        w[j] = qj * params[1, j]
        top = max(top, abs(w[j]))
        c0 += qj * params[0, j]
        err += abs(qj) * params[2, j]
        mag += abs(qj) * (abs(params[0, j]) + 255.0 * params[1, j] + params[2, j])
    limit = max(1, min(32767, (2 ** 31 - 1) // (255 * max(d, 1))))
    scale = top / limit if top > 0.0 else 1.0
    cw = np.empty(d, np.int16)
    for j in range(d):
        c = min(max(round(w[j] / scale), -limit), limit)
        cw[j] = np.int16(c)
        err += 255.0 * abs(w[j] - scale * c)
    return cw, scale, c0, err * (1.0 + 1e-12) + 2.4e-7 * (d + 2) * (1.0 + 2.0 * mag + abs(c0))


@_njit(inline="always")
def _offer(vectors, q, row, upper, hs, hr, k, filled):
    """Push ``row`` scored from its vector when ``upper`` (a bound on its score) can still reach the heap."""
    if filled < k or upper >= hs[0]:
        score = _dot(vectors, row, q)
        if filled < k or score >= hs[0]:
            filled = _push(hs, hr, k, filled, score, row)
    return filled


@_njit
def _score_codes(vectors, q, codes, cw, scale, c0, margin, rows, count, hs, hr, k, filled):
    """As :func:`_score_block`, from the codes first: a row is scored from its vector only when its code score
    plus the bound ``margin`` reaches the heap's worst score, so the heap ends as :func:`_score_block` leaves it."""
    i = 0
    lift = c0 + margin
    while i + 4 <= count:
        r0, r1, r2, r3 = rows[i], rows[i + 1], rows[i + 2], rows[i + 3]
        a0, a1, a2, a3 = _idot4(codes, r0, r1, r2, r3, cw)
        # one test for the four first: with the offers inlined in the common path LLVM compiles the sums above
        # about ten times slower (measured)
        if filled < k or np.float64(max(max(a0, a1), max(a2, a3))) * scale + lift >= hs[0]:
            filled = _offer(vectors, q, r0, np.float64(a0) * scale + lift, hs, hr, k, filled)
            filled = _offer(vectors, q, r1, np.float64(a1) * scale + lift, hs, hr, k, filled)
            filled = _offer(vectors, q, r2, np.float64(a2) * scale + lift, hs, hr, k, filled)
            filled = _offer(vectors, q, r3, np.float64(a3) * scale + lift, hs, hr, k, filled)
        i += 4
    while i < count:
        filled = _offer(vectors, q, rows[i], np.float64(_idot(codes, rows[i], cw)) * scale + lift, hs, hr, k,
                        filled)
        i += 1
    return filled


@_njit
def _score_span(vectors, q, codes, cw, scale, c0, margin, start, size, mask, hs, hr, k, filled):
    """As :func:`_score_codes` for the rows ``start .. start + size - 1`` where ``mask`` is set: every row of the
    span is scored from its codes, in order, and only the masked ones are offered. Reading a span whole is a
    stream the CPU prefetches; the same rows with a third of them skipped are not, and cost twice as much in all
    (measured: 150k consecutive rows 1.3 ms, 105k of them 1.9-2.5 ms)."""
    i = 0
    lift = c0 + margin
    while i + 4 <= size:
        r = start + i
        a0, a1, a2, a3 = _idot4(codes, r, r + 1, r + 2, r + 3, cw)
        if filled < k or np.float64(max(max(a0, a1), max(a2, a3))) * scale + lift >= hs[0]:
            if mask[i]:
                filled = _offer(vectors, q, r, np.float64(a0) * scale + lift, hs, hr, k, filled)
            if mask[i + 1]:
                filled = _offer(vectors, q, r + 1, np.float64(a1) * scale + lift, hs, hr, k, filled)
            if mask[i + 2]:
                filled = _offer(vectors, q, r + 2, np.float64(a2) * scale + lift, hs, hr, k, filled)
            if mask[i + 3]:
                filled = _offer(vectors, q, r + 3, np.float64(a3) * scale + lift, hs, hr, k, filled)
        i += 4
    while i < size:
        if mask[i]:
            filled = _offer(vectors, q, start + i, np.float64(_idot(codes, start + i, cw)) * scale + lift, hs, hr,
                            k, filled)
        i += 1
    return filled


@_njit(inline="always")
def _score_rows(vectors, q, use_codes, codes, cw, scale, c0, margin, rows, count, hs, hr, k, filled):
    if use_codes:
        return _score_codes(vectors, q, codes, cw, scale, c0, margin, rows, count, hs, hr, k, filled)
    return _score_block(vectors, q, rows, count, hs, hr, k, filled)


@_njit(inline="always")
def _raster_state(states, params, x, y):
    """State of point (x, y) against the rasters of a region's parts (see ``Region.raster_params``): 1 inside
    some part, 2 near an edge of some part and inside none, 0 outside all."""
    near = False
    for p in range(params.shape[0]):
        c = math.floor((x + 180.0) * params[p, 0] - params[p, 2])
        r = math.floor((y + 90.0) * params[p, 1] - params[p, 3])
        c = min(max(c, 0.0), params[p, 4])
        r = min(max(r, 0.0), params[p, 5])
        st = states[int(params[p, 7]) + int(r) * int(params[p, 6]) + int(c)]
        if st == 1:
            return 1
        if st == 2:
            near = True
    return 2 if near else 0


_U8 = 8 * 2.0 ** -53  # eight units of rounding: a cross product this small against its terms has no sure sign


@_njit_exact
def _point_states(xy, ring_start, ring_part, lon, lat, rows, count, out):
    """State of the points ``(lon, lat)[rows[:count]]`` against a (multi)polygon given as rings, into ``out``: 1
    inside some part, 0 outside all, 2 undecided (on or within ``_EDGE_EPS2 ** 0.5`` degrees of an edge of a part
    it is not inside, or on a row where the side of an edge has no sure sign). Ring ``r`` is
    ``xy[ring_start[r]:ring_start[r + 1]]``, closed, of part ``ring_part[r]``; the rings of a part are consecutive.

    Per part, the even-odd count of the edges a ray to the east crosses: an edge is crossed when it straddles the
    point's row (exact comparisons, half-open so that a vertex on the row counts once) and the point is west of it,
    the sign of a cross product, trusted only when it exceeds eight units of rounding of its terms. Points near an
    edge are left to shapely, whose closed polygons hold their boundary (the count does not). Edge by edge over all
    the points, without branches; compiled without fast-math."""
    eps2 = _EDGE_EPS2
    px, py = np.empty(count, np.float64), np.empty(count, np.float64)
    odd, near = np.empty(count, np.uint8), np.empty(count, np.uint8)  # (not bool: the loop over them vectorises)
    for m in range(count):
        px[m], py[m] = lon[rows[m]], lat[rows[m]]
        out[m] = 0
    r = 0
    n_rings = ring_start.size - 1
    while r < n_rings:
        part = ring_part[r]
        odd[:] = 0
        near[:] = 0
        while r < n_rings and ring_part[r] == part:
            for i in range(ring_start[r], ring_start[r + 1] - 1):
                x1, y1, x2, y2 = xy[i, 0], xy[i, 1], xy[i + 1, 0], xy[i + 1, 1]
                dx, dy = x2 - x1, y2 - y1
                ll = dx * dx + dy * dy
                inv = 1.0 / ll if ll > 0.0 else 0.0
                west = 1.0 if dy > 0.0 else -1.0  # cross * west < 0: the point is west of an edge it straddles
                for m in range(count):
                    ux, uy = px[m] - x1, py[m] - y1
                    a, b = ux * dy, uy * dx
                    cross = a - b
                    along = ux * dx + uy * dy
                    vx, vy = px[m] - x2, py[m] - y2
                    d2 = cross * cross * inv  # squared distance: to the line, or to the nearer end beyond it
                    if along >= ll:
                        d2 = vx * vx + vy * vy
                    if along <= 0.0:
                        d2 = ux * ux + uy * uy
                    straddles = (y1 > py[m]) != (y2 > py[m])
                    sure = abs(cross) > _U8 * (abs(a) + abs(b))
                    near[m] |= np.uint8((d2 <= eps2) | (straddles & (not sure)))
                    odd[m] ^= np.uint8(straddles & (cross * west < 0.0))
            r += 1
        for m in range(count):
            if not near[m] and odd[m]:
                out[m] = 1
            elif near[m] and out[m] == 0:
                out[m] = 2


@_njit
def scan_topk(vectors, q, k, starts, stops, inside, has_time, time, t_lo, t_hi, alive, sensor, sensor_ok,
              scene_id, excl_scenes, cell, excl_cells, geo_mode, lon, lat, bbox, rast_states, rast_params, codes,
              code_params, ring_xy, ring_start, ring_part):
    """Top-``k`` rows by inner product with each query of ``q`` ((nq, d) float32) among the rows of the half-open
    ranges ``starts..stops`` that match.

    A row matches when: with ``has_time``, its time is known and within ``[t_lo, t_hi]`` (pass the int64 extremes
    for an open side); it is alive (``alive`` empty: all are); its sensor code is marked in ``sensor_ok`` (empty:
    any sensor); its scene is not in ``excl_scenes`` and its cell code not in ``excl_cells`` (sorted); and, in ranges
    with ``inside == 0``, by ``geo_mode``: 0, no geometric test; 1, inside ``bbox`` (W, S, E, N, edges included,
    ``W > E`` across the antimeridian); 2, inside ``bbox`` when it is given (4 values, else empty), then left to the
    caller: such rows are returned unscored; 3, as 2, but rows that the region's rasters (``rast_states``,
    ``rast_params``) put inside or outside are decided here and only rows near an edge are returned. In modes 2
    and 3, with the polygon's rings (``ring_xy``, ``ring_start``, ``ring_part``, see :func:`_point_states`; empty
    ``ring_part``: none), rows left to the caller are first tested against them, and only those within 1e-9 degrees
    of an edge are returned.

    With ``codes`` (the segment's scalar codes and ``code_params``; empty: none) rows are scored from their codes
    and only those whose score may reach the top-k (code score + the error bound of :func:`_code_query` at least
    the k-th best so far) again from ``vectors``: the same top-k, about a quarter of the bytes read. In scans of at
    least ``_SPAN_ROWS`` rows, runs of rows dense in matches are scored whole, in order (:func:`_score_span`).

    The rows are checked once for all queries: each block of matching rows is scored for every query while it is
    in cache, so a batch costs far less than its queries one by one.

    Returns:
        (scores, rows, matched, pending): (nq, k) scores of each query's top ``min(k, matched)`` (descending, ties
        by ascending row; padded with -inf) and their rows (padded with -1); how many rows matched and were scored;
        the rows left to the caller's geometric test.
    """
    nq = q.shape[0]
    hs = np.empty((nq, k), np.float32)
    hr = np.empty((nq, k), np.int64)
    filled = np.zeros(nq, np.int64)
    matched = 0
    n_pending = 0
    span_rows = 0
    for r in range(starts.size):  # rows in the ranges, and those that may be left to the caller
        span_rows += stops[r] - starts[r]
        if geo_mode >= 2 and inside[r] == 0:
            n_pending += stops[r] - starts[r]
    pending = np.empty(n_pending, np.int64)
    n_pending = 0
    has_alive = alive.size > 0
    has_sensor = sensor_ok.size > 0
    has_scenes = excl_scenes.size > 0
    has_cells = excl_cells.size > 0
    has_bbox = bbox.size == 4
    has_rings = ring_part.size > 0
    w, s, e, n = (bbox[0], bbox[1], bbox[2], bbox[3]) if has_bbox else (0.0, 0.0, 0.0, 0.0)
    wraps = w > e
    use_codes = codes.shape[0] > 0
    d = q.shape[1]
    cw = np.zeros((nq, d if use_codes else 0), np.int16)
    scale, c0, margin = np.ones(nq), np.zeros(nq), np.zeros(nq)
    if use_codes:
        for j in range(nq):
            cw_j, scale[j], c0[j], margin[j] = _code_query(q[j], code_params)
            cw[j, :] = cw_j
    spans = use_codes and span_rows >= _SPAN_ROWS
    buf = np.empty(_BLOCK, np.int64)  # rows that passed the checks, scored when full
    mask = np.empty(_BLOCK, np.bool_)
    nb = 0
    for r in range(starts.size):
        test_box = has_bbox and geo_mode != 0 and inside[r] == 0
        deferred = geo_mode >= 2 and inside[r] == 0
        row = starts[r]
        while row < stops[r]:
            first = nb
            end = min(stops[r], row + _BLOCK - nb)
            size = end - row
            # one simple loop per check (each vectorises), then the matching rows are compacted into buf
            if has_time:
                for i in range(size):
                    t = time[row + i]
                    mask[i] = (t != TIME_UNKNOWN) & (t >= t_lo) & (t <= t_hi)
            else:
                mask[:size] = True
            if has_alive:
                for i in range(size):
                    mask[i] &= alive[row + i]
            if has_sensor:
                for i in range(size):
                    mask[i] &= sensor_ok[sensor[row + i]]
            if test_box:
                for i in range(size):
                    y = lat[row + i]
                    mask[i] &= (y >= s) & (y <= n)
                if wraps:
                    for i in range(size):
                        x = lon[row + i]
                        mask[i] &= (x >= w) | (x <= e)
                else:
                    for i in range(size):
                        x = lon[row + i]
                        mask[i] &= (x >= w) & (x <= e)
            if spans and not (has_scenes or has_cells or deferred) and size >= _SPAN_MIN:
                count = 0
                for i in range(size):
                    count += mask[i]
                if count * _SPAN_DENSITY[1] >= size * _SPAN_DENSITY[0]:  # dense: score the span as it lies
                    for j in range(nq):
                        filled[j] = _score_span(vectors, q[j], codes, cw[j], scale[j], c0[j], margin[j], row, size,
                                                mask, hs[j], hr[j], k, filled[j])
                    matched += count
                    row = end
                    continue
            for i in range(size):  # branch-free: every row is written, the count advances only on a match
                buf[nb] = row + i
                nb += mask[i]
            row = end
            if has_scenes or has_cells or deferred:  # the rarer tests, on the rows that passed the others
                kept = first
                for j in range(first, nb):
                    i = buf[j]
                    if has_scenes and _sorted_contains(excl_scenes, scene_id[i]):
                        continue
                    if has_cells and _sorted_contains(excl_cells, cell[i]):
                        continue
                    if deferred:
                        st = _raster_state(rast_states, rast_params, lon[i], lat[i]) if geo_mode == 3 else 2
                        if st == 0:
                            continue
                        if st == 2:
                            pending[n_pending] = i
                            n_pending += 1
                            continue
                    buf[kept] = i
                    kept += 1
                nb = kept
            if nb == _BLOCK:
                _score_all(vectors, q, use_codes, codes, cw, scale, c0, margin, buf, nb, hs, hr, k, filled)
                matched += nb
                nb = 0
    if has_rings and n_pending:  # the rows left for the caller, tested against the polygon's rings at once
        edge_state = np.empty(n_pending, np.int8)
        _point_states(ring_xy, ring_start, ring_part, lon, lat, pending, n_pending, edge_state)
        inside_rows = pending[:n_pending][edge_state == 1]
        _score_all(vectors, q, use_codes, codes, cw, scale, c0, margin, inside_rows, inside_rows.size, hs, hr, k,
                   filled)
        matched += inside_rows.size
        undecided = pending[:n_pending][edge_state == 2]
        n_pending = undecided.size
        pending[:n_pending] = undecided
    _score_all(vectors, q, use_codes, codes, cw, scale, c0, margin, buf, nb, hs, hr, k, filled)
    matched += nb
    out_s = np.full((nq, k), -np.inf, np.float32)
    out_r = np.full((nq, k), -1, np.int64)
    for j in range(nq):
        got_s, got_r = _ranked(hs[j], hr[j], filled[j])
        out_s[j, :got_s.size] = got_s
        out_r[j, :got_r.size] = got_r
    return out_s, out_r, matched, pending[:n_pending]


@_njit
def _split_ranges(starts, stops, inside, parts):
    """The ranges cut into ``parts`` runs of about equal rows (a range may be cut inside): (starts, stops, inside)
    of shape (parts, ranges + parts), and how many ranges each part has."""
    total = 0
    for r in range(starts.size):
        total += stops[r] - starts[r]
    width = starts.size + parts
    ps = np.empty((parts, width), np.int64)
    pe = np.empty((parts, width), np.int64)
    pi = np.empty((parts, width), np.int8)
    count = np.zeros(parts, np.int64)
    p, done = 0, 0
    for r in range(starts.size):
        a = starts[r]
        while a < stops[r]:
            goal = (total * (p + 1)) // parts  # rows before the end of part p
            b = stops[r] if p == parts - 1 else min(stops[r], a + max(goal - done, 0))
            if b > a:
                c = count[p]
                ps[p, c], pe[p, c], pi[p, c] = a, b, inside[r]
                count[p] = c + 1
                done += b - a
                a = b
            if done >= goal and p < parts - 1:
                p += 1
    return ps, pe, pi, count


@_njit_parallel
def _scan_parts(ps, pe, pi, count, cap, vectors, q, k, has_time, time, t_lo, t_hi, alive, sensor, sensor_ok,
                scene_id, excl_scenes, cell, excl_cells, geo_mode, lon, lat, bbox, rast_states, rast_params, codes,
                code_params, ring_xy, ring_start, ring_part):
    """:func:`scan_topk` of each part of :func:`_split_ranges` on numba's threads: (scores, rows) (parts, nq, k),
    match counts, and the pending rows of part ``p`` at ``cap[p]`` of one array, ``n_pend[p]`` of them. Nothing but
    the parallel loop here: numba's parallel compilation of anything else costs seconds per signature."""
    parts = count.size
    nq = q.shape[0]
    s_all = np.empty((parts, nq, k), np.float32)
    r_all = np.empty((parts, nq, k), np.int64)
    matched = np.empty(parts, np.int64)
    n_pend = np.empty(parts, np.int64)
    pend = np.empty(cap[parts], np.int64)
    for p in numba.prange(parts):
        m = count[p]
        sc, rw, mt, pd = scan_topk(vectors, q, k, ps[p, :m], pe[p, :m], pi[p, :m], has_time, time, t_lo, t_hi, alive,
                                   sensor, sensor_ok, scene_id, excl_scenes, cell, excl_cells, geo_mode, lon, lat,
                                   bbox, rast_states, rast_params, codes, code_params, ring_xy, ring_start,
                                   ring_part)
        s_all[p] = sc
        r_all[p] = rw
        matched[p] = mt
        n_pend[p] = pd.size
        pend[cap[p]:cap[p] + pd.size] = pd
    return s_all, r_all, matched, pend, n_pend


@_njit
def scan_topk_parallel(parts, vectors, q, k, starts, stops, inside, has_time, time, t_lo, t_hi, alive, sensor,
                       sensor_ok, scene_id, excl_scenes, cell, excl_cells, geo_mode, lon, lat, bbox, rast_states,
                       rast_params, codes, code_params, ring_xy, ring_start, ring_part):
    """:func:`scan_topk` with the ranges cut into ``parts`` runs of about equal rows, scanned on numba's threads at
    once: each run's top-k, then their merge by descending score, ties by ascending row. The same answer, the
    same match count and the same pending rows (in row order) as :func:`scan_topk` over all the ranges."""
    ps, pe, pi, count = _split_ranges(starts, stops, inside, parts)
    cap = np.zeros(parts + 1, np.int64)  # room for each part's pending rows
    for p in range(parts):
        room = 0
        if geo_mode >= 2:
            for c in range(count[p]):
                if pi[p, c] == 0:
                    room += pe[p, c] - ps[p, c]
        cap[p + 1] = cap[p] + room
    s_all, r_all, matched, pend, n_pend = _scan_parts(
        ps, pe, pi, count, cap, vectors, q, k, has_time, time, t_lo, t_hi, alive, sensor, sensor_ok, scene_id,
        excl_scenes, cell, excl_cells, geo_mode, lon, lat, bbox, rast_states, rast_params, codes, code_params,
        ring_xy, ring_start, ring_part)
    nq = q.shape[0]
    out_s = np.full((nq, k), -np.inf, np.float32)
    out_r = np.full((nq, k), -1, np.int64)
    head = np.zeros(parts, np.int64)
    for j in range(nq):  # merge the parts' ranked lists
        head[:] = 0
        for m in range(k):
            best = -1
            for p in range(parts):
                h = head[p]
                if h < k and r_all[p, j, h] >= 0 and (best < 0 or s_all[p, j, h] > s_all[best, j, head[best]] or (
                        s_all[p, j, h] == s_all[best, j, head[best]] and r_all[p, j, h] < r_all[best, j, head[best]])):
                    best = p
            if best < 0:
                break
            out_s[j, m] = s_all[best, j, head[best]]
            out_r[j, m] = r_all[best, j, head[best]]
            head[best] += 1
    total = 0
    for p in range(parts):
        total += n_pend[p]
    pending = np.empty(total, np.int64)
    o = 0
    for p in range(parts):
        pending[o:o + n_pend[p]] = pend[cap[p]:cap[p] + n_pend[p]]
        o += n_pend[p]
    return out_s, out_r, matched.sum(), pending


@_njit(inline="always")
def _score_all(vectors, q, use_codes, codes, cw, scale, c0, margin, rows, count, hs, hr, k, filled):
    """:func:`_score_rows` of ``rows[:count]`` for every query of ``q`` (the rows' codes stay in cache)."""
    for j in range(q.shape[0]):
        filled[j] = _score_rows(vectors, q[j], use_codes, codes, cw[j], scale[j], c0[j], margin[j], rows, count,
                                hs[j], hr[j], k, filled[j])


@_njit
def score_topk(vectors, q, k, rows):
    """Top-``k`` of ``rows`` by inner product with ``q``: (scores descending, rows; ties by ascending row)."""
    hs = np.empty(k, np.float32)
    hr = np.empty(k, np.int64)
    return _ranked(hs, hr, _score_block(vectors, q, rows, rows.size, hs, hr, k, 0))


@_njit_exact
def raster_states(u0, v0, du, dv, nx, ny, contained, margin):
    """The fine-cell states of :class:`rsretrieve.index.region.Raster` (same definition and arithmetic as its
    numpy code): edges start at ``(u0, v0)`` and step ``(du, dv)``, in fine cells from the rectangle's corner.

    Returns:
        (flat states, (ny + 2) * (nx + 3) int8: 0 outside, 1 inside, 2 near an edge; the padded cells each edge
        sample marks, (2, 2, samples) int64 [low / high side, u / v, sample]).
    """
    w = nx + 3
    rows = ny + 2
    ne = u0.size
    m = np.empty(ne, np.int64)
    total = 0
    for e in range(ne):
        m[e] = np.int64(max(abs(du[e]), abs(dv[e])) * 2 + 2)
        total += m[e]
    h = 0.25 + margin
    cells = np.empty((2, 2, total), np.int64)
    t = 0
    for e in range(ne):
        su, sv = du[e] / (m[e] - 1), dv[e] / (m[e] - 1)
        for i in range(m[e]):
            pu, pv = u0[e] + su * i, v0[e] + sv * i
            lu, hu, lv, hv = math.floor(pu - h), math.floor(pu + h), math.floor(pv - h), math.floor(pv + h)
            if not contained:
                lu, hu = min(max(lu, -1.0), float(nx)), min(max(hu, -1.0), float(nx))
                lv, hv = min(max(lv, -1.0), float(ny)), min(max(hv, -1.0), float(ny))
            cells[0, 0, t], cells[1, 0, t] = np.int64(lu) + 1, np.int64(hu) + 1
            cells[0, 1, t], cells[1, 1, t] = np.int64(lv) + 1, np.int64(hv) + 1
            t += 1
    # even-odd state of each cell centre from the edges' crossings with the rows' centre lines (v = j - 0.5)
    state = np.zeros(rows * w, np.int8)
    count = np.zeros(rows, np.int64)
    for e in range(ne):
        a, b = v0[e], v0[e] + dv[e]
        lo = max(0, int(math.floor(min(a, b) + 0.5)) - 1)
        hi = min(rows - 1, int(math.ceil(max(a, b) + 0.5)) + 1)
        for j in range(lo, hi + 1):
            yc = j - 0.5
            if (a > yc) != (b > yc):
                count[j] += 1
    start = np.zeros(rows + 1, np.int64)
    for j in range(rows):
        start[j + 1] = start[j] + count[j]
    xs = np.empty(start[rows], np.int64)
    fill = start[:rows].copy()
    for e in range(ne):
        a, b = v0[e], v0[e] + dv[e]
        slope = du[e] / (dv[e] if dv[e] != 0 else 1.0)
        lo = max(0, int(math.floor(min(a, b) + 0.5)) - 1)
        hi = min(rows - 1, int(math.ceil(max(a, b) + 0.5)) + 1)
        for j in range(lo, hi + 1):
            yc = j - 0.5
            if (a > yc) != (b > yc):
                x = math.floor(u0[e] + (j - 0.5 - v0[e]) * slope + 0.5)
                if not contained:
                    x = min(max(x, -1.0), float(nx + 1))
                xs[fill[j]] = np.int64(x) + 1
                fill[j] += 1
    for j in range(rows):
        a, b = start[j], start[j + 1]
        for i in range(a + 1, b):  # insertion sort in place: a row crosses few edges
            v = xs[i]
            p = i - 1
            while p >= a and xs[p] > v:
                xs[p + 1] = xs[p]
                p -= 1
            xs[p + 1] = v
        for p in range(a, b - 1, 2):  # inside between the 1st and 2nd crossing, the 3rd and 4th, ...
            for c in range(xs[p], xs[p + 1]):
                state[j * w + c] = 1
    for i in range(total):
        for a in range(2):
            for b in range(2):
                state[cells[a, 1, i] * w + cells[b, 0, i]] = 2
    if contained:  # nothing of the region lies beyond the rectangle: neither do points clipped onto its border
        for c in range(w):
            state[c] = 0
            state[(rows - 1) * w + c] = 0
        for j in range(rows):
            state[j * w] = 0
            state[j * w + nx + 1] = 0
    return state, cells


@_njit_exact
def raster_coarse(state, cells, w, nx, ny, bits):
    """States of the coarse cells of ``2**bits`` fine cells per axis (see ``Raster.coarse``): (ny >> bits,
    nx >> bits) int8, 0 / 1 wholly outside / inside, 2 where a fine cell is near an edge."""
    f = 1 << bits
    ncx, ncy = nx // f, ny // f
    near = np.zeros((ncy + 2) * (ncx + 2), np.bool_)
    for i in range(cells.shape[2]):
        for a in range(2):
            for b in range(2):
                cv = ((cells[a, 1, i] - 1) >> bits) + 1
                cu = ((cells[b, 0, i] - 1) >> bits) + 1
                near[cv * (ncx + 2) + cu] = True
    out = np.empty((ncy, ncx), np.int8)
    for r in range(ncy):
        for c in range(ncx):
            if near[(r + 1) * (ncx + 2) + c + 1]:
                out[r, c] = 2
            else:
                out[r, c] = state[(r * f + f // 2 + 1) * w + c * f + f // 2 + 1]
    return out


@_njit_exact
def _box_level(west, south, east, north, order, max_cells):
    """``hilbert.box_extent``'s level (the finest at which the box spans at most ``max_cells`` grid cells) and the
    full-order grid columns and rows of the box's edges: (level, gx0, gx1, gy0, gy1)."""
    n = 1 << order
    gx0 = min(max(math.floor((west + 180.0) * (n / 360.0)), 0), n - 1)
    gx1 = min(max(math.floor((east + 180.0) * (n / 360.0)), 0), n - 1)
    gy0 = min(max(math.floor((south + 90.0) * (n / 180.0)), 0), n - 1)
    gy1 = min(max(math.floor((north + 90.0) * (n / 180.0)), 0), n - 1)
    gx0, gx1, gy0, gy1 = np.int64(gx0), np.int64(gx1), np.int64(gy0), np.int64(gy1)
    level = order
    while level > 0 and ((gx1 >> (order - level)) - (gx0 >> (order - level)) + 1) * (
            (gy1 >> (order - level)) - (gy0 >> (order - level)) + 1) > max_cells:
        level -= 1
    return level, gx0, gx1, gy0, gy1


@_njit_exact
def box_row_ranges(hkey, west, south, east, north, order, max_cells, flag_inside, digits, states):
    """Row ranges of a segment (sorted Hilbert keys ``hkey``) under the cover of a box (``west <= east``): the
    cells of ``hilbert.box_extent`` at the finest level with at most ``max_cells`` of them, one key range per
    cell turned into rows by binary search; the arithmetic of ``hilbert.box_ranges`` (``digits``/``states``: its
    look-up tables) and ``np.searchsorted``. Returns (starts, stops, inside), empty ranges dropped, ``inside`` 1
    where the cell lies wholly inside the box (with ``flag_inside``)."""
    level, gx0, gx1, gy0, gy1 = _box_level(west, south, east, north, order, max_cells)
    if level == 0:
        return (np.zeros(1, np.int64), np.full(1, np.searchsorted(hkey, np.int64(1) << (2 * order)), np.int64),
                np.zeros(1, np.int8))
    shift = order - level
    x0, x1, y0, y1 = gx0 >> shift, gx1 >> shift, gy0 >> shift, gy1 >> shift
    cover = np.full((x1 - x0 + 1, y1 - y0 + 1), 2, np.int8)
    if flag_inside:
        for x in range(x0, x1 + 1):
            if (x << shift) > gx0 and ((x + 1) << shift) - 1 < gx1:
                for y in range(y0, y1 + 1):
                    if (y << shift) > gy0 and ((y + 1) << shift) - 1 < gy1:
                        cover[x - x0, y - y0] = 1
    return rect_row_ranges(hkey, level, x0, y0, cover, order, digits, states)


@_njit_exact
def _lower_bound(a, lo, v):
    """``np.searchsorted(a, v)`` for sorted ``a`` known to have ``a[:lo] < v``: a galloping search from ``lo``
    (steps doubling until past ``v``, then a binary search), a few probes near ``lo`` when the answer is near."""
    n = a.size
    if lo >= n or a[lo] >= v:
        return lo
    prev, step = lo, 1  # a[prev] < v
    cur = lo + 1
    while cur < n and a[cur] < v:
        prev = cur
        step *= 2
        cur = prev + step
    return prev + 1 + np.searchsorted(a[prev + 1:min(cur, n)], v)


@_njit_exact
def rect_row_ranges(hkey, level, x0, y0, cover, order, digits, states):
    """Row ranges of a segment (sorted Hilbert keys ``hkey``) under the cells of a rectangle of grid cells of
    ``level`` whose south-west cell is ``(x0, y0)``: ``cover`` [column, row] is 0 for a cell left out, 1 for one
    wholly inside the geometry, 2 for one that needs the point test (``hilbert.rect_ranges`` + ``np.searchsorted``).
    Returns (starts, stops, inside) sorted, empty ranges dropped."""
    shift = order - level
    count = 0
    for i in range(cover.shape[0]):
        for j in range(cover.shape[1]):
            count += cover[i, j] != 0
    keys = np.empty(count, np.int64)
    flags = np.zeros(count, np.int8)
    chunks = -(-level // 8)
    pad = chunks * 8 - level
    i = 0
    for cx in range(cover.shape[0]):
        x = x0 + cx
        for cy in range(cover.shape[1]):
            if cover[cx, cy] == 0:
                continue
            y = y0 + cy
            state = pad & 1  # as hilbert.hilbert_index: leading zero bits toggle the swap bit once per bit
            d = np.int64(0)
            for c in range(chunks - 1, -1, -1):
                s = c * 8
                look = (state << 16) | (((x >> s) & 255) << 8) | ((y >> s) & 255)
                d = (d << 16) | digits[look]
                state = states[look]
            keys[i] = d
            flags[i] = cover[cx, cy] == 1
            i += 1
    o = np.argsort(keys)
    starts = np.empty(count, np.int64)
    stops = np.empty(count, np.int64)
    inside = np.empty(count, np.int8)
    m = 0
    kshift = 2 * shift
    lo = 0  # the keys ascend, so each search starts where the last one ended
    last = np.int64(-1)
    for j in range(count):
        key = keys[o[j]]
        a = lo if key << kshift == last else _lower_bound(hkey, lo, key << kshift)  # adjacent cells: no search
        last = (key + 1) << kshift
        b = _lower_bound(hkey, a, last)
        lo = b
        if b > a:
            starts[m], stops[m], inside[m] = a, b, flags[o[j]]
            m += 1
    return starts[:m], stops[:m], inside[:m]


@_njit_exact
def polygon_row_ranges(hkey, ring_xy, ring_start, west, south, east, north, order, max_cells, bits, margin, digits,
                       states):
    """Row ranges of a segment under the cover of a one-part polygon, from its rings to the rows in one call: the
    grid cells of ``hilbert.box_extent`` over its bounds (``west <= east``), their raster of ``2**bits`` fine cells
    per axis (:func:`raster_states`, the arithmetic of :class:`rsretrieve.index.region.Raster` with
    ``contained``), its coarse states (:func:`raster_coarse`) and their rows (:func:`rect_row_ranges`). The same
    numbers as those steps one by one, for a fraction of their calls' cost.

    Args:
        ring_xy, ring_start: the part's closed rings ((m, 2) lon/lat, exterior first) and where each starts
            (``Region.rings``).

    Returns:
        (starts, stops, inside, level, fine, x0, y0, nx, ny, flat states, marked cells): the row ranges as from
        :func:`rect_row_ranges` (at level 0, every row and no flag), the cover's level, and the raster: its level,
        south-west fine cell, size in fine cells and the two arrays :func:`raster_states` returns.
    """
    level, gx0, gx1, gy0, gy1 = _box_level(west, south, east, north, order, max_cells)
    shift = order - level
    x0, x1, y0, y1 = gx0 >> shift, gx1 >> shift, gy0 >> shift, gy1 >> shift
    fine = min(order, level + bits)
    f = np.int64(1) << (fine - level)
    fx0, fy0, nx, ny = x0 * f, y0 * f, (x1 + 1 - x0) * f, (y1 + 1 - y0) * f
    # the edges in fine cells from the rectangle's corner, as Raster computes them (per ring: no joins)
    nf = np.int64(1) << fine
    sx, sy = nf / 360.0, nf / 180.0
    ox, oy = 180.0 * sx - fx0, 90.0 * sy - fy0
    ne = 0
    for r in range(ring_start.size - 1):
        ne += ring_start[r + 1] - ring_start[r] - 1
    u0, v0, du, dv = np.empty(ne), np.empty(ne), np.empty(ne), np.empty(ne)
    e = 0
    for r in range(ring_start.size - 1):
        pu, pv = ring_xy[ring_start[r], 0] * sx + ox, ring_xy[ring_start[r], 1] * sy + oy
        for i in range(ring_start[r] + 1, ring_start[r + 1]):
            cu, cv = ring_xy[i, 0] * sx + ox, ring_xy[i, 1] * sy + oy
            u0[e], v0[e], du[e], dv[e] = pu, pv, cu - pu, cv - pv
            pu, pv = cu, cv
            e += 1
    flat, cells = raster_states(u0, v0, du, dv, nx, ny, True, margin)
    if level == 0:
        starts, stops = np.zeros(1, np.int64), np.full(1, np.searchsorted(hkey, np.int64(1) << (2 * order)), np.int64)
        return starts, stops, np.zeros(1, np.int8), level, fine, fx0, fy0, nx, ny, flat, cells
    cover = raster_coarse(flat, cells, nx + 3, nx, ny, fine - level).T.copy()  # [column, row]
    starts, stops, inside = rect_row_ranges(hkey, level, x0, y0, cover, order, digits, states)
    return starts, stops, inside, level, fine, fx0, fy0, nx, ny, flat, cells


@_njit_exact
def count_in_box(lon, lat, west, south, east, north):
    """Points inside a box, edges included (``west > east``: across the antimeridian)."""
    c = 0
    wraps = west > east
    for i in range(lon.size):
        x, y = lon[i], lat[i]
        in_x = (x >= west or x <= east) if wraps else (x >= west and x <= east)
        c += in_x and y >= south and y <= north
    return c
