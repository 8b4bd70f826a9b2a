"""The HTTP service on a small real workspace: health, queries by tile id and by upload, filters, previews, and
uploads that are malformed, oversized or name a path."""

import io
import json
import logging
import threading
from pathlib import Path

import numpy as np
import pytest
import rasterio
from fastapi.testclient import TestClient
from PIL import Image
from rasterio.windows import Window
from shapely import wkt
from shapely.geometry import shape

from rsretrieve.data.catalog import Catalog
from rsretrieve.data.tiles import read_scene_tiles
from rsretrieve.index.indexer import model_checksum
from rsretrieve.index.query import QueryError, run_query
from rsretrieve.index.store import IndexStore
from rsretrieve.serve import create_app
from rsretrieve.viz.quicklook import quicklook
from tests.conftest import run_cli, write_tif


@pytest.fixture(scope="module")
def ws(small_workspace):
    return small_workspace


@pytest.fixture(scope="module")
def tiny_client(ws):
    """A service whose uploads may be at most 0.01 MB (10 kB)."""
    with TestClient(create_app(ws, max_upload_mb=0.01)) as c:
        yield c


@pytest.fixture(scope="module")
def s1_tile(ws):
    """A fully covered Sentinel-1 tile of the catalog."""
    with Catalog(ws / "catalog.sqlite") as cat:
        t = cat.tiles("t.sensor = 'sentinel1' AND t.coverage = 1.0")[0]
        return t, cat.scene(t["scene_id"])


@pytest.fixture(scope="module")
def s1_upload(s1_tile, tmp_path_factory):
    """The 48 x 48 px window of the S1 scene that is ``s1_tile``, as its own GeoTIFF (tags kept)."""
    t, scene = s1_tile
    out = tmp_path_factory.mktemp("upload") / "S1A_window.tif"
    with rasterio.open(scene["files"]["*"]) as src:
        win = Window(t["col_off"], t["row_off"], t["width"], t["height"])
        profile = {k: v for k, v in src.profile.items() if k not in ("blockxsize", "blockysize", "tiled")}
        profile.update(width=t["width"], height=t["height"], transform=src.window_transform(win))
        with rasterio.open(out, "w", **profile) as dst:
            dst.write(src.read(window=win))
            dst.update_tags(**src.tags())
    return out.read_bytes()


def _query(c, tile_id=None, filters=None, upload=None, name="tile.tif"):
    data = {} if tile_id is None else {"tile_id": str(tile_id)}
    if filters is not None:
        data["filters"] = filters if isinstance(filters, str) else json.dumps(filters)
    files = None if upload is None else {"tile": (name, upload, "image/tiff")}
    return c.post("/query", data=data, files=files)


def test_health_reports_the_index_and_the_model(client, ws):
    r = client.get("/health")
    assert r.status_code == 200
    h = r.json()
    assert h["status"] == "ok" and h["model"] == "default"
    assert h["tiles_indexed"] == IndexStore.open(ws / "index").ntotal == 120
    assert h["model_checksum"] == model_checksum(ws / "checkpoints" / "default" / "model.pt")
    assert sorted(h["sensors"]) == ["enmap", "sentinel1", "sentinel2"]
    assert client.app.state.worker.warm_up_s >= 0  # the search kernels were ready before the first request


def test_head_health_answers_as_get_without_a_body(client):
    # monitors and load balancers probe with HEAD: it was a 405
    r, g = client.head("/health"), client.get("/health")
    assert r.status_code == g.status_code == 200 and r.content == b""
    assert r.headers["content-type"] == g.headers["content-type"] == "application/json"
    assert r.headers["content-length"] == g.headers["content-length"] == str(len(g.content))
    assert client.head("/health?ts=1").status_code == 200  # query parameters ignored, as by GET
    assert client.head("/query").status_code == 405  # HEAD on /health only


