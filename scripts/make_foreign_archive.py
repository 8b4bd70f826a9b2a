"""A multi-sensor archive rsretrieve did not make: co-registered UTM GeoTIFFs per sensor, as a user would have them.

    python scripts/make_foreign_archive.py --out DIR [--sites 100] [--seed 0] [--size-m 4800] [--workers 2]
                                           [--s1-nodata nan|-9999] [--no-truth]

Standalone: imports numpy, rasterio and pyproj only (never rsretrieve), and shares no code or model with
``rsretrieve/data/synthetic.py``. Files carry standard GeoTIFF metadata only (CRS, transform, nodata, band
descriptions, TIFFTAG_DATETIME = processing time, TIFFTAG_SOFTWARE): the sensor and acquisition time are to be told
from the file itself (band count, dtype, product file name), as for a real archive.

Layout of ``OUT`` (``<t>`` = acquisition start ``YYYYMMDDTHHMMSS`` UTC)::

    S1/S1A_IW_GRDH_1SDV_<t>_<stop>_<orbit>_<datatake>_<crc>_Orb_Cal_TC_dB.tif
          2 bands Sigma0_VV_db, Sigma0_VH_db, float32, nodata nan (or -9999), 10 m (SNAP terrain-corrected export)
    S2/S2[AB]_MSIL2A_<t>_N05xx_R<orbit>_T<MGRS tile>_<processed>.tif
          12 bands B01..B12 without B10, BOA reflectance x 1e4 + 1000 (BOA_ADD_OFFSET -1000, as in products
          of processing baseline 04.00 and later; DN 1 at reflectance -0.1 and below), uint16, nodata 0,
          10 m (20/60 m bands resampled bilinearly), pixel-interleaved (gdal_merge / GDAL default)
    EnMAP/ENMAP01-____L2A-DT<datatake>_<t>Z_<tile>_V01xxxx_<processed>Z-SPECTRAL_IMAGE.TIF
          224 bands, reflectance x 1e4, int16, nodata -32768, 30 m, band-sequential; the water-vapour bands
          (1290-1525 nm, 1735-1975 nm) are nodata throughout
    EnMAP/ENMAP01-...-QL_QUALITY_CLOUD.TIF   uint8 0 clear / 1 cloud, same grid (as in the L2A product)
    landcover/siteNNN_landcover.tif          class index (see CLASSES), uint8, nodata 255, 10 m (unless --no-truth)
    manifest.json                            per site: EPSG, files, acquisition times, class fractions

Ground model (its own, per site; a site is ``size_m`` square in one UTM zone, sites in 12 zones, both hemispheres):

* terrain: fractal value noise (lattice noise, quintic fade, 4 octaves), 0-120 m relief;
* land cover (8 classes): domain-warped Voronoi zones of 1-1.7 km (cellular noise on a jittered lattice), each an
  agricultural, forest, pasture, settlement or shrubland zone; inside them Voronoi fields of 120-300 m (crops,
  woodlots, hedgerows on field edges), 70-100 m settlement blocks with streets on the block edges, forest stands;
  rivers on the zero contour of a noise field (constant width via the gradient), lakes in terrain hollows;
* per-field state: crop vigour with its own growth rate (and sometimes a harvest) so a field differs between the
  sensors' dates, soil roughness, irrigation; a soil-moisture field (noise + fields + a per-date wetness) seen by
  both the optical sensors (soil darkening) and the SAR (dielectric term);
* optical and hyperspectral: per-pixel abundances of 10 end-members (green leaves, needles, dry vegetation, dry and
  wet soil, clear and turbid water, concrete, roof tiles, shade) whose spectra are piecewise-linear curves with
  Gaussian absorption bands defined here, evaluated at the real band centres (S2A or S2B, EnMAP); hill shading
  from the sun position of each acquisition; residual haze; clouds with their shadows (S2 often, EnMAP rarely);
  EnMAP pixels are 3 x 3 area means with a PSF, with push-broom column striping and a wavelength-dependent SNR;
* SAR: per-class sigma0 (VV, VH) with vigour, moisture, roughness and double-bounce (settlement block orientation
  against the orbit heading) terms, class-dependent incidence-angle slope over the scene's incidence and local
  incidence from the terrain (ascending looks east, descending west), noise floor, gamma speckle with 3-5.5 looks;
* dates: each sensor on its own day within a few weeks of the site's date, at its local overpass time;
* footprints: each sensor covers its own part of the site (70-100 % of each side, often all of it), EnMAP grids are
  offset from the 10 m grid, and some scenes have a slanted swath-edge nodata wedge.

Everything derives from ``--seed``: the same seed gives byte-identical files.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import rasterio
from pyproj import Transformer
from rasterio.crs import CRS
from rasterio.transform import Affine

#: land-cover classes, index = value in the truth rasters
CLASSES = ("open_water", "broadleaf_forest", "needleleaf_forest", "green_cropland", "bare_cropland", "grassland",
           "built_up", "sparse_shrubland")
WATER, BROAD, NEEDLE, GCROP, BCROP, GRASS, BUILT, SHRUB = range(len(CLASSES))
_PALETTE = [(40, 80, 190), (30, 120, 40), (10, 70, 50), (150, 210, 60), (190, 150, 100), (120, 190, 120),
            (210, 50, 50), (200, 190, 120)]

#: Sentinel-2 L2A stack (B10 is not in L2A): band, centre wavelength (nm) of S2A and S2B, native pixel size (m)
S2_BANDS = (("B01", 442.7, 442.3, 60), ("B02", 492.7, 492.3, 10), ("B03", 559.8, 558.9, 10),
            ("B04", 664.6, 664.9, 10), ("B05", 704.1, 703.8, 20), ("B06", 740.5, 739.1, 20),
            ("B07", 782.8, 779.7, 20), ("B08", 832.8, 832.9, 10), ("B8A", 864.7, 864.0, 20),
            ("B09", 945.1, 943.2, 60), ("B11", 1613.7, 1610.4, 20), ("B12", 2202.4, 2185.7, 20))
#: EnMAP HSI band centres (nm): 91 VNIR bands then 133 SWIR bands (the two detectors overlap near 900-1000 nm)
ENMAP_NM = np.array("""
418.42 424.04 429.46 434.69 439.76 444.70 449.54 454.31 459.03 463.73 468.41 473.08 477.74 482.41 487.09 491.78
496.50 501.24 506.02 510.83 515.67 520.55 525.47 530.42 535.42 540.46 545.55 550.69 555.87 561.11 566.41 571.76
577.17 582.64 588.17 593.77 599.45 605.19 611.02 616.92 622.92 628.99 635.11 641.29 647.54 653.84 660.21 666.64
673.13 679.69 686.32 693.01 699.78 706.62 713.52 720.50 727.54 734.65 741.83 749.06 756.35 763.70 771.11 778.57
786.08 793.64 801.25 808.90 816.61 824.35 832.14 839.98 847.85 855.76 863.70 871.68 879.69 887.73 895.79 903.87
911.97 920.08 928.20 936.34 944.47 952.61 960.75 968.89 977.04 985.19 993.34
901.96 911.57 921.32 931.20 941.22 951.36 961.63 972.02 982.52 993.14 1003.88 1014.72 1025.66 1036.70 1047.84
1059.07 1070.39 1081.78 1093.26 1104.81 1116.43 1128.10 1139.84 1151.62 1163.44 1175.30 1187.20 1199.11 1211.05
1223.00 1234.97 1246.94 1258.93 1270.92 1282.92 1294.91 1306.90 1318.88 1330.85 1342.82 1354.76 1366.69 1378.60
1390.48 1461.10 1472.74 1484.34 1495.89 1507.40 1518.87 1530.29 1541.67 1553.01 1564.30 1575.55 1586.76 1597.91
1609.02 1620.09 1631.11 1642.07 1653.00 1663.87 1674.70 1685.47 1696.20 1706.87 1717.50 1728.08 1738.60 1749.08
1759.51 1939.14 1948.69 1958.20 1967.66 1977.08 1986.45 1995.79 2005.08 2014.33 2023.54 2032.70 2041.83 2050.92
2059.96 2068.97 2077.93 2086.86 2095.74 2104.59 2113.40 2122.17 2130.90 2139.60 2148.26 2156.88 2165.47 2174.02
2182.53 2191.01 2199.45 2207.86 2216.24 2224.58 2232.89 2241.16 2249.40 2257.61 2265.79 2273.93 2282.04 2290.12
2298.17 2306.19 2314.17 2322.13 2330.05 2337.94 2345.81 2353.64 2361.44 2369.21 2376.95 2384.66 2392.34 2400.00
2407.62 2415.21 2422.78 2430.32 2437.82 2445.30""".split(), dtype=np.float64)
#: EnMAP L2A bands inside the strong water-vapour absorptions carry no signal: all nodata
ENMAP_DEAD = ((ENMAP_NM > 1290) & (ENMAP_NM < 1525)) | ((ENMAP_NM > 1735) & (ENMAP_NM < 1975))

#: (UTM zone, south, latitude of the region's centre): farming and mixed regions on several continents
_REGIONS = ((32, False, 48.6), (17, False, 40.3), (29, False, 38.9), (44, False, 26.5), (52, False, 35.8),
            (34, True, -33.4), (21, True, -27.8), (55, True, -35.2), (19, True, -38.4), (36, True, -18.6),
            (47, False, 15.2), (14, False, 44.1))

#: per class: sigma0 dB at 35 deg (VV, VH), incidence slope dB/deg, moisture dB per unit wetness, texture dB
_SAR = np.array([(-21.0, -28.0, -0.45, 0.0, 0.4), (-7.0, -12.5, -0.07, 1.5, 1.1), (-8.0, -13.5, -0.06, 1.0, 1.3),
                 (-11.5, -20.5, -0.20, 4.0, 0.7), (-14.0, -22.5, -0.28, 6.0, 0.9), (-11.5, -19.0, -0.18, 3.5, 0.6),
                 (-3.0, -10.5, -0.10, 0.0, 2.5), (-13.0, -21.0, -0.20, 3.0, 0.8)], dtype=np.float32)
#: land-cover mix of each zone type (rows) over CLASSES (columns), drawn per field / block / stand
_ZONES = {"agriculture": (0, .05, 0, .45, .25, .17, 0, .08), "forest": (0, .55, .37, 0, 0, .08, 0, 0),
          "pasture": (0, .10, 0, .10, .02, .72, 0, .06), "settlement": (0, .08, 0, 0, 0, .12, .80, 0),
          "shrubland": (0, 0, .02, 0, .10, .18, 0, .70)}
_ZONE_ALPHA = {"agriculture": 3.0, "forest": 1.6, "pasture": 1.4, "settlement": 0.5, "shrubland": 0.7}
ENDMEMBERS = ("green_leaf", "needles", "dry_vegetation", "dry_soil", "wet_soil", "clear_water", "turbid_water",
              "concrete", "roof_tiles", "shade")
_E = {n: i for i, n in enumerate(ENDMEMBERS)}
_UTC = timezone.utc


# -- spectra ------------------------------------------------------------------------------------------------------
def _pl(wl: np.ndarray, pts: list[tuple[float, float]]) -> np.ndarray:
    x, y = zip(*pts)
    return np.interp(wl, x, y)


def _dip(wl: np.ndarray, centre: float, width: float, depth: float) -> np.ndarray:
    return 1.0 - depth * np.exp(-0.5 * ((wl - centre) / width) ** 2)


def endmember_spectra(wl: np.ndarray) -> np.ndarray:
    """(len(ENDMEMBERS), len(wl)) reflectance of each end-member at the band centres ``wl`` (nm)."""
    leafwater = _dip(wl, 975, 25, .08) * _dip(wl, 1200, 40, .15) * _dip(wl, 1450, 60, .55) * _dip(wl, 1940, 80, .7)
    green = _pl(wl, [(400, .035), (480, .045), (550, .11), (610, .06), (675, .032), (700, .07), (725, .22),
                     (760, .42), (900, .46), (1100, .44), (1300, .40), (1650, .30), (2200, .17), (2500, .09)])
    needles = _pl(wl, [(400, .025), (500, .035), (550, .06), (620, .035), (675, .022), (705, .05), (740, .18),
                       (780, .27), (1000, .29), (1250, .26), (1650, .17), (2200, .08), (2500, .05)])
    dry = _pl(wl, [(400, .06), (550, .13), (680, .19), (750, .25), (1000, .32), (1300, .36), (1650, .40),
                   (1750, .38), (2050, .35), (2100, .30), (2200, .34), (2300, .28), (2500, .24)])
    soil = _pl(wl, [(400, .07), (500, .10), (600, .16), (700, .21), (850, .25), (1000, .27), (1300, .31),
                    (1700, .36), (2100, .36), (2500, .30)]) * _dip(wl, 2205, 25, .12) * _dip(wl, 900, 60, .06)
    wet = 0.55 * soil * _dip(wl, 1450, 70, .5) * _dip(wl, 1940, 90, .6) * _dip(wl, 1200, 50, .1)
    clear = _pl(wl, [(400, .055), (480, .06), (560, .045), (620, .025), (700, .012), (800, .006), (1000, .003),
                     (2500, .002)])
    turbid = _pl(wl, [(400, .05), (500, .07), (580, .095), (650, .085), (700, .065), (750, .035), (820, .02),
                      (1000, .008), (2500, .004)])
    concrete = _pl(wl, [(400, .16), (500, .19), (700, .22), (1000, .25), (1650, .28), (2200, .26), (2500, .24)])
    roof = _pl(wl, [(400, .05), (500, .06), (560, .09), (600, .17), (700, .26), (900, .33), (1300, .38),
                    (1650, .40), (2200, .36), (2500, .33)])
    shade = np.full_like(wl, 0.012)
    return np.stack([green * leafwater, needles * leafwater, dry, soil, wet, clear, turbid, concrete, roof, shade])


def _cloud_spectrum(wl: np.ndarray, thickness: float) -> np.ndarray:
    return thickness * _pl(wl, [(400, .78), (900, .74), (1300, .65), (1650, .55), (2200, .38), (2500, .3)]) \
        * _dip(wl, 1380, 40, .9) * _dip(wl, 1870, 50, .9) * _dip(wl, 940, 25, .3)


# -- noise primitives -----------------------------------------------------------------------------------------------
def _fade(t: np.ndarray) -> np.ndarray:
    return t * t * t * (t * (t * 6 - 15) + 10)


def lattice_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """(h, w) float32 value noise: N(0, 1) values on a lattice of ``cell`` px, quintic-fade interpolation."""
    gh, gw = int(h / cell) + 3, int(w / cell) + 3
    lat = rng.standard_normal((gh, gw)).astype(np.float32)
    y = np.arange(h) / cell + rng.uniform(0, 1)
    x = np.arange(w) / cell + rng.uniform(0, 1)
    iy, ix = y.astype(int), x.astype(int)
    fy, fx = _fade(y - iy).astype(np.float32), _fade(x - ix).astype(np.float32)
    rows = lat[iy] * (1 - fy)[:, None] + lat[iy + 1] * fy[:, None]  # (h, gw)
    return rows[:, ix] * (1 - fx) + rows[:, ix + 1] * fx


def fractal(rng: np.random.Generator, h: int, w: int, cell: float, octaves: int = 4, gain: float = 0.5) -> np.ndarray:
    """Fractal sum of lattice noise (octaves halve the cell), normalised to zero mean and unit std."""
    out = np.zeros((h, w), np.float32)
    amp = 1.0
    for _ in range(octaves):
        out += amp * lattice_noise(rng, h, w, max(cell, 1.0))
        cell, amp = cell / 2, amp * gain
    out -= out.mean()
    return out / (out.std() + 1e-9)


def voronoi(rng: np.random.Generator, py: np.ndarray, px: np.ndarray, cell: float) -> tuple[np.ndarray, np.ndarray]:
    """Cellular segmentation of points (py, px) (pixels) by seeds jittered on a ``cell`` px lattice.

    Returns (segment id (h, w) int64, d2 - d1 (h, w) float32: 0 on a segment border, growing inwards, pixels).
    """
    gy, gx = np.floor(py / cell).astype(np.int64), np.floor(px / cell).astype(np.int64)
    y0, x0 = int(gy.min()) - 1, int(gx.min()) - 1
    nh, nw = int(gy.max()) - y0 + 2, int(gx.max()) - x0 + 2
    sy = ((np.arange(y0, y0 + nh)[:, None] + rng.uniform(0.1, 0.9, (nh, nw))) * cell).astype(np.float32).ravel()
    sx = ((np.arange(x0, x0 + nw)[None, :] + rng.uniform(0.1, 0.9, (nh, nw))) * cell).astype(np.float32).ravel()
    base = (gy - y0) * nw + (gx - x0)
    py, px = py.astype(np.float32), px.astype(np.float32)
    d1 = np.full(py.shape, np.inf, np.float32)  # squared distances to the nearest and second-nearest seed
    d2 = np.full(py.shape, np.inf, np.float32)
    best = np.zeros(py.shape, np.int64)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            idx = base + (dy * nw + dx)
            d = np.square(py - sy[idx])
            d += np.square(px - sx[idx])
            closer = d < d1
            np.minimum(d2, d, out=d2)
            np.copyto(d2, d1, where=closer)
            np.copyto(best, idx, where=closer)
            np.copyto(d1, d, where=closer)
    return best, np.sqrt(d2) - np.sqrt(d1)


def _block_mean(x: np.ndarray, f: int) -> np.ndarray:
    """Mean over f x f blocks of the last two axes (sizes must be multiples of f)."""
    if f == 1:
        return x
    h, w = x.shape[-2:]
    return x.reshape(*x.shape[:-2], h // f, f, w // f, f).mean(axis=(-3, -1))


def _upsample(x: np.ndarray, f: int, h: int, w: int) -> np.ndarray:
    """Bilinear resampling of a (h', w') grid of f x f pixels back to (h, w) pixels (pixel centres aligned)."""
    def axis(n: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = np.clip((np.arange(n) + 0.5) / f - 0.5, 0, m - 1)
        i0 = np.minimum(pos.astype(int), m - 1)
        i1 = np.minimum(i0 + 1, m - 1)
        return i0, i1, (pos - i0).astype(np.float32)

    r0, r1, wr = axis(h, x.shape[0])
    c0, c1, wc = axis(w, x.shape[1])
    rows = x[r0] * (1 - wr)[:, None] + x[r1] * wr[:, None]
    return rows[:, c0] * (1 - wc) + rows[:, c1] * wc


def _edge_wedge(rng: np.random.Generator, h: int, w: int, max_frac: float) -> np.ndarray:
    """(h, w) bool valid mask: a slanted swath edge cutting up to ``max_frac`` of the width off one side."""
    frac = rng.uniform(0.05, max_frac)
    slope = math.tan(math.radians(rng.uniform(-14, 14)))
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    line = frac * w + slope * (y - h / 2)
    return x >= line if rng.random() < 0.5 else (w - 1 - x) >= line


# -- a site -------------------------------------------------------------------------------------------------------
def _rng(seed: int, site: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(site, *key)))


def _to_lonlat(epsg: int) -> Transformer:
    return Transformer.from_crs(f"EPSG:{epsg}", "EPSG:4326", always_xy=True)


def place_site(seed: int, i: int, size_m: float) -> dict:
    """UTM zone, EPSG and the top-left corner (10 m multiples) of site ``i``; sites never overlap."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(10**6,)))
    north_k, south_k = ([k for k, r in enumerate(_REGIONS) if r[1] == h] for h in (False, True))
    north_k, south_k = list(rng.permutation(north_k)), list(rng.permutation(south_k))
    order = [k for pair in zip(north_k, south_k) for k in pair]  # hemispheres alternate
    order += north_k[len(south_k):] + south_k[len(north_k):]
    k = int(order[i % len(_REGIONS)])
    zone, south, lat0 = _REGIONS[k]
    epsg = (32700 if south else 32600) + zone
    fwd = Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True)
    _, y = fwd.transform(-183.0 + 6 * zone, lat0 + _rng(seed, 10**6 + k).uniform(-0.8, 0.8))
    rng = _rng(seed, i, 1)
    lap = i // len(_REGIONS)  # sites sharing a region: a column going north, at least 3 km apart
    north = 10.0 * round((y + lap * (size_m + 5000.0) + rng.uniform(0, 2000)) / 10)
    west = 10.0 * round(rng.uniform(260_000, 740_000 - size_m) / 10)
    lon, lat = _to_lonlat(epsg).transform(west + size_m / 2, north - size_m / 2)
    return {"index": i, "name": f"site{i:03d}", "zone": zone, "south": south, "epsg": epsg, "west": west,
            "north": north, "lon": lon, "lat": lat}


