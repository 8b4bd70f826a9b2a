"""Sentinel-2 products of processing baseline 04.00 and later store DN = reflectance x 10000 + 1000: such scenes are
told from their product name, tags, STAC item or sidecar JSON, and read with offset -0.1 (layout ``full+N0400``)."""

import json
import os

import numpy as np
import pytest
import yaml

from rsretrieve.data.catalog import Catalog
from rsretrieve.data.discover import SceneSource
from rsretrieve.data.ingest import ingest
from rsretrieve.data.scene import _with_baseline, offset_removed, open_scene, processing_baseline
from rsretrieve.data.tiles import read_scene_tiles
from rsretrieve.sensors import SensorSpecError, get_sensor, parse_baseline, spec_from_dict
from rsretrieve.sensors.registry import DEFAULT_SENSOR_DIR
from tests.conftest import write_tif

NEW = "S2B_MSIL2A_20230705T101559_N0509_R065_T32UQD_20230705T133327"
OLD = "S2B_MSIL2A_20210705T101559_N0301_R065_T32UQD_20210705T133327"


@pytest.mark.parametrize("text,want", [("05.09", "05.09"), ("5.9", "05.09"), ("N0509", "05.09"), ("0400", "04.00"),
                                       (" 04.00 ", "04.00"), ("N9999", None), ("99.99", None), ("5", None),
                                       ("", None), ("baseline", None), (None, None)])
def test_baseline_parsing(text, want):
    assert parse_baseline(text) == want


def _source(tmp_path, *names, stac=None):
    return SceneSource(key=str(tmp_path / names[0]), files={f"B{i:02d}": str(tmp_path / n)
                                                            for i, n in enumerate(names)}, stac=stac)


def test_the_baseline_is_read_from_names_tags_stac_and_sidecars(tmp_path):
    # the product name in the file's name, or in a parent folder's (a SAFE's band files), the nearest first
    assert processing_baseline(_source(tmp_path, f"{NEW}.tif"), {}) == "05.09"
    safe = f"{NEW}.SAFE/GRANULE/L2A_T32UQD_A033000_20230705T101559/IMG_DATA/R10m/T32UQD_20230705T101559_B04_10m.tif"
    assert processing_baseline(_source(tmp_path, safe), {}) == "05.09"
    assert processing_baseline(_source(tmp_path, f"{NEW}/{OLD}.tif"), {}) == "03.01"
    # BigEarthNet's own products: N9999 names no baseline; a name that is not a product name says nothing
    assert processing_baseline(_source(tmp_path, "S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_26_57_B02.tif"),
                               {}) is None
    assert processing_baseline(_source(tmp_path, "my_N0509_stack.tif"), {}) is None
    # a GDAL tag beats the name; STAC's property beats the name; Earth Search v0's properties
    assert processing_baseline(_source(tmp_path, f"{NEW}.tif"), {"PROCESSING_BASELINE": "03.00"}) == "03.00"
    assert processing_baseline(_source(tmp_path, "B04.tif", stac={"s2:processing_baseline": "05.10"}), {}) == "05.10"
    assert processing_baseline(_source(tmp_path, "B04.tif", stac={"s2:product_uri": f"{NEW}.SAFE"}), {}) == "05.09"
    assert processing_baseline(_source(tmp_path, "B04.tif", stac={"sentinel:processing_baseline": "04.00"}),
                               {}) == "04.00"
    assert processing_baseline(_source(tmp_path, "B04.tif", stac={"sentinel:product_id": NEW}), {}) == "05.09"
    # Earth Engine exports: metadata.json beside the band files
    (tmp_path / "gee").mkdir()
    (tmp_path / "gee" / "metadata.json").write_text(json.dumps({"PROCESSING_BASELINE": "05.09"}))
    assert processing_baseline(_source(tmp_path, "gee/B4.tif"), {}) == "05.09"
    (tmp_path / "gee" / "metadata.json").write_text(json.dumps({"PRODUCT_ID": NEW, "system:id": "COPERNICUS/S2_SR/x"}))
    assert processing_baseline(_source(tmp_path, "gee/B4.tif"), {}) == "05.09"