def test_an_upload_limit_under_one_byte_is_refused_not_a_limit_of_zero_bytes(small_workspace):
    # int(1e-7 * 1e6) was a limit of 0 bytes: every upload a 413
    for mb in (1e-7, 9.99e-7):
        with pytest.raises(ValueError, match=r"^max_upload_mb must be at least 1e-06 \(one byte\), got "):
            create_app(small_workspace, max_upload_mb=mb)


def test_query_by_tile_id_equals_brute_force_under_sensor_and_bbox_filters(client, ws, s1_tile):
    t, _ = s1_tile
    with Catalog(ws / "catalog.sqlite") as cat:
        rows = {r["tile_id"]: r for r in cat.tiles()}
    site = [r for r in rows.values() if abs(r["lon"] - t["lon"]) < 0.1 and r["sensor"] == "sentinel2"]
    w, e = min(r["lon"] for r in site) - 1e-6, float(np.median([r["lon"] for r in site]))
    s, n = t["lat"] - 1, t["lat"] + 1
    r = _query(client, t["tile_id"], {"target_sensors": ["sentinel2"], "bbox": [w, s, e, n], "k": 4})
    assert r.status_code == 200, r.text
    fc = r.json()
    assert fc["type"] == "FeatureCollection" and fc["query"]["tile_id"] == t["tile_id"]
    props = [f["properties"] for f in fc["features"] if f["properties"]["role"] == "hit"]
    assert len(props) == 4
    # then the query tile's own footprint, as the --geojson file has it: the catalog's footprint of its cell
    q = fc["features"][-1]
    assert len(fc["features"]) == 5 and q["properties"]["role"] == "query" and q["properties"]["tile_id"] == t["tile_id"]
    assert shape(q["geometry"]).equals(wkt.loads(t["footprint"]))
    assert all(p["sensor"] == "sentinel2" and w <= p["lon"] <= e and s <= p["lat"] <= n for p in props)
    scores = [p["score"] for p in props]
    assert scores == sorted(scores, reverse=True) and [p["rank"] for p in props] == [1, 2, 3, 4]
    # brute force: the query's indexed vector against every indexed S2 tile whose centroid is in the box
    ids, vecs = IndexStore.open(ws / "index").load_vectors()
    keep = np.array([rows[int(i)]["sensor"] == "sentinel2" and w <= rows[int(i)]["lon"] <= e
                     and s <= rows[int(i)]["lat"] <= n for i in ids])
    assert keep.sum() >= 4
    ref = vecs[keep] @ vecs[ids == t["tile_id"]][0]
    order = np.argsort(-ref, kind="stable")[:4]
    assert [p["tile_id"] for p in props] == ids[keep][order].tolist()
    assert scores == pytest.approx(ref[order].tolist(), abs=1e-5)
    assert fc["plan"]["mode"] == "exact" and fc["plan"]["candidates"] == int(keep.sum())


def test_within_geojson_object_filters_hits(client, s1_tile):
    t, _ = s1_tile
    lon, lat = t["lon"], t["lat"]
    poly = {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [[
        [lon - 0.002, lat - 0.002], [lon + 0.002, lat - 0.002], [lon + 0.002, lat + 0.002],
        [lon - 0.002, lat + 0.002], [lon - 0.002, lat - 0.002]]]}}
    r = _query(client, t["tile_id"], {"within": poly, "k": 10})
    assert r.status_code == 200, r.text
    cells = {f["properties"]["cell_id"] for f in r.json()["features"] if f["properties"]["role"] == "hit"}
    assert cells == {t["cell_id"]}  # 480 m cells: only the query's own cell has its centre within ~200 m


