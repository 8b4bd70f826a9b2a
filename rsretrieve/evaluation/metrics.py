"""Retrieval metrics for one ordered sensor pair (query sensor -> archive sensor).

* instance recall@k: the positive of a query is the archive sensor's tile of the same ground cell; a query counts
  when the gallery holds its positive; a hit when the positive is among the k best-scored gallery tiles. Gallery
  tiles of cells on another grid that share the query cell's ground (the same ground tiled in two UTM zones) are
  neither positives nor negatives: they are ranked below every other gallery tile of that query (by the chance
  levels too, whose gallery size is then the tiles a query is ranked against), are never relevant to class mAP,
  and are left out of the calibration's negative pairs.
* class mAP@k: a gallery tile is relevant when its cell has the query's dominant land-cover class; AP@k is
  torchmetrics' ``retrieval_average_precision(top_k=k)`` (mean precision at the ranks of the relevant tiles among the
  top k, 0 when none is), averaged over queries with a known class. Classes are compared only within one label
  scheme (:mod:`rsretrieve.data.labels`): for each scheme, the queries labelled in it are ranked against the gallery
  tiles labelled in it (tiles of unknown class, or labelled only in another scheme, are left out of that ranking);
  the mAP is the mean over all those (query, scheme) rankings, with a per-scheme breakdown.
* chance levels: recall@k of a random ranking is k / gallery size (one positive per query); mAP@k of a random
  ranking is measured by scoring with seeded random numbers.
* calibration: mean score of positive pairs and of all other pairs, and the separation d' between them (neither
  when the gallery is a single tile), so pairs can be compared (the spread of positive scores across pairs says how
  comparable raw scores are).
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


def same_ground_pairs(q_cells: np.ndarray, g_cells: np.ndarray,
                      same_ground: dict[int, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
    """(query rows, gallery columns) of the gallery tiles whose cell is in ``same_ground`` of the query's cell (the
    same ground tiled in another UTM zone), every tile of such a cell; one pass over the queries, no per-query scan
    of the gallery."""
    none = np.zeros(0, np.int64)
    if not same_ground or not len(q_cells) or not len(g_cells):
        return none, none
    qi = [i for i, c in enumerate(np.asarray(q_cells).tolist()) if c in same_ground]
    if not qi:
        return none, none
    others = [np.asarray(same_ground[int(q_cells[i])], np.int64) for i in qi]
    wanted = np.concatenate(others)  # (P,) cells, each of one query
    owner = np.repeat(np.asarray(qi, np.int64), [len(o) for o in others])
    order = np.argsort(np.asarray(g_cells, np.int64), kind="stable")
    ranked = np.asarray(g_cells, np.int64)[order]
    lo, hi = np.searchsorted(ranked, wanted, "left"), np.searchsorted(ranked, wanted, "right")
    count = hi - lo  # gallery tiles of each wanted cell (0: not in the gallery)
    within = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    return np.repeat(owner, count), order[np.repeat(lo, count) + within]


def pair_metrics(q_emb: np.ndarray, q_cells: np.ndarray, q_labels: np.ndarray | dict[str, np.ndarray],
                 g_emb: np.ndarray, g_cells: np.ndarray, g_labels: np.ndarray | dict[str, np.ndarray],
                 ks: tuple[int, ...] = (1, 5, 10), map_k: int = 10, seed: int = 0,
                 same_ground: dict[int, np.ndarray] | None = None) -> dict:
    """All metrics of one ordered pair.

    Args:
        q_emb: (Nq, E) query vectors; q_cells (Nq,) cell indices; q_labels (Nq,) class or -1.
        g_emb: (Ng, E) gallery vectors; g_cells (Ng,) distinct cell indices; g_labels (Ng,) class or -1.
        q_labels, g_labels: one array each (one label scheme), or dicts scheme -> array with the same keys (class
            of each tile in that scheme, -1 where it has none); classes are only compared within a scheme.
        same_ground: cell index -> indices of other cells on the same ground
            (:meth:`rsretrieve.data.datasets.CellIndex.same_ground`): left out of the rankings of its queries.
    """
    scores = q_emb.astype(np.float64) @ g_emb.astype(np.float64).T  # (Nq, Ng)
    col = {int(c): i for i, c in enumerate(g_cells)}
    excluded = np.zeros(scores.shape, bool)  # (Nq, Ng): gallery tiles on a query's ground in another zone
    excluded[same_ground_pairs(q_cells, g_cells, same_ground)] = True
    scores[excluded] = -np.inf  # ranked below every other gallery tile: never among the top k
    has = np.array([int(c) in col for c in q_cells], bool)
    out: dict[str, float | int] = {"queries": int(has.sum()), "gallery": int(len(g_cells))}
    if has.any():
        pos_col = np.array([col[int(c)] for c in q_cells[has]])
        s = scores[has]
        rank = _ranks_of_positive(s, pos_col)
        ranked = len(g_cells) - excluded[has].sum(1)  # (Nq',) gallery tiles each query is ranked against
        for k in ks:
            out[f"recall@{k}"] = float((rank < k).mean())
            out[f"chance_recall@{k}"] = (min(k, len(g_cells)) / len(g_cells) if not excluded.any()
                                         else float(np.mean(np.minimum(k, ranked) / ranked)))
        pos = s[np.arange(len(s)), pos_col]
        mask = ~excluded[has]
        mask[np.arange(len(s)), pos_col] = False
        neg = s[mask]
        out["pos_score"] = float(pos.mean())
        if neg.size:  # a gallery of one tile has no negative pair (NaN is not JSON)
            out["neg_score"] = float(neg.mean())
            out["separation"] = float((pos.mean() - neg.mean()) / np.sqrt(0.5 * (pos.var() + neg.var()) + 1e-12))
    out.update(class_map(scores, q_labels, g_labels, map_k, seed, excluded=excluded))
    return out


def class_map(scores: np.ndarray, q_labels: np.ndarray | dict[str, np.ndarray],
              g_labels: np.ndarray | dict[str, np.ndarray], k: int = 10, seed: int = 0,
              excluded: np.ndarray | None = None) -> dict:
    """Class mAP@k and its chance level over (Nq, Ng) ``scores``, one label scheme at a time (see module doc).

    ``excluded`` (Nq, Ng) marks gallery tiles left out of a query's ranking (scored ``-inf``): never relevant, and
    ranked last by the chance level's random scores too.

    Returns:
        ``{}`` when no scheme has both a labelled query and a labelled gallery tile; else ``mAP@k``,
        ``chance_mAP@k``, ``labelled_queries`` (query-scheme rankings), and with dict labels ``mAP@k_by_scheme``:
        scheme -> {mAP@k, chance_mAP@k, labelled_queries, labelled_gallery}.
    """
    by_dict = isinstance(q_labels, dict)
    if not by_dict:
        q_labels, g_labels = {"": np.asarray(q_labels)}, {"": np.asarray(g_labels)}
    if set(q_labels) != set(g_labels):
        raise ValueError(f"query and gallery label schemes differ: {sorted(q_labels)} vs {sorted(g_labels)}")
    aps, chances, per = [], [], {}
    for scheme in sorted(q_labels):
        ql, gl = np.asarray(q_labels[scheme]), np.asarray(g_labels[scheme])
        lq, lg = ql >= 0, gl >= 0
        if not (lq.any() and lg.any()):
            continue
        relevant = ql[lq][:, None] == gl[lg][None, :]
        rnd = np.random.default_rng(seed).random(relevant.shape)
        if excluded is not None:
            out_of_it = excluded[np.ix_(lq, lg)]
            relevant &= ~out_of_it
            rnd[out_of_it] = -np.inf
        ap = average_precision_at_k(scores[np.ix_(lq, lg)], relevant, k)
        ch = average_precision_at_k(rnd, relevant, k)
        aps.append(ap)
        chances.append(ch)
        per[scheme] = {f"mAP@{k}": float(ap.mean()), f"chance_mAP@{k}": float(ch.mean()),
                       "labelled_queries": int(lq.sum()), "labelled_gallery": int(lg.sum())}
    if not aps:
        return {}
    out: dict = {f"mAP@{k}": float(np.concatenate(aps).mean()),
                 f"chance_mAP@{k}": float(np.concatenate(chances).mean()),
                 "labelled_queries": int(sum(len(a) for a in aps))}
    if by_dict:
        out[f"mAP@{k}_by_scheme"] = per
    return out
