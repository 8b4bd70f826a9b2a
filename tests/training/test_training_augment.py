"""Sensor-aware augmentation: co-registered geometry, speckle only on SAR, band dropout, missing sensors."""

import pytest
import torch

from rsretrieve.sensors import get_sensor
from rsretrieve.training.augment import SensorAugment, _dihedral

SENSORS = ["sentinel1", "sentinel2", "enmap"]


def _batch(n: int = 16) -> dict:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(n, 1, 16, 16, generator=g)  # one pattern per cell at 30 m
    up = base.repeat_interleave(3, dim=2).repeat_interleave(3, dim=3)  # the same pattern at 10 m
    return {"cell": torch.arange(n), "label": torch.full((n,), -1),
            "inputs": {"sentinel1": up.repeat(1, 2, 1, 1), "sentinel2": up.repeat(1, 12, 1, 1),
                       "enmap": base.repeat(1, 224, 1, 1)},
            "present": {s: torch.ones(n, dtype=torch.bool) for s in SENSORS}}


def test_dihedral_ops_are_the_eight_symmetries():
    x = torch.arange(4.0).view(1, 1, 2, 2)
    outs = {tuple(_dihedral(x, op).flatten().tolist()) for op in range(8)}
    assert len(outs) == 8


def test_geometry_is_identical_for_all_sensors_of_a_cell():
    aug = SensorAugment(SENSORS, speckle_looks=None, band_drop_prob=0.0, gain=0.0, missing_prob=0.0)
    torch.manual_seed(1)
    out = aug(_batch())
    s2, hsi = out["inputs"]["sentinel2"][:, 1:2], out["inputs"]["enmap"][:, 100:101]
    # the 10 m tile averaged over 3x3 blocks is still exactly the 30 m tile
    assert torch.allclose(torch.nn.functional.avg_pool2d(s2, 3), hsi, atol=1e-6)
    assert not torch.equal(out["inputs"]["enmap"], _batch()["inputs"]["enmap"])  # something was flipped


def test_speckle_only_on_sar_with_mean_one_in_linear_power():
    aug = SensorAugment(SENSORS, geometric=False, speckle_looks=4.0, band_drop_prob=0.0, gain=0.0,
                        missing_prob=0.0)
    batch = _batch(64)
    torch.manual_seed(2)
    out = aug(batch)
    assert torch.equal(out["inputs"]["sentinel2"], batch["inputs"]["sentinel2"])  # no speckle, no jitter
    spec = get_sensor("sentinel1")
    std, mean = spec.bands[0].std, spec.bands[0].mean
    x, y = batch["inputs"]["sentinel1"][:, 0], out["inputs"]["sentinel1"][:, 0]
    ratio = 10 ** (((y * std + mean) - (x * std + mean)) / 10)  # multiplicative noise in linear power
    assert ratio.mean().item() == pytest.approx(1.0, abs=0.02)
    assert ratio.var().item() == pytest.approx(1 / 4.0, rel=0.1)  # gamma(L, L): variance 1 / L


def test_band_dropout_zeroes_whole_bands_and_keeps_zeros():
    aug = SensorAugment(SENSORS, geometric=False, speckle_looks=None, band_drop_prob=0.5, gain=0.0,
                        missing_prob=0.0)
    batch = _batch()
    batch["inputs"]["sentinel2"][:, :, 0, 0] = 0.0  # nodata pixel
    torch.manual_seed(3)
    x = aug(batch)["inputs"]["sentinel2"]
    dropped = (x == 0).flatten(2).all(dim=2)  # (B, C)
    assert dropped.any() and not dropped.all(dim=1).any()  # some bands dropped, never all of a tile
    kept = ~dropped
    assert torch.equal(x[kept], batch["inputs"]["sentinel2"][kept])
    assert (x[:, :, 0, 0] == 0).all()


def test_missing_sensors_keep_at_least_two_per_cell():
    aug = SensorAugment(SENSORS, geometric=False, speckle_looks=None, band_drop_prob=0.0, gain=0.0,
                        missing_prob=0.5, min_present=2)
    batch = _batch(64)
    batch["present"]["enmap"][:8] = False  # cells with two sensors only: never reduced
    torch.manual_seed(4)
    present = torch.stack(list(aug(batch)["present"].values()), dim=1)
    assert (present.sum(1) >= 2).all()
    assert present[:8, :2].all()
    assert (present.sum(1) == 2).sum() > 8  # some three-sensor cells lost one
