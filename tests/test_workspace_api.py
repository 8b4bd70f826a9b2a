"""``Workspace.query`` called as its docstring says, with odd but legal values, and with bad ones: each bad value is a
QueryError in one line naming the parameter, never another exception type or a silently different search."""

import datetime as dt
import json
import re

import numpy as np
import pytest
from shapely.geometry import Point, Polygon, box, mapping

from rsretrieve.data.catalog import Catalog
from rsretrieve.index.query import QueryError
from rsretrieve.workspace import Workspace


@pytest.fixture(scope="module")
def ws(small_workspace):
    w = Workspace.open(small_workspace)
    yield w
    w.close()


@pytest.fixture(scope="module")
def tile(small_workspace):
    with Catalog(small_workspace / "catalog.sqlite") as cat:
        return cat.tiles("t.sensor = 'sentinel1'")[0]


def _ids(res):
    return [h.tile_id for h in res.hits]


def test_numpy_ints_sets_tuples_dates_and_aware_times_give_the_plain_answers(ws, tile):
    tid = tile["tile_id"]
    plain = _ids(ws.query(tile_id=tid, k=5, target_sensors=["sentinel2"], start="2000-01-01", end="2100-12-31"))
    assert len(plain) == 5
    for kw in (dict(tile_id=np.int64(tid), k=np.int32(5)), dict(target_sensors={"sentinel2"}),
               dict(target_sensors=("sentinel2",)), dict(target_sensors=np.array(["sentinel2"])),
               dict(start=dt.date(2000, 1, 1), end=dt.date(2100, 12, 31)),
               dict(start=dt.datetime(2000, 1, 1, 5, tzinfo=dt.timezone(dt.timedelta(hours=5))))):
        args = dict(tile_id=tid, k=5, target_sensors=["sentinel2"], start="2000-01-01", end="2100-12-31") | kw
        assert _ids(ws.query(**args)) == plain, kw


def test_within_as_shapely_geojson_object_and_file_are_the_same_search(ws, tile, tmp_path):
    region = box(tile["lon"] - 0.01, tile["lat"] - 0.01, tile["lon"] + 0.01, tile["lat"] + 0.01)
    f = tmp_path / "r.geojson"
    f.write_text(json.dumps({"type": "Feature", "properties": {}, "geometry": mapping(region)}))
    from_file = _ids(ws.query(tile_id=tile["tile_id"], k=50, within=f))
    assert 0 < len(from_file) < 120  # the region is a real restriction
    assert _ids(ws.query(tile_id=tile["tile_id"], k=50, within=region)) == from_file
    assert _ids(ws.query(tile_id=tile["tile_id"], k=50, within=json.loads(f.read_text()))) == from_file


@pytest.mark.parametrize("kw, message", [
    # a shapely polygon across the antimeridian was searched the long way round (the same GeoJSON file is refused)
    (dict(within=Polygon([(170, -89), (-170, -89), (-170, 89), (170, 89)])),
     "within has an edge from lon 170 to -170, more than 180 degrees: read as the long way round; split a shape "
     "crossing the antimeridian into parts on either side of it (RFC 7946 3.1.9), or add vertices to a wide one"),
    (dict(within=Point(0, 0)), "within must hold Polygon or MultiPolygon geometries only, got ['Point']"),
    (dict(within=42), "within must be a GeoJSON file, a GeoJSON object or a shapely Polygon / MultiPolygon "
                      "(EPSG:4326), got int"),
    # an empty list searched every sensor; the service refuses it
    (dict(target_sensors=[]), "target_sensors must name at least one sensor (None: every sensor), got []"),
    (dict(target_sensors=set()), "target_sensors must name at least one sensor (None: every sensor), got set()"),
    (dict(target_sensors=[1]), "target_sensors must be sensor names (strings), got [1]"),
    (dict(start=np.datetime64("2020-01-01")),
     "start must be a date, a datetime or an ISO date-time string, got np.datetime64('2020-01-01')"),
    (dict(end=1577836800), "end must be a date, a datetime or an ISO date-time string, got 1577836800"),
    # an OverflowError from SQLite before
    (dict(tile_id=10**30), "no tile with id 1000000000000000000000000000000 in the catalog"),
    (dict(tile_id=2**63), "no tile with id 9223372036854775808 in the catalog"),
])
def test_bad_values_are_one_line_query_errors(ws, tile, kw, message):
    args = dict(tile_id=tile["tile_id"], k=3) | kw
    with pytest.raises(QueryError) as e:
        ws.query(**args)
    assert str(e.value) == message


def test_a_workspace_answers_from_other_threads_too(small_workspace, tile):
    from concurrent.futures import ThreadPoolExecutor

    w = Workspace.open(small_workspace)
    try:
        here = _ids(w.query(tile_id=tile["tile_id"], k=5))  # the engine of this thread first
        with ThreadPoolExecutor(2) as pool:  # sqlite3.ProgrammingError in every other thread before
            there = list(pool.map(lambda _: _ids(w.query(tile_id=tile["tile_id"], k=5)), range(4)))
        assert there == [here] * 4
    finally:
        w.close()
    assert _ids(Workspace.open(small_workspace).query(tile_id=tile["tile_id"], k=5)) == here


@pytest.mark.parametrize("value", ["", ","])
def test_the_cli_refuses_an_empty_target_sensors_as_the_api_does(small_workspace, tile, value, capsys):
    from rsretrieve.cli import main

    capsys.readouterr()
    code = main(["query", "--workspace", str(small_workspace), "--tile-id", str(tile["tile_id"]), "-k", "3",
                 f"--target-sensors={value}"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""  # it searched every sensor before
    assert err == f"rsretrieve query: error: --target-sensors must name at least one sensor, got {value!r}\n"


def test_a_model_without_its_index_names_the_command_that_builds_it(small_workspace, tile, tmp_path, capsys):
    import shutil

    from rsretrieve.cli import main
    from rsretrieve.index.store import IndexMismatchError
    from tests.conftest import save_untrained_model

    ws = shutil.copytree(small_workspace, tmp_path / "ws")
    save_untrained_model(ws, name="other", seed=3)
    hint = (f": `rsretrieve index --workspace {ws} --model other` indexes with model 'other' (an index holds one "
            f"model's vectors)")  # it said "re-run `rsretrieve index`", which indexes with the default model
    with pytest.raises(IndexMismatchError) as e:
        Workspace.open(ws).query(tile_id=tile["tile_id"], model="other")
    assert str(e.value).startswith(f"index at {ws / 'index'} was built with model ") and str(e.value).endswith(hint)
    capsys.readouterr()
    assert main(["query", "--workspace", str(ws), "--tile-id", str(tile["tile_id"]), "--model", "other"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == f"rsretrieve query: error: {e.value}\n"
    # the index now of 'other': `default` is the one without its index, and a bare `rsretrieve index` (which keeps
    # the index's model) would not build it
    from rsretrieve.index.indexer import index_workspace

    index_workspace(ws, model_name="other")
    with pytest.raises(IndexMismatchError, match=r"indexed as --model other\); this model is .*: `rsretrieve index "
                       rf"--workspace {re.escape(str(ws))} --model default` indexes with model 'default' "):
        Workspace.open(ws).query(tile_id=tile["tile_id"], model="default")
