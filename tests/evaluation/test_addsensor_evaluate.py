"""`rsretrieve evaluate` after a sensor was added to a trained model (configs/add_sensor.yaml): the untrained model
and the band-statistics baseline get rows for the added sensor's pairs, on the split of the model reporting them.

The extended model is made as ``CrossSensorTask`` makes it (load the pretrained model, ``freeze_shared``,
``add_sensor``) and its new branch nudged to stand for its training, with the ``config.yaml`` that ``rsretrieve train``
writes (``model.pretrained`` naming the base); no training is needed.
"""

import json
import logging

import pytest
import torch
import yaml

from rsretrieve.data.catalog import Catalog
from rsretrieve.data.ingest import ingest
from rsretrieve.data.synthetic import make_archive
from rsretrieve.evaluation.report import evaluate_workspace, format_report
from rsretrieve.model.checkpoint import load_model
from rsretrieve.model.encoder import CrossSensorEncoder
from tests.conftest import run_cli

S3 = ["sentinel1", "sentinel2", "enmap"]
S4 = [*S3, "landsat8"]
L8_PAIRS = {f"{a}->{b}" for a in S4 for b in S4 if a != b and "landsat8" in (a, b)}


def write_config(ws, name: str, sensors: list[str], pretrained=None) -> None:
    model = {"model": "ours", **({"pretrained": str(pretrained)} if pretrained else {})}
    cfg = {"model": model, "data": {"workspace": str(ws), "sensors": sensors, "batch_size": 16, "block": 2}}
    (ws / "checkpoints" / name / "config.yaml").write_text(yaml.safe_dump(cfg))


def save(model, ws, name: str):
    path = ws / "checkpoints" / name / "model.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return path


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """2 sites seen by S1, S2, EnMAP and Landsat 8; ``default`` (S1, S2, EnMAP) and ``with_l8`` extending it.

    Also ``start``: ``with_l8`` as its add-sensor training started (the base plus Landsat 8's branch as
    ``add_sensor`` initialises it), as a from-scratch model of the same split, to compare the baseline with.
    """
    root = tmp_path_factory.mktemp("addsensor_eval")
    make_archive(root / "archive", scenes=2, sensors=S4, seed=5, size_m=1920)
    ws = root / "ws"
    with Catalog(ws / "catalog.sqlite", tile_m=480) as cat:
        ingest([root / "archive"], cat)
    torch.manual_seed(7)  # not the untrained baseline's seed (0), so that the two are different models
    base = save(CrossSensorEncoder(S3, dim=32), ws, "default")
    write_config(ws, "default", S3)
    start = load_model(base)
    start.freeze_shared()
    start.add_sensor("landsat8")  # a copy of sentinel2's branch
    save(start, ws, "start")
    write_config(ws, "start", S4)
    torch.manual_seed(1)
    with torch.no_grad():  # its training: only the new branch changes
        for p in start.branches["landsat8"].parameters():
            p.add_(0.05 * torch.randn_like(p))
    save(start, ws, "with_l8")
    write_config(ws, "with_l8", S4, pretrained=base)
    return ws


@pytest.fixture(scope="module")
def report(ws):
    return evaluate_workspace(ws, ["default", "with_l8"])


def test_the_added_sensors_pairs_get_both_baselines_on_the_split_of_the_model_reporting_them(report):
    """They had none: the baselines were measured on the reference split, whose sensors have no Landsat 8."""
    m = report["models"]
    assert set(m["with_l8"]["pairs"]) == {f"{a}->{b}" for a in S4 for b in S4 if a != b}
    missing = set(m["with_l8"]["pairs"]) - set(m["untrained"]["pairs"])
    assert missing == L8_PAIRS and missing == set(m["with_l8"]["pairs"]) - set(m["band_stats"]["pairs"])
    for name in ("untrained@with_l8", "band_stats@with_l8"):
        assert m[name]["split"] == "with_l8" and set(m[name]["pairs"]) == L8_PAIRS, name
        for p in L8_PAIRS:  # the same queries and gallery as the model's own row
            assert (m[name]["pairs"][p]["queries"], m[name]["pairs"][p]["gallery"]) == (
                m["with_l8"]["pairs"][p]["queries"], m["with_l8"]["pairs"][p]["gallery"]), (name, p)
    json.dumps(report)


