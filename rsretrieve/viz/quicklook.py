"""Quicklooks of tiles and contact sheets of query results.

* optical: true colour from the spec's ``rgb_bands`` (reflectance 0..0.3 stretched, gamma 1/1.8);
* SAR: false colour R = VV, G = VH, B = VV - VH (dB, fixed ranges), the usual Sentinel-1 composite;
* hyperspectral: true colour from the bands the spec names (EnMAP: 667, 561, 492 nm).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rsretrieve.sensors import SensorSpec, get_sensor


def _physical(tile: np.ndarray, spec: SensorSpec, band: str) -> np.ndarray:
    """Normalised band -> physical units (reflectance or dB)."""
    b = spec.band(band)
    return tile[spec.band_index(b.name)].astype(np.float32) * b.std + b.mean


def quicklook(tile: np.ndarray, sensor: str) -> np.ndarray:
    """RGB uint8 (H, W, 3) of a normalised tile (C, H, W) of ``sensor``."""
    spec = get_sensor(sensor)
    valid = np.any(tile != 0, axis=0)
    if spec.family == "sar":
        vv, vh = (_physical(tile, spec, b) for b in (spec.band_names[0], spec.band_names[-1]))
        rgb = np.stack([(vv + 25) / 25, (vh + 32) / 25, (vv - vh) / 15], axis=-1)
    else:
        rgb = np.stack([_physical(tile, spec, b) for b in spec.rgb_bands[:3]], axis=-1) / 0.3
        rgb = np.clip(rgb, 0, 1) ** (1 / 1.8)
    rgb = np.clip(rgb, 0, 1)
    rgb[~valid] = 0
    return (rgb * 255).astype(np.uint8)


def contact_sheet(path: str | Path, query: tuple[np.ndarray, str, str], results: Sequence[tuple], title: str = "",
                  cols: int = 6) -> Path:
    """Write a PNG: the query tile and its results, each with its caption.

    Args:
        path: the PNG to write.
        query: (normalised tile (C, H, W), sensor, caption).
        results: (normalised tile, sensor, caption) per result, best first.
        title: a line above the sheet.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = [query, *results]
    rows = int(np.ceil(len(items) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.1 * cols, 2.45 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, (tile, sensor, caption) in enumerate(items):
        ax = axes.ravel()[i]
        ax.imshow(quicklook(tile, sensor), interpolation="nearest")
        ax.set_title(caption, fontsize=7, color="firebrick" if i == 0 else "black")
        if i == 0:
            for s in ax.spines.values():
                s.set_edgecolor("firebrick")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    from rsretrieve.viz.charts import save_png

    try:
        return save_png(fig, path, dpi=110)  # a sheet written earlier is never left half overwritten
    finally:
        plt.close(fig)
