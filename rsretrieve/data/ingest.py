"""Ingest: scenes -> tiles on the ground grid -> catalog.

``process_scene`` is a pure function from a scene on disk to the rows that describe it (so it can run in worker
processes, or on Ray later); ``ingest`` discovers scenes, skips those already in the catalog with the same
fingerprint and reading rules (:data:`INGEST_RULES`), and commits each scene with its tiles in one
transaction. Expected problems are collected as
:class:`~rsretrieve.data.discover.Problem` (path + reason) and never stop the other scenes.

A file's data type is checked against its sensor's (:func:`~rsretrieve.data.scene.dtype_problem`), and a SAR
scene's values against its units (dB or linear). A catalogued input whose files changed and that is now refused
leaves the catalog, and its rejection says so (:func:`_refused_change`): its tiles would otherwise point at pixels
that are no longer the ones catalogued.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
import logging
import math
import multiprocessing
import os
import re
import signal
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.errors
from rasterio.enums import Resampling
from rasterio.errors import WindowError
from rasterio.transform import Affine
from rasterio.warp import transform_bounds
from rasterio.windows import Window, from_bounds
from shapely.geometry import MultiPolygon, Polygon, box

from rsretrieve.data.catalog import Catalog, SceneRow, TileRow
from rsretrieve.data.discover import (NOT_HIDING, Problem, SceneSource, companion_of, discover,
                                      split_resolution)
from rsretrieve.data.grid import Cell, cell_bounds_in, cells_covering, grid_epsg_for, lonlat_boxes, to_lonlat
from rsretrieve.data.labels import check_scheme, class_name, scheme_for
from rsretrieve.data.scene import (OpenedScene, SceneError, check_georef, clip_window, metadata_files, open_raster,
                                   open_scene, to_physical, valid_pixels)
from rsretrieve.data.tiles import CellSampler
from rsretrieve.files import gone
from rsretrieve.sensors import CloudTest, get_sensor, list_sensors

log = logging.getLogger(__name__)

_STRIP_ROWS = 1024


#: the share of a cell a tile's data must cover by default (``--min-coverage``)
MIN_COVERAGE = 0.25

#: The version of the rules by which ingest reads a file: which files make a scene, its sensor, layout, date and
#: cloud. Each scene is recorded under it (:func:`_stamp`), so that a catalog written by an earlier version has its
#: scenes read once more (as the sensor they were catalogued as), and those now read otherwise replaced; the others
#: keep their tiles, ids and vectors. A stamp of a newer version is left as it is.
#: 1 (not recorded): before 2026-12-07. 2: Sentinel-2's DN offset from processing baseline 04.00, the date from the
#: product id, Landsat 7's 8-bit RGB layout only for a file named so, Sentinel-2's SCL as cloud.
INGEST_RULES = 2


@dataclass
class IngestReport:
    """What an ingest run did."""

    added: int = 0
    #: catalogued scenes read again and written anew: their files changed, or this version reads them otherwise
    replaced: int = 0
    #: catalogued scenes whose files changed and are now refused: removed from the catalog (each one a problem too)
    removed: int = 0
    #: inputs already in the catalog with the same files: scenes and land-cover sources
    skipped: int = 0
    #: of them, land-cover sources
    skipped_label_sources: int = 0
    #: of them, scenes catalogued by an earlier version's rules (:data:`INGEST_RULES`), read again: the same reading
    reread: int = 0
    tiles: int = 0
    label_sources: int = 0
    labelled_cells: int = 0
    problems: list[Problem] = field(default_factory=list)
    #: scenes an earlier version's rules catalogued that are now companions of a scene this run catalogued
    #: (Sentinel-2's true-colour TCI was a Landsat 7 scene), and scenes of files that a STAC item this run catalogued
    #: reads with its properties now: taken out of the catalog, each with why
    retired: list[Problem] = field(default_factory=list)
    #: scenes an earlier version's rules catalogued that this version does not find as scenes, kept: each with
    #: what it is now (:func:`_settle_unseen`)
    unseen: list[Problem] = field(default_factory=list)
    #: with ``prune``: catalogued scenes under the run's paths whose band files are gone, taken out (:func:`_prune`)
    pruned: list[Problem] = field(default_factory=list)
    #: with ``prune``: catalogued scenes kept because a file of theirs could not be looked at, or one line saying
    #: that nothing was pruned because part of the paths could not be read
    not_pruned: list[Problem] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = self.__dict__.copy()
        for k in ("problems", "retired", "unseen", "pruned", "not_pruned"):
            d[k] = [{"path": p.path, "reason": p.reason} for p in d[k]]
        return d


def fingerprint(files: list[str]) -> str:
    """A digest of the files' names, sizes and modification times."""
    parts = []
    for f in files:
        st = Path(f).stat()
        parts.append([f, st.st_size, st.st_mtime_ns])
    return hashlib.sha1(json.dumps(parts).encode()).hexdigest()


# -- windows and masks ------------------------------------------------------------------------------------------
def _cell_float_window(cell: Cell, crs: rasterio.crs.CRS, t: Affine, width: int) -> Window | None:
    """A cell's window (fractional) in a north-up pixel grid of ``width`` columns; ``None`` if it has none.

    For a geographic ``crs`` the cell's longitudes are unwrapped to the raster's side of the antimeridian
    (:func:`~rsretrieve.data.grid.cell_bounds_in`), so cells next to +-180 degrees get a window too.
    """
    if crs.to_epsg() == cell.epsg:
        b = cell.bounds
    else:
        b = cell_bounds_in(cell, crs, near_x=(t @ (width / 2, 0))[0])
        if b is None:
            return None
    try:
        return from_bounds(*b, transform=t)
    except WindowError:
        return None


def cell_window(cell: Cell, scene: OpenedScene) -> tuple[int, int, int, int] | None:
    """(col_off, row_off, width, height) of a cell in the scene's reference pixel grid (may reach outside it).

    ``None`` when the cell has no window in that grid (its outline does not transform): it is skipped.
    """
    w = _cell_float_window(cell, scene.crs, scene.transform, scene.width)
    if w is None:
        return None
    c0, r0 = round(w.col_off), round(w.row_off)
    c1, r1 = round(w.col_off + w.width), round(w.row_off + w.height)
    return c0, r0, max(c1 - c0, 1), max(r1 - r0, 1)


