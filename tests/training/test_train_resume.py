"""`rsretrieve train --resume`: the run goes on as it was started; only its budget and logging may change.

One tiny run (3 one-step epochs) is killed after its first epoch; the tests resume it with the same command, with a
larger budget, and with options that would change what it learns (refused, the run folder untouched).
"""

import csv
import hashlib

import pytest
import torch
import yaml

from rsretrieve.training.cli import resume_differences
from tests.conftest import ROOT, kill_cli_when, make_workspace, run_cli

OPTIONS = ["--data.batch_size", "16", "--data.block", "2", "--trainer.max_epochs", "3", "--trainer.max_time", "null",
           "--trainer.enable_model_summary", "false", "--trainer.log_every_n_steps", "1"]


def _train(ws, *extra):
    return ["train", "--config", ROOT / "configs/demo.yaml", "--workspace", ws, "--name", "r", *OPTIONS, *extra]


def _last(ws) -> dict:
    return torch.load(ws / "checkpoints/r/last.ckpt", weights_only=True, map_location="cpu")


def _snapshot(folder) -> dict:
    """Every file under ``folder``: its size, modification time and hash (and so every folder holding one)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns,
                                         hashlib.sha1(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A workspace whose run ``r`` was killed (kill -9) after its first epoch's last.ckpt; and its steps per epoch."""
    ws = make_workspace(tmp_path_factory.mktemp("resume"), scenes=3, size_m=2400, index=False)
    last = ws / "checkpoints/r/last.ckpt"
    assert kill_cli_when(_train(ws), last.exists)  # checkpoints are written to a temporary file, then renamed
    ck = _last(ws)
    assert ck["epoch"] < 2, "the run finished before it was killed"
    return ws, ck["global_step"] // (ck["epoch"] + 1)


@pytest.mark.parametrize("option, value, message", [
    ("--model.lr", "0.004", "model.lr 0.002 (now 0.004)"),
    ("--data.split_seed", "3", "data.split_seed 0 (now 3)"),
    ("--trainer.accumulate_grad_batches", "2", "trainer.accumulate_grad_batches 1 (now 2)"),
])
def test_resume_with_an_option_that_changes_training_is_refused_and_writes_nothing(interrupted, option, value,
                                                                                   message):
    ws, _ = interrupted
    run = ws / "checkpoints/r"
    before = _snapshot(run)
    r = run_cli(*_train(ws, "--resume", option, value))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.stderr.splitlines()[-1] == (
        f"rsretrieve train: error: --resume: {run / 'last.ckpt'} was trained with {message}; --resume keeps the "
        "model, data and training options a run was started with (only its budget and logging may change): start a "
        "new run with --name to use other options")
    assert _snapshot(run) == before  # the checkpoints' bytes, the logs, config.yaml: all as they were


def test_resume_with_the_same_command_continues_from_the_checkpoint_step(interrupted):
    ws, per_epoch = interrupted
    start = _last(ws)["global_step"]
    versions = set((ws / "checkpoints/r/logs").iterdir())
    r = run_cli(*_train(ws, "--resume"))
    assert r.returncode == 0, r.stderr[-3000:]
    ck = _last(ws)
    assert ck["epoch"] == 2 and ck["global_step"] == 3 * per_epoch
    # the resumed process logged only the steps after the checkpoint's (log_every_n_steps 1), not a restart's
    (new,) = set((ws / "checkpoints/r/logs").iterdir()) - versions
    with open(new / "metrics.csv") as f:
        steps = sorted({int(row["step"]) for row in csv.DictReader(f) if row.get("train/loss")})
    assert steps == list(range(start, 3 * per_epoch))
    # the recorded config is what trained the model: the checkpoint's options
    config = yaml.safe_load((ws / "checkpoints/r/config.yaml").read_text())
    assert config["model"]["lr"] == ck["hyper_parameters"]["lr"] == 0.002
    assert config["data"]["split_seed"] == ck["datamodule_hyper_parameters"]["split_seed"] == 0


def test_resume_with_a_larger_epoch_budget_trains_the_extra_epochs(interrupted):
    ws, per_epoch = interrupted
    r = run_cli(*_train(ws, "--resume", "--trainer.max_epochs", "5", "--trainer.log_every_n_steps", "5"))
    assert r.returncode == 0, r.stderr[-3000:]
    ck = _last(ws)
    assert ck["epoch"] == 4 and ck["global_step"] == 5 * per_epoch
    config = yaml.safe_load((ws / "checkpoints/r/config.yaml").read_text())
    assert config["trainer"]["max_epochs"] == 5 and config["trainer"]["log_every_n_steps"] == 5


def test_resume_differences_skip_budget_logging_and_unrecorded_options_and_list_model_and_data_first():
    started = {"seed_everything": 0, "trainer": {"max_epochs": 3, "precision": None, "log_every_n_steps": 10},
               "model": {"lr": 0.002, "sensors": ["sentinel1", "sentinel2"], "augment": {"gain": 0.0}},
               "data": {"workspace": "/old/ws", "fractions": [0.7, 0.1, 0.2], "split_seed": 0, "num_workers": 0}}
    same = {"config": ["a.yaml"], "ckpt_path": "/ws/last.ckpt", "seed_everything": 0,
            "trainer": {"max_epochs": 9, "precision": None, "log_every_n_steps": 1, "max_time": "00:01:00:00"},
            "model": {"lr": 0.002, "sensors": ["sentinel1"], "augment": {"gain": 0.0}, "new_option": 1},
            "data": {"workspace": "/new/ws", "fractions": (0.7, 0.1, 0.2), "split_seed": 0, "num_workers": 4}}
    assert resume_differences(started, same) == []
    changed = {**same, "seed_everything": 1, "trainer": {**same["trainer"], "precision": "bf16-mixed"},
               "data": {**same["data"], "split_seed": 3}, "model": {**same["model"], "augment": {"gain": 0.1}}}
    assert resume_differences(started, changed) == [("model.augment", {"gain": 0.0}, {"gain": 0.1}),
                                                    ("data.split_seed", 0, 3), ("seed_everything", 0, 1),
                                                    ("trainer.precision", None, "bf16-mixed")]


def test_the_path_of_the_pretrained_model_may_change_with_the_workspace():
    """configs/add_sensor.yaml points model.pretrained into the workspace: a moved workspace, or a command run from
    another folder, names it by another path (the resumed weights come from the checkpoint)."""
    started = {"model": {"pretrained": "wsL/checkpoints/default/model.pt", "lr": 0.002},
               "data": {"workspace": "wsL"}}
    moved = {"model": {"pretrained": "/tmp/rv2/wsL/checkpoints/default/model.pt", "lr": 0.002},
             "data": {"workspace": "/tmp/rv2/wsL"}}
    assert resume_differences(started, moved) == []
    assert resume_differences(started, {**moved, "model": {**moved["model"], "lr": 0.004}}) == [
        ("model.lr", 0.002, 0.004)]
