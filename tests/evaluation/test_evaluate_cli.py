"""`rsretrieve evaluate` through the CLI on small workspaces: its output paths, its charts after the catalog changed,
damaged models, a split where no sensor pair can be measured, and the table's missing values.

Models are saved at random init with a hand-written ``config.yaml`` (what ``rsretrieve train`` writes beside
``model.pt``); no training is needed.
"""

import json
import shutil

import numpy as np
import pytest
import yaml

from rsretrieve.data.catalog import Catalog
from rsretrieve.data.ingest import ingest
from rsretrieve.data.synthetic import make_archive
from rsretrieve.evaluation.report import evaluate_workspace, format_report
from tests.conftest import make_workspace, run_cli, save_untrained_model

S3 = ["sentinel1", "sentinel2", "enmap"]


def write_config(ws, name: str, sensors: list[str], **data) -> None:
    cfg = {"model": {"model": "ours"}, "data": {"workspace": str(ws), "sensors": sensors, "batch_size": 16,
                                                 "block": 2, **data}}
    (ws / "checkpoints" / name / "config.yaml").write_text(yaml.safe_dump(cfg))


@pytest.fixture(scope="module")
def ews(tmp_path_factory):
    """Read-only: 2 synthetic sites x 3 sensors, indexed with an untrained model that has a config.yaml."""
    ws = make_workspace(tmp_path_factory.mktemp("evaluate"), scenes=2, size_m=1920)
    write_config(ws, "default", S3)
    return ws


@pytest.fixture
def ews_copy(ews, tmp_path):
    shutil.copytree(ews, tmp_path / "ws")
    return tmp_path / "ws"


def one_line(r, message: str) -> None:
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines() == [f"rsretrieve evaluate: error: {message}"]


def test_charts_into_a_file_or_out_into_a_folder_is_refused_before_evaluating(ews, tmp_path):
    (tmp_path / "afile").write_text("x")
    r = run_cli("evaluate", "-w", ews, "--charts", tmp_path / "afile")
    one_line(r, f"--charts {tmp_path / 'afile'} is a file; give a folder (recall.png and projection.png go in it)")
    assert r.stdout == "" and (tmp_path / "afile").read_text() == "x"
    r = run_cli("evaluate", "-w", ews, "--out", tmp_path)
    one_line(r, f"--out {tmp_path} is a directory; give a file name")
    assert r.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
    assert not tmp_path.with_name(tmp_path.name + ".tmp").exists()  # the report's temporary was left beside it


def test_out_ending_in_a_slash_or_a_chart_name_taken_by_a_folder_is_refused_before_evaluating(ews, tmp_path):
    r = run_cli("evaluate", "-w", ews, "--out", f"{tmp_path / 'report'}/")
    one_line(r, f"--out {tmp_path / 'report'}/ ends in a slash (a folder); give a file name")
    (tmp_path / "charts" / "projection.png").mkdir(parents=True)
    r = run_cli("evaluate", "-w", ews, "--charts", tmp_path / "charts")
    one_line(r, f"--charts {tmp_path / 'charts'}: {tmp_path / 'charts' / 'projection.png'} is a directory; the "
             "chart projection.png is written there")
    assert r.stdout == "" and sorted(p.name for p in tmp_path.iterdir()) == ["charts"]  # no file named report
    assert sorted(p.name for p in (tmp_path / "charts").iterdir()) == ["projection.png"]


def test_a_catalog_of_one_sensor_is_named_and_a_failed_evaluate_makes_no_folder(ews_copy, tmp_path):
    r = run_cli("catalog", "-w", ews_copy, "--remove",
                *[s["key"] for s in Catalog(ews_copy / "catalog.sqlite").scenes() if s["sensor"] != "sentinel1"])
    assert r.returncode == 0, r.stderr
    before = sorted(p.name for p in ews_copy.iterdir())
    r = run_cli("evaluate", "-w", ews_copy, "--out", tmp_path / "new" / "sub" / "r.json", "--charts",
                tmp_path / "new" / "charts")
    assert r.returncode == 2 and r.stdout == "" and "Traceback" not in r.stderr
    assert r.stderr.startswith(f"rsretrieve evaluate: error: the held-out test split of {ews_copy} has 0 cells: none "
                               "of the ")
    assert r.stderr.rstrip().endswith(" cells with tiles of sentinel1, sentinel2, enmap was seen by 2 or more of "
                                      "them (data.min_sensors 2); ingest scenes of another of these sensors over the "
                                      "same ground"), r.stderr
    assert not (tmp_path / "new").exists()  # the output folders are made only when a file is written
    assert sorted(p.name for p in ews_copy.iterdir()) == before


