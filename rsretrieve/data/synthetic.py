"""Synthetic co-registered archive: one site per scene, imaged by several sensors, with land-cover truth.

Each site is a square of ``size_m`` metres in a UTM zone (sites spread over both hemispheres; with 8 or more scenes
site ``RSR007`` straddles the antimeridian in zone 60N). A site has a 10 m land-cover map (smoothed random fields,
rectangular crop parcels, urban blocks and streets, rivers, lakes, wetland fringes) and per-pixel texture; every
sensor renders that same ground on its own grid, on its own date:

* optical and hyperspectral: class spectra from :mod:`rsretrieve.data._spectra` integrated over each band's Gaussian
  response, area-mixed to the sensor's pixel size, times an illumination gain plus haze, optional clouds, noise;
* SAR: per-class sigma0 in dB, gamma speckle (L = 4.4) in linear power, a mild incidence-angle trend.

Layout of ``OUT`` (``<t>`` the acquisition time ``YYYYMMDDTHHMMSS`` in UTC, ``RSRnnn`` the site)::

    sentinel1/S1A_IW_GRDH_1SDV_<t>_RSRnnn.tif                  VV, VH sigma0 dB, float32, nodata nan, 10 m
    sentinel2/S2B_MSIL2A_<t>_RSRnnn.tif                        12 bands, reflectance x 1e4, uint16, nodata 0, 10 m
    enmap/ENMAP01-____L2A-DT0000000nnn_<t>Z_001_V010110_<processed>Z-RSRnnn-SPECTRAL_IMAGE.TIF
                                                               224 bands, reflectance x 1e4, int16, nodata -32768, 30 m
    landsat8/LC08_L2SP_<path><row>_<YYYYMMDD>_<processed>_02_T1_RSRnnn.tif   7 bands, (refl + 0.2) / 2.75e-5, uint16
    truth/RSRnnn_landcover.tif                                 class index (:data:`CLASSES`), uint8, nodata 255, 10 m
    archive.json                                               the summary returned by :func:`make_archive`

Other registered sensors follow their spec in the same way (``landsat7`` as ``LE07_L2SP_...``, ``sentinel2_l1c`` as
``S2B_MSIL1C_...`` with top-of-atmosphere effects). Files are tiled (256 px, or one tile rounded up to a multiple of
16 px), deflate-compressed GeoTIFFs with band descriptions and the tags ``RSRETRIEVE_SENSOR``,
``ACQUISITION_DATETIME`` (ISO 8601 UTC) and ``TIFFTAG_DATETIME``. Everything derives from ``seed``: the same seed
gives byte-identical files.
"""

from __future__ import annotations

import json
import logging
import math
import os
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path

import numpy as np
import rasterio
from pyproj import Transformer
from rasterio.crs import CRS
from rasterio.transform import Affine

from rsretrieve.data import _spectra as sp
from rsretrieve.sensors import SensorSpec, get_sensor, list_sensors

log = logging.getLogger(__name__)

#: land-cover class names, index = value in the truth rasters
CLASSES: tuple[str, ...] = sp.CLASSES
WATER, FOREST, GRASS, CROP, URBAN, BARE, WETLAND = range(len(CLASSES))
#: sigma0 in dB (co-pol VV/HH, cross-pol VH/HV) and the dB spread of the texture, per class
_SAR_DB = np.array([(-20, -27, 1.0), (-8, -14, 1.0), (-12, -19, 1.5), (-11, -17, 2.0), (1, -6, 3.0),
                    (-14, -22, 1.5), (-10, -17, 2.0)], dtype=np.float32)
#: display colours (RGB) of the classes, written as the palette of the truth rasters
_COLOURS = [(30, 90, 200), (20, 110, 40), (140, 200, 90), (230, 200, 60), (200, 40, 40), (170, 130, 90),
            (60, 170, 170)]