class _Reader:
    """Reads one band of a scene over rows [r0, r1) of the reference grid, at the reference resolution."""

    def __init__(self, scene: OpenedScene):
        self.scene = scene
        self.ds: dict[str, rasterio.DatasetReader] = {}

    def __enter__(self) -> _Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        for d in self.ds.values():
            d.close()

    def crs_of(self, path: str) -> rasterio.crs.CRS | None:
        """The CRS of one of the scene's files (kept open for reading; opening failures as :meth:`_open`'s)."""
        return self._open(path).crs

    def _open(self, path: str) -> rasterio.DatasetReader:
        if path not in self.ds:
            try:
                self.ds[path] = open_raster(path)
            except SceneError as e:  # a file other than the one the scene is reported under: named
                if path == self.scene.source.key:
                    raise
                raise SceneError(f"{Path(path).name}: {e}", file_at_fault=e.file_at_fault) from None
        return self.ds[path]

    def read(self, path: str, index: int, r0: int, r1: int, fill: float) -> np.ndarray:
        try:
            return self._read(path, index, r0, r1, fill)
        except rasterio.errors.RasterioIOError as e:
            cause = str(e.__cause__ or e).split("\n")[0]
            raise SceneError(f"corrupt or truncated TIFF: reading {Path(path).name} failed ({cause})") from None

    def _read(self, path: str, index: int, r0: int, r1: int, fill: float) -> np.ndarray:
        sc = self.scene
        ds = self._open(path)
        if ds.transform == sc.transform and ds.width == sc.width and ds.height == sc.height:
            return ds.read(index, window=Window(0, r0, sc.width, r1 - r0))
        left, top = sc.transform @ (0, r0)
        right, bottom = sc.transform @ (sc.width, r1)
        win = ds.window(min(left, right), min(top, bottom), max(left, right), max(top, bottom))
        return ds.read(index, window=win, out_shape=(r1 - r0, sc.width), boundless=True, fill_value=fill,
                       resampling=Resampling.nearest)


def _ref_band(scene: OpenedScene) -> str:
    """The band the data mask is read from: the finest valid band (the first of them in the spec's order)."""
    valid_bands = [b for b in scene.spec.bands if b.valid and b.name in scene.band_files]
    return min(valid_bands, key=lambda b: b.gsd_m).name


@dataclass(frozen=True)
class _CloudPlan:
    """How a scene's cloud is found, decided once per scene: ``bright`` is its sensor's cloud test as the scene's bands
    allow (``None``: its layout lacks the test's bands), ``qa`` the scene's own quality mask (``None``: none)."""

    bright: CloudTest | None
    qa: str | None


def _cloud_plan(scene: OpenedScene, reader: _Reader) -> _CloudPlan:
    """The scene's :class:`_CloudPlan`; a quality mask in another CRS than the scene's is refused before any pixel is
    read (read through the scene's transform, it would mark another ground)."""
    spec, test = scene.spec, scene.spec.cloud_test
    if test is None:
        return _CloudPlan(None, None)
    bright = None
    if all(spec.band(b).name in scene.band_files for b in test.bands):
        bright = test
        if not all(spec.band(b).name in scene.band_files for b in test.snow_bands):
            bright = replace(test, snow_bands=())  # a layout without them: brightness alone
    qa = _aux_by_role(scene.source, test.qa_role) if test.qa_role else None
    if qa and (crs := reader.crs_of(qa)) != scene.crs:
        raise SceneError(f"quality mask {Path(qa).name} is in {crs.to_string() if crs else 'no CRS'}, the "
                         f"scene in {scene.crs.to_string()}: it must be on the scene's ground")
    return _CloudPlan(bright, qa)


def _masks(scene: OpenedScene, reader: _Reader, plan: _CloudPlan, r0: int,
           r1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(data, cloud, ref): boolean masks (r1 - r0, width), data = not nodata/NaN and cloud = flagged cloud among
    data, and the reference band's pixels (as stored) they were computed from."""
    spec, nodata = scene.spec, scene.nodata
    fill = nodata if nodata is not None else 0
    data = reader.read(*scene.band_files[_ref_band(scene)], r0, r1, fill)
    ok = valid_pixels(data, nodata)
    cloud = np.zeros_like(ok)
    if plan.bright is not None:
        phys: dict[str, np.ndarray] = {}  # each band read once (the green band is in both tests)

        def band(b: str) -> np.ndarray:
            name = spec.band(b).name
            if name not in phys:  # NaN where the band has no data (a coarser band's file covering less ground):
                dn = reader.read(*scene.band_files[name], r0, r1, fill)  # neither bright nor snow there
                phys[name] = np.where(valid_pixels(dn, nodata), to_physical(dn, scene.layout), np.float32(np.nan))
            return phys[name]
        cloud = plan.bright.flag(band, ok)
    if plan.qa:  # the provider's own mask (Landsat's CFMask bits, EnMAP's cloud mask, Sentinel-2's SCL) adds its cloud
        cloud |= ok & spec.cloud_test.qa_cloud(reader.read(plan.qa, 1, r0, r1, 0))
    return ok, cloud, data


def _aux_by_role(source: SceneSource, role: str) -> str | None:
    """The scene's own auxiliary file of ``role`` (``QA_PIXEL``, ``QL_QUALITY_CLOUD``, ``SCL``), in either case: a
    file named ``<product>_<role>`` (or ``-``, ``.``) whose product id begins the scene's name (its file, or its band
    files' prefix), or named ``<role>`` alone; with a Sentinel-2 granule's resolution suffix (``..._SCL_20m``), the
    finest. Auxiliary files go to the scene whose name shares the longest prefix with theirs, so a folder holding one
    scene's bands beside another acquisition's mask attaches it: it is not used. A STAC item's assets are its own,
    whatever their names."""
    up = role.upper()
    name = Path(source.key.rstrip("*")).name.upper()
    own = source.stac is not None
    found = []
    for key in sorted(source.aux):
        path = source.aux[key]
        res, stem = split_resolution(Path(path).stem.upper())
        if stem == up or (stem.endswith(up) and stem[-len(up) - 1] in "_-."
                          and (own or name.startswith(stem[:-len(up) - 1]))):
            found.append((res, key, path))
    return min(found)[2] if found else None


class _SarValues:
    """Counts over a SAR scene's reference band, to tell sigma0 in dB from linear sigma0 (the data type cannot:
    both are float32).

    Linear sigma0 (power) is never negative and almost always in 0..1 (sigma0 above 1 is 0 dB); in dB a scene is
    mostly negative and almost never in 0..1 (0..1 dB). Pixels exactly 0 are left out: they are the fill of many
    terrain-corrected exports that name no nodata value. A spec in dB refuses a scene with at least half of its other
    pixels in 0..1; a spec in linear sigma0 refuses one with at least half of them negative. Values far outside
    the range of backscatter in dB (raw amplitude DN cast to float) are not refused: torchgeo's SEN12MS fixture,
    random DN in the real layout, must ingest.
    """

    SHARE = 0.5

    def __init__(self, scene: OpenedScene):
        self.scene = scene
        self.nonzero = self.unit = self.negative = 0

    def add(self, ref: np.ndarray, ok: np.ndarray) -> None:
        v = to_physical(ref[ok], self.scene.layout)
        self.nonzero += int(np.count_nonzero(v))
        self.unit += int(np.count_nonzero((v > 0) & (v <= 1)))
        self.negative += int(np.count_nonzero(v < 0))

    def check(self) -> None:
        """Raise :class:`SceneError` when the values contradict the spec's units (see the class)."""
        sc = self.scene
        if not self.nonzero:
            return
        band, name = _ref_band(sc), sc.spec.name
        if sc.spec.units == "sigma0_db" and self.unit >= self.SHARE * self.nonzero:
            raise SceneError(
                f"band {band} holds linear sigma0, not dB ({self.unit / self.nonzero:.0%} of its pixels lie in 0..1, "
                f"where sigma0 in dB almost never does), but {name} files hold sigma0 in dB: convert it, "
                f"dB = 10 * log10(linear sigma0), and ingest the dB file")
        if sc.spec.units == "sigma0_linear" and self.negative >= self.SHARE * self.nonzero:
            raise SceneError(
                f"band {band} holds sigma0 in dB, not linear ({self.negative / self.nonzero:.0%} of its pixels are "
                f"negative, which linear sigma0 never is), but {name} files hold linear sigma0: convert it, "
                f"linear = 10 ** (dB / 10), and ingest the linear file")


def check_sar_units(scene: OpenedScene, window: tuple[int, int, int, int]) -> None:
    """Raise :class:`SceneError` when the reference band's pixels in ``window`` (col, row, width, height of the
    scene's grid) contradict a SAR spec's units, by the rule ingest applies to a whole scene (:class:`_SarValues`:
    linear sigma0 given for dB, or dB for linear); for query tiles. Nothing for other units."""
    if scene.spec.units not in ("sigma0_db", "sigma0_linear"):
        return
    path, idx = scene.band_files[_ref_band(scene)]
    clipped = clip_window(window, scene.width, scene.height)
    if clipped is None:
        return
    c0, r0, c1, r1 = clipped
    with rasterio.open(path) as ds:
        ref = ds.read(idx, window=Window(c0, r0, c1 - c0, r1 - r0))
    sar = _SarValues(scene)
    sar.add(ref, valid_pixels(ref, scene.nodata))
    sar.check()


def _sat(mask: np.ndarray) -> np.ndarray:
    """Summed-area table with a zero first row and column: sum over [r0:r1, c0:c1] in O(1)."""
    s = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), np.int64)
    s[1:, 1:] = mask.cumsum(0).cumsum(1)
    return s


