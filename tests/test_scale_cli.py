"""`rsretrieve evaluate --charts` at archive scale: the projection chart reads the columns it colours by, not every
column of every tile (a gigabyte for a million tiles), and is given what it was given before."""

import numpy as np

from rsretrieve import cli
from rsretrieve.data.catalog import Catalog
from rsretrieve.index.store import IndexStore
from rsretrieve.workspace import Workspace


def test_the_projection_chart_reads_few_columns_and_gets_the_same_inputs(small_workspace, tmp_path, monkeypatch):
    import rsretrieve.viz.charts as charts

    seen, asked = {}, []
    monkeypatch.setattr(charts, "recall_chart", lambda report, path: path)
    monkeypatch.setattr(charts, "embedding_projection",
                        lambda vecs, sensors, labels, names, path: seen.update(
                            vecs=vecs, sensors=sensors, labels=labels, names=names) or path)
    real = Catalog.tiles
    monkeypatch.setattr(Catalog, "tiles", lambda self, *a, **kw: asked.append(kw.get("columns")) or real(
        self, *a, **kw))
    ws = Workspace.open(small_workspace)
    paths = cli._evaluation_charts(ws, {}, tmp_path)
    assert [p.name for p in paths] == ["recall.png", "projection.png"]
    assert asked and all(c is not None and "footprint" not in c for c in asked)

    ids, vecs = IndexStore.open(small_workspace / "index").load_vectors()
    with Catalog(small_workspace / "catalog.sqlite") as cat:
        rows = {t["tile_id"]: t for t in real(cat)}
    keep = np.array([int(i) in rows for i in ids])
    ids = ids[keep]
    keys = sorted({(rows[int(i)]["label_scheme"], rows[int(i)]["label"]) for i in ids
                   if rows[int(i)]["label"] is not None})
    assert keys, "the fixture has labelled cells"
    np.testing.assert_array_equal(seen["vecs"], vecs[keep])
    assert seen["sensors"].tolist() == [rows[int(i)]["sensor"] for i in ids]
    assert seen["labels"].tolist() == [keys.index((rows[int(i)]["label_scheme"], rows[int(i)]["label"]))
                                       if rows[int(i)]["label"] is not None else -1 for i in ids]
    assert len(seen["names"]) == len(keys)