def test_query_by_uploaded_tile_finds_the_tile_it_was_cut_from(client, s1_tile, s1_upload, tmp_path, monkeypatch):
    import tempfile

    made = []

    class Recording(tempfile.TemporaryDirectory):
        def __init__(self, **kw):
            super().__init__(dir=tmp_path, **kw)
            made.append((Path(self.name), oct(Path(self.name).stat().st_mode & 0o777)))

    monkeypatch.setattr(tempfile, "TemporaryDirectory", Recording)
    t, scene = s1_tile
    r = _query(client, filters={"k": 3}, upload=s1_upload, name="../../etc/evil.tif")
    assert r.status_code == 200, r.text
    fc = r.json()
    top = fc["features"][0]["properties"]
    assert len(fc["features"]) == 4 and fc["query"]["sensor"] == "sentinel1"
    # the uploaded tile's footprint last (the whole file: the window of the cell it was cut from), named as the query
    q = fc["features"][-1]
    assert q["properties"]["role"] == "query" and q["properties"]["origin"] == fc["query"]["origin"]
    assert q["properties"]["origin"].startswith("uploaded tile")
    assert shape(q["geometry"]).symmetric_difference(wkt.loads(t["footprint"])).area < 1e-6 * shape(q["geometry"]).area
    assert top["tile_id"] == t["tile_id"] and top["score"] == pytest.approx(1.0, abs=1e-4)  # the same pixels
    assert fc["query"]["acquired"] == scene["acquired"]  # from the GeoTIFF's tags
    assert "rsretrieve-upload" not in r.text and str(tmp_path) not in r.text
    assert len(made) == 1 and made[0][1] == "0o700"  # a private folder ...
    assert not made[0][0].exists() and list(tmp_path.iterdir()) == []  # ... deleted after the query


def test_uploaded_tile_with_target_sensor_and_window(client, s1_upload):
    r = _query(client, filters={"k": 2, "target_sensors": ["enmap"], "window": [0, 0, 24, 24]}, upload=s1_upload)
    assert r.status_code == 200, r.text
    assert [(f["properties"]["role"], f["properties"]["sensor"]) for f in r.json()["features"]] == [
        ("hit", "enmap"), ("hit", "enmap"), ("query", "sentinel1")]


def _query_error(**kwargs) -> str:
    """What the query layer, and so the CLI (``rsretrieve query: error: ...``), says of these arguments."""
    with pytest.raises(QueryError) as e:
        run_query(None, tile="q.tif", **kwargs)  # refused before the engine or the file is used
    return str(e.value)


def _hits(r):
    assert r.status_code == 200, r.text
    return [(f["properties"]["tile_id"], f["properties"]["score"]) for f in r.json()["features"]
            if f["properties"]["role"] == "hit"]


def test_a_window_of_whole_numbers_written_as_floats_is_taken_as_the_cli_takes_it(client, s1_upload):
    # `rsretrieve query --window 0.0,0,24,24` is taken; the service refused [0.0, 0, 24, 24]
    want = _hits(_query(client, filters={"k": 3, "window": [0, 0, 24, 24]}, upload=s1_upload))
    assert len(want) == 3
    assert _hits(_query(client, filters={"k": 3, "window": [0.0, 0, 24.0, 24]}, upload=s1_upload)) == want
    # a fraction of a pixel: refused in the CLI's words
    r = _query(client, filters={"window": [0.5, 0, 24, 24]}, upload=s1_upload)
    assert r.status_code == 422 and r.json()["detail"] == _query_error(window=(0.5, 0, 24, 24))
    assert r.json()["detail"] == "window must be whole pixels (col, row, width, height), got (0.5, 0.0, 24.0, 24.0)"
    # not a number, or an integer of no float (was a 500: OverflowError)
    for window in ([0, 0, 24, "24"], [0, 0, 24, True], [int("9" * 400), 0, 24, 24]):
        r = _query(client, filters={"window": window}, upload=s1_upload)
        assert r.status_code == 422, r.text
        assert r.json()["detail"].startswith("filter 'window' must be [col, row, width, height] in whole pixels, got ")


