"""Query GeoJSON as a GIS reads it (RFC 7946): lon/lat, right-hand rule, antimeridian split, ISO 8601 dates."""

import json
import shutil
import subprocess

import numpy as np
import pytest
from pyproj import Transformer
from shapely import is_ccw
from shapely import wkt
from shapely.geometry import LinearRing, Point, box, shape

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
    assert fc["query"] == {"origin": "tile 7", "sensor": "sentinel1", "cell_id": "c", "tile_id": 7, "scene_id": None,
                           "acquired": "2020-06-07T01:08:00Z"}
    assert all(set(f) == {"type", "geometry", "properties"} for f in fc["features"])


def test_a_collection_without_an_antimeridian_cell_keeps_plain_polygons(tmp_path):
    pyogrio = pytest.importorskip("pyogrio")
    q = QueryTile(np.zeros((2, 4, 4), np.float32), "sentinel1", "tile 7")
    path = write_geojson(tmp_path / "q.geojson", q, [_hits()[0], _hits()[3]])
    assert pyogrio.read_info(path)["geometry_type"] == "Polygon"


def _query(lon=13.7, lat=48.2, epsg=None, **kw):
    return QueryTile(np.zeros((2, 4, 4), np.float32), "sentinel1", "tile 7", tile_id=7, cell_id="c", scene_id=3,
                     acquired="2020-06-07T01:08:00Z", footprint=_footprint(lon, lat, epsg), **kw)


def test_the_query_footprint_is_the_last_feature_with_role_query_and_the_hits_are_role_hit():
    q = _query(13.71, 48.21)
    fc = feature_collection(q, [_hits()[0]])
    assert [f["properties"]["role"] for f in fc["features"]] == ["hit", "query"]
    hit, qf = fc["features"]
    assert hit["properties"]["rank"] == 1 and "rank" not in qf["properties"] and "score" not in qf["properties"]
    assert qf["properties"] == {"role": "query", "origin": "tile 7", "tile_id": 7, "sensor": "sentinel1",
                                "cell_id": "c", "acquired": "2020-06-07T01:08:00Z", "scene_id": 3}
    assert qf["geometry"]["type"] == "Polygon" and shape(qf["geometry"]).equals(wkt.loads(q.footprint))
    assert shape(qf["geometry"]).contains(Point(13.71, 48.21))
    assert is_ccw(LinearRing(qf["geometry"]["coordinates"][0]))  # RFC 7946 3.1.6, as the hits'


def test_a_query_footprint_split_at_the_antimeridian_makes_every_feature_a_multipolygon_and_follows_the_hits():
    # the query crosses 180 degrees and no hit does: every geometry is a MultiPolygon, the query's two parts
    fc = feature_collection(_query(179.999, 65.0), [_hits()[0]])
    assert [f["geometry"]["type"] for f in fc["features"]] == ["MultiPolygon", "MultiPolygon"]
    assert [len(f["geometry"]["coordinates"]) for f in fc["features"]] == [1, 2]
    # a hit crosses it and the plain query cell becomes a MultiPolygon of one part
    fc = feature_collection(_query(), _hits()[:2])
    assert [f["geometry"]["type"] for f in fc["features"]] == ["MultiPolygon"] * 3
    for f in fc["features"]:
        for exterior, ring in _rings(f["geometry"]):
            assert is_ccw(LinearRing(ring)) == exterior


def test_a_query_without_a_footprint_has_no_feature():
    q = QueryTile(np.zeros((2, 4, 4), np.float32), "sentinel1", "vector")  # as made by hand: no ground known
    fc = feature_collection(q, _hits()[:2])
    assert [f["properties"]["role"] for f in fc["features"]] == ["hit", "hit"]
    assert feature_collection(q, [])["features"] == []
    assert [f["properties"]["role"] for f in feature_collection(_query(), [])["features"]] == ["query"]


