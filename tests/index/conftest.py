"""Synthetic tiles (seeded) and brute-force references shared by the index tests."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest
import shapely

from rsretrieve.index.filters import QueryFilter
from rsretrieve.index.segment import TIME_UNKNOWN
from rsretrieve.index.store import IndexStore

DIM = 128
SENSORS = ("sentinel1", "sentinel2", "enmap")
#: (W, S, E, N, share of tiles); the last one crosses the antimeridian (E > 180 wraps)
REGIONS = ((-10, 36, 30, 60, 0.35), (70, 8, 90, 30, 0.2), (-105, 30, -80, 48, 0.2), (115, -35, 150, -15, 0.1),
           (170, -25, 190, -10, 0.15))
T0 = int(datetime(2017, 1, 1, tzinfo=timezone.utc).timestamp())
T1 = int(datetime(2025, 1, 1, tzinfo=timezone.utc).timestamp())


def make_tiles(n: int, seed: int = 0, dim: int = DIM) -> dict[str, np.ndarray]:
    """Clustered unit vectors with places, times, sensors, cells (4 tiles per cell on average) and scenes."""
    rng = np.random.default_rng(seed)
    n_cells = max(n // 4, 1)
    share = np.array([r[4] for r in REGIONS])
    region = rng.choice(len(REGIONS), n_cells, p=share / share.sum())
    box = np.array([r[:4] for r in REGIONS], dtype=float)
    clon = rng.uniform(box[region, 0], box[region, 2])
    clon = np.where(clon > 180, clon - 360, clon)
    clat = rng.uniform(box[region, 1], box[region, 3])
    centres = rng.standard_normal((64, dim)).astype(np.float32)
    cluster = rng.integers(0, 64, n_cells)
    cell_vec = centres[cluster] + 0.6 * rng.standard_normal((n_cells, dim)).astype(np.float32)
    cell = rng.integers(0, n_cells, n)
    vectors = cell_vec[cell] + 0.5 * rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    time = rng.integers(T0, T1, n)
    time[rng.random(n) < 0.02] = TIME_UNKNOWN
    return {"vectors": vectors, "tile_ids": np.arange(1000, 1000 + n, dtype=np.int64),
            "lon": np.clip(clon[cell] + rng.uniform(-0.002, 0.002, n), -180, 180), "lat": clat[cell],
            "time": time, "sensor_names": np.array(SENSORS)[rng.choice(3, n, p=[0.4, 0.4, 0.2])],
            "cell_ids": np.array([f"c{c:06d}" for c in cell]), "scene_ids": (cell // 40).astype(np.int64)}


def subset(tiles: dict[str, np.ndarray], sl: slice) -> dict[str, np.ndarray]:
    """Rows ``sl`` of every column, as keyword arguments of ``IndexStore.add_segment``."""
    return {k: v[sl] for k, v in tiles.items()}


def brute_mask(tiles: dict[str, np.ndarray], flt: QueryFilter) -> np.ndarray:
    """Which tiles match ``flt``, computed straight from the definitions with numpy and shapely."""
    lon, lat, t = tiles["lon"], tiles["lat"], tiles["time"]
    ok = np.ones(lon.size, dtype=bool)
    if flt.bbox is not None:
        w, s, e, n = flt.bbox
        ok &= ((lon >= w) & (lon <= e) if w <= e else (lon >= w) | (lon <= e)) & (lat >= s) & (lat <= n)
    if flt.polygon is not None:
        ok &= shapely.intersects_xy(flt.polygon, lon, lat)
    lo, hi = flt.time_range()
    if lo is not None:
        ok &= (t >= lo) & (t != TIME_UNKNOWN)
    if hi is not None:
        ok &= (t <= hi) & (t != TIME_UNKNOWN)
    if flt.sensors is not None:
        ok &= np.isin(tiles["sensor_names"], sorted(flt.sensors))
    ok &= ~np.isin(tiles["scene_ids"], sorted(flt.exclude_scene_ids))
    ok &= ~np.isin(tiles["cell_ids"], sorted(flt.exclude_cell_ids))
    return ok


def brute_topk(tiles: dict[str, np.ndarray], q: np.ndarray, mask: np.ndarray, k: int,
               one_per_cell: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k (tile ids, scores) of one query over the tiles in ``mask`` by numpy sort."""
    idx = np.flatnonzero(mask)
    scores = tiles["vectors"][idx] @ q
    order = np.argsort(-scores, kind="stable")
    if one_per_cell:
        _, first = np.unique(tiles["cell_ids"][idx[order]], return_index=True)
        order = order[np.sort(first)]
    return tiles["tile_ids"][idx[order[:k]]], scores[order[:k]]


def queries(tiles: dict[str, np.ndarray], nq: int, seed: int = 1) -> np.ndarray:
    """Noisy copies of random tiles, L2-normalised, (nq, d) float32."""
    rng = np.random.default_rng(seed)
    q = tiles["vectors"][rng.integers(0, len(tiles["tile_ids"]), nq)]
    q = q + 0.3 * rng.standard_normal(q.shape).astype(np.float32) / np.sqrt(q.shape[1])
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="session")
def tiles() -> dict[str, np.ndarray]:
    return make_tiles(24_000)


@pytest.fixture(scope="session")
def store(tiles, tmp_path_factory) -> IndexStore:
    """Two segments: 14k rows exact only, 10k rows with an IVF index."""
    st = IndexStore.create(tmp_path_factory.mktemp("index"), DIM, "model-a")
    st.add_segment(**subset(tiles, slice(0, 14_000)), factory=None)
    st.add_segment(**subset(tiles, slice(14_000, None)), factory="IVF64,Flat")
    return IndexStore.open(st.root, "model-a", DIM)