#: (UTM zone, southern hemisphere, central latitude): agricultural / mixed regions of several continents
_SITE_POOL = [(31, False, 46.5), (33, False, 50.0), (43, False, 21.0), (18, True, -12.0), (55, True, -36.5),
              (23, True, -21.0), (10, False, 38.5), (35, True, -27.0), (50, False, 30.5), (37, False, 1.0),
              (14, False, 40.0), (21, True, -31.0), (36, False, 52.0), (48, False, 16.0), (30, False, 40.0)]
#: index of the site that straddles the antimeridian (exists when there are at least 8 scenes)
ANTIMERIDIAN_SITE = 7
#: local solar time (hours) of the descending overpass of optical sensors, by name prefix; 10.5 for others
_LOCAL_HOUR = {"sentinel2": 10.5, "landsat": 10.2, "enmap": 11.0}
#: keys of the independent random streams: SeedSequence(seed, spawn_key=(scene, stream, ...))
_GROUND, _PLACE, _DATES, _RENDER = 1, 2, 3, 4


@dataclass(frozen=True)
class _Site:
    """Where scene ``index`` lies: a square of ``size`` metres, top-left corner (west, north), in one UTM zone."""

    index: int
    zone: int
    south: bool
    west: float  # UTM metres, multiple of 30
    north: float
    size: float
    lon: float  # centre, degrees
    lat: float
    crosses_antimeridian: bool

    @property
    def name(self) -> str:
        return f"RSR{self.index:03d}"

    @property
    def epsg(self) -> int:
        return (32700 if self.south else 32600) + self.zone


@dataclass(frozen=True)
class _Ground:
    """A site's surface on the 10 m grid, shared by every sensor that images it."""

    lc: np.ndarray  # (n, n) uint8 class index at 10 m
    coef: np.ndarray  # (2C, n, n) float32 end-member coefficients (see _spectra.class_endmembers)
    tvar: np.ndarray  # (n, n) float32 within-class state in [-1.5, 1.5]
    cond: sp.SiteConditions


def make_archive(out: str | Path, scenes: int, sensors: Sequence[str] = ("sentinel1", "sentinel2", "enmap"),
                 seed: int = 0, size_m: float = 4800.0, clouds: bool = True) -> dict:
    """Write a synthetic co-registered multi-sensor archive with land-cover truth.

    Args:
        out: output directory; created if missing. An existing one must be empty, or hold an archive made with the
            same arguments (it is then written again, identically).
        scenes: number of sites (one scene per sensor each), >= 1.
        sensors: registered sensor names (or one comma-separated string).
        seed: non-negative integer; the same seed gives byte-identical files.
        size_m: side of every scene in metres, a positive multiple of 30 (4800 m: 480 px at 10 m, 160 px at 30 m).
        clouds: whether optical and hyperspectral scenes get clouds (0-30 % cover, some scenes clear).

    Returns:
        JSON-able summary, also written to ``OUT/archive.json``: ``seed``, ``size_m``, ``sensors``, ``classes``,
        ``clouds`` and ``scenes``, a list of ``{"site", "epsg", "utm_zone", "bounds" [W, S, E, N] in UTM metres,
        "center_lonlat", "crosses_antimeridian", "files" {sensor: relpath}, "acquired" {sensor: ISO 8601 UTC},
        "cloud_fraction" {optical sensor: fraction}, "landcover": relpath, "class_fractions" {class: fraction}}``.

    Raises:
        ValueError: unknown or duplicate sensor, scenes < 1, bad seed, size_m not a positive multiple of 30 (or not
            a multiple of a sensor's pixel size), ``out`` a file or a non-empty directory holding anything else.
    """
    specs = _check_args(scenes, sensors, seed, size_m)
    scenes, seed, out = int(scenes), int(seed), Path(out)
    header = {"seed": seed, "size_m": float(size_m), "sensors": [s.name for s in specs], "classes": list(CLASSES),
              "clouds": bool(clouds)}
    _check_out(out, header, scenes)
    for sub in [*(s.name for s in specs), "truth"]:
        (out / sub).mkdir(parents=True, exist_ok=True)
    responses = {s.name: sp.response_matrix(np.array([b.center_nm for b in s.bands]),
                                            np.array([b.fwhm_nm for b in s.bands]))
                 for s in specs if s.family != "sar"}
    order = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_PLACE,))).permutation(len(_SITE_POOL))

    def one(i: int) -> dict:
        return _make_scene(out, i, specs, responses, seed, float(size_m), clouds, order)

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        rows = list(pool.map(one, range(scenes)))
    summary = {**header, "scenes": rows}
    (out / "archive.json").write_text(json.dumps(summary, indent=1) + "\n")
    log.info("wrote %d scenes x %d sensors to %s", scenes, len(specs), out)
    return summary


