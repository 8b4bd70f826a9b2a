"""`rsretrieve train` refusals: one line on stderr, exit 2, no traceback, nothing trained or overwritten.

Most of these stop before any data is read, so an empty catalog is workspace enough.
"""

import logging

import pytest
import torch

from rsretrieve.data.catalog import Catalog
from rsretrieve.data.datamodule import CellDataModule
from rsretrieve.training.cli import check_resume, read_checkpoint
from rsretrieve.training.task import CrossSensorTask
from tests.conftest import ROOT, make_workspace, run_cli, save_untrained_model


@pytest.fixture
def empty_ws(tmp_path):
    ws = tmp_path / "ws"
    with Catalog(ws / "catalog.sqlite", tile_m=480):
        pass
    return ws


def _error_line(r) -> str:
    """The error line of a refused run; asserts exit 2 and no traceback or usage text."""
    assert r.returncode == 2, r.stderr[-3000:]
    assert "Traceback" not in r.stderr and "usage:" not in r.stderr and "--help" not in r.stderr, r.stderr[-3000:]
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("rsretrieve train: error: ")]
    assert len(errors) == 1, r.stderr[-3000:]
    return errors[0].removeprefix("rsretrieve train: error: ")


def test_train_refuses_an_existing_model_name_without_resume_and_keeps_the_model(empty_ws):
    model = save_untrained_model(empty_ws, "default")
    before = model.read_bytes()
    r = run_cli("train", "--config", ROOT / "configs/demo.yaml", "--workspace", empty_ws)
    d = empty_ws / "checkpoints" / "default"
    assert _error_line(r) == (f"model default already exists in {d}; use --resume to continue it or another --name")
    assert model.read_bytes() == before
    assert sorted(p.name for p in d.iterdir()) == ["model.pt"]  # nothing else written


def test_train_reuses_the_folder_of_a_failed_run(empty_ws):
    # a failed run leaves logs but no model.pt or last.ckpt: the name is free (the run gets as far as the options)
    (empty_ws / "checkpoints" / "failed" / "logs").mkdir(parents=True)
    r = run_cli("train", "--config", ROOT / "configs/demo.yaml", "--workspace", empty_ws, "--name", "failed",
                "--data.batch_size", "abc")
    line = _error_line(r)
    assert "already exists" not in line and "data.batch_size" in line


def test_resume_without_last_checkpoint_exits_2_instead_of_starting_over(empty_ws):
    r = run_cli("train", "--config", ROOT / "configs/demo.yaml", "--workspace", empty_ws, "--name", "x", "--resume")
    d = empty_ws / "checkpoints" / "x"
    assert _error_line(r) == (f"--resume: nothing to resume in {d} (no last.ckpt); run without --resume to start a "
                              "new run")