def test_charts_after_a_scene_left_the_catalog_project_only_catalog_tiles(ews_copy, tmp_path):
    from rsretrieve.index.store import IndexStore

    with Catalog(ews_copy / "catalog.sqlite") as cat:  # a scene removed (or replaced) since `rsretrieve index`
        cat.remove_scene(cat.scenes()[0]["key"])
        kept = cat.counts()["tiles"]
    indexed = len(IndexStore.open(ews_copy / "index").load_vectors()[0])
    assert indexed > kept
    r = run_cli("evaluate", "-w", ews_copy, "--charts", tmp_path / "charts", "--json")
    assert r.returncode == 0, r.stderr
    json.loads(r.stdout)
    assert (tmp_path / "charts" / "projection.png").read_bytes()[:4] == b"\x89PNG"


def test_charts_before_the_first_index_has_finished_skip_the_projection(ews_copy, tmp_path):
    (ews_copy / "index" / "current").unlink()  # a first `rsretrieve index` still running, or killed
    r = run_cli("evaluate", "-w", ews_copy, "--charts", tmp_path / "charts")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "charts").iterdir()) == ["recall.png"]
    assert f"wrote {tmp_path / 'charts' / 'recall.png'}" in r.stdout.splitlines()
    assert "no projection.png: no index at" in r.stderr