def _check_args(scenes: int, sensors: Sequence[str] | str, seed: int, size_m: float) -> list[SensorSpec]:
    if isinstance(scenes, bool) or not isinstance(scenes, (int, np.integer)) or scenes < 1:
        raise ValueError(f"scenes must be an integer >= 1, got {scenes!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    ok = (isinstance(size_m, (int, float, np.number)) and not isinstance(size_m, bool) and math.isfinite(size_m)
          and size_m > 0 and abs(size_m / 30 - round(size_m / 30)) < 1e-9)
    if not ok:
        raise ValueError(f"size_m must be a positive multiple of 30 m, got {size_m!r}")
    names = [s.strip() for s in sensors.split(",")] if isinstance(sensors, str) else list(sensors)
    if not names:
        raise ValueError("no sensors given")
    specs = []
    for name in names:
        try:
            spec = get_sensor(name)
        except KeyError:
            raise ValueError(f"unknown sensor {name!r}; known sensors: {', '.join(list_sensors())}") from None
        if name in (s.name for s in specs):
            raise ValueError(f"sensor {name!r} is listed twice")
        if spec.gsd % 10 or round(size_m) % spec.gsd:
            raise ValueError(f"sensor {name!r} has {spec.gsd:g} m pixels; the generator needs pixel sizes that are "
                             f"multiples of 10 m and divide size_m ({size_m:g} m)")
        specs.append(spec)
    return specs


