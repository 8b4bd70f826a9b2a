"""Tests of the synthetic archive generator: file layout, GeoTIFF structure, geometry, physics, determinism."""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from rasterio.transform import Affine

from rsretrieve.data import _spectra as sp
from rsretrieve.data.synthetic import ANTIMERIDIAN_SITE, CLASSES, make_archive
from rsretrieve.sensors import get_sensor

SENSORS = ("sentinel1", "sentinel2", "enmap", "landsat8")
SIZE_M = 960.0  # 96 px at 10 m, 32 px at 30 m
N_SCENES = 8  # the 8th site (RSR007) straddles the antimeridian
NAME_RE = {
    "sentinel1": r"S1A_IW_GRDH_1SDV_(\d{8}T\d{6})_RSR\d{3}\.tif",
    "sentinel2": r"S2B_MSIL2A_(\d{8}T\d{6})_RSR\d{3}\.tif",
    "enmap": r"ENMAP01-____L2A-DT0000000\d{3}_(\d{8}T\d{6})Z_001_V010110_\d{8}T\d{6}Z-RSR\d{3}-SPECTRAL_IMAGE\.TIF",
    "landsat8": r"LC08_L2SP_\d{6}_(\d{8})_\d{8}_02_T1_RSR\d{3}\.tif",
}


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth") / "archive"
    return out, make_archive(out, N_SCENES, sensors=SENSORS, seed=3, size_m=SIZE_M)


def _read(out: Path, rel: str) -> np.ndarray:
    with rasterio.open(out / rel) as src:
        return src.read()


def _reflectance(out: Path, scene: dict, sensor: str) -> np.ndarray:
    spec = get_sensor(sensor)
    return _read(out, scene["files"][sensor]).astype(np.float64) * spec.scale + spec.offset


def _clear(refl: np.ndarray, sensor: str) -> np.ndarray:
    """Pixels the spec's own cloud test does not flag: (H, W) bool."""
    spec = get_sensor(sensor)
    return ~spec.cloud_test.flag(lambda b: refl[spec.band_index(b)], np.ones(refl.shape[1:], bool))


def _tiff_tags(path: Path) -> set[int]:
    """Tag numbers of the first IFD of a classic TIFF (322 = TileWidth, 323 = TileLength)."""
    data = path.read_bytes()
    order = "<" if data[:2] == b"II" else ">"
    (ifd,) = struct.unpack(order + "I", data[4:8])
    (count,) = struct.unpack(order + "H", data[ifd:ifd + 2])
    return {struct.unpack(order + "H", data[ifd + 2 + 12 * i: ifd + 4 + 12 * i])[0] for i in range(count)}


def test_summary_lists_every_file_with_provider_like_names(archive):
    out, summary = archive
    assert json.loads((out / "archive.json").read_text()) == summary
    assert summary["classes"] == list(CLASSES) and summary["seed"] == 3
    assert [s["site"] for s in summary["scenes"]] == [f"RSR{i:03d}" for i in range(N_SCENES)]
    for scene in summary["scenes"]:
        assert (out / scene["landcover"]).is_file()
        assert scene["landcover"] == f"truth/{scene['site']}_landcover.tif"
        for sensor in SENSORS:
            rel = scene["files"][sensor]
            folder, name = rel.split("/")
            assert folder == sensor and (out / rel).is_file()
            match = re.fullmatch(NAME_RE[sensor], name)
            assert match and name.endswith(f"{scene['site']}.tif" if sensor != "enmap" else "SPECTRAL_IMAGE.TIF")
            compact = scene["acquired"][sensor].replace("-", "").replace(":", "").rstrip("Z")
            assert compact.startswith(match.group(1))  # the acquisition time (Landsat: date) is in the name
            assert get_sensor(sensor).matches_name(name)
        dates = sorted({scene["acquired"][s][:10] for s in SENSORS})
        assert len(dates) == len(SENSORS)  # every sensor on its own day, within a few weeks
        assert (date.fromisoformat(dates[-1]) - date.fromisoformat(dates[0])).days <= 45