@pytest.mark.parametrize("sensor", ["", " "])
def test_an_empty_sensor_filter_is_refused_in_the_cli_words(client, s1_upload, sensor):
    # it said "unknown sensor ''; known sensors: ..."
    r = _query(client, filters={"sensor": sensor}, upload=s1_upload)
    assert r.status_code == 422 and r.json()["detail"] == _query_error(sensor=sensor)
    assert r.json()["detail"] == f"sensor must not be empty, got {sensor!r}"


_L1C_WARNING = ("the index holds no sentinel2_l1c tiles: its model 'default' has no branch for it (add one with "
                "configs/add_sensor.yaml, then run `rsretrieve index`)")


def test_a_target_sensor_the_index_lacks_is_a_warning_in_the_response_as_the_cli_prints_it(client, ws, s1_tile,
                                                                                          s1_upload):
    # a 200 with no hit, the reason in the server's log only
    t, _ = s1_tile
    cli = run_cli("query", "--workspace", ws, "--tile-id", t["tile_id"], "--target-sensors", "sentinel2_l1c")
    assert cli.returncode == 0
    assert cli.stderr.strip().splitlines() == [f"WARNING rsretrieve.index.query: {_L1C_WARNING}"]
    for _ in range(2):  # every request is told (the engine, which lives on, logs it once)
        r = _query(client, t["tile_id"], {"target_sensors": ["sentinel2_l1c"]})
        assert r.status_code == 200 and _hits(r) == [] and r.json()["warnings"] == [_L1C_WARNING]
    r = _query(client, filters={"target_sensors": ["sentinel2_l1c", "landsat8", "sentinel2"], "k": 2},
               upload=s1_upload)
    assert len(_hits(r)) == 2 and r.json()["warnings"] == [
        "the index holds no landsat8 or sentinel2_l1c tiles: its model 'default' has no branch for them (add one "
        "with configs/add_sensor.yaml, then run `rsretrieve index`)"]
    # none: an empty list
    for r in (_query(client, t["tile_id"], {"target_sensors": ["sentinel2"], "k": 1}),
              _query(client, filters={"k": 1}, upload=s1_upload)):
        assert r.status_code == 200 and r.json()["warnings"] == []


def test_warnings_name_the_workspace_ws_not_the_servers_path(small_workspace, tmp_path):
    # the "index is behind the catalog" line carried the server's absolute workspace path to the client
    import shutil

    from fastapi.testclient import TestClient

    from rsretrieve.data.catalog import Catalog
    from rsretrieve.serve.app import create_app

    ws = tmp_path / "ws"
    shutil.copytree(small_workspace, ws)
    with TestClient(create_app(ws)) as c:
        with Catalog(ws / "catalog.sqlite") as cat:
            scene = cat.scenes()[-1]
            cat.remove_scene(scene["key"])
            tile_id = cat.tiles(columns=("tile_id",))[0]["tile_id"]
        r = _query(c, tile_id, {"k": 1})
        assert r.status_code == 200, r.text
        assert r.json()["warnings"] == [
            "the index is behind the catalog: 1 scene(s) removed or re-ingested and 0 not indexed yet since the last "
            "`rsretrieve index`; results come from the scenes indexed and still in the catalog (run `rsretrieve "
            "index --workspace WS` to update it)"]
        assert str(tmp_path) not in r.text


def test_logged_warnings_takes_the_warnings_of_its_own_thread_only():
    from rsretrieve.serve.app import logged_warnings

    lg, handlers = logging.getLogger("rsretrieve.index.query"), list(logging.getLogger("rsretrieve").handlers)
    with logged_warnings() as lines:
        lg.warning("mine %d", 1)
        other = threading.Thread(target=lg.warning, args=("another request's",))
        other.start()
        other.join()
        lg.info("not a warning")
        logging.getLogger("elsewhere").warning("not rsretrieve's")
        lg.error("mine too")
        lg.warning("mine %d", 1)
    assert lines == ["mine 1", "mine too"]
    assert logging.getLogger("rsretrieve").handlers == handlers  # taken off again


