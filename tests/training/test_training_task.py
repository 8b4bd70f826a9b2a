"""CrossSensorTask: tiny fits of both models on every registered sensor, checkpoints, adding a sensor."""

import json
import math

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from rsretrieve.model import load_model
from rsretrieve.sensors import get_sensor, list_sensors
from rsretrieve.training.task import CrossSensorRecall, CrossSensorTask


def make_batch(sensors: list[str], n: int = 6, seed: int = 0) -> dict:
    """Random tiles in the training batch format, native sizes of 480 m tiles, some sensors missing."""
    g = torch.Generator().manual_seed(seed)
    inputs, present = {}, {}
    for s in sensors:
        size = round(480 / get_sensor(s).gsd)
        inputs[s] = torch.randn(n, get_sensor(s).num_bands, size, size, generator=g)
        present[s] = torch.rand(n, generator=g) > 0.3
    return {"cell": torch.arange(n) + 100 * seed, "label": torch.tensor([0, 1, -1, 0, 1, -1][:n]),
            "inputs": inputs, "present": present}


def _trainer(steps: int = 3) -> L.Trainer:
    return L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, limit_val_batches=1,
                     num_sanity_val_steps=0)


def _loader(sensors: list[str], k: int = 3) -> DataLoader:
    return DataLoader([make_batch(sensors, seed=i) for i in range(k)], batch_size=None)


@pytest.mark.parametrize("model", ["ours", "dual_encoder"])
def test_tiny_fit_on_every_registered_sensor(model, tmp_path):
    torch.manual_seed(0)
    sensors = list_sensors()
    task = CrossSensorTask(sensors, model=model, dim=32, adversarial=model == "ours", queue_size=32,
                           queue_warmup=1)
    trainer = _trainer()
    trainer.fit(task, train_dataloaders=_loader(sensors), val_dataloaders=_loader(sensors, 1))
    metrics = trainer.callback_metrics
    assert torch.isfinite(metrics["train/loss"])
    assert "val/recall@1" in metrics and "val/recall@1/sentinel1_to_sentinel2" in metrics
    if model == "ours":
        assert {"train/cross", "train/within", "train/vicreg", "train/adversarial"} <= set(metrics)
    else:
        assert "train/vicreg" not in metrics  # the plain baseline: symmetric InfoNCE only

    path = tmp_path / "task.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    meta = ckpt["rsretrieve"]
    json.dumps(meta)  # plain types only
    assert meta["sensors"] == sensors and meta["model_config"]["kind"] == model
    assert meta["sensor_specs"]["enmap"]["num_bands"] == 224
    loaded = load_model(path)
    task.model.eval()
    x = make_batch(["enmap"], n=2)["inputs"]["enmap"]
    with torch.no_grad():
        assert torch.equal(loaded.embed("enmap", x), task.model.embed("enmap", x))


def test_adding_a_sensor_from_a_checkpoint_keeps_old_embeddings(tmp_path):
    torch.manual_seed(0)
    old = ["sentinel1", "sentinel2"]
    task = CrossSensorTask(old, dim=32)
    trainer = _trainer(2)
    trainer.fit(task, train_dataloaders=_loader(old))
    path = tmp_path / "base.ckpt"
    trainer.save_checkpoint(path)
    x = make_batch(old, n=3, seed=7)["inputs"]
    before = {s: load_model(path).embed(s, x[s]) for s in old}

    new = CrossSensorTask([*old, "landsat8"], pretrained=str(path))
    assert new.model.frozen == old
    trainable = {n.split(".")[1] for n, p in new.model.named_parameters() if p.requires_grad}
    assert trainable == {"landsat8"}
    trainer = _trainer(3)
    trainer.fit(new, train_dataloaders=_loader([*old, "landsat8"]))
    new.model.eval()
    with torch.no_grad():
        for s in old:
            assert torch.equal(new.model.embed(s, x[s]), before[s])


def test_recall_metric_by_hand():
    metric = CrossSensorRecall(["a", "b"], k=1)
    eye = torch.eye(3)
    metric.update(eye, torch.tensor([1, 2, 3]), "a")
    # b: cell 1 matches, cell 2's vector is closest to a's cell 3, cell 4 has no partner in a
    metric.update(torch.stack([eye[0], eye[2], eye[1]]), torch.tensor([1, 2, 4]), "b")
    out = metric.compute()
    assert out["a_to_b"].item() == pytest.approx(1 / 2)  # queries 1, 2 have partners; 1 hit
    assert out["b_to_a"].item() == pytest.approx(1 / 2)  # queries 1, 2; 2's vector (e3) finds cell 3


