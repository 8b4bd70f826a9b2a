"""A sensor's normalisation statistics edited in its spec YAML after training: loading the model says so, in one
line naming the model file, the sensor and the change, like any other change of the spec facts the model was
trained with; model files written before the statistics were checked still load."""

import json
from dataclasses import replace

import pytest
import torch

from rsretrieve.data.catalog import Catalog
from rsretrieve.model.checkpoint import load_model
from rsretrieve.model.encoder import CrossSensorEncoder
from rsretrieve.sensors.base import load_spec
from rsretrieve.sensors.registry import DEFAULT_SENSOR_DIR, _REGISTRY, get_sensor
from tests.conftest import run_cli, save_user_sensor_model


@pytest.fixture
def edited_spec():
    """``edited_spec(name, band_index, mean=..., std=...)`` registers the sensor with one band's statistics changed,
    as if its YAML had been edited; the registered spec is put back afterwards."""
    saved = {}

    def edit(name: str, i: int, **stats):
        spec = saved.setdefault(name, get_sensor(name))
        bands = list(spec.bands)
        bands[i] = replace(bands[i], **stats)
        _REGISTRY[name] = replace(spec, bands=tuple(bands))

    yield edit
    _REGISTRY.update(saved)


@pytest.mark.parametrize("stat", ["mean", "std"])
def test_a_model_loaded_after_its_sensors_normalisation_changed_is_refused_naming_file_sensor_and_change(
        tmp_path, edited_spec, stat):
    path = tmp_path / "model.pt"
    CrossSensorEncoder(["sentinel1", "sentinel2"], dim=32).save(path)
    band = get_sensor("sentinel2").bands[3]
    old = getattr(band, stat)
    edited_spec("sentinel2", 3, **{stat: old + 0.5})
    with pytest.raises(ValueError) as e:
        load_model(path)
    assert str(e.value) == (
        f"{path}: sensor 'sentinel2': the registered spec ({DEFAULT_SENSOR_DIR / 'sentinel2.yaml'}) differs from the "
        f"one the model was trained with (normalisation {stat} of band {band.name}: {old} in the model, {old + 0.5} "
        "now); restore the spec or retrain the model")


def test_the_other_spec_changes_name_what_changed_too(tmp_path, edited_spec):
    path = tmp_path / "model.pt"
    CrossSensorEncoder(["sentinel2"], dim=32).save(path)
    band = get_sensor("sentinel2").bands[0]
    edited_spec("sentinel2", 0, center_nm=band.center_nm + 10.0)
    with pytest.raises(ValueError, match=rf"\(centre wavelength \(nm\) of band {band.name}: {band.center_nm} in the "
                                         rf"model, {band.center_nm + 10.0} now\)"):
        load_model(path)


def test_a_model_file_without_the_statistics_in_its_fingerprint_still_loads(tmp_path, edited_spec):
    """Model files written before mean and std joined the fingerprint: nothing to compare them with, so they load
    (and embed as before), even after an edit that a newer model file would be refused for."""
    torch.manual_seed(0)
    model = CrossSensorEncoder(["sentinel1", "sentinel2"], dim=32).eval()
    config = model.config()
    for facts in config["specs"].values():
        del facts["mean"], facts["std"]
    assert set(config["specs"]["sentinel2"]) == {"family", "bands", "center_nm", "valid", "polarization"}
    path = tmp_path / "old.pt"
    torch.save({"config": config, "state_dict": model.state_dict()}, path)
    x = torch.randn(2, get_sensor("sentinel2").num_bands, 48, 48)
    with torch.no_grad():
        assert torch.equal(load_model(path).embed("sentinel2", x), model.embed("sentinel2", x))
    edited_spec("sentinel2", 3, mean=get_sensor("sentinel2").bands[3].mean + 0.5)
    assert load_model(path).sensors == ["sentinel1", "sentinel2"]
    # its other facts are still checked
    edited_spec("sentinel2", 3, valid=False)
    with pytest.raises(ValueError, match="validity of band"):
        load_model(path)


def test_the_fingerprint_stores_the_statistics_as_plain_numbers():
    facts = CrossSensorEncoder(["sentinel1"], dim=32).config()["specs"]["sentinel1"]
    spec = get_sensor("sentinel1")
    assert facts["mean"] == [b.mean for b in spec.bands] and facts["std"] == [b.std for b in spec.bands]
    json.dumps(facts)


def test_index_with_a_user_sensor_whose_yaml_statistics_were_edited_is_one_line_exit_2(tmp_path):
    """The real case: a sensor of the user's own folder (RSRETRIEVE_SENSOR_DIRS), its YAML edited after training."""
    sensors = tmp_path / "sensors"
    sensors.mkdir()
    yaml_path = sensors / "planetx.yaml"
    text = (DEFAULT_SENSOR_DIR / "landsat8.yaml").read_text().replace("name: landsat8", "name: planetx")
    yaml_path.write_text(text)
    path = save_user_sensor_model(tmp_path / "ws", load_spec(yaml_path))
    with Catalog(tmp_path / "ws" / "catalog.sqlite", tile_m=480):
        pass
    assert "std: 0.090}" in text
    yaml_path.write_text(text.replace("std: 0.090}", "std: 0.120}"))  # SR_B7's, the last band
    r = run_cli("index", "--workspace", tmp_path / "ws", "--model", "with_px",
                env={"RSRETRIEVE_SENSOR_DIRS": str(sensors)})
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.stderr.strip().splitlines() == [
        f"rsretrieve index: error: {path}: sensor 'planetx': the registered spec ({yaml_path}) differs from the one "
        "the model was trained with (normalisation std of band SR_B7: 0.09 in the model, 0.12 now); restore the spec "
        "or retrain the model"]


def test_the_plain_dual_encoder_is_checked_against_its_specs_too(tmp_path, edited_spec):
    """The baseline's per-sensor CNNs take the normalised bands as well: its model file carries the spec facts, and an
    older one without them still loads."""
    from rsretrieve.model.dual_encoder import DualEncoder

    path = tmp_path / "model.pt"
    DualEncoder(["sentinel1", "sentinel2"], width=8).save(path)
    old = torch.load(path, weights_only=True)
    del old["config"]["specs"]
    torch.save(old, tmp_path / "old.pt")
    band = get_sensor("sentinel1").bands[1]
    edited_spec("sentinel1", 1, std=band.std * 2)
    with pytest.raises(ValueError, match=rf"^{path}: sensor 'sentinel1': .*\(normalisation std of band {band.name}: "
                                         rf"{band.std} in the model, {band.std * 2} now\)"):
        load_model(path)
    assert isinstance(load_model(tmp_path / "old.pt"), DualEncoder)