def _dates(seed: int, site: dict) -> tuple[datetime, dict[str, datetime], bool]:
    """The site's reference date, each sensor's acquisition time (UTC) on its own day near it, and whether the
    Sentinel-1 pass is ascending (dusk) rather than descending (dawn)."""
    rng = _rng(seed, site["index"], 2)
    year = int(rng.integers(2023, 2025))
    doy = int(rng.integers(125, 255)) + (183 if site["south"] else 0)
    base = datetime(year, 1, 1, tzinfo=_UTC) + timedelta(days=doy % 365)
    offsets = rng.choice(np.arange(-24, 25), 3, replace=False)
    local = {"S1": float(rng.choice([5.9, 18.1])), "S2": 10.5, "EnMAP": 11.0}
    times = {}
    for (name, hour), off in zip(local.items(), offsets):
        utc_h = hour + rng.uniform(-0.15, 0.15) - site["lon"] / 15
        times[name] = (base + timedelta(days=int(off), hours=utc_h)).replace(microsecond=0)
    return base, times, local["S1"] > 12


def _sun(when: datetime, lon: float, lat: float) -> tuple[float, float]:
    """(solar zenith, azimuth clockwise from north) in radians, from a simple declination / hour-angle model."""
    doy = when.timetuple().tm_yday
    decl = math.radians(23.44) * math.sin(2 * math.pi * (284 + doy) / 365)
    solar_h = when.hour + when.minute / 60 + lon / 15
    ha = math.radians(15 * (solar_h - 12))
    la = math.radians(lat)
    cz = math.sin(la) * math.sin(decl) + math.cos(la) * math.cos(decl) * math.cos(ha)
    zen = math.acos(max(-1.0, min(1.0, cz)))
    az = math.atan2(-math.sin(ha) * math.cos(decl),
                    math.cos(la) * math.sin(decl) - math.sin(la) * math.cos(decl) * math.cos(ha))
    return min(zen, math.radians(75)), az % (2 * math.pi)


