from pathlib import Path

import pytest
import yaml

from rsretrieve.sensors import (SensorSpecError, get_sensor, list_sensors, load_spec, register_sensor,
                                spec_from_dict, unregister_sensor)
from rsretrieve.sensors.registry import DEFAULT_SENSOR_DIR


@pytest.mark.parametrize("name", list_sensors())
def test_every_registered_sensor_is_consistent(name):
    spec = get_sensor(name)
    assert spec.name == name and Path(spec.source).stem == name
    assert spec.num_bands == len(spec.band_names) == len(set(spec.band_names))
    assert all(spec.band(b) for b in spec.rgb_bands)
    assert all(b.std > 0 and b.gsd_m > 0 for b in spec.bands)
    if spec.family == "sar":
        assert all(b.center_nm is None and b.polarization for b in spec.bands)
    else:
        wl = [b.center_nm for b in spec.bands]
        assert all(400 < w < 2500 for w in wl)


def test_expected_sensors_and_band_facts():
    names = set(list_sensors())
    assert {"sentinel1", "sentinel2", "enmap", "landsat8"} <= names
    s2 = get_sensor("sentinel2")
    assert s2.num_bands == 12 and "B10" not in s2.band_names  # L2A has no cirrus band
    assert s2.band("B8A").center_nm == pytest.approx(864.7) and s2.band("B02").gsd_m == 10
    assert s2.band("B2").name == "B02"  # alias used by SSL4EO file names
    assert {b.gsd_m for b in s2.bands} == {10, 20, 60}
    s1 = get_sensor("sentinel1")
    assert s1.band_names == ("VV", "VH") and s1.units == "sigma0_db"
    en = get_sensor("enmap")
    assert en.num_bands == 224 and en.nodata == -32768 and sum(not v for v in en.valid_mask) == 22
    invalid = [i + 1 for i, b in enumerate(en.bands) if not b.valid]
    assert invalid == list(range(127, 142)) + list(range(161, 168))
    assert en.wavelengths[0] == pytest.approx(418.42) and en.wavelengths[-1] > 2400
    assert get_sensor("landsat8").num_bands == 7 and get_sensor("landsat8").offset == -0.2


def test_unknown_sensor_lists_known_ones():
    with pytest.raises(KeyError, match="unknown sensor 'sentinel9'; known sensors: enmap"):
        get_sensor("sentinel9")


def test_registering_a_name_twice_is_an_error():
    spec = get_sensor("sentinel1")
    with pytest.raises(ValueError, match="registered twice"):
        register_sensor(spec)


def test_a_new_sensor_is_one_yaml_file(tmp_path):
    data = yaml.safe_load((DEFAULT_SENSOR_DIR / "landsat8.yaml").read_text())
    data["name"] = "planetscope_test"
    data["bands"] = data["bands"][1:5]
    data["rgb_bands"] = ["SR_B4", "SR_B3", "SR_B2"]
    data["cloud_test"] = None
    path = tmp_path / "planetscope_test.yaml"
    path.write_text(yaml.safe_dump(data))
    register_sensor(load_spec(path))
    try:
        assert get_sensor("planetscope_test").num_bands == 4
        assert "planetscope_test" in list_sensors("optical")
    finally:
        unregister_sensor("planetscope_test")