def test_the_untrained_baseline_of_an_added_sensor_is_the_model_with_that_branch_at_initialisation(ws, report):
    """Not a random head and metric: the pretrained parts as trained and Landsat 8's branch as add_sensor starts it
    (a copy of Sentinel-2's), i.e. exactly the model ``start`` evaluated as a trained model of the same split."""
    own = evaluate_workspace(ws, ["default", "start"])["models"]["start"]["pairs"]
    base = report["models"]["untrained@with_l8"]
    assert base["at_initialisation"] == {"with_l8": ["landsat8"]}
    assert base["kind"] == "ours (random init; pairs of landsat8: with_l8 with that branch at initialisation)"
    assert {p: base["pairs"][p] for p in L8_PAIRS} == {p: own[p] for p in L8_PAIRS}
    # and the trained branch is another model: its rows differ from the baseline's somewhere
    assert any(report["models"]["with_l8"]["pairs"][p] != base["pairs"][p] for p in L8_PAIRS)


def test_evaluating_the_extended_model_alone_keeps_random_init_for_the_pretrained_pairs(ws, report):
    """Then its split is the reference one: the pairs of the pretrained sensors are measured at a random init as for
    any model, those of the added sensor with the model at the start of its training."""
    alone = evaluate_workspace(ws, ["with_l8"])["models"]
    assert set(alone) == {"with_l8", "untrained", "band_stats"}
    assert set(alone["untrained"]["pairs"]) == set(alone["band_stats"]["pairs"]) == set(alone["with_l8"]["pairs"])
    assert alone["untrained"]["at_initialisation"] == {"with_l8": ["landsat8"]}
    assert {p: alone["untrained"]["pairs"][p] for p in L8_PAIRS} == {
        p: report["models"]["untrained@with_l8"]["pairs"][p] for p in L8_PAIRS}
    # a random model, not the frozen pretrained parts: those give with_l8's own rows
    s3 = [p for p in alone["untrained"]["pairs"] if p not in L8_PAIRS]
    assert any(alone["untrained"]["pairs"][p] != alone["with_l8"]["pairs"][p] for p in s3)


def test_a_moved_workspace_finds_the_pretrained_model_in_its_own_checkpoints(ws, report, tmp_path):
    """model.pretrained keeps the path of the training run: the same checkpoints/NAME/model.pt is looked up here."""
    cfg_path = ws / "checkpoints" / "with_l8" / "config.yaml"
    before = cfg_path.read_text()
    write_config(ws, "with_l8", S4, pretrained=tmp_path / "gone" / "ws" / "checkpoints" / "default" / "model.pt")
    try:
        moved = evaluate_workspace(ws, ["default", "with_l8"])["models"]["untrained@with_l8"]
    finally:
        cfg_path.write_text(before)
    assert moved == report["models"]["untrained@with_l8"]


def test_an_unreadable_pretrained_model_falls_back_to_a_random_init_with_a_warning(ws, report, tmp_path, caplog):
    cfg_path = ws / "checkpoints" / "with_l8" / "config.yaml"
    before = cfg_path.read_text()
    gone = tmp_path / "nowhere" / "model.pt"
    write_config(ws, "with_l8", S4, pretrained=gone)
    try:
        with caplog.at_level(logging.WARNING, logger="rsretrieve.evaluation.report"):
            rep = evaluate_workspace(ws, ["default", "with_l8"])["models"]["untrained@with_l8"]
    finally:
        cfg_path.write_text(before)
    assert set(rep["pairs"]) == L8_PAIRS and rep["kind"] == "ours (random init)" and "at_initialisation" not in rep
    assert [r.getMessage() for r in caplog.records] == [
        f"untrained baseline of model with_l8: its pretrained model {gone} (model.pretrained in {cfg_path}) cannot "
        "be read, so the branches it added are not known; its pairs are measured at a random initialisation"]


def test_the_table_shows_the_baseline_rows_of_the_added_sensor(ws, report):
    r = run_cli("evaluate", "-w", ws, "--models", "default,with_l8")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert ("pairs that the reference split's baselines lack are measured on the split of the model that reports "
            "them: untrained@with_l8, band_stats@with_l8") in lines
    rows = {(ln.split()[0], ln.split()[2]) for ln in lines if "->" in ln and not ln.startswith(" ")}
    for name in ("untrained@with_l8", "band_stats@with_l8"):
        assert {p for n, p in rows if n == name} == L8_PAIRS, name
    assert format_report(report).splitlines()[-1] in lines
