"""Sentinel-2 products as ESA delivers them (.SAFE folders of JPEG 2000 band files): an L2A granule's bands sit in
IMG_DATA/R10m, R20m and R60m with a resolution suffix (``T32UQD_<t>_B04_10m.jp2``) and make one scene, each band
from its finest folder; an L1C granule's sit in IMG_DATA itself. The product name (N0509) says the DN carry the
+1000 offset; SCL, AOT, WVP, TCI and the QI_DATA masks are the scene's companions."""

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from rsretrieve.data.catalog import Catalog
from rsretrieve.data.discover import SceneSource, discover, split_band_token, split_resolution
from rsretrieve.data.ingest import _aux_by_role, ingest
from rsretrieve.data.tiles import read_scene_tiles
from rsretrieve.sensors import get_sensor

L2A = "S2B_MSIL2A_20230705T101559_N0509_R065_T32UQD_20230705T133327"
L1C = "S2B_MSIL1C_20230705T101559_N0509_R065_T32UQD_20230705T120000"
STEM = "T32UQD_20230705T101559"
NATIVE = {"B01": 60, "B02": 10, "B03": 10, "B04": 10, "B05": 20, "B06": 20, "B07": 20, "B08": 10, "B8A": 20,
          "B09": 60, "B10": 60, "B11": 20, "B12": 20}
#: what each resolution folder of an L2A granule holds (as ESA's products do)
FOLDERS = {10: ["B02", "B03", "B04", "B08", "AOT", "TCI", "WVP"],
           20: ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B8A", "B11", "B12", "AOT", "SCL", "TCI", "WVP"],
           60: ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B8A", "B09", "B11", "B12", "AOT", "SCL", "TCI",
                "WVP"]}


def _jp2(path, data, res):
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="JP2OpenJPEG", width=data.shape[2], height=data.shape[1],
                       count=data.shape[0], dtype=data.dtype, crs="EPSG:32632", nodata=0, QUALITY=100,
                       REVERSIBLE="YES", transform=from_origin(600_000.0, 5_400_000.0, res, res)) as dst:
        dst.write(data)


