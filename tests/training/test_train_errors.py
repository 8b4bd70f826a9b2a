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


@pytest.mark.parametrize("name", ["../escape", "", "a/b"])
def test_a_model_name_that_is_not_one_folder_name_is_refused_before_anything_is_written(empty_ws, name):
    # ../escape wrote its model outside the workspace, '' into checkpoints/ itself, a/b one that evaluate never finds
    r = run_cli("train", "--config", ROOT / "configs/demo.yaml", "--workspace", empty_ws, "--name", name)
    assert _error_line(r) == (f"--name {name!r}: a model name is one folder name in {empty_ws / 'checkpoints'}, "
                              "not empty and without '/' (e.g. --name with_landsat8)")
    assert sorted(p.name for p in empty_ws.iterdir()) == ["catalog.sqlite"]


def test_resume_without_last_checkpoint_exits_2_instead_of_starting_over(empty_ws):
    r = run_cli("train", "--config", ROOT / "configs/demo.yaml", "--workspace", empty_ws, "--name", "x", "--resume")
    d = empty_ws / "checkpoints" / "x"
    assert _error_line(r) == (f"--resume: nothing to resume in {d} (no last.ckpt); run without --resume to start a "
                              "new run")


def test_a_config_that_is_a_folder_is_not_called_missing(empty_ws, tmp_path):
    line = _error_line(run_cli("train", "--config", ROOT / "configs", "--workspace", empty_ws))
    assert line == f"--config {ROOT / 'configs'}: not a file"
    line = _error_line(run_cli("train", "--config", tmp_path / "nope.yaml", "--workspace", empty_ws))
    assert line == f"--config {tmp_path / 'nope.yaml'}: no such file"


