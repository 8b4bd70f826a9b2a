"""``rsretrieve evaluate``: every trained model of a workspace, the untrained model and a hand-made baseline, on
the held-out spatial blocks, for every ordered pair of sensors; as a table and as JSON.

Each model is tested on the split it was trained with (read from its ``WS/checkpoints/NAME/config.yaml``; models
with the same split settings share one), on every ordered pair of its sensors, so its test tiles never border one
of its training tiles. The untrained model and the hand-made baseline are tested on the reference split, that of
``default`` (or of the first model). The hand-made baseline describes a tile by the mean and standard deviation of
each of its normalised bands; across sensors it maps the query sensor's description to the archive sensor's with a
ridge regression fitted on training cells (no other learning).

A pair that a model reports and the reference split's baselines lack (a sensor the reference model does not have,
e.g. one added with ``configs/add_sensor.yaml``) gets its baseline rows on the split of the first model reporting
it, as the entries ``untrained@SPLIT`` and ``band_stats@SPLIT``, so every pair of the table has both baselines on
the test tiles of a model it is compared with.

The untrained baseline of a pair is the model that reports it before any training of its own:

* a model trained from scratch: its architecture at a seeded random initialisation;
* a pair with a sensor added to a trained model (``model.pretrained`` in its ``config.yaml``): that model as its
  training started, i.e. the pretrained head, metric and branches (frozen, so bit-identical to the trained model's)
  and the added branch at its initialisation, a copy of the first pretrained branch of its family (random where the
  model has none), as ``CrossSensorEncoder.add_sensor`` starts it. That is the bar the add-sensor training has to
  beat; a random head and metric would only show that the pretrained ones beat random, which the pretrained
  model's own rows show already. When the pretrained model can no longer be read (its sensors tell which branches
  were added), those pairs fall back to the random initialisation, with a warning.
"""

from __future__ import annotations

import logging
import pickle
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
from rsretrieve.model.checkpoint import build_model, load_model, model_state
from rsretrieve.model.encoder import CrossSensorEncoder
from rsretrieve.sensors import get_sensor
from rsretrieve.workspace import Workspace

log = logging.getLogger(__name__)


#: the data settings that decide which cells are test cells (the rest, e.g. batch_size, only shape training)
SPLIT_KEYS = ("sensors", "block", "split_seed", "fractions", "min_valid", "min_sensors")


def data_config(workspace: Path, name: str) -> dict[str, Any]:
    """The ``data`` section a model was trained with.

    Raises:
        ValueError: ``WS/checkpoints/NAME/config.yaml`` is missing or has no ``data`` section.
    """
    path = workspace / "checkpoints" / name / "config.yaml"
    if not path.is_file():
        raise ValueError(f"{path}: no such file; evaluate reads the data split a model was trained with from the "
                         "config.yaml that `rsretrieve train` writes beside model.pt")
    try:
        cfg = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    except UnicodeDecodeError as e:  # the codec's words alone did not name the file
        raise ValueError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); not the config.yaml that "
                         "`rsretrieve train` writes") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("data"), dict):
        raise ValueError(f"{path}: no 'data' section; it is not the config of an `rsretrieve train` run")
    return {k: v for k, v in cfg["data"].items() if k not in ("workspace", "num_workers")}


def _split_key(dm: CellDataModule) -> tuple:
    """What makes two data modules' test splits the same: the sensor set and the split settings."""
    hp = dm.hparams
    return (tuple(sorted(dm.sensors)), int(hp["block"]), int(hp["split_seed"]),
            tuple(float(f) for f in hp["fractions"]), float(hp["min_valid"]), int(hp["min_sensors"]))


def _split_settings(dm: CellDataModule) -> dict[str, Any]:
    return {k: (list(dm.sensors) if k == "sensors" else list(dm.hparams[k]) if k == "fractions" else dm.hparams[k])
            for k in SPLIT_KEYS}