def _check_out(out: Path, header: dict, scenes: int) -> None:
    """Accept a new or empty directory, or one holding an archive made with the same arguments (rewritten as is)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ValueError(f"output {out} exists and is not a directory")
    if not any(out.iterdir()):
        return
    try:
        previous = json.loads((out / "archive.json").read_text())
        same = {k: previous[k] for k in header} == header and len(previous["scenes"]) == scenes
    except (OSError, ValueError, KeyError, TypeError):
        same = False
    if not same:
        raise ValueError(f"output {out} is not empty and holds no synthetic archive made with the same arguments; "
                         "give a new or empty directory")


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _sensor_key(name: str) -> int:
    return zlib.crc32(name.encode())


def _make_scene(out: Path, i: int, specs: list[SensorSpec], responses: dict[str, np.ndarray], seed: int,
                size: float, clouds: bool, order: np.ndarray) -> dict:
    site = _place_site(_rng(seed, i, _PLACE), i, size, order)
    n = round(size / 10)
    ground = _ground(_rng(seed, i, _GROUND), n)
    truth = Path("truth") / f"{site.name}_landcover.tif"
    _write(out / truth, ground.lc[None], site, 10.0, 255, ["landcover"],
           {"RSRETRIEVE_ROLE": "landcover", "RSRETRIEVE_CLASSES": ",".join(CLASSES), "RSRETRIEVE_SITE": site.name,
            "RSRETRIEVE_LABEL_SCHEME": "synthetic"})
    counts = np.bincount(ground.lc.ravel(), minlength=len(CLASSES)) / ground.lc.size
    times = _acquisitions(seed, site, specs)
    row = {"site": site.name, "epsg": site.epsg, "utm_zone": f"{site.zone}{'S' if site.south else 'N'}",
           "bounds": [site.west, site.north - size, site.west + size, site.north],
           "center_lonlat": [round(site.lon, 6), round(site.lat, 6)],
           "crosses_antimeridian": site.crosses_antimeridian,
           "files": {}, "acquired": {}, "cloud_fraction": {}, "landcover": truth.as_posix(),
           "class_fractions": {c: round(float(f), 6) for c, f in zip(CLASSES, counts)}}
    for spec in specs:
        when = times[spec.name]
        rng = _rng(seed, i, _RENDER, _sensor_key(spec.name))
        f = round(spec.gsd / 10)
        tags = {"RSRETRIEVE_SENSOR": spec.name, "RSRETRIEVE_SITE": site.name,
                "ACQUISITION_DATETIME": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "TIFFTAG_DATETIME": when.strftime("%Y:%m:%d %H:%M:%S")}
        if spec.family == "sar":
            data = _render_sar(spec, ground, rng, f)
        else:
            data, cover = _render_optical(spec, ground, responses[spec.name], rng, f, clouds)
            row["cloud_fraction"][spec.name] = cover
            tags["RSRETRIEVE_CLOUD_FRACTION"] = f"{cover:.4f}"
        rel = Path(spec.name) / _file_name(spec, site, when, rng)
        _write(out / rel, data, site, spec.gsd, spec.nodata, list(spec.band_names), tags, spec)
        row["files"][spec.name] = rel.as_posix()
        row["acquired"][spec.name] = tags["ACQUISITION_DATETIME"]
    log.debug("site %s: %s, classes %s", site.name, site.epsg, row["class_fractions"])
    return row


# -- placement and dates ----------------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def _transformer(epsg: int, inverse: bool) -> Transformer:
    a, b = (f"EPSG:{epsg}", "EPSG:4326") if inverse else ("EPSG:4326", f"EPSG:{epsg}")
    return Transformer.from_crs(a, b, always_xy=True)


def _snap(x: float) -> float:
    return 30.0 * math.floor(x / 30.0)


def _easting_of_180(northing: float) -> float:
    """Easting in zone 60N where the 180-degree meridian crosses ``northing`` (bisection, metres)."""
    inv = _transformer(32660, True)
    lo, hi = 500_000.0, 1_000_000.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lon = inv.transform(mid, northing)[0] % 360
        lo, hi = (mid, hi) if lon < 180 else (lo, mid)
    return (lo + hi) / 2


def _place_site(rng: np.random.Generator, i: int, size: float, order: np.ndarray) -> _Site:
    if i == ANTIMERIDIAN_SITE:
        zone, south = 60, False
        north = _snap(_transformer(32660, False).transform(177.0, rng.uniform(65.2, 65.8))[1] + size / 2)
        x_top, x_bottom = _easting_of_180(north), _easting_of_180(north - size)
        lo, hi = min(x_top, x_bottom), max(x_top, x_bottom)
        cands = np.arange(math.ceil((hi - size) / 30 + 1e-9) * 30, _snap(lo - 1e-6) + 1, 30.0)
        if len(cands):
            west = float(rng.choice(cands[len(cands) // 4: len(cands) - len(cands) // 4] if len(cands) > 3 else cands))
        else:  # a scene narrower than the drift of the meridian over its height cannot straddle it everywhere
            west = _snap(lo - size / 2)
            log.warning("site %d: %g m is too small to straddle the antimeridian along both edges", i, size)
    else:
        zone, south, lat0 = _SITE_POOL[int(order[i % len(_SITE_POOL)])]
        y = _transformer((32700 if south else 32600) + zone, False).transform(-183.0 + 6 * zone,
                                                                              lat0 + rng.uniform(-1, 1))[1]
        north = _snap(y + (i // len(_SITE_POOL)) * max(3 * size, 20_000.0))  # sites sharing a zone step north
        west = _snap(rng.uniform(300_000, max(300_000, 700_000 - size)))
    inv = _transformer((32700 if south else 32600) + zone, True)
    lon, lat = inv.transform(west + size / 2, north - size / 2)
    # crossing: going east along the top and bottom edges, the longitude wraps from +180 to -180
    wraps = [inv.transform(west, y)[0] > 0 > inv.transform(west + size, y)[0] for y in (north, north - size)]
    return _Site(i, zone, south, west, north, size, lon, lat, all(wraps))


def _acquisitions(seed: int, site: _Site, specs: list[SensorSpec]) -> dict[str, datetime]:
    """UTC acquisition times: a site date in the growing season, each sensor within 3 weeks of it on its own day,
    at the sensor's local solar overpass time (SAR dawn or dusk)."""
    rng = _rng(seed, site.index, _DATES)
    doy = int(rng.integers(120, 261)) + (182 if site.south else 0)
    base = datetime(int(rng.integers(2019, 2024)), 1, 1, tzinfo=UTC) + timedelta(days=doy)
    used: set[int] = set()
    times = {}
    for spec in sorted(specs, key=lambda s: s.name):
        r = _rng(seed, site.index, _DATES, _sensor_key(spec.name))
        offset = int(r.integers(-21, 22))
        while offset in used:
            offset += 1
        used.add(offset)
        if spec.family == "sar":
            hour = float(r.choice([6.0, 18.0])) + r.uniform(-0.3, 0.3)
        else:
            key = next((k for k in _LOCAL_HOUR if spec.name.startswith(k)), None)
            hour = _LOCAL_HOUR.get(key, 10.5) + r.uniform(-0.25, 0.25)
        times[spec.name] = (base + timedelta(days=offset, hours=hour - site.lon / 15)).replace(microsecond=0)
    return times


