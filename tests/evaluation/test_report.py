"""`rsretrieve evaluate` tests each model on the split of its own config.yaml, on every pair of its sensors.

Models are saved at random init with a hand-written ``config.yaml`` (what ``rsretrieve train`` writes beside
``model.pt``), so the splits are exactly the ones written here; no training is needed.
"""

import json

import numpy as np
import pytest
import yaml

from rsretrieve.data.catalog import Catalog
from rsretrieve.data.datamodule import CellDataModule
from rsretrieve.data.ingest import ingest
from rsretrieve.data.synthetic import make_archive
from rsretrieve.evaluation.report import evaluate_workspace, format_report
from tests.conftest import run_cli, save_untrained_model

S3 = ["sentinel1", "sentinel2", "enmap"]
S4 = [*S3, "landsat8"]


@pytest.fixture(scope="module")
def ws4(tmp_path_factory):
    """3 synthetic sites seen by Sentinel-1, Sentinel-2, EnMAP and Landsat 8."""
    root = tmp_path_factory.mktemp("report")
    make_archive(root / "archive", scenes=3, sensors=S4, seed=5, size_m=2400)
    ws = root / "ws"
    with Catalog(ws / "catalog.sqlite", tile_m=480) as cat:
        ingest([root / "archive"], cat)
    return ws


def add_model(ws, name: str, sensors: list[str], **data) -> None:
    """A random-init model ``name`` with a config.yaml whose data section has ``sensors`` and ``data``."""
    save_untrained_model(ws, name, sensors=sensors)
    cfg = {"model": {"model": "ours"}, "data": {"workspace": str(ws), "sensors": sensors, "batch_size": 16,
                                                 "block": 2, **data}}
    (ws / "checkpoints" / name / "config.yaml").write_text(yaml.safe_dump(cfg))


def expected_split(ws, sensors: list[str], **data) -> tuple[dict, dict]:
    """(split sizes, test tiles per sensor) computed straight from the data module."""
    dm = CellDataModule(str(ws), sensors, block=data.pop("block", 2), **data)
    with Catalog(ws / "catalog.sqlite") as cat:
        test = dm.split_index(cat)["test"]
    return dict(dm.split_sizes), {s: int((test.tile_ids[s] >= 0).sum()) for s in sensors}


def pairs(sensors: list[str]) -> set[str]:
    return {f"{a}->{b}" for a in sensors for b in sensors if a != b}


@pytest.fixture(scope="module")
def report(ws4):
    add_model(ws4, "default", S3, split_seed=0)
    add_model(ws4, "big_batch", S3, split_seed=0, batch_size=64)  # not a split setting: default's split
    add_model(ws4, "seed3", S3, split_seed=3)
    add_model(ws4, "with_l8", S4, split_seed=0)
    return evaluate_workspace(ws4, ["default", "big_batch", "seed3", "with_l8"])


def test_each_model_is_tested_on_the_split_of_its_own_config(ws4, report):
    cells0, tiles0 = expected_split(ws4, S3, split_seed=0)
    cells3, tiles3 = expected_split(ws4, S3, split_seed=3)
    assert cells0 != cells3  # the two seeds make different splits here, so the test can tell them apart
    split = {n: m["split"] for n, m in report["models"].items()}
    # seed3's pairs have baselines on the reference split; with_l8's Landsat 8 pairs only on its own split
    assert split == {"default": "default", "big_batch": "default", "seed3": "seed3", "with_l8": "with_l8",
                     "untrained": "default", "band_stats": "default", "untrained@with_l8": "with_l8",
                     "band_stats@with_l8": "with_l8"}
    assert report["splits"]["seed3"]["cells"] == cells3 and report["splits"]["seed3"]["tiles"] == tiles3
    assert report["splits"]["seed3"]["settings"]["split_seed"] == 3
    assert report["splits"]["default"]["models"] == ["default", "big_batch"]
    # the gallery of a pair is every test tile of its archive sensor in the model's own split
    for p, m in report["models"]["seed3"]["pairs"].items():
        assert m["gallery"] == tiles3[p.split("->")[1]], p
    for name in ("default", "big_batch", "untrained", "band_stats"):
        for p, m in report["models"][name]["pairs"].items():
            assert m["gallery"] == tiles0[p.split("->")[1]], (name, p)
    # the top-level entries stay those of the reference split
    assert report["split"]["reference_model"] == "default" and report["split"]["split_seed"] == 0
    assert report["cells"] == cells0 and report["tiles"] == tiles0


def test_a_model_with_an_added_sensor_gets_its_pairs_and_the_others_keep_theirs(ws4, report):
    cells4, tiles4 = expected_split(ws4, S4, split_seed=0)
    assert min(tiles4.values()) > 0
    m = report["models"]["with_l8"]
    assert set(m["pairs"]) == pairs(S4) and len(m["pairs"]) == 12
    assert m["sensors"] == S4 and report["splits"]["with_l8"]["cells"] == cells4
    for p, v in m["pairs"].items():
        assert v["gallery"] == tiles4[p.split("->")[1]] and v["queries"] > 0, p
    for name in ("default", "big_batch", "seed3", "untrained", "band_stats"):
        assert set(report["models"][name]["pairs"]) == pairs(S3), name
    # the baselines of the pairs the reference split lacks: on with_l8's split, where its own rows are measured
    for name in ("untrained@with_l8", "band_stats@with_l8"):
        assert set(report["models"][name]["pairs"]) == pairs(S4) - pairs(S3), name
        for p, v in report["models"][name]["pairs"].items():
            assert v["gallery"] == tiles4[p.split("->")[1]] and v["queries"] == m["pairs"][p]["queries"], (name, p)
    # with_l8 was trained from scratch (no model.pretrained): its untrained baseline is a random initialisation
    assert report["models"]["untrained@with_l8"]["kind"] == "ours (random init)"


