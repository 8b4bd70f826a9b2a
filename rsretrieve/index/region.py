"""Point-in-(multi)polygon tests for many points: a raster over each part, exact tests only near the edges.

A query polygon is classified on a grid aligned with the Hilbert grid of the index (:mod:`rsretrieve.index.hilbert`):
for each part, the cells of :func:`box_extent` over the part's bounds (at most ``MAX_CELLS``, the cells its key ranges
are made of), subdivided ``2**RASTER_BITS`` times per axis. A fine cell within reach of an edge is *near*; every other
fine cell lies wholly on one side of every edge and takes the inside / outside state of its centre, found from the
edge crossings left of it on its row (even-odd rule, so holes need nothing special). Points are then classified with
a few array operations each, and only points in near cells (a band one to two fine cells wide along the edges) go to
``shapely.intersects_xy``, the definition of a match. Coarse cells wholly inside are flagged so that their rows skip
any point test, and coarse cells wholly outside are dropped from the key ranges.

Why a point outside near cells needs no exact test: edges are sampled at most half a fine cell apart on each axis, so
every edge point lies within a quarter cell of a sample, and the cells that a box of half-width 1/4 + ``_MARGIN``
around each sample overlaps hold every cell within ``_MARGIN`` of an edge. A point outside them is therefore more
than ``_MARGIN`` (1e-6 cell) from every edge, far more than the rounding of its cell
(``floor((lon + 180) * 2**level / 360)``, the formula of the Hilbert grid, off by ~1e-10 cell at most), so it has
the state of its cell's centre.
"""

from __future__ import annotations

from itertools import accumulate

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon

from rsretrieve.index import hilbert, kernels
from rsretrieve.index.hilbert import HILBERT_ORDER, box_cells, box_extent, cell_ranges, rect_ranges

#: most grid cells a part's bounds are covered with (see :func:`box_cells`)
MAX_CELLS = 1024
#: fine cells per coarse cell and axis: 2**RASTER_BITS
RASTER_BITS = 3
#: below this many points without a raster built yet, points go straight to shapely (building one costs more)
RASTER_MIN_POINTS = 2048
#: polygons with more parts are tested with shapely only (one raster per part would cost more than it saves)
MAX_RASTER_PARTS = 64
#: polygons with more vertices are not tested by the compiled scan (its test visits every edge for each point) but
#: by shapely, which indexes the edges
KERNEL_MAX_VERTICES = 256
#: build rasters with the compiled :func:`rsretrieve.index.kernels.raster_states` when numba is there (tests
#: switch it off to compare with the numpy code)
USE_KERNEL = True
_MARGIN = 1e-6  # cells: far above the rounding of a point's cell, far below a cell
_DENSE_CROSSINGS = 1 << 16  # edges x rows up to which crossings are computed for every pair
_ALTERNATE = (np.arange(4096) & 1).astype(np.int8)


#: states of fine cells, points and coarse cells in a :class:`Raster`
OUTSIDE, INSIDE, NEAR = 0, 1, 2


