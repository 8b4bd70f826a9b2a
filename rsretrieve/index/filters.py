"""Query filters: bbox, polygon, time range, sensors, exclusions; and the geometry-to-rows step over a segment.

A tile matches a filter when its centroid (lon, lat) lies in the bbox (edges included) and in the closed polygon
(``shapely.intersects_xy``), its time is within ``[start, end]`` (an unknown time never matches a time filter), its
sensor is one of ``sensors``, and neither its scene nor its cell is excluded. ``one_per_cell`` is applied by the
planner on the ranked results, not here.

Rows are found in three steps: the filter's boxes become Hilbert key ranges, one per grid cell of the box's cover
(:func:`box_ranges`; a polygon's cells come from its rasters, :class:`Region`), the segment's sorted keys turn those
into row ranges (``np.searchsorted``), and vectorised checks on the columns of just those rows keep the exact matches
(the geometric test only in ranges not wholly inside the geometry). A query costs a few dozen array operations of
about a microsecond each on top of the rows it checks, so the cover is sized to the rows estimated in the filter's
box: 16 cells (64 per polygon part) below ``SMALL_BOX_ROWS``, 256 (1024) above.

With numba (:mod:`rsretrieve.index.kernels`) the common cases run compiled: the row ranges of one box (a bbox, or a
small polygon's bounds) or of a one-part polygon's raster in one call, and for a single query the checks, the
scoring and the top-k in one pass over those ranges (:meth:`CompiledFilter.scan`); the numpy code remains the
fallback and the reference the tests compare with.

GeoJSON regions, a file for ``query --within`` (:func:`load_region`) or the service's ``within`` object, are read by
one parser, :func:`region_from_geojson`, with the same checks and messages for both.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from datetime import date, datetime, time, timezone
from pathlib import Path

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon, shape

from rsretrieve.index import kernels
from rsretrieve.index import hilbert
from rsretrieve.index.hilbert import HILBERT_ORDER, box_ranges, merge_ranges
from rsretrieve.index.region import Region
from rsretrieve.index.segment import TIME_UNKNOWN, Segment

_BBOX_RULE = "bbox must be W,S,E,N with -180<=W,E<=180 and -90<=S<N<=90"
#: most grid cells a bbox is covered with: fewer cells cost less to turn into key ranges, more leave fewer rows
#: outside the box in them (each then needs a check)
BOX_CELLS = 256
#: below this many rows estimated in the filter's box, boxes get ``SMALL_BOX_CELLS`` cells and polygon parts
#: ``SMALL_REGION_CELLS``: with few rows to check, building the cover costs more than the rows it leaves out
SMALL_BOX_ROWS = 4096
SMALL_BOX_CELLS = 16
SMALL_REGION_CELLS = 64
#: below this many rows estimated in a polygon's box, it is covered by its parts' boxes without rasters and every
#: row in them goes to shapely (about 35 ns a point, prepared) rather than paying ~0.1 ms for the rasters
POLYGON_BOX_ROWS = 512
#: rows per thread from which the compiled scan runs on several threads (one part of the ranges each)
PARALLEL_ROWS = 4096
#: rows checked per pass of :meth:`CompiledFilter.rows`
ROWS_CHUNK = 32768
_INT64_MIN, _INT64_MAX = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)
_NO_BOOL, _NO_CELLS, _NO_BOX = np.zeros(0, bool), np.zeros(0, np.int32), np.zeros(0, np.float64)
_NO_STATES, _NO_PARAMS = np.zeros(0, np.int8), np.zeros((0, 8), np.float64)
_NO_RINGS = (np.zeros((0, 2), np.float64), np.zeros(1, np.int64), np.zeros(0, np.int64))
_SAMPLE = np.sort(np.random.default_rng(0).random(1024))  # fixed positions for selectivity estimates


@dataclass(frozen=True)
class QueryFilter:
    """What a search may return. All fields are optional; the empty filter matches every tile.

    Attributes:
        bbox: (W, S, E, N) degrees, EPSG:4326; ``W > E`` means the box crosses the antimeridian.
        polygon: Polygon or MultiPolygon in EPSG:4326 degrees (see :func:`load_region`).
        start, end: inclusive time range; naive datetimes are UTC; a ``date`` as ``end`` includes that whole day.
        sensors: sensor names a result may come from.
        exclude_scene_ids: scenes never returned (e.g. the query's own scene).
        exclude_cell_ids: ground cells never returned (e.g. the query's own cell).
        one_per_cell: return only the best tile of each ground cell.
    """

    bbox: tuple[float, float, float, float] | None = None
    polygon: Polygon | MultiPolygon | None = None
    start: datetime | date | None = None
    end: datetime | date | None = None
    sensors: frozenset[str] | None = None
    exclude_scene_ids: frozenset[int] = field(default_factory=frozenset)
    exclude_cell_ids: frozenset[str] = field(default_factory=frozenset)
    one_per_cell: bool = False

    def __post_init__(self) -> None:
        if self.bbox is not None:
            object.__setattr__(self, "bbox", parse_bbox(self.bbox))
        if self.polygon is not None:
            _check_polygon(self.polygon, "polygon")
        lo, hi = self.time_range()
        if lo is not None and hi is not None and hi < lo:
            raise ValueError(f"end ({self.end}) is before start ({self.start})")
        if self.sensors is not None:
            names = frozenset([self.sensors] if isinstance(self.sensors, str) else self.sensors)
            if not names or not all(isinstance(s, str) and s for s in names):
                raise ValueError(f"sensors must be a non-empty set of sensor names, got {sorted(map(str, names))}")
            object.__setattr__(self, "sensors", names)
        object.__setattr__(self, "exclude_scene_ids", frozenset(int(s) for s in self.exclude_scene_ids))
        object.__setattr__(self, "exclude_cell_ids", frozenset(str(c) for c in self.exclude_cell_ids))

    def time_range(self) -> tuple[int | None, int | None]:
        """Inclusive bounds in unix seconds (None where open)."""
        return _seconds(self.start, False), _seconds(self.end, True)

    def check_sensors(self, known: list[str] | set[str]) -> None:
        """Raise ValueError naming the first sensor of the filter that is not in ``known``."""
        for name in sorted(self.sensors or ()):
            if name not in known:
                raise ValueError(f"unknown sensor {name!r}; known sensors: {', '.join(sorted(known))}")

    @property
    def is_trivial(self) -> bool:
        """Whether the filter matches every tile (``one_per_cell`` aside)."""
        return (self.bbox is None and self.polygon is None and self.start is None and self.end is None
                and self.sensors is None and not self.exclude_scene_ids and not self.exclude_cell_ids)


def parse_bbox(value: str | tuple | list) -> tuple[float, float, float, float]:
    """``"W,S,E,N"`` (or a 4-sequence) as validated floats, in degrees."""
    try:
        parts = value.split(",") if isinstance(value, str) else list(value)
        w, s, e, n = (float(p) for p in parts)
    except (TypeError, ValueError):
        raise ValueError(f"{_BBOX_RULE}, got {value!r}") from None
    if not (-180 <= w <= 180 and -180 <= e <= 180 and -90 <= s < n <= 90):
        raise ValueError(f"{_BBOX_RULE}, got {w:g},{s:g},{e:g},{n:g}")
    return w, s, e, n


def load_region(path: str | os.PathLike) -> Polygon | MultiPolygon:
    """Read a (multi)polygon in EPSG:4326 from a GeoJSON Feature, FeatureCollection (union) or geometry file.

    The document is parsed by :func:`region_from_geojson` (the service's ``within`` filter uses it too).

    Raises:
        ValueError: with a one-line reason naming the file.
    """
    p = Path(path)
    what = f"region file {p}"
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ValueError(f"{what} does not exist") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{what} is not GeoJSON: not UTF-8 text ({first_line(exc)})") from None
    except OSError as exc:
        raise ValueError(f"{what} cannot be read: {exc.strerror or first_line(exc)}") from None
    try:
        doc = loads_strict_json(text, keys=GEOJSON_KEYS, allow_nan=True)  # a file's properties are not read
    except RecursionError:
        raise ValueError(f"{what} is not GeoJSON: nested too deep") from None
    except ValueError as exc:  # json.JSONDecodeError too
        raise ValueError(f"{what} is not GeoJSON: {first_line(exc)}") from None
    return region_from_geojson(doc, what)


#: the GeoJSON members a region is read from: one given twice in an object would change the region silently
GEOJSON_KEYS = frozenset({"type", "coordinates", "geometry", "geometries", "features", "crs"})


def loads_strict_json(text: str, keys: frozenset[str] | None = None, allow_nan: bool = False) -> object:
    """``json.loads`` refusing what it would otherwise take silently: a key given twice in one object (the last
    would win) and ``NaN`` / ``Infinity`` (not JSON).

    Args:
        keys: only these keys are refused twice (None: every key); a region file's ``properties`` may hold
            anything, since nothing reads them.
        allow_nan: take ``NaN`` / ``Infinity`` (as Python's ``json.dump`` writes them); NaN coordinates are
            then refused by the geometry checks.

    Raises:
        json.JSONDecodeError: malformed JSON.
        ValueError: a key twice, a non-JSON constant, or an integer of more than 4300 digits (one line each).
        RecursionError: nested too deep.
    """
    def pairs(items: list[tuple[str, object]]) -> dict[str, object]:
        out: dict[str, object] = {}
        for key, value in items:
            if key in out and (keys is None or key in keys):
                raise ValueError(f"key {key[:40]!r} is given twice in one object")
            out[key] = value
        return out

    def constant(name: str) -> object:
        raise ValueError(f"{name} is not a JSON number")

    return json.loads(text, object_pairs_hook=pairs, **({} if allow_nan else {"parse_constant": constant}))


#: ``crs`` names accepted (upper-cased): EPSG:4326 or OGC CRS84 in their usual spellings (``EPSG:4326``,
#: ``urn:ogc:def:crs:OGC:1.3:CRS84``, ``http://www.opengis.net/def/crs/EPSG/0/4326``), not ``EPSG:14326``
_LONLAT_CRS = re.compile(r"(?:^|[:/])(?:4326|CRS84)$")
_GEOMETRY_ERRORS = (AttributeError, KeyError, TypeError, ValueError, IndexError, OverflowError, RecursionError,
                    shapely.errors.GEOSException, shapely.errors.GeometryTypeError)


def _check_crs(obj: dict, what: str, where: str) -> None:
    """Refuse a ``crs`` member of ``obj`` (GeoJSON 2008's named CRS; RFC 7946 has none: lon/lat always) other than a
    named EPSG:4326 / CRS84; ``where`` says which object of the document, after ``what``. A member on a feature or
    its geometry counts as much as one at the top: the coordinates under it are in that CRS."""
    crs = obj.get("crs")
    if crs is None:
        return
    props = crs.get("properties") if isinstance(crs, dict) else None
    name = crs if isinstance(crs, str) else props.get("name") if isinstance(props, dict) else None
    if not isinstance(name, str) or not _LONLAT_CRS.search(name.strip().upper()):
        raise ValueError(f"{what} has CRS {_short(name if isinstance(name, str) else crs)}{where}; only EPSG:4326 / "
                         f"CRS84 lon/lat is accepted")
    if isinstance(crs, str):
        raise ValueError(f"{what} has a crs member that is a string ({_short(crs)}){where}, not a named CRS object "
                         f'{{"type": "name", "properties": {{"name": ...}}}}; or leave it out (lon/lat is the '
                         f"default)")


def region_from_geojson(doc: object, what: str) -> Polygon | MultiPolygon:
    """A (multi)polygon in EPSG:4326 from a parsed GeoJSON document: a Polygon / MultiPolygon geometry, a Feature or
    a FeatureCollection (its polygons unioned). The one parser of ``query --within FILE`` (:func:`load_region`) and
    of the service's ``within`` filter.

    Refused, each with a one-line message starting with ``what`` (e.g. ``"region file r.geojson"``, ``"within"``):
    not a JSON object with a ``type``; a ``crs`` member other than a named EPSG:4326 / CRS84; a FeatureCollection
    without a list of Feature objects, or a Feature without a ``geometry`` member; geometries shapely cannot read;
    parts that are not polygons, or none at all (features with a null geometry are skipped); a part or the union
    that is empty, invalid (e.g. self-intersecting) or outside lon -180..180 / lat -90..90; and a ring edge spanning
    more than 180 degrees of longitude (ambiguous: a shape meant to cross the antimeridian is read the long way
    round the globe), except an edge from -180 to 180 (a polygon as wide as the world).

    Raises:
        ValueError: with that message.
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("type"), str):
        got = type(doc).__name__ if not isinstance(doc, dict) else "an object without one"
        raise ValueError(f"{what} is not GeoJSON: a JSON object with a 'type' is expected, got {got}")
    _check_crs(doc, what, "")
    kind = doc["type"]
    if kind == "FeatureCollection":
        features = doc.get("features")
        if not isinstance(features, list) or not all(isinstance(f, dict) for f in features):
            raise ValueError(f"{what} is not GeoJSON: 'features' must be a list of Feature objects")
    elif kind == "Feature":
        features = [doc]
    else:
        features = None
    if features is not None:
        for i, f in enumerate(features):
            which = "the Feature" if kind == "Feature" else f"feature {i}"
            if f.get("type") != "Feature":
                raise ValueError(f"{what} is not GeoJSON: {which} is not a Feature object (its type is "
                                 f"{_short(f.get('type'))})")
            if "geometry" not in f:
                raise ValueError(f"{what} is not GeoJSON: {which} has no 'geometry' member")
            _check_crs(f, what, f" ({which})")
            if isinstance(f["geometry"], dict):
                _check_crs(f["geometry"], what, f" (the geometry of {which})")
        geoms = [f["geometry"] for f in features if f["geometry"] is not None]  # null: a feature without a place
    else:
        geoms = [doc]
    for g in geoms:
        if not isinstance(g, dict) or not isinstance(g.get("type"), str):
            raise ValueError(f"{what} holds no readable GeoJSON geometry: a geometry is an object with a 'type', "
                             f"got {_short(g)}")
    with warnings.catch_warnings():  # shapely warns about NaN coordinates; the validity check says it in one line
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            parts = [shape(g) for g in geoms]
        except _GEOMETRY_ERRORS as exc:
            raise ValueError(f"{what} holds no readable GeoJSON geometry: {first_line(exc)}") from None
        polys = [g for g in parts if isinstance(g, (Polygon, MultiPolygon))]
        if not polys or len(polys) != len(parts):
            raise ValueError(f"{what} must hold Polygon or MultiPolygon geometries only, "
                             f"got {sorted({g.geom_type for g in parts}) or 'none'}")
        for g in polys:
            _check_polygon(g, what)
            _check_edges(g, what)
        try:
            geom = polys[0] if len(polys) == 1 else shapely.union_all(polys)
        except shapely.errors.GEOSException as exc:
            raise ValueError(f"{what}: its polygons cannot be merged: {first_line(exc)}") from None
    return _check_polygon(geom, what)


def _check_edges(geom: Polygon | MultiPolygon, what: str) -> None:
    """Refuse a ring edge spanning more than 180 degrees of longitude, other than one from -180 to 180."""
    for poly in getattr(geom, "geoms", [geom]):
        for ring in (poly.exterior, *poly.interiors):
            lon = np.asarray(ring.coords)[:, 0]
            a, b = lon[:-1], lon[1:]
            bad = (np.abs(b - a) > 180) & ~((np.abs(a) == 180) & (np.abs(b) == 180))
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ValueError(f"{what} has an edge from lon {a[i]:g} to {b[i]:g}, more than 180 degrees: read as "
                                 f"the long way round; split a shape crossing the antimeridian into parts on either "
                                 f"side of it (RFC 7946 3.1.9), or add vertices to a wide one")


def _short(value: object) -> str:
    return repr(value)[:80]


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none): errors as one line."""
    return (str(e).splitlines() or [type(e).__name__])[0]


def _check_polygon(geom: object, what: str) -> Polygon | MultiPolygon:
    if not isinstance(geom, (Polygon, MultiPolygon)):
        raise ValueError(f"{what} must be a Polygon or MultiPolygon, got {type(geom).__name__}")
    if geom.is_empty:
        raise ValueError(f"{what} is empty")
    if not geom.is_valid:
        raise ValueError(f"{what} is not a valid polygon: {shapely.is_valid_reason(geom)}")
    w, s, e, n = geom.bounds
    if not (-180 <= w and e <= 180 and -90 <= s and n <= 90):
        raise ValueError(f"{what} must be in lon/lat degrees (EPSG:4326, lon -180..180, lat -90..90; split shapes "
                         f"crossing the antimeridian), got bounds {w:g},{s:g},{e:g},{n:g}")
    return geom


def _seconds(value: datetime | date | None, end: bool) -> int | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        if not isinstance(value, date):
            raise ValueError(f"start/end must be dates or datetimes, got {value!r}")
        value = datetime.combine(value, time.max if end else time.min)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    ts = value.timestamp()
    return math.floor(ts) if end else math.ceil(ts)


class CompiledFilter:
    """A :class:`QueryFilter` prepared for one index: key ranges, time bounds, sensor codes, polygon test."""

    def __init__(self, flt: QueryFilter, sensor_table: list[str], *, parallel: bool = True) -> None:
        """``parallel``: long scans may run on several of numba's threads."""
        self.filter, self.parallel = flt, parallel
        self.region = Region(flt.polygon) if flt.polygon is not None else None
        self.geo = flt.bbox is not None or flt.polygon is not None
        self.box_cells = BOX_CELLS
        self.polygon_by_box = False
        self._keys: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.t_lo, self.t_hi = flt.time_range()
        self.sensor_codes = None if flt.sensors is None else np.array(
            [i for i, name in enumerate(sensor_table) if name in flt.sensors], dtype=np.int16)
        self.scenes = np.array(sorted(flt.exclude_scene_ids), dtype=np.int64)
        self.cells = np.array(sorted(flt.exclude_cell_ids), dtype=str)
        # the box rows are tested against in the kernel: the filter's, else the polygon's bounds (every point of
        # a closed polygon lies within them, so this only drops rows the polygon test would)
        self._bounds = self.region.bounds if self.region is not None else None
        box = flt.bbox if flt.bbox is not None else self._bounds
        self._bbox = np.asarray(box, np.float64) if box is not None else _NO_BOX
        self._sensor_ok = np.zeros(0, bool)
        if self.sensor_codes is not None:
            self._sensor_ok = np.zeros(max(len(sensor_table), 1), bool)
            self._sensor_ok[self.sensor_codes] = True

    def _key_ranges(self, flt: QueryFilter) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Key ranges covering the bbox (or the polygon's parts), flagged 1 where every point is inside."""
        parts = []
        if flt.bbox is not None:
            w, s, e, n = flt.bbox
            for b in [(w, s, e, n)] if w <= e else [(w, s, 180.0, n), (-180.0, s, e, n)]:
                parts.append(box_ranges(*b, max_cells=self.box_cells, flag_inside=flt.polygon is None))
        elif self.polygon_by_box:  # few rows: each part's bounding box, every row tested exactly
            bounds = [p.bounds for p in self.region.parts] if len(self.region.parts) <= 16 else [self._bounds]
            parts.extend(box_ranges(*b, max_cells=self.box_cells, flag_inside=False) for b in bounds)
        else:
            parts.extend(self.region.key_ranges())
        if len(parts) == 1:
            return parts[0]
        starts, stops, flags = (np.concatenate(x) for x in zip(*parts))
        o = np.argsort(starts)
        starts, stops, flags = starts[o], stops[o], flags[o]
        if (starts[1:] < stops[:-1]).any():  # covers of several parts overlap: check every row
            starts, stops = merge_ranges(starts, stops)
            flags = np.zeros(starts.size, np.int8)
        return starts, stops, flags

    @property
    def needs_hint(self) -> bool:
        """Whether :meth:`size_hint` can still change anything."""
        return self.geo and self._keys is None and self.box_cells == BOX_CELLS

    def size_hint(self, rows_in_box: float | None) -> None:
        """Size the cover of the geometry (before its key ranges and rasters are built) for about ``rows_in_box``
        rows in its box: a coarser cover for few rows (see ``SMALL_BOX_ROWS``)."""
        if rows_in_box is None or rows_in_box >= SMALL_BOX_ROWS or not self.needs_hint:
            return
        self.box_cells = SMALL_BOX_CELLS
        if self.region is not None and self.region._rasters is None:
            self.region.max_cells = SMALL_REGION_CELLS
            # fewer rows than a raster pays for: the polygon is covered by its parts' boxes, rows tested by shapely
            self.polygon_by_box = rows_in_box < POLYGON_BOX_ROWS

    def row_ranges(self, seg: Segment) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Half-open row ranges of ``seg`` that may hold matches (all rows without a geographic filter), and
        for each a flag: 1 where every row is inside the geometry (no point test needed)."""
        if not self.geo:
            return np.zeros(1, np.int64), np.full(1, seg.n, np.int64), np.ones(1, np.int8)
        if kernels.AVAILABLE and self._one_box is not None:
            # one box not across the antimeridian: key ranges and binary searches in one compiled call
            return kernels.box_row_ranges(seg.hkey, *self._one_box, HILBERT_ORDER, self.box_cells,
                                          self.region is None, hilbert._DIGITS, hilbert._STATES)
        if self.filter.bbox is None and not self.polygon_by_box:
            # a one-part polygon: its raster's coarse cells (left out when outside, flagged when inside) likewise
            got = self.region.one_part_row_ranges(seg.hkey)
            if got is not None:
                return got
        if self._keys is None:  # computed on first use: broad filters searched by ANN never need them
            self._keys = self._key_ranges(self.filter)
        key_starts, key_stops, key_inside = self._keys
        starts = np.searchsorted(seg.hkey, key_starts)
        stops = np.searchsorted(seg.hkey, key_stops)
        keep = stops > starts
        return starts[keep], stops[keep], key_inside[keep]

    def rows(self, seg: Segment, ranges: tuple[np.ndarray, ...] | None = None) -> np.ndarray:
        """All rows (int64, ascending) of ``seg`` that match, removed rows excluded; ``ranges`` as from
        :meth:`row_ranges` when already computed."""
        starts, stops, inside = self.row_ranges(seg) if ranges is None else ranges
        if starts.size == 1 and starts[0] == 0 and stops[0] == seg.n:
            return np.flatnonzero(self.check(seg, None))
        lens = stops - starts
        total = int(lens.sum())
        if total <= ROWS_CHUNK:
            return self._rows(seg, starts, stops, inside)
        # in chunks of about ROWS_CHUNK rows: temporaries that stay in cache and in the allocator's free memory (fresh
        # arrays of megabytes cost page faults, more than the checks themselves)
        long = lens > ROWS_CHUNK
        if long.any():  # cut long ranges into pieces of ROWS_CHUNK rows
            pieces = np.where(long, -(-lens // ROWS_CHUNK), 1)
            which = np.repeat(np.arange(lens.size), pieces)
            offset = (np.arange(which.size) - np.repeat(np.cumsum(pieces) - pieces, pieces)) * ROWS_CHUNK
            starts = starts[which] + offset
            stops, inside = np.minimum(starts + ROWS_CHUNK, stops[which]), inside[which]
            lens = stops - starts
        cuts = np.searchsorted(np.cumsum(lens), np.arange(ROWS_CHUNK, total, ROWS_CHUNK), side="right").tolist()
        out = [self._rows(seg, starts[a:b], stops[a:b], inside[a:b]) for a, b in zip([0] + cuts, cuts + [lens.size])
               if b > a]
        return np.concatenate(out) if len(out) != 1 else out[0]

    @property
    def _one_box(self) -> tuple[float, float, float, float] | None:
        """The one box the cover is made of, when it is one (not across the antimeridian): the bbox, or the
        bounds of a one-part polygon covered by its box."""
        if self.filter.bbox is not None:
            return self.filter.bbox if self.filter.bbox[0] <= self.filter.bbox[2] else None
        if self.polygon_by_box and len(self.region.parts) == 1:
            return self._bounds
        return None

    def scan(self, seg: Segment, q: np.ndarray, k: int, ranges: tuple[np.ndarray, ...] | None = None,
             parts: int | None = None) -> tuple[np.ndarray, np.ndarray, int] | None:
        """The exact top-``k`` matching rows of ``seg`` for each query of ``q`` ((nq, d) float32, C-contiguous) in
        one compiled pass over the row ranges (:mod:`rsretrieve.index.kernels`), the rows checked once for all
        queries: ((nq, k) scores, best first, padded with -inf; (nq, k) rows, padded with -1; matches); the same
        answer as :meth:`rows` and a scan of them. Scans of at least ``2 * PARALLEL_ROWS`` rows are cut into
        parts scanned on numba's threads at once (``parts``: that many, whatever the rows). None without numba."""
        if not kernels.AVAILABLE:
            return None
        starts, stops, inside = self.row_ranges(seg) if ranges is None else ranges
        has_time = self.t_lo is not None or self.t_hi is not None
        lo = self.t_lo if self.t_lo is not None else _INT64_MIN
        hi = self.t_hi if self.t_hi is not None else _INT64_MAX
        alive = seg.alive_mask() if seg.has_deleted else _NO_BOOL
        cells = self._excluded_cells(seg).astype(seg.cell.dtype) if self.cells.size else _NO_CELLS
        bbox = self._bbox
        geo_mode, rasters = (0 if not self.geo else 1), (_NO_STATES, _NO_PARAMS)
        if self.region is not None:
            built = self.region.raster_params() if self.region._rasters is not None else None
            geo_mode, rasters = (2, rasters) if built is None else (3, built)
        if parts is None:
            parts = min(kernels.threads(), int((stops - starts).sum()) // PARALLEL_ROWS) if self.parallel else 1
        scan = kernels.scan_topk if parts < 2 else functools.partial(kernels.scan_topk_parallel, parts)
        scores, rows, matched, pending = scan(
            seg.vectors, q, k, starts, stops, inside, has_time, seg.time, lo, hi, alive, seg.sensor, self._sensor_ok,
            seg.scene_id, self.scenes, seg.cell, cells, geo_mode, seg.lon, seg.lat, bbox, *rasters,
            *((seg.codes, seg.code_params) if seg.codes is not None else _no_codes(seg.vectors.shape[1])),
            *((self.region.rings() or _NO_RINGS) if self.region is not None else _NO_RINGS))
        if pending.size:  # near an edge (or no rasters): the exact test
            lon, lat = seg.lon.take(pending), seg.lat.take(pending)
            more = pending.take(np.flatnonzero(self._in_region(lon, lat) if geo_mode == 2 else self.region(lon, lat)))
            matched += int(more.size)
            if more.size:
                for i in range(q.shape[0]):
                    got = rows[i][rows[i] >= 0]
                    s, r = kernels.score_topk(seg.vectors, q[i], k, np.concatenate([got, more]) if got.size else more)
                    scores[i, :s.size], rows[i, :r.size] = s, r
        return scores, rows, int(matched)

    def _rows(self, seg: Segment, starts: np.ndarray, stops: np.ndarray, inside: np.ndarray) -> np.ndarray:
        rows = ranges_to_rows(starts, stops)
        if not self.geo:
            near = False
        elif not inside.any():
            near = None
        else:  # only rows of ranges not wholly inside the geometry need the geometric test
            near = np.repeat(inside == 0, stops - starts)
        ok = self.check(seg, rows, near=near)
        return rows.take(np.flatnonzero(ok))

    def _in_region(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """Exact polygon test of points: through the rasters, or straight with shapely when the cover is by box."""
        return self.region(lon, lat) if self.polygon_by_box else self.region.contains(lon, lat)

    def box_estimate(self, seg: Segment) -> float | None:
        """Rows of the segment's fixed sample inside the filter's bounding box(es), scaled to the segment: on that
        sample never below :meth:`quick_estimate` (the box holds every match), and far cheaper. None without a
        geographic filter."""
        if not self.geo:
            return None
        sample = seg.sample()
        if not sample.n:
            return 0.0
        w, s, e, n = self.filter.bbox if self.filter.bbox is not None else self._bounds
        lon, lat = sample.lon, sample.lat
        if kernels.AVAILABLE:
            return kernels.count_in_box(lon, lat, w, s, e, n) / sample.n * seg.n
        inside = ((lon >= w) & (lon <= e) if w <= e else (lon >= w) | (lon <= e)) & (lat >= s) & (lat <= n)
        return float(np.count_nonzero(inside)) / sample.n * seg.n

    def quick_estimate(self, seg: Segment) -> float:
        """Estimated number of matching rows from the segment's fixed sample of rows (no key ranges needed)."""
        sample = seg.sample()
        return float(self.check(sample, None).mean()) * seg.n if sample.n else 0.0

    def estimate(self, seg: Segment, ranges: tuple[np.ndarray, ...] | None = None) -> float:
        """Estimated number of matching rows, from a fixed sample of 1024 rows of the key ranges."""
        starts, stops, inside = self.row_ranges(seg) if ranges is None else ranges
        lens = stops - starts
        total = int(lens.sum())
        if total == 0:
            return 0.0
        pos = (_SAMPLE * total).astype(np.int64)
        ends = np.cumsum(lens)
        which = np.searchsorted(ends, pos, side="right")
        rows = starts[which] + pos - (ends[which] - lens[which])
        return float(self.check(seg, rows, inside[which].astype(bool)).mean()) * total

    def check(self, seg: Segment, rows: np.ndarray | None, inside: np.ndarray | None = None, *,
              geo: bool = True, near: np.ndarray | bool | None = None) -> np.ndarray:
        """Boolean mask: which of ``rows`` (all rows when None) of ``seg`` match, removed rows excluded.

        ``inside`` marks rows known to lie inside the geometry (the bbox / polygon test is skipped for them);
        ``geo=False``: all rows are known to lie inside it; ``near`` (the complement of ``inside``): only the rows
        it marks need the geometric test (False: none of them).
        """
        if near is None and inside is not None:
            near = ~inside
        if not geo:
            near = False
        take = (lambda col: col) if rows is None else (lambda col: col.take(rows))
        size = seg.n if rows is None else rows.size
        ok = None
        if self.t_lo is not None or self.t_hi is not None:
            t = take(seg.time)
            if self.t_lo is not None and self.t_hi is not None:  # one unsigned comparison for both bounds;
                t = np.subtract(t, self.t_lo, out=t) if rows is not None else t - self.t_lo  # (t is a copy)
                ok = t.view(np.uint64) <= np.uint64(self.t_hi - self.t_lo)  # TIME_UNKNOWN wraps high
            elif self.t_lo is not None:
                ok = t >= self.t_lo  # TIME_UNKNOWN is the smallest int64
            else:
                ok = (t <= self.t_hi) & (t != TIME_UNKNOWN)
        if seg.has_deleted:  # never a view of the segment's own mask: ``ok`` is written to below
            alive = seg.alive_mask()
            ok = ok & take(alive) if ok is not None else alive.copy() if rows is None else alive[rows]
        if ok is None:
            ok = np.ones(size, bool)
        if self.geo and near is not False:
            idx = np.flatnonzero(ok if near is None else ok & near)
            at = idx if rows is None else rows.take(idx)
            lon, lat = seg.lon.take(at), seg.lat.take(at)
            if self.filter.bbox is not None:
                w, s, e, n = self.filter.bbox
                good = ((lon >= w) & (lon <= e) if w <= e else (lon >= w) | (lon <= e)) & (lat >= s) & (lat <= n)
                if self.region is not None:
                    good &= self._in_region(lon, lat)
            else:
                good = self._in_region(lon, lat)
            ok[idx] = good
        if self.sensor_codes is not None:
            sensor = take(seg.sensor)
            hit = np.zeros(ok.shape, bool)
            for code in self.sensor_codes:
                hit |= sensor == code
            ok &= hit
        if self.scenes.size:
            ok &= ~np.isin(take(seg.scene_id), self.scenes)
        if self.cells.size:
            codes = self._excluded_cells(seg)
            if codes.size:
                ok &= ~np.isin(take(seg.cell), codes)
        return ok

    def _excluded_cells(self, seg: Segment) -> np.ndarray:
        """Codes (positions in ``seg.cell_names``, ascending) of the excluded cells that ``seg`` has."""
        pos = np.minimum(np.searchsorted(seg.cell_names, self.cells), seg.cell_names.size - 1)
        return pos[seg.cell_names[pos] == self.cells]


def _no_codes(d: int) -> tuple[np.ndarray, np.ndarray]:
    """Empty codes for :func:`rsretrieve.index.kernels.scan_topk`: a segment written before codes existed."""
    return np.zeros((0, d), np.uint8), np.zeros((3, d), np.float64)


def ranges_to_rows(starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(a, b)`` for each half-open range, without a Python loop."""
    lens = stops - starts
    total = int(lens.sum())
    if total == 0:
        return np.empty(0, np.int64)
    step = np.ones(total, dtype=np.int64)
    step[0] = starts[0]
    heads = np.cumsum(lens)[:-1]
    step[heads] = starts[1:] - stops[:-1] + 1
    return np.cumsum(step, out=step)  # in place: a fresh large array costs page faults
