"""Filter validation (one-line messages), GeoJSON regions, and the geometry-to-rows step against brute force."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone

import numpy as np
import pytest
import shapely
from shapely.geometry import MultiPolygon, Point, Polygon, box, mapping

from rsretrieve.index import filters as filters_mod
from rsretrieve.index.filters import CompiledFilter, QueryFilter, load_region, parse_bbox, ranges_to_rows
from rsretrieve.index.hilbert import grid_xy
from rsretrieve.index.region import INSIDE, NEAR, OUTSIDE, Region

from .conftest import brute_mask

BOWTIE = Polygon([(0, 0), (2, 2), (2, 0), (0, 2), (0, 0)])


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg
    return msg


@pytest.mark.parametrize("bbox", ["1,2,3", "a,b,c,d", (0, 10, 5, 10), (0, 20, 5, 10), (-181, 0, 5, 10),
                                  (0, -91, 5, 10), (0, 0, 200, 10)])
def test_bad_bbox_is_refused_with_the_rule(bbox):
    with pytest.raises(ValueError) as exc:
        QueryFilter(bbox=bbox)
    assert _one_line(exc).startswith("bbox must be W,S,E,N with -180<=W,E<=180 and -90<=S<N<=90, got ")


def test_bbox_string_is_parsed():
    assert parse_bbox("170,-20,-170,-10") == (170.0, -20.0, -170.0, -10.0)


def test_end_before_start_is_refused():
    with pytest.raises(ValueError) as exc:
        QueryFilter(start=datetime(2020, 5, 1), end=datetime(2020, 4, 30))
    assert "is before start" in _one_line(exc)


def test_date_end_includes_the_whole_day():
    lo, hi = QueryFilter(start=date(2020, 1, 1), end=date(2020, 1, 1)).time_range()
    assert lo == int(datetime(2020, 1, 1, tzinfo=timezone.utc).timestamp())
    assert hi == lo + 86399


@pytest.mark.parametrize("geom, text", [(BOWTIE, "not a valid polygon: Self-intersection"),
                                        (Polygon(), "is empty"), (Point(1, 2), "must be a Polygon or MultiPolygon"),
                                        (box(170, 0, 190, 10), "must be in lon/lat degrees")])
def test_bad_polygon_is_refused(geom, text):
    with pytest.raises(ValueError) as exc:
        QueryFilter(polygon=geom)
    assert text in _one_line(exc)


def test_unknown_sensor_is_named():
    with pytest.raises(ValueError) as exc:
        QueryFilter(sensors={"landsat9"}).check_sensors(["sentinel1", "sentinel2"])
    assert _one_line(exc) == "unknown sensor 'landsat9'; known sensors: sentinel1, sentinel2"


def test_load_region_reads_feature_collection_feature_and_geometry(tmp_path):
    a, b = box(0, 0, 1, 1), box(5, 5, 6, 6)
    docs = {"fc.geojson": {"type": "FeatureCollection", "features": [
                {"type": "Feature", "properties": {}, "geometry": mapping(a)},
                {"type": "Feature", "properties": {}, "geometry": mapping(b)}]},
            "f.geojson": {"type": "Feature", "properties": {}, "geometry": mapping(a)},
            "g.geojson": mapping(MultiPolygon([a, b]))}
    for name, doc in docs.items():
        (tmp_path / name).write_text(json.dumps(doc))
    assert load_region(tmp_path / "fc.geojson").area == pytest.approx(2.0)
    assert load_region(tmp_path / "f.geojson").equals(a)
    assert load_region(tmp_path / "g.geojson").area == pytest.approx(2.0)


@pytest.mark.parametrize("content, text", [(None, "does not exist"), ("{not json", "is not GeoJSON"),
                                           (json.dumps(mapping(Point(0, 0))), "Polygon or MultiPolygon geometries"),
                                           (json.dumps(mapping(BOWTIE)), "not a valid polygon"),
                                           (json.dumps({"type": "FeatureCollection", "features": []}), "got none")])
def test_load_region_refuses_bad_files(tmp_path, content, text):
    path = tmp_path / "r.geojson"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError) as exc:
        load_region(path)
    assert text in _one_line(exc)


@pytest.mark.parametrize("level", [8, 10, 12])
def test_cells_classified_inside_or_outside_hold_only_such_points(level):
    outer = Polygon([(0, 0), (10, 0), (10, 10), (5, 6), (0, 10)], holes=[[(2, 2), (4, 2), (4, 4), (2, 4)]])
    geom = MultiPolygon([outer, box(20, 20, 25, 23)])
    region = Region(geom)
    (x0, x1), (y0, y1) = grid_xy(np.array([-1.0, 26.0]), np.array([-1.0, 24.0]), level)
    cells = np.stack([a.ravel() for a in np.meshgrid(np.arange(x0, x1 + 1), np.arange(y0, y1 + 1))], 1)
    flags = region.classify_cells(level, cells[:, 0], cells[:, 1])
    assert (flags == INSIDE).sum() > 10 and (flags == OUTSIDE).sum() > 10 and (flags == NEAR).sum() > 10
    rng = np.random.default_rng(level)
    size_x, size_y = 360 / 2 ** level, 180 / 2 ** level
    for flag, expected in ((INSIDE, True), (OUTSIDE, False)):
        pick = cells[flags == flag]
        u, v = rng.random((2, pick.shape[0], 20))
        lon = ((pick[:, 0, None] + u) * size_x - 180).ravel()
        lat = ((pick[:, 1, None] + v) * size_y - 90).ravel()
        corners = [((pick[:, 0] + a) * size_x - 180, (pick[:, 1] + b) * size_y - 90) for a in (0, 1) for b in (0, 1)]
        lon = np.concatenate([lon, *[c[0] for c in corners]])
        lat = np.concatenate([lat, *[c[1] for c in corners]])
        assert (shapely.intersects_xy(geom, lon, lat) == expected).all()


def test_ranges_to_rows_concatenates_aranges():
    assert ranges_to_rows(np.array([2, 7, 20]), np.array([4, 8, 23])).tolist() == [2, 3, 7, 20, 21, 22]


FILTERS = {
    "bbox": QueryFilter(bbox=(-5, 40, 10, 50)),
    "antimeridian": QueryFilter(bbox=(175, -22, -175, -12)),
    "polygon": QueryFilter(polygon=Polygon([(72, 10), (88, 12), (80, 28), (74, 20)])),
    "multipolygon": QueryFilter(polygon=MultiPolygon([box(0, 45, 5, 50), box(120, -30, 125, -25)])),
    "polygon_with_hole": QueryFilter(polygon=Polygon([(-9, 37), (29, 39), (25, 59), (3, 50), (-9, 58)],
                                                     holes=[[(0, 42), (14, 42), (14, 52), (0, 47)]])),
    "time": QueryFilter(start=datetime(2019, 1, 1), end=datetime(2019, 12, 31, 23, 59, 59)),
    "open_end": QueryFilter(end=datetime(2018, 1, 1)),
    "sensors": QueryFilter(sensors={"enmap", "sentinel1"}),
    "combined": QueryFilter(bbox=(-10, 36, 30, 60), start=date(2018, 1, 1), end=date(2020, 12, 31),
                            sensors={"sentinel2"}, exclude_scene_ids={3, 4, 5}, exclude_cell_ids={"c000010"}),
}


@pytest.mark.parametrize("name", FILTERS)
def test_rows_of_each_segment_equal_brute_force(store, tiles, name):
    flt = FILTERS[name]
    cf = CompiledFilter(flt, store.sensors)
    got = np.concatenate([seg.tile_id[cf.rows(seg)] for seg in store.segments])
    expected = tiles["tile_ids"][brute_mask(tiles, flt)]
    assert expected.size > 0
    assert sorted(got.tolist()) == sorted(expected.tolist())


@pytest.mark.parametrize("chunk", [1, 7, 500])
@pytest.mark.parametrize("name", ["bbox", "polygon_with_hole", "combined", "time"])
def test_rows_checked_in_chunks_are_the_same_ascending_rows(store, name, chunk, monkeypatch):
    """Rows are checked in passes of ROWS_CHUNK rows (long ranges cut): the same rows, ascending, whatever the size."""
    flt = FILTERS[name]
    whole = [CompiledFilter(flt, store.sensors).rows(seg) for seg in store.segments]
    monkeypatch.setattr(filters_mod, "ROWS_CHUNK", chunk)
    for seg, ref in zip(store.segments, whole):
        got = CompiledFilter(flt, store.sensors).rows(seg)
        assert got.dtype == np.int64 and got.tolist() == ref.tolist() and (np.diff(got) > 0).all()