def _reflectance(band: str, res: int) -> np.ndarray:
    """The band's reflectance on a 960 m square at ``res`` m: 0.05 + a ramp; a cloud in the top-left 480 m cell
    (0.6 in the visible bands, 0.5 at 1.6 um: not snow)."""
    n = 960 // res
    r = (0.05 + 0.2 * np.arange(n * n).reshape(n, n) / (n * n)).astype(np.float32)
    if band in ("B02", "B03", "B04", "B11"):
        r[: n // 2, : n // 2] = 0.6 if band != "B11" else 0.5
    return r


def _dn(refl: np.ndarray) -> np.ndarray:
    return (np.rint(refl * 10_000) + 1_000).astype(np.uint16)[None]  # baseline 05.09: the +1000 offset


def _l2a(root):
    img = root / f"{L2A}.SAFE" / "GRANULE" / "L2A_T32UQD_A033000_20230705T101559" / "IMG_DATA"
    for res, names in FOLDERS.items():
        for name in names:
            path = img / f"R{res}m" / f"{STEM}_{name}_{res}m.jp2"
            n = 960 // res
            if name == "TCI":
                _jp2(path, np.full((3, n, n), 90, np.uint8), res)
            elif name == "SCL":
                _jp2(path, np.full((1, n, n), 4, np.uint8), res)
            elif name in ("AOT", "WVP"):
                _jp2(path, np.full((1, n, n), 150, np.uint16), res)
            else:
                _jp2(path, _dn(_reflectance(name, res)), res)
    qi = img.parent / "QI_DATA"
    _jp2(qi / "MSK_CLDPRB_20m.jp2", np.zeros((1, 48, 48), np.uint8), 20)
    _jp2(qi / "L2A_PVI.jp2", np.full((3, 16, 16), 90, np.uint8), 60)
    (root / f"{L2A}.SAFE" / "MTD_MSIL2A.xml").write_text("<n1:Level-2A_User_Product/>")
    return img


def test_split_band_token_drops_the_resolution_suffix_in_a_granule():
    tokens = ["B8A", "B04", "B1", "VV"]
    assert split_band_token(f"{STEM}_B04_10m", tokens, resolution_suffix=True) == (STEM, "B04")
    assert split_band_token(f"{STEM}_B8A_20m", tokens, resolution_suffix=True) == (STEM, "B8A")
    assert split_band_token(f"{STEM}_B04", tokens, resolution_suffix=True) == (STEM, "B04")
    assert split_band_token("B1_60m", tokens, resolution_suffix=True) == ("", "B1")
    assert split_band_token(f"{STEM}_SCL_20m", tokens, resolution_suffix=True) is None
    assert split_band_token(f"{STEM}_B04_10M", tokens, resolution_suffix=True) == (STEM, "B04")
    # a token of several parts in either case (Landsat's names, lower-cased by some tools); a short one as written,
    # so stacked chips named cell_b1.tif, cell_b2.tif stay scenes of their own
    assert split_band_token("lc08_l2sp_044034_20200927_20201006_02_t1_sr_b4", [*tokens, "SR_B4"]) == (
        "lc08_l2sp_044034_20200927_20201006_02_t1", "SR_B4")
    assert split_band_token("cell_b1", tokens) is None and split_band_token("cell_B1", tokens) == ("cell", "B1")
    # elsewhere a name ending in _10m is not a band file's
    assert split_band_token(f"{STEM}_B04_10m", tokens) is None
    assert split_band_token("S1A_IW_GRDH_1SDV_20230705T053000_VV_10m", tokens) is None


def test_files_outside_a_granule_keep_their_old_grouping(tmp_path):
    """Band folders named R10m / R20m outside a SAFE's IMG_DATA are two scenes, as before; stacked files whose
    names end in <band>_10m / _20m are two scenes too (the coarser was dropped without a word)."""
    spec = get_sensor("sentinel2")
    for res in (10, 20):
        for b in spec.band_names:
            _jp2(tmp_path / "site1" / f"R{res}m" / f"{b}.jp2", _dn(_reflectance("B05", res)), res)
    for res in (10, 20):
        _jp2(tmp_path / "s1" / f"S1A_IW_GRDH_1SDV_20230705T053000_VV_{res}m.jp2",
             np.full((2, 960 // res, 960 // res), 100, np.uint16), res)
    sources, problems = discover([tmp_path])
    keys = sorted(s.key.removeprefix(str(tmp_path)) for s in sources)
    assert problems == [] and keys == ["/s1/S1A_IW_GRDH_1SDV_20230705T053000_VV_10m.jp2",
                                       "/s1/S1A_IW_GRDH_1SDV_20230705T053000_VV_20m.jp2", "/site1/R10m/",
                                       "/site1/R20m/"]


def test_an_l2a_safe_is_one_scene_each_band_at_its_finest(tmp_path):
    img = _l2a(tmp_path)
    sources, problems = discover([tmp_path])
    assert problems == [] and len(sources) == 1
    (src,) = sources
    assert src.key == str(img / f"{STEM}*")
    spec = get_sensor("sentinel2")
    want = {b: 10 if NATIVE[b] == 10 else 20 if b != "B09" else 60 for b in spec.band_names}  # B01 20 m: in R20m
    assert {b: int(p.rsplit("_", 1)[1][:2]) for b, p in src.files.items()} == want
    assert {"SCL_20m", "SCL_60m", "TCI_10m", "AOT_10m", "WVP_10m"} <= set(src.aux)
    # the granule's QI_DATA beside IMG_DATA: its masks and preview, named apart from the band files
    assert {"MSK_CLDPRB_20m", "L2A_PVI"} <= set(src.aux)

    cat = Catalog(tmp_path / "ws" / "catalog.sqlite", tile_m=480)
    try:
        report = ingest([tmp_path], cat)
        assert report.problems == [] and report.added == 1
        (scene,) = cat.scenes()
        assert (scene["sensor"], scene["layout"]) == ("sentinel2", "full+N0400")
        assert scene["acquired"] == "2023-07-05T10:15:59Z"
        tiles = cat.tiles()
        assert len(tiles) == 4
        # the cloud is the top-left cell: with the offset read, the rest is 0.05-0.25 reflectance, clear
        by_cell = {(t["col_off"], t["row_off"]): t["cloud_fraction"] for t in tiles}
        assert by_cell == {(0, 0): 1.0, (48, 0): 0.0, (0, 48): 0.0, (48, 48): 0.0}
        # pixels come back as the reflectance written (B04 at 10 m, B05 at 20 m: the top-right cell)
        arrays = dict(read_scene_tiles(scene, tiles, 480))
        tr = next(t for t in tiles if (t["col_off"], t["row_off"]) == (48, 0))
        x = arrays[tr["tile_id"]]
        for band, res in (("B04", 10), ("B05", 20)):
            b = spec.band(band)
            got = x[spec.band_index(band)] * b.std + b.mean
            n = 960 // res
            assert got[0, 0] == pytest.approx(_reflectance(band, res)[0, n // 2], abs=1e-4)
    finally:
        cat.close()


def test_an_l1c_safe_granule_is_one_scene(tmp_path):
    img = tmp_path / f"{L1C}.SAFE" / "GRANULE" / "L1C_T32UQD_A033000_20230705T101559" / "IMG_DATA"
    for band, res in NATIVE.items():
        _jp2(img / f"{STEM}_{band}.jp2", _dn(_reflectance(band, res)), res)
    _jp2(img / f"{STEM}_TCI.jp2", np.full((3, 96, 96), 90, np.uint8), 10)
    for mask in ("MSK_CLASSI_B00", "MSK_DETFOO_B04", "MSK_QUALIT_B04", "T32UQD_20230705T101559_PVI"):
        _jp2(img.parent / "QI_DATA" / f"{mask}.jp2", np.zeros((1, 16, 16), np.uint8), 60)
    (sources, problems) = discover([tmp_path])
    assert problems == [] and len(sources) == 1
    assert set(sources[0].aux) == {"TCI", "MSK_CLASSI_B00", "MSK_DETFOO_B04", "MSK_QUALIT_B04", "PVI"}
    cat = Catalog(tmp_path / "ws" / "catalog.sqlite", tile_m=480)
    try:
        report = ingest([tmp_path], cat)
        assert report.problems == [] and report.added == 1
        (scene,) = cat.scenes()
        assert (scene["sensor"], scene["layout"]) == ("sentinel2_l1c", "full+N0400")
        assert sorted(t["cloud_fraction"] for t in cat.tiles()) == [0.0, 0.0, 0.0, pytest.approx(1.0)]
    finally:
        cat.close()


def test_a_granule_missing_a_band_is_rejected_naming_the_band(tmp_path):
    img = _l2a(tmp_path)
    (img / "R10m" / f"{STEM}_B08_10m.jp2").unlink()
    cat = Catalog(tmp_path / "ws" / "catalog.sqlite", tile_m=480)
    try:
        report = ingest([tmp_path], cat)
    finally:
        cat.close()
    assert report.added == 0
    assert [str(p) for p in report.problems] == [
        f"{img / STEM}*: band files B01, B02, B03, B04, B05, B06, B07, B09, B11, B12, B8A do not make a complete "
        "product of any registered sensor (sentinel2 lacks B08; sentinel2_l1c lacks B08, B10)"]


def test_split_resolution_in_either_case():
    assert split_resolution(f"{STEM}_SCL_20m") == (20, f"{STEM}_SCL")
    assert split_resolution(f"{STEM}_SCL_20M") == (20, f"{STEM}_SCL")
    assert split_resolution("B1_60m") == (60, "B1")
    assert split_resolution(f"{STEM}_B04") == (0, f"{STEM}_B04")
    assert split_resolution("LC08_B4_30m") == (0, "LC08_B4_30m")  # 10, 20 and 60 m only
    assert split_resolution("site_110m") == (0, "site_110m")


def test_the_finest_scl_is_found_whatever_the_case_of_its_suffix():
    """Ingest upper-cases a companion's name before it strips the suffix; discover's suffix was lower-case only, so
    the two had kept their own patterns. One pattern, in either case, serves both."""
    aux = {"SCL_60m": f"/g/{STEM}_SCL_60m.jp2", "SCL_20M": f"/g/{STEM}_SCL_20M.jp2",
           "TCI_10m": f"/g/{STEM}_TCI_10m.jp2"}
    src = SceneSource(key=f"/g/{STEM}*", files={"B04": f"/g/{STEM}_B04_10m.jp2"}, aux=aux)
    assert _aux_by_role(src, "SCL") == f"/g/{STEM}_SCL_20M.jp2"
    assert _aux_by_role(src, "AOT") is None


def test_a_granules_scl_adds_cloud_from_its_finest_resolution(tmp_path):
    """SCL_20m marks the top-right cell cloud (class 9); SCL_60m, coarser, marks everything: the 20 m one is read."""
    img = _l2a(tmp_path)
    scl20 = np.full((1, 48, 48), 4, np.uint8)
    scl20[0, :24, 24:] = 9
    _jp2(img / "R20m" / f"{STEM}_SCL_20m.jp2", scl20, 20)
    _jp2(img / "R60m" / f"{STEM}_SCL_60m.jp2", np.full((1, 16, 16), 9, np.uint8), 60)
    cat = Catalog(tmp_path / "ws" / "catalog.sqlite", tile_m=480)
    try:
        report = ingest([tmp_path], cat)
        assert report.problems == [] and report.added == 1
        by_cell = {(t["col_off"], t["row_off"]): t["cloud_fraction"] for t in cat.tiles()}
        assert by_cell == {(0, 0): 1.0, (48, 0): 1.0, (0, 48): 0.0, (48, 48): 0.0}
    finally:
        cat.close()