@torch.no_grad()
def embed_index(model: torch.nn.Module, index: CellIndex, cache: TileCache, batch: int = 256,
                sensors: set[str] | None = None) -> dict[str, tuple]:
    """sensor -> (vectors (N, E) float32, rows (N,) into the index) for the sensors ``model`` knows (of ``sensors``
    only, when given)."""
    model.eval()
    out = {}
    for s, ids in index.tile_ids.items():
        if s not in model.sensors or (sensors is not None and s not in sensors):
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
    feats = np.zeros((len(rows), 2 * get_sensor(sensor).num_bands), np.float32)  # (N, 2C): means, then stds
    for i, r in enumerate(rows):
        a = cache.get(sensor, ids[r]).astype(np.float32)
        feats[i] = np.concatenate([a.mean((1, 2)), a.std((1, 2))])
    return feats, rows


def handmade_embeddings(train: CellIndex, test: CellIndex, cache: TileCache, sensors: list[str],
                        ridge: float = 1.0, pairs: list[tuple[str, str]] | None = None) -> dict[tuple[str, str], tuple]:
    """(query sensor, archive sensor) -> (query vectors, query rows, gallery vectors, gallery rows), unit length;
    for every ordered pair of ``sensors``, or for ``pairs`` only."""
    pairs = list(permutations(sensors, 2)) if pairs is None else pairs
    used = list(dict.fromkeys(s for p in pairs for s in p))
    tr = {s: _band_stats(train, cache, s) for s in used}
    te = {s: _band_stats(test, cache, s) for s in used}
    out = {}
    for a, b in pairs:
        (fa, ra), (fb, rb) = tr[a], tr[b]
        common = np.intersect1d(ra, rb)
        if not len(common) or not len(te[a][1]) or not len(te[b][1]):
            continue  # no training cell to fit the map on, or nothing to test
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


def _pairs_from_embeddings(emb: dict[str, tuple], index: CellIndex, sensors: list[str] | None = None,
                           pairs: list[tuple[str, str]] | None = None) -> dict[str, dict]:
    """Metrics of every ordered pair of ``sensors`` (or of ``pairs``) that ``emb`` holds both sensors of."""
    res = {}
    for a, b in (pairs if pairs is not None else permutations(sensors, 2)):
        if a in emb and b in emb:
            (qa, ra), (gb, rb) = emb[a], emb[b]
            res[f"{a}->{b}"] = pair_metrics(qa, ra, index.class_labels(ra), gb, rb, index.class_labels(rb),
                                            same_ground=index.same_ground())
    return res