def test_recall_metric_leaves_the_same_ground_in_another_zone_out_of_a_ranking():
    # b's tile of cell 7 is cell 1's ground tiled in another zone, and looks just like a's tile of cell 1
    eye = torch.eye(3)
    plain, fixed = CrossSensorRecall(["a", "b"], k=1), CrossSensorRecall(["a", "b"], k=1)
    fixed.same_ground = {1: np.array([7]), 7: np.array([1])}
    for metric in (plain, fixed):
        metric.update(eye[:2], torch.tensor([1, 2]), "a")
        metric.update(torch.stack([0.9 * eye[0] + 0.1 * eye[2], eye[1], eye[0]]), torch.tensor([1, 2, 7]), "b")
    assert plain.compute()["a_to_b"].item() == pytest.approx(1 / 2)  # cell 7 outranks query 1's positive
    assert fixed.compute()["a_to_b"].item() == 1.0


def test_setup_hands_the_validation_and_test_recall_their_split_s_same_ground():
    from types import SimpleNamespace

    task = CrossSensorTask(["sentinel1", "sentinel2"], dim=32)
    split = {name: SimpleNamespace(index=SimpleNamespace(same_ground=lambda n=n: {0: np.array([n])}))
             for n, name in enumerate(("train", "val", "test"))}
    task._trainer = SimpleNamespace(datamodule=SimpleNamespace(datasets=split))
    task.setup("fit")
    assert task.val_recall.same_ground[0].tolist() == [1] and task.test_recall.same_ground[0].tolist() == [2]


def test_learning_rate_warms_up_then_anneals_over_the_step_budget():
    sensors = ["sentinel1", "sentinel2"]
    task = CrossSensorTask(sensors, warmup_steps=4, min_lr_ratio=0.1)
    seen = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(trainer.optimizers[0].param_groups[0]["lr"] / 1e-3)

    trainer = L.Trainer(accelerator="cpu", max_steps=12, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[Record()],
                        limit_val_batches=0)
    trainer.fit(task, _loader(sensors, k=12))
    assert seen[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    # after warm-up: half cosine from 1 to 0.1 over the 12-step budget
    import math
    for step in range(4, 12):
        assert seen[step] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / 12)))
    assert all(a >= b for a, b in zip(seen[3:], seen[4:]))
    flat = CrossSensorTask(sensors, warmup_steps=2, schedule="constant")
    assert [flat.lr_factor(s) for s in range(4)] == [0.5, 1.0, 1.0, 1.0]


def test_learning_rate_follows_the_time_budget(monkeypatch):
    from lightning.pytorch.callbacks import Timer

    task = CrossSensorTask(["sentinel1", "sentinel2"], warmup_steps=1, min_lr_ratio=0.0)
    timer = Timer(duration="00:00:04:00")
    monkeypatch.setattr(timer, "time_elapsed", lambda stage="train": 180.0)  # 3 of 4 minutes

    class FakeTrainer:
        callbacks = [timer]
        estimated_stepping_batches = 10_000
        max_steps, max_epochs = -1, 1000

    task._trainer = FakeTrainer()
    assert task.budget_progress(10) == pytest.approx(0.75)
    assert task.lr_factor(10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.75)))


def test_augment_takes_true_false_or_options_and_names_unknown_ones():
    sensors = ["sentinel1", "sentinel2"]
    assert CrossSensorTask(sensors, dim=32, augment=False).augmenter is None
    full = CrossSensorTask(sensors, dim=32, augment=True, missing_prob=0.3).augmenter
    assert full.geometric and full.speckle_looks == 4.0 and full.missing_prob == 0.3
    flips = CrossSensorTask(sensors, dim=32, missing_prob=0.3,
                            augment={"speckle_looks": None, "band_drop_prob": 0.0, "gain": 0.0}).augmenter
    assert flips.geometric and flips.speckle_looks is None and flips.band_drop_prob == 0.0 and flips.gain == 0.0
    assert flips.missing_prob == 0.3  # missing_prob stays the default of the option
    with pytest.raises(ValueError, match="unknown augment option.*speckle;"):
        CrossSensorTask(sensors, dim=32, augment={"speckle": 2})
