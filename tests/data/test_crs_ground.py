"""Tiles land on the right ground whatever the scene's CRS: polar caps, north zones south of the equator, land-cover
rasters at the antimeridian, and scenes in CRSs whose axes are turned against the UTM grid."""

import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from rasterio.transform import array_bounds, from_origin
from rasterio.warp import Resampling, calculate_default_transform, reproject
from shapely.geometry import Point, box

from rsretrieve.data.catalog import Catalog
from rsretrieve.data.grid import grid_epsg_for, to_lonlat
from rsretrieve.data.ingest import ingest
from rsretrieve.data.tiles import read_scene_tiles

S2 = "S2A_MSIL2A_20200101T100000"


def _s2(path, transform, crs, data=None, height=96, width=96):
    """A 12-band uint16 Sentinel-2 L2A file (nodata 0); random valid DN unless ``data`` is given."""
    if data is None:
        data = np.random.default_rng(0).integers(500, 3000, (12, height, width)).astype("uint16")
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", count=12, height=data.shape[1], width=data.shape[2],
                       dtype="uint16", crs=crs, transform=transform, nodata=0) as dst:
        dst.write(data)
    return path


def _cells(cat, key_part):
    return {t["cell_id"] for s in cat.scenes() if key_part in s["key"]
            for t in cat.tiles("t.scene_id = ?", (s["scene_id"],))}


# -- footprints around a pole -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("crs, pole", [("EPSG:3413", 90.0), ("EPSG:3031", -90.0)])
def test_a_footprint_around_a_pole_is_the_cap_it_covers(crs, pole):
    """A 1.2 km square centred on the pole: its lon/lat outline is the cap from its edge to the pole (it was the
    thin ring between the latitudes of its edge, with the pole and everything near it left out)."""
    square = box(-600, -600, 600, 600)
    fp = to_lonlat(square, crs, densify=16)
    assert fp.is_valid and fp.geom_type == "Polygon" and fp.bounds[0] == -180.0 and fp.bounds[2] == 180.0
    assert fp.contains(Point(37.0, pole * 0.999999))  # 11 cm from the pole
    rng = np.random.default_rng(0)
    xy = rng.uniform(-800, 800, (500, 2))
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(xy[:, 0], xy[:, 1])
    inside = (np.abs(xy) < 590).all(1)
    outside = (np.abs(xy) > 610).any(1)  # away from the densified edge
    got = np.array([fp.contains(Point(a, b)) for a, b in zip(lon, lat)])
    assert got[inside].all() and not got[outside].any()


def test_a_footprint_near_but_not_around_a_pole_is_unchanged():
    fp = to_lonlat(box(100_000, 100_000, 101_000, 101_000), "EPSG:3413", densify=16)
    assert fp.geom_type == "Polygon" and fp.bounds[3] < 89.0


# -- UTM north zones south of the equator -----------------------------------------------------------------------------
def test_grid_hemisphere_is_that_of_the_centre_for_utm_scenes():
    assert grid_epsg_for("EPSG:32633", 15.0, -20.0) == 32733  # USGS Landsat: north zone, negative northing
    assert grid_epsg_for("EPSG:32733", 15.0, 5.0) == 32633
    assert grid_epsg_for("EPSG:32633", 20.0, 48.0) == 32633  # the zone number stays the scene's own