class Raster:
    """State of the fine cells of a rectangle of grid cells: ``INSIDE``, ``OUTSIDE`` or ``NEAR`` an edge.

    Args:
        rings: closed rings (each (m, 2) lon/lat degrees, first point repeated last) whose even-odd interior is
            the region: the exterior and the holes of one polygon, or of several with disjoint interiors.
        fine: grid level (bits per axis) of the fine cells.
        x0, y0: grid column and row (at level ``fine``) of the rectangle's south-west fine cell.
        nx, ny: fine cells in the rectangle along x (east) and y (north).

    Attributes:
        state: (ny + 2, nx + 2) int8 state of each fine cell, indexed [row, column], with a border of one cell on
            each side: points outside the rectangle are clipped onto it.
    """

    def __init__(self, rings: list[np.ndarray], fine: int, x0: int, y0: int, nx: int, ny: int, *,
                 contained: bool = False) -> None:
        """``contained``: the rings are known to lie within the rectangle (skips the clipping of edges)."""
        self._frame(fine, x0, y0, nx, ny)
        w = self._w
        # edge starts g0 and steps d, (2, edges), in fine cells from the rectangle's corner (rounding ~1e-10 cell)
        pts = np.concatenate(rings) if len(rings) > 1 else rings[0]
        g = (pts * (self._sx, self._sy) + (180.0 * self._sx - self.x0, 90.0 * self._sy - self.y0)).T
        g0, d = g[:, :-1], np.diff(g, axis=1)
        if len(rings) > 1:  # drop the joins between one ring's last point and the next ring's first
            keep = np.ones(g0.shape[1], bool)
            keep[np.cumsum([len(r) for r in rings[:-1]]) - 1] = False
            g0, d = g0[:, keep], d[:, keep]
        contained = contained or bool(g.min() >= 0 and g[0].max() <= nx and g[1].max() <= ny)
        if kernels.AVAILABLE and USE_KERNEL:  # the same states from one compiled pass
            self._flat, self._mark_cells = kernels.raster_states(
                np.ascontiguousarray(g0[0]), np.ascontiguousarray(g0[1]), np.ascontiguousarray(d[0]),
                np.ascontiguousarray(d[1]), self.nx, self.ny, contained, _MARGIN)
            self.state = self._flat.reshape(ny + 2, w)[:, :nx + 2]
            return
        # near cells: every cell within _MARGIN of an edge. Samples at most half a cell apart on each axis leave
        # every edge point within a quarter cell of one, so the cells that a box of half-width 1/4 + _MARGIN around
        # each sample overlaps (at most 2 x 2) hold them all
        m = (np.abs(d).max(axis=0) * 2 + 2).astype(np.int64)  # >= ceil(2 * extent) + 1 samples
        ends = np.cumsum(m)
        s = np.repeat(g0, m, axis=1) + np.repeat(d / (m - 1), m, axis=1) * (np.arange(ends[-1]) - np.repeat(ends - m, m))
        h = 0.25 + _MARGIN
        cells = np.floor(np.stack([s - h, s + h]))  # (low / high side, u / v, sample)
        if not contained:  # edges beyond the rectangle mark its border
            cells = np.minimum(np.maximum(cells, -1), [[nx], [ny]])
        cells = cells.astype(np.int64) + 1  # padded cells
        self._mark_cells = cells
        marks = (cells[:, None, 1] * w + cells[None, :, 0]).ravel()  # the 2 x 2 cells of each sample, flat
        # the even-odd state of each cell centre (u = c - 0.5, v = r - 0.5 in padded cells) from the crossings of
        # the edges with horizontal lines through the centres, half-open in v. Every line crosses the closed rings
        # an even number of times, so over the flattened rows the state alternates between sorted crossings
        u0, v0, du, dv = g0[0], g0[1], d[0], d[1]
        if u0.size * (ny + 2) <= _DENSE_CROSSINGS:
            yc = np.arange(-0.5, ny + 1)  # centre lines of the padded rows
            e, j = np.nonzero((v0[:, None] > yc) != ((v0 + dv)[:, None] > yc))
        else:
            v1 = v0 + dv
            jlo = np.ceil(np.minimum(v0, v1) - 0.5).clip(-1, None)
            cnt = (np.ceil(np.maximum(v0, v1) - 0.5).clip(None, ny + 1) - jlo).clip(0, None).astype(np.int64)
            ends = np.cumsum(cnt)
            e = np.repeat(np.arange(cnt.size), cnt)
            j = (jlo[e] + (np.arange(ends[-1]) - (ends - cnt)[e])).astype(np.int64) + 1
        ed = np.stack([u0, v0, du / np.where(dv == 0, 1, dv)])[:, e]  # padded row j: centre line at v = j - 0.5
        x = np.floor(ed[0] + (j - 0.5 - ed[1]) * ed[2] + 0.5)
        if not contained:
            x = np.minimum(np.maximum(x, -1), nx + 1)
        bounds = np.empty(e.size + 2, np.int64)
        bounds[0], bounds[-1] = 0, (ny + 2) * w
        bounds[1:-1] = np.sort(j * w + x.astype(np.int64) + 1)  # first padded cell right of each crossing
        runs = np.diff(bounds)
        alternate = _ALTERNATE[:runs.size] if runs.size <= _ALTERNATE.size else (np.arange(runs.size) & 1).astype(
            np.int8)
        state = np.repeat(alternate, runs)  # OUTSIDE 0, INSIDE 1
        state[marks] = NEAR
        grid = state.reshape(ny + 2, w)
        if contained:  # nothing of the region lies beyond the rectangle: neither do points clipped onto its border
            grid[0] = grid[-1] = grid[:, 0] = grid[:, nx + 1] = OUTSIDE
        self._flat = state
        self.state = grid[:, :nx + 2]

    def _frame(self, fine: int, x0: int, y0: int, nx: int, ny: int) -> None:
        self.fine, self.x0, self.y0, self.nx, self.ny = int(fine), int(x0), int(y0), int(nx), int(ny)
        n = 1 << self.fine
        self._sx, self._sy = n / 360.0, n / 180.0  # the factors of hilbert.grid_xy
        self._w = self.nx + 3  # padded columns, plus one collecting the crossings right of every cell
        # the largest padded column and row a point is clipped to (lon 180 and lat 90 fall in the grid's last
        # column / row, as in hilbert.grid_xy), used by classify and by the compiled scan's copy of it
        last = n - 1
        self._cmax = min(last, self.x0 + self.nx) - (self.x0 - 1)
        self._rmax = min(last, self.y0 + self.ny) - (self.y0 - 1)

    @classmethod
    def from_states(cls, fine: int, x0: int, y0: int, nx: int, ny: int, flat: np.ndarray, mark_cells: np.ndarray
                    ) -> "Raster":
        """The raster whose states :func:`rsretrieve.index.kernels.raster_states` returned (``flat``,
        ``mark_cells``), for the rectangle of ``Raster(rings, fine, x0, y0, nx, ny, contained=True)``."""
        self = cls.__new__(cls)
        self._frame(fine, x0, y0, nx, ny)
        self._flat, self._mark_cells = flat, mark_cells
        self.state = flat.reshape(self.ny + 2, self._w)[:, :self.nx + 2]
        return self

    def classify(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """int8 state of points (degrees): ``INSIDE``, ``OUTSIDE`` or ``NEAR`` (needs the exact test)."""
        # as in hilbert.grid_xy (lon 180 and lat 90 fall in the last column / row), then clipped onto the border
        # in padded cells: shifted before the floor (rounding ~1e-11 cell, far below _MARGIN), one clip per axis
        c = np.floor(np.add(lon, 180.0) * self._sx - (self.x0 - 1))
        r = np.floor(np.add(lat, 90.0) * self._sy - (self.y0 - 1))
        np.clip(c, 0, self._cmax, out=c)
        np.clip(r, 0, self._rmax, out=r)
        r *= self._w
        r += c
        return self._flat.take(r.astype(np.intp))

    def coarse(self, bits: int) -> np.ndarray:
        """State of the rectangle's coarse cells of ``2**bits`` x ``2**bits`` fine cells, int8 (ny >> bits,
        nx >> bits) indexed [row, column]: ``INSIDE`` or ``OUTSIDE`` wholly, else ``NEAR``."""
        if kernels.AVAILABLE and USE_KERNEL:
            return kernels.raster_coarse(self._flat, self._mark_cells, self._w, self.nx, self.ny, bits)
        f = 1 << bits
        ncx, ncy = self.nx // f, self.ny // f
        near = np.zeros((ncy + 2) * (ncx + 2), bool)
        cells = ((self._mark_cells - 1) >> bits) + 1  # padded fine cell p lies in coarse cell (p - 1) >> bits, + 1
        near[(cells[:, None, 1] * (ncx + 2) + cells[None, :, 0]).ravel()] = True
        centre = self._flat[(np.arange(ncy)[:, None] * f + f // 2 + 1) * self._w + np.arange(ncx) * f + f // 2 + 1]
        return np.where(near.reshape(ncy + 2, ncx + 2)[1:-1, 1:-1], np.int8(NEAR), centre)


def _rings(poly: Polygon) -> list[np.ndarray]:
    if not poly.interiors:
        return [shapely.get_coordinates(poly)]
    return [np.asarray(poly.exterior.coords)] + [np.asarray(r.coords) for r in poly.interiors]


class Region:
    """A closed (multi)polygon: exact point tests (``shapely.intersects_xy``, prepared), fast classification of
    many points through per-part rasters, and classification of Hilbert grid cells."""

    def __init__(self, geom: Polygon | MultiPolygon, order: int = HILBERT_ORDER, max_cells: int = MAX_CELLS) -> None:
        """``max_cells``: grid cells over each part's bounds (fewer cost less to build, more leave fewer points
        near an edge); may be changed until the rasters are built."""
        self.geom, self.order, self.max_cells = geom, order, max_cells
        self.bounds: tuple[float, float, float, float] = geom.bounds  # (shapely computes them on each call)
        self._prepared = False  # prepared for exact tests on first use: most queries make none
        self.parts = list(getattr(geom, "geoms", [geom]))
        self._rasters: list[tuple[int, int, int, Raster]] | None = None
        self._ring_arrays: tuple | None = None
        self._part_rings: list[list[np.ndarray]] | None = None

    def part_rings(self) -> list[list[np.ndarray]]:
        """For each part, its closed rings ((m, 2) lon/lat arrays, exterior first), read from shapely once."""
        if self._part_rings is None:
            self._part_rings = [_rings(poly) for poly in self.parts]
        return self._part_rings

    def __call__(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Exact: which points (degrees) are in the closed region."""
        if not self._prepared:
            shapely.prepare(self.geom)
            self._prepared = True
        return shapely.intersects_xy(self.geom, x, y)

    @property
    def rasterised(self) -> bool:
        """Whether the parts get rasters (not for polygons of very many parts)."""
        return len(self.parts) <= MAX_RASTER_PARTS

    def part_cells(self) -> list[tuple[int, int, int, Raster]]:
        """For each part: ``(level, cx0, cy0, raster)``, the raster over the grid cells of ``level`` that cover the
        part's bounds (:func:`box_extent`), the south-west one being ``(cx0, cy0)``; built on first use. Empty when
        the region is not rasterised."""
        if self._rasters is None:
            out = []
            for poly, rings in zip(self.parts, self.part_rings()) if self.rasterised else []:
                level, x0, x1, y0, y1 = box_extent(*poly.bounds, order=self.order, max_cells=self.max_cells)
                fine = min(self.order, level + RASTER_BITS)
                f = 1 << (fine - level)
                out.append((level, x0, y0, Raster(rings, fine, x0 * f, y0 * f, (x1 + 1 - x0) * f,
                                                  (y1 + 1 - y0) * f, contained=True)))
            self._rasters = out
        return self._rasters

    def one_part_row_ranges(self, hkey: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Row ranges of a segment (sorted Hilbert keys ``hkey``) under a one-part polygon's raster cover, flagged
        1 in cells wholly inside (at level 0: every row, unflagged). Before the raster exists, it and the ranges
        come from one compiled call (:func:`rsretrieve.index.kernels.polygon_row_ranges`), and the raster is kept
        (above ``KERNEL_MAX_VERTICES`` vertices: step by step). None without numba, for several parts or another
        grid order, where the caller makes the ranges from :meth:`key_ranges`."""
        if not (kernels.AVAILABLE and len(self.parts) == 1 and self.rasterised and self.order == HILBERT_ORDER):
            return None
        rings = self.rings() if self._rasters is None and USE_KERNEL else None
        if rings is not None:  # the raster and the rows in one call
            w, s, e, n = self.bounds
            starts, stops, inside, level, fine, fx0, fy0, nx, ny, flat, cells = kernels.polygon_row_ranges(
                hkey, rings[0], rings[1], w, s, e, n, HILBERT_ORDER, self.max_cells, RASTER_BITS, _MARGIN,
                hilbert._DIGITS, hilbert._STATES)
            f = 1 << (fine - level)
            self._rasters = [(level, fx0 // f, fy0 // f, Raster.from_states(fine, fx0, fy0, nx, ny, flat, cells))]
            return starts, stops, inside
        level, x0, y0, raster = self.part_cells()[0]  # built already (another segment), or too many vertices
        if level == 0:
            return np.zeros(1, np.int64), np.full(1, hkey.size, np.int64), np.zeros(1, np.int8)
        cover = np.ascontiguousarray(raster.coarse(raster.fine - level).T)  # [column, row]
        return kernels.rect_row_ranges(hkey, level, x0, y0, cover, HILBERT_ORDER, hilbert._DIGITS, hilbert._STATES)

    def key_cells(self) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        """For each part, the grid cells its key ranges are made of: ``(level, cx, cy, inside)``, the cells over
        the part's bounds that are not wholly outside it, ``inside`` True for those wholly inside."""
        if not self.rasterised:
            out = []
            for poly in self.parts:
                level, cx, cy, _ = box_cells(*poly.bounds, order=self.order, max_cells=self.max_cells)
                out.append((level, cx, cy, np.zeros(cx.size, bool)))
            return out
        out = []
        for level, x0, y0, raster in self.part_cells():
            states = raster.coarse(raster.fine - level)
            r, c = np.nonzero(states != OUTSIDE)
            out.append((level, c + x0, r + y0, states[r, c] == INSIDE))
        return out

    def key_ranges(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """For each part, the key ranges of its :meth:`key_cells`, one per cell, sorted (flag 1 where every point is
        inside), computed over the part's rectangle of cells at once."""
        if not self.rasterised:
            return [cell_ranges(level, cx, cy, inside, order=self.order) for level, cx, cy, inside in self.key_cells()]
        out = []
        for level, x0, y0, raster in self.part_cells():
            states = raster.coarse(raster.fine - level).T  # [column, row]
            out.append(rect_ranges(level, x0, x0 + states.shape[0] - 1, y0, y0 + states.shape[1] - 1,
                                   states == INSIDE, states != OUTSIDE, order=self.order))
        return out

    def rings(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The rings of the parts for :func:`rsretrieve.index.kernels.scan_topk`'s point test: ((m, 2) float64
        vertices, each ring closed; (rings + 1,) int64 start of each ring; (rings,) int64 its part), or None when
        the region has more than ``KERNEL_MAX_VERTICES`` vertices."""
        if self._ring_arrays is None and len(self.parts) == 1 and len(self.part_rings()[0]) == 1:  # one ring
            xy = np.ascontiguousarray(self.part_rings()[0][0], dtype=np.float64)
            self._ring_arrays = () if len(xy) > KERNEL_MAX_VERTICES else (
                xy, np.array([0, len(xy)], np.int64), np.zeros(1, np.int64))
        if self._ring_arrays is None:
            rings = [(p, r) for p, part in enumerate(self.part_rings()) for r in part]
            sizes = [len(r) for _, r in rings]
            if sum(sizes) > KERNEL_MAX_VERTICES:
                self._ring_arrays = ()
            else:
                xy = rings[0][1] if len(rings) == 1 else np.concatenate([r for _, r in rings])
                self._ring_arrays = (np.ascontiguousarray(xy, dtype=np.float64),
                                     np.array([0, *accumulate(sizes)], np.int64),
                                     np.array([p for p, _ in rings], np.int64))
        return self._ring_arrays or None

    def raster_params(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The parts' rasters for :func:`rsretrieve.index.kernels.scan_topk`: (their ``_flat`` states concatenated,
        (parts, 8) float64 rows ``sx, sy, x0 - 1, y0 - 1, last column, last row, padded width, offset``), the
        arithmetic of :meth:`Raster.classify`; None when the region is not rasterised."""
        if not self.rasterised:
            return None
        parts = self.part_cells()
        rows, offset = [], 0
        for _, _, _, r in parts:
            rows.append((r._sx, r._sy, r.x0 - 1, r.y0 - 1, r._cmax, r._rmax, r._w, offset))
            offset += r._flat.size
        states = np.concatenate([r._flat for *_, r in parts]) if len(parts) > 1 else parts[0][3]._flat
        return states, np.array(rows, np.float64)

    def contains(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Same answer as ``self(x, y)``; the rasters decide all points but those near an edge."""
        if not self.rasterised or (self._rasters is None and x.size < RASTER_MIN_POINTS):
            w, s, e, n = self.bounds
            out = (x >= w) & (x <= e) & (y >= s) & (y <= n)
            idx = np.flatnonzero(out)
            out[idx] = self(x[idx], y[idx])
            return out
        parts = self.part_cells()
        state = parts[0][3].classify(x, y)
        if len(parts) == 1:
            inside = state == INSIDE
            unsure = np.flatnonzero(state == NEAR)
        else:
            inside, near = state == INSIDE, state == NEAR
            for _, _, _, raster in parts[1:]:
                state = raster.classify(x, y)
                inside |= state == INSIDE
                near |= state == NEAR
            unsure = np.flatnonzero(near & ~inside)
        if unsure.size:
            inside[unsure] = self(x[unsure], y[unsure])
        return inside

    def classify_cells(self, level: int, cx: np.ndarray, cy: np.ndarray) -> np.ndarray:
        """State of arbitrary grid cells of ``level`` against the whole region: ``INSIDE`` or ``OUTSIDE`` wholly,
        else ``NEAR`` (points in them need the exact test)."""
        fine = min(self.order, level + RASTER_BITS)
        f = 1 << (fine - level)
        rings = [r for part in self.part_rings() for r in part]
        ox, oy = cx.min(), cy.min()
        raster = Raster(rings, fine, ox * f, oy * f, (cx.max() + 1 - ox) * f, (cy.max() + 1 - oy) * f)
        return raster.coarse(fine - level)[cy - oy, cx - ox]