def _file_name(spec: SensorSpec, site: _Site, when: datetime, rng: np.random.Generator) -> str:
    t, s = when.strftime("%Y%m%dT%H%M%S"), site.name
    processed = when + timedelta(days=int(rng.integers(14, 60)), seconds=int(rng.integers(0, 86_400)))
    if spec.name == "sentinel1":
        return f"S1A_IW_GRDH_1SDV_{t}_{s}.tif"
    if spec.name.startswith("sentinel2"):
        return f"S2B_MSI{spec.product}_{t}_{s}.tif"
    if spec.name == "enmap":
        p = processed.strftime("%Y%m%dT%H%M%S")
        return f"ENMAP01-____L2A-DT{site.index:010d}_{t}Z_001_V010110_{p}Z-{s}-SPECTRAL_IMAGE.TIF"
    if spec.name in ("landsat8", "landsat7"):
        path = int(((-site.lon - 64.6) % 360) / (360 / 233)) % 233 + 1  # WRS-2, approximate
        row = int(np.clip(round(60 - site.lat / 1.37), 1, 122))
        mission = "LC08" if spec.name == "landsat8" else "LE07"
        return f"{mission}_L2SP_{path:03d}{row:03d}_{when:%Y%m%d}_{processed:%Y%m%d}_02_T1_{s}.tif"
    return f"{spec.name.upper()}_{spec.product or 'SCENE'}_{t}_{s}.tif"