def test_a_harmonised_product_is_never_offset_whatever_names_it(tmp_path):
    """Earth Search's flag, or an Earth Engine *_HARMONIZED export: the offset is already removed, even where the
    product name (read before the sidecar) says 05.09."""
    spec = get_sensor("sentinel2")
    src = _source(tmp_path, f"{NEW}.tif", stac={"s2:processing_baseline": "05.09",
                                                "earthsearch:boa_offset_applied": True})
    assert offset_removed(src) and _with_baseline(spec, "full", src, {}) == "full"
    src = _source(tmp_path, f"{NEW}.tif", stac={"sentinel:boa_offset_applied": True})
    assert _with_baseline(spec, "full", src, {}) == "full"
    folder = tmp_path / NEW
    folder.mkdir()
    (folder / "metadata.json").write_text(json.dumps({
        "PRODUCT_ID": NEW, "system:id": "COPERNICUS/S2_SR_HARMONIZED/20230705T101559_20230705T101559_T32UQD"}))
    src = _source(tmp_path, f"{NEW}/B4.tif")
    assert processing_baseline(src, {}) == "05.09" and offset_removed(src)
    assert _with_baseline(spec, "full", src, {}) == "full"
    (folder / "metadata.json").write_text(json.dumps({"PRODUCT_ID": NEW, "system:id": "COPERNICUS/S2_SR/x"}))
    assert _with_baseline(spec, "full", src, {}) == "full+N0400"


def test_a_gdal_offset_tag_says_it_directly(tmp_path):
    spec = get_sensor("sentinel2")
    src = _source(tmp_path, "stack.tif")
    assert _with_baseline(spec, "full", src, {"BOA_ADD_OFFSET": "-1000"}) == "full+N0400"
    assert _with_baseline(spec, "full", src, {"RADIO_ADD_OFFSET": "-1000"}) == "full+N0400"
    # 0: the product's own metadata says no offset, whatever the name says
    assert _with_baseline(spec, "full", _source(tmp_path, f"{NEW}.tif"), {"BOA_ADD_OFFSET": "0"}) == "full"
    assert _with_baseline(get_sensor("landsat8"), "full", src, {"BOA_ADD_OFFSET": "-1000"}) == "full"


def test_each_scene_reads_its_own_sidecar(tmp_path):
    """Two Earth Engine exports side by side, each with its own <stem>.json: each scene reads its own, not the first
    in the folder (the 2023 one was read as 02.14 and its bright sand as cloud)."""
    old, new = "20200604T054639_20200604T054831_T43RCP", "20230705T054639_20230705T054831_T43RCP"
    (tmp_path / f"{old}.json").write_text(json.dumps({"PROCESSING_BASELINE": "02.14"}))
    (tmp_path / f"{new}.json").write_text(json.dumps({"PROCESSING_BASELINE": "05.09"}))
    (tmp_path / "notes.json").write_text(json.dumps({"PROCESSING_BASELINE": "05.11"}))
    for stem, want in ((old, "02.14"), (new, "05.09")):
        src = SceneSource(key=str(tmp_path / f"{stem}.tif"), files={"*": str(tmp_path / f"{stem}.tif")})
        assert processing_baseline(src, {}) == want
    # a third scene with no sidecar of its own does not take another's (nor the folder's several JSON files)
    src = SceneSource(key=str(tmp_path / "other.tif"), files={"*": str(tmp_path / "other.tif")})
    assert processing_baseline(src, {}) is None


