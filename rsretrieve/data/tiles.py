"""Reading tiles: the pixels of one grid cell of one scene, at the sensor's native resolution, normalised.

A tile of a sensor with nominal GSD ``g`` on a grid of ``tile_m`` metres is ``n = round(tile_m / g)`` pixels across
(480 m: 48 px for Sentinel-1/2, 16 px for EnMAP). Pixels outside the scene and nodata pixels are 0 after
normalisation (``(physical - mean) / std``), and so are bands the spec marks invalid (EnMAP water vapour).

``read_scene_tiles`` reads a scene once (in strips) and cuts all requested tiles from it, which is far faster than
one windowed read per tile on compressed GeoTIFFs.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import rasterio
from pyproj import CRS
from rasterio.enums import Resampling
from rasterio.transform import Affine
from rasterio.windows import Window

from rsretrieve.data.grid import parse_cell_id, transformer, wrap_near
from rsretrieve.data.scene import clip_window, nodata_value, valid_pixels
from rsretrieve.sensors import SensorSpec, get_sensor

_STRIP_PX = 2048


def tile_px(spec: SensorSpec, tile_m: float) -> int:
    """Tile side in pixels for ``spec`` on a ``tile_m`` grid."""
    return max(int(round(tile_m / spec.gsd)), 1)


def normalise(dn: np.ndarray, spec: SensorSpec, layout_name: str = "full", nodata: float | None = None) -> np.ndarray:
    """DN (C_layout, H, W) -> normalised float32 (C_spec, H, W) in the spec's full band order.

    Bands a layout lacks, invalid bands, nodata and NaN pixels become 0.
    """
    layout = spec.layout(layout_name)
    nd = layout.nodata if nodata is None else nodata
    out = np.zeros((spec.num_bands, *dn.shape[1:]), np.float32)
    for i, bname in enumerate(layout.bands):
        band = spec.band(bname)
        j = spec.band_index(band.name)
        if not band.valid:
            continue
        x = dn[i].astype(np.float32)
        bad = ~np.isfinite(x)
        if nd is not None and not (isinstance(nd, float) and math.isnan(nd)):
            bad |= dn[i] == nd
        x = (x * np.float32(layout.scale) + np.float32(layout.offset) - np.float32(band.mean)) / np.float32(band.std)
        x[bad] = 0.0
        out[j] = x
    return out


def _resize(a: np.ndarray, n: int) -> np.ndarray:
    """Nearest-neighbour resize of (C, h, w) to (C, n, n) (windows of scenes in a geographic CRS)."""
    if a.shape[1:] == (n, n):
        return a
    ri = np.minimum((np.arange(n) + 0.5) * a.shape[1] / n, a.shape[1] - 1).astype(int)
    ci = np.minimum((np.arange(n) + 0.5) * a.shape[2] / n, a.shape[2] - 1).astype(int)
    return a[:, ri][:, :, ci]


#: control points per side of a cell whose positions in the scene are projected exactly; the pixels between them
#: are placed by bilinear interpolation (the projections are smooth: sub-millimetre error over a 480 m cell)
_CONTROL = 5


class CellSampler:
    """Which pixel of a scene each pixel of a cell is, for a scene whose CRS is not the cell's UTM zone.

    A cell is a square in its zone; in another CRS (LAEA, polar stereographic, lon/lat) it is turned by the
    meridian convergence between the two and scaled, so the window read for it (its bounding box) holds
    neighbouring ground as well. The tile is the cell's ``n`` x ``n`` pixel centres, each taken from the scene
    pixel it falls in (nearest neighbour), so tiles of every CRS over a cell hold the same ground, the same way up;
    ingest measures a cell's coverage on the same points.
    """

    def __init__(self, scene: dict, tile_m: float):
        """``scene``: its ``crs`` (WKT or any CRS input), ``transform`` (6 numbers) and ``width``."""
        self.crs = CRS.from_user_input(scene["crs"])
        self.t = Affine(*scene["transform"][:6])
        self.tile_m = tile_m
        self.near_x = (self.t @ (scene["width"] / 2, 0))[0]  # a lon/lat scene's side of the antimeridian
        self.epsg = self.crs.to_epsg()  # (identifying a CRS is slow: once per scene)
        self._to_scene: dict[int, object] = {}

    def needed(self, cell_id: str) -> bool:
        """Whether the cell is not of the scene's own CRS (its window is then not the cell)."""
        return parse_cell_id(cell_id)[0] != self.epsg

    def pixels(self, cell_id: str, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, cols), each (n, n) int64: the scene pixels of the cell's ``n`` x ``n`` pixel centres, north to
        south and west to east (outside the scene where the cell is)."""
        epsg, _, row, col = parse_cell_id(cell_id)
        m, tm = _CONTROL, self.tile_m
        u = np.linspace(0.0, 1.0, m)
        gx, gy = np.meshgrid(col * tm + u * tm, (row + 1) * tm - u * tm)
        if epsg not in self._to_scene:
            self._to_scene[epsg] = transformer(f"EPSG:{epsg}", self.crs)
        sx, sy = self._to_scene[epsg].transform(gx.ravel(), gy.ravel())
        sx, sy = np.asarray(sx, np.float64), np.asarray(sy, np.float64)
        if self.crs.is_geographic:
            sx = wrap_near(sx, self.near_x)
        pc, pr = ~self.t @ (sx, sy)
        pc, pr = np.asarray(pc).reshape(m, m), np.asarray(pr).reshape(m, m)
        # the n pixel centres of the cell, in control-grid units (0 .. m - 1)
        f = (np.arange(n) + 0.5) / n * (m - 1)
        i0 = np.minimum(np.floor(f).astype(int), m - 2)
        w = f - i0
        cols, rows = (_bilinear(a, i0, w) for a in (pc, pr))
        return np.floor(rows).astype(np.int64), np.floor(cols).astype(np.int64)

    def indices(self, cell_id: str, n: int, c_off: int, r_off: int, tw: int,
                th: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`pixels` as indices into the window ``(c_off, r_off, tw, th)`` read for the cell (its bounding
        box, rounded to whole pixels: a centre on its rim is taken from the pixel inside)."""
        rows, cols = self.pixels(cell_id, n)
        return np.clip(rows - r_off, 0, th - 1), np.clip(cols - c_off, 0, tw - 1)


