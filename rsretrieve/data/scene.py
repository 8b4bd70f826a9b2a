"""Opening a scene: which sensor it is, its reference pixel grid, its acquisition time.

Every expected problem raises :class:`SceneError` with a one-line reason; the caller adds the path.
"""

from __future__ import annotations

import bisect
import functools
import json
import math
import os
import re
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeVar

import numpy as np
import pyproj
import rasterio
import rasterio.crs
from rasterio.errors import NotGeoreferencedWarning, RasterioError, RasterioIOError
from rasterio.transform import Affine
from rasterio.windows import Window

from rsretrieve.data.discover import (RASTER_SUFFIXES, SceneSource, band_tokens, in_l2a_granule, json_error,
                                      split_band_token)
from rsretrieve.data.grid import transformer
from rsretrieve.sensors import Layout, SensorSpec, get_sensor, list_sensors, parse_baseline


class SceneError(Exception):
    """An expected, reportable problem with one input (no traceback is shown for it).

    ``file_at_fault``: False when the refusal may not say anything about the file's content (it cannot be read
    now, for permissions or an I/O error; or an option of the run refuses it, such as ``--min-coverage``): ingest
    then keeps a catalogued earlier version of it.
    """

    def __init__(self, message: str, *, file_at_fault: bool = True):
        super().__init__(message)
        self.file_at_fault = file_at_fault


@dataclass
class OpenedScene:
    """A scene resolved to a sensor and a reference grid (the finest band's)."""

    source: SceneSource
    spec: SensorSpec
    layout: Layout
    layout_name: str
    #: band name -> (path, 1-based band index in that file)
    band_files: dict[str, tuple[str, int]]
    crs: rasterio.crs.CRS
    transform: Affine
    width: int
    height: int
    nodata: float | None
    acquired: datetime | None