# -- ground: land cover and texture -----------------------------------------------------------------------------
def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of the last two axes by FFT (periodic: callers pad), sigma in pixels."""
    h, w = x.shape[-2:]
    k2 = np.fft.fftfreq(h)[:, None] ** 2 + np.fft.rfftfreq(w)[None, :] ** 2
    kernel = np.exp(-2 * (np.pi * sigma) ** 2 * k2).astype(np.float32)
    return np.fft.irfft2(np.fft.rfft2(x) * kernel, s=(h, w))


def _fft_len(k: int) -> int:
    while True:  # next 5-smooth length: fast FFTs
        r = k
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        if r == 1:
            return k
        k += 1


def _fields(rng: np.random.Generator, count: int, n: int, sigma: float) -> np.ndarray:
    """(count, n, n) float32 Gaussian random fields, zero mean and unit std, correlation ~sigma px.

    A field is cut from a grid padded by 2 sigma per side (opposite edges independent, no wrap-around); smooth
    fields are drawn on a grid d = sigma // 4 times coarser and interpolated bilinearly.
    """
    d = max(1, int(sigma // 4))
    nc = -(-n // d) + (d > 1)
    pad = math.ceil(2 * sigma / d)
    m = _fft_len(nc + 2 * pad)
    f = _blur(rng.standard_normal((count, m, m), dtype=np.float32), sigma / d)[:, pad:pad + nc, pad:pad + nc]
    if d > 1:  # fine pixel j lies at coarse coordinate j / d
        pos = np.arange(n) / d
        i0, w = np.floor(pos).astype(int), (pos % 1).astype(np.float32)
        f = f[:, i0] * (1 - w)[:, None] + f[:, i0 + 1] * w[:, None]  # (count, n, nc)
        f = f[:, :, i0] * (1 - w) + f[:, :, i0 + 1] * w  # (count, n, n)
    f = f - f.mean(axis=(1, 2), keepdims=True)
    return f / (f.std(axis=(1, 2), keepdims=True) + 1e-12)


def _parcels(rng: np.random.Generator, n: int, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """A rotated grid of rectangles lo-hi px wide: (ids (n, n) int64, distance to the nearest edge (n, n) px)."""
    theta = rng.uniform(0, np.pi / 2)
    y, x = np.mgrid[0:n, 0:n].astype(np.float32) - n / 2
    half = 0.75 * n + hi
    ids, dist = np.zeros((n, n), np.int64), np.full((n, n), np.inf, np.float32)
    for coord in (x * np.cos(theta) + y * np.sin(theta), -x * np.sin(theta) + y * np.cos(theta)):
        widths = rng.uniform(lo, hi, int(2 * half / lo) + 3)
        edges = -half - rng.uniform(0, hi) + np.concatenate([[0], np.cumsum(widths)])
        k = np.searchsorted(edges, coord, side="right")
        dist = np.minimum(dist, np.minimum(coord - edges[k - 1], edges[k] - coord))
        ids = ids * len(edges) + k
    return ids, dist


def _river(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, n) bool: a meandering river 20-70 m wide crossing the scene."""
    x = np.arange(n, dtype=np.float64)
    yc = rng.uniform(0.2, 0.8) * n
    for _ in range(2):  # two meander wavelengths of 0.6-2 scene widths
        amplitude, wavelength = rng.uniform(0.03, 0.12) * n, rng.uniform(0.6, 2.0) * n
        yc = yc + amplitude * np.sin(2 * np.pi * x / wavelength + rng.uniform(0, 2 * np.pi))
    slope = np.gradient(yc)
    mask = np.abs(x[:, None] - yc[None, :]) / np.sqrt(1 + slope[None, :] ** 2) < rng.uniform(1.0, 3.5)
    return mask.T if rng.random() < 0.5 else mask


