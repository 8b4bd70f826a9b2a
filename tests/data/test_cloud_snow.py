"""The optical cloud test tells snow from cloud (bright in the visible, dark at 1.6 um: NDSI above 0.4), and the
provider's quality mask (Landsat's QA_PIXEL, EnMAP's QL_QUALITY_CLOUD) adds the clouds it flags."""

import numpy as np
import pytest
import rasterio
import yaml
from rasterio.transform import from_origin

from rsretrieve.data import ingest as ingest_mod
from rsretrieve.data.catalog import Catalog
from rsretrieve.data.ingest import ingest
from rsretrieve.sensors import CloudTest, SensorSpecError, get_sensor, spec_from_dict
from rsretrieve.sensors.registry import DEFAULT_SENSOR_DIR
from tests.conftest import write_tif

S2 = "S2A_MSIL2A_20200101T100000"


def _test() -> CloudTest:
    return CloudTest(bands=("b", "g", "r"), above=0.3, snow_bands=("g", "swir"), snow_ndsi=0.4)


def test_flag_keeps_bright_pixels_bright_at_1_6_um_and_drops_snow():
    # pixels: cloud (NDSI 0.09), snow (NDSI 0.82), fresh snow at the threshold's edge (NDSI 0.38 / 0.42), dark
    vis = np.array([0.6, 0.6, 0.6, 0.6, 0.1], np.float32)
    swir = np.array([0.5, 0.06, 0.27, 0.245, 0.02], np.float32)
    bands = {"b": vis, "g": vis, "r": vis, "swir": swir}
    got = _test().flag(bands.__getitem__, np.ones(5, bool))
    assert got.tolist() == [True, False, True, False, False]
    # nodata pixels are never cloud, snow or not
    assert not _test().flag(bands.__getitem__, np.zeros(5, bool)).any()
    # snow bands without data (NaN) or negative in sum (an offset product's dark pixels): the pixel stays cloud
    nan = {"b": vis, "g": vis, "r": vis, "swir": np.full(5, np.nan, np.float32)}
    assert _test().flag(nan.__getitem__, np.ones(5, bool)).tolist() == [True, True, True, True, False]
    neg = {"b": vis, "g": np.full(5, -0.05, np.float32), "r": vis, "swir": np.full(5, -0.1, np.float32)}
    assert CloudTest(("b", "r"), 0.3, ("g", "swir")).flag(neg.__getitem__, np.ones(5, bool)).tolist()[:4] == [True] * 4
    # without snow bands: brightness alone, as before
    plain = CloudTest(bands=("b", "g", "r"), above=0.3)
    assert plain.flag(bands.__getitem__, np.ones(5, bool)).tolist() == [True, True, True, True, False]


def test_snow_bands_are_not_read_without_a_bright_pixel():
    asked = []

    def band(name):
        asked.append(name)
        return np.full((4, 4), 0.1, np.float32)
    assert not _test().flag(band, np.ones((4, 4), bool)).any()
    assert asked == ["b", "g", "r"]


@pytest.mark.parametrize("sensor", ["sentinel2", "sentinel2_l1c", "landsat8", "enmap"])
def test_optical_specs_name_a_green_and_a_1_6_um_band(sensor):
    spec = get_sensor(sensor)
    green, swir = (spec.band(b) for b in spec.cloud_test.snow_bands)
    assert 520 <= green.center_nm <= 600 and 1550 <= swir.center_nm <= 1700, (green, swir)
    assert spec.cloud_test.snow_ndsi == 0.4


