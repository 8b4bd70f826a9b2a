"""Strict request parsing in the service: tile ids in plain ASCII digits only, no repeated form fields or query
parameters, every 4xx the same ``{"detail": "<one line>"}`` shape (FastAPI's validation errors included), and
uploads with no valid pixel refused."""

import json
from urllib.parse import quote

import numpy as np
import pytest
import rasterio
from fastapi.exceptions import RequestValidationError
from fastapi.testclient import TestClient
from pydantic import TypeAdapter, ValidationError
from rasterio.windows import Window

from rsretrieve.data.catalog import Catalog
from rsretrieve.serve import create_app
from rsretrieve.serve.app import _first_error_line, tile_id_value

LENIENT_IDS = ["1_0", " 7 ", "+7", "\t7\n", "\u0667", "7.0", "-1", "-0", "0x7", "1e1", ""]


@pytest.fixture(scope="module")
def tile_id(small_workspace):
    with Catalog(small_workspace / "catalog.sqlite") as cat:
        return cat.tiles("t.sensor = 'sentinel1' AND t.coverage = 1.0")[0]["tile_id"]


def _window_of(ws, sensor, tmp_path, name, fill=None, **profile_changes):
    """The pixels of a fully covered catalog tile of ``sensor`` as their own GeoTIFF (tags kept), optionally all
    ``fill``; returns the file's bytes."""
    with Catalog(ws / "catalog.sqlite") as cat:
        t = cat.tiles("t.sensor = ? AND t.coverage = 1.0", (sensor,))[0]
        scene = cat.scene(t["scene_id"])
    out = tmp_path / name
    with rasterio.open(scene["files"]["*"]) as src:
        win = Window(t["col_off"], t["row_off"], t["width"], t["height"])
        profile = {k: v for k, v in src.profile.items() if k not in ("blockxsize", "blockysize", "tiled")}
        profile.update(width=t["width"], height=t["height"], transform=src.window_transform(win), **profile_changes)
        data = src.read(window=win)
        if fill is not None:
            data = np.full_like(data, fill)
        with rasterio.open(out, "w", **profile) as dst:
            dst.write(data)
            dst.update_tags(**src.tags())
    return out.read_bytes(), data


def _post(c, data=None, upload=None, name="q.tif", **kw):
    files = None if upload is None else {"tile": (name, upload, "image/tiff")}
    return c.post("/query", data=data, files=files, **kw)


def _one_line_detail(r, status):
    assert r.status_code == status, (r.status_code, r.text)
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail and "\n" not in detail, r.text
    return detail


@pytest.mark.parametrize("text", LENIENT_IDS)
def test_a_form_tile_id_other_than_ascii_digits_is_422(client, text):
    detail = _one_line_detail(_post(client, {"tile_id": text, "filters": '{"k": 1}'}), 422)
    assert detail.startswith("tile_id must be an integer written in ASCII digits 0-9 only (no sign, spaces, "
                             "underscores or decimal point), got "), detail
    assert repr(text) in detail


@pytest.mark.parametrize("text", [t for t in LENIENT_IDS if t])
def test_a_path_tile_id_other_than_ascii_digits_is_422_in_the_same_words(client, text):
    detail = _one_line_detail(client.get(f"/tiles/{quote(text)}/preview.png"), 422)
    assert detail.startswith("tile_id must be an integer written in ASCII digits 0-9 only"), detail


def test_plain_tile_ids_still_work_and_huge_ones_are_named(client, tile_id):
    for text in (str(tile_id), f"00{tile_id}"):  # leading zeros write the same number
        r = _post(client, {"tile_id": text, "filters": '{"k": 1}'})
        assert r.status_code == 200 and r.json()["query"]["tile_id"] == tile_id, r.text
    assert client.get(f"/tiles/{tile_id}/preview.png").status_code == 200
    assert _one_line_detail(client.get("/tiles/999999/preview.png"), 404) == "no tile with id 999999 in the catalog"
    huge = "9" * 30
    for r in (_post(client, {"tile_id": huge}), client.get(f"/tiles/{huge}/preview.png")):
        assert _one_line_detail(r, 422) == f"tile_id must be below 2^63 (tile ids are 64-bit integers), got '{huge}'"
    assert "..." in _one_line_detail(_post(client, {"tile_id": "9" * 5000}), 422)  # 40 characters shown


