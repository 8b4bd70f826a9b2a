"""Every real sample in ../shared/data/real is ingested with the right sensor, footprint and time."""

import glob
import shutil
from pathlib import Path

import pytest
import rasterio
from rasterio.warp import transform_bounds

from rsretrieve.data.catalog import Catalog
from rsretrieve.data.ingest import ingest

# folder (relative to the real-data root) -> (sensor, acquisition time or None when the product carries none)
EXPECTED = {
    "bigearthnet_mm/S1/S1A_IW_GRDH_1SDV_20170613T165043_33UUP_87_48": ("sentinel1", "2017-06-13T16:50:43Z"),
    "bigearthnet_mm/S2/S2A_MSIL2A_20170613T101031_87_48": ("sentinel2", "2017-06-13T10:10:31Z"),
    "bigearthnet_mm/S2/S2B_MSIL2A_20180204T94161_57_38": ("sentinel2", "2018-02-04T09:41:56Z"),
    "ssl4eo_s12/s1/0000200/S1A_IW_GRDH_1SDV_20200607T010800_20200607T010825_032904_03CFBA_D457":
        ("sentinel1", "2020-06-07T01:08:00Z"),
    "ssl4eo_s12/s2a/0000200/20200604T054639_20200604T054831_T43RCP": ("sentinel2", "2020-06-04T05:46:39Z"),
    "ssl4eo_s12/s2c/0000200/20200823T054639_20200823T055618_T43RCP": ("sentinel2_l1c", "2020-08-23T05:46:39Z"),
    "enmap_hyspecnet11k": ("enmap", "2022-11-03T16:24:38Z"),
    "eurosat_ms/SeaLake": ("sentinel2_l1c", None),
    "bigearthnet_v2_layout/BigEarthNet-S1": ("sentinel1", "2017-06-13T16:50:43Z"),
    "bigearthnet_v2_layout/BigEarthNet-S2": ("sentinel2", "2017-06-13T10:10:31Z"),
}


@pytest.fixture(scope="module")
def real_catalog(real_data, tmp_path_factory):
    cat = Catalog(tmp_path_factory.mktemp("ws") / "catalog.sqlite", tile_m=480)
    report = ingest([real_data], cat)
    yield cat, report
    cat.close()


def _scene_under(cat, folder):
    rows = [s for s in cat.scenes() if folder in s["key"]]
    assert len(rows) >= 1, f"no scene ingested from {folder}"
    return rows


@pytest.mark.parametrize("folder", sorted(EXPECTED))
def test_real_sample_has_right_sensor_and_time(real_catalog, folder):
    cat, _ = real_catalog
    sensor, when = EXPECTED[folder]
    for s in _scene_under(cat, folder):
        assert s["sensor"] == sensor
        if folder.startswith("bigearthnet_v2_layout") or folder == "enmap_hyspecnet11k":
            assert s["acquired"] == when
    assert _scene_under(cat, folder)[0]["acquired"] == when


def test_every_real_scene_footprint_equals_rasterio_bounds(real_catalog):
    cat, _ = real_catalog
    scenes = cat.scenes()
    assert len(scenes) == 26
    for s in scenes:
        f = s["files"].get("*") or min(s["files"].values(), key=lambda p: rasterio.open(p).res[0])
        with rasterio.open(f) as src:
            expect = transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21)
        assert (s["west"], s["south"], s["east"], s["north"]) == pytest.approx(expect, abs=1e-9), s["key"]


def test_real_ingest_rejects_only_the_300m_landsat_scene_at_480m_tiles(real_catalog):
    _, report = real_catalog
    assert [Path(p.path).name for p in report.problems] == ["RGB.byte.tif"]
    assert "300 m pixels make 480 m tiles 1.6 px across" in report.problems[0].reason


def test_a_tile_just_short_of_8_px_is_not_said_to_be_8_px(real_data, tmp_path):
    # 2400 m over 300.04 m pixels is 7.9989 px: "8.0 px across (fewer than 8)" read as a contradiction
    with Catalog(tmp_path / "c.sqlite", tile_m=2400) as cat:
        report = ingest([real_data / "landsat7_rasterio"], cat)
    assert [p.reason for p in report.problems] == ["300 m pixels make 2400 m tiles 7.998 px across (fewer than 8); "
                                                   "ingest it into a workspace with --tile-size >= 2401"]