def _check_rfc7946(fc):
    """The members RFC 7946 asks for, checked by hand: what a GeoJSON schema would check, plus one geometry type."""
    assert fc["type"] == "FeatureCollection" and isinstance(fc["features"], list)
    assert "crs" not in fc and "properties" not in fc and "geometry" not in fc  # 4, 7.1
    kinds = set()
    for f in fc["features"]:
        assert set(f) == {"type", "geometry", "properties"} and f["type"] == "Feature"
        g = f["geometry"]
        kinds.add(g["type"])
        assert g["type"] in ("Polygon", "MultiPolygon") and set(g) == {"type", "coordinates"}
        for _, ring in _rings(g):
            assert len(ring) >= 4 and ring[0] == ring[-1]  # 3.1.6: closed, at least four positions
            for pos in ring:
                assert len(pos) == 2 and all(isinstance(v, float) for v in pos)
                assert -180 <= pos[0] <= 180 and -90 <= pos[1] <= 90  # 3.1.1: lon, lat
        assert isinstance(f["properties"], dict) and f["properties"]["role"] in ("hit", "query")
    assert len(kinds) <= 1  # one geometry type: one layer in OGR
    roles = [f["properties"]["role"] for f in fc["features"]]
    assert roles.count("query") <= 1 and "query" not in roles[:-1]
    hits = [f["properties"] for f in fc["features"] if f["properties"]["role"] == "hit"]
    assert [p["rank"] for p in hits] == list(range(1, len(hits) + 1))


@pytest.mark.parametrize("places", [[0], [0, 1, 2, 3]], ids=["polygons", "split-and-polar"])
def test_the_file_is_rfc_7946_one_ogr_layer_with_the_query_and_reads_back_as_feature_collection(tmp_path, places):
    pyogrio = pytest.importorskip("pyogrio")
    q, hits = _query(13.72, 48.22), [_hits()[i] for i in places]
    path = write_geojson(tmp_path / "q.geojson", q, hits)
    fc = json.loads(path.read_text())
    assert fc == feature_collection(q, hits)  # the file and the service's response are one thing
    _check_rfc7946(fc)
    info = pyogrio.read_info(path)
    assert info["features"] == len(hits) + 1 and info["crs"] == "EPSG:4326"
    assert info["geometry_type"] == ("Polygon" if len(places) == 1 else "MultiPolygon")
    df = pyogrio.read_dataframe(path)
    assert df["role"].tolist() == ["hit"] * len(hits) + ["query"] and df["origin"].iloc[-1] == "tile 7"
    assert df.geometry.iloc[-1].contains(Point(13.72, 48.22))
    ogrinfo = shutil.which("ogrinfo")
    if ogrinfo:  # GDAL's own tool, where installed: one layer, its features, the query's among them
        out = subprocess.run([ogrinfo, "-ro", "-al", "-so", str(path)], capture_output=True, text=True).stdout
        assert "Layer name: q" in out and f"Feature Count: {len(hits) + 1}" in out, out


def test_the_file_has_one_feature_a_line_and_reads_back_as_the_collection(tmp_path):
    """Not indented coordinate by coordinate (json's indent is pure Python: 21 s of `query -k 100000 --geojson`)."""
    q, hits = _query(), _hits()
    text = write_geojson(tmp_path / "q.geojson", q, hits).read_text()
    lines = text.splitlines()
    assert len(lines) == len(hits) + 1 + 3 and lines[0] == '{"type": "FeatureCollection", "features": ['
    assert [json.loads(line.rstrip(","))["properties"].get("rank") for line in lines[1:-2]] == [1, 2, 3, 4, None]
    assert json.loads(text) == feature_collection(q, hits)


def test_scores_in_the_file_are_the_shortest_decimals_of_their_float32():
    hits = _hits()[:3]
    hits[0].score, hits[1].score = float(np.float32(0.8123456835746765)), float(np.float32(0.81234563))
    props = [f["properties"] for f in feature_collection(_query(), hits)["features"][:3]]
    assert [p["score"] for p in props] == [0.8123457, 0.8123456, float(str(np.float32(0.7)))]