def test_tile_id_value_on_its_own():
    assert tile_id_value("0") == 0 and tile_id_value("0042") == 42 and tile_id_value(2**62) == 2**62
    assert tile_id_value(str(2**63 - 1)) == 2**63 - 1
    for bad in ("1_0", "\u0667", "7\n", str(2**63), None, 1.0, True):
        with pytest.raises(ValueError, match="^must be "):
            tile_id_value(bad)


@pytest.mark.parametrize("body, field", [(b"tile_id=1&tile_id=2", "tile_id"),
                                         (b'tile_id=1&filters={"k":1}&filters={"k":3}', "filters")])
def test_a_form_field_given_twice_is_422(client, body, field):
    r = client.post("/query", content=body, headers={"content-type": "application/x-www-form-urlencoded"})
    assert _one_line_detail(r, 422) == f"form field {field!r} is given 2 times; give it once"
    files = [("tile_id", (None, "1")), ("tile_id", (None, "2"))]  # the same as multipart parts
    assert "is given 2 times" in _one_line_detail(client.post("/query", files=files), 422)


def test_a_tile_given_twice_or_a_file_under_another_name_is_422_naming_it(client, tile_id):
    """The form parser took one file: a second one was its 400 "Too many files. Maximum number of files is 1.",
    which named neither the field nor what the form expects."""
    tif = ("q.tif", b"II*\0" + bytes(64), "image/tiff")
    r = client.post("/query", files=[("tile", tif), ("tile", tif)])
    assert _one_line_detail(r, 422) == "form field 'tile' is given 2 times; give it once"
    r = client.post("/query", files=[("tile", tif), ("tiles", tif)])
    assert _one_line_detail(r, 422) == "unknown form field 'tiles'; expected tile, tile_id, filters"
    r = client.post("/query", files=[("tile", tif), ("filters", ("f.json", b'{"k": 1}', "application/json"))])
    assert _one_line_detail(r, 422) == "tile_id and filters must be form fields, not files"
    # past the parser's own limit on parts: still a 422 naming the fields expected, for files and fields alike
    for parts in ([("tile", tif)] * 7, [("tile_id", (None, str(tile_id)))] * 7):
        assert _one_line_detail(client.post("/query", files=parts), 422) == (
            "too many form parts (more than 6 files or fields); expected tile, tile_id, filters, each at most once")


@pytest.mark.parametrize("multipart", [True, False], ids=["multipart", "urlencoded"])
def test_a_form_field_over_1_mib_is_413_naming_the_fields(client, tile_id, multipart):
    """A detailed ``within`` polygon (an administrative boundary) is a filters field of over 1 MiB: the parser's 400
    "Part exceeded maximum size of 1024KB." (urlencoded: "Field ...") named neither the field nor the limit's
    status (413 too large, as for the tile)."""
    ring = [[10 + i * 1e-7, 50.0] for i in range(60_000)] + [[10.0, 50.1], [10.0, 50.0]]
    filters = json.dumps({"within": {"type": "Polygon", "coordinates": [ring]}})
    assert len(filters) > 1 << 20
    fields = {"tile_id": str(tile_id), "filters": filters}
    r = (client.post("/query", files={k: (None, v) for k, v in fields.items()}) if multipart
         else _post(client, fields))
    assert _one_line_detail(r, 413) == ("a form field exceeds 1 MiB, the limit of tile_id and filters (a 'within' "
                                        "polygon that large: simplify it)")
    fields["filters"] = json.dumps({"within": {"type": "Polygon", "coordinates": [ring[::60] + ring[-2:]]}})
    assert _post(client, fields).status_code == 200  # the same field under 1 MiB is read