@pytest.mark.parametrize("sensor", SENSORS)
def test_geotiff_structure_follows_the_sensor_spec(archive, sensor):
    out, summary = archive
    spec = get_sensor(sensor)
    scene = summary["scenes"][0]
    path = out / scene["files"][sensor]
    west, south, east, north = scene["bounds"]
    px = round(SIZE_M / spec.gsd)
    with rasterio.open(path) as src:
        assert src.crs.to_epsg() == scene["epsg"] and scene["epsg"] // 100 in (326, 327)
        assert src.transform == Affine(spec.gsd, 0, west, 0, -spec.gsd, north)
        assert (src.width, src.height, src.count) == (px, px, spec.num_bands)
        assert src.dtypes[0] == spec.dtype
        assert (math.isnan(src.nodata) and math.isnan(spec.nodata)) or src.nodata == spec.nodata
        assert src.descriptions == spec.band_names
        assert src.block_shapes[0] == (px, px)  # 96 and 32 px: one tile, a multiple of 16
        structure = src.tags(ns="IMAGE_STRUCTURE")
        assert structure["COMPRESSION"] == "DEFLATE"
        assert structure["PREDICTOR"] == ("3" if spec.dtype.startswith("float") else "2")
        tags = src.tags()
    assert {322, 323} <= _tiff_tags(path)
    assert tags["RSRETRIEVE_SENSOR"] == sensor
    assert tags["ACQUISITION_DATETIME"] == scene["acquired"][sensor]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", tags["ACQUISITION_DATETIME"])
    iso = tags["ACQUISITION_DATETIME"]
    assert tags["TIFFTAG_DATETIME"] == f"{iso[:4]}:{iso[5:7]}:{iso[8:10]} {iso[11:19]}"


def test_default_size_uses_256_px_tiles(tmp_path):
    summary = make_archive(tmp_path / "a", 1, sensors=("sentinel2",), seed=0, size_m=2700.0)
    with rasterio.open(tmp_path / "a" / summary["scenes"][0]["files"]["sentinel2"]) as src:
        assert (src.width, src.block_shapes[0], src.profile["tiled"]) == (270, (256, 256), True)


def test_landcover_truth_has_several_classes_per_site(archive):
    out, summary = archive
    for scene in summary["scenes"]:
        with rasterio.open(out / scene["landcover"]) as src:
            lc = src.read(1)
            assert (src.dtypes[0], src.nodata, src.res) == ("uint8", 255.0, (10.0, 10.0))
            assert src.tags()["RSRETRIEVE_ROLE"] == "landcover"
            assert src.tags()["RSRETRIEVE_CLASSES"] == "water,forest,grassland,cropland,urban,bare_soil,wetland"
            assert list(src.bounds) == scene["bounds"]
        counts = np.bincount(lc.ravel(), minlength=256)
        assert counts[len(CLASSES):].sum() == 0
        assert (counts[:len(CLASSES)] >= 0.01 * lc.size).sum() >= 3
        assert scene["class_fractions"] == {c: round(counts[i] / lc.size, 6) for i, c in enumerate(CLASSES)}


def test_sensors_of_a_site_share_bounds_on_nested_grids(archive):
    out, summary = archive
    for scene in summary["scenes"]:
        west, south, east, north = scene["bounds"]
        assert east - west == north - south == SIZE_M and west % 30 == 0 and north % 30 == 0
        for rel in [scene["landcover"], *scene["files"].values()]:
            with rasterio.open(out / rel) as src:
                assert list(src.bounds) == scene["bounds"]


