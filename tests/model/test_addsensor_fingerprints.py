"""Per-sensor embedding fingerprints: equal exactly when a sensor's vectors are (what index reuse relies on)."""

from dataclasses import replace

import torch

from rsretrieve.model.encoder import CrossSensorEncoder
from rsretrieve.sensors.registry import _REGISTRY, get_sensor


def test_adding_a_branch_keeps_the_other_fingerprints_and_training_it_changes_only_its_own():
    torch.manual_seed(0)
    model = CrossSensorEncoder(["sentinel1", "sentinel2"], dim=32)
    before = model.embedding_fingerprints()
    model.freeze_shared()
    model.add_sensor("landsat8")
    after = model.embedding_fingerprints()
    assert {k: after[k] for k in before} == before and set(after) == {"sentinel1", "sentinel2", "landsat8"}
    with torch.no_grad():
        next(model.branches["landsat8"].parameters()).add_(1e-3)
    trained = model.embedding_fingerprints()
    assert trained["landsat8"] != after["landsat8"] and {k: trained[k] for k in before} == before
    with torch.no_grad():  # a change of a shared part (the metric) changes every sensor's vectors
        next(model.metric.parameters()).add_(1e-3)
    assert all(v != trained[k] for k, v in model.embedding_fingerprints().items())


def test_a_changed_normalisation_of_a_spec_changes_its_fingerprint():
    """Tiles are normalised with the registered spec's statistics: vectors of an edited spec are not the same."""
    model = CrossSensorEncoder(["sentinel1", "sentinel2"], dim=32)
    before = model.embedding_fingerprints()
    spec = get_sensor("sentinel1")
    bands = (replace(spec.bands[0], mean=spec.bands[0].mean + 1.0), *spec.bands[1:])
    _REGISTRY["sentinel1"] = replace(spec, bands=bands)
    try:
        now = model.embedding_fingerprints()
    finally:
        _REGISTRY["sentinel1"] = spec
    assert now["sentinel1"] != before["sentinel1"] and now["sentinel2"] == before["sentinel2"]


def test_the_cloud_test_is_not_in_a_fingerprint_and_the_baseline_offset_is():
    """The cloud test decides which tiles exist, not their vectors: editing it keeps the fingerprint (an index built
    before the test changed still reuses the sensor's vectors). The processing-baseline offset changes how a
    product's pixels are read, so it changes the fingerprint."""
    model = CrossSensorEncoder(["sentinel1", "sentinel2"], dim=32)
    before = model.embedding_fingerprints()
    spec = get_sensor("sentinel2")
    try:
        _REGISTRY["sentinel2"] = replace(spec, cloud_test=replace(spec.cloud_test, above=0.5, qa_classes=(9,)))
        assert model.embedding_fingerprints() == before
        _REGISTRY["sentinel2"] = replace(spec, baseline_offset=replace(spec.baseline_offset, offset=-0.2))
        now = model.embedding_fingerprints()
    finally:
        _REGISTRY["sentinel2"] = spec
    assert now["sentinel2"] != before["sentinel2"] and now["sentinel1"] == before["sentinel1"]
