"""Data settings no split or batch can be made with are one line naming the option (train) and the file (evaluate)."""

import pytest
import yaml

from rsretrieve.data.datamodule import CellDataModule
from tests.conftest import run_cli


@pytest.mark.parametrize(("option", "value", "message"), [
    ("block", 0, "data.block must be an integer >= 1, got 0"),
    ("batch_size", 0, "data.batch_size must be an integer >= 1, got 0"),
    ("split_seed", "abc", "data.split_seed must be an integer >= 0, got 'abc'"),
    ("groups", 1.5, "data.groups must be an integer >= 1, got 1.5"),
    ("max_train_cells", 0, "data.max_train_cells must be an integer >= 1 or null, got 0"),
    ("min_valid", 1.5, "data.min_valid must be a number in 0..1, got 1.5"),
    ("fractions", (0.5, 0.5, 0.5), "data.fractions must be 3 numbers >= 0 (train, val, test) summing to 1 with "
                                   "train > 0, got [0.5, 0.5, 0.5]"),
    ("fractions", (0.0, 0.5, 0.5), "data.fractions must be 3 numbers"),
])
def test_bad_data_settings_name_the_option(tmp_path, option, value, message):
    with pytest.raises(ValueError) as e:
        CellDataModule(str(tmp_path), ["sentinel1", "sentinel2"], **{option: value})
    assert str(e.value).startswith(message)


def test_defaults_and_configs_pass(tmp_path):
    CellDataModule(str(tmp_path), ["sentinel1"])
    for name in ("demo", "tri_sensor", "s1_s2", "dual_encoder", "add_sensor"):
        data = yaml.safe_load(open(f"configs/{name}.yaml")).get("data", {})
        CellDataModule(str(tmp_path), **{"sensors": ["sentinel1", "sentinel2"], **data})


def test_evaluate_names_the_config_file_of_a_bad_data_setting(small_workspace, tmp_path):
    import shutil

    ws = tmp_path / "ws"
    shutil.copytree(small_workspace, ws)
    cfg = ws / "checkpoints" / "default" / "config.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"sensors": ["sentinel1", "sentinel2", "enmap"], "block": 0}}))
    r = run_cli("evaluate", "--workspace", ws)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip() == (f"rsretrieve evaluate: error: {cfg}: bad data section (data.block must be an integer "
                                f">= 1, got 0)")