def test_sites_span_utm_zones_on_both_hemispheres(archive):
    _, summary = archive
    epsgs = {s["epsg"] for s in summary["scenes"]}
    assert len(epsgs) >= 6 and any(e // 100 == 326 for e in epsgs) and any(e // 100 == 327 for e in epsgs)
    for scene in summary["scenes"]:
        west, south, _, _ = scene["bounds"]
        if not scene["crosses_antimeridian"]:
            assert 300_000 <= west <= 700_000 - SIZE_M
        assert 0 < south < 10_000_000


def test_one_site_straddles_the_antimeridian(archive):
    _, summary = archive
    crossing = [s for s in summary["scenes"] if s["crosses_antimeridian"]]
    assert [s["site"] for s in crossing] == [f"RSR{ANTIMERIDIAN_SITE:03d}"]
    scene = crossing[0]
    assert scene["epsg"] == 32660
    to_lonlat = Transformer.from_crs("EPSG:32660", "EPSG:4326", always_xy=True)
    west, south, east, north = scene["bounds"]
    for y in (south, north):
        lon_w, lat = to_lonlat.transform(west, y)
        lon_e, _ = to_lonlat.transform(east, y)
        assert 179.9 < lon_w < 180 and -180 < lon_e < -179.9  # going east, the 180-degree meridian is crossed
        assert 65 < lat < 66


def test_enmap_water_vapour_bands_are_entirely_nodata(archive):
    out, summary = archive
    spec = get_sensor("enmap")
    invalid = ~np.array(spec.valid_mask)
    assert invalid.sum() == 22
    data = _read(out, summary["scenes"][1]["files"]["enmap"])
    assert (data[invalid] == -32768).all()
    assert not (data[~invalid] == -32768).any()


def test_sentinel2_vegetation_water_and_red_edge(archive):
    out, summary = archive
    b = get_sensor("sentinel2").band_index
    veg_ok, water_ok, forest_rise = [], [], []
    for scene in summary["scenes"]:
        refl = _reflectance(out, scene, "sentinel2")
        lc = _read(out, scene["landcover"])[0]
        clear = _clear(refl, "sentinel2")
        nir_minus_red = refl[b("B08")] - refl[b("B04")]
        veg_ok.append(nir_minus_red[clear & np.isin(lc, [1, 2])] > 0)
        water_ok.append(nir_minus_red[clear & (lc == 0)] < 0)
        forest = clear & (lc == 1)
        forest_rise.append(refl[b("B07")][forest] - refl[b("B05")][forest])
    veg, water, rise = (np.concatenate(x) for x in (veg_ok, water_ok, forest_rise))
    assert veg.size > 10_000 and veg.mean() > 0.99  # NIR > red on forest and grassland
    assert water.size > 1_000 and water.mean() > 0.95  # NIR < red on open water
    assert rise.size > 1_000 and rise.mean() > 0.12  # red edge: B07 (783 nm) well above B05 (704 nm)


def test_optical_sensors_agree_on_the_same_ground(archive):
    """Band-integrated NIR at ~865 nm: EnMAP and Landsat 8 match Sentinel-2 B8A averaged to 30 m."""
    out, summary = archive
    enmap = get_sensor("enmap")
    k = int(np.argmin([abs(w - 864.7) if enmap.band(n).valid else 1e9 for n, w in zip(enmap.band_names,
                                                                                       enmap.wavelengths)]))
    for other, band in (("enmap", k), ("landsat8", get_sensor("landsat8").band_index("SR_B5"))):
        a, b_ = [], []
        for scene in summary["scenes"]:
            s2 = _reflectance(out, scene, "sentinel2")
            s2_30 = s2.reshape(len(s2), 32, 3, 32, 3).mean(axis=(2, 4))
            o = _reflectance(out, scene, other)
            clear = _clear(s2, "sentinel2").reshape(32, 3, 32, 3).all(axis=(1, 3)) & _clear(o, other)
            a.append(s2_30[get_sensor("sentinel2").band_index("B8A")][clear])
            b_.append(o[band][clear])
        a, b_ = np.concatenate(a), np.concatenate(b_)
        assert np.corrcoef(a, b_)[0, 1] > 0.9
        assert abs(np.mean(a - b_)) < 0.03


def test_sar_water_is_much_darker_than_urban(archive):
    out, summary = archive
    water, urban = [], []
    for scene in summary["scenes"]:
        s1 = _read(out, scene["files"]["sentinel1"])
        assert s1.dtype == np.float32 and np.isfinite(s1).all()  # no clouds, no gaps
        lc = _read(out, scene["landcover"])[0]
        water.append(s1[0][lc == 0])
        urban.append(s1[0][lc == 4])
    water, urban = np.concatenate(water), np.concatenate(urban)
    assert water.size > 1000 and urban.size > 1000
    assert urban.mean() - water.mean() > 10  # dB, VV
    assert -24 < water.mean() < -17


def test_clouds_only_in_optical_scenes_and_not_in_all(archive):
    out, summary = archive
    fractions = []
    for scene in summary["scenes"]:
        assert set(scene["cloud_fraction"]) == {"sentinel2", "enmap", "landsat8"}
        for sensor, cf in scene["cloud_fraction"].items():
            assert 0 <= cf <= 0.31
            flagged = 1 - _clear(_reflectance(out, scene, sensor), sensor).mean()
            if cf == 0:
                assert flagged < 0.01
            else:  # the spec's cloud test finds about the share of pixels at least half covered
                assert 0.5 * cf <= flagged <= 1.6 * cf + 0.01
            fractions.append(cf)
    assert 0 < sum(f == 0 for f in fractions) < len(fractions)


def test_clouds_false_gives_clear_scenes(tmp_path):
    summary = make_archive(tmp_path / "a", 2, sensors=("sentinel2", "enmap"), seed=1, size_m=480, clouds=False)
    assert all(cf == 0 for s in summary["scenes"] for cf in s["cloud_fraction"].values())


def _hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files(tmp_path):
    args = {"scenes": 2, "sensors": ("sentinel1", "sentinel2", "enmap"), "size_m": 480.0}
    make_archive(tmp_path / "a", seed=5, **args)
    make_archive(tmp_path / "b", seed=5, **args)
    make_archive(tmp_path / "c", seed=6, **args)
    a, b, c = _hashes(tmp_path / "a"), _hashes(tmp_path / "b"), _hashes(tmp_path / "c")
    assert len(a) == 2 * 4 + 1 and a == b
    assert not set(a.values()) & set(c.values())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sensors": ("sentinel2", "modis")}, "unknown sensor 'modis'"),
        ({"sensors": ("sentinel2", "sentinel2")}, "listed twice"),
        ({"scenes": 0}, "scenes must be an integer >= 1"),
        ({"size_m": 1000.0}, "positive multiple of 30"),
        ({"size_m": -30.0}, "positive multiple of 30"),
        ({"size_m": 0}, "positive multiple of 30"),
        ({"seed": -1}, "seed must be a non-negative integer"),
    ],
)
def test_bad_arguments_raise_value_error(tmp_path, kwargs, message):
    args = {"scenes": 1, "sensors": ("sentinel2",), "size_m": 480.0} | kwargs
    with pytest.raises(ValueError, match=re.escape(message)):
        make_archive(tmp_path / "out", **args)
    assert not (tmp_path / "out").exists()