def test_the_spec_resolves_the_offset_layout_and_refuses_bad_fields():
    spec = get_sensor("sentinel2")
    assert spec.baseline_offset.since == "04.00" and spec.baseline_offset.suffix == "+N0400"
    assert spec.baseline_offset.applies("04.00") and spec.baseline_offset.applies("05.11")
    assert not spec.baseline_offset.applies("03.01") and not spec.baseline_offset.applies("02.14")
    lay = spec.layout("full+N0400")
    assert lay.offset == pytest.approx(-0.1) and lay.bands == spec.layout("full").bands and lay.scale == 1e-4
    assert get_sensor("sentinel2_l1c").layout("full+N0400").offset == pytest.approx(-0.1)
    # a catalog written under another ``since`` still reads; a spec without baseline_offset says why it cannot
    assert spec.layout("full+N0500") == lay
    with pytest.raises(KeyError, match="no file layout 'full\\+N0400': its spec .* no longer has the baseline_off"):
        get_sensor("landsat8").layout("full+N0400")
    with pytest.raises(KeyError, match="no file layout 'full\\+x'; layouts: full"):
        spec.layout("full+x")
    raw = yaml.safe_load((DEFAULT_SENSOR_DIR / "sentinel2.yaml").read_text())
    for bad, field, why in (({"since": "4", "offset": -0.1}, "since", "like \"04.00\""),
                            ({"since": 4.0, "offset": -0.1}, "since", "like \"04.00\""),
                            ({"since": "04.00", "offset": 0}, "offset", "non-zero"),
                            ({"since": "04.00"}, "offset", "missing required field")):
        with pytest.raises(SensorSpecError, match=f"^x.yaml: baseline_offset.{field}: .*{why}"):
            spec_from_dict({**raw, "baseline_offset": bad}, source="x.yaml")


def _scene(path, dn, tags=None):
    write_tif(path, dn, crs="EPSG:32632", origin=(600_000.0, 5_400_000.0), nodata=0, tags=tags)


def test_an_offset_product_reads_as_the_same_reflectance(tmp_path):
    """The same ground twice: as a baseline-03.01 product (DN = reflectance x 10000) and as a baseline-05.09 one
    (DN + 1000, nodata still 0). Both are catalogued with the same cloud fractions and read as the same normalised
    tiles. The visible bands are at 0.27 reflectance in the left half: clear, but 0.37 (cloud) if the offset were
    not removed."""
    rng = np.random.default_rng(0)
    spec = get_sensor("sentinel2")
    dn = rng.integers(300, 2500, (12, 96, 96)).astype(np.uint16)
    for b in ("B02", "B03", "B04"):
        dn[spec.band_index(b), :, :48] = 2700
        dn[spec.band_index(b), :, 48:] = 4000 + rng.integers(0, 2000, (96, 48))  # cloud (bright at 1.6 um too)
    dn[spec.band_index("B11"), :, 48:] = 4500
    dn[:, :8, :8] = 0  # nodata corner
    shifted = np.where(dn == 0, 0, dn + 1000).astype(np.uint16)
    _scene(tmp_path / "archive" / "a" / f"{OLD}.tif", dn)
    _scene(tmp_path / "archive" / "b" / f"{NEW}.tif", shifted)
    cat = Catalog(tmp_path / "ws" / "catalog.sqlite", tile_m=480)
    try:
        report = ingest([tmp_path / "archive"], cat)
        assert report.problems == [] and report.added == 2
        scenes = {s["key"].split("/")[-2]: s for s in cat.scenes()}
        assert scenes["a"]["layout"] == "full" and scenes["b"]["layout"] == "full+N0400"
        assert scenes["a"]["cloud_fraction"] == pytest.approx(scenes["b"]["cloud_fraction"])
        assert scenes["a"]["cloud_fraction"] == pytest.approx((96 * 48) / (96 * 96 - 64))
        tiles = {k: {(t["col_off"], t["row_off"]): t for t in cat.tiles() if t["scene_id"] == s["scene_id"]}
                 for k, s in scenes.items()}
        assert tiles["a"].keys() == tiles["b"].keys() and len(tiles["a"]) == 4
        for key, t in tiles["a"].items():
            assert t["cloud_fraction"] == tiles["b"][key]["cloud_fraction"]
            assert t["valid_fraction"] == tiles["b"][key]["valid_fraction"]
        arrays = {k: dict(read_scene_tiles(scenes[k], list(tiles[k].values()), 480)) for k in "ab"}
        for key, t in tiles["a"].items():
            np.testing.assert_allclose(arrays["a"][t["tile_id"]], arrays["b"][tiles["b"][key]["tile_id"]], atol=1e-5)
    finally:
        cat.close()