def open_raster(path: str) -> rasterio.DatasetReader:
    """Open a raster, turning the usual failures into one-line :class:`SceneError` reasons."""
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as e:
        raise SceneError(f"cannot read: {e.strerror}", file_at_fault=False) from None
    if size == 0:
        raise SceneError("empty file (0 bytes)")
    if not os.access(p, os.R_OK):
        raise SceneError("cannot read: permission denied", file_at_fault=False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(p)
    except RasterioIOError as e:
        msg = str(e).split("\n")[0]
        if "not recognized as being in a supported file format" in msg or "not recognised" in msg:
            raise SceneError("not a raster file GDAL can read") from None
        if "TIFFReadDirectory" in msg or "TIFF" in msg or "truncated" in msg.lower():
            raise SceneError(f"corrupt or truncated TIFF ({msg.split(':')[-1].strip() or msg})") from None
        raise SceneError(f"cannot open as a raster: {msg}") from None


@contextmanager
def _band_file(path: str) -> Iterator[rasterio.DatasetReader]:
    """One band file of a per-band product, opened and its georeferencing checked; a failure names the file (the
    scene is reported under its files' common prefix)."""
    try:
        src = open_raster(path)
    except SceneError as e:
        raise SceneError(f"band file {Path(path).name}: {e}", file_at_fault=e.file_at_fault) from None
    with src:
        try:
            check_georef(src)
        except SceneError as e:
            raise SceneError(f"band file {Path(path).name}: {e}") from None
        yield src


def check_georef(src: rasterio.DatasetReader) -> None:
    """Raise :class:`SceneError` unless ``src`` has a CRS and a north-up, axis-aligned geotransform."""
    if src.crs is None:
        raise SceneError("no CRS: the file is not georeferenced")
    if (why := _crs_problem(src.crs.to_wkt())) is not None:
        raise SceneError(why)
    t = src.transform
    if t == Affine.identity():
        raise SceneError("no geotransform: the file is not georeferenced")
    # tiling reads axis-aligned windows of a north-up grid: anything else would be cut in the wrong places
    if t.b != 0 or t.d != 0:
        raise SceneError(f"rotated or sheared geotransform (row/column rotation terms {t.b:g}, {t.d:g}): warp it to a "
                         "north-up grid first, e.g. gdalwarp")
    if t.e > 0:
        raise SceneError("south-up geotransform (positive pixel height): flip it to north-up first, e.g. gdalwarp")
    if t.a < 0:
        raise SceneError("mirrored geotransform (negative pixel width): flip it to west-to-east columns first, "
                         "e.g. gdalwarp")
    if (why := _footprint_problem(src.crs.to_wkt(), tuple(src.bounds), (abs(t.a), abs(t.e)))) is not None:
        raise SceneError(why)


#: how far east or west of its central meridian a Transverse Mercator CRS holds the ground: PROJ's implementation
#: has "full accuracy within 3900 km of the central meridian"; a UTM zone's files lie within a few hundred km of it
_TM_REACH_M = 3_900_000.0

_WRONG_GEOREF = "the georeferencing is wrong (a shifted origin, swapped axes, or another CRS's coordinates)"


@functools.lru_cache(maxsize=256)
def _footprint_problem(wkt: str, bounds: tuple[float, float, float, float],
                       px: tuple[float, float]) -> str | None:
    """Why a file's extent (``bounds``: left, bottom, right, top in its CRS; ``px`` its pixel width and height) has
    no sense on the Earth, in one line; ``None`` when it has. Kept per CRS and extent: a product's band files of one
    resolution share them.

    The footprint was wrapped or clamped onto the globe and the file catalogued where it is not: longitudes of 370
    degrees (as 10), an easting of 5,000,000 m in a UTM zone (4,500 km from its central meridian, placed in Iran
    for zone 32), a northing past the pole (over it, on the other side of the Earth); latitudes past a pole and
    points outside a projection's domain stopped with a traceback. A pixel of slack is allowed at the limits: a
    global grid whose pixel centres lie on the poles or on both 0 and 360 degrees runs half a pixel past them.
    """
    crs = rasterio.crs.CRS.from_wkt(wkt)
    name = wkt.split('"')[1] if wkt.count('"') >= 2 else wkt[:60]
    left, bottom, right, top = bounds
    if crs.is_geographic:
        k = math.degrees(crs.units_factor[1])  # the CRS's angular unit in degrees (1 but for grads and the like)
        w, s, e, n, pw, ph = left * k, bottom * k, right * k, top * k, px[0] * k, px[1] * k
        if s < -90 - ph or n > 90 + ph:
            return f"its latitudes run {s:g} to {n:g} degrees, past a pole (the Earth's run -90 to 90): {_WRONG_GEOREF}"
        if w > 360 + pw or e < -180 - pw:
            # written -180..180 or 0..360, a file across where they wrap runs on past 180 or 360 (170..190,
            # 359..361), or starts before -180 (-185..-175); none starts past 360 or ends before -180
            where = "beginning past 360" if w > 360 + pw else "ending before -180"
            return (f"its longitudes run {w:g} to {e:g} degrees, {where} (longitudes are written -180..180 or "
                    f"0..360, a file across the line where they wrap running on past it): {_WRONG_GEOREF}")
        if e - w > 360 + pw:
            return f"it is {e - w:g} degrees of longitude wide, more than the Earth's 360: {_WRONG_GEOREF}"
        return None
    k = 21  # points per edge, as the footprint is densified
    xs = np.concatenate([np.linspace(left, right, k), np.full(k, right), np.linspace(left, right, k), np.full(k, left)])
    ys = np.concatenate([np.full(k, top), np.linspace(bottom, top, k), np.full(k, bottom), np.linspace(bottom, top, k)])
    lon, lat = transformer(wkt, "EPSG:4326").transform(xs, ys, errcheck=False)
    bad = ~(np.isfinite(lon) & np.isfinite(lat))
    if bad.any():
        i = int(np.argmax(bad))
        return (f"its point ({xs[i]:,.0f}, {ys[i]:,.0f}) has no place on the Earth in its CRS {name!r} (outside the "
                f"projection's domain): {_WRONG_GEOREF}")
    tm = _tm_frame(wkt)
    if tm is not None:
        false_easting, unit, lon0, south_pole, north_pole = tm
        far_m = max(abs(left - false_easting), abs(right - false_easting)) * unit
        if far_m > _TM_REACH_M:
            return (f"its eastings run {left:,.0f} to {right:,.0f}, {far_m / 1000:,.0f} km from "
                    f"the central meridian ({lon0:g} degrees) of its Transverse Mercator CRS {name!r}, which holds "
                    f"the Earth only within {_TM_REACH_M / 1000:,.0f} km of it: {_WRONG_GEOREF}")
        if top > north_pole + px[1] or bottom < south_pole - px[1]:
            pole, at = ("north", north_pole) if top > north_pole + px[1] else ("south", south_pole)
            return (f"its northings run {bottom:,.0f} to {top:,.0f}, past the {pole} pole (at {at:,.0f} in its CRS "
                    f"{name!r}): {_WRONG_GEOREF}")
    return None


@functools.lru_cache(maxsize=64)
def _tm_frame(wkt: str) -> tuple[float, float, float, float, float] | None:
    """For a Transverse Mercator CRS (UTM, national grids): its false easting (in its units), the metres of its unit,
    its central meridian in degrees and the northings of the south and north poles; ``None`` for other CRSs."""
    crs = pyproj.CRS.from_wkt(wkt)
    op = crs.coordinate_operation
    if op is None or op.method_name != "Transverse Mercator":
        return None
    params = {p.name: p for p in op.params}
    unit = crs.axis_info[0].unit_conversion_factor if crs.axis_info else 1.0  # metres per unit of the CRS
    fe, lon0 = params.get("False easting"), params.get("Longitude of natural origin")
    if fe is None or lon0 is None or not unit:
        return None
    lon0_deg = math.degrees(lon0.value * lon0.unit_conversion_factor)
    forward = transformer("EPSG:4326", wkt)
    (_, north), (_, south) = (forward.transform(lon0_deg, lat, errcheck=False) for lat in (90.0, -90.0))
    if not (math.isfinite(north) and math.isfinite(south)):
        return None
    return fe.value * fe.unit_conversion_factor / unit, unit, lon0_deg, south, north


@functools.lru_cache(maxsize=64)
def _crs_problem(wkt: str) -> str | None:
    """Why a CRS (as WKT) cannot place a file on the Earth's grid, in one line; ``None`` when it can.

    A local (engineering) or geocentric CRS and one of another body (Mars, the Moon) have no use on the grid: a
    file's footprint and cells are found through WGS 84, and such a file stopped with a traceback of rasterio's
    CRSError or of PROJ's error, holding the whole PROJJSON of the CRS. Kept per CRS: every band file is checked.
    """
    crs = rasterio.crs.CRS.from_wkt(wkt)
    name = wkt.split('"')[1] if wkt.count('"') >= 2 else wkt[:60]
    if not (crs.is_geographic or crs.is_projected):
        return (f"its CRS {name!r} is neither geographic nor projected (a local, engineering or geocentric CRS), "
                "so its pixels have no place on the grid: georeference it in a geographic or projected CRS first, "
                "e.g. gdalwarp -t_srs")
    try:
        transformer(wkt, "EPSG:4326")  # (the one the footprint check then uses, cached)
    except (pyproj.exceptions.ProjError, pyproj.exceptions.CRSError) as e:
        m = re.search(r"proj_create_operations: ([^.]*)", str(e))
        detail = m.group(1) if m else str(e).split("\n")[0][:120]
        return (f"its CRS {name!r} cannot be transformed to WGS 84 (EPSG:4326): {detail}; the grid's cells are on "
                "the Earth")
    return None


_TIME_TAGS = ("ACQUISITION_DATETIME", "ACQUISITION_DATE", "DATE_ACQUIRED", "SENSING_TIME", "datetime")
_NAME_TIME = re.compile(r"(?<![0-9])(\d{8}T\d{6})")
_NAME_DATE = re.compile(r"(?<![0-9])((?:19|20)\d{2})(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])(?![0-9T])")


def parse_time(text: str) -> datetime | None:
    """Parse an ISO-8601 / ``YYYYMMDDTHHMMSS`` / ``YYYY:MM:DD HH:MM:SS`` string to an aware UTC datetime."""
    text = text.strip()
    for fmt in ("%Y%m%dT%H%M%S", "%Y:%m:%d %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d"):
        try:
            return datetime.strptime(text.rstrip("Z"), fmt).replace(tzinfo=timezone.utc)
        except ValueError:
            continue
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)