def test_models_may_be_listed_with_spaces(ews_copy):
    save_untrained_model(ews_copy, "other", seed=1)
    write_config(ews_copy, "other", S3)
    r = run_cli("evaluate", "-w", ews_copy, "--models", "default, other", "--json")
    assert r.returncode == 0, r.stderr
    assert list(json.loads(r.stdout)["models"]) == ["default", "other", "untrained", "band_stats"]


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_model_file_is_one_line_naming_it(ews_copy, damage):
    path = ews_copy / "checkpoints" / "default" / "model.pt"
    data = path.read_bytes()
    path.write_bytes(b"not a checkpoint" * 64 if damage == "garbage" else data[: len(data) // 2])
    r = run_cli("evaluate", "-w", ews_copy)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith(f"rsretrieve evaluate: error: {path}: not a readable model file or checkpoint (")


def test_a_split_where_no_sensor_pair_has_test_tiles_is_a_usage_error(tmp_path):
    make_archive(tmp_path / "archive", scenes=1, sensors=["sentinel1"], seed=2, size_m=1920)
    ws = tmp_path / "ws"
    with Catalog(ws / "catalog.sqlite", tile_m=480) as cat:
        ingest([tmp_path / "archive"], cat)
    save_untrained_model(ws, sensors=["sentinel1", "sentinel2"])
    write_config(ws, "default", ["sentinel1", "sentinel2"], block=1, min_sensors=1)
    with pytest.raises(ValueError) as e:
        evaluate_workspace(ws)
    assert str(e.value).startswith(f"no sensor pair can be measured on the held-out test split of {ws}: it holds "
                                   "test tiles of sentinel1 only (sentinel1 ")
    r = run_cli("evaluate", "-w", ws, "--charts", tmp_path / "charts")
    one_line(r, str(e.value))


def _table(pairs: dict) -> list[str]:
    report = {"cells": {"train": 10, "val": 2, "test": 4}, "tiles": {"a": 4, "b": 4}, "split": {},
              "models": {"m": {"kind": "ours", "pairs": pairs,
                               "calibration": {"pos_score_spread_across_pairs": None}}}}
    return format_report(report).splitlines()


def test_a_pair_without_queries_shows_no_recall_and_no_chance():
    # no query tile had its positive in the gallery: pair_metrics gives counts only
    row = next(ln for ln in _table({"a->b": {"queries": 0, "gallery": 4}}) if ln.startswith("m "))
    assert row.split() == ["m", "a->b", "0", "4", "-", "-", "-", "-", "-", "-", "-"]


def test_a_gallery_no_larger_than_k_is_flagged_under_the_table():
    full = {"queries": 3, "gallery": 3, "recall@1": 0.5, "recall@5": 1.0, "recall@10": 1.0,
            "chance_recall@1": 1 / 3, "chance_recall@5": 1.0, "chance_recall@10": 1.0, "separation": 0.1}
    lines = _table({"a->b": full, "b->a": {**full, "gallery": 40, "chance_recall@5": 0.125,
                                           "chance_recall@10": 0.25}})
    assert lines[-1] == ("note: small galleries (a->b: 3 tiles): recall@k for k >= the gallery size is 1 whatever "
                         "the model (its chance level is 1)")
    assert not any(ln.startswith("note:") for ln in _table({"b->a": {**full, "gallery": 40}}))


def test_every_model_and_baseline_leaves_same_ground_tiles_of_another_zone_out(ews, monkeypatch):
    # what a multi-zone archive gives at a zone boundary, pushed to the limit: every other test cell shares the
    # query's ground, so only the positive is left in each ranking
    import rsretrieve.data.datasets as datasets

    real = datasets.ground_neighbours

    def everything_else(sources, targets, overlap=False, **_):  # CellIndex.same_ground turns ids into rows
        if not overlap:  # the split's own search (synthetic sites may lie in several zones)
            return real(sources, targets)
        targets = list(targets)
        return {c: [t for t in targets if t != c] for c in sources}

    monkeypatch.setattr(datasets, "ground_neighbours", everything_else)
    report = evaluate_workspace(ews)
    assert list(report["models"]) == ["default", "untrained", "band_stats"]
    for name, m in report["models"].items():
        assert m["pairs"], name
        for pair, v in m["pairs"].items():
            assert v["recall@1"] == 1.0 and "neg_score" not in v, (name, pair, v)


@pytest.mark.parametrize(("args", "message"), [
    (["--models", ""], "--models must name at least one model, got ''"),  # every model was evaluated
    (["--models", ",,"], "--models must name at least one model, got ',,'"),
    (["--out", ""], "--out needs a file name, got ''"),  # WS/evaluation.json was written
    (["--charts", ""], "--charts needs a folder name, got ''"),  # no chart was drawn
    (["--out", "WS/catalog.sqlite"], "--out WS/catalog.sqlite: a file of the workspace's catalog, index or models; "
                                     "give another file"),  # the catalog was replaced by the report
    (["--out", "WS/checkpoints/default/model.pt"], "--out WS/checkpoints/default/model.pt: a file of the workspace's "
                                                   "catalog, index or models; give another file"),
])
def test_empty_values_and_the_workspaces_own_files_are_refused_before_evaluating(ews, args, message):
    before = (ews / "catalog.sqlite").read_bytes()
    r = run_cli("evaluate", "-w", ews, *[a.replace("WS", str(ews)) for a in args])
    one_line(r, message.replace("WS", str(ews)))
    assert r.stdout == "" and (ews / "catalog.sqlite").read_bytes() == before


def test_out_through_a_link_replaces_its_file_and_into_a_fifo_is_written(ews, tmp_path):
    import os
    import threading

    (tmp_path / "kept").mkdir()
    (tmp_path / "report.json").symlink_to(tmp_path / "kept" / "report.json")
    r = run_cli("evaluate", "-w", ews, "--out", tmp_path / "report.json")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "report.json").is_symlink()  # the rename replaced the link, not the file it points to
    assert "splits" in json.loads((tmp_path / "kept" / "report.json").read_text())
    os.mkfifo(tmp_path / "fifo.json")
    got = []
    reader = threading.Thread(target=lambda: got.append((tmp_path / "fifo.json").read_text()), daemon=True)
    reader.start()
    r = run_cli("evaluate", "-w", ews, "--out", tmp_path / "fifo.json")
    reader.join(30)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "fifo.json").is_fifo() and "splits" in json.loads(got[0])  # its reader got nothing


def test_a_config_yaml_that_is_not_text_is_named(ews_copy):
    cfg = ews_copy / "checkpoints" / "default" / "config.yaml"
    cfg.write_bytes(b"\xff\xfe\x00bad")
    # "'utf-8' codec can't decode byte 0xff in position 0: invalid start byte", naming no file
    one_line(run_cli("evaluate", "-w", ews_copy), f"{cfg}: not UTF-8 text (invalid start byte at byte 0); not the "
                                                  "config.yaml that `rsretrieve train` writes")


@pytest.mark.parametrize("sensors", [[], "sentinel1"])
def test_a_config_yaml_without_a_list_of_sensors_is_named(ews_copy, sensors):
    write_config(ews_copy, "default", sensors)  # []: a TypeError traceback; a string: "unknown sensor 's'"
    one_line(run_cli("evaluate", "-w", ews_copy),
             f"{ews_copy / 'checkpoints' / 'default' / 'config.yaml'}: bad data section (data.sensors must be a list "
             f"of sensor names, at least one, got {sensors!r})")