def evaluate_workspace(workspace: str | Path, names: list[str] | None = None, max_train_cells: int = 4000,
                       seed: int = 0) -> dict[str, Any]:
    """Evaluate the workspace's models on held-out splits; returns a JSON-able report.

    Each model is tested on the split its own ``config.yaml`` gives (models with the same split settings share
    one), on every ordered pair of its sensors that have test tiles there. The reference split, that of
    ``default`` (or of the first model), is the one of the top-level ``split`` / ``cells`` / ``tiles`` entries
    and the one the untrained model and the band-statistics baseline are tested on. ``splits`` describes every
    split used, keyed by the first model that uses it; each model's ``split`` names its own.

    Raises:
        ValueError: an unknown model name, no trained model, a missing or invalid ``config.yaml``, an empty test
            split.
    """
    ws = Path(workspace)
    models = Workspace(ws).trained_models()
    if names:
        missing = [n for n in names if n not in models]
        if missing:
            raise ValueError(f"no trained model named {', '.join(missing)} in {ws / 'checkpoints'} "
                             f"(have: {', '.join(models) or 'none'})")
        models = {n: models[n] for n in names}
    if not models:
        raise ValueError(f"{ws}: no trained model in checkpoints/*/model.pt; run `rsretrieve train` first")
    ref = "default" if "default" in models else next(iter(models))
    order = [ref, *(n for n in models if n != ref)]
    modules: dict[str, CellDataModule] = {}
    for name in order:
        dcfg = data_config(ws, name)
        dcfg["max_train_cells"] = max_train_cells
        try:
            modules[name] = CellDataModule(str(ws), **dcfg)
        except (TypeError, ValueError) as e:  # an unknown, missing or invalid data option in the file
            raise ValueError(f"{ws / 'checkpoints' / name / 'config.yaml'}: bad data section ({e})") from None
    split_of: dict[str, str] = {}  # model -> name of its split (the first model with the same settings)
    firsts: dict[tuple, str] = {}
    for name in order:
        split_of[name] = firsts.setdefault(_split_key(modules[name]), name)
    splits = list(dict.fromkeys(split_of.values()))  # the reference split first
    with Catalog(ws / "catalog.sqlite") as catalog:
        index = {sp: modules[sp].split_index(catalog) for sp in splits}
        for sp in splits:
            _check_test_split(ws, sp, ref, modules[sp])
            _check_pairs(ws, sp, ref, modules[sp].sensors, _test_tiles(index[sp]["test"], modules[sp].sensors))
        base_pairs = _baseline_pairs(splits, {sp: modules[sp].sensors for sp in splits},
                                     {sp: _test_tiles(index[sp]["test"], modules[sp].sensors) for sp in splits})
        wanted: dict[str, list[np.ndarray]] = {}
        for sp in splits:  # one cache for every split: train tiles only where band_stats fits its maps
            fitted = {s for p in base_pairs[sp] for s in p}
            for s in modules[sp].sensors:
                wanted.setdefault(s, []).extend(index[sp][k].tile_ids[s] for k in (("train", "test") if s in fitted
                                                                                   else ("test",)))
        cache = TileCache(catalog, {s: np.concatenate(v) for s, v in wanted.items()}, catalog.tile_m)
    test = index[ref]["test"]
    report: dict[str, Any] = {"workspace": str(ws),
                              "split": {**data_config(ws, ref), "max_train_cells": max_train_cells,
                                        "reference_model": ref},
                              "cells": dict(modules[ref].split_sizes),
                              "band_stats_train_cells": len(index[ref]["train"].cells),
                              "tiles": _test_tiles(test, modules[ref].sensors),
                              "labelled_test_cells": {k: int((v >= 0).sum()) for k, v in test.scheme_labels.items()},
                              "splits": {sp: {"settings": _split_settings(modules[sp]),
                                              "cells": dict(modules[sp].split_sizes),
                                              "tiles": _test_tiles(index[sp]["test"], modules[sp].sensors),
                                              "models": [n for n in order if split_of[n] == sp]}
                                         for sp in splits},
                              "models": {}}
    loaded = {}
    for name, path in models.items():
        model = loaded[name] = _load(path)
        sp = split_of[name]
        here = index[sp]["test"]
        have = [s for s in modules[sp].sensors if s in model.sensors and report["splits"][sp]["tiles"][s] > 0]
        report["models"][name] = {"kind": model.config()["kind"], "split": sp, "sensors": have,
                                  "pairs": _pairs_from_embeddings(embed_index(model, here, cache), here, have)}
    for sp in splits:  # the reference split's baselines, then those of the pairs that they lack
        if not base_pairs[sp]:
            continue
        here, suffix = index[sp]["test"], "" if sp == ref else f"@{sp}"
        owners = [n for n in order if split_of[n] == sp]  # on the reference split, the reference model first
        report["models"]["untrained" + suffix] = {
            "split": sp, **_untrained_entry(ws, owners, loaded, base_pairs[sp], here, cache, seed)}
        hand = handmade_embeddings(index[sp]["train"], here, cache, list(dict.fromkeys(sum(base_pairs[sp], ()))),
                                   pairs=base_pairs[sp])
        report["models"]["band_stats" + suffix] = {"kind": "per-band mean/std + ridge map", "split": sp, "pairs": {
            f"{a}->{b}": pair_metrics(q, rq, here.class_labels(rq), g, rg, here.class_labels(rg),
                                      same_ground=here.same_ground())
            for (a, b), (q, rq, g, rg) in hand.items()}}
    for m in report["models"].values():
        m["calibration"] = {"pos_score_spread_across_pairs": _positive_spread(m["pairs"])}
    return report


def _baseline_pairs(splits: list[str], sensors: dict[str, list[str]],
                    tiles: dict[str, dict[str, int]]) -> dict[str, list[tuple[str, str]]]:
    """split -> the ordered sensor pairs its baselines are measured on: on the reference split (the first) every
    pair of its sensors with test tiles, on each other split those of its pairs that no split before it measures
    (a sensor the reference model lacks, e.g. one added with configs/add_sensor.yaml), so that every pair a model
    reports has baseline rows, on the test tiles of a model it is compared with."""
    out, done = {}, set()
    for sp in splits:
        have = [s for s in sensors[sp] if tiles[sp][s]]
        out[sp] = [p for p in permutations(have, 2) if p not in done]
        done.update(out[sp])
    return out