def _box_sum(s: np.ndarray, r0: int, r1: int, c0: int, c1: int) -> int:
    return int(s[r1, c1] - s[r0, c1] - s[r1, c0] + s[r0, c0])


# -- one scene ----------------------------------------------------------------------------------------------------
def process_scene(source: SceneSource, tile_m: float, sensor: str | None = None,
                  min_coverage: float = MIN_COVERAGE,
                  min_tile_px: int = 8, file_fingerprint: str | None = None) -> tuple[SceneRow, list[TileRow]]:
    """Open a scene and cut it into grid tiles with their valid-pixel statistics.

    Args:
        source: the scene as discovered.
        tile_m: grid cell side in metres.
        sensor: force this registered sensor instead of identifying it.
        min_coverage: keep a tile only if at least this fraction of its cell holds data.
        min_tile_px: refuse scenes whose pixels are so coarse that a tile would be fewer pixels across.
        file_fingerprint: the :func:`fingerprint` of the source's files with the rules (:func:`_stamp`) that the
            scene is recorded under, taken by the caller before anything was read (None: taken now); a file that
            changes while it is read then differs from it, and the next ingest reads it again.

    Raises:
        SceneError: for any expected problem (unreadable, no CRS, unknown sensor, a data type that cannot be the
            sensor's (:func:`~rsretrieve.data.scene.dtype_problem`), SAR values in the wrong units, all nodata).
    """
    # every band's last block read once (no truncated file), every file's data type checked against the sensor's
    scene = open_scene(source, sensor, check_bands=True, check_dtype=True)
    crs, t = scene.crs, scene.transform
    res_m = _res_m(scene)
    if tile_m / res_m < min_tile_px:
        # the size suggested is whole metres (as --tile-size takes it), rounded up: 8 px of 300.04 m need 2401 m
        across = f"{tile_m / res_m:.1f}"
        if float(across) >= min_tile_px:  # 7.9989 px is not "8.0 px (fewer than 8)": cut, not rounded up
            across = f"{math.floor(tile_m / res_m * 1000) / 1000:g}"
        raise SceneError(f"{res_m:.0f} m pixels make {tile_m:g} m tiles {across} px across (fewer than "
                         f"{min_tile_px}); ingest it into a workspace with --tile-size >= "
                         f"{math.ceil(round(min_tile_px * res_m, 6))}")
    bounds = rasterio.transform.array_bounds(scene.height, scene.width, t)  # (west, south, east, north) in crs
    (west, south, east, north), footprint, gepsg = scene_extent(crs, bounds)
    gb = bounds if crs.to_epsg() == gepsg else transform_bounds(crs, f"EPSG:{gepsg}", *bounds, densify_pts=21)
    cells, windows = [], []
    for c in cells_covering(gb, gepsg, tile_m):
        if (win := cell_window(c, scene)) is not None:
            cells.append(c)
            windows.append(win)
    samples = _cell_samples(scene, cells, tile_m)
    # what a cell's counts are out of: its window's pixels, or the points its tile is made of
    denom = [_COVERAGE_POINTS ** 2 if i in samples else w * h for i, (_, _, w, h) in enumerate(windows)]
    data_n = np.zeros(len(cells), np.int64)
    clear_n = np.zeros(len(cells), np.int64)
    tot_data = tot_cloud = 0
    sar = _SarValues(scene) if scene.spec.units in ("sigma0_db", "sigma0_linear") else None
    with _Reader(scene) as reader:
        plan = _cloud_plan(scene, reader)
        for s0 in range(0, scene.height, _STRIP_ROWS):
            s1 = min(s0 + _STRIP_ROWS, scene.height)
            ok, cloud, ref = _masks(scene, reader, plan, s0, s1)
            if sar is not None:
                sar.add(ref, ok)
            tot_data += int(ok.sum())
            tot_cloud += int(cloud.sum())
            clear = ok & ~cloud
            sd, sc = _sat(ok), _sat(clear)
            for i, (rows, cols, lo, hi) in samples.items():
                if lo < s1 and hi >= s0:
                    sel = (rows >= s0) & (rows < s1)
                    rr, cc = rows[sel] - s0, cols[sel]
                    data_n[i] += int(ok[rr, cc].sum())
                    clear_n[i] += int(clear[rr, cc].sum())
            for i, (c0, r0, w, h) in enumerate(windows):
                if i in samples:
                    continue
                rr0, rr1 = max(r0, s0), min(r0 + h, s1)
                cc0, cc1 = max(c0, 0), min(c0 + w, scene.width)
                if rr0 < rr1 and cc0 < cc1:
                    data_n[i] += _box_sum(sd, rr0 - s0, rr1 - s0, cc0, cc1)
                    clear_n[i] += _box_sum(sc, rr0 - s0, rr1 - s0, cc0, cc1)
    if tot_data == 0:
        raise SceneError("all pixels are nodata: nothing to tile")
    if sar is not None:
        sar.check()
    tiles = []
    for cell, (c0, r0, w, h), nd, nc, px_n in zip(cells, windows, data_n, clear_n, denom):
        coverage = nd / px_n
        if coverage < min_coverage:
            continue
        fp = cell.footprint()
        lon, lat = cell.center_lonlat()
        tiles.append(TileRow(cell.id, cell.epsg, cell.row, cell.col, c0, r0, w, h, round(float(coverage), 6),
                             round(float(nc / px_n), 6), round(float((nd - nc) / nd), 6) if nd else 0.0,
                             lon, lat, fp.wkt, lonlat_boxes(fp)))
    if not tiles:
        raise SceneError(f"no grid cell of {tile_m:g} m is covered to --min-coverage {min_coverage:g} (the scene is "
                         f"{scene.width} x {scene.height} px of {res_m:.0f} m); nothing to tile",
                         file_at_fault=min_coverage <= MIN_COVERAGE)  # above the default, the option may refuse
    acq = scene.acquired
    px = scene.width * scene.height
    row = SceneRow(
        key=source.key, fingerprint=file_fingerprint or _stamp(fingerprint(source.all_files()), _meta_stamp(source)),
        sensor=scene.spec.name, layout=scene.layout_name,
        files={b: p for b, (p, _) in scene.band_files.items()} if not source.stacked else {"*": source.files["*"]},
        aux=source.aux, crs=crs.to_wkt(), transform=list(t)[:6], width=scene.width, height=scene.height,
        res_m=res_m, acquired=acq.strftime("%Y-%m-%dT%H:%M:%SZ") if acq else None,
        acquired_ts=int(acq.timestamp()) if acq else None, west=west, south=south, east=east, north=north,
        footprint=footprint.wkt, grid_epsg=gepsg, valid_fraction=round((tot_data - tot_cloud) / px, 6),
        cloud_fraction=round(tot_cloud / tot_data, 6), ingested_at=datetime.now(timezone.utc).isoformat())
    return row, tiles