def test_landsat7_scene_ingests_on_a_coarser_grid(real_data, tmp_path):
    with Catalog(tmp_path / "c.sqlite", tile_m=4800) as cat:
        report = ingest([real_data / "landsat7_rasterio"], cat)
        assert report.problems == [] and report.added == 1
        (s,) = cat.scenes()
        assert (s["sensor"], s["layout"], s["acquired"]) == ("landsat7", "rgb_byte", None)
        assert 0.6 < s["valid_fraction"] < 0.8  # the nodata=0 collar of the rotated scene is not valid


def test_bigearthnet_pairs_share_cells_across_sensors(real_catalog):
    cat, _ = real_catalog
    s1 = {t["cell_id"] for t in cat.tiles("t.sensor = 'sentinel1'")}
    s2 = {t["cell_id"] for t in cat.tiles("t.sensor = 'sentinel2'")}
    shared = s1 & s2
    # 6 BigEarthNet-MM pairs + the SSL4EO location + the v2 layout: each pair of co-registered patches shares cells
    assert len(shared) >= 6 * 4


def test_per_band_product_windows_use_the_10m_reference_grid(real_catalog, real_data):
    cat, _ = real_catalog
    (s,) = _scene_under(cat, "S2A_MSIL2A_20170613T101031_87_48")
    assert (s["width"], s["height"], s["res_m"]) == (120, 120, 10.0)
    tiles = cat.tiles("t.scene_id = ?", (s["scene_id"],))
    assert all((t["width"], t["height"]) == (48, 48) for t in tiles)
    full = [t for t in tiles if t["coverage"] == 1.0]
    assert full and all(0 <= t["col_off"] <= 72 and 0 <= t["row_off"] <= 72 for t in full)


def test_ssl4eo_in_epsg4326_is_tiled_in_its_utm_zone(real_catalog):
    cat, _ = real_catalog
    for s in _scene_under(cat, "ssl4eo_s12"):
        assert s["grid_epsg"] == 32643
        assert all(t["cell_id"].startswith("43N_480m_") for t in cat.tiles("t.scene_id = ?", (s["scene_id"],)))


def test_enmap_quality_masks_are_attached_not_rejected(real_catalog):
    cat, _ = real_catalog
    (s,) = _scene_under(cat, "enmap_hyspecnet11k")
    assert "QL_QUALITY_CLOUD" in s["aux"] and s["layout"] == "full"
    assert 0.0 <= s["cloud_fraction"] <= 1.0


def test_reference_maps_become_cell_labels(real_catalog):
    cat, report = real_catalog
    assert report.label_sources == 2  # BigEarthNet v2 reference map, SEN12MS land cover
    rows = cat.conn.execute("SELECT cell_id, scheme, label, purity, source FROM cell_labels").fetchall()
    assert len(rows) == report.labelled_cells > 0
    assert all(0 < r["purity"] <= 1 for r in rows)
    # CORINE codes of the reference map and IGBP classes of SEN12MS are different schemes, never one integer space
    assert {r["scheme"] for r in rows if "reference_map" in r["source"]} == {"corine"}
    assert {r["scheme"] for r in rows if "_lc_" in r["source"]} == {"igbp"}
    assert all(r["label"] > 100 for r in rows if r["scheme"] == "corine")


def test_torchgeo_fake_fixtures_read_without_error(real_data, tmp_path):
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        report = ingest([real_data / "torchgeo_FAKE"], cat)
    assert report.problems == []
    assert report.added == 2 and report.label_sources == 1  # s1 + s2 scenes, lc labels; the HDF5 is skipped


def test_ingest_of_a_copy_is_keyed_by_its_own_path(real_data, tmp_path):
    src = sorted(glob.glob(str(real_data / "bigearthnet_mm/S1/*87_48")))[0]
    shutil.copytree(src, tmp_path / "copy")
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        assert ingest([tmp_path / "copy"], cat).added == 1
        assert cat.scenes()[0]["key"].startswith(str(tmp_path / "copy"))