def test_bad_yaml_is_one_line_naming_the_config(empty_ws, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [\n")
    line = _error_line(run_cli("train", "--config", bad, "--workspace", empty_ws))
    assert line.startswith(f"--config {bad}: ")


def test_unknown_option_is_one_line(empty_ws):
    line = _error_line(run_cli("train", "--config", ROOT / "configs/demo.yaml", "--workspace", empty_ws,
                               "--model.no_such_option", "3"))
    assert "no_such_option" in line


@pytest.mark.parametrize(("option", "value", "says"), [
    ("max_time", "notatime", "`Timer(duration='notatime')` is not a valid duration"),
    ("max_time", "00:00:00:-5", "`Timer(duration='00:00:00:-5')` is not a valid duration"),
    pytest.param("accelerator", "gpu", "No supported gpu backend found", marks=pytest.mark.skipif(
        torch.backends.mps.is_available(), reason="'gpu' is the MPS accelerator here")),
])
def test_an_option_lightning_refuses_when_building_the_trainer_is_one_line_naming_it(empty_ws, option, value, says):
    """Lightning's MisconfigurationException from the Trainer and its Timer was a traceback and exit 1; the refusal
    comes before any data is read (an empty catalog would be the "only 0 training cells" error) and writes nothing."""
    r = run_cli("train", "--config", ROOT / "configs/demo.yaml", "--workspace", empty_ws, "--name", "x2",
                f"--trainer.{option}", value, env={"CUDA_VISIBLE_DEVICES": ""})  # no GPU, on any machine
    line = _error_line(r)
    assert line.startswith(f"--trainer.{option} {value}: {says}"), line
    assert sorted(p.name for p in (empty_ws / "checkpoints").iterdir()) == [".x2.lock"]  # no checkpoints/x2


@pytest.mark.parametrize(("option", "value", "says"), [
    # each of 5 processes re-ran "rsretrieve" without its arguments; the run was killed (exit 137)
    ("devices", "5", "--trainer.devices '5': 5 processes; rsretrieve train runs in one process on one device (one "
                     "GPU, or the CPU's cores): use --trainer.devices 1"),
    ("num_nodes", "2", "--trainer.devices auto and --trainer.num_nodes 2: 2 processes; rsretrieve train runs in one "
                       "process on one device (one GPU, or the CPU's cores): use --trainer.devices 1 "
                       "--trainer.num_nodes 1"),
    ("devices", "-3", "--trainer.devices '-3': "),  # a TypeError traceback
    ("accelerator", "tpu", "--trainer.accelerator tpu: Requirement 'torch_xla"),  # ModuleNotFoundError (no torch_xla)
])
def test_devices_and_accelerators_this_command_cannot_use_are_one_line(empty_ws, option, value, says):
    r = run_cli("train", "--config", ROOT / "configs/demo.yaml", "--workspace", empty_ws, "--name", "x2",
                f"--trainer.{option}", value, env={"CUDA_VISIBLE_DEVICES": ""})
    assert _error_line(r).startswith(says), r.stderr[-2000:]
    assert sorted(p.name for p in (empty_ws / "checkpoints").iterdir()) == [".x2.lock"]  # no checkpoints/x2


def test_unknown_sensor_is_one_line_not_a_key_error(empty_ws):
    line = _error_line(run_cli("train", "--config", ROOT / "configs/demo.yaml", "--workspace", empty_ws,
                               "--data.sensors", "[sentinel1,sentinel9]"))
    assert line.startswith("unknown sensor 'sentinel9'; known sensors: ") and "sentinel2" in line


def test_add_sensor_config_without_pretrained_fails_instead_of_training_from_scratch(empty_ws):
    line = _error_line(run_cli("train", "--config", ROOT / "configs/add_sensor.yaml", "--workspace", empty_ws,
                               "--name", "with_l8"))
    assert line.startswith("--model.pretrained is required")
    # no empty checkpoints/with_l8 folder is left behind either (it was, for every refused new run)
    assert not (empty_ws / "checkpoints" / "with_l8").exists()


def test_missing_or_unreadable_pretrained_file_is_named(empty_ws, tmp_path):
    common = ["train", "--config", ROOT / "configs/add_sensor.yaml", "--workspace", empty_ws, "--name", "l8"]
    line = _error_line(run_cli(*common, "--model.pretrained", tmp_path / "nope.pt"))
    assert line == f"--model.pretrained {tmp_path / 'nope.pt'}: no such file"
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint\n")
    line = _error_line(run_cli(*common, "--model.pretrained", junk))
    assert line.startswith(f"--model.pretrained {junk}: not a readable model file or checkpoint (")


def test_extending_a_model_with_another_split_than_its_config_yaml_is_refused(empty_ws):
    """The frozen parts learnt on the base run's training blocks; another split_seed made some of them test cells
    of the extended model (evaluate tests it on its own config.yaml's split), and nothing said so."""
    base = save_untrained_model(empty_ws, "default")
    (base.parent / "config.yaml").write_text("data:\n  block: 4\n  split_seed: 1\n  fractions: [0.7, 0.1, 0.2]\n")
    common = ["train", "--config", ROOT / "configs/add_sensor.yaml", "--workspace", empty_ws, "--name", "l8",
              "--model.pretrained", base]
    line = _error_line(run_cli(*common))  # add_sensor.yaml has split_seed 0
    assert line == (f"data.split_seed 0 differs from the 1 of {base.parent / 'config.yaml'}, the split the "
                    "pretrained model was trained on: with other blocks, cells its frozen parts were trained on can "
                    "be test cells of this model; give --data.split_seed 1")
    # with the base run's split it gets past the check (to the empty catalog)
    line = _error_line(run_cli(*common, "--data.split_seed", "1"))
    assert line.startswith(f"{empty_ws}: only 0 training cells")


def test_a_run_stopped_by_sigterm_or_ctrl_c_exits_128_plus_the_signal_and_says_how_to_go_on(empty_ws, monkeypatch,
                                                                                            capsys):
    """Lightning ends a fit stopped by SIGTERM with SIGTERMException (a SystemExit of status 0: `train && index`
    went on without a model) and one stopped by Ctrl-C with sys.exit(1) (a partial failure, by the CLI's codes)."""
    import sys

    from lightning.pytorch.utilities.exceptions import SIGTERMException

    import rsretrieve.training.cli as training_cli
    from rsretrieve import cli

    def sigterm(*args, **kwargs):
        raise SIGTERMException

    def ctrl_c(*args, **kwargs):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            sys.exit(1)

    common = ["train", "--config", str(ROOT / "configs/demo.yaml"), "--workspace", str(empty_ws)]
    monkeypatch.setattr(training_cli, "RetrievalCLI", sigterm)
    assert cli.main(common) == 143
    assert capsys.readouterr().err.strip() == ("training interrupted by SIGTERM before the first epoch completed: "
                                               "nothing to resume; run the same command again to start over")
    last = empty_ws / "checkpoints" / "default" / "last.ckpt"
    assert not last.parent.exists()  # the run wrote nothing: no empty folder is left
    last.parent.mkdir(parents=True)
    last.write_bytes(b"")  # an epoch completed: the run can go on
    monkeypatch.setattr(training_cli, "RetrievalCLI", ctrl_c)
    assert cli.main([*common, "--resume"]) == 130
    assert capsys.readouterr().err.strip() == (f"training interrupted by SIGINT: {last} holds the last completed "
                                               "epoch; run the same command with --resume to continue")


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


def test_extending_a_model_with_no_new_sensor_is_refused_instead_of_training_nothing(tmp_path):
    # every branch frozen: the run trained only the loss weights and wrote a copy of the pretrained model
    base = save_untrained_model(tmp_path, "base", sensors=["sentinel1", "sentinel2"])
    with pytest.raises(ValueError) as e:
        CrossSensorTask(["sentinel1", "sentinel2"], pretrained=str(base), require_pretrained=True)
    assert str(e.value) == (f"--model.pretrained {base} has a branch for every sensor of data.sensors (sentinel1, "
                            "sentinel2), so nothing would train: list the sensor(s) to add in --data.sensors beside "
                            "sentinel1, sentinel2")


@pytest.mark.parametrize(("option", "value", "theirs"), [("embed_dim", 256, 128), ("dim", 96, 64), ("layout", 8, 0),
                                                          ("branch", {"tokens": 8}, 4)])
def test_a_shape_option_the_pretrained_model_does_not_have_is_refused_not_ignored(tmp_path, option, value, theirs):
    # the pretrained model's shape was kept and the option silently dropped (while config.yaml recorded it)
    base = save_untrained_model(tmp_path, "base", sensors=["sentinel1", "sentinel2"])  # dim 64, embed 128, layout 0
    with pytest.raises(ValueError) as e:
        CrossSensorTask(["sentinel1", "sentinel2", "landsat8"], pretrained=str(base), **{option: value})
    key, shown = (("branch.tokens", 8) if option == "branch" else (option, value))
    assert str(e.value) == (f"--model.{key} {shown}: the model of --model.pretrained {base} has {key} {theirs}, and "
                            f"a model that adds sensors keeps its shape (leave model.{key} out)")
    # the same values as the pretrained model's, or the defaults, are fine
    task = CrossSensorTask(["sentinel1", "sentinel2", "landsat8"], pretrained=str(base), dim=64, embed_dim=128,
                           branch={"tokens": 4})
    assert task.model.sensors == ["sentinel1", "sentinel2", "landsat8"]
    with pytest.raises(ValueError, match=r"^--model.model dual_encoder: only the 'ours' model can start from a "):
        CrossSensorTask(["sentinel1", "sentinel2", "landsat8"], pretrained=str(base), model="dual_encoder")


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


def test_a_type_error_of_the_data_module_itself_keeps_its_traceback(empty_ws, monkeypatch):
    # only the Trainer's construction is read as a refused option: a bug in the data module's own constructor was a
    # usage line ("unsupported operand type(s) ...", exit 2) without its traceback
    import rsretrieve.data.datamodule as dm
    from rsretrieve.training.cli import run_train

    def broken(hp):
        raise TypeError("a bug in the data module")

    monkeypatch.setattr(dm, "_check_settings", broken)
    with pytest.raises(TypeError, match="a bug in the data module"):
        run_train(ROOT / "configs/demo.yaml", empty_ws, "x3", progress=False)


@pytest.mark.parametrize("name", ["band_stats", "untrained", "a,b", "x@y"])
def test_a_model_name_evaluate_could_not_tell_apart_is_refused(empty_ws, name):
    # a model named band_stats was replaced in evaluate's report by the baseline of that name; "a,b" could not be
    # named in --models A,B
    from rsretrieve.training.cli import run_train

    with pytest.raises(ValueError) as e:
        run_train(ROOT / "configs/demo.yaml", empty_ws, name, progress=False)
    assert str(e.value) == (f"--name {name!r}: 'untrained' and 'band_stats' name evaluate's baselines, and a model "
                            "name has no ',' or '@' (evaluate --models A,B, untrained@MODEL); give another name")
    assert not (empty_ws / "checkpoints").exists() or not any((empty_ws / "checkpoints").iterdir())
