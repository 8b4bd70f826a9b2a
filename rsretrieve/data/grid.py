"""The ground grid: fixed-metre cells per UTM zone, the co-registration key of the whole toolkit.

A cell is ``tile_m`` x ``tile_m`` metres in one WGS 84 / UTM zone (EPSG 326zz north, 327zz south), with row and
column ``floor(northing / tile_m)`` and ``floor(easting / tile_m)``. Tiles of any sensor and date over the same ground
share a cell id such as ``33N_480m_r11020_c735``. Each sensor keeps its native resolution inside a cell (480 m:
48 px at 10 m, 16 px at 30 m).

A scene in a UTM CRS is tiled in its own zone (on the grid of the hemisphere its centre is in); a scene in any
other CRS (EPSG:4326, say) in the zone of its centre.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import shapely
from pyproj import CRS, Transformer
from shapely import affinity
from shapely.geometry import MultiPolygon, Polygon, box

DEFAULT_TILE_M = 480.0


@lru_cache(maxsize=256)
def _transformer(src: str, dst: str) -> Transformer:
    return Transformer.from_crs(CRS.from_user_input(src), CRS.from_user_input(dst), always_xy=True)


def transformer(src: CRS | str, dst: CRS | str) -> Transformer:
    """A cached ``always_xy`` transformer between two CRSs (given as CRS or any user input)."""
    return _transformer(CRS.from_user_input(src).to_wkt(), CRS.from_user_input(dst).to_wkt())


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the WGS 84 / UTM zone containing (lon, lat) in degrees (no Norway/Svalbard exceptions)."""
    lon = ((lon + 180.0) % 360.0) - 180.0
    zone = min(int((lon + 180.0) // 6.0) + 1, 60)
    return (32600 if lat >= 0 else 32700) + zone


def grid_epsg_for(crs: CRS | str, center_lon: float, center_lat: float) -> int:
    """The UTM zone a scene is tiled in: its own zone if its CRS is UTM, else the zone of its centre.

    The hemisphere is always that of the centre: a scene south of the equator in a north zone (USGS Landsat
    products use north zones with negative northings there) is tiled on the south zone's grid, whose rows are
    offset from the north grid's by 10,000 km (not a whole number of cells), so that it shares cells with the
    scenes of the same ground delivered in the south zone.
    """
    crs = CRS.from_user_input(crs)
    zone = crs.utm_zone  # e.g. "33N", for WGS 84 and other datums' UTM projections alike
    if zone:
        return (32600 if center_lat >= 0 else 32700) + int(zone[:-1])
    return utm_epsg(center_lon, center_lat)


def zone_label(epsg: int) -> str:
    """``32633`` -> ``"33N"``, ``32718`` -> ``"18S"``."""
    return f"{epsg % 100:02d}{'N' if epsg < 32700 else 'S'}"


def cell_id(epsg: int, tile_m: float, row: int, col: int) -> str:
    """The string id of a grid cell, e.g. ``33N_480m_r11020_c735``."""
    return f"{zone_label(epsg)}_{int(tile_m)}m_r{row}_c{col}"


def parse_cell_id(cid: str) -> tuple[int, float, int, int]:
    """Inverse of :func:`cell_id`: ``(epsg, tile_m, row, col)``."""
    zone, size, row, col = cid.split("_")
    epsg = (32600 if zone[-1] == "N" else 32700) + int(zone[:-1])
    return epsg, float(size.rstrip("m")), int(row[1:]), int(col[1:])


@dataclass(frozen=True)
class Cell:
    """One grid cell."""

    #: EPSG code of the cell's UTM zone
    epsg: int
    #: cell side in metres
    tile_m: float
    #: floor(northing / tile_m)
    row: int
    #: floor(easting / tile_m)
    col: int

    @property
    def id(self) -> str:
        return cell_id(self.epsg, self.tile_m, self.row, self.col)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(minx, miny, maxx, maxy) in the zone's metres."""
        return (self.col * self.tile_m, self.row * self.tile_m, (self.col + 1) * self.tile_m,
                (self.row + 1) * self.tile_m)

    def footprint(self, densify: int = 8) -> Polygon | MultiPolygon:
        """The cell outline in EPSG:4326, split at the antimeridian when it crosses it."""
        return to_lonlat(box(*self.bounds), f"EPSG:{self.epsg}", densify)

    def center_lonlat(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.bounds
        lon, lat = transformer(f"EPSG:{self.epsg}", "EPSG:4326").transform((x0 + x1) / 2, (y0 + y1) / 2)
        return float(lon), float(lat)


def cells_covering(bounds: tuple[float, float, float, float], epsg: int, tile_m: float) -> list[Cell]:
    """All cells of zone ``epsg`` intersecting ``bounds`` (minx, miny, maxx, maxy in that zone's metres)."""
    minx, miny, maxx, maxy = bounds
    c0, c1 = math.floor(minx / tile_m), math.ceil(maxx / tile_m)
    r0, r1 = math.floor(miny / tile_m), math.ceil(maxy / tile_m)
    # rows north to south, columns west to east: the reading order of the scene
    return [Cell(epsg, tile_m, r, c) for r in range(r1 - 1, r0 - 1, -1) for c in range(c0, c1)]


def wrap_near(lon: np.ndarray | float, ref: float) -> np.ndarray | float:
    """Longitudes moved by whole turns (360 degrees) to within half a turn of ``ref``: onto the side of the
    antimeridian of a lon/lat scene whose centre is at ``ref`` (in its own coordinates, which may run past 180)."""
    return lon + 360.0 * np.round((ref - lon) / 360.0)


def cell_bounds_in(cell: Cell, crs: CRS | str, near_x: float | None = None,
                   densify: int = 21) -> tuple[float, float, float, float] | None:
    """A cell's bounds (minx, miny, maxx, maxy) in another CRS, from its densified outline.

    Unlike ``rasterio.warp.transform_bounds``, the result never wraps: for a geographic ``crs`` each longitude is
    moved by a multiple of 360 degrees to the side of ``near_x`` (the scene's centre longitude in its own
    coordinates, which may lie beyond 180), so the westernmost cell of UTM zone 1 next to a scene at -179.99
    degrees gives (-180.004, ..., -179.99, ...) rather than west > east.

    Returns:
        The bounds, or ``None`` when the outline does not transform to finite coordinates.
    """
    dst = CRS.from_user_input(crs)
    ring = _densify_ring(np.asarray(box(*cell.bounds).exterior.coords, dtype=np.float64), densify)
    x, y = transformer(f"EPSG:{cell.epsg}", dst).transform(ring[:, 0], ring[:, 1])
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        return None
    if dst.is_geographic:
        x = wrap_near(x, float(np.median(x)) if near_x is None else near_x)
    return float(x.min()), float(y.min()), float(x.max()), float(y.max())


def _densify_ring(coords: np.ndarray, n: int) -> np.ndarray:
    """Insert ``n - 1`` points on each edge of a closed ring (N+1, 2) -> (N*n + 1, 2)."""
    a, b = coords[:-1], coords[1:]
    t = np.linspace(0.0, 1.0, n, endpoint=False)[None, :, None]  # (1, n, 1)
    pts = a[:, None, :] + (b - a)[:, None, :] * t  # (N, n, 2)
    return np.vstack([pts.reshape(-1, 2), coords[:1]])


def to_lonlat(geom: Polygon, crs: CRS | str, densify: int = 8) -> Polygon | MultiPolygon:
    """Project a polygon to EPSG:4326 with densified edges, splitting it at the antimeridian.

    Args:
        geom: a polygon in ``crs`` (no holes are kept).
        crs: its CRS.
        densify: points per edge, so long edges follow the curved image of a straight projected line.

    Returns:
        A polygon with longitudes in [-180, 180], or a MultiPolygon of the parts east and west of 180 degrees.
    """
    ring = _densify_ring(np.asarray(geom.exterior.coords, dtype=np.float64), densify)
    if CRS.from_user_input(crs).is_geographic and CRS.from_user_input(crs).equals(CRS.from_epsg(4326)):
        lon, lat = ring[:, 0].copy(), ring[:, 1].copy()
    else:
        lon, lat = transformer(crs, "EPSG:4326").transform(ring[:, 0], ring[:, 1])
        lon, lat = np.asarray(lon), np.asarray(lat)
    lon = ((lon + 180.0) % 360.0) - 180.0
    # unwrap: a jump of more than 180 degrees between consecutive vertices means the edge crosses the antimeridian
    jumps = np.diff(lon)
    if np.any(np.abs(jumps) > 180.0):
        lon = np.concatenate([[lon[0]], lon[0] + np.cumsum(jumps - 360.0 * np.round(jumps / 360.0))])
    # only a ring whose unwrapped longitudes end a turn away from where they start can enclose a pole: the test of
    # the pole itself (a projection and a containment) is left out of the other cells' footprints, ingest's hot path
    if abs(lon[-1] - lon[0]) > 180.0 and (pole := _pole_inside(geom, crs)):
        # a ring around a pole sweeps 360 degrees of longitude: without closing it along the pole's latitude it
        # would be read as the thin band between its own latitudes, and the cap the scene covers would be lost.
        # Its last vertex is its first, a whole turn away: exactly so, or the pieces cut at the window edges below
        # would not meet again
        lon[-1] = lon[0] + 360.0 * np.round((lon[-1] - lon[0]) / 360.0)
        lon = np.concatenate([lon, [lon[-1], lon[0]]])
        lat = np.concatenate([lat, [pole, pole]])
    poly = shapely.make_valid(Polygon(np.column_stack([lon, lat])))
    minx, _, maxx, _ = poly.bounds
    if minx >= -180.0 and maxx <= 180.0:
        return poly
    parts = []
    for shift, window in ((0.0, box(-180.0, -90.0, 180.0, 90.0)), (360.0, box(-540.0, -90.0, -180.0, 90.0)),
                          (-360.0, box(180.0, -90.0, 540.0, 90.0))):
        piece = poly.intersection(window)
        if not piece.is_empty and piece.area > 0:
            piece = affinity.translate(piece, xoff=shift)
            parts.extend(getattr(piece, "geoms", [piece]))
    parts = [p for p in parts if isinstance(p, Polygon) and p.area > 0]
    if len(parts) > 1:  # pieces of a polar cap meet along the window edge they were cut at: one polygon again
        merged = shapely.union_all(parts)
        parts = [p for p in getattr(merged, "geoms", [merged]) if isinstance(p, Polygon) and p.area > 0]
    return parts[0] if len(parts) == 1 else MultiPolygon(parts)


def _pole_inside(geom: Polygon, crs: CRS | str) -> float:
    """90.0 or -90.0 when the polygon (in ``crs``) contains the North or South Pole, else 0.0."""
    src = CRS.from_user_input(crs)
    for lat in (90.0, -90.0):
        if src.is_geographic:
            continue  # a lon/lat box cannot enclose a pole, only touch it
        x, y = transformer("EPSG:4326", src).transform(0.0, lat)
        if math.isfinite(x) and math.isfinite(y) and geom.contains(shapely.Point(x, y)):
            return lat
    return 0.0


def lonlat_boxes(geom: Polygon | MultiPolygon) -> list[tuple[float, float, float, float]]:
    """Bounding boxes (min_lon, min_lat, max_lon, max_lat) of each part: one per side of the antimeridian."""
    return [g.bounds for g in getattr(geom, "geoms", [geom])]


def _central_meridian(epsg: int) -> float:
    return (epsg % 100 - 1) * 6.0 - 177.0


def ground_neighbours(sources: Iterable[str], targets: Iterable[str], overlap: bool = False,
                      min_share: float = 1e-6, symmetric: bool = False) -> dict[str, list[str]]:
    """Cells of ``targets`` on another grid (UTM zone or cell size) that each cell of ``sources`` meets on the ground.

    The same ground can have cells in two zones: scenes delivered in neighbouring zones (Sentinel-2 tiles of the
    overlap along a zone boundary) are tiled in their own zones, and a north and a south grid meet at the equator.
    A source cell's corners and edge midpoints, projected into a target grid, give a box there (a little larger than
    the slightly rotated cell); the target cells that box meets are the candidates. Only source cells within a few
    cells of a target grid's cells (in longitude and latitude) are projected, and nothing at all when every cell is
    on one grid.

    Args:
        sources: cell ids.
        targets: cell ids.
        overlap: ``False``: cells that overlap or touch (the box test alone, which errs on the side of meeting);
            ``True``: only cells whose footprints share at least ``min_share`` of the smaller cell's area
            (candidates checked on their outlines).
        min_share: with ``overlap``, the least shared fraction: the default, any area at all (a gallery tile with
            some of a query's ground); 0.5, the cell of another zone that covers most of the cell's ground (at
            most two such, in practice one: what a query counts as the same cell). Cells of two zones on one ground
            are rotated against each other, so a cell shares some area with 3-4 cells of the other zone, down to
            slivers of a square metre.
        symmetric: ``sources`` and ``targets`` are the same cells: each pair of grids is projected one way only and
            its pairs mirrored (half the work; two cells on the same ground are each other's).

    Returns:
        source cell id -> target cell ids it meets (sources meeting none are left out).
    """
    grids: dict[tuple[int, float], set[tuple[int, int]]] = defaultdict(set)  # (epsg, tile_m) -> (row, col)
    for cid in targets:
        e, t, r, c = parse_cell_id(cid)
        grids[(e, t)].add((r, c))
    by_grid: dict[tuple[int, float], list[tuple[str, int, int]]] = defaultdict(list)
    for cid in sources:
        e, t, r, c = parse_cell_id(cid)
        by_grid[(e, t)].append((cid, r, c))
    if not any(g != s for g in grids for s in by_grid):
        return {}
    centres = {}  # source grid -> (rows and cols, centre lon, centre lat), projected once
    for (ea, ta), members in by_grid.items():
        rc = np.array([m[1:] for m in members], dtype=np.float64)  # (M, 2)
        lon, lat = transformer(f"EPSG:{ea}", "EPSG:4326").transform((rc[:, 1] + 0.5) * ta, (rc[:, 0] + 0.5) * ta)
        centres[(ea, ta)] = (rc, np.asarray(lon), np.asarray(lat))
    along = np.array([0.0, 0.5, 1.0, 1.0, 1.0, 0.5, 0.0, 0.0])  # corners and edge midpoints, around the cell
    across = np.array([0.0, 0.0, 0.0, 0.5, 1.0, 1.0, 1.0, 0.5])
    ring = _densify_ring(np.asarray(box(0.0, 0.0, 1.0, 1.0).exterior.coords, dtype=np.float64), 4)  # (17, 2)
    out: dict[str, list[str]] = defaultdict(list)
    for (eb, tb), cells in grids.items():
        rows_cols = np.array(sorted(cells), dtype=np.float64)  # (T, 2)
        lon, lat = transformer(f"EPSG:{eb}", "EPSG:4326").transform((rows_cols[:, 1] + 0.5) * tb,
                                                                     (rows_cols[:, 0] + 0.5) * tb)
        lon, lat = wrap_near(np.asarray(lon), _central_meridian(eb)), np.asarray(lat)
        cos = max(math.cos(math.radians(min(89.0, float(np.abs(lat).max()) + 1.0))), 0.01)
        for (ea, ta), members in by_grid.items():
            if (ea, ta) == (eb, tb) or symmetric and (ea, ta) > (eb, tb):
                continue
            rc, clon, clat = centres[(ea, ta)]
            margin = 3.0 * max(ta, tb) / 110_000.0  # a few cells, in degrees of latitude
            if clat.max() < lat.min() - margin or clat.min() > lat.max() + margin:
                continue
            clon = wrap_near(clon, _central_meridian(eb))
            idx = np.flatnonzero((clat > lat.min() - margin) & (clat < lat.max() + margin)
                                 & (clon > lon.min() - margin / cos) & (clon < lon.max() + margin / cos))
            if not len(idx):
                continue
            xs = ((rc[idx, 1][:, None] + along[None, :]) * ta).ravel()
            ys = ((rc[idx, 0][:, None] + across[None, :]) * ta).ravel()
            bx, by = transformer(f"EPSG:{ea}", f"EPSG:{eb}").transform(xs, ys)
            bx, by = np.asarray(bx).reshape(len(idx), -1), np.asarray(by).reshape(len(idx), -1)
            pad = 1e-6 * tb  # a cell that only touches a target cell meets it
            c0, c1 = np.floor((bx.min(axis=1) - pad) / tb), np.floor((bx.max(axis=1) + pad) / tb)
            r0, r1 = np.floor((by.min(axis=1) - pad) / tb), np.floor((by.max(axis=1) + pad) / tb)
            span = int(2 * ta / tb) + 3  # the most target cells a cell's box can cross per axis
            ok = np.isfinite(bx).all(axis=1) & np.isfinite(by).all(axis=1)
            ok[ok] = (r1[ok] - r0[ok] <= span) & (c1[ok] - c0[ok] <= span)
            pairs = [(idx[j], r, c) for j in np.flatnonzero(ok) for r in range(int(r0[j]), int(r1[j]) + 1)
                     for c in range(int(c0[j]), int(c1[j]) + 1) if (r, c) in cells]
            if not pairs:
                continue
            p = np.array(pairs, dtype=np.int64)  # (P, 3): source position, target row, target col
            if overlap:  # the target cells' outlines in the source zone, against the source cells: any shared area
                x, y = transformer(f"EPSG:{eb}", f"EPSG:{ea}").transform(
                    ((p[:, 2:3] + ring[None, :, 0]) * tb).ravel(), ((p[:, 1:2] + ring[None, :, 1]) * tb).ravel())
                theirs = shapely.polygons(np.stack([np.asarray(x), np.asarray(y)], axis=-1).reshape(len(p), -1, 2))
                sr, sc = rc[p[:, 0], 0], rc[p[:, 0], 1]
                mine = shapely.box(sc * ta, sr * ta, (sc + 1) * ta, (sr + 1) * ta)
                area = np.zeros(len(p))
                good = shapely.is_valid(theirs)
                area[good] = shapely.area(shapely.intersection(mine[good], theirs[good]))
                p = p[area >= max(min_share, 1e-6) * min(ta, tb) ** 2]
            for i, r, c in p.tolist():
                out[members[i][0]].append(cell_id(eb, tb, r, c))
    if symmetric:
        for source, found in [(k, list(v)) for k, v in out.items()]:  # copies: mirrored pairs are not mirrored back
            for target in found:
                out[target].append(source)
    return dict(out)
