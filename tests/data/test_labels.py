"""Land-cover labels carry their scheme: the same class value in two schemes is never the same class."""

import sqlite3

import numpy as np
import pytest

from rsretrieve.data.catalog import Catalog, SchemaError
from rsretrieve.data.datasets import CellDataset, TileCache, collate_cells, index_cells, one_scheme_labels
from rsretrieve.data.ingest import ingest
from rsretrieve.data.labels import scheme_for
from rsretrieve.data.synthetic import make_archive
from rsretrieve.evaluation.metrics import average_precision_at_k, class_map, pair_metrics
from tests.conftest import run_cli, s1_scene, write_tif

# two places 20 km apart; each has a Sentinel-1 scene and a land-cover raster whose every pixel is class 3
PLACES = {"alpha": (500_000.0, 5_000_000.0), "beta": (520_000.0, 5_000_000.0)}


@pytest.fixture(scope="module")
def two_scheme_archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("two_schemes")
    for i, (scheme, origin) in enumerate(PLACES.items()):
        s1_scene(root / f"s1_{scheme}.tif", seed=i, size=96, origin=origin)
        write_tif(root / "truth" / scheme / f"{scheme}_landcover.tif", np.full((96, 96), 3, np.uint8), origin=origin,
                  nodata=255, tags={"RSRETRIEVE_ROLE": "landcover", "RSRETRIEVE_LABEL_SCHEME": scheme})
    return root


def test_same_class_value_of_two_schemes_gets_two_label_ids(two_scheme_archive, tmp_path):
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        report = ingest([two_scheme_archive], cat)
        assert report.problems == [] and report.label_sources == 2
        rows = cat.labels()
        assert {(r["scheme"], r["label"]) for r in rows} == {("alpha", 3), ("beta", 3)}
        n = cat.counts()["label_schemes"]
        assert set(n) == {"alpha", "beta"} and n["alpha"] == n["beta"] > 0
        idx = index_cells(cat, ["sentinel1"], min_valid=0.0)
        cache = TileCache(cat, idx.tile_ids, 480)
    batch = collate_cells([CellDataset(idx, cache)[i] for i in range(len(idx.cells))], {"sentinel1": (2, 48, 48)})
    kept = batch["label"][batch["label"] >= 0]
    assert len(kept) > 0 and len(set(kept.tolist())) == 1  # a batch of both places trains one scheme's labels
    assert idx.label_keys == [("alpha", 3), ("beta", 3)] and idx.label_names() == ["alpha:3", "beta:3"]
    by_scheme = {s: {idx.cells[i] for i in np.flatnonzero(a >= 0)} for s, a in idx.scheme_labels.items()}
    assert by_scheme["alpha"].isdisjoint(by_scheme["beta"]) and all(by_scheme.values())
    ids = {s: set(idx.labels[[idx.cells.index(c) for c in cs]].tolist()) for s, cs in by_scheme.items()}
    assert ids == {"alpha": {0}, "beta": {1}}  # class 3 of alpha is not class 3 of beta


def test_class_map_never_matches_class_values_of_different_schemes():
    # query: alpha class 3 (id 0); gallery g0 beta:3 (id 1), g1 alpha:3, g2 beta:3, g3 alpha:7 (id 2)
    scores = np.array([[0.9, 0.1, 0.8, 0.5]])
    q = {"alpha": np.array([0]), "beta": np.array([-1])}
    g = {"alpha": np.array([-1, 0, -1, 2]), "beta": np.array([1, -1, 1, -1])}
    out = class_map(scores, q, g, k=10)
    # ranked against alpha tiles only: g3 (0.5) then g1 (0.1); the relevant g1 is second -> AP 1/2
    assert out["mAP@10"] == pytest.approx(0.5)
    assert out["mAP@10_by_scheme"] == {"alpha": {"mAP@10": pytest.approx(0.5), "chance_mAP@10": pytest.approx(
        out["chance_mAP@10"]), "labelled_queries": 1, "labelled_gallery": 2}}
    # one shared integer space (the old behaviour) would count both beta:3 tiles as hits: AP = (1 + 1 + 3/4) / 3
    flat = average_precision_at_k(scores, np.array([[True, True, True, False]]), 10)[0]
    assert flat == pytest.approx((1 + 1 + 0.75) / 3) and out["mAP@10"] < flat
    # with only beta gallery tiles there is nothing to compare an alpha query with: no class mAP at all
    assert class_map(scores[:, [0, 2]], q, {"alpha": np.array([-1, -1]), "beta": np.array([1, 1])}) == {}


def test_pair_metrics_reports_map_per_scheme():
    emb = np.eye(4, dtype=np.float32)
    labels = {"alpha": np.array([0, 0, -1, -1]), "beta": np.array([-1, -1, 1, 1])}
    out = pair_metrics(emb, np.arange(4), labels, emb, np.arange(4), labels)
    assert out["recall@1"] == 1.0 and out["labelled_queries"] == 4
    assert set(out["mAP@10_by_scheme"]) == {"alpha", "beta"}
    assert all(v["labelled_gallery"] == 2 for v in out["mAP@10_by_scheme"].values())


def test_a_training_batch_keeps_labels_of_one_scheme_only():
    # labels are ids; schemes index the scheme of each id; -1 = unknown
    assert one_scheme_labels([0, 1, 2, -1, 1], [0, 1, 1, -1, 1]) == [-1, 1, 2, -1, 1]
    assert one_scheme_labels([0, 3, -1], [0, 1, -1]) == [0, -1, -1]  # a tie keeps the first scheme
    assert one_scheme_labels([0, 0, -1], [0, 0, -1]) == [0, 0, -1]


