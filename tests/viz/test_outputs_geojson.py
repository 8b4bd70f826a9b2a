"""Query GeoJSON as a GIS reads it (RFC 7946): lon/lat, right-hand rule, antimeridian split, ISO 8601 dates."""

import json

import numpy as np
import pytest
from pyproj import Transformer
from shapely import is_ccw
from shapely.geometry import LinearRing, box, shape

from rsretrieve.data.grid import to_lonlat, utm_epsg
from rsretrieve.index.query import Hit, QueryTile
from rsretrieve.viz.results import feature_collection, write_geojson


def _footprint(lon, lat, epsg=None, half=240.0):
    """The 480 m cell around (lon, lat) in EPSG:4326, as the catalog stores it (WKT)."""
    epsg = epsg or utm_epsg(lon, lat)
    x, y = Transformer.from_crs(4326, epsg, always_xy=True).transform(lon, lat)
    return to_lonlat(box(x - half, y - half, x + half, y + half), f"EPSG:{epsg}").wkt


# an ordinary cell, one either side of the antimeridian (north and south), a polar cap around the north pole
PLACES = [(13.7, 48.2, None), (179.999, 65.0, None), (179.999, -20.0, None), (0.0, 90.0, 3413)]


def _hits():
    return [Hit(i + 1, 100 + i, 0.9 - 0.1 * i, "sentinel2", f"c{i}", "2020-06-04T05:46:39Z", 1, "/a/scene.tif",
                lon, lat, _footprint(lon, lat, epsg)) for i, (lon, lat, epsg) in enumerate(PLACES)]


def _rings(geometry):
    polys = geometry["coordinates"] if geometry["type"] == "MultiPolygon" else [geometry["coordinates"]]
    for poly in polys:
        yield True, poly[0]
        for hole in poly[1:]:
            yield False, hole


def test_footprints_follow_the_right_hand_rule_also_when_split_at_the_antimeridian_or_around_a_pole():
    q = QueryTile(np.zeros((2, 4, 4), np.float32), "sentinel1", "tile 7", tile_id=7, cell_id="c", acquired=None)
    fc = feature_collection(q, _hits())
    kinds = [f["geometry"]["type"] for f in fc["features"]]
    assert kinds == ["MultiPolygon"] * 4  # split where it crosses 180 degrees, and then all of one type
    assert [len(f["geometry"]["coordinates"]) for f in fc["features"]] == [1, 2, 2, 1]
    for f in fc["features"]:
        g = shape(f["geometry"])
        assert g.is_valid and -180 <= g.bounds[0] <= g.bounds[2] <= 180 and -90 <= g.bounds[1] <= g.bounds[3] <= 90
        for exterior, ring in _rings(f["geometry"]):
            # RFC 7946 3.1.6: exterior rings counter-clockwise, holes clockwise
            assert is_ccw(LinearRing(ring)) == exterior, (f["properties"]["rank"], exterior)
    assert "crs" not in fc  # RFC 7946 has no crs member: coordinates are WGS 84 lon/lat


def test_a_gis_reads_the_file_as_polygons_in_wgs84_with_utc_dates(tmp_path):
    pyogrio = pytest.importorskip("pyogrio")
    q = QueryTile(np.zeros((2, 4, 4), np.float32), "sentinel1", "tile 7", tile_id=7, cell_id="c",
                  acquired="2020-06-07T01:08:00Z")
    path = write_geojson(tmp_path / "q.geojson", q, _hits())
    info = pyogrio.read_info(path)
    # one geometry type for the layer (mixed Polygon and MultiPolygon features make it 'Unknown')
    assert info["crs"] == "EPSG:4326" and info["features"] == len(PLACES) and info["geometry_type"] == "MultiPolygon"
    df = pyogrio.read_dataframe(path)
    assert df["rank"].tolist() == [1, 2, 3, 4] and df["tile_id"].tolist() == [100, 101, 102, 103]
    assert str(df["acquired"].dt.tz) == "UTC" and df["acquired"].iloc[0].isoformat() == "2020-06-04T05:46:39+00:00"
    # lon/lat order: the first cell lies in Austria, at 13.7 E 48.2 N, not in the Indian Ocean at 48.2 E 13.7 N
    assert df.geometry.iloc[0].centroid.x == pytest.approx(13.7, abs=0.01)
    assert df.geometry.iloc[0].centroid.y == pytest.approx(48.2, abs=0.01)
    assert json.loads(path.read_text())["features"][0]["properties"]["acquired"] == "2020-06-04T05:46:39Z"


def test_the_query_is_a_foreign_member_not_properties_which_rfc_7946_forbids_on_a_feature_collection():
    q = QueryTile(np.zeros((2, 4, 4), np.float32), "sentinel1", "tile 7", tile_id=7, cell_id="c",
                  acquired="2020-06-07T01:08:00Z")
    fc = feature_collection(q, _hits()[:1])
    assert set(fc) - {"type", "features"} == {"query"}  # 7.1: no "geometry" or "properties" member
    assert fc["query"] == {"origin": "tile 7", "sensor": "sentinel1", "cell_id": "c", "tile_id": 7,
                           "acquired": "2020-06-07T01:08:00Z"}
    assert all(set(f) == {"type", "geometry", "properties"} for f in fc["features"])


def test_a_collection_without_an_antimeridian_cell_keeps_plain_polygons(tmp_path):
    pyogrio = pytest.importorskip("pyogrio")
    q = QueryTile(np.zeros((2, 4, 4), np.float32), "sentinel1", "tile 7")
    path = write_geojson(tmp_path / "q.geojson", q, [_hits()[0], _hits()[3]])
    assert pyogrio.read_info(path)["geometry_type"] == "Polygon"
