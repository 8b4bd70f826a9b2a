"""Quicklooks of tiles and contact sheets of query results.

* optical: true colour from the spec's ``rgb_bands`` (reflectance 0..0.3 stretched, gamma 1/1.8);
* SAR: false colour R = VV, G = VH, B = VV - VH (dB, fixed ranges), the usual Sentinel-1 composite;
* hyperspectral: true colour from the bands the spec names (EnMAP: B048, B030, B016 at 667, 561, 492 nm). These are
  the bands nearest Sentinel-2's B04/B03/B02 (665, 560, 492 nm) on purpose: a common true-colour choice (torchgeo's
  EnMAP ``rgb_bands``, SNAP's 665/560/490 nm profiles for MERIS and OLCI), and the tiles of both sensors of one cell
  look alike on a contact sheet of cross-sensor hits, which bands at 640/550/460 nm would not give.

The stretches are fixed, not per tile, so that tiles on one sheet compare: dark water stays dark beside bright
fields. Nodata pixels (outside the scene, or nodata in the file) are transparent in :func:`quicklook` with
``alpha=True`` and a grey checkerboard on a contact sheet, never black, which is data (water in SAR, shadow).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rsretrieve.sensors import SensorSpec, get_sensor

#: SAR false colour: (low, high) dB of R = VV, G = VH, B = VV - VH
SAR_RANGES_DB = ((-25.0, 0.0), (-32.0, -7.0), (0.0, 15.0))
#: optical and hyperspectral true colour: reflectance mapped to 0..1, then gamma
REFLECTANCE_MAX, GAMMA = 0.3, 1 / 1.8
#: the two greys of the checkerboard that marks nodata on a contact sheet (squares of 1/8 of the tile)
_CHECKER = (np.uint8(205), np.uint8(235))


def _physical(tile: np.ndarray, spec: SensorSpec, band: str) -> np.ndarray:
    """Normalised band -> physical units (reflectance or dB)."""
    b = spec.band(band)
    return tile[spec.band_index(b.name)].astype(np.float32) * b.std + b.mean


def quicklook(tile: np.ndarray, sensor: str, alpha: bool = False) -> np.ndarray:
    """RGB uint8 (H, W, 3) of a normalised tile (C, H, W) of ``sensor``, north up (row 0 is the north edge).

    Nodata pixels (0 in every band of the normalised tile) are black; with ``alpha`` the result is RGBA
    (H, W, 4) and they are transparent (alpha 0) instead, every other pixel opaque.
    """
    spec = get_sensor(sensor)
    valid = np.any(tile != 0, axis=0)
    if spec.family == "sar":
        vv, vh = (_physical(tile, spec, b) for b in (spec.band_names[0], spec.band_names[-1]))
        rgb = np.stack([(c - lo) / (hi - lo) for c, (lo, hi) in zip((vv, vh, vv - vh), SAR_RANGES_DB)], axis=-1)
    else:
        rgb = np.stack([_physical(tile, spec, b) for b in spec.rgb_bands[:3]], axis=-1) / REFLECTANCE_MAX
        rgb = np.clip(rgb, 0, 1) ** GAMMA
    rgb = np.clip(rgb, 0, 1)
    rgb[~valid] = 0
    out = (rgb * 255).astype(np.uint8)
    if alpha:
        out = np.concatenate([out, np.where(valid, np.uint8(255), np.uint8(0))[..., None]], axis=-1)
    return out


def composite_legend(sensor: str) -> str:
    """One line saying what the quicklook of ``sensor`` shows, e.g. ``sentinel2: R/G/B = B04/B03/B02 ...``."""
    spec = get_sensor(sensor)
    if spec.family == "sar":
        vv, vh = spec.band_names[0], spec.band_names[-1]
        parts = [f"{c} = {n} [{lo:g}, {hi:g}] dB" for c, n, (lo, hi) in
                 zip("RGB", (vv, vh, f"{vv}-{vh}"), SAR_RANGES_DB)]
        return f"{sensor}: " + ", ".join(parts)
    bands = [spec.band(b) for b in spec.rgb_bands[:3]]
    nm = "/".join(f"{b.center_nm:.0f}" for b in bands if b.center_nm)
    return (f"{sensor}: R/G/B = {'/'.join(b.name for b in bands)}" + (f" ({nm} nm)" if nm else "")
            + f", reflectance 0-{REFLECTANCE_MAX:g}")


def on_checkerboard(rgba: np.ndarray, square: int | None = None) -> np.ndarray:
    """RGB uint8 of an RGBA quicklook with its transparent pixels shown as a grey checkerboard (nodata)."""
    h, w = rgba.shape[:2]
    square = square or max(1, max(h, w) // 8)
    yy, xx = np.indices((h, w))
    board = np.where(((yy // square + xx // square) % 2 == 0), *_CHECKER)
    out = rgba[..., :3].copy()
    out[rgba[..., 3] == 0] = board[rgba[..., 3] == 0, None]
    return out


def sheet_figure(query: tuple[np.ndarray, str, str], results: Sequence[tuple], title: str = "", cols: int = 6):
    """The contact sheet as a matplotlib ``Figure``: tiles north up, each caption under its tile, a legend line.

    Args:
        query: (normalised tile (C, H, W), sensor, caption).
        results: (normalised tile, sensor, caption) per result, best first.
        title: a line above the sheet.
        cols: tiles per row.
    """
    from matplotlib.figure import Figure

    items = [query, *results]
    cols = max(1, min(cols, len(items)))
    rows = int(np.ceil(len(items) / cols))
    lines = max(str(c).count("\n") + 1 for _, _, c in items)
    # inches: a 1.9" tile, its caption under it (7 pt lines), the title above, the legend below
    tile_in, cap_in = 1.9, 0.16 * lines + 0.12
    legend = [composite_legend(s) for s in dict.fromkeys(s for _, s, _ in items)] + \
        ["grey checkerboard: no data"]
    # at least 6.4" wide, so that the title and legend of a sheet of one or two tiles are not cut off; long lines
    # (a query file's path) wrap at the width
    grid_in = cols * (tile_in + 0.2)
    width = max(grid_in, 6.4)
    title_lines = textwrap.wrap(title, int(width * 72 / (9 * 0.62)), break_on_hyphens=False) if title else []
    legend = [w for line in legend for w in textwrap.wrap(line, int(width * 72 / (6 * 0.62)))]
    head_in, foot_in = 0.18 * len(title_lines) + 0.22, 0.11 * len(legend) + 0.15
    height = rows * (tile_in + cap_in) + head_in + foot_in
    fig = Figure(figsize=(width, height))
    for i, (tile, sensor, caption) in enumerate(items):
        r, c = divmod(i, cols)
        left = ((width - grid_in) / 2 + c * (tile_in + 0.2) + 0.1) / width
        bottom = 1 - (head_in + r * (tile_in + cap_in) + tile_in) / height
        ax = fig.add_axes((left, bottom, tile_in / width, tile_in / height))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.imshow(on_checkerboard(quicklook(tile, sensor, alpha=True)), interpolation="nearest", origin="upper")
        ax.text(0.5, -0.03, caption, transform=ax.transAxes, ha="center", va="top", fontsize=7,
                color="firebrick" if i == 0 else "black")
        for s in ax.spines.values():
            s.set_edgecolor("firebrick" if i == 0 else "none")
            s.set_linewidth(2 if i == 0 else 0)
    if title_lines:
        fig.text(0.5, 1 - 0.1 / height, "\n".join(title_lines), ha="center", va="top", fontsize=9)
    fig.text(0.01, 0.05 / height, "\n".join(legend), ha="left", va="bottom", fontsize=6, color="dimgrey")
    return fig


def contact_sheet(path: str | Path, query: tuple[np.ndarray, str, str], results: Sequence[tuple], title: str = "",
                  cols: int = 6) -> Path:
    """Write a PNG: the query tile and its results, each with its caption under it (see :func:`sheet_figure`).

    Args:
        path: the PNG to write.
        query: (normalised tile (C, H, W), sensor, caption).
        results: (normalised tile, sensor, caption) per result, best first.
        title: a line above the sheet.
        cols: tiles per row.
    """
    from rsretrieve.viz.charts import save_png

    # a sheet written earlier is never left half overwritten
    return save_png(sheet_figure(query, results, title, cols), path, dpi=110)