@pytest.mark.parametrize("url", ["/query?tile_id=1", "/query?tile_id=1&tile_id=2"])
def test_query_parameters_of_post_query_are_refused_not_ignored(client, tile_id, url):
    detail = _one_line_detail(client.post(url, data={"tile_id": str(tile_id)}), 422)
    assert detail.startswith("/query takes no query parameters, got 'tile_id'; send tile_id and filters as form "
                             "fields"), detail


def test_get_endpoints_ignore_query_parameters(client, tile_id):
    """Caches and monitors add their own (``?ts=...``): the GET endpoints answer as without them."""
    assert client.get("/health?ts=1").status_code == 200
    r = client.get(f"/tiles/{tile_id}/preview.png?ts=1")
    assert r.status_code == 200 and r.content == client.get(f"/tiles/{tile_id}/preview.png").content


def test_a_body_that_is_not_a_form_is_415(client):
    detail = _one_line_detail(client.post("/query", json={"tile_id": 1}), 415)
    assert detail == ("POST /query takes a multipart/form-data body (a tile file or a tile_id, and filters), got "
                      "content type 'application/json'")
    # no body and no content type: it was 422, "give exactly one of a tile or a tile_id"
    assert _one_line_detail(client.post("/query"), 415) == (
        "POST /query takes a multipart/form-data body (a tile file or a tile_id, and filters), got no content type")


@pytest.mark.parametrize("cut", [b"", b"\r\n--B", b"\r\n--B-"], ids=["no-closing-boundary", "cut-in-it", "cut-late"])
def test_a_multipart_body_cut_short_is_400_not_a_missing_field(client, tile_id, cut):
    # the parser kept what came before the cut and dropped the rest: a complete tile_id part was answered with 422
    # "give exactly one of a tile (an uploaded GeoTIFF) or a tile_id"
    body = (f'--B\r\nContent-Disposition: form-data; name="tile_id"\r\n\r\n{tile_id}').encode() + cut
    r = client.post("/query", content=body, headers={"content-type": "multipart/form-data; boundary=B"})
    assert _one_line_detail(r, 400) == ("malformed multipart body: it does not end with its closing boundary '--B--' "
                                        "(cut short?)")
    whole = body.removesuffix(cut) + b"\r\n--B--\r\n"  # the same request whole is answered
    r = client.post("/query", content=whole, headers={"content-type": "multipart/form-data; boundary=B"})
    assert r.status_code == 200, r.text
    # however the boundary parameter is written, and whatever epilogue follows the closing boundary (RFC 2046)
    for ctype in ('multipart/form-data; BOUNDARY=B', 'multipart/form-data; boundary="B"'):
        assert client.post("/query", content=body, headers={"content-type": ctype}).status_code == 400, ctype
        assert client.post("/query", content=whole, headers={"content-type": ctype}).status_code == 200, ctype
    r = client.post("/query", content=whole + b"epilogue " * 500,
                    headers={"content-type": "multipart/form-data; boundary=B"})
    assert r.status_code == 200, r.text


def test_the_closing_boundary_inside_a_value_does_not_hide_a_body_cut_short(client, tile_id):
    # '--B--' in the filters' text counted as the closing boundary: the cut tile_id part was dropped and the request
    # answered 422 "give exactly one of a tile or a tile_id"
    body = ('--B\r\nContent-Disposition: form-data; name="filters"\r\n\r\n{"start": "a--B--b"}\r\n'
            f'--B\r\nContent-Disposition: form-data; name="tile_id"\r\n\r\n{tile_id}').encode()
    r = client.post("/query", content=body, headers={"content-type": "multipart/form-data; boundary=B"})
    assert _one_line_detail(r, 400) == ("malformed multipart body: it does not end with its closing boundary '--B--' "
                                        "(cut short?)")


