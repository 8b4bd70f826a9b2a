"""`rsretrieve train` killed (kill -9) while it writes its model and config, and restarted after a run killed before
its first ``last.ckpt``: nothing of the previous run is lost or left to be mistaken for the new one's.

The kill lands at a deterministic point: a child process runs the real command with ``shutil.copyfile`` replaced by
one that writes half of the ``config.yaml`` beside ``model.pt`` and then SIGKILLs its own process.
"""

import shutil
import signal
import subprocess
import sys

import pytest
import torch
import yaml

from rsretrieve.model.checkpoint import load_model
from tests.conftest import ROOT, make_workspace, run_cli

OPTIONS = ["--data.batch_size", "16", "--data.block", "2", "--trainer.max_time", "null",
           "--trainer.enable_model_summary", "false", "--trainer.enable_progress_bar", "false"]

_DIE_WRITING_CONFIG = """
import os, shutil, signal, sys
copyfile = shutil.copyfile
def copy_half_then_die(src, dst, *args, **kwargs):
    if "config.yaml" in os.path.basename(str(dst)) and "logs" not in str(dst):  # the copy beside model.pt
        data = open(src, "rb").read()
        with open(dst, "wb") as out:
            out.write(data[: len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    return copyfile(src, dst, *args, **kwargs)
shutil.copyfile = copy_half_then_die
from rsretrieve.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _train(ws, name, epochs, *extra):
    return ["train", "--config", ROOT / "configs/demo.yaml", "--workspace", ws, "--name", name, *OPTIONS,
            "--trainer.max_epochs", str(epochs), *extra]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A workspace with a finished 2-epoch run ``r``."""
    ws = make_workspace(tmp_path_factory.mktemp("killtrain"), scenes=3, size_m=2400, index=False)
    r = run_cli(*_train(ws, "r", 2))
    assert r.returncode == 0, r.stderr[-3000:]
    return ws


def test_a_resume_killed_while_writing_its_model_keeps_the_previous_model_and_config(trained):
    ws = trained
    run = ws / "checkpoints/r"
    model_before, config_before = (run / "model.pt").read_bytes(), (run / "config.yaml").read_text()
    r = subprocess.run([sys.executable, "-c", _DIE_WRITING_CONFIG, *map(str, _train(ws, "r", 3, "--resume"))],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == -signal.SIGKILL, r.stderr[-3000:]
    assert torch.load(run / "last.ckpt", weights_only=True)["epoch"] == 2  # it was killed after its training
    # the finished run's model and config are still there, whole and matching (index, query, evaluate keep working)
    assert (run / "model.pt").read_bytes() == model_before
    load_model(run / "model.pt")
    assert (run / "config.yaml").read_text() == config_before
    # the same command completes the run; the killed run's temporary file is gone
    r = run_cli(*_train(ws, "r", 3, "--resume"))
    assert r.returncode == 0 and r.stdout.strip() == f"model written to {run / 'model.pt'}", r.stderr[-3000:]
    assert (run / "model.pt").read_bytes() != model_before
    assert yaml.safe_load((run / "config.yaml").read_text())["trainer"]["max_epochs"] == 3
    ck = torch.load(run / "last.ckpt", weights_only=True)
    model = load_model(run / "model.pt")
    assert all(torch.equal(ck["state_dict"][f"model.{k}"], v) for k, v in model.state_dict().items())
    assert not list(run.glob(".*"))


def test_a_new_run_after_one_killed_before_its_first_last_ckpt_leaves_no_checkpoint_of_the_dead_run(trained):
    ws = trained
    run = ws / "checkpoints/fresh"
    run.mkdir()
    # what a run killed between its first best.ckpt and its first last.ckpt leaves (and a half-written model)
    shutil.copyfile(ws / "checkpoints/r/last.ckpt", run / "best.ckpt")
    (run / ".tmp-model.pt-0123abcd").write_bytes(b"half")
    dead = (run / "best.ckpt").read_bytes()
    r = run_cli(*_train(ws, "fresh", 1))
    assert r.returncode == 0, r.stderr[-3000:]
    # best.ckpt, if any, is this run's (not the dead run's, with this run's best beside it as best-v1.ckpt)
    assert {p.name for p in run.glob("*.ckpt")} <= {"best.ckpt", "last.ckpt"} and (run / "last.ckpt").is_file()
    assert not (run / "best.ckpt").exists() or (run / "best.ckpt").read_bytes() != dead
    assert not list(run.glob(".*"))


_HOLD_NAME = """
import sys
from pathlib import Path
from rsretrieve.training.cli import _name_lock
with _name_lock(Path(sys.argv[1])):
    print("held", flush=True)
    sys.stdin.readline()
"""


def test_a_second_run_of_the_same_name_is_refused_while_one_runs(trained):
    ws = trained
    run = ws / "checkpoints/twice"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_NAME, str(run)], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)  # what a running `train --name twice` holds
    try:
        assert holder.stdout.readline().strip() == "held"
        for extra in ([], ["--resume"]):
            r = run_cli(*_train(ws, "twice", 1, *extra))
            assert r.returncode == 2 and r.stdout == "", r.stderr[-3000:]
            assert r.stderr.splitlines()[-1] == (
                f"rsretrieve train: error: another `rsretrieve train --name twice` (process {holder.pid}) is training "
                f"into {run}: wait for it to finish, or train under another --name")
        assert not run.exists()  # nothing written into the running run's folder
        holder.communicate("go\n", timeout=60)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    r = run_cli(*_train(ws, "twice", 1))  # the lock went with its process
    assert r.returncode == 0, r.stderr[-3000:]
