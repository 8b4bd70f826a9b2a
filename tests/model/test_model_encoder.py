"""The cross-sensor encoder for every registered sensor; add-sensor bit-identity; checkpoints."""

import io
import json
import os

import pytest
import torch

from rsretrieve.losses import SymmetricInfoNCE
from rsretrieve.model import CrossSensorEncoder, DualEncoder, load_model
from rsretrieve.sensors import get_sensor, list_sensors


def tile(name: str, n: int = 2, seed: int = 0) -> torch.Tensor:
    """Random normalised tiles of a 480 m cell at the sensor's native GSD."""
    size = round(480 / get_sensor(name).gsd)
    return torch.randn(n, get_sensor(name).num_bands, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def encoder() -> CrossSensorEncoder:
    torch.manual_seed(0)
    return CrossSensorEncoder(list_sensors(), dim=32)


@pytest.mark.parametrize("name", list_sensors())
def test_embed_shapes_unit_norm_and_finite_grads(encoder, name):
    encoder.zero_grad()
    v = encoder.embed(name, tile(name))
    assert v.shape == (2, 128)
    assert torch.allclose(v.norm(dim=1), torch.ones(2), atol=1e-5)
    (v[0] @ v[1]).backward()
    shared = [*encoder.head.parameters(), encoder.metric.linear.weight]
    for p in [*encoder.branches[name].parameters(), *shared]:
        assert p.grad is not None and torch.isfinite(p.grad).all()
    others = [s for s in encoder.sensors if s != name]
    assert all(p.grad is None for s in others for p in encoder.branches[s].parameters())


@pytest.mark.parametrize("name", list_sensors())
def test_dual_encoder_embeds_every_sensor(name):
    model = DualEncoder([name], embed_dim=16, width=8)
    v = model.embed(name, tile(name))
    assert v.shape == (2, 16) and torch.allclose(v.norm(dim=1), torch.ones(2), atol=1e-5)


def _train(model: CrossSensorEncoder, pairs: list[tuple[str, str]], steps: int = 3) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1)
    loss_fn, cells = SymmetricInfoNCE(), torch.arange(4)
    for step in range(steps):
        opt.zero_grad()
        loss = sum(loss_fn(model.project(a, tile(a, 4, step)), cells, model.project(b, tile(b, 4, step + 9)), cells)
                   for a, b in pairs)
        loss.backward()
        opt.step()


def test_adding_a_sensor_keeps_other_embeddings_bit_identical():
    torch.manual_seed(0)
    model = CrossSensorEncoder(["sentinel1", "sentinel2"], dim=32)
    _train(model, [("sentinel1", "sentinel2")])
    model.eval()
    x1, x2 = tile("sentinel1", 3, 1), tile("sentinel2", 3, 2)
    with torch.no_grad():
        before = model.embed("sentinel1", x1), model.embed("sentinel2", x2)
    shared_before = {k: v.clone() for k, v in model.state_dict().items()}

    model.freeze_shared()
    model.add_sensor("landsat8")
    assert model.frozen == ["sentinel1", "sentinel2"]
    # the new optical branch starts from Sentinel-2's optical weights
    assert all(torch.equal(v, model.branches["sentinel2"].state_dict()[k])
               for k, v in model.branches["landsat8"].state_dict().items())
    new_start = {k: v.clone() for k, v in model.branches["landsat8"].state_dict().items()}
    model.train()
    _train(model, [("landsat8", "sentinel2"), ("landsat8", "sentinel1")])
    model.eval()
    with torch.no_grad():
        after = model.embed("sentinel1", x1), model.embed("sentinel2", x2)
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in shared_before.items())
    assert any(not torch.equal(v, model.branches["landsat8"].state_dict()[k]) for k, v in new_start.items())


def test_checkpoint_loads_with_weights_only_and_reproduces_embeddings(tmp_path):
    torch.manual_seed(0)
    model = CrossSensorEncoder(["sentinel1", "enmap"], dim=32).eval()
    path = tmp_path / "model.pt"
    model.save(path)
    raw = torch.load(path, weights_only=True)
    json.dumps(raw["config"])  # plain types only
    assert raw["config"]["sensors"] == ["sentinel1", "enmap"]
    loaded = load_model(path)
    x = tile("enmap", 2)
    with torch.no_grad():
        assert torch.equal(loaded.embed("enmap", x), model.embed("enmap", x))


def test_checkpoint_with_changed_spec_is_refused(tmp_path):
    model = CrossSensorEncoder(["sentinel2"], dim=32)
    config = model.config()
    config["specs"]["sentinel2"]["center_nm"][0] += 10.0
    torch.save({"config": config, "state_dict": model.state_dict()}, tmp_path / "m.pt")
    with pytest.raises(ValueError, match="differs"):
        load_model(tmp_path / "m.pt")


def test_dual_encoder_checkpoint_round_trip(tmp_path):
    model = DualEncoder(["sentinel1", "sentinel2"], width=8).eval()
    model.save(tmp_path / "d.pt")
    loaded = load_model(tmp_path / "d.pt")
    x = tile("sentinel2")
    with torch.no_grad():
        assert torch.equal(loaded.embed("sentinel2", x), model.embed("sentinel2", x))


@pytest.mark.parametrize("kind", ["ours", "dual_encoder"])
def test_a_save_that_fails_midway_leaves_the_previous_model_whole(tmp_path, monkeypatch, kind):
    """A run killed (here: failing) while writing model.pt leaves the previous model loadable, and no temp file;
    a reader never sees a partial file."""
    make = (lambda: CrossSensorEncoder(["sentinel2"], dim=32)) if kind == "ours" else (
        lambda: DualEncoder(["sentinel2"], width=8))
    torch.manual_seed(0)
    old = make().eval()
    path = tmp_path / "model.pt"
    old.save(path)
    before = path.read_bytes()
    real_save = torch.save

    def partial_save(obj, f, *a, **kw):  # writes half of the file, then dies
        data = io.BytesIO()
        real_save(obj, data)
        if isinstance(f, (str, os.PathLike)):
            with open(f, "wb") as fh:
                fh.write(data.getvalue()[: len(data.getvalue()) // 2])
        else:
            f.write(data.getvalue()[: len(data.getvalue()) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", partial_save)
    torch.manual_seed(1)
    with pytest.raises(OSError, match="disk full"):
        make().save(path)
    monkeypatch.setattr(torch, "save", real_save)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
    x = tile("sentinel2")
    with torch.no_grad():
        assert torch.equal(load_model(path).embed("sentinel2", x), old.embed("sentinel2", x))


def test_unknown_or_duplicate_sensor_is_an_error(encoder):
    with pytest.raises(KeyError, match="no branch"):
        CrossSensorEncoder(["sentinel1"], dim=32).embed("sentinel2", tile("sentinel2"))
    with pytest.raises(ValueError, match="already"):
        encoder.add_sensor("sentinel1")


def test_project_many_equals_project_of_each_sensor(encoder):
    inputs = {name: tile(name, 3, seed=i) for i, name in enumerate(encoder.sensors)}
    together = encoder.project_many(inputs)
    assert set(together) == set(inputs)
    for name, x in inputs.items():
        alone = encoder.project(name, x)
        assert together[name].shape == alone.shape
        assert torch.allclose(together[name], alone, atol=1e-5), name