def test_bad_yaml_is_one_line_naming_the_config(empty_ws, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [\n")
    line = _error_line(run_cli("train", "--config", bad, "--workspace", empty_ws))
    assert line.startswith(f"--config {bad}: ")


def test_unknown_option_is_one_line(empty_ws):
    line = _error_line(run_cli("train", "--config", ROOT / "configs/demo.yaml", "--workspace", empty_ws,
                               "--model.no_such_option", "3"))
    assert "no_such_option" in line


def test_unknown_sensor_is_one_line_not_a_key_error(empty_ws):
    line = _error_line(run_cli("train", "--config", ROOT / "configs/demo.yaml", "--workspace", empty_ws,
                               "--data.sensors", "[sentinel1,sentinel9]"))
    assert line.startswith("unknown sensor 'sentinel9'; known sensors: ") and "sentinel2" in line


def test_add_sensor_config_without_pretrained_fails_instead_of_training_from_scratch(empty_ws):
    line = _error_line(run_cli("train", "--config", ROOT / "configs/add_sensor.yaml", "--workspace", empty_ws,
                               "--name", "with_l8"))
    assert line.startswith("--model.pretrained is required")
    assert not (empty_ws / "checkpoints" / "with_l8" / "model.pt").exists()


def test_missing_or_unreadable_pretrained_file_is_named(empty_ws, tmp_path):
    common = ["train", "--config", ROOT / "configs/add_sensor.yaml", "--workspace", empty_ws, "--name", "l8"]
    line = _error_line(run_cli(*common, "--model.pretrained", tmp_path / "nope.pt"))
    assert line == f"--model.pretrained {tmp_path / 'nope.pt'}: no such file"
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint\n")
    line = _error_line(run_cli(*common, "--model.pretrained", junk))
    assert line.startswith(f"--model.pretrained {junk}: not a readable model file or checkpoint (")


# -- the same checks in the Python API (what the CLI turns into exit 2) ------------------------------------------
def test_task_raises_value_errors_for_unknown_sensors_and_bad_pretrained(tmp_path):
    with pytest.raises(ValueError, match=r"^unknown sensor 'sentinel9'; known sensors: "):
        CrossSensorTask(["sentinel1", "sentinel9"], dim=32)
    with pytest.raises(ValueError, match=r"^unknown sensor 'sentinel9'; known sensors: "):
        CellDataModule(str(tmp_path), ["sentinel9"])
    with pytest.raises(ValueError, match=r"^--model.pretrained is required"):
        CrossSensorTask(["sentinel1", "sentinel2"], dim=32, require_pretrained=True)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty.pt: not a readable model file or checkpoint \(empty or truncated"):
        CrossSensorTask(["sentinel1", "sentinel2"], pretrained=str(empty))
    with pytest.raises(ValueError, match=r"nope.pt: no such file$"):
        CrossSensorTask(["sentinel1", "sentinel2"], pretrained=str(tmp_path / "nope.pt"))
    # with a checkpoint, require_pretrained is satisfied and the new sensor is added
    base = save_untrained_model(tmp_path, "base", sensors=["sentinel1", "sentinel2"])
    task = CrossSensorTask(["sentinel1", "sentinel2", "landsat8"], pretrained=str(base), require_pretrained=True)
    assert task.model.sensors == ["sentinel1", "sentinel2", "landsat8"]


def test_resume_check_names_the_checkpoint_and_the_mismatch(tmp_path):
    sensors = ["sentinel1", "sentinel2"]
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": CrossSensorTask(sensors, dim=32).state_dict(),
                "rsretrieve": {"sensors": sensors}}, path)
    check_resume(path, read_checkpoint(path), CrossSensorTask(sensors, dim=32))  # the same config: nothing to say
    with pytest.raises(ValueError, match=rf"^checkpoint {path} does not match the config: .* has shape "):
        check_resume(path, read_checkpoint(path), CrossSensorTask(sensors, dim=48))
    with pytest.raises(ValueError, match=rf"^checkpoint {path} does not match the config: it was trained on "
                                         r"sensors sentinel1, sentinel2, the config has sentinel1, sentinel2, enmap$"):
        check_resume(path, read_checkpoint(path), CrossSensorTask([*sensors, "enmap"], dim=32))
    with pytest.raises(ValueError, match=rf"^checkpoint {path} does not match the config: .*weights"):
        check_resume(path, read_checkpoint(path), CrossSensorTask(sensors, model="dual_encoder"))
    path.write_text("garbage")
    with pytest.raises(ValueError, match=rf"^checkpoint {path} cannot be read: "):
        check_resume(path, read_checkpoint(path), CrossSensorTask(sensors, dim=32))


def test_empty_validation_split_is_one_warning_and_training_goes_on(tmp_path, caplog):
    ws = make_workspace(tmp_path, scenes=1, size_m=2400, index=False)
    dm = CellDataModule(str(ws), ["sentinel1", "sentinel2", "enmap"], batch_size=2, block=2,
                        fractions=(0.8, 0.0, 0.2))
    with caplog.at_level(logging.WARNING, logger="rsretrieve.data.datamodule"):
        dm.setup("fit")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith(f"the validation split of {ws} has 0 cells (train ")
    assert len(dm.datasets["val"]) == 0 and len(dm.datasets["train"]) >= 2