def added_sensors(workspace: Path, name: str, model: torch.nn.Module) -> list[str]:
    """The sensors that model ``name`` added to the model it extends (``model.pretrained`` in its ``config.yaml``,
    ``configs/add_sensor.yaml``), in the order it added them.

    Returns:
        ``[]`` for a model trained from scratch; also, with a warning, when the pretrained model cannot be read any
        more (then nothing tells which branches were added) or does not fit (its sensors are not all the model's).
    """
    path = workspace / "checkpoints" / name / "config.yaml"
    try:
        cfg = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return []
    raw = ((cfg or {}).get("model") or {}).get("pretrained") if isinstance(cfg, dict) else None
    if not raw or not isinstance(model, CrossSensorEncoder):
        return []
    given = Path(str(raw))
    # the path as it was given, else the same checkpoints/NAME/FILE in this workspace (a moved or copied workspace,
    # or a path relative to where the training ran)
    candidates = [given]
    if len(given.parts) >= 3 and given.parts[-3] == "checkpoints":
        candidates.append(workspace / "checkpoints" / given.parts[-2] / given.name)
    base = None
    for c in candidates:
        if c.is_file():
            try:
                base = list(model_state(torch.load(c, map_location="cpu", weights_only=True))[0]["sensors"])
                break
            except (OSError, ValueError, pickle.UnpicklingError, RuntimeError, EOFError, KeyError, IndexError,
                    TypeError, AttributeError):
                log.debug("reading %s failed", c, exc_info=True)
    if base is None or not set(base) <= set(model.sensors):
        why = "cannot be read" if base is None else f"has sensors {', '.join(base)}, not all of the model's"
        log.warning("untrained baseline of model %s: its pretrained model %s (model.pretrained in %s) %s, so the "
                    "branches it added are not known; its pairs are measured at a random initialisation",
                    name, raw, path, why)
        return []
    return [s for s in model.sensors if s not in base]


def at_initialisation(model: CrossSensorEncoder, added: list[str], seed: int = 0) -> CrossSensorEncoder:
    """``model`` as the run that added the branches of ``added`` to a pretrained model started.

    The head, the metric and the other branches are the model's own (that run froze them, so they are the
    pretrained ones, bit for bit); each added branch is initialised by ``add_sensor`` in the same order as
    ``CrossSensorTask.configure_models`` did: a copy of the first other branch of its family, or a random
    initialisation seeded with ``seed`` where there is none.
    """
    cfg = model.config()
    kept = [s for s in model.sensors if s not in added]
    start = build_model({**cfg, "sensors": kept, "specs": {s: cfg["specs"][s] for s in kept}})
    own = tuple(f"branches.{s}." for s in added)
    start.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith(own)})
    torch.manual_seed(seed)
    for s in added:
        start.add_sensor(s)
    return start.eval()


def _untrained_entry(ws: Path, owners: list[str], models: dict[str, torch.nn.Module], pairs: list[tuple[str, str]],
                     here: CellIndex, cache: TileCache, seed: int) -> dict[str, Any]:
    """``kind`` and ``pairs`` of the untrained baseline of ``pairs`` on the test split ``here``.

    Each pair is measured with the first of ``owners`` (the models tested on that split) that has both sensors, as
    the module doc says: at a random initialisation, or for a pair with a sensor that model added to a pretrained
    one, with :func:`at_initialisation`. ``at_initialisation`` in the result names those: model -> added sensors.
    """
    rows: dict[tuple[str, str], dict] = {}
    kinds, at_init = [], {}
    for name in owners:
        model = models[name]
        mine = [p for p in pairs if p not in rows and set(p) <= set(model.sensors)]
        if not mine:
            continue
        kinds.append(model.config()["kind"])
        added = added_sensors(ws, name, model)
        grown = [p for p in mine if set(p) & set(added)]
        torch.manual_seed(seed)  # the same random model for the same seed, run after run
        plain = [p for p in mine if p not in grown]
        nets = [(build_model(model.config()), plain)] if plain else []
        if grown:
            nets.append((at_initialisation(model, added, seed), grown))
            at_init[name] = [s for s in added if any(s in p for p in grown)]
        for net, todo in nets:
            emb = embed_index(net, here, cache, sensors={s for p in todo for s in p})
            for key, metrics in _pairs_from_embeddings(emb, here, pairs=todo).items():
                rows[tuple(key.split("->"))] = metrics
    kind = f"{kinds[0] if kinds else 'ours'} (random init"
    for name, added in at_init.items():
        kind += f"; pairs of {', '.join(added)}: {name} with {'that branch' if len(added) == 1 else 'those branches'}"
        kind += " at initialisation"
    out = {"kind": kind + ")", "pairs": {f"{a}->{b}": rows[(a, b)] for a, b in pairs if (a, b) in rows}}
    if at_init:
        out["at_initialisation"] = at_init
    return out