def test_ingest_counts_snow_as_clear_and_cloud_as_cloud(tmp_path):
    """A 12-band L2A scene: the left half bright everywhere (cloud), the right half bright in the visible and dark
    in B11 (snow); only the left half is cloud. The scene covers 2 x 2 grid cells of 480 m exactly."""
    spec = get_sensor("sentinel2")
    data = np.full((12, 96, 96), 2000, np.uint16)
    for b in ("B02", "B03", "B04"):
        data[spec.band_index(b)] = 7000
    data[spec.band_index("B11"), :, :48] = 5500  # cloud: NDSI (0.70 - 0.55) / 1.25 = 0.12
    data[spec.band_index("B11"), :, 48:] = 600  # snow: NDSI (0.70 - 0.06) / 0.76 = 0.84
    path = tmp_path / "archive" / f"{S2}_snow.tif"
    path.parent.mkdir()
    with rasterio.open(path, "w", driver="GTiff", count=12, height=96, width=96, dtype="uint16", crs="EPSG:32633",
                       transform=from_origin(400_320, 5_400_000, 10, 10), nodata=0) as dst:
        dst.write(data)
    cat = Catalog(tmp_path / "ws" / "catalog.sqlite", tile_m=480)
    try:
        report = ingest([path.parent], cat)
        assert report.problems == [] and report.added == 1
        (scene,) = cat.scenes()
        assert scene["cloud_fraction"] == pytest.approx(0.5)
        tiles = cat.tiles()
        assert len(tiles) == 4
        by_col = {t["col_off"]: t["cloud_fraction"] for t in tiles}
        assert by_col == {0: 1.0, 48: 0.0}
    finally:
        cat.close()


def test_a_snowy_bigearthnet_patch_is_not_cloud(real_data, tmp_path):
    """BigEarthNet's February patch over Finland, snow-covered: 44% of it was flagged as cloud by brightness
    alone; its bright pixels have a median NDSI of 0.76. The June patch (no bright pixels) stays cloud-free."""
    cat = Catalog(tmp_path / "catalog.sqlite", tile_m=480)
    try:
        ingest([real_data / "bigearthnet_mm" / "S2" / "S2B_MSIL2A_20180204T94161_57_38",
                real_data / "bigearthnet_mm" / "S2" / "S2A_MSIL2A_20170613T101031_87_48"], cat)
        got = {s["key"].split("/")[-1]: s["cloud_fraction"] for s in cat.scenes()}
        assert len(got) == 2, got
        winter = next(v for k, v in got.items() if "20180204" in k)
        summer = next(v for k, v in got.items() if "20170613" in k)
        assert winter < 0.01 and summer == 0.0, got
    finally:
        cat.close()


# -- the provider's quality mask -------------------------------------------------------------------------------------
#: Landsat Collection 2 QA_PIXEL values (USGS LSDS-1619): clear land, high-confidence cloud (bit 3), dilated cloud
#: (bit 1), high-confidence cirrus (bit 2), snow (bit 5)
QA_CLEAR, QA_CLOUD, QA_DILATED, QA_CIRRUS, QA_SNOW = 21824, 22280, 21762, 54532, 30048
L8 = "LC08_L2SP_044034_20200927_20201006_02_T1"
L7 = "LE07_L2SP_044034_20200927_20201006_02_T1"
_KW = dict(crs="EPSG:32610", origin=(499_200.0, 4_200_000.0), res=30.0)  # 64 px of 30 m: 4 x 4 cells of 480 m


def _landsat_dn(refl: float) -> int:
    """Collection 2 surface-reflectance DN of ``refl`` (reflectance = DN * 2.75e-5 - 0.2)."""
    return round((refl + 0.2) / 2.75e-5)


def _landsat(d, prefix=L8, bands=range(1, 8), qa=None, fill=0.1, stacked=False):
    """A cell-aligned Landsat C2 L2 scene of 64 x 64 px, every band at reflectance ``fill`` (0.1: never bright
    enough for the spectral test) or ``fill(band) -> (64, 64) reflectance``, with an optional QA_PIXEL file."""
    planes = [np.full((64, 64), fill) if not callable(fill) else fill(b) for b in bands]
    dn = [np.where(np.isnan(x), 0, np.vectorize(_landsat_dn)(np.nan_to_num(x))).astype(np.uint16) for x in planes]
    if stacked:
        write_tif(d / f"{prefix}_SR_stack.TIF", np.stack(dn), nodata=0, **_KW)
    else:
        for b, x in zip(bands, dn):
            write_tif(d / f"{prefix}_SR_B{b}.TIF", x, nodata=0, **_KW)
    if qa is not None:
        write_tif(d / f"{prefix}_QA_PIXEL.TIF", np.asarray(qa).astype(np.uint16), nodata=1, **_KW)
    return d