#: points per side of a cell at which the coverage of a cell turned in the scene's CRS is counted
_COVERAGE_POINTS = 16


def _cell_samples(scene: OpenedScene, cells: list[Cell],
                  tile_m: float) -> dict[int, tuple[np.ndarray, np.ndarray, int, int]]:
    """For the cells not of the scene's own CRS: index -> (rows, cols, first row, last row) of the scene pixels of
    ``_COVERAGE_POINTS`` x ``_COVERAGE_POINTS`` points evenly inside the cell (those inside the scene).

    Such a cell is turned and scaled in the scene's grid (the meridian convergence between a LAEA or polar
    stereographic CRS and the UTM zone reaches tens of degrees), so its window, the bounding box, holds other
    ground as well: counting the window's pixels would keep a cell 15% covered as 27%. The points are the ones
    :class:`~rsretrieve.data.tiles.CellSampler` makes its tile of.
    """
    sampler = CellSampler({"crs": scene.crs.to_wkt(), "transform": list(scene.transform)[:6],
                           "width": scene.width}, tile_m)
    out = {}
    for i, cell in enumerate(cells):
        if not sampler.needed(cell.id):
            continue
        rows, cols = (a.ravel() for a in sampler.pixels(cell.id, _COVERAGE_POINTS))
        inside = (rows >= 0) & (rows < scene.height) & (cols >= 0) & (cols < scene.width)
        rows, cols = rows[inside], cols[inside]
        out[i] = (rows, cols, int(rows.min()) if rows.size else 0, int(rows.max()) if rows.size else -1)
    return out


def scene_extent(crs: rasterio.crs.CRS, bounds: tuple[float, float, float, float]
                 ) -> tuple[tuple[float, float, float, float], Polygon | MultiPolygon, int]:
    """Where a raster lies: its (west, south, east, north) in degrees (``west > east`` across the antimeridian),
    its footprint in EPSG:4326 and the UTM zone its cells are in (:func:`~rsretrieve.data.grid.grid_epsg_for`).

    The one rule for scenes, land-cover rasters and query tile files, so that all three put the same ground in the
    same cells.

    Args:
        crs: the raster's CRS.
        bounds: its (left, bottom, right, top) in that CRS.
    """
    west, south, east, north = transform_bounds(crs, "EPSG:4326", *bounds, densify_pts=21)
    west, east = _wrap_lon(west), _wrap_lon(east)  # a geographic raster may run past 180 (or use 0..360)
    footprint = to_lonlat(box(*bounds), crs, densify=16)
    clon, clat = footprint.centroid.x, footprint.centroid.y
    if west > east:  # across the antimeridian: the centroid of the split parts is meaningless
        clon = ((west + (east + 360.0 - west) / 2 + 180.0) % 360.0) - 180.0
    return (west, south, east, north), footprint, grid_epsg_for(crs, clon, clat)


def _wrap_lon(lon: float) -> float:
    """A longitude in degrees moved into [-180, 180] (kept as is when it already is)."""
    return lon if -180.0 <= lon <= 180.0 else ((lon + 180.0) % 360.0) - 180.0


def _res_m(scene: OpenedScene) -> float:
    """The pixel size in metres along the coarser of the two axes (approximate for degrees).

    The coarser one: a tile must be ``min_tile_px`` pixels across both ways, and a 10 m x 100 m pixel makes a
    480 m tile 4.8 rows tall however fine its columns are. In degrees, a column is ``cos(latitude)`` as wide as a
    row of the same angle is tall.
    """
    t = scene.transform
    if scene.crs.is_geographic:
        lat = (t @ (scene.width / 2, scene.height / 2))[1]
        return max(abs(t.a) * math.cos(math.radians(min(abs(lat), 90.0))), abs(t.e)) * 111_320.0
    return max(abs(t.a), abs(t.e)) * scene.crs.linear_units_factor[1]