def _positive_spread(pairs: dict[str, dict]) -> float | None:
    """Std across sensor pairs of the mean positive score, each unordered pair counted once (A->B and B->A score
    the same positive pairs); None below two unordered pairs, where there is nothing to compare (with two sensors
    the std of the two directions was always 0)."""
    by_pair: dict[frozenset, list[float]] = {}
    for name, p in pairs.items():
        if "pos_score" in p:
            by_pair.setdefault(frozenset(name.split("->")), []).append(p["pos_score"])
    means = [float(np.mean(v)) for v in by_pair.values()]
    return float(np.std(means)) if len(means) >= 2 else None


def _load(path: Path) -> torch.nn.Module:
    """``load_model``; a damaged file (not a checkpoint, truncated) is a ValueError naming it, an unreadable one an
    OSError."""
    return load_model(path)


def _test_tiles(test: CellIndex, sensors: list[str]) -> dict[str, int]:
    return {s: int((test.tile_ids[s] >= 0).sum()) for s in sensors}


def _check_test_split(ws: Path, split: str, ref: str, module: CellDataModule) -> None:
    """ValueError when the held-out test split of model ``split``'s settings (``module``'s) has no cell."""
    sizes = module.split_sizes
    if not sizes["test"]:
        whose = "" if split == ref else f" (the split of model {split}'s config.yaml)"
        if not (sizes["train"] or sizes["val"] or sizes["buffer"]) and sizes["too_few_sensors"]:
            # no cell to split: each was seen by fewer sensors than a pair needs (a catalog of one sensor)
            n, low = sizes["too_few_sensors"], module.hparams["min_sensors"]
            raise ValueError(f"the held-out test split of {ws}{whose} has 0 cells: none of the {n} cells with "
                             f"tiles of {', '.join(module.sensors)} was seen by {low} or more of them "
                             f"(data.min_sensors {low}); ingest scenes of another of these sensors over the same "
                             "ground")
        raise ValueError(f"the held-out test split of {ws}{whose} has 0 cells (train {sizes['train']}, val "
                         f"{sizes['val']}); ingest more ground or train with a smaller data.block")


def _check_pairs(ws: Path, split: str, ref: str, sensors: list[str], tiles: dict[str, int]) -> None:
    """ValueError when the test split holds tiles of fewer than two of its sensors: no pair to measure."""
    have = [s for s in sensors if tiles[s]]
    if len(have) < 2:
        whose = "" if split == ref else f" (the split of model {split}'s config.yaml)"
        held = f"test tiles of {' and '.join(have)} only" if have else "no test tile"
        raise ValueError(f"no sensor pair can be measured on the held-out test split of {ws}{whose}: it holds {held} "
                         f"({', '.join(f'{s} {n}' for s, n in tiles.items())}); ingest scenes of another of its "
                         "sensors over the same ground")


def _settings_text(settings: dict[str, Any], ref: dict[str, Any] | None = None) -> str:
    """``split_seed 1, sensors a, b`` for the settings that differ from ``ref`` (all of them without one)."""
    parts = []
    for k, v in settings.items():
        if ref is None or v != ref.get(k):
            parts.append(f"{k} {', '.join(map(str, v)) if isinstance(v, list) else v}")
    return "; ".join(parts) or "same settings"


def _num(metrics: dict[str, Any], key: str, width: int, digits: int) -> str:
    """A metric right-aligned in ``width``, or ``-`` where it was not measured (no query, no labelled tile)."""
    v = metrics.get(key)
    return f"{v:>{width}.{digits}f}" if v is not None else f"{'-':>{width}}"