def test_the_table_says_which_split_each_model_used(report):
    text = format_report(report)
    lines = text.splitlines()
    assert "(the reference split: that of model default's config.yaml; the untrained model and band_stats are " \
           "tested on it)" in lines[0]
    assert any(ln.startswith("  split seed3 (split_seed 3): ") and ln.endswith("; models seed3") for ln in lines)
    assert any(ln.startswith("  split with_l8 (sensors sentinel1, sentinel2, enmap, landsat8): ") for ln in lines)
    assert ("pairs that the reference split's baselines lack are measured on the split of the model that reports "
            "them: untrained@with_l8, band_stats@with_l8") in lines
    rows = [ln.split() for ln in lines if ln.split() and ln.split()[0] in report["models"] and "->" in ln]
    assert {(r[0], r[1]) for r in rows} == {("default", "default"), ("big_batch", "default"), ("seed3", "seed3"),
                                            ("with_l8", "with_l8"), ("untrained", "default"),
                                            ("band_stats", "default"), ("untrained@with_l8", "with_l8"),
                                            ("band_stats@with_l8", "with_l8")}
    assert len(rows) == 6 * 5 + 12 + 6 * 2
    json.dumps(report)


def test_one_split_keeps_the_plain_table(ws4, report):
    rep = evaluate_workspace(ws4, ["default", "big_batch"])
    assert list(rep["splits"]) == ["default"]
    text = format_report(rep)
    assert text.splitlines()[0].startswith("held-out test split: ") and "reference split" not in text
    # the counts add up to the cells any of the sensors saw (the header said "198 cells (539 train, 50 val)" of 1242)
    from rsretrieve.data.datasets import index_cells

    with Catalog(ws4 / "catalog.sqlite") as cat:
        seen = len(index_cells(cat, S3, min_valid=0.5).cells)
    c = rep["cells"]
    assert c["train"] + c["val"] + c["test"] + c["buffer"] + c["too_few_sensors"] == seen and c["buffer"] > 0
    assert text.splitlines()[0].startswith(
        f"held-out test split: {c['test']} cells ({c['train']} train, {c['val']} val; {c['buffer']} left out as "
        f"buffer around the test blocks")
    assert text.splitlines()[2 if rep["labelled_test_cells"] else 1].startswith("model        pair ")


def test_an_empty_test_split_is_a_value_error_with_the_split_sizes(ws4, report):
    add_model(ws4, "no_test", S3, fractions=[0.9, 0.1, 0.0])
    cells, _ = expected_split(ws4, S3, fractions=(0.9, 0.1, 0.0))
    with pytest.raises(ValueError) as e:
        evaluate_workspace(ws4, ["no_test"])
    assert str(e.value) == (f"the held-out test split of {ws4} has 0 cells (train {cells['train']}, val "
                            f"{cells['val']}); ingest more ground or train with a smaller data.block")
    with pytest.raises(ValueError, match=r"\(the split of model no_test's config.yaml\) has 0 cells"):
        evaluate_workspace(ws4, ["default", "no_test"])
    r = run_cli("evaluate", "--workspace", ws4, "--models", "no_test")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [f"rsretrieve evaluate: error: {e.value}"]


def test_a_model_without_config_yaml_is_named(ws4, report):
    save_untrained_model(ws4, "bare", sensors=S3)
    path = ws4 / "checkpoints" / "bare" / "config.yaml"
    with pytest.raises(ValueError, match=rf"^{path}: no such file; evaluate reads the data split"):
        evaluate_workspace(ws4, ["default", "bare"])
    assert np.isfinite(report["models"]["default"]["pairs"]["sentinel1->sentinel2"]["recall@1"])


def test_calibration_spread_counts_each_sensor_pair_once_and_needs_two():
    from rsretrieve.evaluation.report import _positive_spread

    # two sensors: both directions score the same positive pairs, so there is nothing to compare (it printed 0.000)
    assert _positive_spread({"sentinel1->sentinel2": {"pos_score": 0.6}, "sentinel2->sentinel1": {"pos_score": 0.6},
                             "sentinel1->enmap": {}}) is None
    three = {"a->b": {"pos_score": 0.5}, "b->a": {"pos_score": 0.7}, "a->c": {"pos_score": 0.2},
             "c->a": {"pos_score": 0.2}, "b->c": {"pos_score": 0.9}}
    # unordered means 0.6, 0.2, 0.9: their population std
    assert _positive_spread(three) == pytest.approx(float(np.std([0.6, 0.2, 0.9])))