def _classes(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """One draw of a land-cover map (n, n) uint8 and within-class state (n, n) float32 in [-1.5, 1.5]."""
    sigma = min(rng.uniform(25, 70), n / 4)  # 250-700 m patches
    weights = rng.dirichlet([1.5, 1.5, 1.5, 0.7, 0.8, 0.4])
    score = _fields(rng, 6, n, sigma) + 0.3 * _fields(rng, 6, n, max(sigma / 8, 1.0))
    land = np.array([FOREST, GRASS, CROP, URBAN, BARE, WETLAND], np.uint8)
    lc = land[np.argmax(score + np.log(weights)[:, None, None], axis=0)]
    tvar = 0.5 * _fields(rng, 1, n, rng.uniform(6, 15))[0] + 0.15 * _fields(rng, 1, n, 1.5)[0]
    pid, _ = _parcels(rng, n, 8, 30)  # crop parcels 80-300 m: one crop state each, some fallow
    crop = lc == CROP
    tvar[crop] = rng.uniform(-1, 1, pid.max() + 1)[pid[crop]] + 0.1 * tvar[crop]
    lc[crop & (rng.random(pid.max() + 1) < 0.12)[pid]] = BARE
    bid, edge = _parcels(rng, n, 6, 14)  # urban blocks 60-140 m with streets
    town = lc == URBAN
    tvar[town] = np.where(edge[town] < rng.uniform(0.7, 1.5), -1.3, rng.uniform(-1, 1, bid.max() + 1)[bid[town]])
    water = np.zeros((n, n), bool)
    if rng.random() < 0.6:
        lake = _fields(rng, 1, n, min(rng.uniform(10, 35), n / 4))[0]
        water |= lake > np.quantile(lake, 1 - rng.uniform(0.03, 0.12))
    if rng.random() < 0.6:
        water |= _river(rng, n)
    lc[water] = WATER
    if water.any() and rng.random() < 0.7:
        near = _blur(np.pad(water.astype(np.float32), 9), 3.0)[9:-9, 9:-9] > 0.08
        lc[near & ~water & (_fields(rng, 1, n, 4)[0] > -0.3)] = WETLAND
    return lc, np.clip(tvar, -1.5, 1.5).astype(np.float32)


def _ground(rng: np.random.Generator, n: int) -> _Ground:
    """A site's surface at 10 m: land cover with at least 3 classes over 1 % each (when n allows), texture."""
    for _ in range(10):
        lc, tvar = _classes(rng, n)
        if (np.bincount(lc.ravel(), minlength=len(CLASSES)) >= max(1.0, 0.01 * n * n)).sum() >= 3:
            break
    bright = 1 + 0.035 * (_fields(rng, 1, n, 1.2)[0] + _fields(rng, 1, n, 5.0)[0])
    onehot = lc[None] == np.arange(len(CLASSES), dtype=np.uint8)[:, None, None]
    coef = np.concatenate([onehot * bright, onehot * tvar]).astype(np.float32)
    return _Ground(lc, coef, tvar, sp.SiteConditions.draw(rng))


# -- rendering --------------------------------------------------------------------------------------------------
def _block_mean(x: np.ndarray, f: int) -> np.ndarray:
    """Mean over f x f blocks of the last two axes: (..., H, W) -> (..., ceil(H/f), ceil(W/f)), edges repeated."""
    if f == 1:
        return x
    h, w = x.shape[-2:]
    x = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(0, -h % f), (0, -w % f)], mode="edge")
    return x.reshape(*x.shape[:-2], x.shape[-2] // f, f, x.shape[-1] // f, f).mean(axis=(-3, -1))


def _render_optical(spec: SensorSpec, ground: _Ground, resp: np.ndarray, rng: np.random.Generator, f: int,
                    clouds: bool) -> tuple[np.ndarray, float]:
    """Encoded bands (B, m, m) of spec.dtype and the cloud fraction (share of pixels at least half cloud)."""
    wl = sp.GRID_NM
    ends = sp.class_endmembers(wl, ground.cond)  # (2C, G)
    extra = sp.haze(wl, rng.uniform(0.0, 0.012))
    if spec.product.upper().startswith("L1"):
        trans, path = sp.top_of_atmosphere(wl)
        ends, extra = ends * trans, extra + path
    coef = _block_mean(ground.coef, f)  # linear area mixing of the 10 m pixels, (2C, m, m)
    m = coef.shape[-1]
    refl = (ends @ resp.T).T.astype(np.float32) @ coef.reshape(len(ends), -1)  # (B, m*m), reflectance
    refl *= rng.uniform(0.95, 1.05)  # illumination
    refl += (extra @ resp.T).astype(np.float32)[:, None]
    cover = 0.0
    if clouds and rng.random() > 0.35:
        cover = rng.uniform(0.02, 0.30)
        sigma = min(rng.uniform(300, 900) / spec.gsd, m / 3)
        field = (0.8 * _fields(rng, 1, m, sigma)[0] + 0.35 * _fields(rng, 1, m, max(sigma / 5, 1.0))[0]).ravel()
        alpha = np.clip((field - np.quantile(field, 1 - cover)) / 0.5 + 0.5, 0, 1)  # opacity, soft edges
        cover = float(np.mean(alpha >= 0.5))
        tex = 1 + 0.08 * _fields(rng, 1, m, 2.0)[0].ravel()
        body = (sp.cloud(wl, rng.uniform(0.4, 0.8)) @ resp.T).astype(np.float32)
        refl *= 1 - alpha
        refl += body[:, None] * (alpha * tex)
    centers = np.array([b.center_nm for b in spec.bands])
    sigma_noise = np.full(len(centers), 0.003) if spec.family == "optical" else np.where(centers > 1000, 0.006, 0.004)
    noise = rng.standard_normal(refl.shape, dtype=np.float32)
    noise *= sigma_noise.astype(np.float32)[:, None]
    refl += noise
    refl = refl.reshape(-1, m, m)
    for b, band in enumerate(spec.bands):  # bands coarser than the file grid (S2 20 m / 60 m) are resampled
        r = round(band.gsd_m / spec.gsd)
        if r > 1:
            refl[b] = np.repeat(np.repeat(_block_mean(refl[b], r), r, 0), r, 1)[:m, :m]
    dn = refl
    dn -= spec.offset
    dn *= 1 / spec.scale
    if np.dtype(spec.dtype).kind in "iu":
        info = np.iinfo(spec.dtype)
        lo, hi = info.min + (spec.nodata == info.min), info.max - (spec.nodata == info.max)
        np.clip(np.rint(dn, out=dn), lo, hi, out=dn)
    dn = dn.astype(spec.dtype)
    if spec.nodata is not None:
        dn[~np.array(spec.valid_mask)] = spec.nodata
    return dn, round(cover, 4)


def _render_sar(spec: SensorSpec, ground: _Ground, rng: np.random.Generator, f: int) -> np.ndarray:
    """sigma0 in dB (B, m, m) float32: class backscatter + texture, gamma speckle L=4.4, incidence trend."""
    moist = 8.0 * ground.cond.moisture * np.isin(np.arange(len(CLASSES)), [GRASS, CROP, BARE])
    out = []
    for band in spec.bands:
        table = _SAR_DB[:, 0 if band.polarization in ("VV", "HH") else 1] + moist
        db = table[ground.lc] + _SAR_DB[ground.lc, 2] * ground.tvar
        lin = _block_mean(10 ** (db / 10), f)
        lin = lin * rng.gamma(4.4, 1 / 4.4, lin.shape)
        out.append(10 * np.log10(lin))
    m = out[0].shape[-1]
    trend = rng.uniform(0.5, 1.5) * rng.choice([-1.0, 1.0]) * (np.arange(m) / max(m - 1, 1) - 0.5)
    return (np.stack(out) + trend[None, None, :]).astype(np.float32)


def _write(path: Path, data: np.ndarray, site: _Site, gsd: float, nodata: float | None, names: list[str],
           tags: dict[str, str], spec: SensorSpec | None = None) -> None:
    """A tiled, deflate-compressed GeoTIFF of ``data`` (B, H, W) on the site's UTM grid at ``gsd`` metres."""
    count, h, w = data.shape
    block = 256 if min(h, w) >= 256 else -(-min(h, w) // 16) * 16
    profile = {"driver": "GTiff", "width": w, "height": h, "count": count, "dtype": data.dtype.name,
               "crs": CRS.from_epsg(site.epsg), "transform": Affine(gsd, 0.0, site.west, 0.0, -gsd, site.north),
               "nodata": nodata, "tiled": True, "blockxsize": block, "blockysize": block, "compress": "deflate",
               "predictor": 3 if data.dtype.kind == "f" else 2, "interleave": "band"}
    with rasterio.open(path, "w", **profile) as dst:
        if spec is None:  # the land-cover truth: a palette image
            dst.write_colormap(1, {k: (*c, 255) for k, c in enumerate(_COLOURS)})
        dst.write(data)
        dst.update_tags(**tags)
        for b, name in enumerate(names, 1):
            dst.set_band_description(b, name)
        if spec is None:
            return
        dst.scales, dst.offsets = [spec.scale] * count, [spec.offset] * count
        for b, band in enumerate(spec.bands, 1):
            if band.center_nm is not None:
                dst.update_tags(b, ns="IMAGERY", CENTRAL_WAVELENGTH_UM=f"{band.center_nm / 1000:.5f}",
                                FWHM_UM=f"{(band.fwhm_nm or 0) / 1000:.5f}")
