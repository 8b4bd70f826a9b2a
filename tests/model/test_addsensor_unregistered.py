"""A model with a branch for a sensor whose YAML is in a folder that RSRETRIEVE_SENSOR_DIRS no longer names."""

from dataclasses import replace

import pytest

from rsretrieve.data.catalog import Catalog
from rsretrieve.model.checkpoint import load_model
from rsretrieve.sensors.registry import get_sensor
from tests.conftest import run_cli, save_user_sensor_model


@pytest.fixture
def model_of_a_user_sensor(tmp_path):
    """WS/checkpoints/with_px/model.pt with a branch for 'planetx', registered only while it is saved."""
    return save_user_sensor_model(tmp_path / "ws", replace(get_sensor("landsat8"), name="planetx",
                                                          source=str(tmp_path / "planetx.yaml")))


def test_loading_it_is_a_value_error_naming_the_file_the_sensor_and_the_variable(model_of_a_user_sensor):
    with pytest.raises(ValueError) as e:  # it was a KeyError from the registry
        load_model(model_of_a_user_sensor)
    assert str(e.value).startswith(f"{model_of_a_user_sensor}: the model has a branch for sensor 'planetx', which "
                                   "is not registered (no spec of it in ")
    assert str(e.value).endswith("set RSRETRIEVE_SENSOR_DIRS to the folder of its YAML spec, as when it was trained")


def test_index_with_it_is_one_line_exit_2_not_a_traceback(model_of_a_user_sensor):
    ws = model_of_a_user_sensor.parents[2]
    with Catalog(ws / "catalog.sqlite", tile_m=480):
        pass
    r = run_cli("index", "--workspace", ws, "--model", "with_px", env={"RSRETRIEVE_SENSOR_DIRS": ""})
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.stderr.startswith(f"rsretrieve index: error: {model_of_a_user_sensor}: the model has a branch for "
                               "sensor 'planetx', which is not registered")