def _cloud_fraction(tmp_path, folder) -> float:
    with Catalog(tmp_path / "ws" / "catalog.sqlite", tile_m=480) as cat:
        report = ingest([folder], cat)
        assert report.problems == [] and report.added == 1
        (scene,) = cat.scenes()
    return scene["cloud_fraction"]


def _columns(*values) -> np.ndarray:
    """(64, 64) QA_PIXEL with ``values`` in equal blocks of columns."""
    qa = np.empty((64, 64), np.int64)
    w = 64 // len(values)
    for i, v in enumerate(values):
        qa[:, w * i:w * (i + 1)] = v
    return qa


def test_landsat_qa_pixel_cloud_dilated_cloud_and_cirrus_bits_are_cloud(tmp_path):
    qa = _columns(QA_CLEAR, QA_CLOUD, QA_DILATED, QA_CIRRUS, QA_SNOW, QA_CLEAR, QA_CLEAR, QA_CLEAR)
    assert _cloud_fraction(tmp_path, _landsat(tmp_path / "a", qa=qa)) == pytest.approx(3 / 8)


def test_landsat_qa_pixel_counts_only_over_data(tmp_path):
    """The top quarter has no data (DN 0) and QA cloud everywhere: the fraction is of the data pixels only."""
    def fill(_b):
        x = np.full((64, 64), 0.1)
        x[:16] = np.nan
        return x
    qa = _columns(QA_CLEAR, QA_CLOUD, QA_CLEAR, QA_CLEAR)
    qa[:16] = QA_CLOUD
    assert _cloud_fraction(tmp_path, _landsat(tmp_path / "a", qa=qa, fill=fill)) == pytest.approx(1 / 4)


def test_landsat_qa_pixel_beside_a_stacked_file_is_used(tmp_path):
    """Beside one 7-band file the mask is recorded under its whole stem (``LC08_..._T1_QA_PIXEL``), not its role."""
    folder = _landsat(tmp_path / "a", qa=_columns(QA_CLOUD, QA_CLEAR), stacked=True)
    assert _cloud_fraction(tmp_path, folder) == pytest.approx(0.5)


def test_a_landsat_product_named_in_lower_case_is_one_scene_with_its_mask(tmp_path):
    """``lc08_l2sp_..._sr_b4.tif``, as some download tools write the names: one Landsat 8 scene (each band file was a
    one-band scene of no sensor), its QA_PIXEL read."""
    folder = _landsat(tmp_path / "a", qa=_columns(QA_CLOUD, QA_CLEAR))
    for f in folder.iterdir():
        f.rename(f.with_name(f.name.lower()))
    with Catalog(tmp_path / "ws" / "catalog.sqlite", tile_m=480) as cat:
        report = ingest([folder], cat)
        assert report.problems == [] and report.added == 1
        (scene,) = cat.scenes()
    assert scene["key"] == f"{folder}/{L8.lower()}*" and scene["sensor"] == "landsat8"
    assert sorted(scene["files"]) == [f"SR_B{b}" for b in range(1, 8)]
    assert scene["cloud_fraction"] == pytest.approx(0.5) and scene["acquired"] == "2020-09-27T00:00:00Z"


def test_landsat7_qa_pixel_cloud_bits_are_cloud(tmp_path):
    qa = _columns(QA_CLEAR, QA_CLOUD, QA_DILATED, QA_CLEAR)
    folder = _landsat(tmp_path / "a", prefix=L7, bands=(1, 2, 3, 4, 5, 7), qa=qa)
    assert _cloud_fraction(tmp_path, folder) == pytest.approx(0.5)