def _base() -> dict:
    return yaml.safe_load((DEFAULT_SENSOR_DIR / "sentinel2.yaml").read_text())


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("family"), r"x\.yaml: family: missing required field"),
        (lambda d: d.update(family="lidar"), r"x\.yaml: family: expected one of optical, sar, hyperspectral"),
        (lambda d: d["bands"][3].update(center_nm="abc"), r"x\.yaml: bands\[3\]\.center_nm: expected a number > 0"),
        (lambda d: d["bands"][0].update(std=0), r"x\.yaml: bands\[0\]\.std: expected a number > 0, got 0"),
        (lambda d: d["bands"][1].pop("center_nm"), r"x\.yaml: bands\[1\]\.center_nm: required for a optical"),
        (lambda d: d.update(rgb_bands=["B04", "B03", "B99"]), r"x\.yaml: rgb_bands: unknown band\(s\) B99"),
        (lambda d: d.update(dtype="uint77"), r"x\.yaml: dtype: not a numpy dtype"),
        (lambda d: d.update(name_patterns=["(unclosed"]), r"x\.yaml: name_patterns: bad regular expression"),
        (lambda d: d["bands"].append(dict(d["bands"][0])), r"x\.yaml: bands: duplicate band names: B01"),
        (lambda d: d.update(bands=[]), r"x\.yaml: bands: expected a non-empty list"),
        (lambda d: d["bands"][2].update(valid="yes"), r"x\.yaml: bands\[2\]\.valid: expected true or false"),
        (lambda d: d["cloud_test"].update(snow_bands=["B03"]),
         r"x\.yaml: cloud_test\.snow_bands: expected two bands \(green, SWIR near 1\.6 um\), got \['B03'\]"),
        (lambda d: d["cloud_test"].update(snow_bands=["B03", "B99"]),
         r"x\.yaml: cloud_test\.snow_bands: unknown band\(s\) B99"),
        (lambda d: d["cloud_test"].update(snow_ndsi=1.5),
         r"x\.yaml: cloud_test\.snow_ndsi: expected a number between -1 and 1 \(an NDSI\), got 1\.5"),
        # a misspelt field is refused, not ignored (its default would be used), with the nearest known field
        (lambda d: d["cloud_test"].update(snow_band=d["cloud_test"].pop("snow_bands")),
         r"x\.yaml: cloud_test\.snow_band: unknown field; did you mean snow_bands\? \(fields here: bands, above, "),
        (lambda d: d.update(nodata_value=0), r"x\.yaml: nodata_value: unknown field; did you mean nodata\? "),
        (lambda d: d["bands"][4].update(centre_nm=700), r"x\.yaml: bands\[4\]\.centre_nm: unknown field; did you "
                                                         r"mean center_nm\? "),
        (lambda d: d.update(layouts={"rgb": {"bands": ["B04"], "scael": 1}}),
         r"x\.yaml: layouts\.rgb\.scael: unknown field; did you mean scale\? "),
        (lambda d: d.update(baseline_offset={"since": "04.00", "offset": -0.1, "from": 1}),
         r"x\.yaml: baseline_offset\.from: unknown field \(fields here: since, offset\)$"),
    ],
)
def test_bad_spec_names_file_and_field(mutate, message):
    d = _base()
    mutate(d)
    with pytest.raises(SensorSpecError, match=message):
        spec_from_dict(d, source="x.yaml")


def test_spec_file_name_must_match_name(tmp_path):
    p = tmp_path / "other.yaml"
    p.write_text((DEFAULT_SENSOR_DIR / "sentinel2.yaml").read_text())
    with pytest.raises(SensorSpecError, match=r"other\.yaml: name: 'sentinel2' does not match the file name"):
        load_spec(p)


def test_invalid_yaml_is_reported_with_the_file(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("name: [unclosed\n")
    with pytest.raises(SensorSpecError, match=r"broken\.yaml: not valid YAML"):
        load_spec(p)


def test_a_sensor_dir_spec_with_a_name_already_registered_is_one_line_exit_2(tmp_path):
    """A landsat8.yaml copied into RSRETRIEVE_SENSOR_DIRS (renamed later, or never): one line naming both files,
    not a ValueError traceback (exit 1)."""
    from tests.conftest import run_cli

    (tmp_path / "landsat8.yaml").write_text((DEFAULT_SENSOR_DIR / "landsat8.yaml").read_text())
    r = run_cli("sensors", "list", env={"RSRETRIEVE_SENSOR_DIRS": str(tmp_path)})
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        f"rsretrieve sensors: error: {tmp_path / 'landsat8.yaml'}: name: sensor 'landsat8' is defined already by "
        f"{DEFAULT_SENSOR_DIR / 'landsat8.yaml'}; give the new sensor another name (and file name)"]