def test_a_per_band_product_folder_and_a_tag_choose_the_layout(tmp_path):
    spec = get_sensor("sentinel2")
    folder = tmp_path / f"{NEW}.SAFE"
    for b in spec.band_names:
        _scene(folder / f"T32UQD_20230705T101559_{b}.tif", np.full((1, 16, 16), 1500, np.uint16))
    src = SceneSource(key=str(folder / "T32UQD_20230705T101559"),
                      files={b: str(folder / f"T32UQD_20230705T101559_{b}.tif") for b in spec.band_names})
    opened = open_scene(src)
    assert opened.layout_name == "full+N0400" and opened.layout.offset == pytest.approx(-0.1)
    # a stacked file whose name says nothing, tagged by GDAL's SENTINEL2 driver
    path = tmp_path / "stack.tif"
    _scene(path, np.full((12, 16, 16), 1500, np.uint16), tags={"PROCESSING_BASELINE": "04.00"})
    assert open_scene(SceneSource(key=str(path), files={"*": str(path)})).layout_name == "full+N0400"
    _scene(path, np.full((12, 16, 16), 1500, np.uint16), tags={"PROCESSING_BASELINE": "03.01"})
    assert open_scene(SceneSource(key=str(path), files={"*": str(path)})).layout_name == "full"


def test_the_real_samples_carry_no_offset(real_data):
    """SSL4EO-S12's Earth Engine exports say baseline 02.14 in metadata.json; BigEarthNet v2's products are N9999
    (its own processing, before 04.00); BigEarthNet v1's names carry no baseline. All read as ``full``."""
    s2a = sorted((real_data / "ssl4eo_s12" / "s2a").glob("*/*/B4.tif"))
    assert s2a, "no SSL4EO-S12 s2a sample"
    for b4 in s2a:
        src = SceneSource(key=str(b4.parent), files={p.stem: str(p) for p in b4.parent.glob("B*.tif")})
        assert processing_baseline(src, {}) == "02.14" and not offset_removed(src)
        assert open_scene(src).layout_name == "full"
    for d in sorted((real_data / "bigearthnet_v2_layout" / "BigEarthNet-S2").glob("*/*")) + \
            sorted((real_data / "bigearthnet_mm" / "S2").glob("S2*")):
        files = {p.stem.rsplit("_", 1)[1]: str(p) for p in d.glob("*_B*.tif")}
        opened = open_scene(SceneSource(key=str(d), files=files))
        assert opened.layout_name == "full", d


def _per_band(folder, values, dtype="uint16", tags=None):
    spec = get_sensor("sentinel2")
    for b in spec.band_names:
        write_tif(folder / f"T32UQD_{b}.tif", np.full((1, 16, 16), values, dtype), crs="EPSG:32632",
                  origin=(600_000.0, 5_400_000.0), nodata=0, tags=tags)
    return SceneSource(key=str(folder / "T32UQD*"), files={b: str(folder / f"T32UQD_{b}.tif")
                                                           for b in spec.band_names})


def test_the_dtype_hint_of_a_per_band_offset_product_includes_the_offset(tmp_path):
    """Float reflectance per-band files of a 05.09 product: the hint is the DN encoding the scene will be read
    with (reflectance + 0.1), not that of older products; following it then reads the reflectance back."""
    from rsretrieve.data.scene import SceneError

    src = _per_band(tmp_path / NEW, 0.1, "float32")
    with pytest.raises(SceneError) as e:
        open_scene(src, check_dtype=True)
    assert str(e.value) == ("band file T32UQD_B01.tif: float32 pixels, but sentinel2 (processing baseline 04.00 and "
                            "later) files hold uint16 DN (reflectance = DN * 0.0001 - 0.1): float values such as "
                            "reflectance would be read as DN; write the file as uint16 DN = round((reflectance + 0.1) "
                            "/ 0.0001) (or cast it to uint16 if it holds DN already)")
    src = _per_band(tmp_path / NEW, round((0.1 + 0.1) / 0.0001))
    opened = open_scene(src, check_dtype=True)
    assert opened.layout.scale * 2000 + opened.layout.offset == pytest.approx(0.1)