def test_landsat_snow_is_told_from_cloud_in_reflectance_not_dn(tmp_path):
    """Bright everywhere in the visible; SWIR 1.6 um (SR_B6) bright on the left (cloud), dark on the right
    (snow). On reflectance the right half's NDSI is (0.35 - 0.08) / 0.43 = 0.63; on DN, with the -0.2 offset in
    them, it would be 0.33, and no snow. QA_PIXEL marks the right half's top rows cloud: they stay cloud, snow or
    not."""
    def fill(b):
        x = np.full((64, 64), 0.35 if b in (2, 3, 4) else 0.2)
        if b == 6:
            x[:, :32], x[:, 32:] = 0.5, 0.08
        return x
    assert _cloud_fraction(tmp_path / "1", _landsat(tmp_path / "a", fill=fill)) == pytest.approx(0.5)
    qa = _columns(QA_CLEAR)
    qa[:16, 32:] = QA_CLOUD
    folder = _landsat(tmp_path / "b", fill=fill, qa=qa)
    assert _cloud_fraction(tmp_path / "2", folder) == pytest.approx(0.5 + 0.125)


def test_sentinel2_swir_without_data_leaves_a_bright_pixel_cloud(tmp_path):
    """A B11 file covering only the left half of a per-band scene: its right half is nodata (DN 0, NDSI 1 if
    taken as reflectance 0). The bright pixels there stay cloud; on the left the snow test applies (snow)."""
    d = tmp_path / "S2A_MSIL2A_20200101T100000_T33UUP"
    kw = dict(crs="EPSG:32633", origin=(400_320.0, 5_400_000.0))
    for b in get_sensor("sentinel2").band_names:
        if b != "B11":
            dn = 7000 if b in ("B02", "B03", "B04") else 2000
            write_tif(d / f"{d.name}_{b}.tif", np.full((96, 96), dn, np.uint16), nodata=0, res=10.0, **kw)
    b11 = np.zeros((48, 48), np.uint16)
    b11[:, :24] = 600  # snow on the left; no data on the right
    write_tif(d / f"{d.name}_B11.tif", b11, nodata=0, res=20.0, **kw)
    assert _cloud_fraction(tmp_path, d) == pytest.approx(0.5)


def test_enmap_quality_cloud_mask_marks_cloud(tmp_path):
    stem = "ENMAP01-____L2A-DT0000004950_20221103T162438Z_001_V010110_20221118T145147Z-Y01460273_X03110438"
    kw = dict(crs="EPSG:32633", origin=(499_200.0, 5_000_160.0), res=30.0)  # 32 px of 30 m: 2 x 2 cells of 480 m
    write_tif(tmp_path / "e" / f"{stem}-SPECTRAL_IMAGE.TIF", np.full((224, 32, 32), 1000, np.int16), nodata=-32768,
              **kw)
    mask = np.zeros((32, 32), np.uint8)
    mask[:8] = 1  # a quarter of the scene
    write_tif(tmp_path / "e" / f"{stem}-QL_QUALITY_CLOUD.TIF", mask, **kw)
    assert _cloud_fraction(tmp_path, tmp_path / "e") == pytest.approx(0.25)


def test_the_clouds_of_rasterios_landsat7_scene_are_flagged(real_data, tmp_path):
    """RGB.byte.tif (a display composite of an ETM+ scene with cumulus over the Bahamas): brightness alone (no SWIR,
    no QA_PIXEL in this layout) flags 6.4% of its data pixels, which is where its clouds are."""
    with Catalog(tmp_path / "c.sqlite", tile_m=4800) as cat:
        ingest([real_data / "landsat7_rasterio"], cat)
        (s,) = cat.scenes()
    assert 0.05 < s["cloud_fraction"] < 0.08


