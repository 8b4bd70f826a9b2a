"""A file's pixel type is checked against its sensor's: a type that cannot hold the sensor's values is refused in one
line naming the type found, the one expected and what to do; a safe equivalent is ingested and reads the same."""

import sqlite3

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from rsretrieve.data.catalog import Catalog
from rsretrieve.data.ingest import ingest
from rsretrieve.data.scene import dn_range, dtype_problem
from rsretrieve.data.tiles import read_scene_tiles
from rsretrieve.sensors import get_sensor, list_sensors
from tests.conftest import write_tif

S2 = "S2A_MSIL2A_20200101T100000"
S1 = "S1A_IW_GRDH_1SDV_20200101T000000"


def _s2_dn(seed=0, shape=(12, 100, 140)):
    """Sentinel-2 L2A DN (reflectance x 1e4) of a plausible scene: 300..4000."""
    return np.random.default_rng(seed).integers(300, 4000, shape)


def _s1_db(seed=0, size=96):
    rng = np.random.default_rng(seed)
    vv = -12 + 3 * rng.standard_normal((size, size))
    return np.stack([vv, vv - 7 + rng.standard_normal((size, size))])


def _rejected(stderr):
    return [line for line in stderr.splitlines() if line.startswith("rejected: ")]


# -- the policy, type by type ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list_sensors())
def test_every_sensor_accepts_its_own_type_in_every_layout(name):
    spec = get_sensor(name)
    for lname, layout in spec.layouts.items():
        assert dtype_problem(layout.dtype, spec, lname) is None, (name, lname)


def test_dn_range_is_reflectance_0_to_1_through_scale_and_offset_within_the_type():
    assert dn_range(get_sensor("sentinel2")) == (0, 10000)  # 1 / 1e-4
    assert dn_range(get_sensor("enmap")) == (0, 10000)
    assert dn_range(get_sensor("landsat8")) == (7272, 43637)  # 0.2 / 2.75e-5 = 7272.7; 1.2 / 2.75e-5 = 43636.4
    assert dn_range(get_sensor("landsat7"), "rgb_byte") == (0, 255)  # 1 / 0.0015686 = 637.5: capped by uint8


@pytest.mark.parametrize(("sensor", "found", "accepted"), [
    ("sentinel2", "int16", True),  # DN 0..10000 fit in -32768..32767: the same numbers
    ("sentinel2", "int32", True),
    ("sentinel2", "uint8", False),  # 0..255 cannot be DN 0..10000
    ("sentinel2", "float32", False),  # float pixels are reflectance far more often than DN
    ("sentinel2_l1c", "float64", False),
    ("landsat8", "int16", False),  # DN 43637 (reflectance 1) > 32767
    ("landsat8", "uint32", True),
    ("enmap", "uint16", True),
    ("enmap", "int8", False),
    ("enmap", "float32", False),
    ("sentinel1", "float64", True),  # dB at another precision
    ("sentinel1", "float16", True),
    ("sentinel1", "uint16", False),  # raw amplitude DN
    ("sentinel1", "int16", False),  # dB x 100, or rounded dB
    ("sentinel1", "complex64", False),  # single-look complex
])
def test_type_is_accepted_only_when_it_can_hold_the_sensors_values(sensor, found, accepted):
    assert (dtype_problem(found, get_sensor(sensor)) is None) == accepted


@pytest.mark.parametrize("found", ["uint16", "int16", "uint32"])
def test_an_8bit_display_stretch_layout_takes_only_8bit_files(found):
    # reflectance 0..1 would need DN 0..638 at its scale: the layout is a stretch onto uint8, not a DN encoding that
    # a wider type holds unchanged (a 3-band uint16 raster is not Landsat-7's 8-bit composite)
    assert dtype_problem(found, get_sensor("landsat7"), "rgb_byte").startswith(
        f"{found} pixels, but landsat7 rgb_byte files hold uint8 DN (reflectance = DN * 0.0015686), a stretch onto the "
        "whole uint8 range")