def acquisition_time(source: SceneSource, tags: dict[str, str]) -> datetime | None:
    """The acquisition time from, in order: STAC ``datetime``, raster tags, the scene's sidecar JSON (a time field,
    or the date in an ESA ``PRODUCT_ID``), the file name, a sidecar's Earth Engine ``system:time_start``.

    A STAC item whose ``datetime`` is null describes a time range instead (``start_datetime`` and
    ``end_datetime``, STAC 1.0 common metadata); its ``start_datetime`` is taken as the acquisition time.

    Returns ``None`` when none of them says (EuroSAT chips, rasterio's test scene): unknown, not an error.
    """
    if source.stac:
        for key in ("datetime", "start_datetime"):
            if source.stac.get(key) and (t := parse_time(str(source.stac[key]))):
                return t
    for k in _TIME_TAGS:
        if tags.get(k):
            t = parse_time(tags[k])
            if t:
                return t
    first = Path(next(iter(source.files.values())))
    docs = list(_sidecars(source))  # read once for both passes
    for doc in docs:
        for k in ("acquisition_date", "acquisition_time", "datetime", "DATE_ACQUIRED"):
            if isinstance(doc.get(k), str) and (t := parse_time(doc[k])):
                return t
        if name := product_name(str(doc.get("PRODUCT_ID", ""))):  # the datatake's start, as in ESA's names
            return parse_time(name.split("_")[2])
    names = [first.name, first.parent.name, first.parent.parent.name]
    for n in names:
        if m := _NAME_TIME.search(n):
            return parse_time(m.group(1))
    for n in names:
        if m := _NAME_DATE.search(n):
            return datetime(int(m.group(1)), int(m.group(2)), int(m.group(3)), tzinfo=timezone.utc)
    for doc in docs:  # Earth Engine's system:time_start, in milliseconds since 1970: its granule's time
        ms = doc.get("system:time_start")
        if isinstance(ms, (int, float)) and not isinstance(ms, bool):
            return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return None


def _sidecars(source: SceneSource) -> Iterator[dict]:
    """The JSON objects beside the scene's first file that describe it: those whose name begins with the scene's
    (``<stem>.json`` beside a stacked file, BigEarthNet's ``<patch>_labels_metadata.json`` beside its band files),
    in name order; else the folder's only JSON file (an Earth Engine export's ``metadata.json``). Another scene's
    sidecar in the same folder is never read: one named after another raster of the folder (``field_north.json``
    beside ``field_north.tif`` is not ``field.tif``'s, though its name begins with ``field_``).

    Raises:
        SceneError: a sidecar named after the scene cannot be read or is not valid JSON: what it says (the date, the
            Sentinel-2 baseline or the provider's offset flag) would be missing from the scene's reading. A folder's
            only JSON file that is not named after the scene is skipped then (it may be anything).
    """
    paths, mine = _sidecar_paths(source)
    for side in paths:
        try:
            doc = _read_sidecar(str(side))
        except OSError as e:
            if mine:
                raise SceneError(f"cannot read its sidecar {side}: {e.strerror or e}", file_at_fault=False) from None
            continue
        except ValueError as e:
            if mine:
                raise SceneError(f"its sidecar {side} is not valid JSON: {json_error(e)}; it may say the scene's date "
                                 "or baseline: mend or move it", file_at_fault=False) from None
            continue
        if isinstance(doc, dict) and doc.get("type") == "Image" and isinstance(doc.get("properties"), dict):
            # Earth Engine's ``json.dump(image.getInfo())``: the image's properties, its id the collection's path
            yield {**doc["properties"], "system:id": doc.get("id", doc["properties"].get("system:id", ""))}
        elif isinstance(doc, dict):
            yield doc


def _sidecar_paths(source: SceneSource) -> tuple[list[Path], bool]:
    """The JSON files :func:`_sidecars` reads for ``source``, in name order, and whether they are named after the
    scene (else: the folder's only JSON file, or none).

    Looked up among the folder's sorted names by the scene's name (a bisection), not by a pass over them: asked of
    every scene of every run (:func:`metadata_files`), a pass cost a flat folder of 20,000 scenes, each with its
    ``<stem>.json``, 20,000 comparisons a scene.
    """
    first = Path(next(iter(source.files.values())))
    own = first.stem if source.stacked else "" if source.key.endswith(os.sep) else Path(source.key).name.rstrip("*")
    jsons, rasters = _folder_names(str(first.parent))
    if not jsons:
        return [], False
    own_stems = {Path(f).stem for f in source.files.values()}
    mine = []  # (the stems of the folder's other rasters are tested one by one: a set of them cost a pass a scene)
    if own:  # the scene's name, then the end of a name or a separator: export_1's is export_1.json, not export_10's
        at = bisect.bisect_left(jsons, own)
        while at < len(jsons) and jsons[at].startswith(own):
            n = jsons[at]
            if n[len(own):][:1] in (".", "_", "-") and (n[:-len(".json")] not in rasters
                                                        or n[:-len(".json")] in own_stems):
                mine.append(first.parent / n)
            at += 1
    if mine:
        return mine, True
    # the folder's only JSON file not named after another raster: those named after none (counted once a listing)
    # and those named after one of the scene's own files
    free = _free_jsons(jsons, rasters)
    if len(free) > 1:
        return [], False
    named = [f"{stem}.json" for stem in own_stems if _sorted_contains(jsons, f"{stem}.json")]
    found = sorted(set(free) | set(named))
    return ([first.parent / n for n in found] if len(found) == 1 else []), False