def test_ingest_label_scheme_option_overrides_and_replaces(two_scheme_archive, tmp_path):
    ws = tmp_path / "ws"
    r = run_cli("ingest", two_scheme_archive / "truth" / "alpha", two_scheme_archive / "s1_alpha.tif", "-w", ws,
                "--label-scheme", "esa_worldcover")
    assert r.returncode == 0, r.stderr
    assert "label schemes: esa_worldcover (" in r.stdout
    r = run_cli("ingest", two_scheme_archive / "truth" / "alpha", "-w", ws)  # back to the tag: rows replaced
    assert r.returncode == 0, r.stderr
    assert "label schemes: alpha (" in r.stdout and "esa_worldcover" not in r.stdout
    r = run_cli("ingest", two_scheme_archive, "-w", ws, "--label-scheme", "bad scheme!")
    assert r.returncode == 2 and "--label-scheme" in r.stderr


def test_scheme_of_known_products_and_unknown_folders(tmp_path):
    assert scheme_for(tmp_path / "S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_26_57_reference_map.tif") == "corine"
    assert scheme_for(tmp_path / "ROIs1158_spring_lc_1_p1.tif") == "igbp"
    assert scheme_for(tmp_path / "x" / "site_landcover.tif") == f"local:{tmp_path / 'x'}"
    assert scheme_for("a.tif", {"RSRETRIEVE_CLASSES": "sea,land"}).startswith("classes:")
    assert scheme_for("a.tif", {"RSRETRIEVE_CLASSES": "sea,land"}) == scheme_for("b.tif", {"RSRETRIEVE_CLASSES":
                                                                                         "sea,land"})


# -- catalogs written by schema version 1 (one label per cell, no scheme) ---------------------------------------------
_V1_LABELS = """CREATE TABLE cell_labels(cell_id TEXT PRIMARY KEY, label INTEGER NOT NULL, label_name TEXT NOT NULL,
    purity REAL NOT NULL, source TEXT NOT NULL)"""


def _downgrade_to_v1(path, extra=()):
    """Rewrite a catalog as schema version 1 wrote it (the other tables did not change between 1 and 2)."""
    con = sqlite3.connect(path)
    rows = con.execute("SELECT cell_id, label, label_name, purity, source FROM cell_labels").fetchall()
    con.execute("DROP VIEW primary_labels")
    con.execute("DROP TABLE cell_labels")
    con.execute(_V1_LABELS)
    con.executemany("INSERT INTO cell_labels VALUES (?,?,?,?,?)", [*rows, *extra])
    con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    con.commit()
    con.close()


@pytest.fixture(scope="module")
def synthetic_ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("v1")
    make_archive(root / "a", scenes=1, sensors=("sentinel1",), seed=2, size_m=1920)
    return root


def test_a_v1_catalog_is_migrated_to_what_a_fresh_ingest_gives(synthetic_ws, tmp_path):
    path = tmp_path / "ws" / "catalog.sqlite"
    with Catalog(path, tile_m=480) as cat:
        ingest([synthetic_ws / "a"], cat)
        fresh = cat.labels()
        tiles = cat.tiles()
    assert {r["scheme"] for r in fresh} == {"synthetic"}
    ref_map = str(tmp_path / "gone" / "X_26_57_reference_map.tif")  # a source that no longer exists
    _downgrade_to_v1(path, extra=[("33N_480m_r1_c1", 211, "class_211", 0.9, ref_map)])
    with Catalog(path) as cat:
        assert cat.meta("schema_version") == "2"
        migrated = cat.labels()
        assert cat.tiles() == tiles  # same rows, labels joined as before
    assert [r for r in migrated if r["scheme"] != "corine"] == fresh
    assert [(r["scheme"], r["label"]) for r in migrated if r["cell_id"] == "33N_480m_r1_c1"] == [("corine", 211)]
    # and through the CLI: a v1 workspace just works, and is not re-ingested
    _downgrade_to_v1(path)
    r = run_cli("catalog", "-w", path.parent)
    assert r.returncode == 0 and "label schemes: corine (1 cells), synthetic" in r.stdout, r.stderr
    r = run_cli("ingest", synthetic_ws / "a", "-w", path.parent)
    assert r.returncode == 0 and "0 scenes added, 0 replaced, 2 already in the catalog (1 of them land-cover source), " \
        in r.stdout, r.stdout


def test_a_catalog_that_cannot_be_migrated_is_a_one_line_error(synthetic_ws, tmp_path, monkeypatch):
    path = tmp_path / "ws" / "catalog.sqlite"
    with Catalog(path, tile_m=480) as cat:
        ingest([synthetic_ws / "a"], cat)
    _downgrade_to_v1(path)

    def readonly(self):
        raise sqlite3.OperationalError("attempt to write a readonly database")

    monkeypatch.setattr(Catalog, "_upgrade_labels_to_schemes", readonly)
    with pytest.raises(SchemaError, match=r"catalog\.sqlite: catalog schema version 1 needs upgrading to 2.*"
                                          r"readonly.*rsretrieve catalog --workspace"):
        Catalog(path)
    monkeypatch.undo()
    con = sqlite3.connect(path)
    assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("1",)  # untouched
    con.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    con.commit()
    con.close()
    r = run_cli("catalog", "-w", path.parent)
    assert r.returncode == 2 and "schema version 3 was written by a newer rsretrieve" in r.stderr
    assert "Traceback" not in r.stderr