def test_a_per_band_offset_tag_decides_where_the_name_says_nothing(tmp_path):
    """GDAL's SENTINEL2 driver writes BOA_ADD_OFFSET on each band: -1000 reads with the offset, 0 without, though
    the folder names no product; a float file is then refused with the hint of the encoding the tag says."""
    from rsretrieve.data.scene import SceneError

    assert open_scene(_per_band(tmp_path / "a", 2000)).layout_name == "full"
    assert open_scene(_per_band(tmp_path / "b", 2000, tags={"BOA_ADD_OFFSET": "-1000"})).layout_name == "full+N0400"
    assert open_scene(_per_band(tmp_path / NEW, 2000, tags={"BOA_ADD_OFFSET": "0"})).layout_name == "full"
    with pytest.raises(SceneError, match=r"sentinel2 \(processing baseline 04\.00 and later\) files hold uint16 DN"):
        open_scene(_per_band(tmp_path / "c", 0.1, "float32", tags={"BOA_ADD_OFFSET": "-1000"}), check_dtype=True)


def test_acquisition_times_come_from_each_scenes_own_sidecar(tmp_path):
    """Two Earth Engine exports with undated names in one folder, each with its own <stem>.json: each scene takes
    its own date (both took the first JSON file's before); a lone metadata.json still dates the folder's scene."""
    from rsretrieve.data.scene import acquisition_time

    for stem, when in (("export_a", "2020-06-04T05:46:39Z"), ("export_b", "2023-07-05T05:46:39Z")):
        (tmp_path / f"{stem}.json").write_text(json.dumps({"datetime": when}))
    got = {stem: acquisition_time(SceneSource(key=str(tmp_path / f"{stem}.tif"),
                                              files={"*": str(tmp_path / f"{stem}.tif")}), {})
           for stem in ("export_a", "export_b", "export_c")}
    assert {k: v and v.isoformat() for k, v in got.items()} == {
        "export_a": "2020-06-04T05:46:39+00:00", "export_b": "2023-07-05T05:46:39+00:00", "export_c": None}
    (tmp_path / "gee").mkdir()
    (tmp_path / "gee" / "metadata.json").write_text(json.dumps({"datetime": "2021-01-02T03:04:05Z"}))
    src = SceneSource(key=str(tmp_path / "gee") + "/", files={"B4": str(tmp_path / "gee" / "B4.tif")})
    assert acquisition_time(src, {}).isoformat() == "2021-01-02T03:04:05+00:00"


def test_a_sidecar_is_the_scenes_own_by_its_whole_name_and_earth_engine_get_info_is_read(tmp_path):
    """export_1's sidecar is export_1.json, not export_10.json (a harmonised export, which made export_1's offset
    be left in); Earth Engine's getInfo() layout (properties nested, the collection in ``id``) says HARMONIZED and
    gives the time; system:time_start and a PRODUCT_ID date a scene whose name does not."""
    from rsretrieve.data.scene import acquisition_time

    spec = get_sensor("sentinel2")
    (tmp_path / "export_1.json").write_text(json.dumps({"PRODUCT_ID": NEW, "system:id": "COPERNICUS/S2_SR/a"}))
    (tmp_path / "export_10.json").write_text(json.dumps({
        "PRODUCT_ID": NEW, "system:id": "COPERNICUS/S2_SR_HARMONIZED/b", "system:time_start": 1688552159000}))
    one, ten = (SceneSource(key=str(tmp_path / f"{s}.tif"), files={"*": str(tmp_path / f"{s}.tif")})
                for s in ("export_1", "export_10"))
    assert _with_baseline(spec, "full", one, {}) == "full+N0400" and _with_baseline(spec, "full", ten, {}) == "full"
    assert acquisition_time(one, {}).isoformat() == "2023-07-05T10:15:59+00:00"  # from PRODUCT_ID
    assert acquisition_time(ten, {}).isoformat() == "2023-07-05T10:15:59+00:00"  # from its PRODUCT_ID
    d = tmp_path / "getinfo"
    d.mkdir()
    (d / f"{NEW}.json").write_text(json.dumps({"type": "Image", "id": "COPERNICUS/S2_SR_HARMONIZED/20230705",
                                               "properties": {"PRODUCT_ID": NEW,
                                                              "system:time_start": 1688552159000}}))
    src = SceneSource(key=str(d / f"{NEW}.tif"), files={"*": str(d / f"{NEW}.tif")})
    assert offset_removed(src) and _with_baseline(spec, "full", src, {}) == "full"
    assert acquisition_time(src, {}).isoformat() == "2023-07-05T10:15:59+00:00"
    # an undated name whose sidecar has only Earth Engine's system:time_start
    (d / "export_x.json").write_text(json.dumps({"system:time_start": 1688552159000}))
    src = SceneSource(key=str(d / "export_x.tif"), files={"*": str(d / "export_x.tif")})
    assert acquisition_time(src, {}).isoformat() == "2023-07-05T10:15:59+00:00"


