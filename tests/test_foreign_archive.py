"""A user's own archive, not made by rsretrieve, through the real CLI: ingest -> train -> evaluate.

The archive comes from ``scripts/make_foreign_archive.py`` (standalone: no rsretrieve import, no RSRETRIEVE_* tags,
real product file names), so the sensor must be told from band count and dtype, and the time from the file name.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from tests.conftest import ROOT, run_cli

SCRIPT = ROOT / "scripts" / "make_foreign_archive.py"
PAIRS = {f"{a}->{b}" for a in ("sentinel1", "sentinel2", "enmap") for b in ("sentinel1", "sentinel2", "enmap")
         if a != b}

pytestmark = pytest.mark.slow


def make_foreign(out: Path, sites: int = 4, seed: int = 3, *extra: str) -> dict:
    """Run the generator as a user would; returns its manifest."""
    r = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--sites", str(sites), "--seed", str(seed),
                        "--size-m", "2880", "--workers", "1", *extra], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads((out / "manifest.json").read_text())


@pytest.fixture(scope="module")
def foreign(tmp_path_factory):
    root = tmp_path_factory.mktemp("foreign")
    manifest = make_foreign(root / "archive")
    ws = root / "ws"
    r = run_cli("ingest", root / "archive", "--workspace", ws, "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    return root / "archive", ws, manifest, json.loads(r.stdout)


def test_generator_imports_no_rsretrieve_writes_no_rsretrieve_tags_and_is_deterministic(tmp_path):
    code = (f"import runpy, sys; runpy.run_path({str(SCRIPT)!r}, run_name='not_main'); "
            "sys.exit(any(m == 'rsretrieve' or m.startswith('rsretrieve.') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], cwd=tmp_path, timeout=60).returncode == 0
    a, b = make_foreign(tmp_path / "a", 1, 7), make_foreign(tmp_path / "b", 1, 7)
    assert a == b
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    for f in files:
        da, db = (tmp_path / "a" / f).read_bytes(), (tmp_path / "b" / f).read_bytes()
        assert hashlib.sha1(da).digest() == hashlib.sha1(db).digest(), f
        if f.suffix.lower() == ".tif":
            with rasterio.open(tmp_path / "a" / f) as src:
                assert not [k for k in src.tags() if k.upper().startswith("RSRETRIEVE")], f
                assert src.crs.to_epsg() // 100 in (326, 327), f  # UTM north or south


def test_archive_has_the_promised_encodings_and_partial_footprints(foreign):
    archive, _, manifest, _ = foreign
    expect = {"sentinel1": (2, "float32", 10.0), "sentinel2": (12, "uint16", 10.0), "enmap": (224, "int16", 30.0)}
    bounds = {}
    for site in manifest["sites"]:
        for sensor, rel in site["files"].items():
            with rasterio.open(archive / rel) as src:
                assert (src.count, src.dtypes[0], src.res[0]) == expect[sensor], rel
                bounds.setdefault(site["site"], []).append(tuple(src.bounds))
                if sensor == "sentinel1":
                    assert math.isnan(src.nodata)
                if sensor == "enmap":
                    assert src.nodata == -32768
                    dead = src.read(133)  # 1366.69 nm: inside the 1.4 um water-vapour absorption
                    assert (dead == -32768).all() and (src.read(50) != -32768).any()
    assert {s["utm_zone"][-1] for s in manifest["sites"]} == {"N", "S"}
    assert any(len(set(b)) > 1 for b in bounds.values())  # footprints differ between sensors somewhere


def test_ingest_identifies_every_sensor_and_acquisition_time_without_tags(foreign):
    archive, ws, manifest, report = foreign
    assert report["report"]["problems"] == []
    assert report["report"]["added"] == 3 * len(manifest["sites"])
    assert report["report"]["label_sources"] == len(manifest["sites"])
    want = {str((archive / rel).resolve()): (sensor, site["acquired"][sensor])
            for site in manifest["sites"] for sensor, rel in site["files"].items()}
    from rsretrieve.data.catalog import Catalog

    with Catalog(ws / "catalog.sqlite") as cat:
        got = {s["key"]: (s["sensor"], s["acquired"]) for s in cat.scenes()}
        enmap_aux = [s["aux"] for s in cat.scenes("enmap")]
        layouts = {(s["sensor"], s["layout"]) for s in cat.scenes()}
    assert got == want
    # the S2 products are of baseline 05.09/05.10 (DN = reflectance x 10000 + 1000): read with the offset
    assert layouts == {("sentinel1", "full"), ("sentinel2", "full+N0400"), ("enmap", "full")}
    assert all("QL_QUALITY_CLOUD" in a for a in enmap_aux)  # the L2A cloud mask is attached to its cube
    per = report["catalog"]["sensors"]
    assert set(per) == {"sentinel1", "sentinel2", "enmap"}
    assert all(per[s]["tiles"] > 0 for s in per)


def test_train_then_evaluate_reports_all_six_pairs_with_queries_and_gallery(foreign):
    _, ws, _, _ = foreign
    r = run_cli("train", "--config", ROOT / "configs/demo.yaml", "--workspace", ws, "--data.batch_size", "16",
                "--data.block", "2", "--trainer.max_epochs", "1", "--trainer.max_time", "null",
                "--trainer.enable_model_summary", "false")
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_cli("evaluate", "--workspace", ws, "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads(r.stdout)
    assert set(rep["tiles"]) == {"sentinel1", "sentinel2", "enmap"} and min(rep["tiles"].values()) > 0
    assert set(rep["models"]) >= {"default", "untrained", "band_stats"}
    for m in rep["models"].values():
        assert set(m["pairs"]) == PAIRS
        for p in m["pairs"].values():
            assert p["queries"] > 0 and p["gallery"] > 0
            assert 0 <= p["recall@1"] <= p["recall@10"] <= 1


def test_s1_file_with_nodata_minus9999_gives_tiles_with_those_pixels_zeroed(foreign, tmp_path):
    from rsretrieve.data.catalog import Catalog
    from rsretrieve.data.ingest import ingest
    from rsretrieve.data.tiles import read_scene_tiles

    archive, _, manifest, _ = foreign
    src_path = archive / manifest["sites"][0]["files"]["sentinel1"]
    with rasterio.open(src_path) as src:
        data, profile = src.read(), src.profile
    data[np.isnan(data)] = -9999.0
    rows, cols = np.mgrid[0:data.shape[1], 0:data.shape[2]]
    data[:, cols < 20 + rows // 2] = -9999.0  # a slanted swath edge: the west side holds no data
    profile.update(nodata=-9999.0)
    out = tmp_path / "S1" / src_path.name
    out.parent.mkdir()
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data)
    with Catalog(tmp_path / "catalog.sqlite", tile_m=480) as cat:
        assert ingest([out.parent], cat).problems == []
        lows = [float(a.min()) for s in cat.scenes()
                for _, a in read_scene_tiles(s, cat.tiles(), cat.tile_m)]
    assert lows and min(lows) > -20  # normalised dB: nodata becomes 0, real values lie within a few std
