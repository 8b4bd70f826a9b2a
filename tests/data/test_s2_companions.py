"""A Sentinel-2 product's other rasters (SCL, AOT, WVP, the 8-bit true-colour image TCI / visual, the QI_DATA masks)
are its companions, not scenes; and an 8-bit RGB file is taken for Landsat 7's ``rgb_byte`` layout only when named
like Landsat 7 or forced with ``--sensor``."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from rsretrieve.data.catalog import Catalog
from rsretrieve.data.discover import discover
from rsretrieve.data.ingest import ingest
from rsretrieve.sensors import get_sensor
from tests.conftest import write_tif

ORIGIN = (600_000.0, 5_400_000.0)


def _band(path, dtype="uint16", count=1, value=1500, res=10.0):
    n = int(480 // res)
    write_tif(path, np.full((count, n, n), value, dtype), crs="EPSG:32632", origin=ORIGIN, res=res, nodata=0)


@pytest.mark.parametrize("names", [
    # Earth Search / Earth Engine downloads: one file per asset, named after it
    {"band": "{b}.tif", "aux": ["SCL.tif", "AOT.tif", "WVP.tif", "TCI.tif", "visual.tif", "L2A_PVI.tif"]},
    # a granule's files, as SAFE names them (here all in one folder)
    {"band": "T32UQD_20230705T101559_{b}.tif",
     "aux": ["T32UQD_20230705T101559_SCL_20m.tif", "T32UQD_20230705T101559_AOT_10m.tif",
             "T32UQD_20230705T101559_WVP_10m.tif", "T32UQD_20230705T101559_TCI_10m.tif",
             "MSK_CLDPRB_20m.tif", "MSK_SNWPRB_20m.tif"]},
])
def test_the_products_other_rasters_are_companions_not_scenes(tmp_path, names):
    spec = get_sensor("sentinel2")
    folder = tmp_path / "S2B_MSIL2A_20230705T101559_N0509_R065_T32UQD_20230705T133327"
    for b in spec.band_names:
        _band(folder / names["band"].format(b=b))
    for a in names["aux"]:
        rgb = "TCI" in a or "visual" in a or "PVI" in a
        _band(folder / a, dtype="uint8", count=3 if rgb else 1, value=4, res=20.0 if "20m" in a else 10.0)
    sources, problems = discover([folder])
    assert problems == [] and len(sources) == 1 and len(sources[0].files) == 12
    cat = Catalog(tmp_path / "ws" / "catalog.sqlite", tile_m=480)
    try:
        report = ingest([folder], cat)
        assert report.problems == [] and report.added == 1
        (scene,) = cat.scenes()
        assert scene["sensor"] == "sentinel2" and scene["layout"] == "full+N0400"
    finally:
        cat.close()


def test_an_8_bit_rgb_file_is_landsat_7_only_when_named_so_or_forced(tmp_path, capsys):
    from rsretrieve.cli import main

    ortho = tmp_path / "archive" / "ortho.tif"
    write_tif(ortho, np.full((3, 48, 48), 90, np.uint8), crs="EPSG:32632", origin=ORIGIN, res=10.0, nodata=0)
    cat = Catalog(tmp_path / "ws" / "catalog.sqlite", tile_m=480)
    try:
        report = ingest([ortho], cat)
        assert report.added == 0 and len(report.problems) == 1
        (p,) = report.problems
        assert p.path == str(ortho)
        assert p.reason.startswith("3 band(s) of uint8 fit no registered sensor (")
        assert p.reason.endswith("(landsat7's rgb_byte layout has 3 bands, but is taken only for a file named like "
                                 "landsat7 or with --sensor landsat7)")
        report = ingest([ortho], cat, sensor="landsat7")
        assert report.problems == [] and report.added == 1
        (scene,) = cat.scenes()
        assert (scene["sensor"], scene["layout"]) == ("landsat7", "rgb_byte")
    finally:
        cat.close()
    # named like Landsat 7 (as rasterio's RGB.byte.tif, or a product id), it is taken without --sensor
    for i, name in enumerate(["LE07_L2SP_042034_20200101_20200201_02_T1_rgb.tif", "RGB.byte.tif"]):
        named = tmp_path / f"archive{i + 2}" / name
        write_tif(named, np.full((3, 48, 48), 90, np.uint8), crs="EPSG:32632", origin=ORIGIN, res=10.0, nodata=0)
        assert main(["ingest", str(named.parent), "--workspace", str(tmp_path / f"ws{i + 2}")]) == 0
        assert "1 scenes added" in capsys.readouterr().out
    # or described so by its STAC item: the item's properties are matched as well as the file's path
    item = tmp_path / "archive4" / "item.json"
    write_tif(item.parent / "ortho.tif", np.full((3, 48, 48), 90, np.uint8), crs="EPSG:32632", origin=ORIGIN,
              res=10.0, nodata=0)
    item.write_text(json.dumps({
        "type": "Feature", "stac_version": "1.0.0", "id": "x", "geometry": None, "links": [],
        "properties": {"datetime": "2020-01-01T00:00:00Z", "platform": "landsat-7"},
        "assets": {"data": {"href": "ortho.tif", "roles": ["data"],
                            "eo:bands": [{"name": "red"}, {"name": "green"}, {"name": "blue"}]}}}))
    assert main(["ingest", str(item), "--workspace", str(tmp_path / "ws4")]) == 0
    assert "1 scenes added" in capsys.readouterr().out


def test_rasterios_rgb_byte_tif_is_landsat_7_in_any_folder(real_data, tmp_path, cli):
    """rasterio's sample ``RGB.byte.tif`` is recognised by its file name (``(^|/)RGB\\.byte\\.tif$``), not only in a
    folder named like Landsat 7: the path was matched joined to the STAC text, so the ``$`` never matched."""
    plain = tmp_path / "plain"
    plain.mkdir()
    shutil.copy(real_data / "landsat7_rasterio" / "RGB.byte.tif", plain / "RGB.byte.tif")
    # 300 m pixels: tiles of 2401 m or more are 8 px across
    r = cli("ingest", plain, "--workspace", tmp_path / "ws", "--tile-size", "2401")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 scenes added" in r.stdout
    with Catalog(tmp_path / "ws" / "catalog.sqlite") as cat:
        (s,) = cat.scenes()
    assert (s["key"], s["sensor"], s["layout"]) == (str(plain / "RGB.byte.tif"), "landsat7", "rgb_byte")


def _scl_scene(folder, scl, name="{b}.tif", scl_name="SCL.tif"):
    """A clear 12-band per-band product (reflectance 0.05-0.1: no brightness cloud) with an SCL at 20 m."""
    spec = get_sensor("sentinel2")
    for b in spec.band_names:
        _band(folder / name.format(b=b), value=800)
    write_tif(folder / scl_name, scl.astype(np.uint8), crs="EPSG:32632", origin=ORIGIN, res=20.0, nodata=0)


@pytest.mark.parametrize("layout", ["assets", "stacked"])
def test_scl_cloud_classes_add_cloud(tmp_path, layout):
    """SCL classes 8, 9 and 10 (cloud of medium and high probability, thin cirrus) are cloud; 3 (cloud shadow),
    4 (vegetation), 11 (snow) and 0 (no data) are not. Here: 8 / 9 / 10 on three quarters of the left half's rows,
    3 / 11 / 0 elsewhere."""
    scl = np.full((24, 24), 4, np.uint8)
    scl[:6, :12], scl[6:12, :12], scl[12:18, :12] = 8, 9, 10
    scl[18:, :12], scl[:6, 12:], scl[6:12, 12:] = 3, 11, 0
    d = tmp_path / "archive" / "S2B_MSIL2A_20230705T101559_N0509_R065_T32UQD_20230705T133327"
    if layout == "assets":  # an Earth Search / Earth Engine download: B04.tif ..., SCL.tif
        _scl_scene(d, scl)
    else:  # a stacked product with its SCL beside it, named after it
        write_tif(d / "stack.tif", np.full((12, 48, 48), 800, np.uint16), crs="EPSG:32632", origin=ORIGIN,
                  res=10.0, nodata=0)
        write_tif(d / "stack_SCL.tif", scl, crs="EPSG:32632", origin=ORIGIN, res=20.0, nodata=0)
    cat = Catalog(tmp_path / "ws" / "catalog.sqlite", tile_m=480)
    try:
        report = ingest([d], cat)
        assert report.problems == [] and report.added == 1
        (scene,) = cat.scenes()
        assert set(scene["aux"]) == ({"SCL"} if layout == "assets" else {"stack_SCL"})  # a stacked file's: its stem
        assert scene["cloud_fraction"] == pytest.approx(0.375)  # 18 of 24 rows of half the columns
    finally:
        cat.close()


def test_a_bare_scl_goes_only_to_its_folders_one_scene(tmp_path):
    """``SCL.tif`` in a folder of two stacked products shares one letter with both names: it is neither's (it made
    one of them all cloud). Beside one per-band product and a land-cover raster (not a scene), it is the product's."""
    scl = np.full((24, 24), 9, np.uint8)
    two = tmp_path / "two"
    for name in ("S2A_MSIL2A_20230610T101559_N0509_R065_T32UQD_20230610T150000",
                 "S2B_MSIL2A_20230705T101559_N0509_R065_T32UQD_20230705T133327"):
        write_tif(two / f"{name}.tif", np.full((12, 48, 48), 800, np.uint16), crs="EPSG:32632", origin=ORIGIN,
                  res=10.0, nodata=0)
    write_tif(two / "SCL.tif", scl, crs="EPSG:32632", origin=ORIGIN, res=20.0, nodata=0)
    one = tmp_path / "one"
    _scl_scene(one, scl)
    write_tif(one / "site_landcover.tif", np.full((48, 48), 3, np.uint8), crs="EPSG:32632", origin=ORIGIN,
              res=10.0, nodata=255)
    cat = Catalog(tmp_path / "ws" / "catalog.sqlite", tile_m=480)
    try:
        report = ingest([two, one], cat)
        assert report.problems == [] and report.added == 3
        got = {s["key"].split("/")[-2] if s["key"].endswith("/") else s["key"].split("/")[-1][:3]:
               (s["cloud_fraction"], set(s["aux"])) for s in cat.scenes()}
        assert got == {"S2A": (0.0, set()), "S2B": (0.0, set()), "one": (pytest.approx(1.0), {"SCL"})}
    finally:
        cat.close()