def test_a_folders_json_listing_is_kept_until_the_folder_changes(tmp_path, monkeypatch):
    """A scene's metadata is looked for in its folder several times; a flat folder of 20,000 scenes took 11 ms to
    list each time. The listing is kept by the folder's times and identity, and never within two seconds of a
    change."""
    import time
    import types

    from rsretrieve.data import scene as scene_mod

    listed = []
    real = scene_mod.os.scandir
    monkeypatch.setattr(scene_mod.os, "scandir", lambda p: listed.append(p) or real(p))
    folder = tmp_path / "flat"
    for i in range(3):
        write_tif(folder / f"{NEW}_{i}.tif", np.full((1, 8, 8), 1500, np.uint16))
    src = SceneSource(key=str(folder / f"{NEW}_0.tif"), files={"*": str(folder / f"{NEW}_0.tif")})
    # just changed: listed every time, so a sidecar written now is seen
    assert list(scene_mod._sidecars(src)) == []
    (folder / f"{NEW}_0.json").write_text(json.dumps({"PROCESSING_BASELINE": "05.09"}))
    assert list(scene_mod._sidecars(src)) == [{"PROCESSING_BASELINE": "05.09"}]
    assert len(listed) == 2
    # unchanged for longer (the clock 5 s on): listed once for any number of lookups
    monkeypatch.setattr(scene_mod, "time", types.SimpleNamespace(time_ns=lambda: time.time_ns() + 5_000_000_000))
    for _ in range(5):
        assert list(scene_mod._sidecars(src)) == [{"PROCESSING_BASELINE": "05.09"}]
    assert len(listed) == 3
    # a file added or removed changes the folder's times; so does a chmod (an unreadable folder made readable)
    (folder / f"{NEW}_0.json").unlink()
    assert list(scene_mod._sidecars(src)) == [] and len(listed) == 4
    time.sleep(0.05)  # past the kernel's coarse clock tick (the two-second guard is off here: the clock is faked)
    os.utime(folder, ns=(1_700_000_000_000_000_000,) * 2)  # its modification time put back: its status time moved
    assert list(scene_mod._sidecars(src)) == [] and len(listed) == 5
    time.sleep(0.05)
    os.chmod(folder, 0o750)
    assert list(scene_mod._sidecars(src)) == [] and len(listed) == 6


def test_a_scenes_own_sidecar_cut_short_rejects_it_with_the_reason(tmp_path):
    """An Earth Engine export whose <stem>.json is not valid JSON: it was read as if it had no sidecar (no baseline,
    so its DN offset left in, and no date), silently. Now it is refused with the sidecar's name, the JSON error and
    where; a scene beside it in the same run is added, and a folder's lone JSON that is not named after its scene
    (it may be anything) is still skipped when it cannot be parsed."""
    d = tmp_path / "flat"
    for stem in (NEW, "export_ok"):
        write_tif(d / f"{stem}.tif", np.full((12, 48, 48), 1500, np.uint16), crs="EPSG:32632",
                  origin=(600_000, 5_400_000), nodata=0)
    (d / "export_ok.json").write_text(json.dumps({"datetime": "2023-07-05T10:15:59Z", "PROCESSING_BASELINE": "05.09"}))
    (d / f"{NEW}.json").write_text('{"PROCESSING_BASELINE": "05.09", "system:id": "COPERNICUS/S2_SR_HARMON')
    lone = tmp_path / "lone"
    write_tif(lone / "export_z.tif", np.full((12, 48, 48), 1500, np.uint16), crs="EPSG:32632",
              origin=(600_000, 5_400_000), nodata=0)
    (lone / "metadata.json").write_text('{"datetime": "2023-07-05T10')
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        report = ingest([d, lone], cat)
        assert [str(p) for p in report.problems] == [
            f"{d / (NEW + '.tif')}: its sidecar {d / (NEW + '.json')} is not valid JSON: Unterminated string starting "
            "at (line 1, column 47); it may say the scene's date or baseline: mend or move it"]
        assert sorted(s["key"] for s in cat.scenes()) == [str(d / "export_ok.tif"), str(lone / "export_z.tif")]


