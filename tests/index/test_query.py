"""`rsretrieve query` and Workspace.query on a real (small) workspace: filters, outputs, bad inputs."""

import json
from pathlib import Path

import numpy as np
import pytest
from shapely import wkt
from shapely.geometry import Polygon, shape

from rsretrieve.data.catalog import Catalog
from rsretrieve.index.query import QueryError
from rsretrieve.index.store import IndexStore
from rsretrieve.workspace import Workspace
from tests.conftest import make_workspace, run_cli, s2_file, save_untrained_model


def _brute_force(ws, query_vec, k, keep):
    """Exact top-k by inner product over the indexed tiles that ``keep(tile_row)`` accepts."""
    ids, vecs = IndexStore.open(ws / "index").load_vectors()
    with Catalog(ws / "catalog.sqlite") as cat:
        rows = {t["tile_id"]: t for t in cat.tiles()}
    mask = np.array([keep(rows[int(i)]) for i in ids])
    scores = vecs[mask] @ query_vec
    order = np.argsort(-scores, kind="stable")[:k]
    return ids[mask][order].tolist(), scores[order]


def test_filtered_query_equals_brute_force(small_workspace):
    ws = Workspace.open(small_workspace)
    with ws.catalog() as cat:
        t0 = cat.tile(3)
        lons = [t["lon"] for t in cat.tiles()]
    w, e = min(lons) - 1, max(lons) + 1
    res = ws.query(tile_id=3, target_sensors=["sentinel2", "enmap"], bbox=(w, -90, e, 90), k=7,
                   start="2000-01-01", end="2100-01-01")
    qv = ws.engine().embed(res.query)
    want, wscores = _brute_force(small_workspace, qv, 7, lambda t: t["sensor"] in ("sentinel2", "enmap"))
    assert [h.tile_id for h in res.hits] == want
    assert [h.score for h in res.hits] == pytest.approx(wscores.tolist(), abs=1e-5)
    assert res.plan["mode"] == "exact" and res.query.sensor == t0["sensor"]
    ws.close()


def test_time_filter_and_one_per_cell(small_workspace):
    ws = Workspace.open(small_workspace)
    with ws.catalog() as cat:
        s2 = [s for s in cat.scenes() if s["sensor"] == "sentinel2"][0]
    day = s2["acquired"][:10]
    res = ws.query(tile_id=1, start=day, end=day, k=50)
    assert res.hits and all(h.acquired[:10] == day for h in res.hits)
    res = ws.query(tile_id=1, k=30, one_per_cell=True)
    cells = [h.cell_id for h in res.hits]
    assert len(cells) == 30 == len(set(cells))
    res = ws.query(tile_id=1, k=5, exclude_own_cell=True, exclude_own_scene=True)
    assert all(h.cell_id != res.query.cell_id and h.scene_id != res.query.scene_id for h in res.hits)
    ws.close()


