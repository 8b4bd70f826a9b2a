"""``rsretrieve evaluate``: every trained model of a workspace, the untrained model and a hand-made baseline, on
the held-out spatial blocks, for every ordered pair of sensors; as a table and as JSON.

The split is the one the models were trained with (read from ``WS/checkpoints/NAME/config.yaml``), so test tiles
never border a training tile. The hand-made baseline describes a tile by the mean and standard deviation of each of
its normalised bands; across sensors it maps the query sensor's description to the archive sensor's with a ridge
regression fitted on training cells (no other learning).
"""

from __future__ import annotations

import logging
from itertools import permutations
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from rsretrieve.data.catalog import Catalog
from rsretrieve.data.datamodule import CellDataModule
from rsretrieve.data.datasets import CellIndex, TileCache
from rsretrieve.evaluation.metrics import pair_metrics
from rsretrieve.model.checkpoint import build_model, load_model

log = logging.getLogger(__name__)


def trained_models(workspace: Path) -> dict[str, Path]:
    """name -> model.pt of every trained model in ``WS/checkpoints``."""
    return {p.parent.name: p for p in sorted((workspace / "checkpoints").glob("*/model.pt"))}


def data_config(workspace: Path, name: str) -> dict[str, Any]:
    """The ``data`` section a model was trained with."""
    cfg = yaml.safe_load((workspace / "checkpoints" / name / "config.yaml").read_text())
    return {k: v for k, v in cfg["data"].items() if k not in ("workspace", "num_workers")}


@torch.no_grad()
def embed_index(model: torch.nn.Module, index: CellIndex, cache: TileCache, batch: int = 256) -> dict[str, tuple]:
    """sensor -> (vectors (N, E) float32, rows (N,) into the index) for the sensors ``model`` knows."""
    model.eval()
    out = {}
    for s, ids in index.tile_ids.items():
        if s not in model.sensors:
            continue
        rows = np.flatnonzero(ids >= 0)
        vecs = []
        for i in range(0, len(rows), batch):
            x = np.stack([cache.get(s, ids[r]) for r in rows[i:i + batch]]).astype(np.float32)
            vecs.append(model.embed(s, torch.from_numpy(x)).numpy())
        out[s] = (np.concatenate(vecs) if vecs else np.zeros((0, model.embed_dim), np.float32), rows)
    return out


def _band_stats(index: CellIndex, cache: TileCache, sensor: str) -> tuple[np.ndarray, np.ndarray]:
    ids = index.tile_ids[sensor]
    rows = np.flatnonzero(ids >= 0)
    feats = np.array([np.concatenate([a.mean((1, 2)), a.std((1, 2))])
                      for a in (cache.get(sensor, ids[r]).astype(np.float32) for r in rows)]).reshape(len(rows), -1)
    return feats, rows


def handmade_embeddings(train: CellIndex, test: CellIndex, cache: TileCache, sensors: list[str],
                        ridge: float = 1.0) -> dict[tuple[str, str], tuple]:
    """(query sensor, archive sensor) -> (query vectors, query rows, gallery vectors, gallery rows), unit length."""
    tr = {s: _band_stats(train, cache, s) for s in sensors}
    te = {s: _band_stats(test, cache, s) for s in sensors}
    out = {}
    for a, b in permutations(sensors, 2):
        (fa, ra), (fb, rb) = tr[a], tr[b]
        common = np.intersect1d(ra, rb)
        xa = fa[np.searchsorted(ra, common)]
        xb = fb[np.searchsorted(rb, common)]
        mu_a, sd_a = xa.mean(0), xa.std(0) + 1e-6
        mu_b, sd_b = xb.mean(0), xb.std(0) + 1e-6
        za, zb = (xa - mu_a) / sd_a, (xb - mu_b) / sd_b
        w = np.linalg.solve(za.T @ za + ridge * np.eye(za.shape[1]), za.T @ zb)  # (Fa, Fb)
        q = ((te[a][0] - mu_a) / sd_a) @ w
        g = (te[b][0] - mu_b) / sd_b
        q /= np.linalg.norm(q, axis=1, keepdims=True) + 1e-12
        g /= np.linalg.norm(g, axis=1, keepdims=True) + 1e-12
        out[(a, b)] = (q, te[a][1], g, te[b][1])
    return out


def _pairs_from_embeddings(emb: dict[str, tuple], index: CellIndex, sensors: list[str]) -> dict[str, dict]:
    res = {}
    for a, b in permutations(sensors, 2):
        if a in emb and b in emb:
            (qa, ra), (gb, rb) = emb[a], emb[b]
            res[f"{a}->{b}"] = pair_metrics(qa, ra, index.class_labels(ra), gb, rb, index.class_labels(rb))
    return res