def process_labels(source: SceneSource, tile_m: float,
                   scheme: str | None = None) -> list[tuple[str, str, int, str, float, str]]:
    """Dominant class per grid cell of a land-cover raster: rows for ``Catalog.write_labels``.

    Args:
        scheme: the label scheme of the raster's class values; found from its tags and name when omitted
            (:func:`rsretrieve.data.labels.scheme_for`).
    """
    path = source.files["*"]
    with open_raster(path) as src:
        if src.crs is None:
            raise SceneError("no CRS: the land-cover raster is not georeferenced")
        check_georef(src)
        lc = src.read(1)
        tags = src.tags()
        scheme = scheme or scheme_for(path, tags)
        names = [n for n in tags.get("RSRETRIEVE_CLASSES", "").split(",") if n]
        nodata = src.nodata
        crs, t = src.crs, src.transform
        bounds = src.bounds
    gepsg = scene_extent(crs, tuple(bounds))[2]  # the scenes' rule, so labels land on the scenes' cells
    gb = tuple(bounds) if crs.to_epsg() == gepsg else transform_bounds(crs, f"EPSG:{gepsg}", *bounds,
                                                                       densify_pts=21)
    rows = []
    for cell in cells_covering(gb, gepsg, tile_m):
        w = _cell_float_window(cell, crs, t, lc.shape[1])
        if w is None:
            continue
        r0, c0 = max(round(w.row_off), 0), max(round(w.col_off), 0)
        r1, c1 = min(round(w.row_off + w.height), lc.shape[0]), min(round(w.col_off + w.width), lc.shape[1])
        if r1 <= r0 or c1 <= c0:
            continue
        vals = lc[r0:r1, c0:c1].ravel()
        if nodata is not None:
            vals = vals[vals != nodata]
        if vals.size < 0.5 * w.width * w.height:
            continue
        uniq, counts = np.unique(vals, return_counts=True)
        k = int(np.argmax(counts))
        label = int(uniq[k])
        name = names[label] if 0 <= label < len(names) else class_name(scheme, label)
        rows.append((cell.id, scheme, label, name, round(float(counts[k] / vals.size), 6), source.key))
    return rows


# -- the run ------------------------------------------------------------------------------------------------------
def _stamp(fp: str, meta: str = "") -> str:
    """What is recorded for an ingested scene: its files' fingerprint, that of its STAC item and sidecars
    (``meta``, from :func:`_meta_stamp`) and the rules it was read by."""
    return f"{fp}{meta} rules={INGEST_RULES}"


def _meta_stamp(source: SceneSource) -> str:
    """`` meta=<digest>`` of the files that say what the scene is besides its rasters (its STAC item, its sidecar
    JSON: :func:`~rsretrieve.data.scene.metadata_files`), ``""`` where it has none. Without it, an item or sidecar
    edited after ingest (a corrected date or baseline, an item's offset flag) was skipped as unchanged for good.

    Raises:
        OSError: one of them cannot be looked at.
    """
    files = metadata_files(source)
    return f" meta={fingerprint(files)[:16]}" if files else ""


def _files_part(stamp: str) -> str:
    """The fingerprint of a scene's rasters in its stamp (without its metadata and rules)."""
    return stamp.split(" ", 1)[0]


def _metadata_newer(source: SceneSource, old: dict[str, Any] | None) -> bool:
    """Whether a file of the scene's STAC item or sidecars was written or put in place (its modification or status
    change time) after the catalogued scene ``old`` was ingested: for a stamp of a version that did not record them
    (then :func:`_meta_stamp` cannot tell an edited one from one that was there all along)."""
    if old is None:
        return True
    try:
        then = datetime.fromisoformat(old["ingested_at"]).timestamp()
        return any(max((st := os.stat(f)).st_mtime, st.st_ctime) > then for f in metadata_files(source))
    except (OSError, ValueError):
        return True


def _rules_of(stamp: str) -> int:
    """The version of the reading rules a scene's stamp records (1: none recorded)."""
    _, _, rules = stamp.partition(" rules=")
    return int(rules) if rules.isdigit() else 1


def _same_reading(catalog: Catalog, row: SceneRow, tiles: list[TileRow], min_coverage: float) -> bool:
    """Whether the catalogued scene ``row.key`` holds what ingest read now, its tiles cut to ``min_coverage``: the
    same scene, and the same tiles but for those one run's ``--min-coverage`` kept and the other's did not (a tile
    catalogued then with a coverage below this run's, or one read now with a coverage below every catalogued one's).
    """
    old = catalog.scene_by_key(row.key)
    if old is None:
        return False
    new = asdict(row)
    keep = ("fingerprint", "ingested_at")
    if any(new[k] != old[k] for k in new if k not in keep):
        return False
    cols = ["cell_id", "col_off", "row_off", "width", "height", "coverage", "valid_fraction", "cloud_fraction",
            "footprint"]
    have = {t["cell_id"]: tuple(t[c] for c in cols)
            for t in catalog.tiles("t.scene_id = ?", (old["scene_id"],), columns=cols)}
    want = {t.cell_id: (t.cell_id, t.col_off, t.row_off, t.width, t.height, t.coverage, t.valid_fraction,
                        t.cloud_fraction, t.footprint) for t in tiles}
    if not have or any(have[c] != want[c] for c in have.keys() & want.keys()):
        return False
    lowest = min(t[5] for t in have.values())
    return (all(have[c][5] < min_coverage for c in have.keys() - want.keys())
            and all(want[c][5] < lowest for c in want.keys() - have.keys()))


def _unseen(catalog: Catalog, sources: list[SceneSource], roots: list[Path],
            sensor: str | None) -> list[tuple[dict[str, Any], str | None, str, str]]:
    """The scenes an earlier version's rules catalogued under ``roots`` (their key and files) that this version does
    not find as scenes although their files are all still there, each as (catalogued scene, the key of the scene
    found now whose companions or band files all its files are, or ``None``, ``"companion"``, ``"part"`` or ``""``
    for which, what it is now). Under ``sensor``, only that sensor's.

    The cases: a product's companion (an 8-bit true-colour ``TCI.tif`` was catalogued as a Landsat 7 scene), a band
    file beside its STAC item, files now grouped under another key."""
    keys = {s.key for s in sources}
    aux_of = {path: (s.key, role) for s in sources for role, path in s.aux.items()}
    part_of = {path: s.key for s in sources for path in s.files.values()}
    out = []
    for old in catalog.scenes_stamped_otherwise(f" rules={INGEST_RULES}"):
        files = sorted(set(old["files"].values()))
        if (_rules_of(old["fingerprint"]) >= INGEST_RULES or old["key"] in keys or sensor not in (None, old["sensor"])
                or not files or not _under(old["key"].rstrip("*"), roots)
                or not all(_under(f, roots) and os.path.isfile(f) for f in files)):
            continue
        if all(f in aux_of for f in files):
            owner, role = aux_of[files[0]]
            out.append((old, owner, "companion", f"now read as the companion {role} of the scene {owner}"))
        elif all(f in part_of for f in files):
            owner = part_of[files[0]]
            out.append((old, owner, "part", f"now read as part of the scene {owner}"))
        else:
            out.append((old, None, "", "no longer read as a scene (a file beside a STAC item, or a product's "
                                       "companion)"))
    return out