L7_PRODUCT = "LE07_L2SP_042034_20200101_20200201_02_T1"


@pytest.mark.parametrize("name, whose, forced", [
    ("TCI.tif", "sentinel2, sentinel2_l1c", None),
    ("TCI.tif", "sentinel2, sentinel2_l1c", "landsat7"),  # --sensor does not make a companion a scene
    ("SCL.tif", "sentinel2", None),
    (f"{L7_PRODUCT}_QA_PIXEL.TIF", "landsat7", None),
])
def test_a_companion_named_on_its_own_is_refused_saying_why(tmp_path, capsys, name, whose, forced):
    """``ingest a/TCI.tif`` (a lone ``SCL.tif``, ``QA_PIXEL``) went nowhere: "0 rejected", exit 0. A path the user
    named is ingested or refused with why; found in a folder beside its product, it stays the product's companion."""
    from rsretrieve.cli import main

    folder = tmp_path / "a"
    if whose == "landsat7":
        for b in get_sensor("landsat7").band_names:
            _band(folder / f"{L7_PRODUCT}_{b}.TIF", value=9000, res=30.0)
    else:
        for b in get_sensor("sentinel2").band_names:
            _band(folder / f"{b}.tif")
    companion = folder / name
    _band(companion, dtype="uint8" if whose != "landsat7" else "uint16", count=3 if name == "TCI.tif" else 1,
          value=4, res=30.0 if whose == "landsat7" else 10.0)
    args = ["ingest", str(companion), "--workspace", str(tmp_path / "ws")] + (["--sensor", forced] if forced else [])
    assert main(args) == 1
    out = capsys.readouterr()
    assert "0 scenes added" in out.out and "1 rejected" in out.out
    assert (f"rejected: {companion}: named as the companion file of a product ({whose}), not a scene of its own, "
            f"and no band file of its product is given with it: name the product's folder ({folder}) to ingest it "
            "with its bands") in out.out + out.err
    with Catalog(tmp_path / "ws" / "catalog.sqlite") as cat:
        assert cat.scenes() == []
    # named with its product's bands, or found in the product's folder, it is the product's companion
    role = "QA_PIXEL" if whose == "landsat7" else Path(name).stem
    for paths in ([*sorted(folder.iterdir())], [folder], [folder, companion]):
        sources, problems = discover(paths, lone_companions=True)
        assert problems == [] and len(sources) == 1
        assert sources[0].aux == {role: str(companion)}, paths
    assert main(["ingest", str(folder), "--workspace", str(tmp_path / "ws")]) == 0
    with Catalog(tmp_path / "ws" / "catalog.sqlite") as cat:
        (scene,) = cat.scenes()
        assert scene["aux"] == {role: str(companion)}