def evaluate_workspace(workspace: str | Path, names: list[str] | None = None, max_train_cells: int = 4000,
                       seed: int = 0) -> dict[str, Any]:
    """Evaluate the workspace's models on its held-out split; returns a JSON-able report."""
    ws = Path(workspace)
    models = trained_models(ws)
    if names:
        missing = [n for n in names if n not in models]
        if missing:
            raise ValueError(f"no trained model named {', '.join(missing)} in {ws / 'checkpoints'} "
                             f"(have: {', '.join(models) or 'none'})")
        models = {n: models[n] for n in names}
    if not models:
        raise ValueError(f"{ws}: no trained model in checkpoints/*/model.pt; run `rsretrieve train` first")
    ref = "default" if "default" in models else next(iter(models))
    dcfg = data_config(ws, ref)
    dcfg["max_train_cells"] = max_train_cells
    dm = CellDataModule(str(ws), **dcfg)
    sensors = dm.sensors
    with Catalog(ws / "catalog.sqlite") as catalog:
        index = dm.split_index(catalog)
        wanted = {s: np.concatenate([index[k].tile_ids[s] for k in ("train", "test")]) for s in sensors}
        cache = TileCache(catalog, wanted, catalog.tile_m)
    test = index["test"]
    report: dict[str, Any] = {"workspace": str(ws), "split": {**dcfg, "reference_model": ref},
                              "cells": dict(dm.split_sizes),
                              "band_stats_train_cells": len(index["train"].cells),
                              "tiles": {s: int((test.tile_ids[s] >= 0).sum()) for s in sensors},
                              "labelled_test_cells": {k: int((v >= 0).sum()) for k, v in test.scheme_labels.items()},
                              "models": {}}
    for name, path in models.items():
        model = load_model(path)
        report["models"][name] = {"kind": model.config()["kind"],
                                  "pairs": _pairs_from_embeddings(embed_index(model, test, cache), test, sensors)}
    first = load_model(models[ref])
    torch.manual_seed(seed)
    untrained = build_model(first.config())
    report["models"]["untrained"] = {"kind": first.config()["kind"] + " (random init)",
                                     "pairs": _pairs_from_embeddings(embed_index(untrained, test, cache), test,
                                                                     sensors)}
    hand = handmade_embeddings(index["train"], test, cache, sensors)
    report["models"]["band_stats"] = {"kind": "per-band mean/std + ridge map", "pairs": {
        f"{a}->{b}": pair_metrics(q, rq, test.class_labels(rq), g, rg, test.class_labels(rg))
        for (a, b), (q, rq, g, rg) in hand.items()}}
    for m in report["models"].values():
        pos = [p["pos_score"] for p in m["pairs"].values() if "pos_score" in p]
        m["calibration"] = {"pos_score_spread_across_pairs": float(np.std(pos)) if pos else None}
    return report


def format_report(report: dict[str, Any]) -> str:
    """The evaluation as a plain-text table."""
    lines = [f"held-out test split: {report['cells']['test']} cells ({report['cells']['train']} train, "
             f"{report['cells']['val']} val); test tiles: "
             + ", ".join(f"{s} {n}" for s, n in report["tiles"].items())]
    if report.get("labelled_test_cells"):
        lines.append("labelled test cells (class mAP compares labels within a scheme only): "
                     + ", ".join(f"{k} {n}" for k, n in report["labelled_test_cells"].items()))
    head = (f"{'model':<12} {'pair':<28} {'queries':>7} {'gallery':>7} {'R@1':>6} {'R@5':>6} {'R@10':>6} "
            f"{'mAP@10':>7} {'chance R@1':>10} {'chance mAP':>10} {'sep':>6}")
    lines += [head, "-" * len(head)]
    for name, m in report["models"].items():
        for pair, p in m["pairs"].items():
            lines.append(
                f"{name:<12} {pair:<28} {p['queries']:>7} {p['gallery']:>7} {p.get('recall@1', 0):>6.3f} "
                f"{p.get('recall@5', 0):>6.3f} {p.get('recall@10', 0):>6.3f} {p.get('mAP@10', float('nan')):>7.3f} "
                f"{p.get('chance_recall@1', 0):>10.4f} {p.get('chance_mAP@10', float('nan')):>10.3f} "
                f"{p.get('separation', 0):>6.2f}")
        spread = m["calibration"]["pos_score_spread_across_pairs"]
        if spread is not None:
            lines.append(f"{'':<12} calibration: std of the mean positive score across pairs = {spread:.3f}")
    return "\n".join(lines)