class Ground:
    """A site's surface on its 10 m grid (n x n px, row 0 = north): land cover and the states sensors see."""

    def __init__(self, rng: np.random.Generator, n: int):
        self.n = n
        for _ in range(12):
            self._draw(rng)
            frac = np.bincount(self.lc.ravel(), minlength=len(CLASSES)) / self.lc.size
            if (frac > 0.01).sum() >= 3:
                break

    def _draw(self, rng: np.random.Generator) -> None:
        n = self.n
        y, x = np.mgrid[0:n, 0:n].astype(np.float32)
        self.elev = float(rng.uniform(0, 120)) * fractal(rng, n, n, rng.uniform(60, 110))
        # zones: warped cells of 1-1.7 km, each of one type
        warp = rng.uniform(12, 30)
        wy, wx = y + warp * fractal(rng, n, n, 40, 3), x + warp * fractal(rng, n, n, 40, 3)
        zid, _ = voronoi(rng, wy, wx, rng.uniform(100, 170))
        names = list(_ZONES)
        mix = rng.dirichlet([_ZONE_ALPHA[k] for k in names])
        ztype = rng.choice(len(names), zid.max() + 1, p=mix)[zid]
        # fields (slightly irregular), settlement blocks (with streets), forest stands
        fy, fx = y + 2.0 * fractal(rng, n, n, 9, 2), x + 2.0 * fractal(rng, n, n, 9, 2)
        fid, fedge = voronoi(rng, fy, fx, rng.uniform(12, 30))
        bid, bedge = voronoi(rng, y, x, rng.uniform(7, 10))
        sid, _ = voronoi(rng, wy, wx, rng.uniform(25, 45))
        self.lc = np.zeros((n, n), np.uint8)
        for z, name in enumerate(names):
            where = ztype == z
            if not where.any():
                continue
            seg = {"settlement": bid, "forest": sid}.get(name, fid)
            p = np.array(_ZONES[name], np.float64)
            draw = rng.choice(len(CLASSES), seg.max() + 1, p=p / p.sum())
            self.lc[where] = draw[seg[where]]
            if name == "settlement":
                self.lc[where & (bedge < rng.uniform(0.9, 1.6))] = BUILT
            if name == "agriculture" and rng.random() < 0.6:  # hedgerows on some field borders
                keep = rng.random(fid.max() + 1) < rng.uniform(0.2, 0.6)
                self.lc[where & (fedge < 1.1) & keep[fid]] = BROAD
            if name == "forest":  # needleleaf higher up
                hi = where & (self.elev > np.quantile(self.elev, rng.uniform(0.3, 0.8)))
                self.lc[hi & (self.lc == BROAD)] = NEEDLE
        # water: a river on a noise zero contour, lakes in hollows
        if rng.random() < 0.55:
            f = fractal(rng, n, n, rng.uniform(120, 220), 3)
            gy, gx = np.gradient(f)
            self.lc[np.abs(f) / (np.hypot(gy, gx) + 1e-6) < rng.uniform(1.0, 3.0)] = WATER
        if rng.random() < 0.45:
            self.lc[self.elev < np.quantile(self.elev, rng.uniform(0.02, 0.08))] = WATER
        # states
        nf, nb = fid.max() + 1, bid.max() + 1
        self.fid, self.bid = fid, bid
        self.vigour0 = rng.uniform(0.35, 0.95, nf).astype(np.float32)
        self.rate = rng.uniform(-0.012, 0.012, nf).astype(np.float32)  # vigour per day
        self.harvest = np.where(rng.random(nf) < 0.12, rng.integers(-20, 21, nf), 10_000)  # day from the base date
        self.rough = rng.uniform(0, 1, nf).astype(np.float32)
        self.irrig = np.where(rng.random(nf) < 0.15, rng.uniform(0.2, 0.5, nf), 0.0).astype(np.float32)
        self.urban = rng.uniform(0.5, 0.95, nb).astype(np.float32)
        self.roofs = rng.uniform(0.0, 0.6, nb).astype(np.float32)
        self.orient = rng.uniform(0, 90, nb).astype(np.float32)  # street grid orientation of a block, degrees
        self.moist = (0.5 + 0.18 * fractal(rng, n, n, rng.uniform(40, 90), 3)).astype(np.float32)
        self.tex = fractal(rng, n, n, 2.5, 2)
        self.sar_tex = fractal(rng, n, n, 1.5, 2)
        self.turbid = float(rng.uniform(0, 1))
        self.canopy = (0.8 + 0.2 * fractal(rng, n, n, 3.0, 2)).astype(np.float32)

    def states(self, day: int, wetness: float) -> tuple[np.ndarray, np.ndarray]:
        """(vigour, soil wetness) (n, n) float32 in [0, 1] on ``day`` days after the site's reference date."""
        v = np.clip(self.vigour0 + self.rate * day, 0.05, 1.0)
        v = np.where(day >= self.harvest, 0.05, v)[self.fid].astype(np.float32)
        m = np.clip(self.moist - 0.5 + wetness + self.irrig[self.fid], 0, 1).astype(np.float32)
        return v, m

    def abundances(self, day: int, wetness: float) -> np.ndarray:
        """(len(ENDMEMBERS), n, n) float32 sub-pixel fractions (sum 1) on ``day``."""
        v, m = self.states(day, wetness)
        a = np.zeros((len(ENDMEMBERS), self.n, self.n), np.float32)
        lc, can = self.lc, self.canopy

        def put(cls: int, **parts: np.ndarray | float) -> None:
            w = lc == cls
            for name, val in parts.items():
                a[_E[name], w] = val if np.isscalar(val) else val[w]

        soil = 1 - v
        put(WATER, clear_water=1 - self.turbid, turbid_water=self.turbid)
        put(BROAD, green_leaf=0.78 * can, dry_vegetation=0.05, shade=1 - 0.78 * can - 0.05)
        put(NEEDLE, needles=0.68 * can, dry_vegetation=0.04, shade=1 - 0.68 * can - 0.04)
        put(GCROP, green_leaf=v, dry_vegetation=0.3 * soil, dry_soil=0.7 * soil * (1 - m), wet_soil=0.7 * soil * m)
        put(BCROP, dry_vegetation=0.12 + 0.1 * self.rough[self.fid], dry_soil=(0.83 - 0.1 * self.rough[self.fid])
            * (1 - m), wet_soil=(0.83 - 0.1 * self.rough[self.fid]) * m, shade=0.05)
        put(GRASS, green_leaf=0.6 * v, dry_vegetation=0.3 * (1 - 0.5 * v), dry_soil=(0.1 + 0.1 * v) * (1 - m),
            wet_soil=(0.1 + 0.1 * v) * m, shade=0.6 - 0.55 * v)
        u, r = self.urban[self.bid], self.roofs[self.bid]
        put(BUILT, concrete=u * (1 - r), roof_tiles=u * r, green_leaf=0.85 * (1 - u), shade=0.15 * (1 - u))
        put(SHRUB, dry_soil=0.55 * (1 - m), wet_soil=0.55 * m, dry_vegetation=0.25, green_leaf=0.12 * v + 0.03,
            shade=0.05 + 0.12 * (1 - v))
        return a

    def illumination(self, zen: float, az: float) -> np.ndarray:
        """(n, n) float32 relative irradiance: direct (terrain-shaded) plus diffuse sky, times surface texture."""
        gy, gx = np.gradient(self.elev, 10.0)  # rows go south: d/dy is -d/dnorth
        dz_de, dz_dn = gx, -gy
        nrm = np.sqrt(1 + dz_de ** 2 + dz_dn ** 2)
        sun = (math.sin(zen) * math.sin(az), math.sin(zen) * math.cos(az), math.cos(zen))
        cos_i = (-dz_de * sun[0] - dz_dn * sun[1] + sun[2]) / nrm
        direct = np.clip(cos_i / math.cos(zen), 0, 2.5)
        return ((0.82 * direct + 0.18) * (1 + 0.04 * self.tex)).astype(np.float32)