def _settle_unseen(catalog: Catalog, unseen: list[tuple[dict[str, Any], str | None, str, str]],
                   problems: list[Problem], report: IngestReport) -> None:
    """After a run, take out of the catalog each scene of :func:`_unseen` that is now a companion of a scene
    catalogued under this version's rules, named as that scene's sensor names its companions, or whose files are all
    band files of such a scene (the same pixels, catalogued twice: an earlier version read the band files beside a
    STAC item without it, or grouped a product's files under another key) (``report.retired``); keep the others, each
    with a line saying what it is now (``report.unseen``): a scene that is no one's companion or part, whose new
    owner was refused or is of a sensor without such companions, an earlier STAC item's scene (its item may be gone:
    ``--prune``'s to say), or one seen while discover could not read part of the run's paths, is not deleted on a
    guess."""
    blind = not _read_all(problems)
    for old, owner, kind, now in unseen:
        new = catalog.scene_by_key(owner) if owner is not None else None
        current = new is not None and _rules_of(new["fingerprint"]) == INGEST_RULES and not blind
        files = set(old["files"].values())
        # a companion by its new owner's sensor: a folder's only scene takes any companion-like file beside it, a
        # Sentinel-2 TCI.tif beside a Sentinel-1 scene too
        if current and ((kind == "companion" and new["sensor"] in list_sensors()
                         and all(companion_of(Path(f).name, new["sensor"]) for f in files))
                        or (kind == "part" and not old["key"].lower().endswith(".json")
                            and files <= set(new["files"].values()))):
            tiles = catalog.remove_scene_version(old["key"], old["fingerprint"])
            if tiles is not None:
                twice = ", so that its pixels are not indexed twice" if kind == "part" else ""
                report.retired.append(Problem(old["key"], f"{now}: its earlier version as a {old['sensor']} scene "
                                                          f"({tiles} tiles) is removed from the catalog{twice} (the "
                                                          "next `rsretrieve index` drops its vectors)"))
                continue
        why = " while this run could not read all its paths" if blind else ""
        report.unseen.append(Problem(old["key"], f"{now}{why}: its earlier version as a {old['sensor']} scene stays in "
                                                 "the catalog (`rsretrieve catalog --remove` takes it out)"))


def _catalogued_files(catalog: Catalog) -> dict[str, dict[str, Any]]:
    """Each band file of the catalogued scenes of this version's rules (or a later one's), and its scene. An earlier
    version's scenes are not counted: files it grouped otherwise are :func:`_unseen`'s to report."""
    return {f: old for old in catalog.scenes() if _rules_of(old["fingerprint"]) >= INGEST_RULES
            for f in old["files"].values()}


def _claimed(source: SceneSource, owners: dict[str, dict[str, Any]]) -> tuple[list[dict[str, Any]], str | None]:
    """Whether a new scene may be catalogued although some of its band files are catalogued scenes' (``owners``):
    (the scenes it supersedes, None), or ([], why not).

    A STAC item supersedes the scenes its files made without an item (named on their own, or ingested before the
    item was downloaded, or while it was cut short): it reads them with the item's properties (a Sentinel-2
    baseline offset), so those scenes are taken out once it is catalogued. Any other sharing would index the same
    tiles twice: refused, with the way out."""
    taken = [f for f in source.files.values() if f in owners and owners[f]["key"] != source.key]
    if not taken:
        return [], None
    olds = list({owners[f]["key"]: owners[f] for f in taken}.values())
    mine = set(source.files.values()) | set(source.aux.values())
    if source.stac is not None and all(not o["key"].lower().endswith(".json") and set(o["files"].values()) <= mine
                                       for o in olds):
        return olds, None
    return [], _already_catalogued(taken[0], owners[taken[0]]["key"], "found otherwise before (from another path, "
                                                                    "or with a STAC item)")


def _already_catalogued(path: str, key: str, when: str) -> str:
    """Why a new scene is not added: its band file ``path`` is one of the catalogued scene ``key``'s."""
    return (f"its file {Path(path).name} is already catalogued as part of the scene {key}, {when}: not added, so "
            f"that its tiles are not indexed twice; `rsretrieve catalog --remove {key}` takes that scene out "
            "(`ingest --prune` over its folder does, if its item or files are gone)")


def _prune(catalog: Catalog, roots: list[Path], problems: list[Problem], sensor: str | None,
           report: IngestReport) -> None:
    """Take out of the catalog the scenes under ``roots`` (:func:`_roots`: the run's paths that exist and the
    folders reached through links under them; the scene's key or one of its files under one) whose band files, or
    STAC item, are not all there any more (deleted or moved from the archive): ``report.pruned``, each with why; and
    the land-cover rasters under ``roots`` that are gone, with their labels. Under ``sensor``, only that sensor's
    scenes (and no land-cover raster).

    Only a file the system says does not exist is gone: one that cannot be looked at (permission denied, an I/O error,
    a stale network handle) keeps its scene, with a line (``report.not_pruned``). Nothing is taken out while discover
    could not list part of the paths (a folder it could not read would look empty): one line says so."""
    blind = next((p for p in problems if _hides_files(p)), None)
    if blind is not None:
        report.not_pruned.append(Problem(blind.path, "nothing is pruned in this run: this folder or file could not be "
                                                     "read, and what it holds would look gone"))
        return
    for old in catalog.scenes():
        if sensor is not None and old["sensor"] != sensor:
            continue
        key = old["key"].rstrip("*")
        files = sorted(set(old["files"].values()))
        if not (_under(key, roots) or any(_under(f, roots) for f in files)):
            continue
        looked = {f: gone(f) for f in files + ([key] if key.lower().endswith(".json") else [])}
        unknown = {f: why for f, why in looked.items() if isinstance(why, str)}
        if unknown:
            f, why = next(iter(unknown.items()))
            report.not_pruned.append(Problem(old["key"], f"cannot look at {f}: {why}: kept"))
            continue
        missing = sorted(Path(f).name for f, g in looked.items() if g is True)
        if missing:
            _take_out(catalog, old, report.pruned, f"its file{'s' * (len(missing) > 1)} {', '.join(missing)} "
                                                   f"{'are' if len(missing) > 1 else 'is'} gone")
    if sensor is not None:
        return
    for source, stamp in sorted(catalog.label_sources().items()):  # land-cover rasters
        if not _under(source, roots):
            continue
        state = gone(source)
        if isinstance(state, str):
            report.not_pruned.append(Problem(source, f"cannot look at it: {state}: its land-cover labels are kept"))
        elif state and (cells := catalog.remove_labels(source, stamp=stamp)) is not None:
            report.pruned.append(Problem(source, f"this land-cover raster is gone: its labels of {cells} cells are "
                                                 "removed from the catalog"))


def _take_out(catalog: Catalog, old: dict[str, Any], into: list[Problem], why: str) -> None:
    """Remove the catalogued scene ``old`` (only while it is that version) and say so in ``into``, after ``why``."""
    tiles = catalog.remove_scene_version(old["key"], old["fingerprint"])
    if tiles is not None:
        into.append(Problem(old["key"], f"{why}: its {tiles} tiles are removed from the catalog (the next "
                                        "`rsretrieve index` drops their vectors)"))


