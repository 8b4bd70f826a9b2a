"""One GeoJSON region parser for `query --within FILE` (load_region) and the service's `within` filter: the same
refusals in the same words (only the name in front differs), none of them a traceback."""

from __future__ import annotations

import json
import os

import pytest
from shapely.geometry import box, mapping

from rsretrieve.index.filters import load_region, region_from_geojson
from rsretrieve.serve.filters import FilterError, parse_filters

RING = [[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]
POLY = {"type": "Polygon", "coordinates": [RING]}
BOWTIE = {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}


def _feature(geom, **extra):
    return {"type": "Feature", "properties": {}, "geometry": geom, **extra}


def _named(name):
    return {**POLY, "crs": {"type": "name", "properties": {"name": name}}}


# (JSON text, the message after the name; "{}" marks where the name goes when not at the start)
BAD = {
    "not-object": ("[1, 2]", " is not GeoJSON: a JSON object with a 'type' is expected, got list"),
    "no-type": (json.dumps({"coordinates": [RING]}),
                " is not GeoJSON: a JSON object with a 'type' is expected, got an object without one"),
    "crs-props-not-object": (json.dumps({**POLY, "crs": {"type": "name", "properties": "x"}}),
                             " has CRS {'type': 'name', 'properties': 'x'}; only EPSG:4326 / CRS84 lon/lat is "
                             "accepted"),
    "crs-name-number": (json.dumps(_named(4326)), " has CRS {'type': 'name', 'properties': {'name': 4326}}; only"),
    "crs-list": (json.dumps({**POLY, "crs": []}), " has CRS []; only EPSG:4326 / CRS84 lon/lat is accepted"),
    "crs-link": (json.dumps({**POLY, "crs": {"type": "link", "properties": {"href": "http://x/crs"}}}),
                 " has CRS {'type': 'link', 'properties': {'href': 'http://x/crs'}}; only"),
    "crs-3857": (json.dumps(_named("EPSG:3857")), " has CRS 'EPSG:3857'; only EPSG:4326 / CRS84 lon/lat is accepted"),
    "crs-14326": (json.dumps(_named("EPSG:14326")), " has CRS 'EPSG:14326'; only"),
    "crs-string": (json.dumps({**POLY, "crs": "EPSG:3857"}), " has CRS 'EPSG:3857'; only"),
    "crs-string-4326": (json.dumps({**POLY, "crs": "EPSG:4326"}),
                        " has a crs member that is a string ('EPSG:4326'), not a named CRS object"),
    "fc-no-features": (json.dumps({"type": "FeatureCollection"}),
                       " is not GeoJSON: 'features' must be a list of Feature objects"),
    "fc-features-object": (json.dumps({"type": "FeatureCollection", "features": {"a": 1}}),
                           " is not GeoJSON: 'features' must be a list of Feature objects"),
    "fc-bare-geometry": (json.dumps({"type": "FeatureCollection", "features": [_feature(POLY), POLY]}),
                         " is not GeoJSON: feature 1 is not a Feature object (its type is 'Polygon')"),
    "feature-no-geometry": (json.dumps({"type": "Feature", "properties": {}, "geom": POLY}),
                            " is not GeoJSON: the Feature has no 'geometry' member"),
    "fc-misspelt-geometry": (json.dumps({"type": "FeatureCollection", "features": [
        _feature(POLY), {"type": "Feature", "properties": {}, "geometrie": POLY}]}),
        " is not GeoJSON: feature 1 has no 'geometry' member"),
    "geometry-empty-object": (json.dumps(_feature({})),
                              " holds no readable GeoJSON geometry: a geometry is an object with a 'type', got {}"),
    "geometry-type-unknown": (json.dumps({"type": "Foo", "coordinates": [RING]}),
                              " holds no readable GeoJSON geometry: Unknown geometry type"),
    "coords-string": (json.dumps({"type": "Polygon", "coordinates": "abc"}), " holds no readable GeoJSON geometry: "),
    "huge-int": ('{"type": "Polygon", "coordinates": [[[%s, 0], [1, 0], [1, 1], [0, 0]]]}' % ("9" * 400),
                 " holds no readable GeoJSON geometry: int too large to convert to float"),
    "point": (json.dumps({"type": "Point", "coordinates": [0, 0]}),
              " must hold Polygon or MultiPolygon geometries only, got ['Point']"),
    "only-null-geometries": (json.dumps({"type": "FeatureCollection", "features": [_feature(None)]}),
                             " must hold Polygon or MultiPolygon geometries only, got none"),
    "bowtie": (json.dumps(BOWTIE), " is not a valid polygon: Self-intersection"),
    "bowtie-among-parts": (json.dumps({"type": "FeatureCollection", "features": [_feature(BOWTIE), _feature(POLY)]}),
                           " is not a valid polygon: Self-intersection"),
    "empty": (json.dumps({"type": "MultiPolygon", "coordinates": []}), " is empty"),
    "over-180": (json.dumps(mapping(box(170, 0, 190, 10))), " must be in lon/lat degrees"),
    "antimeridian-long-way": (json.dumps({"type": "Polygon", "coordinates": [[[170, 0], [-170, 0], [-170, 10],
                                                                              [170, 10], [170, 0]]]}),
                              " has an edge from lon 170 to -170, more than 180 degrees: read as the long way round; "
                              "split a shape crossing the antimeridian"),
}


@pytest.mark.parametrize("name", BAD)
def test_the_file_and_the_service_refuse_alike(tmp_path, name):
    text, rest = BAD[name]
    path = tmp_path / "region.geojson"
    path.write_text(text)
    with pytest.raises(ValueError) as file_exc:
        load_region(path)
    with pytest.raises(FilterError) as serve_exc:
        parse_filters('{"within": %s}' % text)
    file_msg, serve_msg = str(file_exc.value), str(serve_exc.value)
    assert "\n" not in file_msg and "\n" not in serve_msg
    assert file_msg.startswith(f"region file {path}{rest}"), file_msg
    assert serve_msg.startswith(f"within{rest}"), serve_msg
    assert file_msg.removeprefix(f"region file {path}") == serve_msg.removeprefix("within")


@pytest.mark.parametrize("text, file_rest, serve_message", [
    ('{"type": "Polygon", "coordinates": [[[0, 0], [1, 0]]], "coordinates": [[[5, 5], [6, 5], [6, 6], [5, 5]]]}',
     " is not GeoJSON: key 'coordinates' is given twice in one object",
     "filters must be standard JSON: key 'coordinates' is given twice in one object"),
    ('{"type": "Polygon", "coordinates": [[[NaN, 0], [1, 0], [1, 1], [0, 0]]]}',
     " holds no readable GeoJSON geometry: ", "filters must be standard JSON: NaN is not a JSON number"),
    ('{"type": "Polygon", "coordinates": ' + "[" * 5000 + "]" * 5000 + "}", " is not GeoJSON: nested too deep",
     "filters must be a JSON object of reasonable size: nested too deep"),
], ids=["duplicate-key", "nan", "deep"])
def test_json_read_silently_before_is_refused_by_both(tmp_path, text, file_rest, serve_message):
    """The file is JSON text of its own (NaN, as Python's json.dump writes it, is read, and a NaN coordinate refused
    by the geometry checks); the service's `within` is part of the `filters` text, parsed once, strictly."""
    path = tmp_path / "region.geojson"
    path.write_text(text)
    with pytest.raises(ValueError) as exc:
        load_region(path)
    assert str(exc.value).startswith(f"region file {path}{file_rest}") and "\n" not in str(exc.value)
    with pytest.raises(FilterError) as exc:
        parse_filters('{"within": %s}' % text)
    assert str(exc.value) == serve_message


@pytest.mark.parametrize("name", ["EPSG:4326", "urn:ogc:def:crs:OGC:1.3:CRS84", "urn:ogc:def:crs:EPSG::4326",
                                  "http://www.opengis.net/def/crs/EPSG/0/4326", "CRS84", "epsg:4326"])
def test_lon_lat_crs_names_are_accepted(name):
    assert region_from_geojson(_named(name), "r").equals(box(0, 0, 1, 1))
    assert region_from_geojson({**POLY, "crs": None}, "r").equals(box(0, 0, 1, 1))


def test_shapes_that_are_accepted(tmp_path):
    world = mapping(box(-180, -90, 180, 90))  # edges from -180 to 180: as wide as the world, not ambiguous
    assert region_from_geojson(world, "r").area == pytest.approx(360 * 180)
    wide = {"type": "Polygon", "coordinates": [[[-170, 0], [0, 0], [170, 0], [170, 10], [0, 10], [-170, 10],
                                                [-170, 0]]]}  # wide, with vertices every 170 degrees
    assert region_from_geojson(wide, "r").bounds == (-170, 0, 170, 10)
    split = {"type": "MultiPolygon", "coordinates": [mapping(box(170, 0, 180, 10))["coordinates"],
                                                     mapping(box(-180, 0, -170, 10))["coordinates"]]}
    assert region_from_geojson(split, "r").area == pytest.approx(200)  # crossing the antimeridian, split
    fc = {"type": "FeatureCollection", "features": [_feature(None), _feature(POLY)]}  # null geometry: no place
    assert region_from_geojson(fc, "r").equals(box(0, 0, 1, 1))
    path = tmp_path / "f.geojson"
    path.write_text(json.dumps(_feature(POLY)))
    assert load_region(path).equals(region_from_geojson(_feature(POLY), "r"))


def test_files_that_cannot_be_read(tmp_path):
    with pytest.raises(ValueError, match=r"^region file .* cannot be read: Is a directory$"):
        load_region(tmp_path)
    (tmp_path / "bin.geojson").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match=r"^region file .* is not GeoJSON: not UTF-8 text \("):
        load_region(tmp_path / "bin.geojson")