@pytest.mark.parametrize(("change", "message"), [
    (dict(qa_bits=[1, 3]), r"x\.yaml: cloud_test\.qa_role: qa_role and qa_bits \(or qa_classes\) go together"),
    (dict(qa_classes=[8]), r"x\.yaml: cloud_test\.qa_role: qa_role and qa_bits \(or qa_classes\) go together"),
    (dict(qa_role="QA_PIXEL"), r"x\.yaml: cloud_test\.qa_bits: qa_role and qa_bits \(or qa_classes\) go together"),
    (dict(qa_role="SCL", qa_bits=[1], qa_classes=[8]),
     r"x\.yaml: cloud_test\.qa_classes: qa_bits and qa_classes exclude each other"),
    (dict(qa_role="SCL", qa_classes=[8, -1]), r"x\.yaml: cloud_test\.qa_classes: expected a list of class values 0 "
                                             r"and up, got \[8, -1\]"),
    (dict(qa_role="QA_PIXEL", qa_bits=[3, 40]), r"x\.yaml: cloud_test\.qa_bits: expected a list of bit numbers "
                                                 r"0\.\.31, got \[3, 40\]"),
    (dict(snow_bands=["SR_B6", "SR_B3"]),
     r"x\.yaml: cloud_test\.snow_bands: expected a green band and a SWIR band near 1\.6 um, in that order; "
     r"got SR_B6 \(1608\.9 nm\), SR_B3 \(561\.4 nm\)"),
    (dict(snow_bands=["SR_B3", "SR_B3"]), r"cloud_test\.snow_bands: expected a green band and a SWIR band"),
    (dict(snow_bands=["SR_B5", "SR_B6"]), r"cloud_test\.snow_bands: expected a green band .* got SR_B5 \(864\.7 nm\)"),
    (dict(snow_bands=None, snow_ndsi=0.3), r"x\.yaml: cloud_test\.snow_ndsi: given without snow_bands"),
])
def test_bad_cloud_test_fields_name_file_and_field(change, message):
    data = yaml.safe_load((DEFAULT_SENSOR_DIR / "landsat8.yaml").read_text())
    data["cloud_test"] = {k: v for k, v in data["cloud_test"].items() if not k.startswith("qa_")} | change
    with pytest.raises(SensorSpecError, match=message):
        spec_from_dict(data, source="x.yaml")


@pytest.mark.parametrize("stacked", [False, True])
def test_another_acquisitions_qa_pixel_is_not_this_scenes_mask(tmp_path, stacked):
    """A folder with one acquisition's bands and only another acquisition's QA_PIXEL (all cloud): the mask is
    attached to the scene sharing the longest name prefix, but it is not this scene's, so it is not used."""
    d = _landsat(tmp_path / "a", stacked=stacked)
    other = L8.replace("20200927", "20201013")
    write_tif(d / f"{other}_QA_PIXEL.TIF", np.full((64, 64), QA_CLOUD, np.uint16), nodata=1, **_KW)
    assert _cloud_fraction(tmp_path, d) == 0.0


def test_a_qa_pixel_in_another_crs_rejects_the_scene_naming_the_mask(tmp_path, monkeypatch):
    """Before any strip of pixels is read: the scene's mask and cloud test are decided once per scene."""
    d = _landsat(tmp_path / "a")
    write_tif(d / f"{L8}_QA_PIXEL.TIF", np.full((64, 64), QA_CLOUD, np.uint16), nodata=1,
              **{**_KW, "crs": "EPSG:32611"})
    reads = []
    real_read = ingest_mod._Reader.read
    monkeypatch.setattr(ingest_mod._Reader, "read", lambda self, *a: reads.append(a) or real_read(self, *a))
    with Catalog(tmp_path / "ws" / "catalog.sqlite", tile_m=480) as cat:
        report = ingest([d], cat)
        assert report.added == 0 and cat.scenes() == []
    assert reads == []
    (problem,) = report.problems
    assert problem.reason == (f"quality mask {L8}_QA_PIXEL.TIF is in EPSG:32611, the scene in EPSG:32610: it must be "
                              "on the scene's ground"), problem.reason


@pytest.mark.parametrize("bad", ["QA_PIXEL", "SR_B5"])
def test_an_unreadable_file_of_a_per_band_scene_is_named(tmp_path, bad):
    """The scene is reported under its files' prefix (``..._T1*``): which of its files GDAL cannot read is said."""
    d = _landsat(tmp_path / "a", qa=_columns(QA_CLEAR))
    (d / f"{L8}_{bad}.TIF").write_bytes(b"not a tiff" * 10)
    with Catalog(tmp_path / "ws" / "catalog.sqlite", tile_m=480) as cat:
        report = ingest([d], cat)
        assert report.added == 0 and cat.scenes() == []
    (problem,) = report.problems
    assert problem.path == str(d / f"{L8}*")
    what = "band file " if bad.startswith("SR_") else ""
    assert problem.reason == f"{what}{L8}_{bad}.TIF: not a raster file GDAL can read", problem.reason
