"""Retrieval metrics for one ordered sensor pair (query sensor -> archive sensor).

* instance recall@k: the positive of a query is the archive sensor's tile of the same ground cell; a query counts
  when the gallery holds its positive; a hit when the positive is among the k best-scored gallery tiles.
* class mAP@k: a gallery tile is relevant when its cell has the query's dominant land-cover class; AP@k is
  torchmetrics' ``retrieval_average_precision(top_k=k)`` (mean precision at the ranks of the relevant tiles among the
  top k, 0 when none is), averaged over queries with a known class.
* chance levels: recall@k of a random ranking is k / gallery size (one positive per query); mAP@k of a random
  ranking is measured by scoring with seeded random numbers.
* calibration: mean score of positive pairs and of all other pairs, and the separation d' between them, so pairs
  can be compared (the spread of positive scores across pairs says how comparable raw scores are).
"""

from __future__ import annotations

import numpy as np


def _ranks_of_positive(scores: np.ndarray, pos_col: np.ndarray) -> np.ndarray:
    """0-based rank of each row's positive column under descending scores (ties count against it)."""
    pos = scores[np.arange(len(scores)), pos_col][:, None]
    return (scores > pos).sum(1) + ((scores == pos).sum(1) - 1)


def average_precision_at_k(scores: np.ndarray, relevant: np.ndarray, k: int) -> np.ndarray:
    """AP@k per row (torchmetrics' definition): scores and relevant are (Nq, Ng)."""
    kk = min(k, scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :kk]  # (Nq, k)
    rel = np.take_along_axis(relevant, top, axis=1).astype(np.float64)  # (Nq, k)
    hits = np.cumsum(rel, axis=1)
    prec = hits / np.arange(1, kk + 1)[None, :]
    n = rel.sum(1)
    return np.where(n > 0, (prec * rel).sum(1) / np.maximum(n, 1), 0.0)


def pair_metrics(q_emb: np.ndarray, q_cells: np.ndarray, q_labels: np.ndarray, g_emb: np.ndarray,
                 g_cells: np.ndarray, g_labels: np.ndarray, ks: tuple[int, ...] = (1, 5, 10),
                 map_k: int = 10, seed: int = 0) -> dict[str, float | int]:
    """All metrics of one ordered pair.

    Args:
        q_emb: (Nq, E) query vectors; q_cells (Nq,) cell indices; q_labels (Nq,) class or -1.
        g_emb: (Ng, E) gallery vectors; g_cells (Ng,) distinct cell indices; g_labels (Ng,) class or -1.
    """
    scores = q_emb.astype(np.float64) @ g_emb.astype(np.float64).T  # (Nq, Ng)
    col = {int(c): i for i, c in enumerate(g_cells)}
    has = np.array([int(c) in col for c in q_cells], bool)
    out: dict[str, float | int] = {"queries": int(has.sum()), "gallery": int(len(g_cells))}
    if has.any():
        pos_col = np.array([col[int(c)] for c in q_cells[has]])
        s = scores[has]
        rank = _ranks_of_positive(s, pos_col)
        for k in ks:
            out[f"recall@{k}"] = float((rank < k).mean())
            out[f"chance_recall@{k}"] = min(k, len(g_cells)) / len(g_cells)
        pos = s[np.arange(len(s)), pos_col]
        mask = np.ones_like(s, bool)
        mask[np.arange(len(s)), pos_col] = False
        neg = s[mask]
        out["pos_score"] = float(pos.mean())
        out["neg_score"] = float(neg.mean())
        out["separation"] = float((pos.mean() - neg.mean()) / np.sqrt(0.5 * (pos.var() + neg.var()) + 1e-12))
    lab = q_labels >= 0
    if lab.any() and (g_labels >= 0).any():
        relevant = (q_labels[lab][:, None] == g_labels[None, :]) & (g_labels[None, :] >= 0)
        out[f"mAP@{map_k}"] = float(average_precision_at_k(scores[lab], relevant, map_k).mean())
        rnd = np.random.default_rng(seed).random(relevant.shape)
        out[f"chance_mAP@{map_k}"] = float(average_precision_at_k(rnd, relevant, map_k).mean())
        out["labelled_queries"] = int(lab.sum())
    return out