# -- sensors ------------------------------------------------------------------------------------------------------
def _footprint(rng: np.random.Generator, n: int, step: int) -> tuple[int, int, int, int]:
    """(row, col, height, width) in 10 m px of a sensor's part of the site; sizes multiples of ``step`` px."""
    def side() -> tuple[int, int]:
        frac = 1.0 if rng.random() < 0.4 else rng.uniform(0.7, 1.0)
        size = max(step, int(n * frac) // step * step)
        return int(rng.integers(0, n - size + 1)), size

    (r, h), (c, w) = side(), side()
    return r, c, h, w


def _clouds(rng: np.random.Generator, h: int, w: int, cover: float, zen: float, az: float, px_m: float
            ) -> tuple[np.ndarray, np.ndarray]:
    """(opacity, shadow) (h, w) float32 in [0, 1]: cloud cells and their shadow cast away from the sun."""
    f = fractal(rng, h, w, rng.uniform(300, 700) / px_m, 5, 0.55)
    alpha = np.clip((f - np.quantile(f, 1 - cover)) / 0.6 + 0.5, 0, 1).astype(np.float32)
    shift = rng.uniform(800, 2500) * math.tan(zen) / px_m  # cloud height x tan(zenith), in pixels
    dy, dx = int(round(shift * math.cos(az))), int(round(-shift * math.sin(az)))
    shadow = np.zeros_like(alpha)
    ys, xs = slice(max(dy, 0), h + min(dy, 0)), slice(max(dx, 0), w + min(dx, 0))
    yd, xd = slice(max(-dy, 0), h + min(-dy, 0)), slice(max(-dx, 0), w + min(-dx, 0))
    shadow[ys, xs] = alpha[yd, xd]
    return alpha, shadow


def _optical(ground: Ground, wl: np.ndarray, fp: tuple[int, int, int, int], f: int, day: int, wetness: float,
             sun: tuple[float, float], rng: np.random.Generator, cloud_p: float, max_cover: float
             ) -> tuple[np.ndarray, np.ndarray]:
    """BOA reflectance (B, h/f, w/f) float32 over footprint ``fp`` at ``f`` x 10 m pixels, and the cloud opacity."""
    r, c, h, w = fp
    a = ground.abundances(day, wetness)[:, r:r + h, c:c + w]
    a *= ground.illumination(*sun)[r:r + h, c:c + w]
    a = _block_mean(a, f)
    e, hh, ww = a.shape
    refl = (endmember_spectra(wl).T.astype(np.float32) @ a.reshape(e, -1)).reshape(len(wl), hh, ww)
    refl *= np.float32(rng.uniform(0.96, 1.04))
    refl += (rng.uniform(0, 0.012) * (wl / 550.0) ** -1.8).astype(np.float32)[:, None, None]  # residual haze
    alpha = np.zeros((hh, ww), np.float32)
    if rng.random() < cloud_p:
        alpha, shadow = _clouds(rng, hh, ww, rng.uniform(0.02, max_cover), *sun, 10.0 * f)
        refl *= 1 - 0.6 * shadow
        body = _cloud_spectrum(wl, rng.uniform(0.6, 1.0)).astype(np.float32)
        refl = refl * (1 - alpha) + body[:, None, None] * (alpha * (1 + 0.1 * fractal(rng, hh, ww, 4.0, 2)))
    return refl, alpha


def render_s2(ground: Ground, fp: tuple, day: int, wetness: float, sun: tuple, platform: str,
              rng: np.random.Generator) -> np.ndarray:
    """(12, h, w) uint16 L2A stack at 10 m, nodata 0, DN = reflectance x 10000 + 1000 (baseline 04.00 and later)."""
    wl = np.array([b[1] if platform == "S2A" else b[2] for b in S2_BANDS])
    refl, _ = _optical(ground, wl, fp, 1, day, wetness, sun, rng, 0.45, 0.3)
    _, h, w = refl.shape
    out = np.empty((len(S2_BANDS), h, w), np.float32)
    for b, (_, _, _, gsd) in enumerate(S2_BANDS):
        k = gsd // 10
        hh, ww = -(-h // k) * k, -(-w // k) * k
        x = np.pad(refl[b], ((0, hh - h), (0, ww - w)), mode="edge")
        native = _block_mean(x, k) + rng.normal(0, 0.0025, (hh // k, ww // k)).astype(np.float32)
        out[b] = native if k == 1 else _upsample(native, k, h, w)
    dn = np.clip(np.rint(out * 10_000) + 1_000, 1, 65_535).astype(np.uint16)
    if rng.random() < 0.12:  # the orbit's swath edge crosses the tile
        dn[:, ~_edge_wedge(rng, h, w, 0.3)] = 0
    return dn


def render_enmap(ground: Ground, fp: tuple, day: int, wetness: float, sun: tuple, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(224, h/3, w/3) int16 L2A cube at 30 m (nodata -32768) and its cloud mask (uint8)."""
    refl, alpha = _optical(ground, ENMAP_NM, fp, 3, day, wetness, sun, rng, 0.15, 0.15)
    _, h, w = refl.shape
    k = np.array([0.12, 0.76, 0.12], np.float32)  # PSF, separable, on the 30 m grid
    p = np.pad(refl, ((0, 0), (1, 1), (1, 1)), mode="edge")
    refl = k[0] * p[:, :-2, 1:-1] + k[1] * p[:, 1:-1, 1:-1] + k[2] * p[:, 2:, 1:-1]
    p = np.pad(refl, ((0, 0), (0, 0), (1, 1)), mode="edge")
    refl = k[0] * p[:, :, :-2] + k[1] * p[:, :, 1:-1] + k[2] * p[:, :, 2:]
    refl *= (1 + rng.normal(0, 0.004, (len(ENMAP_NM), 1, w))).astype(np.float32)  # push-broom column striping
    snr = np.interp(ENMAP_NM, [420, 450, 700, 950, 1000, 1300, 1650, 2200, 2450], [120, 350, 450, 250, 180, 220,
                                                                                      200, 130, 60])
    sigma = np.sqrt(0.0008 ** 2 + (np.maximum(refl, 0) / snr[:, None, None]) ** 2)
    refl += sigma.astype(np.float32) * rng.standard_normal(refl.shape, dtype=np.float32)
    dn = np.clip(np.rint(refl * 10_000), -32_767, 32_767).astype(np.int16)
    dn[ENMAP_DEAD] = -32_768
    if rng.random() < 0.3:
        dn[:, ~_edge_wedge(rng, h, w, 0.35)] = -32_768
    cloud = ((alpha >= 0.5) & (dn[40] != -32_768)).astype(np.uint8)
    return dn, cloud


def render_s1(ground: Ground, fp: tuple, day: int, wetness: float, ascending: bool, x_west: float,
              rng: np.random.Generator) -> np.ndarray:
    """(2, h, w) float32 sigma0 VV, VH in dB at 10 m (NaN where the swath does not reach)."""
    r, c, h, w = fp
    v, m = (s[r:r + h, c:c + w] for s in ground.states(day, wetness))
    lc = ground.lc[r:r + h, c:c + w]
    tab = _SAR[lc]  # (h, w, 5)
    # incidence: the site's place in the 250 km swath, increasing away from the track (east when ascending)
    x = x_west + 10.0 * (np.arange(w) + 0.5)
    theta = rng.uniform(31, 45) + (1 if ascending else -1) * 0.065 * (x - x.mean()) / 1000
    gy, gx = np.gradient(ground.elev[r:r + h, c:c + w], 10.0)
    heading = math.radians(-12.0 if ascending else 192.0)
    look = heading + math.pi / 2  # right-looking: horizontal direction from the satellite to the ground
    th = np.radians(theta)[None, :]
    sx, sy = -np.sin(th) * math.sin(look), -np.sin(th) * math.cos(look)  # towards the satellite (east, north)
    cos_loc = (-gx * sx + gy * sy + np.cos(th)) / np.sqrt(1 + gx ** 2 + gy ** 2)
    terrain_db = 10 * np.log10(np.clip(cos_loc / np.cos(th), 0.2, 3.0) ** 1.5)
    wind = rng.uniform(0, 7)
    fid, bid = ground.fid[r:r + h, c:c + w], ground.bid[r:r + h, c:c + w]
    d_orient = np.abs(((ground.orient[bid] - math.degrees(heading)) + 45) % 90 - 45)
    bounce = np.where(lc == BUILT, 9.0 * np.exp(-(d_orient / 7.0) ** 2), 0.0)
    rough = ground.rough[fid]
    angle = tab[..., 2] * (theta[None, :] - 35)
    tex = tab[..., 4] * ground.sar_tex[r:r + h, c:c + w]
    common = angle + tab[..., 3] * m + terrain_db + tex
    vv = tab[..., 0] + common + np.select([lc == GCROP, lc == BCROP, lc == GRASS, lc == WATER],
                                          [-1.5 * v, 5.0 * rough, 0.5 * v, wind], 0.0) + bounce
    vh = tab[..., 1] + common + np.select([lc == GCROP, lc == BCROP, lc == GRASS, lc == WATER],
                                          [4.5 * v, 3.5 * rough, 2.0 * v, 0.6 * wind], 0.0) + 0.55 * bounce
    looks = rng.uniform(3.0, 5.5)
    nesz = 10 ** (rng.uniform(-26, -22) / 10)
    out = []
    for db in (vv, vh):
        lin = 10 ** (db.astype(np.float32) / 10)
        p = np.pad(lin, 1, mode="edge")  # ~20 m resolution cell: soften class edges before speckle
        lin = (4 * p[1:-1, 1:-1] + p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:]) / 8
        lin = lin * rng.gamma(looks, 1 / looks, lin.shape) + nesz * rng.gamma(looks, 1 / looks, lin.shape)
        out.append(10 * np.log10(lin))
    sig = np.stack(out).astype(np.float32)
    if rng.random() < 0.15:
        sig[:, ~_edge_wedge(rng, h, w, 0.3)] = np.nan
    return sig


# -- names --------------------------------------------------------------------------------------------------------
def mgrs_tile(zone: int, lat: float, easting: float, northing: float) -> str:
    """Military Grid Reference System 100 km square of a UTM point (the Sentinel-2 tile id without the T)."""
    band = "CDEFGHJKLMNPQRSTUVWX"[min(max(int((lat + 80) // 8), 0), 19)]
    cols = ("STUVWXYZ", "ABCDEFGH", "JKLMNPQR")[zone % 3]
    row = int(northing // 100_000) % 20
    row = (row + 5) % 20 if zone % 2 == 0 else row
    return f"{zone:02d}{band}{cols[int(easting // 100_000) - 1]}{'ABCDEFGHJKLMNPQRSTUV'[row]}"


def s1_name(t: datetime, ascending: bool, rng: np.random.Generator) -> str:
    stop = t + timedelta(seconds=25)
    orbit = int((t - datetime(2014, 4, 3, tzinfo=_UTC)).total_seconds() / (12 * 86_400 / 175)) + 1
    return (f"S1A_IW_GRDH_1SDV_{t:%Y%m%dT%H%M%S}_{stop:%Y%m%dT%H%M%S}_{orbit:06d}_{int(rng.integers(0, 2**24)):06X}"
            f"_{int(rng.integers(0, 2**16)):04X}_Orb_Cal_TC_dB.tif")


def s2_name(t: datetime, platform: str, site: dict, rng: np.random.Generator) -> str:
    baseline = "N0510" if t.year >= 2024 else "N0509"
    proc = t + timedelta(hours=float(rng.uniform(1.5, 5)))
    tile = mgrs_tile(site["zone"], site["lat"], site["west"], site["north"])
    return (f"{platform}_MSIL2A_{t:%Y%m%dT%H%M%S}_{baseline}_R{int(rng.integers(1, 144)):03d}_T{tile}_"
            f"{proc:%Y%m%dT%H%M%S}.tif")


def enmap_name(t: datetime, rng: np.random.Generator) -> str:
    proc = t + timedelta(days=int(rng.integers(1, 30)), seconds=int(rng.integers(0, 86_400)))
    version = "V010402" if t.year >= 2024 else "V010303"
    return (f"ENMAP01-____L2A-DT{int(rng.integers(1_000, 99_999_999)):010d}_{t:%Y%m%dT%H%M%S}Z_"
            f"{int(rng.integers(1, 20)):03d}_{version}_{proc:%Y%m%dT%H%M%S}Z")


# -- writing ------------------------------------------------------------------------------------------------------
def write_tif(path: Path, data: np.ndarray, epsg: int, west: float, north: float, res: float, nodata: float | None,
              descriptions: list[str], processed: datetime, software: str, interleave: str = "band",
              colormap: dict | None = None) -> None:
    """A tiled, deflate-compressed GeoTIFF of ``data`` (B, H, W) north-up at ``res`` metres."""
    count, h, w = data.shape
    block = 256 if min(h, w) >= 256 else max(16, -(-min(h, w) // 16) * 16)
    profile = {"driver": "GTiff", "width": w, "height": h, "count": count, "dtype": data.dtype.name,
               "crs": CRS.from_epsg(epsg), "transform": Affine(res, 0, west, 0, -res, north), "nodata": nodata,
               "tiled": True, "blockxsize": block, "blockysize": block, "compress": "deflate", "zlevel": 1,
               "predictor": 3 if data.dtype.kind == "f" else 2, "interleave": interleave}
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if colormap:
            dst.write_colormap(1, colormap)
        dst.update_tags(TIFFTAG_DATETIME=processed.strftime("%Y:%m:%d %H:%M:%S"), TIFFTAG_SOFTWARE=software)
        for b, d in enumerate(descriptions, 1):
            dst.set_band_description(b, d)


def make_site(out: Path, seed: int, i: int, size_m: float, truth: bool, s1_nodata: float) -> dict:
    """Write every file of site ``i``; returns its manifest entry."""
    site = place_site(seed, i, size_m)
    n = round(size_m / 10)
    ground = Ground(_rng(seed, i, 3), n)
    base, times, ascending = _dates(seed, site)
    epsg, lon, lat = site["epsg"], site["lon"], site["lat"]
    fr = _rng(seed, i, 4)
    fps = {"S1": _footprint(fr, n, 1), "S2": _footprint(fr, n, 1), "EnMAP": _footprint(fr, n, 3)}
    entry = {"site": site["name"], "epsg": epsg, "utm_zone": f"{site['zone']}{'S' if site['south'] else 'N'}",
             "center_lonlat": [round(lon, 5), round(lat, 5)], "reference_date": base.strftime("%Y-%m-%d"),
             "files": {}, "acquired": {}, "footprints": {}}

    def corner(fp: tuple) -> tuple[float, float]:
        return site["west"] + 10.0 * fp[1], site["north"] - 10.0 * fp[0]

    def day_of(t: datetime) -> int:
        return (t.date() - base.date()).days

    wet = _rng(seed, i, 5).uniform(0.0, 0.3, 3)
    # Sentinel-1
    t = times["S1"]
    rng = _rng(seed, i, 6)
    west, north = corner(fps["S1"])
    sig = render_s1(ground, fps["S1"], day_of(t), wet[0], ascending, west, rng)
    if not math.isnan(s1_nodata):
        sig[np.isnan(sig)] = s1_nodata
    rel = Path("S1") / s1_name(t, ascending, rng)
    write_tif(out / rel, sig, epsg, west, north, 10.0, s1_nodata, ["Sigma0_VV_db", "Sigma0_VH_db"],
              t + timedelta(days=int(rng.integers(3, 200))), "ESA SNAP 9.0.0")
    entry["files"]["sentinel1"], entry["acquired"]["sentinel1"] = rel.as_posix(), t.strftime("%Y-%m-%dT%H:%M:%SZ")
    entry["orbit_direction"] = "ascending" if ascending else "descending"
    # Sentinel-2
    t = times["S2"]
    rng = _rng(seed, i, 7)
    platform = "S2A" if rng.random() < 0.5 else "S2B"
    dn = render_s2(ground, fps["S2"], day_of(t), wet[1], _sun(t, lon, lat), platform, rng)
    west, north = corner(fps["S2"])
    rel = Path("S2") / s2_name(t, platform, site, rng)
    write_tif(out / rel, dn, epsg, west, north, 10.0, 0, [b[0] for b in S2_BANDS],
              t + timedelta(days=int(rng.integers(30, 400))), "GDAL 3.8 gdal_merge.py", interleave="pixel")
    entry["files"]["sentinel2"], entry["acquired"]["sentinel2"] = rel.as_posix(), t.strftime("%Y-%m-%dT%H:%M:%SZ")
    # EnMAP
    t = times["EnMAP"]
    rng = _rng(seed, i, 8)
    cube, cloud = render_enmap(ground, fps["EnMAP"], day_of(t), wet[2], _sun(t, lon, lat), rng)
    west, north = corner(fps["EnMAP"])
    stem = enmap_name(t, rng)
    proc = t + timedelta(days=2)
    rel = Path("EnMAP") / f"{stem}-SPECTRAL_IMAGE.TIF"
    write_tif(out / rel, cube, epsg, west, north, 30.0, -32768,
              [f"band {k + 1} ({wl:.2f} nm)" for k, wl in enumerate(ENMAP_NM)], proc, "EnMAP Processor")
    write_tif(out / "EnMAP" / f"{stem}-QL_QUALITY_CLOUD.TIF", cloud[None], epsg, west, north, 30.0, None,
              ["cloud"], proc, "EnMAP Processor")
    entry["files"]["enmap"], entry["acquired"]["enmap"] = rel.as_posix(), t.strftime("%Y-%m-%dT%H:%M:%SZ")
    entry["footprints"] = {k: [int(v) * 10 for v in fp] for k, fp in fps.items()}
    frac = np.bincount(ground.lc.ravel(), minlength=len(CLASSES)) / ground.lc.size
    entry["class_fractions"] = {c: round(float(f), 5) for c, f in zip(CLASSES, frac)}
    if truth:
        rel = Path("landcover") / f"{site['name']}_landcover.tif"
        write_tif(out / rel, ground.lc[None], epsg, site["west"], site["north"], 10.0, 255, ["land cover"],
                  base, "survey", colormap={k: (*c, 255) for k, c in enumerate(_PALETTE)})
        entry["landcover"] = rel.as_posix()
    return entry


def make_archive(out: str | Path, sites: int, seed: int = 0, size_m: float = 4800.0, workers: int = 1,
                 truth: bool = True, s1_nodata: float = float("nan")) -> dict:
    """Write the archive; returns the manifest (also written to ``OUT/manifest.json``)."""
    if sites < 1 or seed < 0:
        raise ValueError("need sites >= 1 and seed >= 0")
    if size_m <= 0 or size_m % 30:
        raise ValueError(f"size_m must be a positive multiple of 30 m, got {size_m}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} exists and is not empty")
    out.mkdir(parents=True, exist_ok=True)
    args = [(out, seed, i, float(size_m), truth, s1_nodata) for i in range(sites)]
    if workers > 1 and sites > 1:
        with ProcessPoolExecutor(workers) as pool:
            entries = list(pool.map(_site_job, args))
    else:
        entries = [_site_job(a) for a in args]
    manifest = {"generator": "scripts/make_foreign_archive.py", "seed": seed, "size_m": float(size_m),
                "classes": list(CLASSES), "sites": entries}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _site_job(a: tuple) -> dict:
    return make_site(*a)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="output folder (new or empty)")
    ap.add_argument("--sites", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size-m", type=float, default=4800.0, help="side of a site in metres (multiple of 30)")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="processes")
    ap.add_argument("--s1-nodata", default="nan", choices=["nan", "-9999"], help="nodata value of the S1 files")
    ap.add_argument("--no-truth", action="store_true", help="do not write the land-cover rasters")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    try:
        m = make_archive(args.out, args.sites, args.seed, args.size_m, args.workers, not args.no_truth,
                         float(args.s1_nodata))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {len(m['sites'])} sites x 3 sensors to {args.out} in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