def test_the_closing_boundary_is_found_across_the_chunks_of_a_streamed_body(client, tile_id):
    def chunks():  # the closing boundary split between two chunks, a long epilogue after it
        yield f'--B\r\nContent-Disposition: form-data; name="tile_id"\r\n\r\n{tile_id}\r\n--'.encode()
        yield b"B-"
        yield b"-\r\n" + b"x" * 5000

    r = client.post("/query", content=chunks(), headers={"content-type": "multipart/form-data; boundary=B"})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("filters, message", [
    ('{"k": 1, "k": 5}', "filters must be standard JSON: key 'k' is given twice in one object"),
    ('{"bbox": [NaN, 0, 1, 1]}', "filters must be standard JSON: NaN is not a JSON number"),
    ('{"within": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]], '
     '"coordinates": [[[5, 5], [6, 5], [6, 6], [5, 5]]]}}', "key 'coordinates' is given twice"),
], ids=["dup-k", "nan", "dup-in-within"])
def test_json_the_parser_would_read_silently_is_422(client, tile_id, filters, message):
    assert message in _one_line_detail(_post(client, {"tile_id": str(tile_id), "filters": filters}), 422)


def test_every_4xx_is_one_detail_line(client, tile_id):
    """Each kind of refusal, from the app, from Starlette (routing, multipart) and from FastAPI's validation."""
    t = tile_id
    cases = [
        (client.post("/query", content=b"x", headers={"content-type": "multipart/form-data"}), 400),
        (_post(client, {"tile_id": "1", "filters": "{}", "a": "1", "b": "2"}), 422),  # unknown form field 'a'
        (client.post("/query", files=[("tile_id", (None, "1"))] * 7), 422),  # past the parser's limit on parts
        (_post(client, {"tile_id": "1", "filters": " " * (1 << 20) + "{}"}), 413),  # past its limit on a field
        (client.post("/query", content=b"x", headers={"content-length": "nope",
                                                       "content-type": "multipart/form-data; boundary=b"}), 400),
        (client.get("/nowhere"), 404),
        (client.get("/tiles/999999/preview.png"), 404),
        (_post(client, {"tile_id": "999999"}), 404),
        (client.get("/query"), 405),
        (client.post(f"/tiles/{t}/preview.png"), 405),
        (client.post("/query", content=b"{}", headers={"content-type": "application/json"}), 415),
        (client.get("/tiles/abc/preview.png"), 422),
        (client.post("/query?x=1", data={"tile_id": str(t)}), 422),
        (_post(client, {"tile_id": "1_0"}), 422),
        (_post(client, {"tile_id": str(t), "filters": '{"k": 0}'}), 422),
        (_post(client, upload=b"not a tiff"), 422),
        (_post(client, {"filters": "{}"}), 422),
        (client.post("/query"), 415),
    ]
    for r, status in cases:
        _one_line_detail(r, status)


def _validation_error(annotation, value, loc_prefix):
    try:
        TypeAdapter(annotation).validate_python(value)
    except ValidationError as e:
        errors = [{**err, "loc": (*loc_prefix, *err["loc"])} for err in e.errors()]
        return RequestValidationError(errors)
    raise AssertionError("no error")


