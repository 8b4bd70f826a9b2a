"""A tiny `rsretrieve train` -> `rsretrieve evaluate` run through the real CLI."""

import json

import pytest
import torch

from tests.conftest import ROOT, make_workspace, run_cli


#: stderr of the fixture's runs
STDERR: list[str] = []


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    ws = make_workspace(tmp_path_factory.mktemp("train"), scenes=3, size_m=2400, index=False)
    common = ["--data.batch_size", "16", "--data.block", "2", "--trainer.max_epochs", "1",
              "--trainer.max_time", "null", "--trainer.enable_model_summary", "false"]
    r = run_cli("train", "--config", ROOT / "configs/demo.yaml", "--workspace", ws, *common)
    assert r.returncode == 0, r.stderr[-3000:]
    STDERR.append(r.stderr)
    r = run_cli("train", "--config", ROOT / "configs/dual_encoder.yaml", "--workspace", ws, "--name", "baseline",
                *common)
    assert r.returncode == 0, r.stderr[-3000:]
    return ws


def test_train_writes_checkpoints_that_load_with_weights_only(trained):
    d = trained / "checkpoints" / "default"
    for name in ("model.pt", "last.ckpt", "config.yaml"):
        assert (d / name).is_file(), name
    ck = torch.load(d / "last.ckpt", weights_only=True, map_location="cpu")
    assert ck["rsretrieve"]["sensors"] == ["sentinel1", "sentinel2", "enmap"]
    assert ck["rsretrieve"]["sensor_specs"]["enmap"]["num_bands"] == 224
    m = torch.load(d / "model.pt", weights_only=True, map_location="cpu")
    assert set(m) >= {"config", "state_dict"}


def test_a_new_run_is_not_warned_that_its_checkpoint_folder_is_not_empty(trained):
    # Lightning saw the run's own logs/ there and warned on every new run
    assert STDERR and "exists and is not empty" not in STDERR[0]


def test_evaluate_reports_every_pair_for_every_model_with_chance(trained, tmp_path):
    r = run_cli("evaluate", "--workspace", trained, "--json", "--out", tmp_path / "e.json", "--charts", tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads(r.stdout)
    assert set(rep["models"]) == {"default", "baseline", "untrained", "band_stats"}
    assert rep["models"]["baseline"]["kind"] == "dual_encoder"
    for m in rep["models"].values():
        assert len(m["pairs"]) == 6  # every ordered pair of 3 sensors
        for p in m["pairs"].values():
            assert p["queries"] > 0 and p["gallery"] > 0
            assert p["chance_recall@1"] == pytest.approx(1 / p["gallery"])
            assert 0 <= p["recall@1"] <= p["recall@5"] <= p["recall@10"] <= 1
    assert json.loads((tmp_path / "e.json").read_text()) == rep
    assert (tmp_path / "recall.png").stat().st_size > 0


def test_train_resume_continues_from_last_checkpoint(trained):
    before = torch.load(trained / "checkpoints/default/last.ckpt", weights_only=True, map_location="cpu")
    r = run_cli("train", "--config", ROOT / "configs/demo.yaml", "--workspace", trained, "--resume",
                "--data.batch_size", "16", "--data.block", "2", "--trainer.max_epochs", "2", "--trainer.max_time",
                "null", "--trainer.enable_model_summary", "false")
    assert r.returncode == 0, r.stderr[-3000:]
    ck = torch.load(trained / "checkpoints/default/last.ckpt", weights_only=True, map_location="cpu")
    assert ck["epoch"] == before["epoch"] + 1  # one more epoch on top of the first run's, not a restart
    assert ck["global_step"] == 2 * before["global_step"]


def test_resume_with_a_config_that_does_not_fit_the_checkpoint_is_one_line_and_keeps_it(trained):
    last = trained / "checkpoints/default/last.ckpt"
    before = last.read_bytes()
    r = run_cli("train", "--config", ROOT / "configs/demo.yaml", "--workspace", trained, "--resume",
                "--data.sensors", "[sentinel1,sentinel2]", "--data.batch_size", "16", "--data.block", "2",
                "--trainer.max_epochs", "5", "--trainer.max_time", "null")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.stderr.splitlines()[-1] == (f"rsretrieve train: error: --resume: {last} was trained with data.sensors "
                                         "[sentinel1, sentinel2, enmap] (now [sentinel1, sentinel2]); --resume keeps "
                                         "the model, data and training options a run was started with (only its "
                                         "budget and logging may change): start a new run with --name to use other "
                                         "options")
    assert last.read_bytes() == before


def test_last_checkpoint_is_the_latest_epoch_even_when_validation_does_not_improve(trained):
    # learning rate 0: the validation recall of epoch 1 and 2 equals epoch 0's, so no "best" is saved after epoch 0;
    # last.ckpt must still be the end of epoch 2 (a stale one would make --resume repeat epochs)
    r = run_cli("train", "--config", ROOT / "configs/demo.yaml", "--workspace", trained, "--name", "frozen",
                "--model.lr", "0", "--model.warmup_steps", "0", "--data.batch_size", "4", "--data.block", "1",
                "--trainer.max_epochs", "3", "--trainer.max_time", "null", "--trainer.enable_model_summary", "false")
    assert r.returncode == 0, r.stderr[-3000:]
    d = trained / "checkpoints" / "frozen"
    last = torch.load(d / "last.ckpt", weights_only=True, map_location="cpu")
    best = torch.load(d / "best.ckpt", weights_only=True, map_location="cpu")
    assert last["epoch"] == 2 and best["epoch"] == 0
    assert last["global_step"] == 3 * best["global_step"]


def test_train_with_a_missing_config_or_workspace_exits_2(tmp_path):
    r = run_cli("train", "--config", tmp_path / "nope.yaml", "--workspace", tmp_path)
    assert r.returncode == 2 and "no such file" in r.stderr
    r = run_cli("train", "--config", ROOT / "configs/demo.yaml", "--workspace", tmp_path / "nows")
    assert r.returncode == 2 and "not a workspace" in r.stderr
