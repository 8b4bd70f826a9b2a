"""Shared fixtures: the real samples (read in place, never copied into the project) and CLI runners."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def real_data_dir() -> Path:
    """``$RSRETRIEVE_REAL_DATA`` or ``../shared/data/real`` relative to the project root."""
    return Path(os.environ.get("RSRETRIEVE_REAL_DATA", ROOT.parent / "shared" / "data" / "real"))


@pytest.fixture(scope="session")
def real_data() -> Path:
    d = real_data_dir()
    if not (d / "README.md").is_file():
        pytest.skip(f"real samples not found at {d} (set RSRETRIEVE_REAL_DATA to their folder)")
    return d


def run_cli(*args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real ``rsretrieve`` command in a subprocess; returns the completed process (text output)."""
    e = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "rsretrieve.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=e, cwd=ROOT)


@pytest.fixture
def cli():
    return run_cli


def kill_cli_when(args, reached, delay: float = 0.0, timeout: float = 300) -> bool:
    """Start ``rsretrieve ARGS``; SIGKILL it ``delay`` s after ``reached()`` first returns true (polled every 5 ms).

    Returns whether it was killed (False: it exited first). Progress-based, not time-based: how long a run takes
    differs between a first run (cold caches, kernels compiled) and the resumed ones, and between machines.
    """
    import signal
    import time

    e = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen([sys.executable, "-m", "rsretrieve.cli", *map(str, args)], cwd=ROOT, env=e,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t_end = time.monotonic() + timeout
    try:
        while p.poll() is None and not reached():
            if time.monotonic() > t_end:
                raise TimeoutError(f"rsretrieve {' '.join(map(str, args))}: no progress within {timeout} s")
            time.sleep(0.005)
        time.sleep(delay)
        if p.poll() is not None:
            return False
        p.send_signal(signal.SIGKILL)
        return True
    finally:
        if p.poll() is None:
            p.kill()
        p.wait()


def write_tif(path, data, crs="EPSG:32633", origin=(500_000.0, 5_000_000.0), res=10.0, nodata=None, tags=None):
    """Write a small GeoTIFF (bands, rows, cols) with a north-up transform at ``origin`` (west, north)."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0], dtype=data.dtype,
                   nodata=nodata)
    if crs is not None:
        profile.update(crs=crs, transform=from_origin(*origin, res, res))
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if tags:
            dst.update_tags(**tags)
    return path


def s2_file(path, transform, crs, height=96, width=96):
    """A 12-band uint16 Sentinel-2 L2A GeoTIFF of random reflectances on ``transform`` in ``crs`` (nodata 0)."""
    import numpy as np
    import rasterio

    data = np.random.default_rng(0).integers(500, 3000, (12, height, width)).astype("uint16")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", count=12, height=height, width=width, dtype="uint16", crs=crs,
                       transform=transform, nodata=0) as dst:
        dst.write(data)
    return path


def cells_over(lon0: float, lat0: float, lon1: float, lat1: float, epsg: int, tile_m: float = 480.0) -> list[str]:
    """Ids of the cells of zone ``epsg`` (side ``tile_m``) over the lon/lat box: the same ground in several grids."""
    from rsretrieve.data.grid import cells_covering, transformer

    x, y = transformer("EPSG:4326", f"EPSG:{epsg}").transform([lon0, lon1, lon0, lon1], [lat0, lat0, lat1, lat1])
    return [c.id for c in cells_covering((min(x), min(y), max(x), max(y)), epsg, tile_m)]


def sqlite_steps(cat, fn) -> int:
    """SQLite virtual-machine steps (in thousands) that ``fn`` makes on the catalog ``cat``'s connection: a cost that
    does not depend on the machine's speed or load."""
    n = [0]

    def tick():
        n[0] += 1
        return 0

    cat.conn.set_progress_handler(tick, 1000)
    try:
        fn()
    finally:
        cat.conn.set_progress_handler(None, 0)
    return n[0]


def s1_scene(path, seed=0, size=96, **kw):
    """A plausible 2-band Sentinel-1 dB scene (float32)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    vv = -12 + 3 * rng.standard_normal((size, size))
    vh = vv - 7 + rng.standard_normal((size, size))
    return write_tif(path, np.stack([vv, vh]).astype("float32"), nodata=float("nan"), **kw)


SENSORS3 = ["sentinel1", "sentinel2", "enmap"]


def save_untrained_model(ws, name: str = "default", seed: int = 0, sensors=None) -> Path:
    """A model file of the cross-sensor encoder at random init (what a user's own checkpoint would be)."""
    import torch

    from rsretrieve.model.encoder import CrossSensorEncoder

    torch.manual_seed(seed)
    path = Path(ws) / "checkpoints" / name / "model.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    CrossSensorEncoder(list(sensors or SENSORS3)).save(path)
    return path


def save_user_sensor_model(ws, spec) -> Path:
    """WS/checkpoints/with_px/model.pt: a model of S1 + S2 extended with a branch for ``spec``, a sensor of the
    user's own (registered only while the model is made and saved)."""
    from rsretrieve.model.encoder import CrossSensorEncoder
    from rsretrieve.sensors.registry import register_sensor, unregister_sensor

    register_sensor(spec)
    try:
        model = CrossSensorEncoder(["sentinel1", "sentinel2"], dim=32)
        model.freeze_shared()
        model.add_sensor(spec.name)
        path = Path(ws) / "checkpoints" / "with_px" / "model.pt"
        path.parent.mkdir(parents=True)
        model.save(path)
    finally:
        unregister_sensor(spec.name)
    return path


def make_workspace(root, scenes: int = 2, seed: int = 5, size_m: float = 1920, index: bool = True) -> Path:
    """Synth + ingest (+ an untrained model and its index): a small real workspace for query tests."""
    from rsretrieve.data.catalog import Catalog
    from rsretrieve.data.ingest import ingest
    from rsretrieve.data.synthetic import make_archive

    root = Path(root)
    make_archive(root / "archive", scenes=scenes, seed=seed, size_m=size_m)
    ws = root / "ws"
    with Catalog(ws / "catalog.sqlite", tile_m=480) as cat:
        ingest([root / "archive"], cat)
    if index:
        from rsretrieve.index.indexer import index_workspace

        save_untrained_model(ws)
        index_workspace(ws)
    return ws


@pytest.fixture(scope="session")
def small_workspace(tmp_path_factory) -> Path:
    """Read-only for tests: 2 synthetic sites x 3 sensors, ingested and indexed with an untrained model."""
    return make_workspace(tmp_path_factory.mktemp("small"))