def test_query_by_file_point_finds_its_own_tile_first(small_workspace, tmp_path):
    with Catalog(small_workspace / "catalog.sqlite") as cat:
        t = [t for t in cat.tiles("t.sensor = 'sentinel1' AND t.coverage = 1.0")][0]
        scene = cat.scene(t["scene_id"])
    r = run_cli("query", "--workspace", small_workspace, "--tile", scene["files"]["*"], "--point",
                f"{t['lon']},{t['lat']}", "-k", "3", "--json", "--geojson", tmp_path / "r.geojson", "--png",
                tmp_path / "r.png")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    top = out["hits"][0]
    assert out["query"]["cell_id"] == t["cell_id"] == top["cell_id"] and top["tile_id"] == t["tile_id"]
    assert top["score"] == pytest.approx(1.0, abs=1e-4)  # the same pixels as the indexed tile
    gj = json.loads((tmp_path / "r.geojson").read_text())
    assert gj["type"] == "FeatureCollection" and len(gj["features"]) == 4
    assert [f["properties"]["role"] for f in gj["features"]] == ["hit", "hit", "hit", "query"]
    assert shape(gj["features"][0]["geometry"]).contains(shape({"type": "Point", "coordinates": [t["lon"], t["lat"]]}))
    # the query's own footprint, last: its cell's, as the catalog has it (the same ground as the top hit)
    assert gj["features"][-1]["properties"]["cell_id"] == t["cell_id"]
    assert shape(gj["features"][-1]["geometry"]).equals(wkt.loads(t["footprint"]))
    assert out["query"]["footprint"] == t["footprint"]
    # the same query in both outputs: --json had no scene_id, which the GeoJSON's query feature had
    assert out["query"]["scene_id"] == t["scene_id"] == gj["features"][-1]["properties"]["scene_id"]
    assert {k: v for k, v in out["query"].items() if k != "footprint"} == gj["query"] == {
        k: v for k, v in gj["features"][-1]["properties"].items() if k != "role"}
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _bowtie(path):
    path.write_text(json.dumps({"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}))
    return path


@pytest.mark.parametrize(("args", "message"), [
    (["--tile-id", "1", "--bbox", "10,50,11"], "bbox must be W,S,E,N"),
    (["--tile-id", "1", "--bbox", "10,50,11,40"], "bbox must be W,S,E,N"),
    (["--tile-id", "1", "--within", "BOWTIE"], "is not a valid polygon: Self-intersection"),
    (["--tile-id", "1", "--start", "2021-02-01", "--end", "2021-01-01"], "is before start"),
    (["--tile-id", "1", "--target-sensors", "sentinel9"], "unknown sensor 'sentinel9'"),
    (["--tile-id", "1", "-k", "0"], "k must be a positive integer, got 0"),
    (["--tile-id", "1", "-k", "1_0"], "k must be a positive integer, got '1_0'"),  # read as 10
    (["--tile-id", "99999"], "no tile with id 99999"),
    (["--tile-id", "1_0"], "a tile id is a non-negative integer in digits 0-9, got '1_0'"),
    (["--tile-id", "+1"], "a tile id is a non-negative integer in digits 0-9, got '+1'"),
    (["--tile", "MISSING"], "no such file or directory"),
    (["--tile", "TEXT"], "not a raster file GDAL can read"),
    (["--tile", "S1FILE", "--point", "0,0"], "is outside"),
    (["--tile", "S1FILE", "--sensor", "foo"], "unknown sensor 'foo'"),
    (["--tile", "S1FILE", "--window", "inf,0,48,48"], "window must be 4 finite numbers"),
    (["--tile", "S1FILE", "--window", "0.5,0,48,48"], "window must be whole pixels"),
    (["--tile", "S1FILE", "--window", "0,0,100000,100000"], "is larger than"),
    (["--tile-id", "1", "--within", "FEATURES_NOT_A_LIST"], "'features' must be a list of Feature objects"),
    (["--tile-id", "1", "--within", "CRS_STRING"], "has CRS 'EPSG:3857'"),
    (["--tile-id", "1", "--within", "JSON_LIST"], "a JSON object with a 'type' is expected"),
    (["--tile-id", "1", "--png", "OUT_TXT"], "--png must name a .png file"),
    (["--tile-id", "1", "--geojson", "TMPDIR"], "is a directory"),
    (["--tile-id", "1", "--png", "UNDER_A_FILE"], "is not a directory"),
    (["--tile-id", "1", "--geojson", "NEW_FOLDER/"], "--geojson NEW_FOLDER/ ends in a slash (a folder); give a file"),
    (["--tile-id", "99999", "--png", "IN_NEW_FOLDERS"], "no tile with id 99999"),  # and the folders are not made
    (["--tile-id", "1", "--geojson", "UNDER_A_BROKEN_LINK"], "is a broken link"),  # was found only after the query
    (["--tile-id", "1", "--point", "0,0"], "point applies to a query tile file, not to a tile id"),
    (["--tile-id", "1", "--sensor", "sentinel2", "--point", "0,0"], "sensor and point apply to a query tile file"),
    (["--tile", "S1FILE", "--window", "0,0,0,48"], "window width and height must be > 0 pixels, got 0,0,0,48 (col, "),
    (["--tile", "S1FILE", "--window", "0,0,8,-8"], "window width and height must be > 0 pixels, got 0,0,8,-8"),
    (["--tile", "S1FILE", "--exclude-own-cell"], "excluding the query's own cell needs its cell"),
])
def test_bad_query_inputs_exit_2_with_one_line(small_workspace, tmp_path, args, message):
    with Catalog(small_workspace / "catalog.sqlite") as cat:
        s1 = [s for s in cat.scenes() if s["sensor"] == "sentinel1"][0]["files"]["*"]
    (tmp_path / "t.tif").write_text("not a tiff")
    ring = [[[0, 0], [1, 0], [1, 1], [0, 0]]]
    docs = {"FEATURES_NOT_A_LIST": {"type": "FeatureCollection", "features": {"a": 1}},
            "CRS_STRING": {"type": "Polygon", "crs": "EPSG:3857", "coordinates": ring}, "JSON_LIST": [1, 2]}
    subst = {"BOWTIE": str(_bowtie(tmp_path / "bow.geojson")), "MISSING": str(tmp_path / "none.tif"),
             "TEXT": str(tmp_path / "t.tif"), "S1FILE": s1, "OUT_TXT": str(tmp_path / "sheet.txt"),
             "TMPDIR": str(tmp_path), "UNDER_A_FILE": str(tmp_path / "t.tif" / "q.png"),
             "NEW_FOLDER/": f"{tmp_path / 'new'}/", "IN_NEW_FOLDERS": str(tmp_path / "new" / "sub" / "q.png"),
             "UNDER_A_BROKEN_LINK": str(tmp_path / "broken" / "hits.geojson")}
    (tmp_path / "broken").symlink_to(tmp_path / "nowhere" / "zzz")
    for name, doc in docs.items():
        (tmp_path / f"{name}.geojson").write_text(json.dumps(doc))
        subst[name] = str(tmp_path / f"{name}.geojson")
    r = run_cli("query", "--workspace", small_workspace, *[subst.get(a, a) for a in args])
    assert r.returncode == 2, r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message.replace("NEW_FOLDER/", subst["NEW_FOLDER/"]) in lines[0], lines
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "sheet.txt").exists() and not (tmp_path / "sheet.txt.png").exists()
    assert not (tmp_path / "new").exists()  # a refused output path, or a failed query, makes no folder


def test_a_search_with_another_model_is_refused(small_workspace, tmp_path):
    import shutil

    ws = tmp_path / "ws"
    shutil.copytree(small_workspace, ws)
    save_untrained_model(ws, seed=1)  # a different model file: another checksum
    r = run_cli("query", "--workspace", ws, "--tile-id", "1")
    assert r.returncode == 2 and "re-run `rsretrieve index`" in r.stderr


def test_a_model_file_of_another_architecture_is_a_one_line_error(small_workspace, tmp_path):
    import shutil

    import torch

    ws = tmp_path / "ws"
    shutil.copytree(small_workspace, ws)
    path = ws / "checkpoints" / "default" / "model.pt"
    ck = torch.load(path, weights_only=True)
    ck["state_dict"] = {k + "_renamed": v for k, v in ck["state_dict"].items()}
    torch.save(ck, path)
    r = run_cli("query", "--workspace", ws, "--tile-id", "1")
    assert r.returncode == 2 and "does not fit this version of the model code" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_western_longitudes_are_values_not_options(small_workspace):
    with Catalog(small_workspace / "catalog.sqlite") as cat:
        lon, lat = cat.tile(1)["lon"], cat.tile(1)["lat"]
    r = run_cli("query", "--workspace", small_workspace, "--tile-id", "1", "--bbox", "-179.9,-89,-179.8,-88", "-k", "3")
    assert r.returncode == 0, r.stderr
    assert "(no tile matches the filter)" in r.stdout  # nothing indexed near the south pole: a valid, empty answer
    r = run_cli("query", "--workspace", small_workspace, "--tile-id", "1", "--bbox",
                f"{lon - 0.01},{lat - 0.01},{lon + 0.01},{lat + 0.01}", "-k", "3", "--json")
    assert all(abs(h["lon"] - lon) < 0.02 for h in json.loads(r.stdout)["hits"])


def test_a_query_by_a_file_of_an_ingested_scene_can_exclude_that_scene(small_workspace):
    with Catalog(small_workspace / "catalog.sqlite") as cat:
        t = [t for t in cat.tiles("t.sensor = 'sentinel2' AND t.coverage = 1.0")][0]
        scene = cat.scene(t["scene_id"])
    ws = Workspace.open(small_workspace)
    path = scene["files"]["*"]
    own = ws.query(tile=path, point=(t["lon"], t["lat"]), k=3)
    assert own.hits[0].scene_id == t["scene_id"] and own.query.scene_id == t["scene_id"]
    res = ws.query(tile=path, point=(t["lon"], t["lat"]), k=20, exclude_own_scene=True)
    assert res.hits and all(h.scene_id != t["scene_id"] for h in res.hits)
    ws.close()


def test_api_inputs_of_other_types_and_sizes(small_workspace):
    ws = Workspace.open(small_workspace)
    total = IndexStore.open(small_workspace / "index").ntotal
    assert len(ws.query(tile_id=1, k=10**11).hits) == total  # capped at the index size, nothing allocated for k
    assert [h.tile_id for h in ws.query(tile_id=np.int64(1), k=np.int64(4)).hits] == \
        [h.tile_id for h in ws.query(tile_id=1, k=4).hits]
    by_str = ws.query(tile_id=1, k=5, target_sensors="sentinel2,enmap")
    assert [h.tile_id for h in by_str.hits] == [h.tile_id for h in ws.query(tile_id=1, k=5,
                                                                          target_sensors=["sentinel2", "enmap"]).hits]
    with ws.catalog() as cat:
        day = [s for s in cat.scenes() if s["sensor"] == "sentinel2"][0]["acquired"][:10]
        path = cat.scenes("sentinel1")[0]["files"]["*"]
    dashed = ws.query(tile_id=1, start=day, end=day, k=50)
    compact = ws.query(tile_id=1, start=day.replace("-", ""), end=day.replace("-", ""), k=50)
    assert dashed.hits and [h.tile_id for h in compact.hits] == [h.tile_id for h in dashed.hits]
    for kwargs, message in [({"tile_id": True}, "tile_id must be an integer"), ({"tile": 5}, "must be a file path"),
                            ({"tile_id": 1, "k": 2.0}, "k must be a positive integer"),
                            ({"tile_id": 1, "model": "nope"}, "no trained model 'nope'"),
                            ({"tile_id": 1, "model": Path("x")}, "model must be the name of a trained model .*x"),
                            ({"tile": path, "point": "74,20"}, "point must be 2 finite numbers"),
                            ({"tile": path, "window": (0, 0, 48)}, "window must be 4 finite numbers"),
                            ({"tile_id": 1, "exclude_own_scene": "false"},
                             "^exclude_own_scene must be True or False, got 'false'$"),
                            ({"tile_id": 1, "one_per_cell": 1}, "^one_per_cell must be True or False, got 1$"),
                            ({"tile_id": 1, "exclude_own_cell": None}, "^exclude_own_cell must be True or False"),
                            ({"tile_id": 1, "sensor": "sentinel2", "point": (74, 20), "window": (0, 0, 8, 8)},
                             "^sensor, point and window apply to a query tile file, not to a tile id")]:
        with pytest.raises(QueryError, match=message):
            ws.query(**kwargs)
    ws.close()


def test_index_rejects_a_bad_factory_before_any_work_and_small_segments_stay_exact(tmp_path):
    from tests.conftest import make_workspace

    ws = make_workspace(tmp_path, scenes=2, size_m=1440, index=False)
    save_untrained_model(ws)
    r = run_cli("index", "-w", ws, "--factory", "garbage")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "--factory 'garbage' is not a FAISS index factory string" in r.stderr
    assert not (ws / "index").exists()  # nothing embedded or written
    for args, message in [(["--factory", "IDMap,Flat"], "--factory 'IDMap,Flat': a segment's ANN index is searched "
                           "by row number, mapped to tile ids by rsretrieve; give the factory without 'IDMap'"),
                          (["--factory", "PCA32,IDMap2,Flat"], "--factory 'PCA32,IDMap2,Flat': a segment's ANN index "
                           "is searched by row number, mapped to tile ids by rsretrieve; give the factory without "
                           "'IDMap2'"),
                          (["--factory", " "], "--factory needs a FAISS index factory string or 'auto', got ' '"),
                          (["--model", ""], "--model needs the name of a trained model (WS/checkpoints/NAME), got ''")]:
        r = run_cli("index", "-w", ws, *args)  # IDMap: a traceback from FAISS's add() once the tiles were embedded
        assert r.returncode == 2 and r.stderr.strip().splitlines() == [f"rsretrieve index: error: {message}"], r.stderr
        assert not (ws / "index").exists()
    r = run_cli("index", "-w", ws, "--factory", "IVF4096,PQ32", "--json")  # the README's example, on few tiles
    assert r.returncode == 0, r.stderr
    with Catalog(ws / "catalog.sqlite") as cat:
        assert json.loads(r.stdout)["total"] == len(cat.tiles())
    st = IndexStore.open(ws / "index")
    assert all(seg.ann is None for seg in st.segments)  # too few rows to train 4096 lists: searched exactly
    assert Workspace.open(ws).query(tile_id=1, k=3).plan["mode"] == "exact"


def test_a_bbox_value_starting_with_a_minus_point_is_a_value():
    from rsretrieve.cli import _join_negative_values

    assert _join_negative_values(["--bbox", "-.5,-1,0.5,1", "-k", "3"]) == ["--bbox=-.5,-1,0.5,1", "-k", "3"]
    assert _join_negative_values(["--bbox", "-inf,0,1,1"]) == ["--bbox=-inf,0,1,1"]


def test_a_query_before_the_index_catches_up_with_the_catalog_still_returns_k_current_hits(tmp_path, caplog):
    """Vectors of a scene taken out of the catalog (removed, or re-ingested under a new id) since the last
    `rsretrieve index` used to take places in the top-k and then be dropped: fewer than k hits, counted candidates
    that no longer exist, a rank missing. They are filtered out before the search, with a warning."""
    import logging

    ws = make_workspace(tmp_path, scenes=2, size_m=1440)
    w = Workspace.open(ws)
    with Catalog(ws / "catalog.sqlite") as cat:
        q = cat.tiles("t.sensor = 'sentinel1'")[0]["tile_id"]
        gone = cat.scenes("sentinel2")[0]
    assert len(w.query(tile_id=q, k=3).hits) == 3  # the engine is open (and cached) before the catalog changes
    with Catalog(ws / "catalog.sqlite") as cat:
        cat.remove_scene(gone["key"])
        n_left = len(cat.tiles("t.sensor = 'sentinel2'"))
    with caplog.at_level(logging.WARNING, logger="rsretrieve.index.query"):
        res = w.query(tile_id=q, target_sensors=["sentinel2"], k=n_left)
    assert res.plan["candidates"] == n_left
    assert [h.rank for h in res.hits] == list(range(1, n_left + 1))
    assert all(h.scene_id != gone["scene_id"] for h in res.hits)
    assert "the index is behind the catalog: 1 scene(s) removed or re-ingested and 0 not indexed yet" in caplog.text
    w.close()


def test_a_catalog_tile_whose_scene_file_is_gone_is_a_one_line_error_naming_tile_and_file(tmp_path):
    ws = make_workspace(tmp_path, scenes=2, size_m=1440)
    with Catalog(ws / "catalog.sqlite") as cat:
        t = cat.tiles("t.sensor = 'sentinel2'")[0]
        path = cat.scene(t["scene_id"])["files"]["*"]
    Path(path).unlink()
    r = run_cli("query", "--workspace", ws, "--tile-id", str(t["tile_id"]))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.strip() == (f"rsretrieve query: error: cannot read tile {t['tile_id']} (sentinel2) from its scene "
                                f"file: {path}: No such file or directory (moved, deleted or damaged since it was "
                                f"ingested)")


def test_a_point_outside_the_query_file_is_told_the_files_extent_in_lon_lat(small_workspace):
    """A point given as lat,lon used to be told only that it is outside "(a tile outside every scene)"."""
    import rasterio
    from rasterio.warp import transform_bounds

    with Catalog(small_workspace / "catalog.sqlite") as cat:
        t = cat.tiles("t.sensor = 'sentinel1' AND t.coverage = 1.0")[0]
        path = cat.scene(t["scene_id"])["files"]["*"]
    with rasterio.open(path) as src:
        w, s, e, n = transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21)
    r = run_cli("query", "--workspace", small_workspace, "--tile", path, "--point", f"{t['lat']},{t['lon']}")
    assert r.returncode == 2 and r.stderr.strip() == (
        f"rsretrieve query: error: point {t['lat']:g},{t['lon']:g} (lon,lat) is outside {path}, which covers "
        f"lon {w:.4f}..{e:.4f}, lat {s:.4f}..{n:.4f}")


def test_an_index_generation_gone_while_opened_keeps_the_engines_snapshot(small_workspace, tmp_path, caplog):
    """A generation pruned between reading ``current`` and opening it (or the index folder removed) is not "no index
    yet" for an engine that has one: it keeps answering from its snapshot, and takes up the next generation."""
    import shutil

    ws = tmp_path / "ws"
    shutil.copytree(small_workspace, ws)
    api = Workspace.open(ws)
    before = [(h.tile_id, h.score) for h in api.query(tile_id=1, k=5).hits]
    current = ws / "index" / "current"
    real = current.read_text()
    current.write_text("gen-pruned-meanwhile\n")  # as a reader sees it when the generation goes as it opens it
    with caplog.at_level("WARNING"):
        for _ in range(2):  # looked at again each time, never recorded as seen
            assert [(h.tile_id, h.score) for h in api.query(tile_id=1, k=5).hits] == before
    assert "keeps answering from generation" in caplog.text
    current.write_text(real)
    assert [(h.tile_id, h.score) for h in api.query(tile_id=1, k=5).hits] == before
    api.close()


def test_a_query_by_tile_id_or_by_a_point_of_a_file_carries_the_catalog_footprint_of_its_cell(small_workspace):
    ws = Workspace.open(small_workspace)
    try:
        with ws.catalog() as cat:
            t = cat.tiles("t.sensor = 'sentinel1' AND t.coverage = 1.0")[0]
            scene = cat.scene(t["scene_id"])
        assert ws.query(tile_id=t["tile_id"], k=1).query.footprint == t["footprint"]
        res = ws.query(scene["files"]["*"], point=(t["lon"], t["lat"]), k=1)
        assert res.query.cell_id == t["cell_id"] and res.query.footprint == t["footprint"]
        # the whole file: the scene's footprint (ingest draws it with more points per edge: equal to 1e-6 of its area)
        fp, sfp = wkt.loads(ws.query(scene["files"]["*"], k=1).query.footprint), wkt.loads(scene["footprint"])
        assert fp.symmetric_difference(sfp).area < 1e-6 * sfp.area
        res = ws.query(tile_id=t["tile_id"], k=2)
        assert res.to_dict()["query"]["footprint"] == t["footprint"]  # in `query --json` as a hit's footprint
    finally:
        ws.close()


def test_a_pixel_window_of_a_file_in_another_crs_has_the_footprint_of_that_window(tmp_path):
    """A LAEA (EPSG:3035) file: the window's corners, taken through the file's transform to lon/lat, are its
    footprint's (right-hand rule), and the edges between them are densified as a cell's are."""
    from pyproj import Transformer
    from rasterio.transform import from_origin
    from shapely import is_ccw

    from rsretrieve.index.query import tile_from_file

    x, y = Transformer.from_crs(4326, 3035, always_xy=True).transform(12.0, 50.0)
    f = s2_file(tmp_path / "S2A_MSIL2A_20200101T100000_laea.tif", from_origin(x - 3000, y + 600, 10, 10),
                 "EPSG:3035", 120, 400)
    q = tile_from_file(f, 480.0, window=(100, 20, 48, 60))
    fp = wkt.loads(q.footprint)
    to_ll = Transformer.from_crs(3035, 4326, always_xy=True)
    corners = [to_ll.transform(x - 3000 + 10 * c, y + 600 - 10 * r) for c, r in ((100, 20), (148, 20), (148, 80),
                                                                                  (100, 80))]
    assert fp.geom_type == "Polygon" and is_ccw(fp.exterior) and len(fp.exterior.coords) == 33
    for c in corners:
        assert min(np.hypot(px - c[0], py - c[1]) for px, py in fp.exterior.coords) < 1e-9
    assert fp.area == pytest.approx(Polygon(corners).area, rel=1e-4)
    # the whole file, and a window reaching past its east edge (the tile shows nodata there): the window asked for
    whole = wkt.loads(tile_from_file(f, 480.0).footprint)
    assert whole.contains(fp) and whole.area == pytest.approx(fp.area * (400 * 120) / (48 * 60), rel=1e-3)
    past = wkt.loads(tile_from_file(f, 480.0, window=(380, 0, 48, 48)).footprint)
    assert not whole.contains(past) and past.intersection(whole).area == pytest.approx(past.area * 20 / 48, rel=1e-3)


def test_a_lonlat_file_across_the_antimeridian_has_a_footprint_split_there_and_its_points_the_catalogs(tmp_path):
    from rasterio.transform import from_origin

    from rsretrieve.data.ingest import ingest
    from rsretrieve.index.query import tile_from_file

    f = s2_file(tmp_path / "q" / "S2A_MSIL2A_20200101T100000_am.tif", from_origin(179.99, -17.0, 0.0001, 0.0001),
                 "EPSG:4326", 100, 200)  # 179.99 .. 180.01 E
    whole = wkt.loads(tile_from_file(f, 480.0).footprint)
    assert whole.geom_type == "MultiPolygon" and len(whole.geoms) == 2
    assert sorted(round(g.bounds[0], 6) for g in whole.geoms) == [-180.0, 179.99]
    assert sum(g.area for g in whole.geoms) == pytest.approx(0.02 * 0.01, rel=1e-6)
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        assert ingest([f], cat).added == 1
        tiles = {t["cell_id"]: t["footprint"] for t in cat.tiles()}
    for lon in (179.995, -179.995):
        q = tile_from_file(f, 480.0, point=(lon, -17.005))
        assert q.footprint == tiles[q.cell_id]


def test_scores_are_written_as_the_shortest_decimal_that_reads_back_as_their_float32():
    from rsretrieve.index.query import output_scores

    a = float(np.float32(0.8123456835746765))
    b = float(np.nextafter(np.float32(a), np.float32(0)))  # the float32 just below it: another score
    out = output_scores([a, b, b, 1.0000001192092896, 0.25, -0.1, 1e-9])
    # 7 digits tell a from b (6 would write both as 0.812346); b and b stay one value
    assert out == [0.8123457, 0.8123456, 0.8123456, 1.0000001, 0.25, -0.1, 1e-9]
    assert [np.float32(v) for v in out] == [np.float32(v) for v in (a, b, b, 1.0000001192092896, 0.25, -0.1, 1e-9)]
    assert output_scores([]) == []


def test_a_score_column_gets_the_decimals_that_keep_different_neighbours_apart_and_ties_equal():
    from rsretrieve.index.query import score_decimals

    assert score_decimals([0.9, 0.5, 0.5]) == 4  # a real tie prints as one
    assert score_decimals([0.12345, 0.12335]) == 4
    # 0.81234567 and 0.81234573 are different float32 numbers: 0.8123 / 0.8123, 0.8123457 / 0.8123457, then apart
    assert score_decimals([0.9, 0.81234567, 0.81234573, 0.5, 0.5]) == 8
    assert score_decimals([0.81234567, 0.81234573], least=3) == 8 and score_decimals([0.91, 0.9], least=3) == 3
    assert score_decimals([]) == 4 and score_decimals([0.5]) == 4


def _hit(rank, score, **kw):
    from rsretrieve.index.query import Hit

    return Hit(**{"rank": rank, "tile_id": 10 + rank, "score": score, "sensor": "sentinel2", "cell_id": "33N_480m_r1_c2",
                  "acquired": "2020-06-04T05:46:39Z", "scene_id": 1, "scene": "/a/S2.tif", "lon": 13.7,
                  "lat": 48.2, "footprint": "POLYGON ((13.7 48.2, 13.8 48.2, 13.8 48.3, 13.7 48.2))", **kw})


def test_the_query_table_prints_neighbouring_scores_that_differ_apart_and_ties_alike(small_workspace, monkeypatch,
                                                                                      capsys):
    from rsretrieve import cli
    from rsretrieve.index.query import QueryResult, QueryTile

    scores = [float(np.float32(s)) for s in (0.9, 0.81234567, 0.81234573, 0.5, 0.5)]  # float32, as searches give
    res = QueryResult(QueryTile(np.zeros((2, 4, 4), np.float32), "sentinel1", "tile 7"),
                      [_hit(i + 1, s) for i, s in enumerate(scores)], {"mode": "exact", "candidates": 5})
    monkeypatch.setattr(Workspace, "query", lambda self, *a, **kw: res)
    assert cli.main(["query", "--workspace", str(small_workspace), "--tile-id", "7"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:2] == ["rank", "score"]
    printed = [line.split()[1] for line in lines[2:7]]
    assert printed == ["0.89999998", "0.81234568", "0.81234574", "0.50000000", "0.50000000"]


def test_query_json_is_to_dict_with_one_hit_a_line_and_short_scores(small_workspace, capsys):
    from rsretrieve import cli

    ws = Workspace.open(small_workspace)
    try:
        res = ws.query(tile_id=3, k=20)
    finally:
        ws.close()
    assert cli.main(["query", "--workspace", str(small_workspace), "--tile-id", "3", "-k", "20", "--json"]) == 0
    text = capsys.readouterr().out
    assert json.loads(text) == res.to_dict() and text == res.to_json() + "\n"
    lines = text.splitlines()
    # the query and the plan indented as before, then each hit compact on a line of its own (json's indent, pure
    # Python, took 2.8 s of `-k 100000` field by field)
    hit_lines = [line for line in lines if line.startswith('    {"rank": ')]
    assert len(hit_lines) == len(res.hits) == 20 and len(lines) == len(res.hits) + 19  # the plan names the model; the query its scene
    assert [json.loads(line.rstrip(","))["tile_id"] for line in hit_lines] == [h.tile_id for h in res.hits]
    for h, d in zip(res.hits, json.loads(text)["hits"]):
        # the float32 score, in at most 9 significant digits (not 1.0000001192092896)
        assert np.float32(d["score"]) == np.float32(h.score)
        assert len(repr(d["score"]).lstrip("-").replace("0.", "", 1).lstrip("0").replace(".", "")) <= 9
    empty = json.loads(type(res)(res.query, [], res.plan).to_json())
    assert empty["hits"] == [] and empty["query"]["tile_id"] == 3


def test_hits_json_is_what_json_dumps_writes_for_every_kind_of_value():
    """The template of ``hits_json`` against ``json.dumps`` of the hit's dict: quotes, backslashes and non-ASCII in
    a path, no date, negative and integral coordinates, and the types the template leaves to ``json.dumps``."""
    from rsretrieve.index.query import hits_json, output_scores

    hits = [_hit(1, 0.8123456835746765), _hit(2, 0.5, scene='/d/Zürich "x"\\y\t.tif', acquired=None, lon=-180.0),
            _hit(3, -0.25, lon=np.float64(13.7), lat=1e-7), _hit(4, 0.1, lon=float("nan")),
            _hit(5, 1e-9, cell_id="c\u00e9")]
    for role, footprint in ((None, True), ("hit", False)):
        want = []
        for h, s in zip(hits, output_scores([h.score for h in hits])):
            d = {"role": role} if role else {}
            d.update(h.to_dict(), score=s)
            if not footprint:
                del d["footprint"]
            want.append(json.dumps(d))
        assert list(hits_json(hits, role=role, footprint=footprint)) == want


def test_a_target_sensor_the_model_has_no_branch_for_is_named_as_the_reason_nothing_matches(small_workspace):
    # `--target-sensors landsat8` (registered; the model has no branch, so none of its tiles is indexed) printed
    # "(no tile matches the filter)" and nothing about why
    r = run_cli("query", "--workspace", small_workspace, "--tile-id", "1", "--target-sensors", "landsat8,sentinel2")
    assert r.returncode == 0 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        "WARNING rsretrieve.index.query: the index holds no landsat8 tiles: its model 'default' has no branch for it "
        "(add one with configs/add_sensor.yaml, then run `rsretrieve index`)"]
    assert " sentinel2 " in r.stdout  # the sensors it has still answer
    r = run_cli("query", "--workspace", small_workspace, "--tile-id", "1", "--target-sensors", "sentinel2")
    assert r.returncode == 0 and r.stderr == ""