def test_a_north_zone_scene_south_of_the_equator_shares_cells_with_the_south_zone_scene(tmp_path):
    """The same ground in EPSG:32633 (northing -2.2e6) and in EPSG:32733: same cells, same pixels."""
    d = tmp_path / "a"
    rows = {}
    for epsg in (32633, 32733):
        x, y = Transformer.from_crs(4326, epsg, always_xy=True).transform(15.0, -20.0)
        _s2(d / f"{S2}_{epsg}.tif", from_origin(10 * (x // 10) - 480, 10 * (y // 10) + 480, 10, 10), f"EPSG:{epsg}")
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        report = ingest([d], cat)
        assert report.added == 2 and not report.problems
        north, south = _cells(cat, "32633"), _cells(cat, "32733")
        assert north == south and all(c.startswith("33S_480m_r") for c in north)
        for s in cat.scenes():
            ts = cat.tiles("t.scene_id = ?", (s["scene_id"],))
            rows[s["key"][-9:-4]] = {t["cell_id"]: a for tid, a in read_scene_tiles(s, ts, 480.0)
                                     for t in ts if t["tile_id"] == tid}
    for cid, a in rows["32633"].items():
        np.testing.assert_array_equal(a, rows["32733"][cid])


# -- land cover at the antimeridian -----------------------------------------------------------------------------------
def test_a_lonlat_land_cover_raster_across_the_antimeridian_labels_the_scene_s_cells(tmp_path):
    """It was tiled in the zone of the centroid of its two split halves (lon ~0: zone 30S) and labelled no tile."""
    d = tmp_path / "a"
    t = from_origin(179.99, -17.0, 0.0001, 0.0001)  # 179.99 .. 180.01
    _s2(d / f"{S2}_am.tif", t, "EPSG:4326", height=100, width=200)
    with rasterio.open(d / "am_landcover.tif", "w", driver="GTiff", count=1, height=100, width=200, dtype="uint8",
                       crs="EPSG:4326", transform=t) as dst:
        dst.write(np.full((1, 100, 200), 3, "uint8"))
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        report = ingest([d], cat)
        assert report.added == 1 and not report.problems
        tiles = _cells(cat, "_am")
        labels = {r["cell_id"] for r in cat.labels()}
    assert labels and all(c.startswith("01S_") for c in labels) and labels <= tiles
    assert len(labels) >= len(tiles) // 2


# -- CRSs turned against the grid ------------------------------------------------------------------------------------
def _pattern(h, w):
    rr, cc = np.mgrid[0:h, 0:w]
    base = np.sin(cc / 7.0) * np.cos(rr / 11.0) + np.sin((rr + cc) / 5.0)
    return np.stack([(1500 + 600 * base + 50 * b).astype("uint16") for b in range(12)])  # 300 .. 3250: all valid


@pytest.mark.parametrize("dst_crs, lon, lat, utm", [("EPSG:3035", 25.0, 65.0, 32635),  # turned 13 degrees
                                                     ("EPSG:3031", 63.0, -80.0, 32741)])  # turned 60 degrees
def test_tiles_of_a_cell_hold_the_same_ground_in_a_crs_turned_against_the_grid(tmp_path, dst_crs, lon, lat, utm):
    """The same ground in UTM and warped (nearest) into LAEA Europe / Antarctic polar stereographic: the tiles of a
    cell both cover correlate as the same picture (they were the bounding box of the turned cell, resampled: the
    wrong ground, turned, correlation 0.17 / 0.01)."""
    d = tmp_path / "a"
    x, y = Transformer.from_crs(4326, utm, always_xy=True).transform(lon, lat)
    t = from_origin(480 * (x // 480) - 960, 480 * (y // 480) + 960, 10, 10)
    data = _pattern(240, 240)
    _s2(d / f"{S2}_utm.tif", t, f"EPSG:{utm}", data)
    dt, dw, dh = calculate_default_transform(f"EPSG:{utm}", dst_crs, 240, 240, *array_bounds(240, 240, t))
    warped = np.zeros((12, dh, dw), "uint16")
    reproject(data, warped, src_transform=t, src_crs=f"EPSG:{utm}", dst_transform=dt, dst_crs=dst_crs,
              resampling=Resampling.nearest, src_nodata=0, dst_nodata=0)
    _s2(d / f"S2B_MSIL2A_20200101T100000_warp.tif", dt, dst_crs, warped)
    arrays: dict[str, dict[str, np.ndarray]] = {}
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        assert ingest([d], cat).added == 2
        for s in cat.scenes():
            ts = cat.tiles("t.scene_id = ?", (s["scene_id"],))
            full = {t["tile_id"]: t["cell_id"] for t in ts if t["coverage"] == 1.0}
            arrays[s["key"][-8:-4]] = {full[tid]: a for tid, a in read_scene_tiles(s, ts, 480.0) if tid in full}
    shared = sorted(set(arrays["_utm"]) & set(arrays["warp"]))
    assert len(shared) >= 4
    cors = []
    for c in shared:  # on the pixels both hold (normalised nodata is 0: the warp leaves some at its rim)
        a, b = arrays["_utm"][c][0], arrays["warp"][c][0]
        both = (a != 0) & (b != 0)
        assert both.mean() > 0.9
        cors.append(np.corrcoef(a[both], b[both])[0, 1])
    assert min(cors) > 0.85 and np.median(cors) > 0.97


# -- non-square pixels ------------------------------------------------------------------------------------------------
def test_pixels_coarse_along_either_axis_are_refused_alike_and_the_rest_committed(cli, tmp_path):
    """10 m x 100 m pixels (and lon/lat pixels 111 m tall) made 480 m tiles 4.8 rows tall, stretched ten times: only
    the pixel width was checked, so the same pixels turned 90 degrees were refused and these were not."""
    d = tmp_path / "a"
    tall = _s2(d / f"{S2}_tall.tif", from_origin(500_000, 5_000_000, 10, 100), "EPSG:32633", height=30, width=300)
    wide = _s2(d / f"{S2}_wide.tif", from_origin(600_000, 5_000_000, 100, 10), "EPSG:32633", height=300, width=30)
    geo = _s2(d / f"{S2}_geo80.tif", from_origin(10.0, 80.0, 0.0002, 0.001), "EPSG:4326", height=30, width=300)
    good = _s2(d / f"{S2}_good.tif", from_origin(700_000, 5_000_000, 10, 20), "EPSG:32633", height=60, width=120)
    r = cli("ingest", d, "--workspace", tmp_path / "ws")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    rejected = sorted(line for line in r.stderr.splitlines() if line.startswith("rejected: "))
    assert rejected == sorted([
        f"rejected: {tall}: 100 m pixels make 480 m tiles 4.8 px across (fewer than 8); ingest it into a workspace "
        "with --tile-size >= 800",
        f"rejected: {wide}: 100 m pixels make 480 m tiles 4.8 px across (fewer than 8); ingest it into a workspace "
        "with --tile-size >= 800",
        f"rejected: {geo}: 111 m pixels make 480 m tiles 4.3 px across (fewer than 8); ingest it into a workspace "
        "with --tile-size >= 891"])
    with Catalog(tmp_path / "ws" / "catalog.sqlite") as cat:
        assert [s["key"] for s in cat.scenes()] == [str(good)] and cat.tiles()


@pytest.mark.parametrize("crs, lon, lat", [("EPSG:3413", 0.0, 90.0), ("EPSG:3031", 63.0, -80.0),
                                           ("EPSG:3035", 25.0, 65.0)])
def test_coverage_of_a_cell_turned_in_the_scene_crs_is_the_share_of_its_ground_the_scene_holds(tmp_path, crs, lon,
                                                                                               lat):
    """Counted by hand with pyproj on 20 x 20 points of each cell. It was counted on the cell's window (its bounding
    box in the scene's grid), which holds other ground too: a cell 15% covered at the North Pole was kept as 27%."""
    x, y = Transformer.from_crs(4326, crs, always_xy=True).transform(lon, lat)
    t = from_origin(x - 600, y + 600, 10, 10)
    f = _s2(tmp_path / "a" / f"{S2}_turned.tif", t, crs, height=120, width=120)
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        assert ingest([f], cat).added == 1
        epsg = cat.scenes()[0]["grid_epsg"]
        got = {(t_["row"], t_["col"]): t_["coverage"] for t_ in cat.tiles()}
    to_scene = Transformer.from_crs(epsg, crs, always_xy=True)
    to_grid = Transformer.from_crs(crs, epsg, always_xy=True)
    gx, gy = to_grid.transform(*np.meshgrid(x - 600 + 10 * np.arange(0.5, 120), y + 600 - 10 * np.arange(0.5, 120)))
    u = (np.arange(20) + 0.5) / 20 * 480
    truth = {}
    for r, c in set(zip((np.asarray(gy) // 480).astype(int).ravel(), (np.asarray(gx) // 480).astype(int).ravel())):
        px, py = np.meshgrid(c * 480 + u, r * 480 + u)
        col, row = ~t @ to_scene.transform(px.ravel(), py.ravel())
        truth[(r, c)] = float(np.mean((col >= 0) & (col < 120) & (row >= 0) & (row < 120)))
    assert {k for k, v in truth.items() if v >= 0.3} <= set(got) <= {k for k, v in truth.items() if v >= 0.2}
    assert max(abs(v - truth[k]) for k, v in got.items()) < 0.05


# -- footprints with no sense on the Earth ----------------------------------------------------------------------------
_WRONG = "the georeferencing is wrong (a shifted origin, swapped axes, or another CRS's coordinates)"


def test_a_footprint_off_the_earth_is_refused_in_one_line_and_real_places_are_not(tmp_path):
    """Longitudes past 360 degrees were wrapped (370 read as 10) and an easting of 5,000,000 m in UTM zone 32N
    (4,500 km from its central meridian) was placed in Iran: both catalogued, on ground they do not show. A northing
    past the pole went over it; a latitude past a pole and a point outside LAEA's domain stopped with a traceback.
    Files at the edges of real use (across the antimeridian, in 0..360, a northern zone south of the equator as
    Landsat writes it, 800 km east of a zone's central meridian as Norway's UTM 33 mosaics) are ingested."""
    d = tmp_path / "a"
    geo, utm32 = "EPSG:4326", "EPSG:32632"
    bad = {
        "lon365": (from_origin(365.0, 45.0, 0.0001, 0.0001), geo,
                   "its longitudes run 365 to 365.01 degrees, beginning past 360 (longitudes are written -180..180 "
                   f"or 0..360, a file across the line where they wrap running on past it): {_WRONG}"),
        "lonm400": (from_origin(-400.0, 45.0, 0.0001, 0.0001), geo,
                    "its longitudes run -400 to -399.99 degrees, ending before -180 (longitudes are written "
                    f"-180..180 or 0..360, a file across the line where they wrap running on past it): {_WRONG}"),
        "e5e6": (from_origin(5_000_000, 5_400_000, 10, 10), utm32,
                 "its eastings run 5,000,000 to 5,000,960, 4,501 km from the central meridian (9 degrees) of its "
                 f"Transverse Mercator CRS 'WGS 84 / UTM zone 32N', which holds the Earth only within 3,900 km of it: "
                 f"{_WRONG}"),
        "n12e6": (from_origin(500_000, 12_000_000, 10, 10), utm32,
                  "its northings run 11,999,040 to 12,000,000, past the north pole (at 9,997,965 in its CRS 'WGS 84 / "
                  f"UTM zone 32N'): {_WRONG}"),
        "lat95": (from_origin(10.0, 95.0, 0.0001, 0.0001), geo,
                  f"its latitudes run 94.9904 to 95 degrees, past a pole (the Earth's run -90 to 90): {_WRONG}"),
        "laea": (from_origin(40_000_000, 3_000_000, 10, 10), "EPSG:3035",
                 "its point (40,000,000, 3,000,000) has no place on the Earth in its CRS 'ETRS89-extended / LAEA "
                 f"Europe' (outside the projection's domain): {_WRONG}"),
    }
    good = {
        "antimeridian": (from_origin(179.995, 45.0, 0.0001, 0.0001), geo),
        "lon0to360": (from_origin(200.0, 45.0, 0.0001, 0.0001), geo),
        "west_of_180": (from_origin(-180.005, 45.0, 0.0001, 0.0001), geo),
        "across_greenwich_0to360": (from_origin(359.995, 45.0, 0.0001, 0.0001), geo),
        "south_of_equator_north_zone": (from_origin(500_000, -3_800_000, 10, 10), "EPSG:32635"),
        "norway_utm33": (from_origin(1_300_000, 7_800_000, 10, 10), "EPSG:32633"),
    }
    paths = {k: _s2(d / f"{S2}_{k}.tif", t, crs) for k, (t, crs, *_) in {**bad, **good}.items()}
    with Catalog(tmp_path / "ws" / "catalog.sqlite", tile_m=480) as cat:
        report = ingest([d], cat)
        assert sorted(map(str, report.problems)) == sorted(f"{paths[k]}: {why}" for k, (_, _, why) in bad.items())
        assert sorted(s["key"] for s in cat.scenes()) == sorted(str(paths[k]) for k in good)


@pytest.mark.parametrize("crs, bounds, px", [
    ("EPSG:4326", (-0.125, -90.125, 359.875, 90.125), (0.25, 0.25)),  # pixel centres on the poles and on 0 and 360
    ("EPSG:4326", (-180.0, -90.0, 180.0, 90.0), (1.0, 1.0)),
    ("EPSG:32632", (-3_000_000, 5_000_000, -2_990_000, 5_010_000), (10.0, 10.0)),  # 3,500 km west: within reach
    ("EPSG:32732", (300_000, 1_000_000, 310_000, 1_010_000), (10.0, 10.0)),  # 80 degrees south
])
def test_whole_globe_grids_and_far_but_held_extents_are_not_refused(crs, bounds, px):
    from rsretrieve.data.scene import _footprint_problem

    assert _footprint_problem(rasterio.crs.CRS.from_string(crs).to_wkt(), bounds, px) is None


def test_a_geographic_file_wider_than_the_earth_is_refused():
    from rsretrieve.data.scene import _footprint_problem

    wkt = rasterio.crs.CRS.from_epsg(4326).to_wkt()
    assert _footprint_problem(wkt, (-180.0, -90.0, 181.5, 90.0), (0.5, 0.5)) == (
        f"it is 361.5 degrees of longitude wide, more than the Earth's 360: {_WRONG}")