def _not_georeferenced(tmp_path):
    return write_tif(tmp_path / "plain.tif", np.zeros((2, 8, 8), "float32"), crs=None).read_bytes()


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
@pytest.mark.parametrize("make, message", [
    (lambda p, s1: b"just some text, not a raster\n", "is not a GeoTIFF (no TIFF / BigTIFF signature"),
    (lambda p, s1: b"", "uploaded tile is empty"),
    (lambda p, s1: s1[:len(s1) // 2], "uploaded tile is not a readable GeoTIFF: corrupt or truncated TIFF"),
    (lambda p, s1: s1[:8] + b"\0" * 64, "uploaded tile is not a readable GeoTIFF"),
    (lambda p, s1: _not_georeferenced(p), "uploaded tile is not georeferenced"),
], ids=["text", "empty", "truncated", "bad-header", "no-crs"])
def test_malformed_uploads_are_refused_with_a_message(client, s1_upload, tmp_path, make, message):
    r = _query(client, upload=make(tmp_path, s1_upload))
    assert r.status_code == 422 and message in r.json()["detail"], r.text


def test_tile_given_as_a_path_string_is_refused(client):
    r = client.post("/query", data={"tile": "/etc/passwd"})
    assert r.status_code == 422 and "must be an uploaded file" in r.json()["detail"]


def test_oversized_uploads_are_413(tiny_client, s1_tile, s1_upload):
    assert len(s1_upload) > 10_000
    r = _query(tiny_client, upload=s1_upload)  # within the body allowance, over the tile limit
    assert r.status_code == 413 and "exceeds the upload limit of 0.01 MB" in r.json()["detail"]
    r = _query(tiny_client, upload=b"II*\0" + bytes(3_000_000))  # refused on its Content-Length
    assert r.status_code == 413 and r.json()["detail"].startswith("request body of 3.")
    # no Content-Length (chunked): refused by the byte count of the stream (see test_uploads for the cut-off point)
    boundary = "rsretrieve-test-boundary"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="tile"; filename="t.tif"\r\n'
            "Content-Type: image/tiff\r\n\r\nII*\0").encode()

    def body():
        yield head
        for _ in range(100):  # 100 x 64 KiB = 6.5 MB
            yield bytes(64 << 10)
        yield f"\r\n--{boundary}--\r\n".encode()

    r = tiny_client.post("/query", content=body(),
                         headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 413 and r.json()["detail"].startswith("request body exceeds the upload limit")
    assert "content-length" not in r.request.headers
    # small requests still work on this service
    assert _query(tiny_client, s1_tile[0]["tile_id"], {"k": 1}).status_code == 200


@pytest.mark.parametrize("within", ["/etc/passwd", "region.geojson"])
def test_within_path_string_is_422_and_never_opened(client, s1_tile, tmp_path, within):
    # a region file that would be a valid filter if the service opened it
    region = tmp_path / "region.geojson"
    region.write_text(json.dumps({"type": "Polygon", "coordinates": [[[-180, -90], [180, -90], [180, 90],
                                                                      [-180, 90], [-180, -90]]]}))
    path = str(region) if within == "region.geojson" else within
    r = _query(client, s1_tile[0]["tile_id"], {"within": path})
    assert r.status_code == 422
    assert "must be a GeoJSON Polygon / MultiPolygon geometry, Feature or FeatureCollection object" in r.json()[
        "detail"] and "never opens files" in r.json()["detail"]


@pytest.mark.parametrize("filters, message", [
    ({"bbox": [0, 10, 1, 5]}, "bbox must be W,S,E,N with -180<=W,E<=180 and -90<=S<N<=90, got 0,10,1,5"),
    ({"bbox": [0, 1]}, "filter 'bbox' must be [W, S, E, N] in degrees"),
    ({"start": "2022-01-01", "end": "2021-06-30"}, "end (2021-06-30) is before start (2022-01-01)"),
    ({"start": "yesterday"},
     "start must be an ISO date (2021-06-30) or date-time (2021-06-30T10:00:00Z), got 'yesterday'"),
    ({"target_sensors": ["sentinel9"]}, "unknown sensor 'sentinel9'; known sensors:"),
    ({"k": 0}, "k must be a positive integer, got 0"),
    ({"k": "5"}, "filter 'k' must be a positive integer"),
    ({"colour": "red"}, "unknown filter 'colour'; known filters: bbox, within"),
    ("{not json", "filters must be a JSON object: Expecting property name"),
    ("[1, 2]", "filters must be a JSON object, got an array"),
    ("null", "filters must be a JSON object, got null"),
    ('"k"', "filters must be a JSON object, got a string"),
    ({"window": [0, 0, 8, 8]}, "filter 'window' applies to an uploaded tile, not to a tile_id"),
    ({"within": {"type": "Point", "coordinates": [0, 0]}}, "within must hold Polygon or MultiPolygon geometries"),
    ({"within": {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}},
     "within is not a valid polygon: Self-intersection"),
    ('{"k":' + "[" * 5000 + "]" * 5000 + "}", "filters must be a JSON object of reasonable size"),
    ('{"k":' + "9" * 5000 + "}", "filters must be a JSON object of reasonable size"),
    ({"bbox": [int("9" * 400), 0, 1, 1]}, "filter 'bbox' must be [W, S, E, N] in degrees"),
    ({"within": {"type": "Polygon", "coordinates": [[[int("9" * 400), 0], [1, 0], [1, 1], [0, 0]]]}},
     "within holds no readable GeoJSON geometry"),
    ({"within": {"type": "Polygon", "crs": {"type": "name", "properties": "x"},
                 "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}}, "within has CRS"),
    ({"within": {"type": "Foo", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}},
     "within holds no readable GeoJSON geometry"),
], ids=["bbox", "bbox-len", "time", "iso", "sensor", "k0", "kstr", "key", "json", "list", "null", "string", "window",
        "point", "bowtie", "deep", "long-int", "huge-bbox", "huge-coord", "crs-props", "geom-type"])
def test_bad_filters_are_422_with_the_reason(client, s1_tile, filters, message):
    r = _query(client, s1_tile[0]["tile_id"], filters)
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith(message) or message in r.json()["detail"], r.json()["detail"]


def test_unknown_or_missing_tile_ids(client, s1_upload):
    r = _query(client, 999_999)
    assert r.status_code == 404 and r.json()["detail"] == "no tile with id 999999 in the catalog"
    assert client.get("/tiles/999999/preview.png").status_code == 404
    r = _query(client, "abc")
    assert r.status_code == 422 and r.json()["detail"] == ("tile_id must be an integer written in ASCII digits 0-9 "
                                                           "only (no sign, spaces, underscores or decimal point), "
                                                           "got 'abc'")
    r = _query(client, filters={"k": 1})  # a form without either
    assert r.status_code == 422 and "exactly one of a tile" in r.json()["detail"]
    r = _query(client, 1, upload=s1_upload)
    assert r.status_code == 422 and "exactly one of a tile" in r.json()["detail"]


@pytest.mark.parametrize("sensor", ["sentinel1", "sentinel2", "enmap"])
def test_preview_png_is_the_quicklook_scaled_to_192_px(client, ws, sensor):
    with Catalog(ws / "catalog.sqlite") as cat:
        t = cat.tiles("t.sensor = ?", (sensor,))[0]
        _, arr = next(read_scene_tiles(cat.scene(t["scene_id"]), [t], cat.tile_m))
    r = client.get(f"/tiles/{t['tile_id']}/preview.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    img = np.asarray(Image.open(io.BytesIO(r.content)))
    assert img.shape == (192, 192, 4)  # 48 px x 4 (Sentinel-1/2), 16 px x 12 (EnMAP); RGBA, nodata transparent
    f = 192 // arr.shape[1]
    np.testing.assert_array_equal(img, np.repeat(np.repeat(quicklook(arr, sensor, alpha=True), f, 0), f, 1))


def test_a_running_service_follows_index_updates(tmp_path):
    """`rsretrieve index` publishes a new generation while the service runs: health and queries switch to it."""
    from rsretrieve.data.ingest import ingest
    from rsretrieve.data.synthetic import make_archive
    from rsretrieve.index.indexer import index_workspace
    from tests.conftest import make_workspace

    ws = make_workspace(tmp_path, scenes=2, size_m=1440)
    with TestClient(create_app(ws)) as c:
        before = c.get("/health").json()["tiles_indexed"]
        make_archive(tmp_path / "more", scenes=1, seed=21, size_m=1440)
        with Catalog(ws / "catalog.sqlite") as cat:
            ingest([tmp_path / "more"], cat)
            new = max(t["tile_id"] for t in cat.tiles())
            lon, lat = cat.tile(new)["lon"], cat.tile(new)["lat"]
        added = index_workspace(ws)["added"]
        assert added > 0
        assert c.get("/health").json()["tiles_indexed"] == before + added
        r = _query(c, tile_id=new, filters={"k": 5, "bbox": [lon - 0.02, lat - 0.02, lon + 0.02, lat + 0.02]})
        assert r.status_code == 200, r.text
        feats = r.json()["features"]
        assert feats and feats[0]["properties"]["tile_id"] == new  # found in the new generation


def test_an_uploaded_offset_product_is_read_as_the_cli_reads_it(client, ws, tmp_path):
    """A Sentinel-2 window uploaded as a product of processing baseline 05.09 (DN + 1000, named by the client as
    the product): the service reads the baseline from the client's name, as the CLI reads it from the file's
    folder, and finds the catalog tile it was cut from with the same score as the window without the offset."""
    with Catalog(ws / "catalog.sqlite") as cat:
        t = cat.tiles("t.sensor = 'sentinel2' AND t.coverage = 1.0")[0]
        scene = cat.scene(t["scene_id"])
    with rasterio.open(scene["files"]["*"]) as src:
        win = Window(t["col_off"], t["row_off"], t["width"], t["height"])
        dn = src.read(window=win)
        profile = {k: v for k, v in src.profile.items() if k not in ("blockxsize", "blockysize", "tiled")}
        profile.update(width=t["width"], height=t["height"], transform=src.window_transform(win))
        tags = src.tags()
    uploads = {}
    for name, data in (("plain.tif", dn), ("offset.tif", np.where(dn == 0, 0, dn + 1000).astype(dn.dtype))):
        with rasterio.open(tmp_path / name, "w", **profile) as dst:
            dst.write(data)
            dst.update_tags(**tags)
        uploads[name] = (tmp_path / name).read_bytes()
    product = "S2B_MSIL2A_20230705T101559_N0509_R065_T32UQD_20230705T133327"
    scores = {}
    for name, data, client_name in (("plain", uploads["plain.tif"], "window.tif"),
                                    ("offset", uploads["offset.tif"], f"{product}_window.tif")):
        r = _query(client, filters={"k": 1}, upload=data, name=client_name)
        assert r.status_code == 200, r.text
        top = r.json()["features"][0]["properties"]
        assert top["tile_id"] == t["tile_id"], name
        scores[name] = top["score"]
        assert product not in r.text.replace(f"{product}_window.tif", "")  # no server path with it
    assert scores["offset"] == pytest.approx(scores["plain"], abs=1e-5) and scores["plain"] > 0.999


def _untagged_copy(data: bytes, out: Path) -> bytes:
    """The GeoTIFF ``data`` written again without its tags (a window exported without its metadata)."""
    with rasterio.MemoryFile(data) as mem, mem.open() as src:
        with rasterio.open(out, "w", **src.profile) as dst:
            dst.write(src.read())
    return out.read_bytes()


def test_an_upload_is_read_with_its_name_as_the_cli_reads_the_file_of_that_name(client, ws, s1_tile, s1_upload,
                                                                                  tmp_path):
    """Where the tags do not say, the CLI dates a tile by its product name (``S1A_IW_GRDH_1SDV_<time>_...``, the
    file's or its folder's): saved as ``query.tif`` and nothing more, an upload of the same file was answered with
    ``acquired: null``. The client's name is read as the CLI reads the file's, through folders named after it."""
    from rsretrieve.workspace import Workspace

    t, scene = s1_tile
    stamp = scene["acquired"].replace("-", "").replace(":", "").rstrip("Z")  # 20210817T004835
    data = _untagged_copy(s1_upload, tmp_path / "plain.tif")
    for client_name, cli_path in ((f"S1A_IW_GRDH_1SDV_{stamp}_window.tif", f"S1A_IW_GRDH_1SDV_{stamp}_window.tif"),
                                  (f"S1A_IW_GRDH_1SDV_{stamp}/window.tif", f"S1A_IW_GRDH_1SDV_{stamp}/window.tif"),
                                  (f"C:\\exports\\S1A_IW_GRDH_1SDV_{stamp} (copy 2).tif", "other/plain.tif")):
        path = tmp_path / "cli" / cli_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        w = Workspace.open(ws)
        try:
            cli = w.query(tile=path, k=3)
        finally:
            w.close()
        r = _query(client, filters={"k": 3}, upload=data, name=client_name)
        assert r.status_code == 200, r.text
        fc = r.json()
        assert fc["query"]["acquired"] == scene["acquired"], client_name
        assert [(f["properties"]["tile_id"], f["properties"]["score"]) for f in fc["features"][:-1]] == [
            (h.tile_id, pytest.approx(h.score, abs=1e-6)) for h in cli.hits]
        if cli_path != "other/plain.tif":
            assert cli.query.describe()["acquired"] == scene["acquired"]
        assert "rsretrieve-upload" not in r.text and "query.tif" not in r.text
    r = _query(client, filters={"k": 3}, upload=data, name="window.tif")  # no date in the name: none, as in the CLI
    assert r.status_code == 200 and r.json()["query"]["acquired"] is None


def test_a_sensor_told_by_the_upload_name_is_read_and_the_flag_hint_names_the_filter(client, ws, tmp_path):
    """Landsat 7's 3-band 8-bit layout is taken only for a file named like Landsat 7: an upload so named was refused
    (its name was never read), and the refusal of another name sent the client to the CLI's ``--sensor landsat7``."""
    from rsretrieve.index.query import QueryError
    from rsretrieve.workspace import Workspace

    rgb = np.random.default_rng(0).integers(1, 255, (3, 64, 64), dtype=np.uint8)
    data = write_tif(tmp_path / "rgb.tif", rgb, crs="EPSG:32633").read_bytes()
    r = _query(client, upload=data, name="rgb.tif")
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert "--sensor" not in detail and detail.endswith(
        """taken only for a file named like landsat7 or with the filter {"sensor": "landsat7"})"""), detail
    name = "LE07_L2SP_044034_20210715_20210810_02_T1_rgb.tif"
    (tmp_path / name).write_bytes(data)
    w = Workspace.open(ws)
    try:
        with pytest.raises(QueryError) as cli:  # landsat7: the model has no branch for it
            w.query(tile=tmp_path / name, k=3)
    finally:
        w.close()
    assert "landsat7" in str(cli.value)
    r = _query(client, upload=data, name=name)
    assert r.status_code == 422 and r.json()["detail"] == str(cli.value).splitlines()[0], r.text
