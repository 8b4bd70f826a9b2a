"""A vectorised Hilbert curve over (lon, lat) and the decomposition of a box into Hilbert key ranges.

The plane ``[-180, 180] x [-90, 90]`` degrees is cut into a ``2**order x 2**order`` grid (order 16: cells of about
0.0055 x 0.0027 degrees, roughly 600 x 300 m at the equator). A point's key is the position of its grid cell along
the Hilbert curve, so points close on the ground are mostly close in key order, and any aligned square of the grid
is one contiguous key range. Index segments are sorted by this key; :func:`box_key_ranges` turns a query box into a
bounded number of key ranges that cover it, and ``np.searchsorted`` turns those into row ranges.

The curve follows the classic ``xy2d`` convention (x to the east, y to the north): order 1 visits
(0,0), (0,1), (1,1), (1,0).
"""

from __future__ import annotations

import math

import numpy as np

#: grid bits per axis used by the index
HILBERT_ORDER = 16

_CHUNK = 8  # bits per axis consumed per table look-up


def _build_tables(bits: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Look-up tables for ``bits`` bits of x and y at a time, shape (4, 2**bits, 2**bits).

    The state is (flip, swap) of the remaining lower bits, ``state = 2 * flip + swap``. Entry
    ``[state, cx, cy]`` holds the ``2 * bits`` bit digit and the next state.
    """
    n = 1 << bits
    digits = np.zeros((4, n, n), dtype=np.int64)
    states = np.zeros((4, n, n), dtype=np.int64)
    for state in range(4):
        for cx in range(n):
            for cy in range(n):
                flip, swap, d = state >> 1, state & 1, 0
                for i in reversed(range(bits)):
                    bx, by = (cx >> i) & 1, (cy >> i) & 1
                    if swap:
                        bx, by = by, bx
                    rx, ry = bx ^ flip, by ^ flip
                    d = (d << 2) | ((3 * rx) ^ ry)
                    if ry == 0:
                        flip ^= rx
                        swap ^= 1
                digits[state, cx, cy] = d
                states[state, cx, cy] = 2 * flip + swap
    return digits, states


def _double(digits: np.ndarray, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tables for twice the bits, composed from the high and the low half (vectorised)."""
    bits = digits.shape[1].bit_length() - 1
    st, cx, cy = np.meshgrid(np.arange(4), np.arange(1 << (2 * bits)), np.arange(1 << (2 * bits)), indexing="ij")
    hi_d, mid = digits[st, cx >> bits, cy >> bits], states[st, cx >> bits, cy >> bits]
    mask = (1 << bits) - 1
    return (hi_d << (2 * bits)) | digits[mid, cx & mask, cy & mask], states[mid, cx & mask, cy & mask]


_DIGITS, _STATES = (t.ravel() for t in _double(*_build_tables(_CHUNK // 2)))


def hilbert_index(x: np.ndarray, y: np.ndarray, order: int) -> np.ndarray:
    """Hilbert index of integer grid cells.

    Args:
        x: column of each cell, integers in ``[0, 2**order)``, shape (n,).
        y: row of each cell (north is up), same shape.
        order: bits per axis, 1 to 31.

    Returns:
        int64 array of shape (n,), values in ``[0, 4**order)``.
    """
    if not 1 <= order <= 31:
        raise ValueError(f"order must be in 1..31, got {order}")
    x = np.asarray(x, dtype=np.int64)
    y = np.asarray(y, dtype=np.int64)
    chunks = -(-order // _CHUNK)
    pad = chunks * _CHUNK - order
    # leading zero bits of both coordinates give digit 0 and toggle the swap bit once per bit
    state = np.full(x.shape, pad & 1, dtype=np.int64)
    d = np.zeros(x.shape, dtype=np.int64)
    mask = (1 << _CHUNK) - 1
    for c in reversed(range(chunks)):
        shift = c * _CHUNK
        look = (state << (2 * _CHUNK)) | (((x >> shift) & mask) << _CHUNK) | ((y >> shift) & mask)
        d = (d << (2 * _CHUNK)) | _DIGITS[look]
        state = _STATES[look]
    return d


def rect_hilbert(level: int, x0: int, x1: int, y0: int, y1: int) -> np.ndarray:
    """Hilbert index (at ``level``) of every cell of the rectangle of columns ``x0..x1`` and rows ``y0..y1``
    (inclusive): int64 array of shape (x1 - x0 + 1, y1 - y0 + 1), indexed [column, row]; equal to
    :func:`hilbert_index` of each cell, with a few table look-ups over the two axes broadcast against each other."""
    xs, ys = np.arange(x0, x1 + 1, dtype=np.int64), np.arange(y0, y1 + 1, dtype=np.int64)
    if level > 2 * _CHUNK:
        return hilbert_index(np.repeat(xs, ys.size), np.tile(ys, xs.size), level).reshape(xs.size, ys.size)
    mask = (1 << _CHUNK) - 1
    if level <= _CHUNK:  # one chunk; leading zero bits toggle the swap bit once per bit
        return _DIGITS.take(((((_CHUNK - level) & 1) << (2 * _CHUNK)) | (xs << _CHUNK))[:, None] | ys)
    look = (((((2 * _CHUNK - level) & 1) << (2 * _CHUNK)) | ((xs >> _CHUNK) << _CHUNK))[:, None] | (ys >> _CHUNK))
    low = (((xs & mask) << _CHUNK)[:, None] | (ys & mask))
    return (_DIGITS.take(look) << (2 * _CHUNK)) | _DIGITS.take((_STATES.take(look) << (2 * _CHUNK)) | low)


def grid_xy(lon: np.ndarray, lat: np.ndarray, order: int = HILBERT_ORDER) -> tuple[np.ndarray, np.ndarray]:
    """Grid column and row of points in degrees (EPSG:4326); lon in [-180, 180], lat in [-90, 90].

    Returns:
        (x, y), int64 arrays clipped to ``[0, 2**order - 1]``.
    """
    n = 1 << order
    lon = np.asarray(lon, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
    x = np.clip(np.floor((lon + 180.0) * (n / 360.0)), 0, n - 1).astype(np.int64)
    y = np.clip(np.floor((lat + 90.0) * (n / 180.0)), 0, n - 1).astype(np.int64)
    return x, y


def hilbert_key(lon: np.ndarray, lat: np.ndarray, order: int = HILBERT_ORDER) -> np.ndarray:
    """Hilbert key of points given in degrees; shape (n,) in, int64 shape (n,) out."""
    x, y = grid_xy(lon, lat, order)
    return hilbert_index(x, y, order)


def _grid_corners(west: float, south: float, east: float, north: float, order: int) -> tuple[int, int, int, int]:
    """Full-order grid columns and rows of a box's edges: the arithmetic of grid_xy, on Python floats (C doubles)
    for the two corners."""
    n = 1 << order
    gx0, gx1 = (min(max(math.floor((v + 180.0) * (n / 360.0)), 0), n - 1) for v in (west, east))
    gy0, gy1 = (min(max(math.floor((v + 90.0) * (n / 180.0)), 0), n - 1) for v in (south, north))
    return gx0, gx1, gy0, gy1


def _inside_axes(west: float, south: float, east: float, north: float, order: int, level: int, x0: int, x1: int,
                 y0: int, y1: int) -> tuple[np.ndarray, np.ndarray]:
    """For columns ``x0..x1`` and rows ``y0..y1`` of ``level``: whether each lies strictly between the grid columns
    (rows) of the box's edges, bool arrays; a cell is wholly inside the box where both hold. Python loops: the
    axes are short."""
    gx0, gx1, gy0, gy1 = _grid_corners(west, south, east, north, order)
    shift = order - level
    in_x = np.array([(x << shift) > gx0 and ((x + 1) << shift) - 1 < gx1 for x in range(x0, x1 + 1)], dtype=bool)
    in_y = np.array([(y << shift) > gy0 and ((y + 1) << shift) - 1 < gy1 for y in range(y0, y1 + 1)], dtype=bool)
    return in_x, in_y


def box_extent(west: float, south: float, east: float, north: float, order: int = HILBERT_ORDER,
               max_cells: int = 1024) -> tuple[int, int, int, int, int]:
    """The finest quadtree level at which a box (``west <= east``, degrees) spans at most ``max_cells`` grid cells,
    and the cells it spans there: ``(level, x0, x1, y0, y1)``, columns ``x0..x1`` and rows ``y0..y1`` inclusive."""
    gx0, gx1, gy0, gy1 = _grid_corners(west, south, east, north, order)
    level = order
    while level > 0 and ((gx1 >> (order - level)) - (gx0 >> (order - level)) + 1) * (
            (gy1 >> (order - level)) - (gy0 >> (order - level)) + 1) > max_cells:
        level -= 1
    shift = order - level
    return level, gx0 >> shift, gx1 >> shift, gy0 >> shift, gy1 >> shift


def box_cells(west: float, south: float, east: float, north: float, order: int = HILBERT_ORDER,
              max_cells: int = 1024) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """The grid cells of the finest quadtree level at which a box (``west <= east``, degrees) spans at most
    ``max_cells`` cells (see :func:`box_extent`).

    Returns:
        (level, cx, cy, inside): cell ``(cx, cy)`` of that level covers full-order columns ``[cx, cx + 1) *
        2**(order - level)`` and rows likewise; ``inside`` is True for cells whose every point is in the box
        (they lie strictly between the grid columns and rows of the box's edges).
    """
    level, x0, x1, y0, y1 = box_extent(west, south, east, north, order, max_cells)
    xs = np.arange(x0, x1 + 1, dtype=np.int64)
    ys = np.arange(y0, y1 + 1, dtype=np.int64)
    in_x, in_y = _inside_axes(west, south, east, north, order, level, x0, x1, y0, y1)
    return level, np.repeat(xs, ys.size), np.tile(ys, xs.size), (in_x[:, None] & in_y[None, :]).ravel()


def box_ranges(west: float, south: float, east: float, north: float, order: int = HILBERT_ORDER,
               max_cells: int = 1024, flag_inside: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Key ranges of the cells of :func:`box_cells`, one per cell, sorted, flagged 1 where every point is in the box
    (with ``flag_inside``; else all 0): ``cell_ranges(*box_cells(...))`` before merging, in fewer array operations
    (merging costs more than the extra ranges it saves)."""
    level, x0, x1, y0, y1 = box_extent(west, south, east, north, order, max_cells)
    if not flag_inside:
        return rect_ranges(level, x0, x1, y0, y1, order=order)
    in_x, in_y = _inside_axes(west, south, east, north, order, level, x0, x1, y0, y1)
    return rect_ranges(level, x0, x1, y0, y1, in_x[:, None] & in_y, order=order)


def cell_ranges(level: int, cx: np.ndarray, cy: np.ndarray, flags: np.ndarray | None = None,
                order: int = HILBERT_ORDER) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Key ranges of quadtree cells, cells that follow each other on the curve (with equal flag) merged.

    Returns:
        (starts, stops, flags): sorted, disjoint, half-open key ranges and the flag of each (zeros by default).
    """
    flags = np.zeros(cx.size, np.int8) if flags is None else np.asarray(flags, np.int8)
    if level == 0:
        return np.zeros(1, np.int64), np.full(1, 1 << (2 * order), np.int64), flags[:1]
    return merge_cells(hilbert_index(cx, cy, level), flags, order - level)


def rect_ranges(level: int, x0: int, x1: int, y0: int, y1: int, flags: np.ndarray | None = None,
                keep: np.ndarray | None = None,
                order: int = HILBERT_ORDER) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Key ranges of the cells of a rectangle, optionally only the cells marked in ``keep``; ``flags`` and
    ``keep`` are (x1 - x0 + 1, y1 - y0 + 1) arrays indexed [column, row]. One sorted range per cell, unmerged
    (:func:`cell_ranges` merges)."""
    if level == 0:
        f = np.zeros(1, np.int8) if flags is None else np.asarray(flags, np.int8).reshape(-1)[:1]
        return np.zeros(1, np.int64), np.full(1, 1 << (2 * order), np.int64), f
    h = rect_hilbert(level, x0, x1, y0, y1)
    if keep is not None:
        h = h[keep]
        f = np.zeros(h.size, np.int8) if flags is None else flags[keep].view(np.int8)
    else:
        h = h.reshape(-1)
        f = np.zeros(h.size, np.int8) if flags is None else flags.reshape(-1).view(np.int8)
    o = np.argsort(h)
    shift = 2 * (order - level)
    h = h.take(o)
    return h << shift, (h + 1) << shift, f.take(o)


def merge_cells(h: np.ndarray, flags: np.ndarray, shift: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Key ranges (at full order) of cells of Hilbert index ``h`` at a level ``shift`` bits coarser than the full
    order: sorted, consecutive cells with equal int8 ``flags`` merged."""
    if h.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int8)
    o = np.argsort(h)
    h, flags = h.take(o), flags.take(o)
    brk = np.flatnonzero((np.diff(h) != 1) | (flags[1:] != flags[:-1])) + 1
    starts = np.concatenate((h[:1], h.take(brk))) << (2 * shift)
    stops = (np.concatenate((h.take(brk - 1), h[-1:])) + 1) << (2 * shift)
    return starts, stops, np.concatenate((flags[:1], flags.take(brk)))


def box_key_ranges(west: float, south: float, east: float, north: float, order: int = HILBERT_ORDER,
                   max_cells: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Hilbert key ranges that together cover a box (``west <= east``, degrees).

    The box is covered by the cells of :func:`box_cells`; each cell is one key range, and ranges that follow each
    other on the curve are merged. The cover overshoots the box by at most one cell of that level on each side, so
    rows found through it must still be checked against the exact box.

    Returns:
        (starts, stops): sorted, disjoint, half-open key ranges, int64 arrays of equal length.
    """
    return cell_ranges(*box_cells(west, south, east, north, order, max_cells)[:3], order=order)[:2]


def merge_ranges(starts: np.ndarray, stops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Union of half-open ranges, returned sorted and disjoint (touching ranges are joined)."""
    if starts.size <= 1:
        return starts, stops
    order = np.argsort(starts, kind="stable")
    starts, stops = starts[order], stops[order]
    reach = np.maximum.accumulate(stops)
    idx = np.concatenate(([0], np.flatnonzero(starts[1:] > reach[:-1]) + 1))
    return starts[idx], reach[np.concatenate((idx[1:] - 1, [reach.size - 1]))]