def _hides_files(problem: Problem) -> bool:
    """Whether a problem of discover is a folder or file it could not read, so what it holds may look gone; not a
    broken link, a cycle of links or a STAC item it could not parse, which hide nothing."""
    return problem.reason.startswith("cannot read") and not problem.reason.startswith(NOT_HIDING)


def _read_all(problems: list[Problem]) -> bool:
    """Whether a run read all its paths: none of its ``problems`` is a folder or file it could not read
    (:func:`_hides_files`: what it could not list would look empty, or like files gone)."""
    return not any(_hides_files(p) for p in problems)


def _roots(paths: list[str | Path], linked: list[Path] = ()) -> list[Path]:
    """The resolved paths of the run's ``paths`` that exist, to tell the catalogued scenes under them, and the
    folders discover reached through links under them (``linked``): a scene found there is keyed by its resolved
    path, which lies under no path of the run (``--prune`` over an archive holding a link to a folder elsewhere
    never pruned that folder's scenes). One that does not exist (a broken link, a cycle of links: discover reports
    it) is left out: ``Path.resolve`` raises RuntimeError on a cycle, and nothing lies under it."""
    return [Path(os.path.realpath(p)) for p in paths if os.path.exists(p)] + list(linked)


def _under(path: str, roots: list[Path]) -> bool:
    """Whether ``path`` is one of ``roots`` or lies under one."""
    p = Path(path)
    return any(p == r or r in p.parents for r in roots)


def _unchanged(old: dict[str, Any], stamp: str) -> bool:
    """Whether the files a catalogued scene (``old``, as :meth:`Catalog.scene_by_key` gives it) was read from are as
    its ``stamp`` recorded them: then what differs now is only which files the rules find for it."""
    try:
        return fingerprint(SceneSource(old["key"], old["files"], old["aux"]).all_files()) == stamp.split(" ", 1)[0]
    except OSError:
        return False


def _label_stamp(fp: str, label_scheme: str | None) -> str:
    """What is recorded for an ingested land-cover raster: its fingerprint, and the scheme when one was forced."""
    return fp if label_scheme is None else f"{fp}|scheme={label_scheme}"


_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _die_with_parent(parent_pid: int) -> None:
    """Worker initializer: on Linux, have the kernel SIGKILL this worker when the ingest process dies.

    Without it a ``kill -9`` of ``rsretrieve ingest --workers N`` leaves the workers waiting on their task queue
    forever. Elsewhere (no ``prctl``) it does nothing. If the parent is already gone when this runs, exit now.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _work(args: tuple) -> tuple[str, object]:
    """One input: ``("scene", rows)``, ``("labels", rows)``, ``("problem", Problem)`` for a refusal, or
    ``("error", Problem)`` for an unexpected failure or a refusal that may not be the file's fault (it cannot be read
    now, or an option refuses it: ``SceneError.file_at_fault``); a refusal says something about the input, an error
    may not."""
    source, tile_m, sensor, min_cov, label_scheme, fp = args
    try:
        if source.role == "labels":
            return "labels", process_labels(source, tile_m, label_scheme)
        return "scene", process_scene(source, tile_m, sensor, min_cov, file_fingerprint=fp)
    except SceneError as e:
        return ("problem" if e.file_at_fault else "error"), Problem(source.key, str(e))
    except Exception as e:  # an unexpected failure of one scene must not lose the others
        log.exception("unexpected error on %s", source.key)
        return "error", Problem(source.key, f"unexpected error: {type(e).__name__}: {e}")


def _refused_change(catalog: Catalog, source: SceneSource, stored: str, kind: str, problem: Problem,
                    sensor: str | None, report: IngestReport) -> Problem:
    """The outcome for an input already in the catalog whose files changed (``stored`` is the catalogued
    fingerprint or label stamp) and that is now refused: the problem to report, its reason completed.

    The catalogued version describes pixels the file no longer holds, and ``rsretrieve index`` would read the new
    ones through its tile windows; so it is removed (its ids stay retired: the catalog's high-water marks are kept),
    and the index drops its vectors on its next run. It stays, and the line says why, when the refusal need not be
    the file's fault (``kind`` "error": an unexpected error, a file that cannot be read now, a ``--min-coverage``
    above the default), or may be that of a ``--sensor`` other than the sensor it was catalogued as.
    """
    reason = problem.reason
    if kind == "error":
        return Problem(problem.path, f"{reason}; its earlier version stays in the catalog (this refusal may not be "
                                     "the file's fault): run ingest again once it is fixed")
    if source.role == "labels":
        cells = catalog.remove_labels(source.key, stamp=stored)
        if cells is None:  # changed meanwhile by another ingest: its outcome stands
            return problem
        report.removed += 1
        return Problem(problem.path, f"{reason}; the land-cover labels of its earlier version ({cells} cells) are "
                                     "removed from the catalog, since the file changed and can no longer be ingested")
    old = catalog.scene_by_key(source.key)
    if old is None or old["fingerprint"] != stored:
        return problem
    if sensor is not None and sensor != old["sensor"]:
        return Problem(problem.path, f"{reason}; its earlier version (catalogued as {old['sensor']}) stays in the "
                                     f"catalog, since --sensor {sensor} may be what is refused: run ingest without it "
                                     "to bring the scene up to date")
    if _unchanged(old, stored):  # its own files as they were: what differs is which files are found with them
        return Problem(problem.path, f"{reason}; its earlier version stays in the catalog: its files are unchanged, "
                                     "and are found otherwise now (some taken by a STAC item, or files added beside "
                                     "them)")
    tiles = catalog.remove_scene_version(source.key, stored)
    if tiles is None:
        return problem
    report.removed += 1
    return Problem(problem.path, f"{reason}; its earlier version ({tiles} tiles) is removed from the catalog, since "
                                 "the file changed and can no longer be ingested (the next `rsretrieve index` drops "
                                 "its vectors)")


def _refused_reread(problem: Problem) -> Problem:
    """The outcome for a scene an earlier version's rules catalogued, its files unchanged, that this version refuses
    when it reads it again: it stays in the catalog, since the refusal may be this run's (an option, a sensor
    definition it lacks) as well as the new rules'; the line says so."""
    return Problem(problem.path, f"{problem.reason}; its earlier version stays in the catalog: its files are "
                                 "unchanged since an earlier version of rsretrieve ingested them, and this refusal may "
                                 "come from this run's options or sensor definitions (run ingest as it was run then) "
                                 "or from this version's rules (`rsretrieve catalog --remove` takes it out)")