def test_refusals_name_the_type_found_the_type_expected_and_what_to_do():
    s2, l8, s1 = get_sensor("sentinel2"), get_sensor("landsat8"), get_sensor("sentinel1")
    assert dtype_problem("float32", s2) == (
        "float32 pixels, but sentinel2 files hold uint16 DN (reflectance = DN * 0.0001): float values such as "
        "reflectance would be read as DN; write the file as uint16 DN = round(reflectance / 0.0001) (or cast it to "
        "uint16 if it holds DN already)")
    assert "write the file as uint16 DN = round((reflectance + 0.2) / 2.75e-05)" in dtype_problem("float32", l8)
    assert dtype_problem("int16", l8).startswith(
        "int16 pixels, but landsat8 files hold uint16 DN (reflectance = DN * 2.75e-05 - 0.2), and int16 cannot hold "
        "DN 7272..43637 (reflectance 0..1)")
    assert dtype_problem("uint16", s1) == (
        "uint16 pixels, but sentinel1 files hold float32 sigma0 in dB: integer pixels are raw DN or scaled values, "
        "not sigma0 in dB; convert it to float32 sigma0 in dB (10 * log10 of calibrated linear sigma0)")


# -- through the CLI ------------------------------------------------------------------------------------------------
def test_wrong_types_and_linear_sar_are_rejected_in_one_line_safe_equivalents_ingested(cli, tmp_path):
    d = tmp_path / "archive"
    dn = _s2_dn()
    db = _s1_db()
    origin = {"origin": (400_000.0, 5_400_000.0)}
    refused = {
        f"{S2}_refl.tif": write_tif(d / f"{S2}_refl.tif", (dn / 1e4).astype("float32"), **origin),
        f"{S2}_8bit.tif": write_tif(d / f"{S2}_8bit.tif", (dn // 16).astype("uint8"), nodata=0, **origin),
        f"{S1}_linear.tif": write_tif(d / f"{S1}_linear.tif", (10 ** (db / 10)).astype("float32"),
                                      nodata=float("nan")),
        f"{S1}_dn.tif": write_tif(d / f"{S1}_dn.tif", np.full((2, 96, 96), 180, "uint16")),
    }
    # a per-band product whose B04 was saved as float reflectance: the message names the band file
    bands = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]
    prod = d / "product"
    for i, b in enumerate(bands):
        band = dn[i] / 1e4 if b == "B04" else dn[i]
        write_tif(prod / f"{S2}_T33UUP_{b}.tif", band.astype("float32" if b == "B04" else "uint16"), **origin)
    accepted = [
        write_tif(d / f"{S2}_int16.tif", dn.astype("int16"), nodata=0, **origin),
        write_tif(d / f"{S1}_f64.tif", db.astype("float64"), nodata=float("nan")),
        # dB with a fill of 0 over 60% of it and no nodata value (as some terrain-corrected exports): still dB
        write_tif(d / f"{S1}_zerofill.tif", np.where(np.arange(96) < 58, 0.0, db).astype("float32")),
    ]
    r = cli("ingest", d, "--workspace", tmp_path / "ws")
    assert r.returncode == 1 and "Traceback" not in r.stderr + r.stdout
    rejected = _rejected(r.stderr)
    assert len(rejected) == len(refused) + 1, r.stderr
    expect = {
        f"{S2}_refl.tif": "float32 pixels, but sentinel2 files hold uint16 DN (reflectance = DN * 0.0001)",
        f"{S2}_8bit.tif": "uint8 pixels, but sentinel2 files hold uint16 DN (reflectance = DN * 0.0001), and uint8 "
                          "cannot hold DN 0..10000 (reflectance 0..1)",
        f"{S1}_linear.tif": "band VV holds linear sigma0, not dB (100% of its pixels lie in 0..1, where sigma0 in dB "
                            "almost never does), but sentinel1 files hold sigma0 in dB: convert it, dB = 10 * "
                            "log10(linear sigma0)",
        f"{S1}_dn.tif": "uint16 pixels, but sentinel1 files hold float32 sigma0 in dB",
    }
    for name, reason in expect.items():
        line = next((x for x in rejected if x.startswith(f"rejected: {refused[name]}: ")), None)
        assert line is not None, f"{name} not reported:\n{r.stderr}"
        assert reason in line, line
    line = next(x for x in rejected if x.startswith(f"rejected: {prod / S2}_T33UUP*: "))
    assert f"band file {S2}_T33UUP_B04.tif: float32 pixels, but sentinel2 files hold uint16 DN" in line
    assert f"{len(accepted)} scenes added" in r.stdout
    con = sqlite3.connect(tmp_path / "ws" / "catalog.sqlite")
    assert sorted(k for (k,) in con.execute("SELECT key FROM scenes")) == sorted(map(str, accepted))


# -- a safe equivalent reads as the sensor's own type --------------------------------------------------------------
def _tiles_of(cat, key):
    """cell id -> the tile's normalised array (C, n, n), as ``index`` reads it."""
    (scene,) = [s for s in cat.scenes() if s["key"] == key]
    tiles = cat.tiles("t.scene_id = ?", (scene["scene_id"],))
    cell_of = {t["tile_id"]: t["cell_id"] for t in tiles}
    return {cell_of[tid]: a for tid, a in read_scene_tiles(scene, tiles, cat.tile_m)}


@pytest.mark.parametrize(("sensor", "native", "other"), [
    ("sentinel2", "uint16", "int16"), ("sentinel2", "uint16", "uint32"), ("enmap", "int16", "uint16"),
    ("sentinel1", "float32", "float64"),
])
def test_accepted_type_gives_the_same_tiles_as_the_sensors_own(tmp_path, sensor, native, other):
    spec = get_sensor(sensor)
    res = spec.gsd
    n = int(1440 / res)
    if sensor == "sentinel1":
        data, nodata = _s1_db(size=n), float("nan")
    else:
        data, nodata = _s2_dn(shape=(spec.num_bands, n, n)), spec.nodata
    paths = []
    for t in (native, other):
        p = tmp_path / t / f"scene_{t}.tif"
        p.parent.mkdir()
        nd = nodata if t == native else 0  # EnMAP's -32768 is not a uint16 (no pixel here is nodata either way)
        with rasterio.open(p, "w", driver="GTiff", count=len(data), height=n, width=n, dtype=t, nodata=nd,
                           crs="EPSG:32633", transform=from_origin(400_320, 5_400_000, res, res)) as dst:
            dst.write(data.astype(t))
        paths.append(p)
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        report = ingest(paths, cat, sensor=sensor)
        assert report.problems == [] and report.added == 2
        a, b = (_tiles_of(cat, str(p)) for p in paths)
    assert a.keys() == b.keys() and len(a) == 9  # 1440 m on the grid's lines (400 320 = 834 x 480): 3 x 3 cells
    for cell in a:
        np.testing.assert_array_equal(a[cell], b[cell])


def test_gdal_only_complex_types_are_refused_in_one_line(tmp_path):
    """complex_int16 (Sentinel-1 SLC) has no numpy name: refused like complex64, not a TypeError traceback."""
    from rsretrieve.data.catalog import Catalog
    from rsretrieve.data.ingest import ingest
    from rsretrieve.data.scene import dtype_problem
    from rsretrieve.sensors import get_sensor

    why = dtype_problem("complex_int16", get_sensor("sentinel1"))
    assert why.startswith("complex_int16 pixels (a single-look complex product?), but sentinel1 files hold float32")
    path = tmp_path / "S1A_IW_SLC__1SDV_20200101T000000_ci16.tif"
    profile = dict(driver="GTiff", width=64, height=64, count=2, dtype="complex_int16", crs="EPSG:32633",
                   transform=from_origin(500_000, 5_000_000, 10, 10))
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.ones((2, 64, 64), np.complex64))
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        report = ingest([path], cat, sensor="sentinel1")
    (p,) = report.problems
    assert p.reason.startswith("complex_int16 pixels (a single-look complex product?)"), p.reason
    assert "unexpected error" not in p.reason
