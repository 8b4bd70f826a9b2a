"""Sensor-aware augmentation of training batches.

Batches are in the training format (``{"cell", "label", "inputs": {sensor: (B, C, H, W)}, "present": {sensor:
(B,)}}``) with tiles already normalised per band. What each family gets:

* every sensor: the same flip / 90-degree rotation for all sensors of one cell (the tiles stay co-registered);
  rotations only on square tiles;
* SAR: speckle re-sampling: back to linear sigma0, multiplied by gamma noise of mean 1 (``looks``-look speckle),
  back to dB; no gain or colour jitter on dB values;
* optical and hyperspectral: band dropout (each valid band zeroed with ``band_drop_prob``, at least one kept)
  and a per-tile reflectance gain in ``[1 - gain, 1 + gain]`` applied in physical units;
* random missing sensors: each present sensor of a cell is dropped with ``missing_prob``, keeping at least
  ``min_present`` sensors per cell.

Zeros (nodata and invalid bands after normalisation) stay zero.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from rsretrieve.sensors.registry import get_sensor


def _dihedral(x: Tensor, op: int) -> Tensor:
    """One of the 8 flips/rotations of ``(N, C, H, W)``: ``op % 4`` quarter turns, then a flip if ``op >= 4``."""
    x = torch.rot90(x, op % 4, dims=(-2, -1)) if op % 4 else x
    return torch.flip(x, dims=(-1,)) if op >= 4 else x


class SensorAugment:
    """Callable augmentation of a batch; also makes a second independent view of one sensor's tiles.

    Args:
        sensors: sensors it may see.
        geometric: random flips and rotations.
        speckle_looks: number of looks of the re-sampled speckle (``None``: no speckle re-sampling).
        band_drop_prob: probability of zeroing each optical / hyperspectral band.
        gain: half-width of the multiplicative reflectance gain (0: none).
        missing_prob: probability of dropping each present sensor of a cell.
        min_present: sensors a cell keeps at least (when it had that many).
    """

    def __init__(self, sensors: list[str], geometric: bool = True, speckle_looks: float | None = 4.0,
                 band_drop_prob: float = 0.1, gain: float = 0.1, missing_prob: float = 0.1, min_present: int = 2):
        self.specs = {s: get_sensor(s) for s in sensors}
        self.geometric, self.speckle_looks = geometric, speckle_looks
        self.band_drop_prob, self.gain = band_drop_prob, gain
        self.missing_prob, self.min_present = missing_prob, min_present

    def _stats(self, sensor: str, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        spec = self.specs[sensor]
        mean = torch.tensor([b.mean for b in spec.bands], dtype=x.dtype, device=x.device)[None, :, None, None]
        std = torch.tensor([b.std for b in spec.bands], dtype=x.dtype, device=x.device)[None, :, None, None]
        valid = torch.tensor([b.valid for b in spec.bands], device=x.device)
        return mean, std, valid

    def radiometric(self, sensor: str, x: Tensor) -> Tensor:
        """Family-specific radiometric augmentation of normalised tiles ``(N, C, H, W)``."""
        if len(x) == 0:
            return x
        spec = self.specs[sensor]
        mean, std, valid = self._stats(sensor, x)
        nonzero = x != 0
        if spec.family == "sar":
            if self.speckle_looks is None:
                return x
            looks = torch.tensor(float(self.speckle_looks), device=x.device)
            noise = torch.distributions.Gamma(looks, looks).sample(x.shape)  # (N, C, H, W), mean 1
            db = x * std + mean + 10.0 * torch.log10(noise.clamp(min=1e-6))  # sigma0 * noise, in dB
            return torch.where(nonzero, (db - mean) / std, x)
        n, c = x.shape[:2]
        if self.gain > 0:
            g = 1 + (torch.rand(n, 1, 1, 1, device=x.device) * 2 - 1) * self.gain  # (N, 1, 1, 1)
            x = torch.where(nonzero, x * g + mean * (g - 1) / std, x)  # gain on reflectance, re-normalised
        if self.band_drop_prob > 0:
            drop = (torch.rand(n, c, device=x.device) < self.band_drop_prob) & valid  # (N, C)
            all_dropped = (drop | ~valid).all(dim=1)
            drop[all_dropped] = False
            x = x * (~drop).to(x.dtype)[:, :, None, None]
        return x

    def view(self, sensor: str, x: Tensor) -> Tensor:
        """An independently augmented view of one sensor's tiles ``(N, C, H, W)``."""
        if self.geometric and len(x):
            x = self._apply_ops(x, torch.randint(0, 8, (len(x),)))
        return self.radiometric(sensor, x)

    @staticmethod
    def _apply_ops(x: Tensor, ops: Tensor) -> Tensor:
        """Apply ``_dihedral(op)`` row by row; non-square tiles only get the flip part of ``op``."""
        if x.shape[-1] != x.shape[-2]:
            ops = (ops >= 4).long() * 4
        out = torch.empty_like(x)
        for op in ops.unique().tolist():
            rows = (ops == op).nonzero().squeeze(1).to(x.device)
            out[rows] = _dihedral(x[rows], op)
        return out

    def _missing(self, present: dict[str, Tensor]) -> dict[str, Tensor]:
        names = list(present)
        before = torch.stack([present[s] for s in names], dim=1)  # (B, S)
        after = before & (torch.rand(before.shape, device=before.device) >= self.missing_prob)
        need = torch.clamp(before.sum(1), max=self.min_present)  # (B,)
        after[after.sum(1) < need] = before[after.sum(1) < need]  # cells that would fall below keep all
        return {s: after[:, i] for i, s in enumerate(names)}

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Augmented copy of a training batch (inputs and presence; cell ids and labels unchanged)."""
        inputs: dict[str, Tensor] = batch["inputs"]
        size = len(batch["cell"])
        ops = torch.randint(0, 8, (size,)) if self.geometric else None
        out = {}
        for s, x in inputs.items():
            if s not in self.specs:
                out[s] = x
                continue
            if ops is not None:
                x = self._apply_ops(x, ops)
            out[s] = self.radiometric(s, x)
        present = batch.get("present", {s: torch.ones(size, dtype=torch.bool) for s in inputs})
        if self.missing_prob > 0:
            present = self._missing(dict(present))
        return {**batch, "inputs": out, "present": present}
