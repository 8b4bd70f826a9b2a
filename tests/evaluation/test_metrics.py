import numpy as np
import pytest
import torch
from torchmetrics.functional.retrieval import retrieval_average_precision

from rsretrieve.evaluation.metrics import average_precision_at_k, pair_metrics


def test_recall_at_k_by_hand():
    # 3 queries, gallery of 4 cells; embeddings chosen so the ranks of the positives are 0, 1 and 3
    g = np.eye(4, dtype=np.float32)
    q = np.array([[1, 0, 0, 0], [1.0, 0.9, 0, 0], [0.5, 0.4, 0.3, 0.1]], np.float32)
    out = pair_metrics(q, np.array([0, 1, 3]), np.full(3, -1), g, np.array([0, 1, 2, 3]), np.full(4, -1), ks=(1, 2, 4))
    assert out["queries"] == 3 and out["gallery"] == 4
    assert out["recall@1"] == pytest.approx(1 / 3)  # only query 0 has its positive first
    assert out["recall@2"] == pytest.approx(2 / 3)
    assert out["recall@4"] == pytest.approx(1.0)
    assert out["chance_recall@1"] == pytest.approx(0.25)


def test_queries_without_a_positive_in_the_gallery_do_not_count():
    g = np.eye(2, dtype=np.float32)
    out = pair_metrics(np.eye(2, dtype=np.float32), np.array([0, 7]), np.full(2, -1), g, np.array([0, 1]),
                       np.full(2, -1))
    assert out["queries"] == 1 and out["recall@1"] == 1.0


def test_average_precision_matches_torchmetrics():
    rng = np.random.default_rng(0)
    scores = rng.random((20, 30))
    relevant = rng.random((20, 30)) < 0.2
    ours = average_precision_at_k(scores, relevant, 10)
    ref = [float(retrieval_average_precision(torch.tensor(s), torch.tensor(r), top_k=10))
           for s, r in zip(scores, relevant)]
    assert ours == pytest.approx(ref, abs=1e-6)


def test_ap_by_hand():
    # relevant at ranks 1 and 3 of the top 3: AP = (1/1 + 2/3) / 2
    s = np.array([[0.9, 0.8, 0.7, 0.1]])
    r = np.array([[True, False, True, False]])
    assert average_precision_at_k(s, r, 3)[0] == pytest.approx((1 + 2 / 3) / 2)


def test_a_gallery_of_one_tile_has_no_negative_pairs_and_no_nan_in_the_json():
    import json
    import warnings

    q, g = np.eye(3)[:1], np.eye(3)[:1]  # one test cell: the positive is the whole gallery
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "Mean of empty slice"
        m = pair_metrics(q, np.array([0]), np.array([1]), g, np.array([0]), np.array([1]))
    assert m["recall@1"] == m["chance_recall@1"] == 1.0 and m["pos_score"] == 1.0
    assert "neg_score" not in m and "separation" not in m
    json.dumps(m, allow_nan=False)  # strict JSON (NaN is not JSON): what `evaluate --json` prints


def test_a_gallery_tile_on_the_same_ground_in_another_zone_is_neither_positive_nor_negative():
    # query cell 0's ground is also gallery cell 5 (the same ground tiled in a neighbouring UTM zone): its near
    # duplicate outranks the positive, which is a miss when cell ids alone decide, and not counted when left out
    g = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], np.float32)
    q = np.array([[0.4, 0.1, 0.9], [0.0, 1.0, 0.0]], np.float32)
    q_cells, g_cells = np.array([0, 1]), np.array([0, 1, 5])
    plain = pair_metrics(q, q_cells, np.full(2, -1), g, g_cells, np.full(3, -1), ks=(1, 2))
    assert plain["recall@1"] == 0.5 and plain["recall@2"] == 1.0
    same = {0: np.array([5]), 5: np.array([0])}
    out = pair_metrics(q, q_cells, np.full(2, -1), g, g_cells, np.full(3, -1), ks=(1, 2), same_ground=same)
    assert out["recall@1"] == 1.0 and out["queries"] == 2
    # the negative pairs: query 0 with cell 1 only (not cell 5), query 1 with cells 0 and 5
    assert out["neg_score"] == pytest.approx((0.1 + 0.0 + 0.0) / 3)


def test_a_same_ground_tile_is_never_relevant_to_class_map_and_chance_ranks_it_last_too():
    # gallery: the positive (class 1), another class, and the query's ground in another zone (class 1 too): with it
    # left out, mAP@10 is that of the gallery without it, and the chance levels count the tiles actually ranked
    g = np.array([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.95, 0.0, 0.05]], np.float32)
    q = np.array([[0.9, 0.1, 0.0]], np.float32)
    same = {0: np.array([5]), 5: np.array([0])}
    out = pair_metrics(q, np.array([0]), np.array([1]), g, np.array([0, 1, 5]), np.array([1, 2, 1]), ks=(1, 10),
                       same_ground=same)
    without = pair_metrics(q, np.array([0]), np.array([1]), g[:2], np.array([0, 1]), np.array([1, 2]), ks=(1, 10))
    assert out["mAP@10"] == without["mAP@10"] == 1.0
    assert out["chance_mAP@10"] == without["chance_mAP@10"]  # the same random order of the two tiles ranked
    assert out["chance_recall@1"] == without["chance_recall@1"] == 0.5 and out["chance_recall@10"] == 1.0


def test_a_nan_score_still_shows_in_the_calibration():
    g = np.eye(3, dtype=np.float32)
    g[2] = np.nan  # a broken vector in the gallery must not vanish from the numbers
    m = pair_metrics(g[:2].copy(), np.arange(2), np.full(2, -1), g, np.arange(3), np.full(3, -1), ks=(1,))
    assert np.isnan(m["neg_score"]) and np.isnan(m["separation"])


def test_same_ground_pairs_are_every_gallery_tile_of_every_other_zone_cell_on_a_query_s_ground():
    from rsretrieve.evaluation.metrics import same_ground_pairs

    rng = np.random.default_rng(0)
    q_cells = rng.integers(0, 40, 60)
    g_cells = rng.integers(0, 40, 90)  # a cell may have several gallery tiles, or none
    same = {int(c): rng.choice(40, int(rng.integers(1, 4)), replace=False) for c in range(0, 40, 3)}
    rows, cols = same_ground_pairs(q_cells, g_cells, same)
    want = {(i, j) for i, c in enumerate(q_cells) for j, g in enumerate(g_cells) if g in same.get(int(c), ())}
    assert len(rows) == len(want) and set(zip(rows.tolist(), cols.tolist())) == want
    assert [len(a) for a in same_ground_pairs(q_cells, g_cells, {})] == [0, 0]
    assert [len(a) for a in same_ground_pairs(q_cells[:0], g_cells, same)] == [0, 0]
