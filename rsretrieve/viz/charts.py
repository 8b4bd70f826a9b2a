"""Charts of an evaluation and of an embedding space, as PNG files.

* :func:`recall_chart`: recall@1 and recall@10 per ordered sensor pair, one colour per model (the trained models,
  the untrained model and the band-statistics baseline of ``rsretrieve evaluate``), chance level marked;
* :func:`embedding_projection`: a 2-D PCA of embedding vectors, coloured by sensor and by land-cover class.

Figures are drawn on matplotlib ``Figure`` objects (Agg), never through pyplot's global state.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from rsretrieve.files import write_file_atomic

log = logging.getLogger(__name__)

#: colour of a model by its ``kind`` (or name, for the baselines); other models take the next free colour
MODEL_COLOURS = {"ours": "#1f77b4", "dual_encoder": "#ff7f0e", "untrained": "#9e9e9e", "band_stats": "#2ca02c"}
_SPARE = ("#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
_UNKNOWN = "#d0d0d0"


def save_png(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Write ``fig`` as a PNG at ``path`` through a temporary file renamed into place (never a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file_atomic(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
    log.info("wrote %s", path)
    return path


def _model_colours(models: dict[str, Any]) -> dict[str, str]:
    out, spare = {}, iter(_SPARE * 4)
    for name, m in models.items():
        base = name.partition("@")[0]  # untrained@SPLIT, band_stats@SPLIT: an added sensor's baselines
        key = base if base in ("untrained", "band_stats") else str(m.get("kind", name))
        out[name] = MODEL_COLOURS.get(key) or next(spare)
    return out


def recall_chart(report: dict[str, Any], path: str | Path) -> Path:
    """Grouped bars of recall@1 (top panel) and recall@10 (bottom panel) per ordered sensor pair.

    Args:
        report: the JSON report of ``rsretrieve evaluate`` (``report["models"][name]["pairs"]["a->b"]`` with
            ``recall@1``, ``recall@10``, ``chance_recall@1``, ``chance_recall@10``, ``queries``).
        path: the PNG to write.

    Returns:
        ``path``. A pair a model has no numbers for gets no bar; the chance level is a black line over each group.

    Raises:
        ValueError: the report holds no model with any pair.
    """
    models = {n: m for n, m in report.get("models", {}).items() if m.get("pairs")}
    if not models:
        raise ValueError("the report holds no model with results for any sensor pair")
    pairs = list(dict.fromkeys(p for m in models.values() for p in m["pairs"]))
    colours = _model_colours(models)
    width = 0.8 / len(models)
    x = np.arange(len(pairs))
    fig = Figure(figsize=(max(7.0, 1.35 * len(pairs) + 2.5), 7.2), layout="constrained")
    axes = fig.subplots(2, 1, sharex=True)
    for ax, k in zip(axes, (1, 10)):
        for i, (name, m) in enumerate(models.items()):
            vals = np.array([m["pairs"].get(p, {}).get(f"recall@{k}", np.nan) for p in pairs], float)
            kind = m.get("kind", "")
            label = name if not kind or kind == name else f"{name}: {kind}"
            bars = ax.bar(x - 0.4 + (i + 0.5) * width, vals, width * 0.92, color=colours[name], label=label)
            ax.bar_label(bars, labels=[f"{v:.2f}" if np.isfinite(v) else "" for v in vals], fontsize=6, padding=1)
        for j, p in enumerate(pairs):
            chance = [m["pairs"][p][f"chance_recall@{k}"] for m in models.values()
                      if f"chance_recall@{k}" in m["pairs"].get(p, {})]
            if chance:
                ax.hlines(max(chance), j - 0.45, j + 0.45, colors="black", linestyles="--", linewidth=1.2,
                          label="chance" if j == 0 else None)
        ax.set_ylim(0, 1.08)
        ax.set_ylabel(f"recall@{k}")
        ax.set_title(f"recall@{k}: the archive tile of the same ground cell ranks in the top {k}", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    # under the panels, not inside them: at the top of a panel it would hide the bars of a recall near 1
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, ncols=min(len(models) + 1, 3), loc="outside lower center")
    queries = [max((m["pairs"].get(p, {}).get("queries", 0) for m in models.values()), default=0) for p in pairs]
    axes[1].set_xticks(x, [f"{p.replace('->', ' → ')}\n({q} queries)" for p, q in zip(pairs, queries)],
                       fontsize=8)
    axes[1].set_xlabel("query sensor → archive sensor")
    fig.suptitle("Cross-sensor retrieval on the held-out split", fontsize=12)
    return save_png(fig, path)


def subsample(n: int, max_points: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``max_points`` of ``n`` items, the same for the same arguments."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))


def pca_2d(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first two principal components by SVD of the centred vectors.

    Args:
        vectors: (N, E) float.

    Returns:
        ``(coords (N, 2), explained (2,))``: the projections, and the fraction of the total variance on each axis.
        Each axis's sign makes its largest-magnitude loading positive, so results do not flip between runs.
    """
    x = np.asarray(vectors, np.float64)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 2:
        raise ValueError(f"vectors must be (N, E) with N >= 2 and E >= 2, got shape {x.shape}")
    xc = x - x.mean(0)  # (N, E)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)  # vt (min(N, E), E)
    comps = vt[:2]  # (2, E)
    comps *= np.sign(comps[np.arange(2), np.abs(comps).argmax(1)])[:, None]
    var = s ** 2
    return xc @ comps.T, var[:2] / max(var.sum(), 1e-300)