def test_a_sidecar_is_parsed_once_for_the_date_the_baseline_and_the_offset_flag(tmp_path, monkeypatch):
    import time
    import types

    from rsretrieve.data import scene as scene_mod

    parsed = []
    real = scene_mod.json.loads
    def loads(text, *a, **k):  # json.loads everywhere: only the sidecar's text is counted
        parsed.extend([1] if "S2_SR/x" in (text.decode() if isinstance(text, bytes) else text) else [])
        return real(text, *a, **k)

    monkeypatch.setattr(scene_mod.json, "loads", loads)
    write_tif(tmp_path / "export_q.tif", np.full((12, 48, 48), 1500, np.uint16), crs="EPSG:32632",
              origin=(600_000, 5_400_000), nodata=0)
    (tmp_path / "export_q.json").write_text(json.dumps({"system:id": "COPERNICUS/S2_SR/x", "PRODUCT_ID": NEW}))
    monkeypatch.setattr(scene_mod, "time", types.SimpleNamespace(time_ns=lambda: time.time_ns() + 5_000_000_000))
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        assert ingest([tmp_path / "export_q.tif"], cat).added == 1
        (s,) = cat.scenes()
        assert s["layout"] == "full+N0400" and s["acquired"] == "2023-07-05T10:15:59Z"
    assert len(parsed) == 1  # 3 before: once for each question


def _export(path):
    write_tif(path, np.full((12, 48, 48), 1500, np.uint16), crs="EPSG:32632", origin=(600_000, 5_400_000), nodata=0)


def test_a_neighbours_sidecar_is_not_a_scenes_own(tmp_path):
    """``field_north.json`` begins with ``field_`` but is ``field_north.tif``'s: cut short, it refused ``field.tif``
    too (and deleted its catalogued version); and ``field_north.tif`` without a sidecar took ``field.json``'s date as
    the folder's only JSON. A catalogued scene whose own sidecar is cut short keeps its earlier version; a sidecar in
    Latin-1 is read."""
    for stem in ("field", "field_north", "plain"):
        _export(tmp_path / f"{stem}.tif")
    (tmp_path / "field.json").write_text(json.dumps({"acquisition_date": "2021-06-01"}))
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        assert ingest([tmp_path], cat).added == 3
        when = {os.path.basename(s["key"]): s["acquired"] for s in cat.scenes()}
        assert when == {"field.tif": "2021-06-01T00:00:00Z", "field_north.tif": None, "plain.tif": None}
        (tmp_path / "field_north.json").write_text('{"acquisition_date": "2020-05-0')
        latin1 = '{"acquisition_date": "2019-04-03", "place": "Bogot\xe1"}'.encode("latin-1")
        (tmp_path / "plain.json").write_bytes(latin1)
        for stem in ("field", "field_north", "plain"):
            os.utime(tmp_path / f"{stem}.tif", ns=(1_700_000_000_000_000_000,) * 2)  # changed: read again
        report = ingest([tmp_path], cat)
        (p,) = report.problems
        assert p.path == str(tmp_path / "field_north.tif") and "its sidecar" in p.reason
        assert p.reason.endswith("; its earlier version stays in the catalog (this refusal may not be the file's "
                                 "fault): run ingest again once it is fixed")
        when = {os.path.basename(s["key"]): s["acquired"] for s in cat.scenes()}
        assert when == {"field.tif": "2021-06-01T00:00:00Z", "field_north.tif": None,
                        "plain.tif": "2019-04-03T00:00:00Z"}