def _bilinear(a: np.ndarray, i0: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``a`` (m, m) at fractional positions ``i0 + w`` along both axes: (n, n), rows first."""
    r0, r1 = a[i0], a[i0 + 1]  # (n, m)
    rows = r0 + (r1 - r0) * w[:, None]
    c0, c1 = rows[:, i0], rows[:, i0 + 1]  # (n, n)
    return c0 + (c1 - c0) * w[None, :]


def _read_rows(scene: dict, spec: SensorSpec, r0: int, r1: int, fill: float, c0: int = 0,
               c1: int | None = None) -> np.ndarray:
    """DN of rows [r0, r1) (and columns [c0, c1), default all) of the scene's reference grid, all bands of its
    layout: (C_layout, r1 - r0, c1 - c0)."""
    files = scene["files"]
    c1 = scene["width"] if c1 is None else c1
    if "*" in files:
        with rasterio.open(files["*"]) as ds:
            return ds.read(window=Window(c0, r0, c1 - c0, r1 - r0))
    t = Affine(*scene["transform"])
    left, top = t @ (c0, r0)
    right, bottom = t @ (c1, r1)
    bands = []
    for b in spec.layout(scene["layout"]).bands:
        with rasterio.open(files[spec.band(b).name]) as ds:
            win = ds.window(min(left, right), min(top, bottom), max(left, right), max(top, bottom))
            bands.append(ds.read(1, window=win, out_shape=(r1 - r0, c1 - c0), boundless=True, fill_value=fill,
                                 resampling=Resampling.nearest))
    return np.stack(bands)


def _file_nodata(scene: dict, layout) -> float | None:
    """The nodata value of the scene's files (as ingest saw it), else the layout's (same rule as ``open_scene``)."""
    files = scene["files"]
    first = files["*"] if "*" in files else files[next(iter(files))]
    with rasterio.open(first) as ds:
        return ds.nodata if ds.nodata is not None else layout.nodata


def read_scene_tiles(scene: dict, tiles: Sequence[dict], tile_m: float) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(tile_id, array (C, n, n) float32 normalised)`` for ``tiles`` of one catalog ``scene``.

    Args:
        scene: a row of ``Catalog.scenes()``.
        tiles: rows of ``Catalog.tiles()`` belonging to that scene.
        tile_m: the workspace grid's cell side in metres.
    """
    spec = get_sensor(scene["sensor"])
    layout = spec.layout(scene["layout"])
    n = tile_px(spec, tile_m)
    nodata = _file_nodata(scene, layout)
    fill = nodata if nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)) else 0
    h, w = scene["height"], scene["width"]
    sampler = CellSampler(scene, tile_m) if scene.get("crs") else None
    tiles = sorted(tiles, key=lambda t: t["row_off"])
    i = 0
    while i < len(tiles):
        # a strip of rows covering the next tiles, at most _STRIP_PX rows tall (or one tile)
        r0 = max(tiles[i]["row_off"], 0)
        j, r1 = i, r0
        while j < len(tiles) and (j == i or tiles[j]["row_off"] + tiles[j]["height"] - r0 <= _STRIP_PX):
            r1 = max(r1, min(tiles[j]["row_off"] + tiles[j]["height"], h))
            j += 1
        strip = _read_rows(scene, spec, r0, r1, fill) if r1 > r0 else None
        for t in tiles[i:j]:
            c_off, r_off, tw, th = t["col_off"], t["row_off"], t["width"], t["height"]
            dn = np.full((len(layout.bands), th, tw), fill, dtype=np.float64 if strip is None else strip.dtype)
            if isinstance(nodata, float) and math.isnan(nodata):
                dn = dn.astype(np.float32)
                dn[:] = np.nan
            rr0, rr1 = max(r_off, 0), min(r_off + th, h)
            cc0, cc1 = max(c_off, 0), min(c_off + tw, w)
            if strip is not None and rr0 < rr1 and cc0 < cc1:
                dn[:, rr0 - r_off:rr1 - r_off, cc0 - c_off:cc1 - c_off] = strip[:, rr0 - r0:rr1 - r0, cc0:cc1]
            x = normalise(dn, spec, scene["layout"], nodata)
            cid = t.get("cell_id")
            if sampler is not None and cid and sampler.needed(cid):
                ri, ci = sampler.indices(cid, n, c_off, r_off, tw, th)
                yield t["tile_id"], x[:, ri, ci]
            else:  # a cell of the scene's own zone: the window is the cell (or a window asked for as such)
                yield t["tile_id"], _resize(x, n)
        i = j


def window_has_valid_pixels(scene: dict, window: tuple[int, int, int, int]) -> bool:
    """Whether pixel window ``(col, row, width, height)`` of ``scene`` (as for :func:`read_scene_tiles`) holds at
    least one valid pixel: one that is finite, not nodata and inside the scene, in a band the spec marks valid
    (the pixels :func:`normalise` would not set to 0). Reads the window of every band of the layout (on the
    reference grid, as :func:`read_scene_tiles` does), then looks band by band."""
    spec = get_sensor(scene["sensor"])
    layout = spec.layout(scene["layout"])
    nodata = _file_nodata(scene, layout)
    clipped = clip_window(window, scene["width"], scene["height"])
    if clipped is None:
        return False
    c0, r0, c1, r1 = clipped
    fill = nodata_value(nodata)
    dn = _read_rows(scene, spec, r0, r1, 0 if fill is None else fill, c0, c1)
    return any(valid_pixels(dn[i], nodata).any() for i, b in enumerate(layout.bands) if spec.band(b).valid)