def test_output_directory_must_be_empty_or_hold_the_same_archive(tmp_path):
    args = {"scenes": 1, "sensors": ("sentinel1",), "size_m": 480.0, "seed": 2}
    make_archive(tmp_path / "a", **args)
    before = _hashes(tmp_path / "a")
    make_archive(tmp_path / "a", **args)  # same arguments: written again, identically
    assert _hashes(tmp_path / "a") == before
    with pytest.raises(ValueError, match="not empty"):
        make_archive(tmp_path / "a", **(args | {"seed": 3}))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        make_archive(tmp_path / "b", **args)
    with pytest.raises(ValueError, match="not a directory"):
        make_archive(tmp_path / "b" / "keep.txt", **args)


def test_band_integration_of_a_linear_spectrum_gives_its_value_at_the_centre():
    resp = sp.response_matrix(np.array([500.0, 1600.0]), np.array([50.0, 90.0]))
    assert resp.sum(axis=1) == pytest.approx([1.0, 1.0])
    assert resp @ (0.1 + 1e-4 * sp.GRID_NM) == pytest.approx([0.15, 0.26], abs=1e-9)


def test_vegetation_spectrum_has_its_textbook_features():
    wl = np.array([480.0, 555.0, 670.0, 700.0, 760.0, 850.0, 1450.0, 1650.0, 1940.0, 2200.0])
    r = dict(zip(wl, sp.vegetation(wl, nir=0.35, green=0.05, red_edge=720, water=1.0)))
    assert r[555] > r[480] and r[555] > r[670]  # green peak
    assert r[670] < 0.04 and r[850] == pytest.approx(0.35, abs=0.005)  # red absorption, NIR plateau
    assert r[700] < r[760] < r[850]  # red edge
    assert r[1450] < 0.6 * r[1650] and r[1940] < 0.5 * r[2200]  # water absorption dips


@pytest.mark.parametrize(("args", "message"), [
    (["--scenes", "0"], "--scenes must be an integer >= 1, got 0"),
    (["--size-m", "100"], "--size-m must be a positive multiple of 30 m, got 100.0"),
    (["--seed", "-1"], "--seed must be a non-negative integer, got -1"),
    (["--sensors", "sentinel2,modis"], "--sensors: unknown sensor 'modis'; known sensors: enmap"),
    (["--sensors", "sentinel2,sentinel2"], "--sensors: sensor 'sentinel2' is listed twice"),
])
def test_synth_errors_name_the_option_the_user_typed(tmp_path, args, message):
    # the generator's messages named its Python arguments (size_m, scenes), which the CLI does not have
    from tests.conftest import run_cli

    r = run_cli("synth", tmp_path / "out", *args)
    assert r.returncode == 2
    assert r.stderr.startswith(f"rsretrieve synth: error: {message}") and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