#: a folder listing's JSON names that are named after none of its rasters, by the listing (_free_jsons)
_FREE_JSONS: dict[int, tuple[tuple[str, ...], tuple[str, ...]]] = {}


def _free_jsons(jsons: tuple[str, ...], rasters: frozenset[str]) -> tuple[str, ...]:
    """The names of ``jsons`` (a :func:`_folder_names` listing) whose stem is none of ``rasters``: computed once for
    a listing (kept by its identity), not once for each of the folder's scenes."""
    got = _FREE_JSONS.get(id(jsons))
    if got is None or got[0] is not jsons:
        if len(_FREE_JSONS) >= 64:
            _FREE_JSONS.clear()
        got = _FREE_JSONS[id(jsons)] = (jsons, tuple(n for n in jsons if n[:-len(".json")] not in rasters))
    return got[1]


def _sorted_contains(names: tuple[str, ...], name: str) -> bool:
    at = bisect.bisect_left(names, name)
    return at < len(names) and names[at] == name


def metadata_files(source: SceneSource) -> list[str]:
    """The files besides its rasters that say what a scene is: its STAC item, and the sidecar JSON files it is read
    with (:func:`_sidecars`: its date, the Sentinel-2 baseline, the provider's offset flag). Ingest stamps them, so an
    edited item or sidecar (a corrected date, a baseline) is read again, as a changed raster is."""
    out = [source.key] if source.stac is not None else []
    return sorted(set(out) | {str(p) for p in _sidecar_paths(source)[0]})


def _read_sidecar(path: str) -> object:
    """The JSON in ``path``, parsed once for the several questions asked of a scene's sidecar (date, baseline,
    offset flag): kept while the file's size, modification and status-change times and identity stay the same,
    except in the two seconds after a change (as :func:`_folder_names`). Text that is not UTF-8 is read as Latin-1.

    Raises:
        OSError: it cannot be read. ValueError: it is not JSON.
    """
    return _kept(_parse_json, path, os.stat(path))