def test_fastapi_validation_errors_become_one_line_naming_the_parameter():
    from typing import Annotated

    from pydantic import BeforeValidator

    assert _first_error_line(_validation_error(int, "abc", ("path", "tile_id"))) == (
        "path parameter 'tile_id': input should be a valid integer, unable to parse string as an integer, got 'abc'")
    assert _first_error_line(_validation_error(Annotated[int, BeforeValidator(tile_id_value)], "1_0",
                                               ("path", "tile_id"))).startswith(
        "tile_id must be an integer written in ASCII digits 0-9 only")
    two = _validation_error(tuple[int, int], ("a", "b"), ("query", "pair"))
    assert _first_error_line(two) == ("query parameter 'pair.0': input should be a valid integer, unable to parse "
                                      "string as an integer, got 'a' (and 1 more)")
    missing = RequestValidationError([{"type": "missing", "loc": ("header", "x-key"), "msg": "Field required",
                                       "input": None}])
    assert _first_error_line(missing) == "header 'x-key': field required"
    assert _first_error_line(RequestValidationError([])) == "invalid request"


def test_a_typed_route_added_to_the_app_answers_validation_errors_in_one_line(small_workspace):
    """Any route with a typed parameter gets the app's handler (a route added here: the app's own take ids)."""
    app = create_app(small_workspace)

    @app.get("/test-only/{size}")
    async def sized(size: float) -> dict:
        return {"size": size}

    with TestClient(app) as c:
        assert c.get("/test-only/2.5").json() == {"size": 2.5}
        detail = _one_line_detail(c.get("/test-only/big"), 422)
        assert detail == "path parameter 'size': input should be a valid number, unable to parse string as a " \
                         "number, got 'big'"


@pytest.mark.parametrize("sensor, fill, changes, shown", [
    ("sentinel1", np.nan, {}, "NaN"),
    ("sentinel1", -9999.0, {"nodata": -9999.0}, "NaN or the nodata value -9999"),
    ("sentinel2", 0, {}, "NaN or the nodata value 0"),  # the file's nodata tag
    ("sentinel2", 0, {"nodata": None}, "NaN or the nodata value 0"),  # no tag: the sensor layout's nodata
    ("enmap", -32768, {}, "NaN or the nodata value -32768"),
], ids=["s1-nan", "s1-tagged", "s2-zero", "s2-untagged", "enmap"])
def test_an_upload_with_no_valid_pixel_is_422_naming_it(client, small_workspace, tmp_path, sensor, fill, changes,
                                                         shown):
    upload, _ = _window_of(small_workspace, sensor, tmp_path, "empty.tif", fill=fill, **changes)
    detail = _one_line_detail(_post(client, {"filters": '{"k": 3}'}, upload=upload, name="my scene.tif"), 422)
    assert detail == (f"uploaded tile 'my scene.tif' holds no valid pixels: every pixel of its {sensor} bands is "
                      f"{shown}; nothing to search with")


def test_an_all_nodata_window_of_an_upload_is_422_and_a_valid_window_is_searched(client, small_workspace, tmp_path):
    _, data = _window_of(small_workspace, "sentinel1", tmp_path, "full.tif")
    half = data.copy()
    half[:, :, :24] = np.nan  # the left half is NaN
    upload, _ = _window_of(small_workspace, "sentinel1", tmp_path, "half.tif")
    with rasterio.open(tmp_path / "half.tif", "r+") as ds:
        ds.write(half)
    upload = (tmp_path / "half.tif").read_bytes()
    r = _post(client, {"filters": json.dumps({"window": [0, 0, 24, 48], "k": 2})}, upload=upload, name="half.tif")
    assert _one_line_detail(r, 422).startswith("uploaded tile 'half.tif' holds no valid pixels in window 0,0,24,48:")
    r = _post(client, {"filters": json.dumps({"window": [24, 0, 24, 48], "k": 2})}, upload=upload)
    assert r.status_code == 200 and [f["properties"]["role"] for f in r.json()["features"]] == ["hit", "hit", "query"], \
        r.text
    r = _post(client, {"filters": '{"k": 2}'}, upload=upload)  # the whole file has valid pixels
    assert r.status_code == 200, r.text
    # a window off the file is left to the query's own message
    r = _post(client, {"filters": json.dumps({"window": [500, 500, 8, 8]})}, upload=upload)
    assert "does not overlap" in _one_line_detail(r, 422)
