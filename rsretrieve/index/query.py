"""Query by example: a tile (from the catalog, or cut from any raster file) -> vector -> filtered search -> hits.

A query tile file may be of any registered sensor and CRS. Without a window or a point the whole file is the tile
(resampled to the sensor's tile size); with ``point=(lon, lat)`` the query is the grid cell containing the point;
with ``window=(col, row, width, height)`` that pixel window.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields, replace
from datetime import date, datetime
from datetime import time as dt_time
from pathlib import Path
from typing import TextIO

import numpy as np
from rasterio.crs import CRS
from rasterio.errors import RasterioError
from rasterio.transform import Affine, array_bounds, rowcol
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.polygon import orient

from rsretrieve.data.catalog import Catalog
from rsretrieve.data.discover import RASTER_SUFFIXES, SceneSource, discover, is_aux_name
from rsretrieve.data.grid import (Cell, ground_neighbours, lonlat_boxes, parse_cell_id, to_lonlat, transformer,
                                  wrap_near)
from rsretrieve.data.ingest import cell_window, check_sar_units, scene_extent
from rsretrieve.data.scene import SceneError, clip_window, nodata_value, open_scene
from rsretrieve.data.tiles import read_scene_tiles, window_has_valid_pixels
from rsretrieve.index.filters import QueryFilter
from rsretrieve.index.indexer import embed_tiles, model_checksum, model_path
from rsretrieve.index.search import Searcher
from rsretrieve.index.store import IndexMismatchError, IndexStore
from rsretrieve.model.checkpoint import load_model

log = logging.getLogger(__name__)

#: the least share of a cell's ground that a cell of another UTM zone must cover to count, for a query, as the same
#: cell (``exclude_own_cell``, ``one_per_cell``): two zones' grids are rotated against each other, so a cell shares
#: some ground with 3-4 cells of the other zone, many of them slivers; at most two can cover half of it
SAME_CELL_SHARE = 0.5


class QueryError(ValueError):
    """A query that cannot run; the message says why in one line."""


class NoValidPixelsError(QueryError):
    """A query tile with no valid pixel (every pixel NaN or nodata), as :func:`tile_from_file` finds it.

    Attributes:
        window: the window the query asked for (None: the whole file, or the cell of a point).
        sensor: the sensor the tile was read as.
        nodata: the value that marks missing pixels besides NaN (None: only NaN).
    """

    def __init__(self, message: str, window: tuple[int, int, int, int] | None, sensor: str, nodata: float | None):
        super().__init__(message)
        self.window, self.sensor = window, sensor
        self.nodata = nodata_value(nodata)


@dataclass
class Hit:
    """One result."""

    rank: int
    tile_id: int
    score: float
    sensor: str
    cell_id: str
    acquired: str | None
    scene_id: int
    scene: str
    lon: float
    lat: float
    footprint: str  # WKT, EPSG:4326

    def to_dict(self) -> dict:
        # its fields are plain values: asdict's deep copy of each made `query --json` with -k 100000 take 5 s
        return {f: getattr(self, f) for f in _HIT_FIELDS}


_HIT_FIELDS = tuple(f.name for f in fields(Hit))


def output_scores(scores: Sequence[float]) -> list[float]:
    """Scores as the JSON and GeoJSON outputs write them: each the shortest decimal that reads back as its float32.

    A score is a float32 inner product (the same number whichever path computed it); as a Python float it prints
    with 16-17 digits, of which only the first 7-9 mean anything (0.8123456835746765 is the float32 0.8123457).
    Fixed rounding (6 digits) would write two different scores alike, 0.81234567 and 0.81234573 both as 0.812346,
    while their ranks differ, and a reader sorting by score would see a tie that is not one. The shortest
    round-trip decimal never makes different scores equal and keeps equal ones equal, and
    ``numpy.float32(written) == numpy.float32(hit.score)`` for every hit.

    Args:
        scores: the hits' scores, any length.

    Returns:
        Python floats, whose ``repr`` (what ``json`` writes) is that decimal: at most 9 significant digits.
    """
    # numpy prints a float32 as the shortest decimal that reads back as it (Dragon4), for a whole array at once
    return [float(t) for t in np.asarray(scores, dtype=np.float32).astype(str).tolist()]


#: what ``json.dumps`` writes a str as (ascii, escaped): the json module's own C function
_json_str = json.encoder.encode_basestring_ascii


def hits_json(hits: Sequence[Hit], *, role: str | None = None, footprint: bool = True) -> Iterator[str]:
    """Each hit as the JSON text ``json.dumps`` writes of its dict, scores as :func:`output_scores` gives them.

    The same text, made faster (100 000 hits: 0.8 s, against 1.4 s for a dict each and ``json.dumps``): a scene's
    fields (sensor, date, id, key) are encoded once for all its hits, the rest is put in a template; a hit whose
    fields are not of the plain types the template writes as ``json`` does (a numpy number, a non-finite
    coordinate) is left to ``json.dumps``.

    Args:
        hits: best first.
        role: a ``"role"`` member first (the GeoJSON properties' ``"hit"``), or none.
        footprint: whether the ``footprint`` member is written (not in GeoJSON properties: it is the geometry).

    Yields:
        One compact JSON object per hit, in the order of :meth:`Hit.to_dict` (after ``role``).
    """
    head = f'{{"role": {_json_str(role)}, "rank": ' if role is not None else '{"rank": '
    scenes: dict[tuple, tuple[str, str]] = {}
    for h, score in zip(hits, output_scores([h.score for h in hits])):
        # exact types: a subclass (bool, numpy.float64) may print otherwise in an f-string than json prints it
        if not (type(h.rank) is int and type(h.tile_id) is int and type(h.scene_id) is int
                and type(h.lon) is float and type(h.lat) is float and type(h.sensor) is str
                and type(h.cell_id) is str and type(h.scene) is str and type(h.footprint) is str
                and (h.acquired is None or type(h.acquired) is str)
                and math.isfinite(h.lon) and math.isfinite(h.lat) and math.isfinite(score)):
            d = {"role": role} if role is not None else {}
            d.update(h.to_dict(), score=score)
            if not footprint:
                del d["footprint"]
            yield json.dumps(d)
            continue
        key = (h.sensor, h.acquired, h.scene_id, h.scene)
        sc = scenes.get(key)
        if sc is None:  # "sensor" and "cell_id" stand between them: the text either side of the cell id
            sc = scenes[key] = (f', "sensor": {_json_str(h.sensor)}, "cell_id": ',
                                f', "acquired": {"null" if h.acquired is None else _json_str(h.acquired)}, '
                                f'"scene_id": {h.scene_id}, "scene": {_json_str(h.scene)}, "lon": ')
        fp = f', "footprint": {_json_str(h.footprint)}}}' if footprint else "}"
        yield (f'{head}{h.rank}, "tile_id": {h.tile_id}, "score": {score!r}{sc[0]}{_json_str(h.cell_id)}'
               f'{sc[1]}{h.lon!r}, "lat": {h.lat!r}{fp}')


def score_decimals(scores: Sequence[float], least: int = 4, most: int = 12) -> int:
    """Decimals to print a column of scores (best first) with: ``least``, or the fewest more that print no two
    neighbours alike that differ as float32, so a printed tie is a real one (up to ``most``: scores within
    1e-12 of each other, only near 0, may still print alike).

    Args:
        scores: the hits' scores, best first.
        least: the decimals a column has at least (4 for the table, 3 under the tiles of a contact sheet).
        most: the most it gets.
    """
    s = np.asarray(scores, dtype=np.float32).astype(np.float64)  # the float32 values, exactly
    a, b = s[:-1], s[1:]
    # neighbours further apart than two units of the last decimal print apart anyway: only the others are looked at
    close = (a != b) & (np.abs(a - b) < 2 * 10.0 ** -least)
    pairs = list(zip(a[close].tolist(), b[close].tolist()))
    for d in range(least, most):
        pairs = [(x, y) for x, y in pairs if f"{x:.{d}f}" == f"{y:.{d}f}"]  # those that still print alike
        if not pairs:
            return d
    return most


@dataclass
class QueryTile:
    """The query: its normalised pixels, sensor and where it came from."""

    array: np.ndarray
    sensor: str
    origin: str
    tile_id: int | None = None
    scene_id: int | None = None
    cell_id: str | None = None
    acquired: str | None = None
    #: catalog key of the scene a file query was cut from (looked up for ``exclude_own_scene``)
    scene_key: str | None = None
    #: the ground the tile shows, WKT in EPSG:4326 as a hit's ``footprint`` (split at the antimeridian); None when
    #: unknown (a query tile made by hand): the result files then show no query footprint
    footprint: str | None = None

    def describe(self) -> dict:
        """Where the query came from, as the outputs name it (``--json``'s and the GeoJSON's ``query``)."""
        return {"origin": self.origin, "sensor": self.sensor, "tile_id": self.tile_id, "scene_id": self.scene_id,
                "cell_id": self.cell_id, "acquired": self.acquired}


def tile_from_catalog(catalog: Catalog, tile_id: int) -> QueryTile:
    try:
        t = catalog.tile(tile_id)
    except KeyError:
        raise QueryError(f"no tile with id {tile_id} in the catalog") from None
    scene = catalog.scene(t["scene_id"])
    try:
        _, arr = next(read_scene_tiles(scene, [t], catalog.tile_m))
    except OSError as e:  # moved, deleted or damaged since it was ingested; rasterio's errors carry the file
        why = f"{e.filename}: {e.strerror}" if e.filename and e.strerror else str(e).splitlines()[0]
        raise QueryError(f"cannot read tile {tile_id} ({t['sensor']}) from its scene file: {why} (moved, "
                         f"deleted or damaged since it was ingested)") from None
    return QueryTile(arr, t["sensor"], f"tile {tile_id}", tile_id, t["scene_id"], t["cell_id"], scene["acquired"],
                     footprint=t["footprint"])


def tile_from_file(path: str | Path, tile_m: float, sensor: str | None = None,
                   point: tuple[float, float] | None = None,
                   window: tuple[int, int, int, int] | None = None) -> QueryTile:
    """Cut a query tile from a raster file (or a folder of per-band files)."""
    p = Path(path)
    try:
        os.stat(p)
    except OSError as e:  # a link cycle or a broken link is a link, not a missing file
        why = (e.strerror or str(e)).lower()
        if e.errno == errno.ELOOP:
            why = "too many levels of symbolic links (a cycle of links)"
        elif isinstance(e, FileNotFoundError):
            try:
                why = f"a link to {os.readlink(p)}, which does not exist"
            except OSError:  # not a link (or not there itself)
                why = "no such file or directory"
        raise QueryError(f"{p}: {why}") from None
    sources, problems = discover([p])
    sources = [s for s in sources if s.role == "scene"]
    if problems:
        raise QueryError(str(problems[0]))
    if not sources and p.is_file():
        if p.suffix.lower() in RASTER_SUFFIXES and is_aux_name(p.name):
            raise QueryError(f"{p}: named as a scene's mask or auxiliary file (a companion of a scene), not as a "
                             f"scene: give the scene's own file")
        raise QueryError(f"{p}: not a raster file ({p.suffix or 'no extension'})")
    if len(sources) != 1:
        raise QueryError(f"{p}: expected one raster scene, found {len(sources)}")
    src: SceneSource = sources[0]
    try:
        sc = open_scene(src, sensor, check_dtype=True)  # a float32 reflectance tile is refused, as by ingest
    except SceneError as e:
        raise QueryError(f"{p}: {e}") from None
    except KeyError as e:  # an unknown --sensor
        raise QueryError(f"{p}: {e.args[0] if e.args else e}") from None
    if point is not None and window is not None:
        raise QueryError("give a point or a window, not both")
    asked = window
    if point is not None:
        lon, lat = point
        if not (-180 <= lon <= 180 and -90 <= lat <= 90):
            raise QueryError(f"point must be lon,lat in degrees, got {lon:g},{lat:g}")
        # the zone ingest tiles this file in (not the point's own zone, which differs for a file in another CRS
        # that reaches across a zone border), so the cell and its window are those of the file's catalog tile
        epsg = scene_extent(sc.crs, array_bounds(sc.height, sc.width, sc.transform))[2]
        x, y = transformer("EPSG:4326", f"EPSG:{epsg}").transform(lon, lat)
        if not (math.isfinite(x) and math.isfinite(y)):  # far outside the tile's UTM zone
            raise QueryError(_outside(point, p, sc))
        # a point on a cell edge belongs to the cell east / north of it (the grid's floor rule); its lon/lat, copied
        # from a footprint, comes back from the projection a few nanometres to either side: micrometres decide
        x, y = round(x, 6), round(y, 6)
        cell = Cell(epsg, tile_m, int(np.floor(y / tile_m)), int(np.floor(x / tile_m)))
        sx, sy = transformer("EPSG:4326", sc.crs).transform(lon, lat)
        if sc.crs.is_geographic:  # a lon/lat file may run past 180 degrees: the point on the file's side of it
            sx = wrap_near(sx, (sc.transform @ (sc.width / 2, 0))[0])
        r, c = rowcol(sc.transform, sx, sy)
        win = cell_window(cell, sc) if 0 <= r < sc.height and 0 <= c < sc.width else None
        if win is None or clip_window(win, sc.width, sc.height) is None:  # (a point on the file's east edge)
            raise QueryError(_outside(point, p, sc))
        window = win  # as ingest cuts it (lon/lat cells next to 180 degrees included)
        cid = cell.id
        footprint = cell.footprint().wkt  # the catalog's footprint of the cell, as ingest writes it
    else:
        cid = footprint = None
    if window is None:
        window = (0, 0, sc.width, sc.height)
    c0, r0, ww, hh = window
    if ww <= 0 or hh <= 0 or c0 >= sc.width or r0 >= sc.height or c0 + ww <= 0 or r0 + hh <= 0:
        raise QueryError(f"window {c0},{r0},{ww},{hh} does not overlap {p} ({sc.width} x {sc.height} px)")
    most = max(sc.width, sc.height)
    if ww > most or hh > most:
        raise QueryError(f"window {c0},{r0},{ww},{hh} is larger than {p} ({sc.width} x {sc.height} px); "
                         f"give a window of about one tile")
    scene = {"files": {b: f for b, (f, _) in sc.band_files.items()} if not src.stacked else dict(src.files),
             "width": sc.width, "height": sc.height, "transform": list(sc.transform)[:6], "layout": sc.layout_name,
             "sensor": sc.spec.name, "crs": sc.crs.to_wkt()}
    try:  # the pixels: a file whose header reads but whose data was cut short fails only here
        if not window_has_valid_pixels(scene, (c0, r0, ww, hh)):
            where = f"the cell {cid} of {p}" if cid else f"window {c0},{r0},{ww},{hh} of {p}" if (
                c0, r0, ww, hh) != (0, 0, sc.width, sc.height) else str(p)
            raise NoValidPixelsError(f"{where} holds no valid pixels: every pixel of its {sc.spec.name} bands is NaN "
                                     f"or nodata; nothing to search with", asked, sc.spec.name, sc.nodata)
        try:
            check_sar_units(sc, (c0, r0, ww, hh))  # linear sigma0 for a dB sensor is refused, as by ingest
        except SceneError as e:
            raise QueryError(f"{p}: {e}") from None
        # with a point, the cell's own pixels as ingest cuts them (turned to the grid in a CRS other than its zone)
        tile = {"tile_id": 0, "col_off": c0, "row_off": r0, "width": ww, "height": hh, "cell_id": cid}
        _, arr = next(read_scene_tiles(scene, [tile], tile_m))
    except RasterioError as e:  # GDAL's words name the band file of a folder and say what failed
        cause = str(e.__cause__ or e).splitlines()[0]
        raise QueryError(f"{p}: its pixels cannot be read (truncated or damaged): {cause}") from None
    when = sc.acquired.strftime("%Y-%m-%dT%H:%M:%SZ") if sc.acquired else None
    if footprint is None:  # the window asked for (it may reach past the file's edge: its tile shows nodata there)
        footprint = _window_footprint(sc.transform, sc.crs, (c0, r0, ww, hh)).wkt
    return QueryTile(arr, sc.spec.name, str(p), cell_id=cid, acquired=when, scene_key=src.key, footprint=footprint)


def _window_footprint(transform: Affine, crs: CRS, window: tuple[int, int, int, int]) -> Polygon | MultiPolygon:
    """A pixel window's outline in EPSG:4326 (counter-clockwise, split at the antimeridian), drawn as ingest draws
    a cell's: its corners through the file's affine transform (any rotation kept), edges densified in the file's
    CRS."""
    c0, r0, w, h = window
    corners = [transform @ (c, r) for c, r in ((c0, r0), (c0 + w, r0), (c0 + w, r0 + h), (c0, r0 + h))]
    # a north-up file's rows run south: its corners in this order go clockwise, and a south-up file's the other way
    return to_lonlat(orient(Polygon(corners), 1.0), crs)


def _outside(point: tuple[float, float], path: Path, sc: object) -> str:
    """Why a point is refused: outside the file, whose extent in lon/lat is given (a point given as lat,lon shows)."""
    # ingest's extent of the file: in -180..180 as --point and --bbox take them (west > east across the antimeridian)
    w, s, e, n = scene_extent(sc.crs, array_bounds(sc.height, sc.width, sc.transform))[0]
    return (f"point {point[0]:g},{point[1]:g} (lon,lat) is outside {path}, which covers lon {w:.4f}..{e:.4f}, "
            f"lat {s:.4f}..{n:.4f}")


class QueryEngine:
    """A model and an index loaded once, for many queries (the CLI, the Python API and the service use it)."""

    def __init__(self, workspace: str | Path, model_name: str = "default"):
        self.workspace = Path(workspace)
        self.model_name = model_name
        mpath = model_path(self.workspace, model_name)
        self.model = load_model(mpath).eval()
        self._told_lacking: set[str] = set()  # target sensors the model lacks, warned of once
        self._checksum = model_checksum(mpath)
        self.store = self._open_store()
        self.searcher = Searcher(self.store)
        self.catalog = Catalog(self.workspace / "catalog.sqlite")
        self.tile_m = self.catalog.tile_m

    def _stamp(self) -> tuple:
        """What changes when an index run publishes: the current generation and its manifest (rewritten
        atomically, so a new inode)."""
        root = self.workspace / "index"
        gen = IndexStore.current_generation(root)
        try:
            st = os.stat(root / gen / "manifest.json") if gen else None
        except FileNotFoundError:
            st = None
        return gen, (st.st_ino, st.st_mtime_ns, st.st_size) if st else None

    def _open_store(self) -> IndexStore:
        stamp = self._stamp()
        try:
            store = IndexStore.open(self.workspace / "index", expect_model_checksum=self._checksum,
                                    expect_dim=self.model.embed_dim)
            self._opened = stamp  # only once opened: a failed look is made again by the next refresh
            return store
        except FileNotFoundError as e:
            why = ("the first index run has not finished (still running, or interrupted: run it again)"
                   if "has not finished" in str(e) else "run it first")
            raise QueryError(f"{self.workspace}: no index yet; `rsretrieve index --workspace {self.workspace}`: "
                             f"{why}") from None

    def refresh(self) -> bool:
        """Switch to what ``rsretrieve index`` published since this engine opened the index (a new generation, or
        segments added to the current one), so a long-running service sees every run; returns whether it switched.
        Cheap when nothing changed: one small file read and one stat.

        An index rebuilt for another model is not switched to: the engine keeps its snapshot of the generation of its
        own model (memory-mapped, so it stays readable after the switch prunes it).
        """
        stamp = self._stamp()
        if stamp == self._opened:
            return False
        try:
            store = self._open_store()
        except IndexMismatchError as e:  # re-indexed for another model: this engine's model keeps its snapshot
            self._opened = stamp
            log.warning("%s; this engine keeps answering from generation %s", str(e).splitlines()[0],
                        self.store.generation)
            return False
        except QueryError as e:  # the index folder removed, or the generation pruned between reading `current` and
            # opening it: not "no index yet" for an engine that has one; it keeps its snapshot and looks again
            log.warning("%s; this engine keeps answering from generation %s", str(e).splitlines()[0],
                        self.store.generation)
            return False
        self.store = store
        self.searcher = Searcher(self.store)
        log.info("switched to index generation %s (%d tiles)", self.store.generation, self.store.ntotal)
        return True

    def close(self) -> None:
        self.catalog.close()

    def embed(self, q: QueryTile) -> np.ndarray:
        if q.sensor not in self.model.sensors:
            raise QueryError(f"the model has no branch for sensor {q.sensor!r} (it knows "
                             f"{', '.join(self.model.sensors)}); add one with configs/add_sensor.yaml")
        return embed_tiles(self.model, q.sensor, [q.array])[0]

    def search(self, q: QueryTile, k: int = 10, flt: QueryFilter | None = None) -> tuple[list[Hit], dict]:
        """Top-``k`` hits for a query tile under ``flt``; returns (hits, plan)."""
        k = _positive_k(k)
        self.refresh()
        flt = flt or QueryFilter()
        try:
            flt.check_sensors(self._known_sensors())
        except ValueError as e:
            raise QueryError(str(e)) from None
        lacking = sorted((flt.sensors or set()) - set(self.model.sensors) - self._told_lacking)
        if lacking:  # registered, but never indexed: "no tile matches the filter" alone did not say why
            self._told_lacking.update(lacking)
            log.warning("the index holds no %s tiles: its model %r has no branch for %s (add one with "
                        "configs/add_sensor.yaml, then run `rsretrieve index`)", " or ".join(lacking),
                        self.model_name, "them" if len(lacking) > 1 else "it")
        stale = self._stale_scenes()
        if stale:  # filtered out before the search: a top-k is never truncated afterwards
            flt = replace(flt, exclude_scene_ids=flt.exclude_scene_ids | stale)
        vec = self.embed(q)[None, :]
        hits, plan = self._hits(vec, k, flt)
        if flt.one_per_cell:
            hits, plan = self._one_per_ground(vec, k, flt, hits, plan)
        # which model answered (`--json` and the service's plan said nothing of it)
        return hits, {**plan, "model": self.model_name, "model_checksum": self.store.model_checksum}

    def _one_per_ground(self, vec: np.ndarray, k: int, flt: QueryFilter, hits: list[Hit],
                        plan: dict) -> tuple[list[Hit], dict]:
        """``one_per_cell`` across UTM zones: the best hit of each ground, a cell of another zone that covers most
        of a cell's ground (:data:`SAME_CELL_SHARE`, :func:`rsretrieve.data.grid.ground_neighbours`) counting as
        that cell; more hits are fetched while too few remain."""
        want = k
        same: dict[str, set[str]] = {}  # cell -> cells of other zones on its ground, among the hits seen so far
        seen: set[str] = set()
        while True:
            cells = [h.cell_id for h in hits]
            new = [c for c in dict.fromkeys(cells) if c not in seen]
            for a, others in ground_neighbours(new, cells, overlap=True, min_share=SAME_CELL_SHARE).items():
                for b in others:  # a symmetric relation: the earlier hits' side of a pair from the new one's
                    same.setdefault(a, set()).add(b)
                    same.setdefault(b, set()).add(a)
            seen.update(new)
            if not same:  # no two hits on one ground (one grid, say): the index's own one per cell stands
                return hits[:k], plan
            kept: list[Hit] = []
            taken: set[str] = set()
            for h in hits:  # best first
                if h.cell_id not in taken:
                    kept.append(replace(h, rank=len(kept) + 1))
                    taken.update(same.get(h.cell_id, ()))
            more = min(2 * want, max(self.store.ntotal, 1))
            if len(kept) >= k or len(hits) < want or more == want:  # enough, or nothing more to fetch
                return kept[:k], plan
            want = more
            hits, plan = self._hits(vec, want, flt)

    def _hits(self, vec: np.ndarray, k: int, flt: QueryFilter) -> tuple[list[Hit], dict]:
        """The top-``k`` hits of the query vector ``vec`` (1, d) under ``flt``, with their catalog rows."""
        # no more hits than indexed tiles can come back: a larger k only costs memory
        res = self.searcher.search(vec, k=min(k, max(self.store.ntotal, 1)), flt=flt)
        ids = [int(t) for t in res.tile_ids[0] if t >= 0]
        rows = {t["tile_id"]: t for t in self.catalog.tiles(
            "t.tile_id IN (%s)" % ",".join(map(str, ids)))} if ids else {}
        scenes: dict[int, dict] = {}
        hits = []
        for tid, score in zip(res.tile_ids[0], res.scores[0]):
            if tid < 0 or int(tid) not in rows:  # a scene taken out of the catalog during this search
                continue
            t = rows[int(tid)]
            s = scenes.get(t["scene_id"])
            if s is None:  # each scene read once (a setdefault read it again for every hit: 3 s with -k 100000)
                s = scenes[t["scene_id"]] = self.catalog.scene(t["scene_id"])
            hits.append(Hit(len(hits) + 1, int(tid), float(score), t["sensor"], t["cell_id"], s["acquired"],
                            t["scene_id"], s["key"], t["lon"], t["lat"], t["footprint"]))
        return hits, res.plan

    def _stale_scenes(self) -> frozenset[int]:
        """Scenes with vectors in the index that have left the catalog since the last ``rsretrieve index`` (removed,
        or re-ingested under a new scene id): every search leaves them out, else their vectors would take places in
        the top-k and then be dropped for want of a catalog row. Worked out again when the index or the catalog
        changes (SQLite's ``data_version``), with a warning when the index is behind the catalog."""
        version = self.catalog.conn.execute("PRAGMA data_version").fetchone()[0]
        lag = getattr(self, "_lag", None)
        if lag is not None and lag[0] is self.store and lag[1] == version:
            return lag[2]
        ids = [s.scene_id[s.alive_rows()] if s.has_deleted else s.scene_id for s in self.store.segments]
        ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
        indexed = set(np.flatnonzero(np.bincount(ids)).tolist()) if ids.size else set()
        catalogued = {r[0] for r in self.catalog.conn.execute("SELECT scene_id FROM scenes")}
        stale = frozenset(indexed - catalogued)
        sensors = sorted(self.model.sensors)
        new = [r[0] for r in self.catalog.conn.execute(
            "SELECT s.scene_id FROM scenes s WHERE s.sensor IN (%s) AND EXISTS (SELECT 1 FROM tiles t WHERE "
            "t.scene_id = s.scene_id)" % ",".join("?" * len(sensors)), sensors) if r[0] not in indexed]
        if stale or new:
            log.warning("the index is behind the catalog: %d scene(s) removed or re-ingested and %d not indexed yet "
                        "since the last `rsretrieve index`; results come from the scenes indexed and still in the "
                        "catalog (run `rsretrieve index --workspace %s` to update it)", len(stale), len(new),
                        self.workspace)
        self._lag = (self.store, version, stale)
        return stale

    def _known_sensors(self) -> list[str]:
        from rsretrieve.sensors import list_sensors

        return list_sensors()


@dataclass
class QueryResult:
    """What a query returns: the query tile, the hits (best first) and the search plan."""

    query: QueryTile
    hits: list[Hit]
    plan: dict

    def to_dict(self) -> dict:
        """The query (its footprint WKT as a hit's, or None), the plan and the hits, scores as
        :func:`output_scores` writes them."""
        hits = [h.to_dict() for h in self.hits]
        for h, score in zip(hits, output_scores([h.score for h in self.hits])):
            h["score"] = score
        return {**self._head(), "hits": hits}

    def to_json(self) -> str:
        """:meth:`to_dict` as JSON text: indented, each hit on one line (see :meth:`write_json`)."""
        buf = io.StringIO()
        self.write_json(buf)
        return buf.getvalue()[:-1]

    def write_json(self, f: TextIO) -> None:
        """Write :meth:`to_json` and a newline to ``f`` (what ``rsretrieve query --json`` prints), a hit at a time.

        Each hit compact on its own line (:func:`hits_json`), not indented field by field: json's indent is pure
        Python (only compact text has its C encoder); with a dict made of every hit first and the whole text built
        before printing, writing 100 000 hits took 2.0-2.3 s and 0.4 GB more memory (1.2 s now).
        """
        head = json.dumps(self._head(), indent=2)  # ends with the plan's "}" and the document's "\n}"
        f.write(head[:-2] + ',\n  "hits": [')
        sep = "\n    "
        for line in hits_json(self.hits):
            f.write(sep)
            f.write(line)
            sep = ",\n    "
        f.write("\n  ]\n}\n" if self.hits else "]\n}\n")

    def _head(self) -> dict:
        return {"query": {**self.query.describe(), "footprint": self.query.footprint},
                "plan": {k: self.plan[k] for k in ("mode", "candidates", "model", "model_checksum") if k in self.plan}}


def _positive_k(k: object) -> int:
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k <= 0:
        raise QueryError(f"k must be a positive integer, got {k!r}")
    return int(k)


#: a date alone, with an optional UTC offset: the whole day (where the offset says)
_DATE_ONLY = re.compile(r"(\d{4}-\d{2}-\d{2}|\d{8}|\d{4}-W\d{2}(?:-\d)?|\d{4}W\d{2}\d?)(Z|z|[+-]\d{2}(?::?\d{2})?)?")
#: a date and a time: ISO 8601's T (or RFC 3339's space) between them
_DATE_TIME = re.compile(r"(\d{4}-\d{2}-\d{2}[Tt ]|\d{8}[Tt])\d")


def _when(value: object, flag: str) -> object:
    """A ``start`` / ``end`` string as a date or datetime (other values are left to :class:`QueryFilter`).

    A date alone (2021-06-30 or 20210630) means the whole day, inclusive at both ends; with an offset
    (2021-06-30+05:00, 2021-06-30Z) the whole day there. Python's ``fromisoformat`` reads 2021-06-30+05:00 as 05:00
    UTC and takes any character between date and time, so the forms are matched here first."""
    if value is None or not isinstance(value, str):
        return value
    bad = f"{flag} must be an ISO date (2021-06-30) or date-time (2021-06-30T10:00:00Z), got {value!r}"
    try:
        if m := _DATE_ONLY.fullmatch(value):
            day = date.fromisoformat(m[1])
            if m[2] is None:
                return day
            tz = datetime.fromisoformat("2000-01-01T00:00" + ("+00:00" if m[2] in "Zz" else m[2])).tzinfo
            return datetime.combine(day, dt_time.max if flag == "end" else dt_time.min, tzinfo=tz)
        if _DATE_TIME.match(value):
            return datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:  # a day or time out of range (2023-02-30, T25:00)
        raise QueryError(bad) from None
    raise QueryError(bad)


def _numbers(value: object, n: int, name: str, what: str) -> tuple[float, ...] | None:
    """``value`` as ``n`` finite numbers, or None."""
    if value is None:
        return None
    try:
        out = tuple(float(v) for v in value) if not isinstance(value, (str, bytes)) else ()
    except (TypeError, ValueError):
        out = ()
    if len(out) != n or not all(math.isfinite(v) for v in out):
        raise QueryError(f"{name} must be {n} finite numbers {what}, got {value!r}")
    return out


def same_ground_cells(catalog: Catalog, cell: str) -> list[str]:
    """The catalog's cells of other UTM zones that cover most of ``cell``'s ground (:data:`SAME_CELL_SHARE`; the
    same ground tiled in two zones, see :func:`rsretrieve.data.grid.ground_neighbours`)."""
    ids = {i for box_ in lonlat_boxes(Cell(*parse_cell_id(cell)).footprint()) for i in catalog.tile_ids_in_bbox(*box_)}
    near = {r["cell_id"] for r in catalog.tiles(f"t.tile_id IN ({','.join(map(str, sorted(ids)))})",
                                                 columns=["cell_id"])} if ids else set()
    # it pairs only cells of other grids
    return ground_neighbours([cell], sorted(near), overlap=True, min_share=SAME_CELL_SHARE).get(cell, [])


def run_query(engine: QueryEngine, tile: str | Path | None = None, tile_id: int | None = None, *,
              sensor: str | None = None, point: tuple[float, float] | None = None,
              window: tuple[int, int, int, int] | None = None, bbox: object = None, within: object = None,
              start: object = None, end: object = None, target_sensors: list[str] | None = None, k: int = 10,
              exclude_own_scene: bool = False, exclude_own_cell: bool = False,
              one_per_cell: bool = False) -> QueryResult:
    """Validate the inputs, cut and embed the query tile, search; see ``Workspace.query``."""
    from rsretrieve.index.filters import load_region

    if (tile is None) == (tile_id is None):
        raise QueryError("give exactly one of a tile file or a tile id")
    for name, flag in (("exclude_own_scene", exclude_own_scene), ("exclude_own_cell", exclude_own_cell),
                       ("one_per_cell", one_per_cell)):
        if not isinstance(flag, (bool, np.bool_)):  # "false" is a true value: it applied the flag
            raise QueryError(f"{name} must be True or False, got {flag!r}")
    if tile_id is not None and (sensor is not None or point is not None or window is not None):
        given = [n for n, v in (("sensor", sensor), ("point", point), ("window", window)) if v is not None]
        named = given[0] if len(given) == 1 else f"{', '.join(given[:-1])} and {given[-1]}"
        raise QueryError(f"{named} {'applies' if len(given) == 1 else 'apply'} to a query tile file, not to a tile "
                         f"id (a catalog tile already has its sensor and cell)")
    if tile_id is not None and (isinstance(tile_id, (bool, np.bool_)) or not isinstance(tile_id, (int, np.integer))):
        raise QueryError(f"tile_id must be an integer, got {tile_id!r}")
    if tile is not None and not isinstance(tile, (str, os.PathLike)):
        raise QueryError(f"tile must be a file path, got {tile!r}")
    for name, value in (("tile", tile), ("within", within), ("sensor", sensor)):
        if isinstance(value, str) and not value.strip():  # Path("") is the working folder; sensor "" was none
            raise QueryError(f"{name} must not be empty, got {value!r}")
    k = _positive_k(k)
    if isinstance(target_sensors, str):
        target_sensors = [s for s in target_sensors.split(",") if s]
    point, window = _numbers(point, 2, "point", "(lon, lat) in degrees"), _numbers(window, 4, "window",
                                                                                   "(col, row, width, height) in pixels")
    if window is not None and not all(float(v).is_integer() for v in window):
        raise QueryError(f"window must be whole pixels (col, row, width, height), got {window!r}")
    window = tuple(int(v) for v in window) if window is not None else None
    if window is not None and (window[2] <= 0 or window[3] <= 0):  # it was said not to overlap the file
        raise QueryError(f"window width and height must be > 0 pixels, got {','.join(map(str, window))} "
                         "(col, row, width, height)")
    try:
        region = load_region(within) if isinstance(within, (str, os.PathLike)) else within
        flt_args = dict(bbox=bbox, polygon=region, start=_when(start, "start"), end=_when(end, "end"),
                        sensors=frozenset(target_sensors) if target_sensors else None, one_per_cell=one_per_cell)
        QueryFilter(**flt_args)  # validate before any pixel is read
    except OSError as e:
        raise QueryError(f"{within}: {e.strerror or e}") from None
    except ValueError as e:
        raise QueryError(str(e).splitlines()[0]) from None
    q = tile_from_catalog(engine.catalog, int(tile_id)) if tile_id is not None else tile_from_file(
        tile, engine.tile_m, sensor, point=point, window=window)
    if q.scene_id is None and q.scene_key is not None:  # a file of an ingested scene is that scene
        row = engine.catalog.conn.execute("SELECT scene_id FROM scenes WHERE key = ?", (q.scene_key,)).fetchone()
        q.scene_id = None if row is None else int(row[0])
    if exclude_own_cell and q.cell_id is None:
        raise QueryError("excluding the query's own cell needs its cell: give a point inside the tile file, or a "
                         "tile id")
    cells = [q.cell_id, *same_ground_cells(engine.catalog, q.cell_id)] if exclude_own_cell and q.cell_id else []
    flt = QueryFilter(**flt_args,
                      exclude_scene_ids=frozenset([q.scene_id]) if exclude_own_scene and q.scene_id else frozenset(),
                      exclude_cell_ids=frozenset(cells))
    hits, plan = engine.search(q, k=k, flt=flt)
    return QueryResult(q, hits, plan)