def _other_cells(cells: dict[str, int]) -> str:
    """The train and val counts, and the cells in neither split, so that the counts add up to the catalog's."""
    text = f"{cells['train']} train, {cells['val']} val"
    if cells.get("buffer") is not None:  # a report of an earlier version has neither
        text += f"; {cells['buffer']} left out as buffer around the test blocks"
    if cells.get("too_few_sensors"):
        text += f", {cells['too_few_sensors']} seen by too few of the sensors"
    return text


def format_report(report: dict[str, Any]) -> str:
    """The evaluation as a plain-text table."""
    lines = [f"held-out test split: {report['cells']['test']} cells ({_other_cells(report['cells'])}); test tiles: "
             + ", ".join(f"{s} {n}" for s, n in report["tiles"].items())]
    splits = report.get("splits", {})
    ref = report.get("split", {}).get("reference_model")
    several = len(splits) > 1
    if several:
        ref_settings = splits[ref]["settings"]
        lines[0] += (f" (the reference split: that of model {ref}'s config.yaml; the untrained model and band_stats "
                     "are tested on it)")
        lines.append("each model is tested on the split of its own config.yaml; the other splits:")
        for name, sp in splits.items():
            if name == ref:
                continue
            lines.append(f"  split {name} ({_settings_text(sp['settings'], ref_settings)}): {sp['cells']['test']} "
                         f"test cells ({_other_cells(sp['cells'])}); test tiles: "
                         + ", ".join(f"{s} {n}" for s, n in sp["tiles"].items())
                         + f"; models {', '.join(sp['models'])}")
        extra = [n for n, m in report["models"].items() if n.partition("@")[0] in ("untrained", "band_stats")
                 and m.get("split", ref) != ref]
        if extra:
            lines.append("pairs that the reference split's baselines lack are measured on the split of the model "
                         f"that reports them: {', '.join(extra)}")
    if report.get("labelled_test_cells"):
        lines.append("labelled test cells (class mAP compares labels within a scheme only): "
                     + ", ".join(f"{k} {n}" for k, n in report["labelled_test_cells"].items()))
    wn = max([12, *map(len, report["models"])])  # names are the user's (and untrained@SPLIT): never cut
    sw = max([12, *map(len, splits)])
    split_col = f" {'split':<{sw}}" if several else ""
    head = (f"{'model':<{wn}}{split_col} {'pair':<28} {'queries':>7} {'gallery':>7} {'R@1':>6} {'R@5':>6} {'R@10':>6} "
            f"{'mAP@10':>7} {'chance R@1':>10} {'chance mAP':>10} {'sep':>6}")
    lines += [head, "-" * len(head)]
    small: dict[str, int] = {}  # pair -> smallest gallery at most 10 tiles: recall@10 (or @5) says nothing there
    for name, m in report["models"].items():
        col = f" {m.get('split', ref):<{sw}}" if several else ""
        for pair, p in m["pairs"].items():
            lines.append(
                f"{name:<{wn}}{col} {pair:<28} {p['queries']:>7} {p['gallery']:>7} {_num(p, 'recall@1', 6, 3)} "
                f"{_num(p, 'recall@5', 6, 3)} {_num(p, 'recall@10', 6, 3)} {_num(p, 'mAP@10', 7, 3)} "
                f"{_num(p, 'chance_recall@1', 10, 4)} {_num(p, 'chance_mAP@10', 10, 3)} {_num(p, 'separation', 6, 2)}")
            if p["queries"] and p["gallery"] <= 10:
                small[pair] = min(small.get(pair, p["gallery"]), p["gallery"])
        spread = m["calibration"]["pos_score_spread_across_pairs"]
        if spread is not None:
            lines.append(f"{'':<{wn}}{' ' * len(col)} calibration: std of the mean positive score across pairs = "
                         f"{spread:.3f}")
    if small:
        lines.append("note: small galleries (" + ", ".join(f"{k}: {n} tiles" for k, n in small.items()) + "): "
                     "recall@k for k >= the gallery size is 1 whatever the model (its chance level is 1)")
    return "\n".join(lines)