@functools.lru_cache(maxsize=64)
def _parse_json(path: str, stamp: tuple[int, ...]) -> object:
    """:func:`_read_sidecar` of ``path`` as it is at ``stamp`` (kept by that key; the caller must not change it)."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        return json.loads(raw)
    except UnicodeDecodeError:  # a tool writing its platform's 8-bit encoding (an accented place name)
        return json.loads(raw.decode("latin-1"))


def _folder_names(folder: str) -> tuple[tuple[str, ...], frozenset[str]]:
    """The names ending in ``.json`` in ``folder``, sorted, and the stems of its rasters (their names without the
    suffix); none where it cannot be listed.

    A scene's metadata is looked for in its folder several times (date, baseline, the provider's offset flag), and a
    flat folder of 20,000 scenes took 11 ms to list each time: so a listing is kept while the folder's modification
    and status-change times and identity say nothing was added, removed or made readable, except in the two seconds
    after a change (a coarse clock could not tell a later change within them)."""
    try:
        return _kept(_list_folder, folder, os.stat(folder))
    except OSError:
        return (), frozenset()


_T = TypeVar("_T")


def _kept(cached: Callable[[str, tuple[int, ...]], _T], path: str, st: os.stat_result) -> _T:
    """``cached(path, stamp)``, an ``lru_cache`` function of a file or folder, keyed by its modification and
    status-change times, size and identity (``stamp``); called afresh in the two seconds after a change, which a
    coarse clock could not tell from a later one."""
    stamp = (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino, st.st_dev)
    if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) < 2_000_000_000:
        return cached.__wrapped__(path, stamp)
    return cached(path, stamp)


@functools.lru_cache(maxsize=64)
def _list_folder(folder: str, stamp: tuple[int, ...]) -> tuple[tuple[str, ...], frozenset[str]]:
    """:func:`_folder_names` of ``folder`` as it is at ``stamp`` (kept by that key)."""
    try:
        with os.scandir(folder) as entries:
            names = [e.name for e in entries]
    except OSError:
        return (), frozenset()
    stems = frozenset(n.rsplit(".", 1)[0] for n in names if os.path.splitext(n)[1].lower() in RASTER_SUFFIXES)
    return tuple(sorted(n for n in names if n.endswith(".json"))), stems


#: an ESA Sentinel-2 product name and its processing baseline: ``S2B_MSIL2A_20230101T101321_N0509_R022_...``
_S2_PRODUCT = re.compile(r"S2[A-D]_MSIL(?:1C|2A)_\d{8}T\d{6}_N(\d{4})(?![0-9])")
#: per-band metadata items of GDAL's SENTINEL2 driver that hold the offset itself (-1000, or 0 before 04.00)
_OFFSET_TAGS = ("BOA_ADD_OFFSET", "RADIO_ADD_OFFSET")
#: the tags that can decide the offset (:func:`_with_baseline`)
_BASELINE_TAGS = {*_OFFSET_TAGS, "PROCESSING_BASELINE"}


def product_name(text: str) -> str | None:
    """The last ESA Sentinel-2 product name (up to its baseline, ``S2B_MSIL2A_<time>_N0509``) in ``text``."""
    found = list(_S2_PRODUCT.finditer(text))
    return found[-1].group(0) if found else None


def offset_removed(source: SceneSource) -> bool:
    """Whether the scene's provider says it has already removed the DN offset of baselines 04.00 and later: Earth
    Search's ``earthsearch:boa_offset_applied`` (``sentinel:boa_offset_applied`` in its v0 items) true, or a sidecar
    of an Earth Engine ``*_HARMONIZED`` collection (its ``system:id``)."""
    stac = source.stac or {}
    if stac.get("earthsearch:boa_offset_applied") is True or stac.get("sentinel:boa_offset_applied") is True:
        return True
    return any("_HARMONIZED" in str(doc.get("system:id", "")) for doc in _sidecars(source))


def processing_baseline(source: SceneSource, tags: dict[str, str]) -> str | None:
    """The Sentinel-2 processing baseline of a scene's product (``"05.09"``), or ``None`` where nothing says.

    Read, in order:

    * the raster tags: ``PROCESSING_BASELINE`` (GDAL's SENTINEL2 driver, and files converted from it);
    * the STAC item: ``s2:processing_baseline`` (``sentinel:processing_baseline`` in Earth Search v0), else the
      product name in ``s2:product_uri``, ``sentinel:product_id`` or its ``id``;
    * the product name (``S2B_MSIL2A_<time>_N0509_...``) in a file's name or a parent folder's, the nearest first;
    * the scene's sidecar JSON (:func:`_sidecars`): ``PROCESSING_BASELINE``, else the product name in
      ``PRODUCT_ID`` (Earth Engine exports).

    ``N9999`` names no baseline (:func:`~rsretrieve.sensors.parse_baseline`).
    """
    stac = source.stac or {}
    for text in (tags.get("PROCESSING_BASELINE"), stac.get("s2:processing_baseline"),
                 stac.get("sentinel:processing_baseline")):
        if text is not None and (b := parse_baseline(text)) is not None:
            return b
    for text in (stac.get("s2:product_uri"), stac.get("sentinel:product_id"), stac.get("id"),
                 *sorted(source.files.values())):
        if isinstance(text, str) and (name := product_name(text)):
            return parse_baseline(name[-5:])
    for doc in _sidecars(source):
        if (b := parse_baseline(doc.get("PROCESSING_BASELINE", ""))) is not None:
            return b
        if name := product_name(str(doc.get("PRODUCT_ID", ""))):
            return parse_baseline(name[-5:])
    return None


def _with_baseline(spec: SensorSpec, layout_name: str, source: SceneSource, tags: dict[str, str]) -> str:
    """``layout_name``, plus the suffix of the spec's :class:`~rsretrieve.sensors.BaselineOffset` (``+N0400``)
    where the scene's DN carry the offset: a ``BOA_ADD_OFFSET`` / ``RADIO_ADD_OFFSET`` tag that is not 0 says so
    directly; else the product's processing baseline (:func:`processing_baseline`), unless the provider says it
    removed the offset (:func:`offset_removed`)."""
    bo = spec.baseline_offset
    if bo is None:
        return layout_name
    for key in _OFFSET_TAGS:
        if key in tags:
            try:
                return layout_name + bo.suffix if float(tags[key]) != 0 else layout_name
            except ValueError:
                break
    if offset_removed(source):
        return layout_name
    baseline = processing_baseline(source, tags)
    return layout_name + bo.suffix if baseline is not None and bo.applies(baseline) else layout_name


def _one_band_file(path: str) -> str:
    """The hint for a one-band file named after a band (``.../VV.tif``, ``..._B04.tif``): neither ``--sensor`` nor
    any other flag makes one band of a product a scene; its band files together do. ``""`` for other names."""
    split = split_band_token(Path(path).stem, band_tokens(), resolution_suffix=in_l2a_granule(Path(path)))
    if split is None:
        return ""
    return (f"; it looks like band {split[1]} of a product delivered as one file per band: ingest its folder, or "
            f"all its band files together, and they make one scene")


def _identify_stacked(src: rasterio.DatasetReader, path: str, override: str | None,
                      stac: dict | None) -> tuple[SensorSpec, str]:
    """(spec, layout name) of a stacked file, from override, tag, STAC platform, band count + dtype, file name."""
    count, dtype = src.count, src.dtypes[0]
    if override:
        spec = get_sensor(override)
        fits = [n for n, lay in spec.layouts.items() if len(lay.bands) == count]
        if not fits:
            counts = ", ".join(f"{n}: {len(lay.bands)}" for n, lay in spec.layouts.items())
            raise SceneError(f"has {count} bands but sensor {override!r} files have {counts}"
                             + (_one_band_file(path) if count == 1 else ""))
        exact = [n for n in fits if spec.layouts[n].dtype == dtype]
        return spec, (exact or fits)[0]
    tag = src.tags().get("RSRETRIEVE_SENSOR")
    if tag:
        try:
            spec = get_sensor(tag)
        except KeyError as e:
            raise SceneError(f"tag RSRETRIEVE_SENSOR names {e.args[0]}") from None
        return _identify_stacked(src, path, spec.name, None)
    # the path and the STAC item's properties are matched apart: joined, a pattern anchored at the end of the path
    # (``RGB\.byte\.tif$``) never matched, and one could match across the two
    texts = [path] + ([json.dumps(stac)] if stac else [])

    def named(spec: SensorSpec) -> bool:
        return any(spec.matches_name(t) for t in texts)

    fits = [(get_sensor(n), ln) for n in list_sensors() for ln, lay in get_sensor(n).layouts.items()
            if len(lay.bands) == count]
    # a sensor's alternative layout (Landsat 7's 3-band 8-bit rgb_byte) is taken only for a file named like the
    # sensor: by band count and type alone every 8-bit RGB file (Sentinel-2's TCI, an orthophoto) would be one
    cands = [c for c in fits if c[1] == "full" or named(c[0])]
    if not cands:
        known = ", ".join(f"{n} {len(get_sensor(n).bands)}" for n in list_sensors())
        hint = (count == 1 and _one_band_file(path)) or "; pass --sensor if it is one"
        alt = "; ".join(f"{spec.name}'s {ln} layout has {count} bands, but is taken only for a file named like "
                        f"{spec.name} or with --sensor {spec.name}" for spec, ln in fits)
        raise SceneError(f"{count} band(s) of {dtype} fit no registered sensor ({known}){hint}"
                         + (f" ({alt})" if alt else ""))
    if len(cands) > 1:
        by_dtype = [c for c in cands if c[0].layouts[c[1]].dtype == dtype]
        cands = by_dtype or cands
    if len(cands) > 1:
        by_name = [c for c in cands if named(c[0])]
        cands = by_name or cands
    if len(cands) > 1:
        names = ", ".join(sorted({c[0].name for c in cands}))
        raise SceneError(f"{count} band(s) of {dtype} could be any of {names}; pass --sensor to choose")
    return cands[0]


def _identify_per_band(tokens: list[str], path: str, override: str | None) -> tuple[SensorSpec, dict[str, str]]:
    """(spec, token -> band name) of a per-band product: the sensor whose full band set the tokens spell."""
    names = [override] if override else list_sensors()
    fits = []
    for n in names:
        spec = get_sensor(n)
        mapping = {}
        for t in tokens:
            try:
                mapping[t] = spec.band(t).name
            except KeyError:
                break
        else:
            if sorted(mapping.values()) == sorted(spec.band_names):
                fits.append((spec, mapping))
    if len(fits) > 1:
        fits = [f for f in fits if f[0].matches_name(path)] or fits
    if not fits:
        have = ", ".join(tokens)
        if override:
            raise SceneError(f"band files {have} are not the bands of sensor {override!r} "
                             f"({', '.join(get_sensor(override).band_names)})")
        lacking = []  # the sensors whose band set holds every file's band, and what they lack
        for n in list_sensors():
            spec = get_sensor(n)
            try:
                got = {spec.band(t).name for t in tokens}
            except KeyError:
                continue
            lacking.append(f"{n} lacks {', '.join(b for b in spec.band_names if b not in got)}")
        raise SceneError(f"band files {have} do not make a complete product of any registered sensor"
                         + (f" ({'; '.join(lacking)})" if lacking else ""))
    if len(fits) > 1:
        raise SceneError(f"band files could be any of {', '.join(f[0].name for f in fits)}; pass --sensor")
    return fits[0]


def open_scene(source: SceneSource, sensor: str | None = None, check_bands: bool = False,
               check_dtype: bool = False) -> OpenedScene:
    """Open a scene's files, identify its sensor and reference grid.

    Args:
        check_bands: also read the last block of every band of every file (:func:`check_bands_readable`), as
            ingest does, so a truncated file is refused before it is catalogued.
        check_dtype: refuse files whose data type cannot hold the sensor's values (:func:`dtype_problem`), as
            ingest does.

    Raises:
        SceneError: unreadable, not georeferenced, not recognisable as a registered sensor, or (``check_dtype``)
            of a data type that cannot be the sensor's.
    """
    if source.stacked:
        path = source.files["*"]
        with open_raster(path) as src:
            check_georef(src)
            spec, lname = _identify_stacked(src, path, sensor, source.stac)
            tags = src.tags()
            lname = _with_baseline(spec, lname, source, {**src.tags(1), **tags})
            layout = spec.layout(lname)
            band_files = {b: (path, i + 1) for i, b in enumerate(spec.band(x).name for x in layout.bands)}
            if check_dtype:
                for found in dict.fromkeys(src.dtypes):  # one type per GeoTIFF; a VRT may mix them
                    if (why := dtype_problem(found, spec, lname)) is not None:
                        raise SceneError(why)
            if check_bands:  # the file is named where it is not the scene's key (a STAC item's asset)
                check_bands_readable(src, [i for _, i in band_files.values()], named=path != source.key)
            nodata = src.nodata if src.nodata is not None else layout.nodata
            return OpenedScene(source, spec, layout, lname, band_files, src.crs, src.transform, src.width,
                               src.height, nodata, acquisition_time(source, tags))
    spec, mapping = _identify_per_band(list(source.files), source.key, sensor)
    ref = None
    tags: dict[str, str] = {}  # the files' dataset and band tags
    dtypes: dict[str, str] = {}
    named = _with_baseline(spec, "full", source, {})  # from names, STAC and sidecars: the files' tags may add to it
    for tok, path in source.files.items():
        with _band_file(path) as src:
            if src.count != 1:
                raise SceneError(f"band file {Path(path).name} has {src.count} bands, expected 1")
            dtypes[path] = src.dtypes[0]
            own = {**src.tags(1), **src.tags()}
            if check_dtype:
                says = _with_baseline(spec, "full", source, own) if own.keys() & _BASELINE_TAGS else named
                _check_band_dtype(path, src.dtypes[0], spec, says)
            if check_bands:
                check_bands_readable(src, [1])
            res = abs(src.transform.a)
            if ref is not None and src.crs != ref[0]:
                raise SceneError(f"band files disagree on the CRS ({Path(path).name}: {src.crs}, other: {ref[0]})")
            if ref is None or res < ref[1]:
                ref = (src.crs, res, src.transform, src.width, src.height, src.nodata)
            tags.update(own)
    crs, _, transform, width, height, nodata = ref
    # the names, STAC and sidecars decided already (``named``), unless a file's tags say more
    lname = _with_baseline(spec, "full", source, tags) if tags.keys() & _BASELINE_TAGS else named
    if check_dtype and lname != named:  # a tag decided otherwise: the types again, against the encoding it says
        for path, found in dtypes.items():
            _check_band_dtype(path, found, spec, lname)
    layout = spec.layout(lname)
    band_files = {mapping[t]: (p, 1) for t, p in source.files.items()}
    band_files = {b: band_files[b] for b in spec.band_names}
    return OpenedScene(source, spec, layout, lname, band_files, crs, transform, width, height,
                       nodata if nodata is not None else layout.nodata, acquisition_time(source, tags))


def _check_band_dtype(path: str, found: str, spec: SensorSpec, layout_name: str) -> None:
    """Raise :class:`SceneError` naming the band file ``path`` when its type ``found`` cannot be the sensor's
    (:func:`dtype_problem`)."""
    if (why := dtype_problem(found, spec, layout_name)) is not None:
        raise SceneError(f"band file {Path(path).name}: {why}")


def check_bands_readable(src: rasterio.DatasetReader, indexes: list[int], named: bool = True) -> None:
    """Read the last block of each of the bands ``indexes`` of an open file, to refuse a truncated or corrupt one.

    Ingest itself reads only the finest valid band and the cloud-test bands; without this check a damaged other band
    would be catalogued and fail only when its tiles are read. The last block is where a truncated file has lost
    its data (GDAL writes a file's blocks in order); one block per band keeps the check cheap.

    Args:
        named: start the message with the file's name; not where the file is the scene itself (its path is the
            scene's key, which the rejection line names already).

    Raises:
        SceneError: naming the file (``named``) and the first band that cannot be read.
    """
    name = f"{Path(src.name).name}: " if named else ""
    indexes = sorted(set(indexes))
    try:
        _read_last_blocks(src, indexes)
    except RasterioError:
        for i in indexes:  # find the first band that fails, for the message
            try:
                _read_last_blocks(src, [i])
            except RasterioError as e:
                cause = str(e.__cause__ or e).split("\n")[0].split(": ")[-1]  # GDAL's own words, without the path
                raise SceneError(f"{name}truncated or unreadable (band {i}): {cause}") from None
        raise SceneError(f"{name}truncated or unreadable (band {indexes[0]})") from None


def _read_last_blocks(src: rasterio.DatasetReader, indexes: list[int]) -> None:
    """Read the last internal block of the given bands; bands with the same block shape in one call."""
    by_shape: dict[tuple[int, int], list[int]] = {}
    for i in indexes:
        by_shape.setdefault(tuple(src.block_shapes[i - 1]), []).append(i)
    for (bh, bw), idx in by_shape.items():
        row, col = (src.height - 1) // bh, (src.width - 1) // bw
        win = Window(col * bw, row * bh, min(bw, src.width - col * bw), min(bh, src.height - row * bh))
        src.read(idx, window=win)


# -- data types ---------------------------------------------------------------------------------------------------
#: the physical values a sensor's DN must be able to encode, by its units: what an integer type must hold
_PHYSICAL_RANGE = {"reflectance": (0.0, 1.0), "sigma0_db": (-50.0, 20.0), "sigma0_linear": (0.0, 1.0)}
_UNITS_WORDS = {"reflectance": "reflectance", "sigma0_db": "sigma0 in dB", "sigma0_linear": "linear sigma0",
                "digital_number": "digital numbers"}


def dn_range(spec: SensorSpec, layout_name: str = "full") -> tuple[int, int]:
    """The DN an integer file of the sensor must hold: its units' physical range (reflectance 0..1, ...) through
    ``DN = (physical - offset) / scale``, within the layout's own type (Sentinel-2: 0..10000; Landsat C2 L2:
    7272..43637; an 8-bit display layout: 0..255). The layout's whole type range for units without a range."""
    return _dn_needed(spec, layout_name)[:2]


def _dn_needed(spec: SensorSpec, layout_name: str) -> tuple[int, int, bool]:
    """(lo, hi, stretched) of :func:`dn_range`; ``stretched``: the layout's type cannot hold the units' range, so its
    scale is a stretch onto that type (an 8-bit display composite), and no other type is encoded the same way."""
    layout = spec.layout(layout_name)
    tmin, tmax = _type_range(np.dtype(layout.dtype))
    if spec.units not in _PHYSICAL_RANGE:
        return tmin, tmax, False
    a, b = ((p - layout.offset) / layout.scale for p in _PHYSICAL_RANGE[spec.units])
    lo, hi = math.floor(round(min(a, b), 6)), math.ceil(round(max(a, b), 6))
    return max(lo, tmin), min(hi, tmax), lo < tmin or hi > tmax


def dtype_problem(found: str, spec: SensorSpec, layout_name: str = "full") -> str | None:
    """Why pixels of type ``found`` cannot be the values of ``spec``'s files of layout ``layout_name``; ``None``
    when they can.

    Pixels become model input as ``(DN * scale + offset - mean) / std`` with the layout's scale and offset and the
    bands' statistics in physical units (:func:`rsretrieve.data.tiles.normalise`), whatever the file's type. So:

    * the layout's own type is accepted;
    * for a sensor delivered as integer DN (Sentinel-2 and Landsat uint16, EnMAP int16), another integer type is
      accepted when it holds the DN of the units' physical range (:func:`dn_range`): the same numbers in another
      container (int16 or int32 Sentinel-2, uint16 EnMAP); a narrower one (uint8 for Sentinel-2, int16 for
      Landsat C2, whose reflectance above 0.70 is DN above 32767) cannot hold them and is refused. A layout whose
      own type cannot hold that range (Landsat-7 ``rgb_byte``: reflectance 0..1 would be DN 0..638 in a uint8) is a
      stretch onto its type: only that type is accepted (a 3-band uint16 file is not such a composite);
    * for such a sensor a float file is refused: float pixels are physical values (reflectance 0..1) far more often
      than DN, and read as DN they are wrong by the scale (1e-4 for Sentinel-2) with nothing to show it;
    * for a sensor delivered as physical floats (Sentinel-1 sigma0 in dB), any float width is accepted (the same
      values at another precision) and an integer file is refused (raw amplitude DN, or dB scaled into integers);
    * complex pixels (single-look complex SAR) are refused for every sensor.

    The message names the type found, the one expected and what to do, in one line.
    """
    layout = spec.layout(layout_name)
    want = np.dtype(layout.dtype)
    base, _, baseline = layout_name.partition("+")
    what = spec.name if base == "full" else f"{spec.name} {base}"
    if baseline:
        what += f" (processing baseline {parse_baseline(baseline)} and later)"
    units = _UNITS_WORDS.get(spec.units, spec.units)
    try:
        got = np.dtype(found)
    except TypeError:  # GDAL types numpy has no name for (rasterio's "complex_int16": SLC SAR)
        if "complex" in str(found):
            return _complex_problem(str(found), what, want, units)
        return f"{found} pixels, but {what} files hold {want.name} {units}; convert it to {want.name}"
    if got == want:
        return None
    if want.kind in "iu":
        held = f"{want.name} DN ({units} = DN * {layout.scale:g}{_signed(layout.offset)})"
        if got.kind in "iu":
            lo, hi, stretched = _dn_needed(spec, layout_name)
            if stretched:
                return (f"{got.name} pixels, but {what} files hold {held}, a stretch onto the whole {want.name} range "
                        f"that no other type is read with: a {got.name} file is not such a product (ingest the "
                        f"{want.name} one as delivered)")
            info = np.iinfo(got)
            if info.min <= lo and info.max >= hi:
                return None
            phys = _PHYSICAL_RANGE.get(spec.units)
            span = f" ({units} {phys[0]:g}..{phys[1]:g})" if phys else ""
            return (f"{got.name} pixels, but {what} files hold {held}, and {got.name} cannot hold DN {lo}..{hi}{span}: "
                    f"its values were rescaled or clipped; ingest the {want.name} product as delivered")
        if got.kind == "f":
            return (f"{got.name} pixels, but {what} files hold {held}: float values such as {units} would be read "
                    f"as DN; write the file as {want.name} DN = {_to_dn(units, layout)} (or cast it to {want.name} "
                    f"if it holds DN already)")
    if want.kind == "f":
        if got.kind == "f":
            return None
        if got.kind in "iu":
            return (f"{got.name} pixels, but {what} files hold {want.name} {units}: integer pixels are raw DN or "
                    f"scaled values, not {units}; convert it to {want.name} {units}"
                    + (" (10 * log10 of calibrated linear sigma0)" if spec.units == "sigma0_db" else ""))
    if got.kind == "c":
        return _complex_problem(got.name, what, want, units)
    return f"{got.name} pixels, but {what} files hold {want.name} {units}; convert it to {want.name}"


def _complex_problem(found: str, what: str, want: np.dtype, units: str) -> str:
    return (f"{found} pixels (a single-look complex product?), but {what} files hold {want.name} {units}; "
            f"make the {want.name} {units} product from it first")


def _type_range(t: np.dtype) -> tuple[int, int]:
    info = np.iinfo(t)
    return int(info.min), int(info.max)


def _signed(x: float) -> str:
    return "" if x == 0 else f" {'+' if x > 0 else '-'} {abs(x):g}"


def _to_dn(units: str, layout: Layout) -> str:
    """``round(reflectance / 0.0001)``, ``round((reflectance + 0.2) / 2.75e-05)``: physical -> DN, for messages."""
    x = units if layout.offset == 0 else f"({units}{_signed(-layout.offset)})"
    return f"round({x} / {layout.scale:g})"


def nodata_value(nodata: float | None) -> float | None:
    """``nodata`` as a value pixels are compared with: None when there is none or it is NaN (NaN pixels are found
    by ``np.isfinite``)."""
    return None if nodata is None or (isinstance(nodata, float) and math.isnan(nodata)) else nodata


def valid_pixels(x: np.ndarray, nodata: float | None) -> np.ndarray:
    """Boolean mask of the pixels of ``x`` (as stored) that hold data: finite, and not ``nodata``."""
    ok = np.isfinite(x) if x.dtype.kind in "fc" else np.ones(x.shape, bool)
    if (nd := nodata_value(nodata)) is not None:
        ok &= x != nd
    return ok


def clip_window(window: tuple[int, int, int, int], width: int, height: int) -> tuple[int, int, int, int] | None:
    """Pixel window ``(col, row, width, height)`` clipped to a ``width`` x ``height`` raster, as
    ``(col0, row0, col1, row1)`` (ends excluded); None when they do not overlap."""
    c0, r0, w, h = window
    c0, c1 = max(c0, 0), min(c0 + w, width)
    r0, r1 = max(r0, 0), min(r0 + h, height)
    return (c0, r0, c1, r1) if c1 > c0 and r1 > r0 else None


def to_physical(dn: np.ndarray, layout: Layout) -> np.ndarray:
    """DN -> physical units (reflectance, dB) as float32."""
    return (dn.astype(np.float32) * np.float32(layout.scale) + np.float32(layout.offset)).astype(np.float32)