def embedding_projection(vectors: np.ndarray, sensors: Sequence[str] | np.ndarray, labels: np.ndarray,
                         label_names: Sequence[str], path: str | Path, max_points: int = 5000,
                         seed: int = 0) -> Path:
    """Two panels of the same 2-D PCA: points coloured by sensor, and by land-cover class.

    Args:
        vectors: (N, E) embeddings.
        sensors: (N,) sensor name of each vector.
        labels: (N,) int class index into ``label_names``, -1 where unknown (drawn grey, underneath).
        label_names: class names.
        path: the PNG to write.
        max_points: at most this many points are projected and drawn (a seeded, deterministic subsample).
        seed: seed of the subsample.

    Returns:
        ``path``.
    """
    vectors = np.asarray(vectors)
    sensors, labels = np.asarray(sensors).astype(str), np.asarray(labels).astype(int)
    if not (len(vectors) == len(sensors) == len(labels)):
        raise ValueError(f"vectors, sensors and labels must have one row each per point, got {len(vectors)}, "
                         f"{len(sensors)}, {len(labels)}")
    if labels.max(initial=-1) >= len(label_names):
        raise ValueError(f"label {labels.max()} has no name ({len(label_names)} label_names)")
    keep = subsample(len(vectors), max_points, seed)
    xy, explained = pca_2d(vectors[keep])
    sensors, labels = sensors[keep], labels[keep]
    fig = Figure(figsize=(13, 6), layout="constrained")
    a_sensor, a_class = fig.subplots(1, 2, sharex=True, sharey=True)
    size = float(np.clip(3000 / len(keep), 2, 30))
    for i, name in enumerate(sorted(set(sensors))):
        m = sensors == name
        a_sensor.scatter(xy[m, 0], xy[m, 1], s=size, color=f"C{i}", alpha=0.7, linewidths=0,
                         label=f"{name} ({m.sum()})")
    unknown = labels < 0
    if unknown.any():
        a_class.scatter(xy[unknown, 0], xy[unknown, 1], s=size, color=_UNKNOWN, alpha=0.6, linewidths=0,
                        label=f"unknown ({unknown.sum()})")
    cmap = matplotlib.colormaps["tab10" if len(label_names) <= 10 else "tab20"]
    for c in sorted(set(labels[~unknown].tolist())):
        m = labels == c
        a_class.scatter(xy[m, 0], xy[m, 1], s=size, color=cmap(c % cmap.N), alpha=0.75, linewidths=0,
                        label=f"{label_names[c]} ({m.sum()})")
    for ax, what in ((a_sensor, "sensor"), (a_class, "land-cover class")):
        ax.set_title(f"coloured by {what}", fontsize=10)
        ax.set_xlabel(f"PC1 ({100 * explained[0]:.0f} % of variance)")
        ax.legend(fontsize=8, markerscale=max(1.0, 12 / size), loc="best", framealpha=0.8)
        ax.grid(alpha=0.25)
    a_sensor.set_ylabel(f"PC2 ({100 * explained[1]:.0f} % of variance)")
    shown = f"{len(keep)} of {len(vectors)}" if len(keep) < len(vectors) else f"{len(keep)}"
    fig.suptitle(f"Embedding space, PCA to 2-D ({shown} tiles)", fontsize=12)
    return save_png(fig, path)