def ingest(paths: list[str | Path], catalog: Catalog, sensor: str | None = None,
           min_coverage: float = MIN_COVERAGE,
           workers: int = 1, progress: Callable[[int, int, str], None] | None = None,
           label_scheme: str | None = None, prune: bool = False) -> IngestReport:
    """Add the scenes under ``paths`` to ``catalog``; idempotent and resumable.

    Args:
        paths: files and folders.
        catalog: an open catalog; its ``tile_m`` sets the grid.
        sensor: force this sensor for every scene.
        min_coverage: see :func:`process_scene`.
        workers: processes to cut scenes in parallel (each scene is still committed by this process).
        progress: called as ``progress(done, total, key)`` after each scene.
        label_scheme: the label scheme of every land-cover raster of this run (see :mod:`rsretrieve.data.labels`);
            found per raster when omitted.
        prune: also take out the catalogued scenes under ``paths`` whose band files are gone (:func:`_prune`).
    """
    if label_scheme is not None:
        label_scheme = check_scheme(label_scheme)
    report = IngestReport()
    tile_m = catalog.tile_m
    linked: list[Path] = []
    sources, report.problems = discover(paths, linked, lone_companions=True)
    roots = _roots(paths, linked)
    if prune:
        _prune(catalog, roots, report.problems, sensor, report)
    unseen = _unseen(catalog, sources, roots, sensor)
    known = set(list_sensors())
    todo = []
    owners: dict[str, dict[str, Any]] | None = None  # band file -> the catalogued scene it belongs to, when needed
    supersedes: dict[str, list[dict[str, Any]]] = {}  # a STAC item's key -> the scenes of its files without it
    written: dict[str, str] = {}  # band file -> the key of the new scene this run wrote it in
    restamps: list[tuple[str, str, str]] = []  # (key, stamp, stamp with its metadata): scenes stamped before it
    for s in sources:
        try:
            fp = fingerprint(s.all_files())
            fp = _label_stamp(fp, label_scheme) if s.role == "labels" else _stamp(fp, _meta_stamp(s))
        except OSError as e:
            report.problems.append(Problem(s.key, f"cannot read: {e.strerror}"))
            continue
        stored = catalog.meta(f"labels:{s.key}") if s.role == "labels" else catalog.scene_fingerprint(s.key)
        as_sensor, rules_only, meta_only = sensor, False, False
        if (s.role == "scene" and stored is not None and stored != fp and _rules_of(stored) == INGEST_RULES
                and _files_part(stored) == _files_part(fp)):
            # its rasters as catalogued, its STAC item or sidecars not: edited (read again), or stamped by a version
            # that did not record them and not changed since it ingested the scene (recorded now, nothing read)
            if " meta=" not in stored and not _metadata_newer(s, catalog.scene_by_key(s.key)):
                restamps.append((s.key, stored, fp))
                stored = fp
            else:
                meta_only = True
        if s.role == "scene" and stored is not None and stored != fp and _rules_of(stored) != INGEST_RULES:
            old = catalog.scene_by_key(s.key)
            rules_only = _unchanged(old, stored)
        if rules_only:
            # its files unchanged, catalogued by other rules (which may have found other companions for it): read
            # again as the sensor it was catalogued as (an unchanged file keeps its sensor, whether found or forced
            # then); not by a newer version's rules, nor under a --sensor for another sensor's scenes
            as_sensor = old["sensor"]
            if _rules_of(stored) > INGEST_RULES or sensor not in (None, as_sensor):
                stored = fp
            elif as_sensor not in known:
                why = (f"catalogued as {as_sensor}, a sensor this run does not define (a user's sensor whose "
                       "definition is not in RSRETRIEVE_SENSOR_DIRS now); its earlier version stays in the catalog")
                report.problems.append(Problem(s.key, why))
                continue
        if stored == fp:
            report.skipped += 1
            report.skipped_label_sources += s.role == "labels"
            continue
        if stored is None and s.role == "scene":
            if owners is None:
                owners = _catalogued_files(catalog)
            olds, why = _claimed(s, owners)
            if why is not None:
                report.problems.append(Problem(s.key, why))
                continue
            if olds:
                supersedes[s.key] = olds
        todo.append((s, stored, fp, as_sensor, rules_only, meta_only))
    if restamps:
        catalog.restamp_scenes(restamps)
    jobs = [(s, tile_m, as_sensor, min_coverage, label_scheme, fp) for s, _, fp, as_sensor, _, _ in todo]
    if workers > 1 and len(jobs) > 1:
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_die_with_parent, initargs=(os.getpid(),))
        results = pool.map(_work, jobs, chunksize=1)
    else:
        pool, results = None, map(_work, jobs)
    try:
        # each source is recorded under the fingerprint taken before its pixels were read: a file that changes while
        # it is read then differs from it, and the next run ingests it again (a fingerprint taken after the read
        # matched the new file, so the old content stayed in the catalog for good); the scene row carries it already
        for i, ((source, stored, fp, _, rules_only, meta_only), (kind, res)) in enumerate(zip(todo, results)):
            if kind in ("problem", "error"):
                if rules_only:
                    res = _refused_reread(res)
                elif meta_only:
                    res = Problem(res.path, f"{res.reason}; its earlier version stays in the catalog: its rasters are "
                                            "unchanged since it was catalogued, only its STAC item or sidecar JSON "
                                            "changed (mend it and run ingest again, or `rsretrieve catalog --remove` "
                                            "takes the scene out)")
                elif stored is not None:
                    res = _refused_change(catalog, source, stored, kind, res, sensor, report)
                report.problems.append(res)
            elif kind == "labels":
                catalog.write_labels(res, source=source.key, stamp=fp)
                report.label_sources += 1
                report.labelled_cells += len(res)
            elif ((rules_only or meta_only) and _same_reading(catalog, *res, min_coverage)
                  and catalog.restamp_scene(source.key, stored, fp)):
                # read by an earlier version's rules, or its item or sidecar edited, and read the same now: its tile
                # ids and vectors stay
                report.skipped += 1
                report.reread += rules_only
            elif stored is None and (twice := next((f for f in source.files.values() if f in written), None)):
                # two new scenes of one file (two STAC items listing it): the first catalogued keeps it; a claim
                # made when planning, before either was read, kept out the good one when the first was refused
                report.problems.append(Problem(source.key, _already_catalogued(twice, written[twice], "in this run")))
            else:
                scene_row, tiles = res
                if stored is None:
                    written.update(dict.fromkeys(source.files.values(), source.key))
                # the scenes a STAC item supersedes go first: interrupted between the two, the next run adds the
                # item (its files then catalogued in no scene), whereas the other order left both for good
                for old in supersedes.get(source.key, []):
                    _take_out(catalog, old, report.retired, f"its files are read with the STAC item {source.key} now")
                catalog.write_scene(scene_row, tiles)
                report.tiles += len(tiles)
                report.replaced += stored is not None
                report.added += stored is None
            if progress:
                progress(i + 1, len(todo), source.key)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    _settle_unseen(catalog, unseen, report.problems, report)
    return report