def test_the_service_refuses_a_string_within_before_parsing(tmp_path):
    with pytest.raises(FilterError, match="never opens files named in a request"):
        parse_filters(json.dumps({"within": str(tmp_path / "r.geojson")}))


def test_query_within_takes_any_path_like(small_workspace, tmp_path):
    from rsretrieve.workspace import Workspace

    class Where(os.PathLike):
        def __init__(self, p):
            self.p = p

        def __fspath__(self):
            return str(self.p)

    path = tmp_path / "r.geojson"
    path.write_text(json.dumps(mapping(box(-180, -90, 180, 90))))
    ws = Workspace.open(small_workspace)
    try:
        by_path = ws.query(tile_id=1, within=path, k=3)
        by_pathlike = ws.query(tile_id=1, within=Where(path), k=3)
        assert [h.tile_id for h in by_pathlike.hits] == [h.tile_id for h in by_path.hits] and by_path.hits
    finally:
        ws.close()


def test_a_query_file_with_no_valid_pixel_is_refused(small_workspace, tmp_path, capsys):
    """An all-NaN query tile is refused (API: QueryError; CLI: one line, exit 2), not embedded as zeros."""
    import numpy as np

    from rsretrieve.index.query import QueryError
    from rsretrieve.workspace import Workspace
    from tests.conftest import s1_scene, write_tif

    ref = s1_scene(tmp_path / "ref" / "S1A_IW_GRDH_1SDV_20210817T004835_RSR000.tif", size=48)
    import rasterio

    with rasterio.open(ref) as src:
        tags, crs, t = src.tags(), src.crs, src.transform
    path = write_tif(tmp_path / "S1A_IW_GRDH_1SDV_20210817T004835_RSR009.tif",
                     np.full((2, 48, 48), np.nan, "float32"), crs=crs.to_string(), origin=(t.c, t.f), res=t.a,
                     nodata=float("nan"), tags=tags)
    ws = Workspace.open(small_workspace)
    try:
        with pytest.raises(QueryError, match="no valid pixels"):
            ws.query(tile=path, k=3)
        msg = f"{path} holds no valid pixels: every pixel of its sentinel1 bands is NaN or nodata; nothing to search with"
        with pytest.raises(QueryError) as e:
            ws.query(tile=path, k=3)
        assert str(e.value) == msg
        with pytest.raises(QueryError, match=r"^window 0,0,10,10 of .* holds no valid pixels"):
            ws.query(tile=path, window=(0, 0, 10, 10), k=3)
        assert ws.query(tile=ref, k=3).hits  # a valid file of the same grid still answers
    finally:
        ws.close()
    # the CLI: one line, exit 2
    from rsretrieve.cli import main

    capsys.readouterr()
    assert main(["query", "--workspace", str(small_workspace), "--tile", str(path), "-k", "3"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == f"rsretrieve query: error: {msg}\n"


def test_a_query_tile_of_the_wrong_data_type_is_refused(small_workspace, tmp_path):
    """A Sentinel-2 query tile holding float32 reflectance (0..1) is refused as ingest refuses it, not read as DN
    (10,000 times too dark) and searched."""
    import numpy as np

    from rsretrieve.index.query import QueryError
    from rsretrieve.workspace import Workspace
    from tests.conftest import write_tif

    refl = np.random.default_rng(0).uniform(0.02, 0.4, (12, 48, 48)).astype("float32")
    path = write_tif(tmp_path / "S2A_MSIL2A_20210817T101031_N0301_R022_T33UUP_20210817T121212.tif", refl)
    ws = Workspace.open(small_workspace)
    try:
        with pytest.raises(QueryError) as e:
            ws.query(tile=path, k=3)
        assert str(e.value).startswith(f"{path}: float32 pixels, but sentinel2 files hold uint16 DN "
                                       "(reflectance = DN * 0.0001)"), str(e.value)
        dn = write_tif(tmp_path / "dn" / path.name, np.round(refl / 1e-4).astype("uint16"))
        assert len(ws.query(tile=dn, k=3).hits) == 3  # the same tile as uint16 DN is searched
    finally:
        ws.close()



def test_a_query_tile_in_linear_sigma0_is_refused_as_by_ingest(small_workspace, tmp_path):
    """A Sentinel-1 query tile in linear power (float32, like dB) is refused by the rule ingest applies."""
    import numpy as np

    from rsretrieve.index.query import QueryError
    from rsretrieve.workspace import Workspace
    from tests.conftest import write_tif

    db = np.random.default_rng(0).uniform(-25, -5, (2, 48, 48)).astype("float32")
    name = "S1A_IW_GRDH_1SDV_20210817T004835_20210817T004900_039263_04A2A5_0001.tif"
    lin = write_tif(tmp_path / "lin" / name, (10 ** (db / 10)).astype("float32"))
    ws = Workspace.open(small_workspace)
    try:
        with pytest.raises(QueryError) as e:
            ws.query(tile=lin, k=3)
        assert str(e.value).startswith(f"{lin}: band VV holds linear sigma0, not dB (100% of its pixels lie in 0..1")
        assert len(ws.query(tile=write_tif(tmp_path / "db" / name, db), k=3).hits) == 3
    finally:
        ws.close()



def test_a_region_file_s_properties_may_hold_nan_and_repeated_keys(tmp_path):
    """Nothing reads a region file's properties: NaN (Python's json.dump writes it) or a key given twice there do
    not refuse the region; a geometry member given twice still does."""
    path = tmp_path / "r.geojson"
    path.write_text('{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"area": NaN, '
                    '"name": "a", "name": "b"}, "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], '
                    '[1, 1], [0, 1], [0, 0]]]}}]}')
    assert load_region(path).equals(box(0, 0, 1, 1))
    path.write_text('{"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [[[0, 0], '
                    '[1, 0], [1, 1], [0, 0]]]}, "geometry": null}')
    with pytest.raises(ValueError, match="key 'geometry' is given twice in one object"):
        load_region(path)