def test_a_companion_named_with_scenes_none_of_which_is_its_product_is_refused(tmp_path):
    """``ingest two/*``: a bare ``SCL.tif`` beside two products is neither's (see the test above), and it was named:
    refused, not dropped unsaid. In the folder walk it stays quiet."""
    two = tmp_path / "two"
    for name in ("S2A_MSIL2A_20230610T101559_N0509_R065_T32UQD_20230610T150000",
                 "S2B_MSIL2A_20230705T101559_N0509_R065_T32UQD_20230705T133327"):
        write_tif(two / f"{name}.tif", np.full((12, 48, 48), 800, np.uint16), crs="EPSG:32632", origin=ORIGIN,
                  res=10.0, nodata=0)
    write_tif(two / "SCL.tif", np.full((24, 24), 9, np.uint8), crs="EPSG:32632", origin=ORIGIN, res=20.0, nodata=0)
    sources, problems = discover(sorted(two.iterdir()), lone_companions=True)
    assert len(sources) == 2 and all(s.aux == {} for s in sources)
    assert [str(p) for p in problems] == [
        f"{two / 'SCL.tif'}: named as the companion file of a product (sentinel2), not a scene of its own, and none "
        "of the 2 scene(s) found beside it is its product (their names share no product id with its, and a companion "
        "named apart from its product goes only to its folder's only scene): not ingested"]
    sources, problems = discover([two], lone_companions=True)
    assert len(sources) == 2 and problems == []
